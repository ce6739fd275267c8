//! Numbers for people: the one format for a byte count and the one for an
//! age or a duration, used by every message, table and report a person
//! reads (`status`, `box check`, `backup`, `restore`, `doctor`, ...). JSON
//! keeps raw numbers (bytes, seconds).
//!
//! Both come from crates rather than hand-written code: bytes are
//! indicatif's `HumanBytes` (binary units, as the progress bars show them),
//! ages are a jiff `Span` balanced up to days (24 h each: these are ages and
//! timeouts, not calendar dates), truncated to its two largest units, and
//! printed by jiff's friendly printer: `3d 4h`, `5h 12m`, `1m 30s`, `42s`.
//! Truncated, never rounded up: an age shown is never older than it is.

use std::time::Duration;

use jiff::fmt::friendly::{Designator, Spacing, SpanPrinter};
use jiff::{RoundMode, Span, SpanRound, Unit};

/// A byte count: `0 B`, `1023 B`, `1.50 KiB`, `256.00 MiB`.
pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// An age or a duration in seconds (a negative one, a clock's skew, shows
/// as `0s`).
pub fn secs(s: i64) -> String {
    // Past jiff's largest span (about 20,000 years): shown as that.
    const MAX: i64 = 631_107_417_600;
    let span = Span::new().seconds(s.clamp(0, MAX));
    let units = [Unit::Day, Unit::Hour, Unit::Minute, Unit::Second];
    let balanced = round(span, Unit::Second);
    let fields =
        [balanced.get_days().into(), balanced.get_hours().into(), balanced.get_minutes(), balanced.get_seconds()];
    let largest = fields.iter().position(|&f: &i64| f != 0).unwrap_or(units.len() - 1);
    let two = round(balanced, units[(largest + 1).min(units.len() - 1)]);
    SpanPrinter::new()
        .designator(Designator::Compact)
        .spacing(Spacing::BetweenUnits)
        .zero_unit(Unit::Second)
        .span_to_string(&two)
}

/// [`secs`] of a [`Duration`] (whole seconds).
pub fn duration(d: Duration) -> String {
    secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `span` balanced into days down to `smallest`, truncated.
fn round(span: Span, smallest: Unit) -> Span {
    span.round(SpanRound::new().largest(Unit::Day).smallest(smallest).mode(RoundMode::Trunc).days_are_24_hours())
        // Whole seconds below jiff's limit, balanced with 24 h days: rounding
        // cannot fail (nothing relative, nothing out of range).
        .unwrap_or(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(256 << 20), "256.00 MiB");
        assert_eq!(bytes(3 << 40), "3.00 TiB");
    }

    #[test]
    fn ages_are_their_two_largest_units_truncated() {
        for (s, want) in [
            (0, "0s"),
            (-5, "0s"),
            (42, "42s"),
            (60, "1m"),
            (90, "1m 30s"),
            (3599, "59m 59s"),
            (3600, "1h"),
            (5 * 3600 + 12 * 60 + 59, "5h 12m"),
            (26 * 3600, "1d 2h"),
            (3 * 86400 + 4 * 3600 + 59 * 60, "3d 4h"),
            (3 * 86400 + 5 * 60, "3d"),
            (400 * 86400, "400d"),
            (i64::MAX, "7304484d"),
        ] {
            assert_eq!(secs(s), want, "{s}");
        }
        assert_eq!(duration(Duration::from_secs(7200)), "2h");
        assert_eq!(duration(Duration::from_secs(u64::MAX)), "7304484d");
    }
}
