//! Validation of a whole `zfs send` stream, record by record, as it flows.
//!
//! [`crate::stream::parse_begin`] checks the first record only. That is not
//! enough for a multi-snapshot `zfs send -w -I A B` stream, which OpenZFS
//! (2.3.2, checked on real streams: `testdata/capture.sh`) emits as a
//! *compound* stream:
//!
//! ```text
//! BEGIN  header type COMPOUND, features 0, GUIDs 0, toname = B, no payload
//! END    toguid 0 (its checksum closes the compound header)
//! BEGIN  substream: raw, fromguid = A, toguid = s1, payload = wrapped-key nvlist
//!  ...   OBJECT_RANGE, OBJECT, FREE, FREEOBJECTS, WRITE, SPILL, ... (toguid = s1)
//! END    toguid = s1
//! BEGIN  substream: raw, fromguid = s1, toguid = s2 ...
//!  ...
//! END    toguid = B's GUID
//! END    toguid 0, checksum 0 (the final END)
//! ```
//!
//! `zfs send -w -R` has the same shape, but its compound BEGIN carries an
//! XDR nvlist payload (every dataset's properties, snapshot names and GUIDs);
//! `zfs send -w`, `-w -i` and `-w -t TOKEN` are one plain substream (a
//! BEGIN, records, an END). Every substream BEGIN is a full
//! `dmu_replay_record_t` whose payload, for a raw send, is the dataset's
//! wrapped key; a resumed one also names `resume_object`/`resume_offset`.
//!
//! [`StreamValidator`] walks every record header of such a stream, fed in
//! chunks of any size, and refuses the stream as soon as something is wrong,
//! so `serve` can stop `zfs receive` before it commits a bad snapshot. It
//! does not verify the fletcher-4 checksums in the records: `zfs receive`
//! does that.
//!
//! Invariants:
//! - Memory is O(1) in the stream's size: one 312-byte header buffer; a
//!   payload is skipped by count, never buffered, whatever length a header
//!   claims. The only growth is the list of snapshots for the [`Summary`],
//!   capped at [`MAX_SUBSTREAMS`] entries.
//! - Every substream is raw (`DMU_BACKUP_FEATURE_RAW`): the box never
//!   receives plaintext, not even in the 3rd snapshot of a `-I` stream.
//! - The substreams form one chain on one dataset: the first starts at
//!   [`Expect::from`] (0 = full), each next one starts at the previous one's
//!   snapshot, the last ends at [`Expect::to`], and nothing follows it.
//! - A compound header with a payload (`-R`, `-p`, `-h`: properties and
//!   other datasets' names) is refused; zoffsite only sends `-w`, `-w -i`,
//!   `-w -I` and `-w -t`.
//! - A resumed substream (`DMU_BACKUP_FEATURE_RESUMING`) is accepted exactly
//!   when [`Expect::resuming`] is set, and then as the only substream of a
//!   plain (non-compound) stream, which is what `zfs send -t` emits.
//! - Every record inside a substream carries that substream's GUID
//!   (`drr_toguid`; every `dump_*` in OpenZFS's `dmu_send.c` fills it, and
//!   all records of the real streams in `testdata/` do), so records spliced
//!   in from another stream are refused.
//! - Unknown record types and feature flags are errors; so are the record
//!   types of deduplicated and redacted streams (`WRITE_BYREF`, `REDACT`).
//! - Any input, cut anywhere, ends in `Ok` or an error, never a panic; after
//!   the first error every later call returns that same error.
//!
//! Layout of `dmu_replay_record_t` (OpenZFS `include/sys/zfs_ioctl.h`): 312
//! bytes in the sender's byte order, which the BEGIN record's magic reveals.
//! Offsets from the start of the record:
//!
//! | type            | fields read here (offset)                                               | payload that follows                        |
//! |-----------------|-------------------------------------------------------------------------|---------------------------------------------|
//! | all             | `drr_type` u32 (0), `drr_payloadlen` u32 (4)                            |                                             |
//! | 0 BEGIN         | magic (8), versioninfo (16), toguid (40), fromguid (48), toname (56..312) | `drr_payloadlen`                            |
//! | 1 OBJECT        | bonuslen u32 (28), raw_bonuslen u32 (36), toguid (40)                   | raw_bonuslen if non-zero, else bonuslen rounded up to 8 |
//! | 2 FREEOBJECTS   | toguid (24)                                                             | none                                        |
//! | 3 WRITE         | logical_size (32), toguid (40), compressiontype u8 (50), compressed_size (96) | compressed_size if compressiontype != 0, else logical_size |
//! | 4 FREE          | toguid (32)                                                             | none                                        |
//! | 5 END           | toguid (40)                                                             | none                                        |
//! | 6 WRITE_BYREF   | toguid (32)                                                             | none (refused: dedup streams only)          |
//! | 7 SPILL         | length (16), toguid (24), compressed_size (40)                          | compressed_size if non-zero, else length    |
//! | 8 WRITE_EMBEDDED | toguid (32), psize u32 (52)                                            | psize rounded up to 8                       |
//! | 9 OBJECT_RANGE  | toguid (24)                                                             | none                                        |
//! | 10 REDACT       | toguid (32)                                                             | none (refused: redacted streams only)       |
//!
//! The payload rules are the `DRR_*_PAYLOAD_SIZE` macros of that header and
//! `receive_read_record()`; the walk over the real streams in `testdata/`
//! lands exactly on their last byte and agrees with `zstream dump`'s counts.
//! `drr_payloadlen` is 0 in every non-BEGIN record of those streams and
//! `zfs receive` ignores it there, so it is ignored here too.

use std::fmt;

use crate::names::{Dataset, Guid, NameError, Snapshot};
use crate::stream::{DMU_BACKUP_MAGIC, FEATURE_RAW, FEATURE_RESUMING};

/// Size of one `dmu_replay_record_t` header.
pub const RECORD_LEN: usize = 312;

/// Largest payload any record may claim: `SPA_MAXBLOCKSIZE` (16 MiB), the
/// largest block ZFS can write; a WRITE carries at most one block, and the
/// other payloads (bonus buffers, spill blocks, embedded data) are smaller.
pub const MAX_PAYLOAD: u64 = 1 << 24;

/// Largest BEGIN payload: a raw substream's is its wrapped key (about 1 KiB
/// on 2.3.2, 1.1 KiB when resuming); the big nvlists (`-R`, redaction
/// lists) are refused anyway. The cap is far above the first and keeps
/// `zfs receive`, which reads this payload into memory, safe.
pub const MAX_BEGIN_PAYLOAD: u64 = 1 << 20;

/// Most substreams one stream may hold. zoffsite snapshots once per run, so
/// this is decades of missed runs; it bounds the [`Summary`]'s memory.
pub const MAX_SUBSTREAMS: usize = 10_000;

const DMU_SUBSTREAM: u64 = 1;
const DMU_COMPOUNDSTREAM: u64 = 2;

// Feature flags, `drr_versioninfo` bits 2..32 (zfs_ioctl.h).
const FEATURE_DEDUP: u64 = 1 << 0;
const FEATURE_DEDUPPROPS: u64 = 1 << 1;
const FEATURE_SA_SPILL: u64 = 1 << 2;
const FEATURE_EMBED_DATA: u64 = 1 << 16;
const FEATURE_LZ4: u64 = 1 << 17;
const FEATURE_LARGE_BLOCKS: u64 = 1 << 19;
const FEATURE_REDACTED: u64 = 1 << 21;
const FEATURE_COMPRESSED: u64 = 1 << 22;
const FEATURE_LARGE_DNODE: u64 = 1 << 23;
const FEATURE_ZSTD: u64 = 1 << 25;
const FEATURE_HOLDS: u64 = 1 << 26;
const FEATURE_SWITCH_TO_LARGE_BLOCKS: u64 = 1 << 27;

/// Features a substream of a raw send may carry. A real 2.3.2 `zfs send -w`
/// sets SA_SPILL | LZ4 | COMPRESSED | RAW (plus LARGE_BLOCKS, LARGE_DNODE,
/// EMBED_DATA, ZSTD when the dataset uses them). RESUMING is judged
/// separately. Left out on purpose: DEDUP/DEDUPPROPS (deduplicated streams,
/// which `zfs receive` no longer accepts since 2.2), REDACTED (zoffsite never
/// sends redacted), HOLDS (`-h`, which crashes receivers, and belongs to the
/// compound header anyway) and every bit OpenZFS does not define.
const SUBSTREAM_FEATURES: u64 = FEATURE_SA_SPILL
    | FEATURE_EMBED_DATA
    | FEATURE_LZ4
    | FEATURE_LARGE_BLOCKS
    | FEATURE_COMPRESSED
    | FEATURE_LARGE_DNODE
    | FEATURE_RAW
    | FEATURE_ZSTD
    | FEATURE_SWITCH_TO_LARGE_BLOCKS
    | FEATURE_RESUMING;

/// Features a compound header may carry: libzfs sets SA_SPILL when it is
/// handed a filesystem (2.3.2 hands it the snapshot and sets nothing), and
/// HOLDS for `-h`, which is refused.
const COMPOUND_FEATURES: u64 = FEATURE_SA_SPILL;

/// `drr_type` of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    Begin,
    Object,
    FreeObjects,
    Write,
    Free,
    End,
    WriteByref,
    Spill,
    WriteEmbedded,
    ObjectRange,
    Redact,
}

impl RecordType {
    fn from_u32(v: u32) -> Option<Self> {
        use RecordType::*;
        Some(match v {
            0 => Begin,
            1 => Object,
            2 => FreeObjects,
            3 => Write,
            4 => Free,
            5 => End,
            6 => WriteByref,
            7 => Spill,
            8 => WriteEmbedded,
            9 => ObjectRange,
            10 => Redact,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use RecordType::*;
        match self {
            Begin => "BEGIN",
            Object => "OBJECT",
            FreeObjects => "FREEOBJECTS",
            Write => "WRITE",
            Free => "FREE",
            End => "END",
            WriteByref => "WRITE_BYREF",
            Spill => "SPILL",
            WriteEmbedded => "WRITE_EMBEDDED",
            ObjectRange => "OBJECT_RANGE",
            Redact => "REDACT",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a stream is refused. `offset` is where the offending record starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("stream is empty")]
    Empty,
    #[error("byte {offset}: BEGIN record has a bad magic number: not a ZFS send stream, or corrupted")]
    BadMagic { offset: u64 },
    #[error("byte {offset}: stream does not start with a BEGIN record")]
    NotBegin { offset: u64 },
    #[error("byte {offset}: unknown record type {rtype}; refusing what cannot be checked")]
    UnknownRecord { offset: u64, rtype: u32 },
    #[error("byte {offset}: {rtype} record claims a {len}-byte payload; no real stream has more than {max}")]
    PayloadTooLarge { offset: u64, rtype: RecordType, len: u64, max: u64 },
    #[error("byte {offset}: BEGIN record of header type {hdrtype} where a substream must begin")]
    BadHeaderType { offset: u64, hdrtype: u64 },
    #[error("byte {offset}: BEGIN record where {context}")]
    UnexpectedBegin { offset: u64, context: &'static str },
    #[error("byte {offset}: {rtype} record outside any substream")]
    OutsideSubstream { offset: u64, rtype: RecordType },
    #[error(
        "byte {offset}: compound stream whose header carries a {len}-byte nvlist: that is a -R/-p/-h \
         stream with dataset properties, which zoffsite never sends"
    )]
    Replication { offset: u64, len: u64 },
    #[error(
        "byte {offset}: compound stream header with snapshot GUIDs or features ({features:#x}) that \
         zoffsite's -I streams never have"
    )]
    CompoundHeader { offset: u64, features: u64 },
    #[error("byte {offset}: substream for {name} is not raw (zfs send -w): refusing it, the box must never receive plaintext")]
    NotRaw { offset: u64, name: Snapshot },
    #[error("byte {offset}: substream for {name} uses feature flags {flags:#x} ({}), which zoffsite never sends", feature_names(*.flags))]
    Features { offset: u64, name: Snapshot, flags: u64 },
    #[error("byte {offset}: substream for {name} resumes an interrupted send, but no resume was requested")]
    UnexpectedResume { offset: u64, name: Snapshot },
    #[error("byte {offset}: a resume was requested, but the stream {what}")]
    NotResuming { offset: u64, what: &'static str },
    #[error("byte {offset}: {rtype} records belong to deduplicated or redacted streams, which zoffsite never sends")]
    Unsupported { offset: u64, rtype: RecordType },
    #[error("byte {offset}: {rtype} record is for snapshot GUID {found}, inside the stream part for {expected}")]
    ForeignRecord { offset: u64, rtype: RecordType, found: u64, expected: u64 },
    #[error("byte {offset}: BEGIN record with snapshot GUID 0")]
    ZeroGuid { offset: u64 },
    #[error("byte {offset}: snapshot name in a BEGIN record is not valid: {source}")]
    BadName { offset: u64, source: NameError },
    #[error("byte {offset}: the stream starts {}, but {} was expected", base(*.found), base(*.expected))]
    WrongBase { offset: u64, expected: u64, found: u64 },
    #[error(
        "byte {offset}: substream for {name} is incremental from GUID {found}, not from the previous \
         substream's snapshot (GUID {expected})"
    )]
    ChainBroken { offset: u64, name: Snapshot, expected: u64, found: u64 },
    #[error(
        "byte {offset}: substream for {name} is not for {first}, the dataset of the first \
         substream; multi-dataset streams are refused"
    )]
    OtherDataset { offset: u64, name: Snapshot, first: Dataset },
    #[error("byte {offset}: stream goes on with {name} after the expected snapshot")]
    PastTarget { offset: u64, name: Snapshot },
    #[error("byte {offset}: stream ends at snapshot GUID {found}, but GUID {expected} was expected")]
    WrongTarget { offset: u64, expected: Guid, found: u64 },
    #[error("byte {offset}: compound stream names {header} in its header but its last snapshot is {last}")]
    CompoundName { offset: u64, header: Snapshot, last: Snapshot },
    #[error("byte {offset}: compound stream ends without any substream")]
    EmptyCompound { offset: u64 },
    #[error("byte {offset}: more than {MAX_SUBSTREAMS} substreams")]
    TooManySubstreams { offset: u64 },
    #[error("byte {offset}: data after the stream's final END record")]
    TrailingData { offset: u64 },
    #[error("stream ends at byte {offset}, {what}: it is truncated")]
    Truncated { offset: u64, what: &'static str },
}

fn base(guid: u64) -> String {
    if guid == 0 {
        "as a full stream".to_owned()
    } else {
        format!("incremental from GUID {guid}")
    }
}

fn feature_names(flags: u64) -> &'static str {
    if flags & (FEATURE_DEDUP | FEATURE_DEDUPPROPS) != 0 {
        "deduplicated stream"
    } else if flags & FEATURE_REDACTED != 0 {
        "redacted stream"
    } else if flags & FEATURE_HOLDS != 0 {
        "holds, zfs send -h"
    } else {
        "not defined by OpenZFS"
    }
}

/// What the stream must be, from the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// GUID of the incremental base (snapshot or bookmark); `None` for a
    /// full stream.
    pub from: Option<Guid>,
    /// GUID of the last snapshot the stream must carry.
    pub to: Guid,
    /// The stream must resume an interrupted receive (`zfs send -t`).
    pub resuming: bool,
}

/// What a complete, valid stream carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Each substream's snapshot (`drr_toname`, `drr_toguid`), in order.
    pub snapshots: Vec<(Snapshot, Guid)>,
    /// Bytes in the stream, headers and payloads.
    pub bytes: u64,
    /// Records in the stream, compound header and final END included.
    pub records: u64,
    /// Whether it was a compound (`-I`) stream.
    pub compound: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing read yet: the stream's first BEGIN comes next.
    Start,
    /// Read a compound BEGIN: its END comes next.
    CompoundHeader,
    /// In a compound stream between substreams: a BEGIN or the final END.
    Between,
    /// Inside a substream: its records, then its END.
    InSubstream,
    /// After the last END: nothing may follow.
    Done,
}

/// Reads fields of a record header in the stream's byte order.
#[derive(Clone, Copy)]
struct Header<'a> {
    b: &'a [u8; RECORD_LEN],
    big_endian: bool,
}

impl Header<'_> {
    fn u8(&self, o: usize) -> u8 {
        self.b[o]
    }

    fn u32(&self, o: usize) -> u32 {
        let b: [u8; 4] = self.b[o..o + 4].try_into().expect("4 bytes");
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn u64(&self, o: usize) -> u64 {
        let b: [u8; 8] = self.b[o..o + 8].try_into().expect("8 bytes");
        if self.big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        }
    }

    /// `drr_toname`: NUL-terminated within its 256 bytes, a valid snapshot.
    fn toname(&self, offset: u64) -> Result<Snapshot, StreamError> {
        let bytes = &self.b[56..RECORD_LEN];
        let bad = |source| StreamError::BadName { offset, source };
        let end = bytes.iter().position(|&b| b == 0).ok_or(bad(NameError::TooLong { len: bytes.len() }))?;
        let name = std::str::from_utf8(&bytes[..end]).map_err(|_| bad(NameError::BadChar('\u{FFFD}')))?;
        Snapshot::new(name).map_err(bad)
    }
}

/// The byte order a BEGIN record's magic reveals: `Some(true)` for big
/// endian, `None` when it is not the magic in either order.
fn byte_order(rec: &[u8; RECORD_LEN]) -> Option<bool> {
    let le = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
    if le == DMU_BACKUP_MAGIC {
        Some(false)
    } else if le.swap_bytes() == DMU_BACKUP_MAGIC {
        Some(true)
    } else {
        None
    }
}

/// Payload length and `drr_toguid` offset of a non-BEGIN record.
fn body_layout(rtype: RecordType, h: Header<'_>) -> (u64, usize) {
    let round8 = |n: u64| n.div_ceil(8) * 8;
    match rtype {
        RecordType::Object => {
            let raw = u64::from(h.u32(36));
            (if raw != 0 { raw } else { round8(u64::from(h.u32(28))) }, 40)
        }
        RecordType::Write => (if h.u8(50) != 0 { h.u64(96) } else { h.u64(32) }, 40),
        RecordType::Spill => {
            let compressed = h.u64(40);
            (if compressed != 0 { compressed } else { h.u64(16) }, 24)
        }
        RecordType::WriteEmbedded => (round8(u64::from(h.u32(52))), 32),
        RecordType::FreeObjects | RecordType::ObjectRange => (0, 24),
        RecordType::Free | RecordType::WriteByref | RecordType::Redact => (0, 32),
        RecordType::End => (0, 40),
        RecordType::Begin => unreachable!("BEGIN records are handled separately"),
    }
}

/// Checks a send stream as it flows; see the module docs.
///
/// ```
/// use zoffsite_core::names::Guid;
/// use zoffsite_core::records::{Expect, StreamValidator};
/// let mut v = StreamValidator::new(Expect { from: None, to: Guid::new(7).unwrap(), resuming: false });
/// assert!(v.feed(b"not a stream, and too short to tell").is_ok());
/// assert!(v.finish().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct StreamValidator {
    expect: Expect,
    header: [u8; RECORD_LEN],
    /// Bytes of `header` filled so far.
    filled: usize,
    /// Payload bytes still to skip before the next header.
    skip: u64,
    /// Bytes consumed so far.
    offset: u64,
    records: u64,
    state: State,
    big_endian: bool,
    compound: Option<Snapshot>,
    /// `drr_toguid` of the substream being read, or of the last one.
    current: u64,
    /// A substream for `expect.to` has begun: nothing may follow it.
    reached_target: bool,
    snapshots: Vec<(Snapshot, Guid)>,
    error: Option<StreamError>,
}

impl StreamValidator {
    pub fn new(expect: Expect) -> Self {
        Self {
            expect,
            header: [0; RECORD_LEN],
            filled: 0,
            skip: 0,
            offset: 0,
            records: 0,
            state: State::Start,
            big_endian: false,
            compound: None,
            current: 0,
            reached_target: false,
            snapshots: Vec::new(),
            error: None,
        }
    }

    /// Checks the next bytes of the stream. Chunks may split records (and
    /// headers) anywhere. Returns the first error as soon as it is seen, and
    /// that same error on every later call.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), StreamError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        while !chunk.is_empty() {
            if self.skip > 0 {
                // Payloads are skipped by count, never stored.
                let n = usize::try_from(self.skip).map_or(chunk.len(), |s| s.min(chunk.len()));
                self.skip -= n as u64;
                self.offset += n as u64;
                chunk = &chunk[n..];
                continue;
            }
            if self.state == State::Done {
                return self.fail(StreamError::TrailingData { offset: self.offset });
            }
            let n = (RECORD_LEN - self.filled).min(chunk.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&chunk[..n]);
            self.filled += n;
            self.offset += n as u64;
            chunk = &chunk[n..];
            if self.filled == RECORD_LEN {
                self.filled = 0;
                if let Err(e) = self.record() {
                    return self.fail(e);
                }
            }
        }
        Ok(())
    }

    /// Ends the stream: valid only if it ended exactly after its final END.
    pub fn finish(self) -> Result<Summary, StreamError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let offset = self.offset;
        if self.filled != 0 {
            return Err(StreamError::Truncated { offset, what: "inside a record header" });
        }
        if self.skip != 0 {
            return Err(StreamError::Truncated { offset, what: "inside a record's payload" });
        }
        match self.state {
            State::Done => Ok(Summary {
                snapshots: self.snapshots,
                bytes: self.offset,
                records: self.records,
                compound: self.compound.is_some(),
            }),
            State::Start => Err(StreamError::Empty),
            _ => Err(StreamError::Truncated { offset, what: "before its final END record" }),
        }
    }

    /// True once the final END has been read: a valid stream ends here.
    pub fn is_complete(&self) -> bool {
        self.error.is_none() && self.state == State::Done && self.skip == 0
    }

    /// Bytes checked so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn fail(&mut self, e: StreamError) -> Result<(), StreamError> {
        self.error = Some(e.clone());
        Err(e)
    }

    /// Checks the header now complete in `self.header`.
    fn record(&mut self) -> Result<(), StreamError> {
        let offset = self.offset - RECORD_LEN as u64;
        let buf = self.header;
        if self.state == State::Start {
            self.big_endian = byte_order(&buf).ok_or(StreamError::BadMagic { offset })?;
        }
        let h = Header { b: &buf, big_endian: self.big_endian };
        let raw_type = h.u32(0);
        let rtype = RecordType::from_u32(raw_type).ok_or(StreamError::UnknownRecord { offset, rtype: raw_type })?;
        self.records += 1;
        if rtype == RecordType::Begin {
            return self.begin(offset, h);
        }
        let (payload, toguid_at) = body_layout(rtype, h);
        if payload > MAX_PAYLOAD {
            return Err(StreamError::PayloadTooLarge { offset, rtype, len: payload, max: MAX_PAYLOAD });
        }
        let toguid = h.u64(toguid_at);
        match self.state {
            State::Start => return Err(StreamError::NotBegin { offset }),
            State::CompoundHeader | State::Between if rtype != RecordType::End => {
                return Err(StreamError::OutsideSubstream { offset, rtype })
            }
            State::CompoundHeader | State::Between => {
                // Both Ends libzfs writes around the substreams of a compound
                // stream are all zero but for their checksum.
                if toguid != 0 {
                    return Err(StreamError::ForeignRecord { offset, rtype, found: toguid, expected: 0 });
                }
                if self.state == State::CompoundHeader {
                    self.state = State::Between;
                } else {
                    if self.snapshots.is_empty() {
                        return Err(StreamError::EmptyCompound { offset });
                    }
                    self.end_of_stream(offset)?;
                }
            }
            State::InSubstream => {
                if matches!(rtype, RecordType::WriteByref | RecordType::Redact) {
                    return Err(StreamError::Unsupported { offset, rtype });
                }
                if toguid != self.current {
                    return Err(StreamError::ForeignRecord { offset, rtype, found: toguid, expected: self.current });
                }
                if rtype == RecordType::End {
                    if self.compound.is_some() {
                        self.state = State::Between;
                    } else {
                        self.end_of_stream(offset)?;
                    }
                }
            }
            State::Done => return Err(StreamError::TrailingData { offset }),
        }
        self.skip = payload;
        Ok(())
    }

    fn begin(&mut self, offset: u64, h: Header<'_>) -> Result<(), StreamError> {
        // Every BEGIN carries the magic, in the byte order of the whole stream.
        if byte_order(h.b) != Some(self.big_endian) {
            return Err(StreamError::BadMagic { offset });
        }
        let payload = u64::from(h.u32(4));
        if payload > MAX_BEGIN_PAYLOAD {
            return Err(StreamError::PayloadTooLarge {
                offset,
                rtype: RecordType::Begin,
                len: payload,
                max: MAX_BEGIN_PAYLOAD,
            });
        }
        let versioninfo = h.u64(16);
        let hdrtype = versioninfo & 0b11;
        let features = (versioninfo >> 2) & ((1 << 30) - 1);
        match (self.state, hdrtype) {
            (State::Start, DMU_COMPOUNDSTREAM) => self.compound_header(offset, h, payload, features)?,
            (State::Start | State::Between, DMU_SUBSTREAM) => self.substream(offset, h, features)?,
            (State::Start | State::Between, _) => return Err(StreamError::BadHeaderType { offset, hdrtype }),
            (State::CompoundHeader, _) => {
                return Err(StreamError::UnexpectedBegin { offset, context: "the compound header's END must be" })
            }
            (State::InSubstream, _) => {
                return Err(StreamError::UnexpectedBegin { offset, context: "the previous substream has not ended" })
            }
            (State::Done, _) => return Err(StreamError::TrailingData { offset }),
        }
        self.skip = payload;
        Ok(())
    }

    fn compound_header(&mut self, offset: u64, h: Header<'_>, payload: u64, features: u64) -> Result<(), StreamError> {
        if payload != 0 {
            return Err(StreamError::Replication { offset, len: payload });
        }
        if features & !COMPOUND_FEATURES != 0 || h.u64(40) != 0 || h.u64(48) != 0 {
            return Err(StreamError::CompoundHeader { offset, features });
        }
        if self.expect.resuming {
            return Err(StreamError::NotResuming {
                offset,
                what: "is a compound (-I) stream, and zfs send -t sends one substream",
            });
        }
        self.compound = Some(h.toname(offset)?);
        self.state = State::CompoundHeader;
        Ok(())
    }

    fn substream(&mut self, offset: u64, h: Header<'_>, features: u64) -> Result<(), StreamError> {
        let name = h.toname(offset)?;
        if features & FEATURE_RAW == 0 {
            return Err(StreamError::NotRaw { offset, name });
        }
        let unknown = features & !SUBSTREAM_FEATURES;
        if unknown != 0 {
            return Err(StreamError::Features { offset, name, flags: unknown });
        }
        let resuming = features & FEATURE_RESUMING != 0;
        if resuming && !self.expect.resuming {
            return Err(StreamError::UnexpectedResume { offset, name });
        }
        if !resuming && self.expect.resuming {
            return Err(StreamError::NotResuming { offset, what: "does not resume an interrupted send" });
        }
        if self.reached_target {
            return Err(StreamError::PastTarget { offset, name });
        }
        if self.snapshots.len() >= MAX_SUBSTREAMS {
            return Err(StreamError::TooManySubstreams { offset });
        }
        let to = h.u64(40);
        let from = h.u64(48);
        let guid = Guid::new(to).map_err(|_| StreamError::ZeroGuid { offset })?;
        if let Some((first, _)) = self.snapshots.first() {
            if first.dataset != name.dataset {
                return Err(StreamError::OtherDataset { offset, name, first: first.dataset.clone() });
            }
        }
        match self.snapshots.last() {
            None => {
                let expected = self.expect.from.map_or(0, Guid::get);
                if from != expected {
                    return Err(StreamError::WrongBase { offset, expected, found: from });
                }
            }
            Some(&(_, prev)) if from != prev.get() => {
                return Err(StreamError::ChainBroken { offset, name, expected: prev.get(), found: from });
            }
            Some(_) => {}
        }
        self.current = to;
        self.reached_target = to == self.expect.to.get();
        self.snapshots.push((name, guid));
        self.state = State::InSubstream;
        Ok(())
    }

    /// The last END: the stream must have reached the expected snapshot.
    fn end_of_stream(&mut self, offset: u64) -> Result<(), StreamError> {
        if self.current != self.expect.to.get() {
            return Err(StreamError::WrongTarget { offset, expected: self.expect.to, found: self.current });
        }
        if let (Some(header), Some((last, _))) = (&self.compound, self.snapshots.last()) {
            if header != last {
                return Err(StreamError::CompoundName { offset, header: header.clone(), last: last.clone() });
            }
        }
        self.state = State::Done;
        Ok(())
    }
}
