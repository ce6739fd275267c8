//! Hearing about a run from the source: the `[notify]` section of the
//! source's config, and which notifications a run sends, with what.
//!
//! `backup`, `prune`, `verify` and `status` each tell, when `[notify]`
//! asks for it:
//!
//! - **start** (before the work): `on_start` runs, and `ping_url/start` is
//!   sent;
//! - **success** (the run's exit code is 0): `on_success` runs with the
//!   command's JSON report on stdin, and `ping_url` is sent with the report
//!   as its body;
//! - **failure** (any other exit code, `status`'s 6 for a stale backup
//!   included: that is the failure its timer exists to catch): `on_failure`
//!   runs with the report on stdin, and `ping_url/fail` is sent with it.
//!
//! The ping URLs follow the healthchecks.io convention, so a hosted or
//! self-hosted healthchecks (or anything that speaks it) also hears when
//! nothing arrives at all. A dry run (`-n`) tells nobody: it proves nothing.
//!
//! [`plan`] is the whole decision, a function of the config and the run;
//! `zoffsite_exec::notify` carries the [`Action`]s out, each bounded by
//! [`Notify::timeout`], and a notification that fails or hangs is a
//! warning, never a change of the run's exit code.
//!
//! # Invariants
//!
//! - **No shell.** A program is an argv whose first element is an absolute
//!   path ([`Argv`]); the message is one more argument, never interpolated.
//! - **The ping URL is a secret** (whoever has it can report success for
//!   this source): [`PingUrl`] has no `Display`, its `Debug` shows only
//!   scheme and host ([`PingUrl::redacted`]), it is not serialized, and
//!   every error about it says only that much. Its text is reachable only
//!   through [`PingUrl::expose`], for the one place that sends it.
//! - **One line.** The message a program gets has no control characters
//!   and at most [`MAX_MESSAGE`] bytes (the report on stdin has the rest).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{parse_duration, ConfigError};
use crate::report::Severity;

/// How long each program and each ping may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `timeout` accepted: a notifier must never hold a run (or a
/// systemd unit) for long.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Most bytes of the one-line message given to a program.
pub const MAX_MESSAGE: usize = 1000;
/// Most bytes of a ping URL.
const MAX_URL: usize = 2048;

/// The validated `[notify]` section; [`Notify::default`] notifies nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub on_start: Option<Argv>,
    pub on_success: Option<Argv>,
    pub on_failure: Option<Argv>,
    pub ping_url: Option<PingUrl>,
    /// Bound on each program and on each ping (its retries included).
    pub timeout: Duration,
}

impl Default for Notify {
    fn default() -> Self {
        Notify { on_start: None, on_success: None, on_failure: None, ping_url: None, timeout: DEFAULT_TIMEOUT }
    }
}

/// `[notify]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    #[serde(default)]
    on_start: Option<Vec<String>>,
    #[serde(default)]
    on_success: Option<Vec<String>>,
    #[serde(default)]
    on_failure: Option<Vec<String>>,
    #[serde(default)]
    ping_url: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: format!("notify.{key}"), message: message.into() }
}

impl Notify {
    /// Validates `[notify]`; errors name the key (`notify.on_failure`).
    pub(crate) fn from_raw(raw: RawNotify) -> Result<Notify, ConfigError> {
        let argv = |key: &str, v: Option<Vec<String>>| v.map(|v| Argv::new(v).map_err(|e| invalid(key, e))).transpose();
        let timeout = match &raw.timeout {
            Some(s) => parse_duration("notify.timeout", s)?,
            None => DEFAULT_TIMEOUT,
        };
        if timeout < Duration::from_secs(1) || timeout > MAX_TIMEOUT {
            return Err(invalid("timeout", format!("must be from 1s to {}s", MAX_TIMEOUT.as_secs())));
        }
        Ok(Notify {
            on_start: argv("on_start", raw.on_start)?,
            on_success: argv("on_success", raw.on_success)?,
            on_failure: argv("on_failure", raw.on_failure)?,
            ping_url: raw.ping_url.as_deref().map(PingUrl::parse).transpose().map_err(|e| invalid("ping_url", e))?,
            timeout,
        })
    }

    /// Whether anything at all is configured.
    pub fn is_empty(&self) -> bool {
        self.on_start.is_none() && self.on_success.is_none() && self.on_failure.is_none() && self.ping_url.is_none()
    }
}

/// A program and its arguments: never a shell line. The program is an
/// absolute path (the units run with a minimal `PATH`), and no argument
/// holds a NUL byte (it could not be passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argv(Vec<String>);

impl Argv {
    /// Validates an argv; the error says what to write instead.
    pub fn new(argv: Vec<String>) -> Result<Argv, String> {
        let Some(program) = argv.first() else {
            return Err("is empty: give a program and its arguments, e.g. [\"/usr/local/bin/alert-owner\", \"--to\", \"me\"], or remove the key".into());
        };
        if !program.starts_with('/') {
            return Err(format!(
                "{program:?} must be an absolute path, e.g. \"/usr/bin/{program}\" (the timers run zoffsite with a minimal PATH; there is no shell)"
            ));
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err("arguments must not contain NUL bytes".into());
        }
        Ok(Argv(argv))
    }

    /// The program and its arguments.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// A healthchecks.io-style ping URL: `http://` or `https://`, a host, any
/// path and query, no fragment. A secret (see the module's invariants).
#[derive(Clone, PartialEq, Eq)]
pub struct PingUrl {
    /// The whole URL, as configured (a trailing `/` of the path removed).
    url: String,
    /// `scheme://host[:port]`, what may be shown.
    shown: String,
    /// Where the path ends (a query, if any, follows).
    path_end: usize,
}

impl PingUrl {
    /// Parses a ping URL. The error never repeats the URL: it is a secret,
    /// and an error message ends up in logs.
    pub fn parse(s: &str) -> Result<PingUrl, String> {
        let bad = |why: &str| format!("is not a usable URL ({why}); write it like \"https://hc-ping.com/YOUR-UUID\"");
        if s.len() > MAX_URL {
            return Err(bad(&format!("longer than {MAX_URL} bytes")));
        }
        if s.contains('#') {
            return Err(bad("a #fragment is never sent to a server"));
        }
        if !s.contains("://") {
            return Err(bad("it has no https:// or http://"));
        }
        let uri: http::Uri = s.parse().map_err(|_| bad("not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some(x) if x.eq_ignore_ascii_case("https") => "https",
            Some(x) if x.eq_ignore_ascii_case("http") => "http",
            Some(_) => return Err(bad("only https:// and http:// are sent")),
            None => return Err(bad("it has no https:// or http://")),
        };
        let Some(authority) = uri.authority() else { return Err(bad("it has no host")) };
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("it has no host"));
        }
        let shown = match authority.port_u16() {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        };
        // Exactly the URL, but with `/start` and `/fail` appended to its
        // path (before any query), so a trailing `/` must not double.
        let (before_query, query) = s.split_once('?').map_or((s, None), |(a, b)| (a, Some(b)));
        let trimmed = before_query.trim_end_matches('/');
        let url = match query {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_owned(),
        };
        Ok(PingUrl { path_end: trimmed.len(), url, shown })
    }

    /// `scheme://host[:port]`: all that is ever shown of the URL.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// The whole URL, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The URL of `signal`: `URL/start`, `URL`, `URL/fail` (the
    /// healthchecks.io convention), any query kept at the end.
    pub fn signal(&self, signal: Signal) -> PingUrl {
        let suffix = match signal {
            Signal::Start => "/start",
            Signal::Success => "",
            Signal::Failure => "/fail",
        };
        let (path, query) = self.url.split_at(self.path_end);
        PingUrl {
            url: format!("{path}{suffix}{query}"),
            shown: self.shown.clone(),
            path_end: self.path_end + suffix.len(),
        }
    }

    /// `text` with every trace of the URL's secret part (userinfo, path,
    /// query, and any piece of them of 8 bytes or more) replaced by
    /// `...`: for messages a library wrote, which might quote the URL.
    pub fn scrub(&self, text: &str) -> String {
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        let (authority, tail) = rest.find(['/', '?']).map_or((rest, ""), |i| rest.split_at(i));
        let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
        let mut out = text.to_owned();
        if tail.len() > 1 {
            out = out.replace(tail, "/...");
        }
        if let Some(u) = userinfo {
            out = out.replace(&format!("{u}@"), "");
        }
        let mut pieces: Vec<&str> =
            tail.split(['/', '?', '&', '=']).chain(userinfo.into_iter().flat_map(|u| u.split(':'))).collect();
        pieces.retain(|p| p.len() >= 8);
        // Longest first, so a piece never leaves part of a longer one.
        pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in pieces {
            out = out.replace(p, "...");
        }
        out
    }
}

impl fmt::Debug for PingUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PingUrl({}/...)", self.shown)
    }
}

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Start,
    Success,
    Failure,
}

impl Signal {
    /// Its name, as the program sees it in `ZOFFSITE_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Start => "start",
            Signal::Success => "success",
            Signal::Failure => "failure",
        }
    }
}

/// The commands that notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Backup,
    Prune,
    Verify,
    Status,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Backup => "backup",
            Command::Prune => "prune",
            Command::Verify => "verify",
            Command::Status => "status",
        }
    }
}

/// The run that notifies.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub command: Command,
    /// The source's host name, for the message (one script may hear from
    /// several machines).
    pub host: &'a str,
    /// `-n`: nothing is sent.
    pub dry_run: bool,
}

/// Where the run is.
#[derive(Debug, Clone, Copy)]
pub enum Phase<'a> {
    /// Before the work.
    Start,
    /// After it.
    End(Ended<'a>),
}

/// How a run ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended<'a> {
    pub severity: Severity,
    /// The process's exit code (the binary owns the numbers).
    pub exit_code: u8,
    /// Every error the run reported, in order.
    pub errors: &'a [String],
    /// The command's JSON report, exactly as `--json` prints it.
    pub report: &'a str,
}

/// One notification to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run `argv` (the message is its last element) with `env` added to
    /// zoffsite's environment and `stdin` on its standard input.
    Program { argv: Vec<String>, env: Vec<(String, String)>, stdin: String },
    /// POST `body` to `url` (JSON when not empty).
    Ping { url: PingUrl, body: String },
}

/// The notifications `run` sends at `phase`, in order: the program first,
/// then the ping. Pure: the caller carries them out.
pub fn plan(n: &Notify, run: &Run<'_>, phase: Phase<'_>) -> Vec<Action> {
    if run.dry_run {
        return Vec::new();
    }
    let (signal, program, body) = match phase {
        Phase::Start => (Signal::Start, &n.on_start, ""),
        Phase::End(e) if e.severity == Severity::Ok => (Signal::Success, &n.on_success, e.report),
        Phase::End(e) => (Signal::Failure, &n.on_failure, e.report),
    };
    let mut out = Vec::new();
    if let Some(argv) = program {
        let mut env = vec![
            ("ZOFFSITE_EVENT".to_owned(), signal.as_str().to_owned()),
            ("ZOFFSITE_COMMAND".to_owned(), run.command.as_str().to_owned()),
        ];
        if let Phase::End(e) = phase {
            env.push(("ZOFFSITE_EXIT_CODE".to_owned(), e.exit_code.to_string()));
        }
        let mut argv = argv.as_slice().to_vec();
        argv.push(message(run, phase));
        out.push(Action::Program { argv, env, stdin: body.to_owned() });
    }
    if let Some(url) = &n.ping_url {
        out.push(Action::Ping { url: url.signal(signal), body: body.to_owned() });
    }
    out
}

/// The one-line message: `zoffsite backup on HOST: failed (exit 4, ...): FIRST ERROR (and N more)`.
pub fn message(run: &Run<'_>, phase: Phase<'_>) -> String {
    let head = format!("zoffsite {} on {}", run.command.as_str(), run.host);
    let text = match phase {
        Phase::Start => format!("{head}: starting"),
        Phase::End(e) if e.severity == Severity::Ok => format!("{head}: ok"),
        Phase::End(e) => {
            let mut s = format!("{head}: failed (exit {}: {})", e.exit_code, what(e.severity));
            if let Some((first, rest)) = e.errors.split_first() {
                s.push_str(": ");
                s.push_str(first);
                if !rest.is_empty() {
                    s.push_str(&format!(" (and {} more)", rest.len()));
                }
            }
            s
        }
    };
    one_line(&text, MAX_MESSAGE)
}

/// What a failure's severity means, in a few words.
fn what(s: Severity) -> &'static str {
    match s {
        Severity::Ok => "ok",
        Severity::Stale => "a backup is stale, missing or diverged, or a box needs attention",
        Severity::Partial => "some datasets were not done",
        Severity::Target => "a box could not be reached or verified",
        Severity::Error => "a local error",
        Severity::Busy => "another run holds the lock",
        Severity::Usage => "bad configuration or command line",
    }
}

/// `s` with every control character (newlines too) a space, cut to at most
/// `max` bytes on a character boundary (`...` marks the cut).
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.len() <= max {
        return flat;
    }
    let mut end = max - 3;
    while !flat.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &flat[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "https://hc.example.org/ping/0f3c9a2e-77aa-4c1b-9d1e-5b2d1c0a9e11";

    fn full() -> Notify {
        Notify {
            on_start: Some(Argv::new(vec!["/usr/local/bin/tell".into(), "--start".into()]).unwrap()),
            on_success: Some(Argv::new(vec!["/usr/local/bin/tell".into()]).unwrap()),
            on_failure: Some(Argv::new(vec!["/usr/local/bin/tell".into(), "--urgent".into()]).unwrap()),
            ping_url: Some(PingUrl::parse(SECRET).unwrap()),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    fn run(dry_run: bool) -> Run<'static> {
        Run { command: Command::Backup, host: "home", dry_run }
    }

    fn ended<'a>(severity: Severity, exit_code: u8, errors: &'a [String], report: &'a str) -> Phase<'a> {
        Phase::End(Ended { severity, exit_code, errors, report })
    }

    fn ping(a: &Action) -> (&str, &str) {
        match a {
            Action::Ping { url, body } => (url.expose(), body.as_str()),
            Action::Program { .. } => panic!("not a ping: {a:?}"),
        }
    }

    fn program(a: &Action) -> (&[String], &[(String, String)], &str) {
        match a {
            Action::Program { argv, env, stdin } => (argv, env, stdin),
            Action::Ping { .. } => panic!("not a program: {a:?}"),
        }
    }

    #[test]
    fn start_success_and_failure_send_the_healthchecks_pings_and_the_programs() {
        let n = full();
        let start = plan(&n, &run(false), Phase::Start);
        assert_eq!(start.len(), 2);
        let (argv, env, stdin) = program(&start[0]);
        assert_eq!(argv, ["/usr/local/bin/tell", "--start", "zoffsite backup on home: starting"]);
        assert_eq!(
            env,
            [("ZOFFSITE_EVENT".to_owned(), "start".to_owned()), ("ZOFFSITE_COMMAND".to_owned(), "backup".to_owned())]
        );
        assert_eq!(stdin, "");
        assert_eq!(ping(&start[1]), (format!("{SECRET}/start").as_str(), ""));

        let report = "{\"exit_code\": 0}";
        let ok = plan(&n, &run(false), ended(Severity::Ok, 0, &[], report));
        let (argv, env, stdin) = program(&ok[0]);
        assert_eq!(argv, ["/usr/local/bin/tell", "zoffsite backup on home: ok"]);
        assert!(env.contains(&("ZOFFSITE_EVENT".into(), "success".into())));
        assert!(env.contains(&("ZOFFSITE_EXIT_CODE".into(), "0".into())));
        assert_eq!(stdin, report);
        assert_eq!(ping(&ok[1]), (SECRET, report));

        let errors = ["target friend: cannot reach 10.77.0.2".to_owned(), "another".to_owned()];
        let report = "{\"exit_code\": 4}";
        let failed = plan(&n, &run(false), ended(Severity::Target, 4, &errors, report));
        let (argv, env, stdin) = program(&failed[0]);
        assert_eq!(
            argv.last().unwrap(),
            "zoffsite backup on home: failed (exit 4: a box could not be reached or verified): target friend: cannot reach 10.77.0.2 (and 1 more)"
        );
        assert_eq!(argv[1], "--urgent");
        assert!(env.contains(&("ZOFFSITE_EVENT".into(), "failure".into())));
        assert!(env.contains(&("ZOFFSITE_EXIT_CODE".into(), "4".into())));
        assert_eq!(stdin, report);
        assert_eq!(ping(&failed[1]), (format!("{SECRET}/fail").as_str(), report));
    }

    #[test]
    fn stale_is_a_failure_and_a_dry_run_tells_nobody() {
        let n = full();
        let stale = plan(
            &n,
            &Run { command: Command::Status, host: "h", dry_run: false },
            ended(Severity::Stale, 6, &[], "{}"),
        );
        assert!(ping(&stale[1]).0.ends_with("/fail"));
        assert!(program(&stale[0])
            .0
            .last()
            .unwrap()
            .starts_with("zoffsite status on h: failed (exit 6: a backup is stale"));
        assert!(plan(&n, &run(true), Phase::Start).is_empty());
        assert!(plan(&n, &run(true), ended(Severity::Partial, 3, &[], "{}")).is_empty());
    }

    #[test]
    fn only_what_is_configured_is_sent() {
        let mut n = Notify { ping_url: None, ..full() };
        n.on_start = None;
        assert!(plan(&n, &run(false), Phase::Start).is_empty());
        let only_ping = Notify { ping_url: Some(PingUrl::parse(SECRET).unwrap()), ..Notify::default() };
        assert!(!only_ping.is_empty() && Notify::default().is_empty());
        for phase in [Phase::Start, ended(Severity::Ok, 0, &[], "{}"), ended(Severity::Error, 1, &[], "{}")] {
            let a = plan(&only_ping, &run(false), phase);
            assert!(a.len() == 1 && matches!(a[0], Action::Ping { .. }), "{a:?}");
        }
        assert!(plan(&Notify::default(), &run(false), ended(Severity::Error, 1, &[], "{}")).is_empty());
    }

    #[test]
    fn the_message_is_one_bounded_line() {
        let errors = ["line one\nline two\r\n\tand a tab".to_owned()];
        let m = message(&run(false), ended(Severity::Partial, 3, &errors, ""));
        assert_eq!(
            m,
            "zoffsite backup on home: failed (exit 3: some datasets were not done): line one line two   and a tab"
        );
        let long = ["é".repeat(2000)];
        let m = message(&run(false), ended(Severity::Partial, 3, &long, ""));
        assert!(m.len() <= MAX_MESSAGE && m.ends_with("...") && !m.contains('\n'), "{}", m.len());
    }

    #[test]
    fn signal_urls_keep_the_query_and_never_double_a_slash() {
        let u = PingUrl::parse("https://hc-ping.com/KEY/backup-home/?create=1").unwrap();
        assert_eq!(u.expose(), "https://hc-ping.com/KEY/backup-home?create=1");
        assert_eq!(u.signal(Signal::Start).expose(), "https://hc-ping.com/KEY/backup-home/start?create=1");
        assert_eq!(u.signal(Signal::Failure).expose(), "https://hc-ping.com/KEY/backup-home/fail?create=1");
        assert_eq!(u.signal(Signal::Success).expose(), "https://hc-ping.com/KEY/backup-home?create=1");
        let u = PingUrl::parse("http://127.0.0.1:8000/ping/abc").unwrap();
        assert_eq!(u.signal(Signal::Failure).expose(), "http://127.0.0.1:8000/ping/abc/fail");
        assert_eq!(u.redacted(), "http://127.0.0.1:8000");
    }

    #[test]
    fn the_url_is_never_shown() {
        let u = PingUrl::parse(SECRET).unwrap();
        assert_eq!(u.redacted(), "https://hc.example.org");
        for shown in [format!("{u:?}"), format!("{:?}", u.signal(Signal::Failure)), format!("{:?}", full())] {
            assert!(!shown.contains("0f3c9a2e") && !shown.contains("/ping"), "{shown}");
        }
        let said =
            format!("error sending to {SECRET}/fail: refused; path /ping/0f3c9a2e-77aa-4c1b-9d1e-5b2d1c0a9e11/fail");
        let scrubbed = u.scrub(&said);
        assert!(!scrubbed.contains("0f3c9a2e") && scrubbed.contains("hc.example.org"), "{scrubbed}");
        let u = PingUrl::parse("https://user:hunter22@hc.example.org/p?k=topsecret").unwrap();
        assert_eq!(u.redacted(), "https://hc.example.org");
        let s = u.scrub("tried user:hunter22@hc.example.org with k=topsecret");
        assert!(!s.contains("hunter22") && !s.contains("topsecret"), "{s}");
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for (bad, why) in [
            ("ftp://example.org/x", "only https:// and http://"),
            ("hc-ping.com/uuid", "no https://"),
            ("https:///nohost", "URL"),
            ("https://example.org/a b", "not a URL"),
            ("https://example.org/#frag", "fragment"),
            ("", "URL"),
        ] {
            let e = PingUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            if bad.len() > 8 {
                assert!(!e.contains(bad), "{e}");
            }
        }
    }

    #[test]
    fn argv_rules() {
        assert!(Argv::new(vec![]).unwrap_err().contains("is empty"));
        let e = Argv::new(vec!["mail".into(), "-s".into()]).unwrap_err();
        assert!(e.contains("absolute path") && e.contains("/usr/bin/mail"), "{e}");
        assert!(Argv::new(vec!["/bin/x".into(), "a\0b".into()]).unwrap_err().contains("NUL"));
        assert_eq!(Argv::new(vec!["/bin/true".into()]).unwrap().as_slice(), ["/bin/true"]);
    }
}
