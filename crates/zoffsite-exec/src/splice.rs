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
//!   tells the length), then on to ssh. Each frame costs wake-ups and
//!   system calls on both sides, so a chunk is topped up with what the
//!   producer writes within a short, bounded wait ([`Relay::top_up`]);
//!   only what is already in the relay is ever promised in a frame header.
//! - `serve` must still see every record header: it reads those, and
//!   splices only payloads its validator skips by count anyway
//!   (`StreamValidator::payload_pending`).
//!
//! Where splice cannot be used (not a pipe on either side: `EINVAL`), the
//! callers fall back to copying; [`unsupported`] tells that case apart.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::pipe::{splice, SpliceFlags};

/// Moves up to `len` bytes from `from` to `to` (one of them a pipe),
/// blocking until some can move. `Ok(0)`: `from` is at its end.
pub fn splice_some(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    loop {
        match splice(from.as_fd(), None, to.as_fd(), None, len, SpliceFlags::MOVE) {
            Err(Errno::INTR) => continue,
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
    e.raw_os_error() == Some(Errno::INVAL.raw_os_error())
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

    /// Adds to the `have` bytes a [`fill`](Self::fill) just brought what
    /// `from` delivers within a short wait, up to `max` (or the capacity)
    /// in all; returns the new total. A producer that writes a record's
    /// header and its payload separately (`zfs send`) otherwise makes
    /// every write a frame of its own, and each frame costs both sides
    /// wake-ups and system calls.
    ///
    /// It sleeps `step` at a time and then takes whatever came, so that
    /// several of the producer's writes cost one wake-up (waking on each
    /// write, as poll(2) would, saves frames but not wake-ups). It stops as
    /// soon as a step brought nothing (a stream that pauses is held back
    /// one step, no more), at `wait` in all, once it holds half of `max`
    /// (a fast producer is not made to wait), and at the end of
    /// `from`. Every splice is non-blocking: a blocking top-up could wait on
    /// a producer that is itself waiting, and the caller writes a frame
    /// header only for what is already in the relay. The end of `from`, an
    /// error, or a full relay (its slots, not only its bytes) just end the
    /// top-up: the next fill reports the first two.
    pub fn top_up(&self, from: impl AsFd, mut have: usize, max: usize, step: Duration, wait: Duration) -> usize {
        let want = max.clamp(1, self.capacity.max(1));
        let started = Instant::now();
        let mut slept = false;
        while have < want {
            match splice(from.as_fd(), None, &self.write, None, want - have, SpliceFlags::MOVE | SpliceFlags::NONBLOCK)
            {
                Ok(0) => break,
                Ok(n) => have += n,
                Err(Errno::INTR) => continue,
                // Nothing there yet: wait a step, unless a whole step
                // brought nothing already.
                Err(Errno::AGAIN) if !slept => {}
                Err(_) => break,
            }
            // Half a chunk is few enough frames: waiting for more would only
            // stall a fast producer (its pipe fills while this sleeps).
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() || have >= want / 2 {
                break;
            }
            std::thread::sleep(step.min(left));
            slept = true;
        }
        have
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

    /// Fills and tops up like the source's stream loop; returns the chunk
    /// lengths and the bytes that came through.
    fn relay_all(src: &std::io::PipeReader, step: Duration, wait: Duration) -> (Vec<usize>, Vec<u8>) {
        let (mut dst_r, dst_w) = std::io::pipe().unwrap();
        let consumer = std::thread::spawn(move || {
            let mut got = Vec::new();
            dst_r.read_to_end(&mut got).map(|_| got)
        });
        let relay = Relay::new(1 << 20).unwrap();
        let mut chunks = Vec::new();
        loop {
            let n = match relay.fill(src, usize::MAX).unwrap() {
                0 => break,
                n => relay.top_up(src, n, usize::MAX, step, wait),
            };
            assert!(n <= relay.capacity());
            // The whole promised length is in the relay already: the drain
            // cannot wait on the producer.
            relay.drain(&dst_w, n).unwrap();
            chunks.push(n);
        }
        drop(dst_w);
        (chunks, consumer.join().unwrap().unwrap())
    }

    #[test]
    fn a_top_up_gathers_a_producers_separate_writes_into_few_chunks() {
        // As zfs send writes: each record's 312-byte header, then its
        // payload, with a short pause before each write.
        let (src_r, mut src_w) = std::io::pipe().unwrap();
        crate::process::widen_pipe(&src_w);
        let records: usize = 24;
        let data: Vec<u8> = (0..records * (312 + (128 << 10))).map(|i| (i * 13 + i / 4093).to_le_bytes()[0]).collect();
        let producer = {
            let data = data.clone();
            std::thread::spawn(move || {
                for record in data.chunks(312 + (128 << 10)) {
                    for write in [&record[..312], &record[312..]] {
                        std::thread::sleep(Duration::from_micros(200));
                        src_w.write_all(write)?;
                    }
                }
                Ok::<_, io::Error>(())
            })
        };
        // Bounds far above the pauses, for a loaded test machine; the
        // stream loop's own are a few milliseconds.
        let (chunks, got) = relay_all(&src_r, Duration::from_millis(20), Duration::from_secs(1));
        producer.join().unwrap().unwrap();
        assert!(got == data, "every byte, in order");
        let writes = 2 * records;
        assert!(chunks.len() <= writes / 4, "{} chunks for {writes} writes: {chunks:?}", chunks.len());
    }

    #[test]
    fn a_top_up_waits_no_longer_than_its_bounds_and_not_for_an_ended_stream() {
        // A stream that pauses mid-way, then ends: the chunk before the
        // pause goes out after one step, not after the pause.
        let (src_r, mut src_w) = std::io::pipe().unwrap();
        let producer = std::thread::spawn(move || {
            src_w.write_all(&[1; 1000])?;
            std::thread::sleep(Duration::from_millis(1500));
            src_w.write_all(&[2; 500])
        });
        let relay = Relay::new(1 << 20).unwrap();
        let (sink_r, sink_w) = std::io::pipe().unwrap();
        let step = Duration::from_millis(20);
        assert_eq!(relay.fill(&src_r, usize::MAX).unwrap(), 1000);
        let started = Instant::now();
        assert_eq!(relay.top_up(&src_r, 1000, usize::MAX, step, Duration::from_secs(5)), 1000);
        assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
        relay.drain(&sink_w, 1000).unwrap();
        // After the pause, the rest and the end: nothing is awaited.
        assert_eq!(relay.fill(&src_r, usize::MAX).unwrap(), 500);
        producer.join().unwrap().unwrap();
        let started = Instant::now();
        assert_eq!(relay.top_up(&src_r, 500, usize::MAX, Duration::from_secs(5), Duration::from_secs(5)), 500);
        assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
        relay.drain(&sink_w, 500).unwrap();
        assert_eq!(relay.fill(&src_r, usize::MAX).unwrap(), 0);
        drop(sink_w);
        let mut got = Vec::new();
        (&sink_r).read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 1500);

        // A steady trickle: the total wait bounds the chunk, and `max`
        // bounds its length.
        let (src_r, mut src_w) = std::io::pipe().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let trickle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    src_w.write_all(&[3; 10])?;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok::<_, io::Error>(())
            })
        };
        let n = relay.fill(&src_r, usize::MAX).unwrap();
        let started = Instant::now();
        let n = relay.top_up(&src_r, n, usize::MAX, Duration::from_millis(500), Duration::from_millis(100));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_millis(1000), "{took:?}");
        assert!(n > 10 && n.is_multiple_of(10), "{n}");
        // Each 10-byte write is a pipe buffer of its own: more of them
        // than an unread pipe holds, so this one is read.
        let (mut keep_r, keep_w) = std::io::pipe().unwrap();
        let keep = std::thread::spawn(move || std::io::copy(&mut keep_r, &mut std::io::sink()));
        relay.drain(&keep_w, n).unwrap();
        drop(keep_w);
        assert_eq!(keep.join().unwrap().unwrap(), n as u64);
        let m = relay.fill(&src_r, 15).unwrap();
        let topped = relay.top_up(&src_r, m, 15, Duration::from_millis(500), Duration::from_secs(5));
        assert!(m <= topped && topped <= 15, "{m} then {topped}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        trickle.join().unwrap().unwrap();
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
