//! How the binary tells the user what happened: text on stdout, errors on
//! stderr, progress bars on a terminal only, and nothing but the JSON
//! document on stdout with `--json`.
//!
//! [`Ui::err`] is the one way a command reports a failure: it prints the
//! message, records it for the JSON report and raises the exit code, so
//! none of the three can be forgotten.

use std::fmt::Display;
use std::io::IsTerminal as _;

use zoffsite_exec::events::{Events, Progress};

use crate::exit::{Code as _, Exit};

/// A command's reporter; see the module docs.
#[derive(Debug)]
pub(crate) struct Ui {
    json: bool,
    show_progress: bool,
    /// Whether a wait's status line is shown: on a terminal, not with
    /// `--json` (a dry run waits too).
    show_status: bool,
    worst: Exit,
    errors: Vec<String>,
    bar: Option<indicatif::ProgressBar>,
    /// The status line, cleared before anything else is printed.
    status: Option<indicatif::ProgressBar>,
}

impl Ui {
    /// A reporter for a command with `--json` (`json`) and `-n` (`dry_run`):
    /// progress bars only when stderr is a terminal, never in JSON mode or
    /// a dry run (nothing moves).
    pub(crate) fn new(json: bool, dry_run: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        Ui {
            json,
            show_progress: !json && !dry_run && terminal,
            show_status: !json && terminal,
            worst: Exit::Ok,
            errors: Vec::new(),
            bar: None,
            status: None,
        }
    }

    /// Takes the status line off the terminal (the next one starts anew).
    fn clear_status(&self) {
        if let Some(s) = &self.status {
            s.finish_and_clear();
        }
    }

    /// Whether stdout carries only the JSON document.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// Prints `msg` on stderr, records it for the JSON report and raises
    /// the exit code to `severity`.
    pub(crate) fn err(&mut self, severity: Exit, msg: impl Display) {
        let msg = msg.to_string();
        self.clear_status();
        eprintln!("zoffsite: {msg}");
        self.errors.push(msg);
        self.worst.raise(severity);
    }

    /// Raises the exit code without a message of its own (the report says
    /// why, e.g. a stale target in `status`).
    pub(crate) fn raise(&mut self, severity: Exit) {
        self.worst.raise(severity);
    }

    /// A line of the narrative on stdout (not in JSON mode).
    pub(crate) fn say(&self, line: impl Display) {
        if !self.json {
            self.clear_status();
            println!("{line}");
        }
    }

    /// A warning on stderr; it does not change the exit code.
    pub(crate) fn warning(&self, msg: impl Display) {
        self.clear_status();
        eprintln!("zoffsite: warning: {msg}");
    }

    /// The worst outcome reported so far.
    pub(crate) fn exit(&self) -> Exit {
        self.worst
    }

    /// Ends a command that stopped before it had anything else to report
    /// (a bad config, the lock held, nothing listed): with `--json`, its
    /// document is then only `{"errors": [...], "exit_code": N}`
    /// (docs/json.md), so a monitor reading stdout always gets JSON.
    pub(crate) fn bail(&self) -> Exit {
        if self.json {
            println!("{}", self.bail_doc());
        }
        self.worst
    }

    /// The document [`bail`](Self::bail) prints, as text, for a command
    /// whose document is printed (and sent to `[notify]`) by its caller.
    pub(crate) fn bail_doc(&self) -> String {
        doc(&serde_json::json!({ "errors": self.errors, "exit_code": self.worst.code() }))
    }

    /// The errors reported so far, for the JSON report.
    pub(crate) fn errors(&self) -> &[String] {
        &self.errors
    }
}

/// A command's JSON document, as `--json` prints it.
pub(crate) fn doc(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("serializes")
}

impl Events for Ui {
    fn line(&mut self, text: &str) {
        self.say(text);
    }
    fn warn(&mut self, text: &str) {
        self.warning(text);
    }
    fn error(&mut self, severity: Exit, text: &str) {
        self.err(severity, text);
    }
    fn wants_progress(&self) -> bool {
        self.show_progress
    }
    fn status(&mut self, text: &str) {
        if !self.show_status {
            return;
        }
        let s = match &self.status {
            Some(s) if !s.is_finished() => s,
            _ => {
                let s = indicatif::ProgressBar::new_spinner()
                    .with_style(indicatif::ProgressStyle::with_template("{wide_msg}").expect("valid template"));
                s.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                self.status.insert(s)
            }
        };
        s.set_message(text.to_owned());
    }
    fn progress(&mut self, p: Progress<'_>) {
        if !self.show_progress {
            return;
        }
        match p {
            Progress::Start { label, estimate } => {
                let bar = match estimate {
                    Some(n) => indicatif::ProgressBar::new(n).with_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                        )
                        .expect("valid template"),
                    ),
                    None => indicatif::ProgressBar::new_spinner().with_style(
                        indicatif::ProgressStyle::with_template("{prefix} {bytes} {binary_bytes_per_sec}")
                            .expect("valid template"),
                    ),
                };
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                self.bar = Some(bar.with_prefix(label.to_owned()));
            }
            Progress::Bytes(n) => {
                if let Some(b) = &self.bar {
                    b.set_position(n);
                }
            }
            Progress::Done => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_records_the_error_and_raises_the_exit_code() {
        let mut ui = Ui::new(true, false);
        ui.err(Exit::Partial, "first");
        ui.err(Exit::Target, format_args!("second {}", 2));
        ui.err(Exit::Partial, "third");
        assert_eq!(ui.exit(), Exit::Target);
        assert_eq!(ui.errors(), ["first", "second 2", "third"]);
        assert_eq!(ui.bail(), Exit::Target, "bail keeps the worst outcome");
    }
}
