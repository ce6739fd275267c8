//! Moving stream bytes without copying them through user space.
//!
//! A run's bulk is the send stream: `zfs send` → zoffsite → ssh on the
//! source, sshd → `serve` → `zfs receive` on the box. Reading each chunk
//! into a buffer and writing it out again costs two copies per hop, which
//! the bare `zfs send | ssh | zfs receive` pipe does not pay. `splice(2)`
//! moves page references between pipes (and from a socket into a pipe)
//! inside the kernel instead.
//!
//! - The source needs each chunk's length for its frame header before the
//!   chunk: [`Relay`] moves a chunk into a pipe of its own first (which
//!   tells the length), then on to ssh.
//! - `serve` must still see every record header: it reads those, and
//!   splices only payloads its validator skips by count anyway
//!   (`StreamValidator::payload_pending`).
//!
//! Where splice cannot be used (not a pipe on either side: `EINVAL`), the
//! callers fall back to copying; [`unsupported`] tells that case apart.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{splice, SpliceFlags};

/// Moves up to `len` bytes from `from` to `to` (one of them a pipe),
/// blocking until some can move. `Ok(0)`: `from` is at its end.
pub fn splice_some(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    loop {
        match splice(from.as_fd(), None, to.as_fd(), None, len, SpliceFlags::MOVE) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Moves exactly `len` bytes from `from` to `to`; `UnexpectedEof` if `from`
/// ends first.
pub fn splice_exact(from: impl AsFd, to: impl AsFd, mut len: usize) -> io::Result<()> {
    while len > 0 {
        match splice_some(from.as_fd(), to.as_fd(), len)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => len -= n,
        }
    }
    Ok(())
}

/// True when `e` says splice does not work on these descriptors (neither is
/// a pipe, or a file system without splice support): copy instead.
pub fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// A pipe of our own between a producer's pipe and a consumer's: each chunk
/// is moved into it first, which tells its length (needed for the frame
/// header that precedes the chunk), then moved on. No byte is copied.
pub struct Relay {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Relay {
    /// A relay holding up to `want` bytes, or less if the system's pipe size
    /// limit is lower (`capacity` tells).
    pub fn new(want: usize) -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe()?;
        // Refused above /proc/sys/fs/pipe-max-size for unprivileged users:
        // the default capacity then bounds the chunks.
        let _ = rustix::pipe::fcntl_setpipe_size(&write, want);
        let capacity = rustix::pipe::fcntl_getpipe_size(&write)?.min(want);
        Ok(Self { read, write, capacity })
    }

    /// Most bytes one [`fill`](Self::fill) moves.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves what `from` has (at least 1 byte, blocking until then; at most
    /// `max` or [`capacity`](Self::capacity), whichever is less: a paced
    /// stream takes small chunks) into the empty relay. `Ok(0)`: `from` is
    /// at its end.
    pub fn fill(&self, from: impl AsFd, max: usize) -> io::Result<usize> {
        splice_some(from, &self.write, max.clamp(1, self.capacity.max(1)))
    }

    /// Moves the `len` bytes the last fill brought on to `to`.
    pub fn drain(&self, to: impl AsFd, len: usize) -> io::Result<()> {
        splice_exact(&self.read, to, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_relay_moves_every_byte_in_order_and_tells_each_chunk_length() {
        let (mut src_r, mut src_w) = std::io::pipe().unwrap();
        let (mut dst_r, dst_w) = std::io::pipe().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251).to_le_bytes()[0]).collect();
        let producer = {
            let data = data.clone();
            std::thread::spawn(move || src_w.write_all(&data))
        };
        let consumer = std::thread::spawn(move || {
            let mut got = Vec::new();
            dst_r.read_to_end(&mut got).map(|_| got)
        });
        let relay = Relay::new(1 << 20).unwrap();
        assert!(relay.capacity() > 0 && relay.capacity() <= 1 << 20);
        let mut total = 0;
        for round in 0.. {
            // Every other chunk a small one, as a paced stream takes them.
            let max = if round % 2 == 0 { 777 } else { usize::MAX };
            let n = relay.fill(&src_r, max).unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= relay.capacity() && n <= max);
            relay.drain(&dst_w, n).unwrap();
            total += n;
        }
        drop(dst_w);
        producer.join().unwrap().unwrap();
        assert_eq!(total, data.len());
        assert_eq!(consumer.join().unwrap().unwrap(), data);
        // At the end, the source reads as ended again, not as an error.
        assert_eq!(relay.fill(&src_r, usize::MAX).unwrap(), 0);
        let _ = src_r.read(&mut [0u8; 1]);
    }

    #[test]
    fn splice_exact_reports_a_short_source_and_files_are_unsupported() {
        let (src_r, mut src_w) = std::io::pipe().unwrap();
        let (_dst_r, dst_w) = std::io::pipe().unwrap();
        src_w.write_all(b"abc").unwrap();
        drop(src_w);
        let e = splice_exact(&src_r, &dst_w, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Two regular files: no pipe on either side.
        let path = |n: &str| std::env::temp_dir().join(format!("zoffsite-splice-{n}-{}", std::process::id()));
        let open = |n: &str| std::fs::File::options().read(true).write(true).create(true).truncate(true).open(path(n));
        let (a, b) = (open("a").unwrap(), open("b").unwrap());
        let e = splice_some(&a, &b, 10).unwrap_err();
        assert!(unsupported(&e), "{e}");
        let _ = std::fs::remove_file(path("a"));
        let _ = std::fs::remove_file(path("b"));
    }
}
