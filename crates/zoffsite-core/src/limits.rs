//! How much a restore or a drill accepts from the box, in bytes and time.
//!
//! A restore and a drill receive what the box sends into a pool of the
//! trusted machine, often the live one. A hostile box could send a stream
//! that never ends, or one far larger than anything the source sent, and
//! fill that pool; or make it crawl. So both run within limits decided
//! here, before anything is received:
//! - bytes: a drill accepts what the source itself would send for that
//!   snapshot (`zfs send -nvP -w`), plus a margin; a restore accepts
//!   `--max-bytes`, by default what the destination pool has available
//!   less a twentieth (a restore larger than the free space fails anyway;
//!   the twentieth keeps the live pool usable when a box lies);
//! - time: `--max-time`, by default half an hour plus the byte limit at
//!   256 KiB/s (2 Mbit/s), slower than any link a backup of that size went
//!   through.
//!
//! Every chunk is counted against the limit before it reaches the stream
//! checks or `zfs receive` ([`ByteBudget::take`]).

use std::time::Duration;

/// Time every restore or drill gets whatever its size.
pub const BASE_TIME: Duration = Duration::from_secs(30 * 60);
/// The slowest transfer rate a default time limit allows for.
pub const FLOOR_RATE: u64 = 256 * 1024;
/// A drill's margin over the source's own estimate: a sixteenth, and at
/// least this (a re-send of received raw blocks differs from the source's
/// estimate only by stream metadata).
pub const DRILL_MARGIN: u64 = 16 << 20;

/// A byte limit, counted down as the box's stream arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteBudget {
    limit: u64,
    used: u64,
    /// Where the limit comes from, for the error (e.g. `--max-bytes`).
    why: String,
}

/// The box sent more than the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the box sent more than {limit} bytes, the most accepted ({why}): stopped before the excess reached zfs receive"
)]
pub struct OverBudget {
    pub limit: u64,
    pub why: String,
}

impl ByteBudget {
    pub fn new(limit: u64, why: impl Into<String>) -> Self {
        Self { limit, used: 0, why: why.into() }
    }

    /// Accounts for `n` more bytes; refuses (and accounts nothing) when
    /// they would go past the limit.
    pub fn take(&mut self, n: u64) -> Result<(), OverBudget> {
        match self.used.checked_add(n) {
            Some(u) if u <= self.limit => {
                self.used = u;
                Ok(())
            }
            _ => Err(OverBudget { limit: self.limit, why: self.why.clone() }),
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// A restore's default byte limit: `available` bytes on the destination,
/// less a twentieth.
pub fn restore_default_bytes(available: u64) -> u64 {
    available - available / 20
}

/// A drill's byte limit: the source's estimate of the same stream, plus a
/// sixteenth, plus [`DRILL_MARGIN`].
pub fn drill_bytes(estimate: u64) -> u64 {
    estimate.saturating_add(estimate / 16).saturating_add(DRILL_MARGIN)
}

/// The default time limit for receiving up to `bytes`.
pub fn default_time(bytes: u64) -> Duration {
    BASE_TIME.saturating_add(Duration::from_secs(bytes / FLOOR_RATE))
}

/// Parses a byte count: a number with an optional binary suffix (`K`, `M`,
/// `G`, `T`, optionally followed by `iB`; `B` alone for bytes), e.g.
/// `500G`, `2TiB`, `1048576`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let bad = || format!("{s:?} is not a byte count; write it like 500G, 2TiB or 1048576");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        "P" | "PiB" => 50,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_the_chunk_that_would_pass_it() {
        let mut b = ByteBudget::new(10, "--max-bytes");
        b.take(4).unwrap();
        b.take(6).unwrap();
        let e = b.take(1).unwrap_err();
        assert_eq!(b.used(), 10, "nothing counted for a refused chunk");
        assert!(e.to_string().contains("more than 10 bytes") && e.to_string().contains("--max-bytes"), "{e}");
        let mut b = ByteBudget::new(u64::MAX, "x");
        b.take(u64::MAX).unwrap();
        assert!(b.take(1).is_err(), "no overflow");
    }

    #[test]
    fn defaults() {
        assert_eq!(restore_default_bytes(2000), 1900);
        assert_eq!(restore_default_bytes(0), 0);
        assert_eq!(drill_bytes(1600 << 20), (1700 << 20) + DRILL_MARGIN);
        assert_eq!(drill_bytes(u64::MAX), u64::MAX);
        assert_eq!(default_time(0), BASE_TIME);
        assert_eq!(default_time(FLOOR_RATE * 3600), BASE_TIME + Duration::from_secs(3600));
    }

    #[test]
    fn byte_counts_parse() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("500G"), Ok(500 << 30));
        assert_eq!(parse_bytes("2TiB"), Ok(2 << 40));
        assert_eq!(parse_bytes("7B"), Ok(7));
        for bad in ["", "G", "1.5G", "-1", "10 GB", "10g", "99999999999999999999"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert!(parse_bytes("100000P").unwrap_err().contains("too large"));
    }
}
