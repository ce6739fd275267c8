//! How a driver in this crate tells its caller what happens, without
//! knowing whether that caller prints text, JSON, a progress bar or
//! nothing (tests).
//!
//! A driver calls [`Events::error`] once per failure, with how bad it is;
//! the caller prints it, records it and raises the exit code in that one
//! call. Drivers never print.

use zoffsite_core::report::Severity;

/// `e` and its causes, `: `-separated, as `anyhow` shows `{:#}`: the one
/// way a driver turns an error with sources into the text it reports.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// A transfer's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// A transfer starts; `estimate` is its expected size in bytes.
    Start { label: &'a str, estimate: Option<u64> },
    /// Bytes moved so far.
    Bytes(u64),
    /// The transfer ended (either way).
    Done,
}

/// What a driver reports as it goes.
pub trait Events {
    /// A line of the run's narrative (what was done, or with `-n` would be).
    fn line(&mut self, text: &str);
    /// Something the user should know that does not make the run fail.
    fn warn(&mut self, text: &str);
    /// A failure, and how bad it is.
    fn error(&mut self, severity: Severity, text: &str);
    /// A transfer's progress; ignored unless the caller shows progress.
    fn progress(&mut self, _p: Progress<'_>) {}
    /// What a wait is waiting for (`box wait`): one line that replaces the
    /// previous one, for a person watching a terminal; not part of the
    /// narrative (nothing is recorded), and ignored by default.
    fn status(&mut self, _text: &str) {}
    /// Whether the caller shows progress: a driver spends work on it (a
    /// size estimate, one zfs call per send) only then.
    fn wants_progress(&self) -> bool {
        false
    }
}

/// Keeps everything it is told: for tests, and for callers that render
/// only at the end.
#[derive(Debug, Default)]
pub struct Recorded {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
    pub errors: Vec<(Severity, String)>,
    /// The worst severity reported.
    pub worst: Severity,
}

impl Events for Recorded {
    fn line(&mut self, text: &str) {
        self.lines.push(text.to_owned());
    }
    fn warn(&mut self, text: &str) {
        self.warnings.push(text.to_owned());
    }
    fn error(&mut self, severity: Severity, text: &str) {
        self.worst.raise(severity);
        self.errors.push((severity, text.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_keeps_the_worst_severity() {
        let mut r = Recorded::default();
        r.error(Severity::Target, "a");
        r.error(Severity::Partial, "b");
        r.line("c");
        assert_eq!(r.worst, Severity::Target);
        assert_eq!(r.errors.len(), 2);
        assert_eq!(r.lines, ["c"]);
    }
}
