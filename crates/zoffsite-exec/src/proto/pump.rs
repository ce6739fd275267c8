//! Passing a checked stream from the source's frames into `zfs receive`.
//!
//! Invariant: no byte reaches `zfs receive` before the record header it
//! belongs to (or follows) was checked by the [`StreamValidator`]; only
//! payloads the validator skips by count anyway are passed on unread
//! (large ones by splice(2)), and a frame is always consumed whole, so the
//! next frame header is read where it starts.
//!
//! While large payloads come one after another (a stream of 128 KiB
//! WRITE records), each read after a spliced payload stops exactly at the
//! end of the next record header, so the next payload is spliced whole
//! rather than partly copied through user space.

use std::io::{self, BufWriter, Write};
use std::process::ChildStdin;

use zoffsite_core::protocol::ProtoError;
use zoffsite_core::records::{StreamError, StreamValidator, RECORD_LEN};

use super::server::Input;

/// Payloads at least this long are spliced into `zfs receive` rather than
/// copied (raw WRITE records are the dataset's compressed blocks, up to its
/// recordsize: 128 KiB by default).
const SPLICE_MIN: u64 = 32 << 10;
/// Least bytes read at once while splicing, except right after a spliced
/// payload (then exactly through the next header: see [`Sink::exact`]):
/// small records (object headers, small files) then come several per
/// read, and a large payload after them loses at most this much to copying
/// before the rest of it is spliced.
pub(super) const MIN_READ: usize = 8 << 10;
/// Most bytes read at once (and the copy buffer's size).
const SCRATCH: usize = 256 << 10;

/// `zfs receive`'s stdin. Headers and small payloads are batched in a
/// buffer; large payloads are spliced in after it is flushed, so the order
/// holds. The first failed write (zfs receive gave up) sets `broken`.
pub(super) struct Sink {
    w: Option<BufWriter<ChildStdin>>,
    pub(super) broken: bool,
    /// False once splice turned out not to work here: copy from then on.
    splicing: bool,
    /// The last payload was spliced: large payloads are coming one after
    /// another, so the next read stops at the end of the next header
    /// (the next payload is then likely spliced whole). Cleared by a
    /// header whose payload is not spliced, so that runs of small records
    /// are read [`MIN_READ`] at a time again. Kept across frames: a frame
    /// may end anywhere in a record.
    exact: bool,
}

impl Sink {
    pub(super) fn new(stdin: Option<ChildStdin>) -> Self {
        let broken = stdin.is_none();
        Self { w: stdin.map(|s| BufWriter::with_capacity(64 << 10, s)), broken, splicing: true, exact: false }
    }

    pub(super) fn write(&mut self, data: &[u8]) {
        if let (false, Some(w)) = (self.broken, self.w.as_mut()) {
            self.broken = w.write_all(data).is_err();
        }
    }

    /// Flushes and closes; true if any write failed.
    pub(super) fn close(&mut self) -> bool {
        if let (false, Some(w)) = (self.broken, self.w.as_mut()) {
            self.broken = w.flush().is_err();
        }
        self.w = None;
        self.broken
    }
}

pub(super) enum PumpError {
    /// A record failed the check; the frame was consumed.
    Invalid(StreamError),
    /// The source's side of the connection failed or ended.
    Input(ProtoError),
}

/// Passes one data frame's `len` bytes from `input` to `sink`. Record
/// headers (and small payloads) are read and fed to `v`, and reach the sink
/// only once checked; payloads `v` skips by count anyway are spliced when
/// they are at least [`SPLICE_MIN`] long and both ends allow it. The whole
/// frame is always consumed, even once the sink broke or a record failed,
/// so the next frame header is read where it starts.
pub(super) fn pump(
    input: &mut impl Input,
    len: usize,
    v: &mut StreamValidator,
    sink: &mut Sink,
    scratch: &mut Vec<u8>,
) -> Result<(), PumpError> {
    let mut rem = len;
    let mut invalid = None;
    while rem > 0 {
        let pending = v.payload_pending();
        if invalid.is_none() && !sink.broken && sink.splicing && pending >= SPLICE_MIN {
            if let (Some(from), Some(to)) = (input.splice_fd(), sink.w.as_mut()) {
                let n = rem.min(usize::try_from(pending).unwrap_or(usize::MAX));
                let moved = match to.flush() {
                    Ok(()) => crate::splice::splice_some(from, to.get_ref(), n),
                    Err(e) => Err(e),
                };
                match moved {
                    Ok(0) => return Err(PumpError::Input(ProtoError::Closed)),
                    Ok(m) => {
                        rem -= m;
                        sink.exact = true;
                        if let Err(e) = v.skip_payload(m as u64) {
                            invalid = Some(e);
                        }
                        continue;
                    }
                    Err(e) if crate::splice::unsupported(&e) => {
                        tracing::debug!("splice unsupported here ({e}): copying the stream");
                        sink.splicing = false;
                    }
                    // zfs receive is gone: read the rest, to drop it.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => sink.broken = true,
                    Err(e) => return Err(PumpError::Input(ProtoError::Io(e))),
                }
            }
        }
        // Read through the next record header, so that the payload after
        // it can be spliced: exactly that far after a spliced payload, at
        // least MIN_READ otherwise. A plain copy reads big.
        let want = if sink.splicing && !sink.broken && invalid.is_none() {
            let through = usize::try_from(v.until_next_header()).unwrap_or(usize::MAX);
            if sink.exact {
                // Never zero (a validator that failed asks for nothing):
                // a read of nothing would look like the end of the input.
                through.max(1)
            } else {
                through.max(MIN_READ)
            }
        } else {
            SCRATCH
        };
        let want = want.min(rem).min(SCRATCH);
        if scratch.len() < want {
            scratch.resize(SCRATCH, 0);
        }
        let n = match input.read(&mut scratch[..want]) {
            Ok(0) => return Err(PumpError::Input(ProtoError::Closed)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PumpError::Input(ProtoError::Io(e))),
        };
        rem -= n;
        if invalid.is_some() || sink.broken {
            continue;
        }
        match v.feed(&scratch[..n]) {
            Ok(()) => sink.write(&scratch[..n]),
            Err(e) => invalid = Some(e),
        }
        // A header read whole whose payload is not for splicing (a small
        // one, or none): the records are small for now. (Still inside a
        // header, the read came short or the frame ended: no news.)
        let mid_header = v.payload_pending() == 0 && v.until_next_header() < RECORD_LEN as u64;
        if !mid_header && v.payload_pending() < SPLICE_MIN {
            sink.exact = false;
        }
    }
    invalid.map_or(Ok(()), |e| Err(PumpError::Invalid(e)))
}
