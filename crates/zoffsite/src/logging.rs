//! Logs on stderr (stdout carries results and, in `serve`, the protocol
//! itself), in one format, tracing's, whoever reads them:
//! - colour only when stderr is a terminal (and `NO_COLOR` is not set): a
//!   file, a pipe or the journal gets no escape codes;
//! - no timestamp of ours under systemd, whose journal stamps every line
//!   already: when `JOURNAL_STREAM` names stderr itself (systemd's own
//!   test: its device and inode), or `INVOCATION_ID` says a unit runs us
//!   and stderr is no terminal.
//!
//! [`style`] decides from the facts; [`init`] gathers them and sets up
//! tracing.

use std::io::IsTerminal as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;

/// What the environment says about stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    pub stderr_terminal: bool,
    /// `JOURNAL_STREAM` (`DEVICE:INODE`, decimal).
    pub journal_stream: Option<String>,
    /// stderr's device and inode.
    pub stderr_id: Option<(u64, u64)>,
    /// `INVOCATION_ID` is set: a systemd unit runs us.
    pub invocation_id: bool,
    /// `NO_COLOR` is set (and not empty).
    pub no_color: bool,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Style {
    pub ansi: bool,
    pub timestamp: bool,
}

/// The module docs' rules.
pub(crate) fn style(f: &Facts) -> Style {
    let journal = match (&f.journal_stream, f.stderr_id) {
        (Some(js), Some((dev, ino))) => js.trim() == format!("{dev}:{ino}"),
        _ => false,
    };
    let unit = f.invocation_id && !f.stderr_terminal;
    Style { ansi: f.stderr_terminal && !f.no_color, timestamp: !(journal || unit) }
}

/// The facts of this process.
fn facts() -> Facts {
    let stderr = std::io::stderr();
    let stderr_id = stderr
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| std::fs::File::from(fd).metadata())
        .ok()
        .map(|m| (m.dev(), m.ino()));
    Facts {
        stderr_terminal: stderr.is_terminal(),
        journal_stream: std::env::var("JOURNAL_STREAM").ok(),
        stderr_id,
        invocation_id: std::env::var_os("INVOCATION_ID").is_some_and(|v| !v.is_empty()),
        no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    }
}

/// Sets up tracing: `-v` info, `-vv` debug, more trace; `ZOFFSITE_LOG`
/// (an `EnvFilter`) overrides.
pub(crate) fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZOFFSITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The HTTP client's own logs quote the `[notify] ping_url`, a secret:
    // never shown, whatever the level asked for (zoffsite's own messages
    // about a ping name only its host).
    let filter = ["ureq=off", "ureq_proto=off"]
        .into_iter()
        .fold(filter, |f, d| f.add_directive(d.parse().expect("a valid directive")));
    let style = style(&facts());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(style.ansi);
    if style.timestamp {
        fmt.init();
    } else {
        fmt.without_time().init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_gets_colour_and_time() {
        let f = Facts { stderr_terminal: true, ..Facts::default() };
        assert_eq!(style(&f), Style { ansi: true, timestamp: true });
        assert_eq!(style(&Facts { no_color: true, ..f }), Style { ansi: false, timestamp: true }, "NO_COLOR");
    }

    #[test]
    fn a_file_or_pipe_gets_no_colour_but_time() {
        assert_eq!(style(&Facts::default()), Style { ansi: false, timestamp: true });
    }

    #[test]
    fn the_journal_gets_neither() {
        let journal = Facts {
            journal_stream: Some("8:12345".into()),
            stderr_id: Some((8, 12345)),
            invocation_id: true,
            ..Facts::default()
        };
        assert_eq!(style(&journal), Style { ansi: false, timestamp: false });
        // JOURNAL_STREAM alone, naming stderr: the journal too.
        assert!(!style(&Facts { invocation_id: false, ..journal.clone() }).timestamp);
        // A unit whose stderr is a file (StandardError=file:...): still
        // systemd's, no second timestamp either.
        let unit = Facts { invocation_id: true, ..Facts::default() };
        assert!(!style(&unit).timestamp);
    }

    #[test]
    fn an_inherited_journal_stream_that_is_not_stderr_changes_nothing() {
        // A shell started from a unit inherits JOURNAL_STREAM; its stderr
        // is something else (here a terminal, then a file).
        let shell = Facts {
            stderr_terminal: true,
            journal_stream: Some("8:12345".into()),
            stderr_id: Some((0, 7)),
            invocation_id: true,
            no_color: false,
        };
        assert_eq!(style(&shell), Style { ansi: true, timestamp: true });
        let redirected = Facts { stderr_terminal: false, invocation_id: false, ..shell };
        assert_eq!(style(&redirected), Style { ansi: false, timestamp: true });
    }
}
