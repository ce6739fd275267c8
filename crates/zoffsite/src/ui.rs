//! How the binary tells the user what happened: text on stdout, errors on
//! stderr, progress bars on a terminal only, and nothing but the JSON
//! document on stdout with `--json`.
//!
//! [`Ui::err`] is the one way a command reports a failure: it prints the
//! message, records it for the JSON report and raises the exit code, so
//! none of the three can be forgotten. [`Ui::stop`] does the same for the
//! failure that stops a command before it has anything else to report,
//! and keeps it whole (kind, message, hint) for the short JSON document
//! [`Ui::bail`] prints.
//!
//! `-q` ([`set_quiet`], once, from `main`) leaves only warnings and errors:
//! no narrative ([`Ui::say`]), no progress or status line; a command that
//! prints a report of its own asks [`Ui::text`] first.

use std::fmt::Display;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use zoffsite_exec::events::{Events, Progress};

use crate::exit::{Code as _, Exit};

/// `-q`, set once by `main` before any command runs.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Makes every [`Ui`] made from now on quiet (`-q`).
pub(crate) fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// What stopped a command before it had anything else to report: the
/// `error` object of the short JSON document (docs/json.md, "When a
/// command stops early").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Stop {
    pub kind: StopKind,
    pub message: String,
    /// What to do about it, when there is something to say.
    pub hint: Option<String>,
}

/// The kinds of [`Stop`]; each has its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StopKind {
    /// The command line: an unknown option, a bad value, an unknown target.
    Usage,
    /// The config file: missing, unreadable, invalid, or a file it names
    /// missing.
    Config,
    /// Another run holds the run lock.
    Busy,
    /// A box could not be reached or listed.
    Target,
    /// Anything else that failed on this machine.
    Error,
}

impl StopKind {
    fn severity(self) -> Exit {
        match self {
            StopKind::Usage | StopKind::Config => Exit::Usage,
            StopKind::Busy => Exit::Busy,
            StopKind::Target => Exit::Target,
            StopKind::Error => Exit::Error,
        }
    }

    /// The kind of a stop reported with [`Ui::err`] alone, by its exit code.
    fn of(exit: Exit) -> StopKind {
        match exit {
            Exit::Usage => StopKind::Usage,
            Exit::Busy => StopKind::Busy,
            Exit::Target => StopKind::Target,
            _ => StopKind::Error,
        }
    }
}

/// A command's reporter; see the module docs.
#[derive(Debug)]
pub(crate) struct Ui {
    json: bool,
    /// `-q`: only warnings and errors.
    quiet: bool,
    show_progress: bool,
    /// Whether a wait's status line is shown: on a terminal, not with
    /// `--json` (a dry run waits too).
    show_status: bool,
    worst: Exit,
    errors: Vec<String>,
    /// The first [`Ui::stop`].
    stop: Option<Stop>,
    bar: Option<indicatif::ProgressBar>,
    /// The status line, cleared before anything else is printed.
    status: Option<indicatif::ProgressBar>,
}

impl Ui {
    /// A reporter for a command with `--json` (`json`) and `-n` (`dry_run`):
    /// progress bars only when stderr is a terminal, never in JSON mode or
    /// a dry run (nothing moves).
    pub(crate) fn new(json: bool, dry_run: bool) -> Self {
        Self::with(json, dry_run, QUIET.load(Ordering::Relaxed), std::io::stderr().is_terminal())
    }

    /// [`Ui::new`] with `-q` and whether stderr is a terminal given.
    fn with(json: bool, dry_run: bool, quiet: bool, terminal: bool) -> Self {
        let shown = !json && !quiet && terminal;
        Ui {
            json,
            quiet,
            show_progress: shown && !dry_run,
            show_status: shown,
            worst: Exit::Ok,
            errors: Vec::new(),
            stop: None,
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

    /// Whether a command prints its text report: not with `--json`, not
    /// with `-q`.
    pub(crate) fn text(&self) -> bool {
        !self.json && !self.quiet
    }

    /// Whether `-q` was given.
    pub(crate) fn quiet(&self) -> bool {
        self.quiet
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

    /// Reports what stops the command ([`Ui::err`], with the hint after
    /// the message), and keeps it whole for [`Ui::bail`]'s document.
    pub(crate) fn stop(&mut self, kind: StopKind, message: impl Display, hint: Option<String>) {
        let message = message.to_string();
        match &hint {
            Some(h) => self.err(kind.severity(), format_args!("{message}; {h}")),
            None => self.err(kind.severity(), &message),
        }
        self.stop.get_or_insert(Stop { kind, message, hint });
    }

    /// Raises the exit code without a message of its own (the report says
    /// why, e.g. a stale target in `status`).
    pub(crate) fn raise(&mut self, severity: Exit) {
        self.worst.raise(severity);
    }

    /// A line of the narrative on stdout (not in JSON mode, not with `-q`).
    pub(crate) fn say(&self, line: impl Display) {
        if self.text() {
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
    /// document is then only [`Ui::short_document`] (docs/json.md), so a
    /// monitor reading stdout always gets JSON.
    pub(crate) fn bail(&self) -> Exit {
        if self.json {
            println!("{}", self.bail_doc());
        }
        self.worst
    }

    /// The document [`bail`](Self::bail) prints, as text, for a command
    /// whose document is printed (and sent to `[notify]`) by its caller.
    pub(crate) fn bail_doc(&self) -> String {
        doc(&self.short_document())
    }

    /// `{"errors": [...], "error": {"kind", "message", "hint"}, "exit_code":
    /// N}`: `error` is what stopped the command ([`Ui::stop`], else the last
    /// error, its kind by the exit code; null when nothing was reported).
    pub(crate) fn short_document(&self) -> serde_json::Value {
        let last = self.errors.last().map(|m| Stop { kind: StopKind::of(self.worst), message: m.clone(), hint: None });
        short_document(&self.errors, self.stop.as_ref().or(last.as_ref()), self.worst)
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

/// The short JSON document of a command that stopped early (docs/json.md,
/// "When a command stops early").
pub(crate) fn short_document(errors: &[String], error: Option<&Stop>, exit: Exit) -> serde_json::Value {
    serde_json::json!({ "errors": errors, "error": error, "exit_code": exit.code() })
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
        let doc = ui.short_document();
        assert_eq!(doc["error"], serde_json::json!({"kind": "target", "message": "third", "hint": null}));
    }

    #[test]
    fn a_stop_keeps_its_kind_message_and_hint_and_sets_the_exit_code() {
        let mut ui = Ui::with(true, false, false, false);
        ui.stop(StopKind::Config, "cannot read config file /x: it is a directory", Some("give the file".into()));
        ui.stop(StopKind::Busy, "later", None);
        assert_eq!(ui.exit(), Exit::Usage, "a config problem is a usage error; busy ranks below it");
        assert_eq!(ui.errors()[0], "cannot read config file /x: it is a directory; give the file");
        let doc = ui.short_document();
        assert_eq!(doc["error"]["kind"], "config", "the first stop is the one kept");
        assert_eq!(doc["error"]["message"], "cannot read config file /x: it is a directory");
        assert_eq!(doc["error"]["hint"], "give the file");
        assert_eq!(doc["exit_code"], 2);
        assert_eq!(Ui::with(true, false, false, false).short_document()["error"], serde_json::Value::Null);
    }

    #[test]
    fn quiet_leaves_no_narrative_and_no_progress() {
        let loud = Ui::with(false, false, false, true);
        assert!(loud.text() && loud.wants_progress());
        let quiet = Ui::with(false, false, true, true);
        assert!(!quiet.text() && !quiet.wants_progress() && !quiet.show_status);
        let json = Ui::with(true, false, false, true);
        assert!(!json.text() && !json.wants_progress());
        let not_a_terminal = Ui::with(false, false, false, false);
        assert!(not_a_terminal.text() && !not_a_terminal.wants_progress(), "progress on a terminal only");
        let dry_run = Ui::with(false, true, false, true);
        assert!(!dry_run.wants_progress() && dry_run.show_status);
    }
}
