//! The wire protocol between the source and `zoffsite serve` on the box.
//!
//! It runs over the stdin/stdout of one SSH session whose remote command is
//! forced by `authorized_keys`, so the source never sends a shell command:
//! it sends framed, typed requests, and `serve` maps each one to a fixed
//! argv. All datasets of a run share the one session.
//!
//! ## Framing
//! Every frame is `kind: u8`, `len: u32` (big-endian), then `len` bytes:
//!
//! | kind | meaning                                            | max len |
//! |------|----------------------------------------------------|---------|
//! | `M`  | a JSON message ([`Request`] or [`Response`])       | [`MAX_REQUEST_LEN`] toward the box, [`MAX_RESPONSE_LEN`] back |
//! | `D`  | a chunk of a send stream                           | [`MAX_DATA_LEN`] |
//! | `E`  | end of a send stream (len 0)                       | 0 |
//!
//! ## Conversation (version 1)
//! 1. source `Hello{protocol:"zoffsite",version:1}`; box `Hello` with the
//!    version it speaks and its root. Anything else ends the session.
//! 2. `List{datasets}` → `Listing`: for each asked source dataset, whether
//!    the box has it under its root, its snapshots (name, GUID, txg) and any
//!    partial-receive token.
//! 3. `Receive{dataset,snapshot,guid,from}` followed at once (no round
//!    trip) by `D` frames and one `E`. The box checks the stream's BEGIN
//!    record against the request before `zfs receive` sees a byte, then
//!    answers `Received{guid}` or `Error`. If it fails early it answers at
//!    once and discards frames until `E`, so the source can stop sending.
//!    With `resume: true` the stream is a `zfs send -t` continuation.
//! 4. `Abort{dataset}` → `Aborted`: discards a partial receive (only that).
//! 5. For restores (read-only): `ListTree{dataset}` → `Listing` of that
//!    dataset and everything the box holds below it; `Send{dataset,
//!    snapshot}` → `Sending{guid}`, then the raw stream (`zfs send -w` of
//!    that one snapshot) as `D` frames and one `E`, then `Sent{bytes}` (or
//!    `Error` in place of `Sending`, or after `E` if the send failed).
//! 6. `Health` → `Health{pool,health,last_scrub}` (for `verify`).
//! 7. `Audit` → `Audit{report}`: the text of the box root's last `doctor`
//!    report ([`crate::doctor::AUDIT_PATH`]), unparsed (the source parses
//!    it: [`crate::doctor::boxaudit`]), at most
//!    [`crate::doctor::boxaudit::MAX_AUDIT_LEN`] bytes; `null` when there
//!    is none yet. A box whose `serve` predates this request answers it
//!    like any unknown message, `Error{code:"protocol"}`, and ends the
//!    session: the source asks it last and takes that answer to mean "too
//!    old" (the protocol version stays 1: both sides still speak every
//!    other message alike).
//! 8. `Heartbeat{datasets}` → `Heartbeat{recorded}`: at the end of a
//!    backup run, each dataset the box holds the source's newest snapshot
//!    of, with that snapshot's GUID. `serve` records the time on each
//!    dataset whose newest snapshot (by the box's `createtxg`) has that
//!    GUID, and on the root ([`crate::boxside`], "Heartbeats"); `recorded`
//!    is how many datasets it recorded. Like `Audit`, a box that predates
//!    it answers `Error{code:"protocol"}` and ends the session, so it is
//!    sent last.
//! 9. `Bye`, or end of input.
//!
//! Both sides treat the other's messages as hostile: sizes are bounded
//! before allocation, names are parsed into validated types by serde, and
//! unknown fields or message types are errors.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::names::{Dataset, Guid, SnapName};

pub const PROTOCOL_NAME: &str = "zoffsite";
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest message the box accepts from the source.
pub const MAX_REQUEST_LEN: usize = 1 << 20;
/// Largest message the source accepts from the box (a listing of ~100k
/// snapshots fits).
pub const MAX_RESPONSE_LEN: usize = 64 << 20;
/// Largest stream chunk in one frame.
pub const MAX_DATA_LEN: usize = 1 << 20;
/// Most datasets in one `List`.
pub const MAX_LIST_DATASETS: usize = 10_000;
/// Splits the datasets of a `List` or `Heartbeat` into requests the box
/// takes: at most [`MAX_LIST_DATASETS`] each, and small enough by the
/// names' lengths (`name_len`; an entry's JSON is its name plus at most
/// [`ENTRY_OVERHEAD`]) to fit half of [`MAX_REQUEST_LEN`]. A count alone
/// would not do: 10,000 names of 200 bytes are 2 MB. Always at least one
/// chunk (an empty one for no items: a heartbeat with nothing named still
/// checks in).
pub fn request_chunks<T>(items: &[T], name_len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let budget = MAX_REQUEST_LEN / 2;
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let len = name_len(item) + ENTRY_OVERHEAD;
        if i > start && (i - start == MAX_LIST_DATASETS || bytes + len > budget) {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < items.len() || out.is_empty() {
        out.push(&items[start..]);
    }
    out
}

/// The most an entry of a `List` or `Heartbeat` adds to the JSON beyond
/// its name (`{"name":"","guid":18446744073709551615},` is 42 bytes).
pub const ENTRY_OVERHEAD: usize = 48;

/// Longest free-text error message kept from the other side.
pub const MAX_ERROR_TEXT: usize = 4096;

/// A frame's header: its kind (1 byte) and its length (4, big-endian).
pub const FRAME_HEAD_LEN: usize = 5;
const KIND_MSG: u8 = b'M';
const KIND_DATA: u8 = b'D';
const KIND_END: u8 = b'E';

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("connection closed")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("peer sent an unknown frame kind 0x{0:02x} (not a zoffsite peer?)")]
    BadKind(u8),
    #[error("peer sent a {len}-byte frame; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("peer sent a malformed message: {0}")]
    BadMessage(String),
    #[error("peer violated the protocol: {0}")]
    Violation(String),
}

/// One frame as read from the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Msg(Vec<u8>),
    Data(Vec<u8>),
    End,
}

/// A frame's header: its kind and the length of what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHead {
    Msg(usize),
    Data(usize),
    End,
}

/// Reads one frame's header and checks its length against the limits:
/// `max_msg` for a message, [`MAX_DATA_LEN`] for data. The body is the
/// caller's to read (exactly that many bytes). A clean end of input before a
/// frame starts is [`ProtoError::Closed`]; so is an end inside the header
/// (the peer went away mid-frame).
///
/// The header is asked for whole, in one read where the input has it (one
/// system call per frame on an unbuffered input, which `serve`'s is), and
/// never more than the header: the body may be the caller's to splice.
pub fn read_frame_head(r: &mut impl Read, max_msg: usize) -> Result<FrameHead, ProtoError> {
    let mut hdr = [0u8; FRAME_HEAD_LEN];
    let mut got = 0;
    while got < FRAME_HEAD_LEN {
        match r.read(&mut hdr[got..]) {
            Ok(0) => return Err(ProtoError::Closed),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(hdr[1..5].try_into().expect("4 bytes")) as usize;
    let (max, head) = match hdr[0] {
        KIND_MSG => (max_msg, FrameHead::Msg(len)),
        KIND_DATA => (MAX_DATA_LEN, FrameHead::Data(len)),
        KIND_END => (0, FrameHead::End),
        k => return Err(ProtoError::BadKind(k)),
    };
    if len > max {
        return Err(ProtoError::TooLarge { len, max });
    }
    Ok(head)
}

/// Reads one frame, body included. `max_msg` bounds a message frame; data
/// frames are bounded by [`MAX_DATA_LEN`]. A clean end of input before a
/// frame starts is [`ProtoError::Closed`].
pub fn read_frame(r: &mut impl Read, max_msg: usize) -> Result<Frame, ProtoError> {
    let head = read_frame_head(r, max_msg)?;
    let body = |r: &mut dyn Read, len: usize| -> Result<Vec<u8>, ProtoError> {
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf).map_err(eof_is_closed)?;
        Ok(buf)
    };
    Ok(match head {
        FrameHead::Msg(len) => Frame::Msg(body(r, len)?),
        FrameHead::Data(len) => Frame::Data(body(r, len)?),
        FrameHead::End => Frame::End,
    })
}

/// Maps the end of input inside a frame to [`ProtoError::Closed`]: the
/// peer went away mid-frame.
pub fn eof_is_closed(e: io::Error) -> ProtoError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ProtoError::Closed
    } else {
        ProtoError::Io(e)
    }
}

fn write_head(w: &mut impl Write, kind: u8, len: usize) -> io::Result<()> {
    let len = u32::try_from(len).map_err(|_| io::Error::other("frame too large"))?;
    let mut hdr = [0u8; FRAME_HEAD_LEN];
    hdr[0] = kind;
    hdr[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&hdr)
}

fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    write_head(w, kind, payload.len())?;
    w.write_all(payload)
}

/// Writes the header of a data frame of `len` bytes, for a caller that
/// moves the body itself (the source splices it): exactly `len` bytes
/// must follow. At most [`MAX_DATA_LEN`].
pub fn write_data_head(w: &mut impl Write, len: usize) -> io::Result<()> {
    if len > MAX_DATA_LEN {
        return Err(io::Error::other(format!("data frame of {len} bytes; the limit is {MAX_DATA_LEN}")));
    }
    write_head(w, KIND_DATA, len)
}

/// Writes a message frame (not flushed).
pub fn write_msg<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    write_frame(w, KIND_MSG, &body)
}

/// Writes a chunk of a send stream, split to [`MAX_DATA_LEN`] frames.
pub fn write_data(w: &mut impl Write, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = data.len().min(MAX_DATA_LEN);
        write_frame(w, KIND_DATA, &data[..n])?;
        data = &data[n..];
    }
    Ok(())
}

pub fn write_end(w: &mut impl Write) -> io::Result<()> {
    write_frame(w, KIND_END, &[])
}

/// Decodes a message frame's JSON.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    // serde's messages quote the offending input: cut and defuse it, it
    // came from the other side and may end up on a terminal.
    serde_json::from_slice(body).map_err(|e| ProtoError::BadMessage(sanitize(&e.to_string(), 512)))
}

/// Reads the next frame, which must be a message.
pub fn read_msg<T: DeserializeOwned>(r: &mut impl Read, max: usize) -> Result<T, ProtoError> {
    match read_frame(r, max)? {
        Frame::Msg(b) => decode(&b),
        Frame::Data(_) | Frame::End => Err(ProtoError::Violation("expected a message, got stream data".into())),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Hello {
        protocol: String,
        version: u32,
        client: String,
    },
    List {
        datasets: Vec<Dataset>,
    },
    /// Followed by the stream as `D` frames and one `E`. With `resume`, the
    /// stream continues the dataset's partial receive (`zfs send -t`), and
    /// its BEGIN record must say so.
    Receive {
        dataset: Dataset,
        snapshot: SnapName,
        guid: Guid,
        from: Option<Guid>,
        #[serde(default)]
        resume: bool,
    },
    /// Discards the dataset's partial-receive state (`zfs receive -A`): the
    /// one destructive request, limited to partial state under the root.
    Abort {
        dataset: Dataset,
    },
    /// What the box holds of `dataset` and every dataset below it.
    ListTree {
        dataset: Dataset,
    },
    /// The health of the box's pool and its last scrub (`verify`).
    Health,
    /// Sends one snapshot back, raw (`zfs send -w`): restores only.
    Send {
        dataset: Dataset,
        snapshot: SnapName,
    },
    /// The box root's last audit (read-only; ask it last: see the module).
    Audit,
    /// The run is over and the box holds the source's newest snapshot of
    /// each of these (at most [`MAX_LIST_DATASETS`], each once).
    Heartbeat {
        datasets: Vec<HeartbeatDataset>,
    },
    Bye,
}

/// One dataset of a [`Request::Heartbeat`]: its source name and the GUID
/// of the source's newest snapshot of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatDataset {
    pub name: Dataset,
    pub guid: Guid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Hello {
        protocol: String,
        version: u32,
        server: String,
        root: Dataset,
    },
    Listing {
        datasets: Vec<RemoteDataset>,
    },
    Received {
        dataset: Dataset,
        snapshot: SnapName,
        guid: Guid,
    },
    Aborted {
        dataset: Dataset,
    },
    /// The stream of a `Send` follows (`D` frames, then `E`).
    Sending {
        dataset: Dataset,
        snapshot: SnapName,
        guid: Guid,
    },
    /// The box's pool: `zpool` health (`ONLINE`, ...) and when its last
    /// scrub finished (Unix seconds, box clock).
    Health {
        pool: String,
        health: String,
        last_scrub: Option<i64>,
    },
    /// After the `E` of a `Send`: how many stream bytes were sent.
    Sent {
        bytes: u64,
    },
    /// The box's audit file as root wrote it, not parsed by the box
    /// (`None`: there is none yet).
    Audit {
        report: Option<String>,
    },
    /// How many datasets of a `Heartbeat` the box recorded.
    Heartbeat {
        recorded: u32,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// What the box holds of one source dataset (named as on the source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteDataset {
    pub name: Dataset,
    pub exists: bool,
    pub snapshots: Vec<RemoteSnapshot>,
    pub resume_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSnapshot {
    pub name: SnapName,
    pub guid: Guid,
    pub createtxg: u64,
}

/// Machine-readable class of a `serve` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed or out-of-order request.
    Protocol,
    /// The requested version is not spoken.
    Version,
    /// The stream is not raw, or not the one the request named.
    Refused,
    /// The box root does not exist or is unusable.
    Root,
    /// The box's dataset is not where the request expects it.
    Conflict,
    /// No space (pool full or quota).
    NoSpace,
    /// `zfs receive` or another zfs command failed.
    Zfs,
    Internal,
}

/// Makes text from the other side safe to print on one line of a terminal
/// or a log: every character that could move the cursor, start a new line
/// or reorder what is shown is escaped, visibly, and the text is cut to
/// `max` bytes. Escaped: control characters (C0, DEL, C1: terminal escapes,
/// `\n`, `\r`), the line and paragraph separators U+2028/U+2029, and the
/// format characters (general category Cf), among them the bidi overrides
/// and isolates U+202A-U+202E, U+2066-U+2069 that make a terminal show text
/// in another order than it is written ("Trojan Source"), and the
/// zero-width U+200B-U+200F. A backslash is escaped too, so `\n` in the
/// output always means the box sent a newline, never two characters
/// pretending to be one.
pub fn sanitize(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let escaped = match c {
            '\\' => "\\\\".to_owned(),
            '\n' => "\\n".to_owned(),
            '\r' => "\\r".to_owned(),
            '\t' => "\\t".to_owned(),
            c if must_escape(c) => format!("\\u{{{:x}}}", u32::from(c)),
            c => c.to_string(),
        };
        if out.len() + escaped.len() > max {
            out.push('…');
            break;
        }
        out.push_str(&escaped);
    }
    out
}

/// Unicode's format characters (general category Cf, Unicode 15.1), by
/// range: std has no category lookup, and the list is short and stable.
const FORMAT_CHARS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Whether [`sanitize`] escapes `c` (besides `\\`).
pub fn must_escape(c: char) -> bool {
    let u = u32::from(c);
    c.is_control() || matches!(u, 0x2028 | 0x2029) || FORMAT_CHARS.iter().any(|&(lo, hi)| (lo..=hi).contains(&u))
}

/// Checks a `Listing` that answers `ListTree{dataset}`: every name is
/// `asked` or below it, and each passes [`check_listing`]'s checks.
pub fn check_tree_listing(
    asked: &Dataset,
    listing: Vec<RemoteDataset>,
) -> Result<BTreeMap<Dataset, RemoteDataset>, ProtoError> {
    let names: Vec<Dataset> = listing.iter().map(|d| d.name.clone()).collect();
    if let Some(stray) = names.iter().find(|n| !n.is_within(asked)) {
        return Err(ProtoError::Violation(format!("box listed {stray}, which is not {asked} or below it")));
    }
    check_listing(&names, listing)
}

/// Checks a `Listing` against the `List` that asked for it: only asked
/// names, each at most once, no duplicate GUIDs within a dataset. Returns
/// the answers by name; a name the box left out counts as absent.
pub fn check_listing(
    asked: &[Dataset],
    listing: Vec<RemoteDataset>,
) -> Result<BTreeMap<Dataset, RemoteDataset>, ProtoError> {
    let asked: BTreeSet<&Dataset> = asked.iter().collect();
    let mut out = BTreeMap::new();
    for d in listing {
        if !asked.contains(&d.name) {
            return Err(ProtoError::Violation(format!("box listed {}, which was not asked for", d.name)));
        }
        if !d.exists && (!d.snapshots.is_empty() || d.resume_token.is_some()) {
            return Err(ProtoError::Violation(format!("box listed {} as absent but with snapshots", d.name)));
        }
        let mut guids = BTreeSet::new();
        for s in &d.snapshots {
            if !guids.insert(s.guid) {
                return Err(ProtoError::Violation(format!("box listed GUID {} twice in {}", s.guid, d.name)));
            }
        }
        if let Some(t) = &d.resume_token {
            if t.is_empty()
                || t.len() > crate::parse::MAX_TOKEN_LEN
                || !t.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
            {
                return Err(ProtoError::Violation(format!("box sent a malformed resume token for {}", d.name)));
            }
        }
        let name = d.name.clone();
        if out.insert(name.clone(), d).is_some() {
            return Err(ProtoError::Violation(format!("box listed {name} twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn ds(s: &str) -> Dataset {
        Dataset::new(s).unwrap()
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let req = Request::Receive {
            dataset: ds("tank/a b"),
            snapshot: SnapName::new("zoffsite-1").unwrap(),
            guid: Guid::new(5).unwrap(),
            from: None,
            resume: false,
        };
        write_msg(&mut buf, &req).unwrap();
        write_data(&mut buf, &vec![7u8; MAX_DATA_LEN + 10]).unwrap();
        write_end(&mut buf).unwrap();
        let mut r = Cursor::new(buf);
        assert_eq!(read_msg::<Request>(&mut r, MAX_REQUEST_LEN).unwrap(), req);
        assert_eq!(read_frame(&mut r, 0).unwrap(), Frame::Data(vec![7u8; MAX_DATA_LEN]));
        assert_eq!(read_frame(&mut r, 0).unwrap(), Frame::Data(vec![7u8; 10]));
        assert_eq!(read_frame(&mut r, 0).unwrap(), Frame::End);
        assert!(matches!(read_frame(&mut r, 0), Err(ProtoError::Closed)));
    }

    #[test]
    fn limits_are_checked_before_allocating() {
        let mut frame = vec![b'M'];
        frame.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(read_frame(&mut Cursor::new(frame), MAX_REQUEST_LEN), Err(ProtoError::TooLarge { .. })));
        let mut frame = vec![b'D'];
        frame.extend_from_slice(&u32::try_from(MAX_DATA_LEN + 1).unwrap().to_be_bytes());
        assert!(matches!(read_frame(&mut Cursor::new(frame), 0), Err(ProtoError::TooLarge { .. })));
        // A shell command typed at serve is not a frame.
        let e = read_frame(&mut Cursor::new(b"zfs destroy -r offsite\n".to_vec()), MAX_REQUEST_LEN);
        assert!(matches!(e, Err(ProtoError::BadKind(b'z'))));
        // Truncated frames are a closed connection, not a hang or a panic.
        assert!(matches!(read_frame(&mut Cursor::new(vec![b'M', 0, 0]), 10), Err(ProtoError::Closed)));
        assert!(matches!(read_frame(&mut Cursor::new(vec![b'M', 0, 0, 0, 4, b'{']), 10), Err(ProtoError::Closed)));
    }

    /// Hands out at most `step` bytes per read, and counts the reads.
    struct Trickle {
        data: Cursor<Vec<u8>>,
        step: usize,
        reads: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let n = buf.len().min(self.step);
            self.data.read(&mut buf[..n])
        }
    }

    #[test]
    fn a_frame_head_is_one_read_when_it_is_there_and_any_split_still_works() {
        let mut frame = Vec::new();
        write_data_head(&mut frame, 70_000).unwrap();
        frame.extend_from_slice(b"body");
        let mut whole = Trickle { data: Cursor::new(frame.clone()), step: usize::MAX, reads: 0 };
        assert_eq!(read_frame_head(&mut whole, 0).unwrap(), FrameHead::Data(70_000));
        assert_eq!(whole.reads, 1, "one read for the whole header");
        assert_eq!(whole.data.position(), FRAME_HEAD_LEN as u64, "nothing of the body read");
        // One byte at a time: five reads, the same header, no more.
        let mut bytes = Trickle { data: Cursor::new(frame), step: 1, reads: 0 };
        assert_eq!(read_frame_head(&mut bytes, 0).unwrap(), FrameHead::Data(70_000));
        assert_eq!((bytes.reads, bytes.data.position()), (FRAME_HEAD_LEN, FRAME_HEAD_LEN as u64));
        // The end before any byte is a closed connection; inside the
        // header, too (never a header made up of zeroes).
        let mut empty = Trickle { data: Cursor::new(Vec::new()), step: 1, reads: 0 };
        assert!(matches!(read_frame_head(&mut empty, 0), Err(ProtoError::Closed)));
        let mut cut = Trickle { data: Cursor::new(vec![b'D', 0, 0]), step: 1, reads: 0 };
        assert!(matches!(read_frame_head(&mut cut, 0), Err(ProtoError::Closed)));
        assert_eq!(cut.data.position(), 3);
        // The limits still hold however the header arrives.
        let mut big = vec![b'D'];
        big.extend_from_slice(&u32::try_from(MAX_DATA_LEN + 1).unwrap().to_be_bytes());
        let mut big = Trickle { data: Cursor::new(big), step: 2, reads: 0 };
        assert!(matches!(read_frame_head(&mut big, 0), Err(ProtoError::TooLarge { .. })));
    }

    #[test]
    fn messages_are_strict() {
        for bad in [
            r#"{"type":"receive","dataset":"tank/../x","snapshot":"s","guid":1,"from":null}"#,
            r#"{"type":"receive","dataset":"tank/x","snapshot":"s","guid":0,"from":null}"#,
            r#"{"type":"receive","dataset":"tank/x","snapshot":"s","guid":1,"from":null,"force":true}"#,
            r#"{"type":"destroy","dataset":"tank/x"}"#,
            r#"{"type":"list","datasets":["/etc"]}"#,
            r#"[1,2,3]"#,
        ] {
            assert!(decode::<Request>(bad.as_bytes()).is_err(), "{bad}");
        }
        let ok: Request = decode(br#"{"type":"list","datasets":["tank/a:b c"]}"#).unwrap();
        assert_eq!(ok, Request::List { datasets: vec![ds("tank/a:b c")] });
    }

    #[test]
    fn heartbeats_are_strict_too() {
        for bad in [
            r#"{"type":"heartbeat"}"#,
            r#"{"type":"heartbeat","datasets":[{"name":"tank/a","guid":0}]}"#,
            r#"{"type":"heartbeat","datasets":[{"name":"tank/a"}]}"#,
            r#"{"type":"heartbeat","datasets":[{"name":"tank/a","guid":1,"at":1}]}"#,
            r#"{"type":"heartbeat","datasets":[],"at":1795000000}"#,
            r#"{"type":"heartbeat","datasets":[{"name":"/etc","guid":1}]}"#,
        ] {
            assert!(decode::<Request>(bad.as_bytes()).is_err(), "{bad}");
        }
        let ok: Request = decode(br#"{"type":"heartbeat","datasets":[{"name":"tank/a","guid":7}]}"#).unwrap();
        assert_eq!(
            ok,
            Request::Heartbeat { datasets: vec![HeartbeatDataset { name: ds("tank/a"), guid: Guid::new(7).unwrap() }] }
        );
        assert!(decode::<Response>(br#"{"type":"heartbeat","recorded":-1}"#).is_err());
    }

    #[test]
    fn listings_are_checked_against_the_question() {
        let asked = [ds("tank/a"), ds("tank/b")];
        let snap = |g| RemoteSnapshot { name: SnapName::new("s").unwrap(), guid: Guid::new(g).unwrap(), createtxg: 1 };
        let rd = |n: &str, snaps: Vec<RemoteSnapshot>| RemoteDataset {
            name: ds(n),
            exists: true,
            snapshots: snaps,
            resume_token: None,
        };
        assert_eq!(check_listing(&asked, vec![rd("tank/a", vec![snap(1)])]).unwrap().len(), 1);
        assert!(check_listing(&asked, vec![rd("tank/c", vec![])]).is_err());
        assert!(check_listing(&asked, vec![rd("tank/a", vec![]), rd("tank/a", vec![])]).is_err());
        assert!(check_listing(&asked, vec![rd("tank/a", vec![snap(1), snap(1)])]).is_err());
        let mut absent = rd("tank/a", vec![snap(1)]);
        absent.exists = false;
        assert!(check_listing(&asked, vec![absent]).is_err());
        let mut tok = rd("tank/a", vec![]);
        tok.resume_token = Some("1-abc-def; rm -rf /".into());
        assert!(check_listing(&asked, vec![tok]).is_err());
    }

    #[test]
    fn sanitize_escapes_terminal_controls_newlines_and_bidi() {
        assert_eq!(sanitize("ok\x1b[2Jgone\r", 100), r"ok\u{1b}[2Jgone\r");
        assert_eq!(sanitize("abcdef", 3), "abc…");
        // A box cannot forge a second line of the source's output or log.
        assert_eq!(sanitize("no space\nzoffsite: restored tank/a", 100), r"no space\nzoffsite: restored tank/a");
        // Nor reorder what the terminal shows (Trojan Source), nor hide
        // text in zero-width characters.
        assert_eq!(
            sanitize("a\u{202e}b\u{2066}c\u{2069}\u{200b}\u{feff}", 100),
            r"a\u{202e}b\u{2066}c\u{2069}\u{200b}\u{feff}"
        );
        assert_eq!(sanitize("a\u{2028}b\u{85}c", 100), r"a\u{2028}b\u{85}c");
        // A literal backslash-n stays distinguishable from a newline.
        assert_eq!(sanitize(r"a\nb", 100), r"a\\nb");
        // Ordinary text, accents and other scripts are kept as they are.
        assert_eq!(sanitize("Grüße, 東京 ✓", 100), "Grüße, 東京 ✓");
        // Escapes are never cut in half.
        assert_eq!(sanitize("ab\u{202e}", 5), "ab…");
    }

    proptest! {
        #[test]
        fn sanitized_text_has_no_line_breaks_controls_or_format_characters(
            s in any::<String>(),
            hostile in proptest::collection::vec(
                prop_oneof![any::<char>(), proptest::sample::select(vec!['\n', '\r', '\x1b', '\\', '\u{85}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{200b}', '\u{200f}', '\u{2028}', '\u{feff}', '\u{e0041}', 'a'])],
                0..64,
            ),
            max in 0usize..300,
        ) {
            let s = format!("{s}{}", hostile.into_iter().collect::<String>());
            let out = sanitize(&s, max);
            prop_assert!(!out.chars().any(must_escape), "{out:?}");
            prop_assert!(out.len() <= max + '…'.len_utf8());
        }

        #[test]
        fn reading_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut r = Cursor::new(bytes);
            for _ in 0..8 {
                match read_frame(&mut r, 1024) {
                    Ok(Frame::Msg(b)) => { let _ = decode::<Request>(&b); let _ = decode::<Response>(&b); }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn requests_are_split_by_count_and_by_size_and_each_fits() {
        let long = |n: usize| {
            let name = format!("tank/{}{n:06}", "d".repeat(190));
            HeartbeatDataset { name: Dataset::new(&name).unwrap(), guid: Guid::new(u64::MAX).unwrap() }
        };
        let many: Vec<HeartbeatDataset> = (0..10_000).map(long).collect();
        let chunks = request_chunks(&many, |d| d.name.as_str().len());
        assert!(chunks.len() > 1, "10,000 long names do not fit one request");
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), many.len());
        assert_eq!(chunks.concat(), many, "in order, each once");
        for c in &chunks {
            let req = serde_json::to_vec(&Request::Heartbeat { datasets: c.to_vec() }).unwrap();
            assert!(req.len() <= MAX_REQUEST_LEN / 2, "{} bytes", req.len());
        }
        // Short names: by count.
        let short: Vec<usize> = (0..25_000).collect();
        let sizes: Vec<usize> = request_chunks(&short, |_| 0).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [10_000, 10_000, 5_000]);
        // Nothing: one empty request.
        assert_eq!(request_chunks(&[] as &[usize], |_| 1).len(), 1);
    }
}
