//! Carries out the notifications `zoffsite_core::notify::plan` decided:
//! runs the `[notify]` programs and sends the healthchecks-style pings.
//!
//! # Invariants
//!
//! - **Never fails or holds up the run.** Every notification of a phase runs
//!   on its own thread; [`send`] returns once all have finished or
//!   [`Notify::timeout`](zoffsite_core::notify::Notify) plus [`GRACE`] has
//!   passed, whichever is first, and what went wrong is a warning
//!   ([`Events::warn`]), never an error: the caller's exit code is the run's.
//!   A program is killed with its whole process group at the timeout
//!   ([`process::run_bounded`]), and only a bounded part of its output is
//!   kept; a ping has the same timeout, retries included.
//! - **The ping URL is never shown.** Messages name it by
//!   [`PingUrl::redacted`] (scheme and host) only, and whatever text the
//!   HTTP library wrote goes through [`PingUrl::scrub`] first. (The binary
//!   also keeps the library's own logs off: they would quote the URL.)
//! - **No redirect is followed**: the report goes to the configured host or
//!   nowhere.
//!
//! The HTTP client is `ureq` (3.x): blocking, small, no async runtime, and
//! TLS by rustls with the Mozilla roots built in, so nothing is read from
//! the disk inside the units' sandbox and no OpenSSL is linked. A
//! hand-written HTTP/1.1 client would have been shorter only for plain
//! `http://`, and healthchecks.io is `https://`.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use zoffsite_core::notify::{Action, PingUrl};

use crate::events::Events;
use crate::process::{self, Cmd, ExecError};

/// How long after the timeout [`send`] still waits for a notification to
/// report (a kill and its reaping, a thread's wake-up).
pub const GRACE: Duration = Duration::from_secs(3);
/// Most bytes kept of a program's output (for the warning when it fails).
pub const OUTPUT_LIMIT: usize = 16 * 1024;
/// Most bytes of a program's output shown in a warning.
const SHOWN_OUTPUT: usize = 400;
/// Pings tried at most this often within the timeout (a dropped
/// connection or a 5xx is worth another try; a 4xx is not).
const PING_ATTEMPTS: u32 = 3;

/// Carries out `actions`, at once and side by side, each bounded by
/// `timeout`; reports what failed as warnings through `events`. Returns
/// within `timeout` + [`GRACE`].
pub fn send(actions: Vec<Action>, timeout: Duration, events: &mut dyn Events) {
    if actions.is_empty() {
        return;
    }
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut labels = Vec::new();
    for (i, action) in actions.into_iter().enumerate() {
        labels.push(label(&action));
        let tx = tx.clone();
        // Detached on purpose: one that outlives the wait below is given up
        // on (and ends with the process).
        std::thread::spawn(move || {
            let r = match &action {
                Action::Program { argv, env, stdin } => program(argv, env, stdin, timeout),
                Action::Ping { url, body } => ping(url, body, timeout),
            };
            let _ = tx.send((i, r));
        });
    }
    drop(tx);
    let until = started + timeout + GRACE;
    let mut done = vec![false; labels.len()];
    while let Ok((i, r)) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        done[i] = true;
        match r {
            Ok(()) => tracing::info!("notify: {} done", labels[i]),
            Err(e) => events.warn(&format!("notify: {}: {e}", labels[i])),
        }
    }
    for (i, l) in labels.iter().enumerate() {
        if !done[i] {
            events.warn(&format!("notify: {l}: no answer within {}s; given up", timeout.as_secs()));
        }
    }
}

/// What a warning calls an action: the program's path, or the ping's host.
fn label(a: &Action) -> String {
    match a {
        Action::Program { argv, .. } => format!("program {}", argv.first().map_or("?", String::as_str)),
        Action::Ping { url, .. } => format!("ping to {}", url.redacted()),
    }
}

/// Runs one program, bounded; its failure, with the end of its output.
fn program(argv: &[String], env: &[(String, String)], stdin: &str, timeout: Duration) -> Result<(), String> {
    let Some((first, rest)) = argv.split_first() else { return Err("no program".into()) };
    let cmd = Cmd::new(first).args(rest);
    match process::run_bounded(&cmd, env, stdin.as_bytes(), OUTPUT_LIMIT, timeout) {
        Ok(b) if b.status.success() => Ok(()),
        Ok(b) => {
            let out = b.output.trim();
            let tail = out.char_indices().rev().nth(SHOWN_OUTPUT).map_or(out, |(i, _)| &out[i..]);
            let tail: String = tail.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            Err(if tail.is_empty() {
                format!("failed ({})", b.status)
            } else {
                format!("failed ({}): {tail}", b.status)
            })
        }
        Err(ExecError::Deadline { .. }) => Err(format!("did not finish within {}s and was killed", timeout.as_secs())),
        Err(e) => Err(e.to_string()),
    }
}

/// POSTs `body` to `url`: a 2xx answer within `timeout` (all attempts
/// together) is success.
pub fn ping(url: &PingUrl, body: &str, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let left = timeout.saturating_sub(started.elapsed());
        let (err, again) = match ping_once(url, body, left) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // Another try only when it may help and there is time for it.
        let pause = Duration::from_millis(500);
        if !again || attempt >= PING_ATTEMPTS || timeout.saturating_sub(started.elapsed()) < pause * 2 {
            return Err(if attempt > 1 { format!("{err} (after {attempt} attempts)") } else { err });
        }
        std::thread::sleep(pause);
    }
}

/// One attempt: its failure, and whether another attempt may help.
fn ping_once(url: &PingUrl, body: &str, timeout: Duration) -> Result<(), (String, bool)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("zoffsite/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut req = agent.post(url.expose());
    if !body.is_empty() {
        req = req.header("Content-Type", "application/json");
    }
    match req.send(body.as_bytes()) {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match status {
                200..=299 => Ok(()),
                300..=399 => Err((
                    format!(
                        "answered HTTP {status}, a redirect, which is not followed: set ping_url to where it points"
                    ),
                    false,
                )),
                _ => Err((format!("answered HTTP {status}"), status >= 500)),
            }
        }
        Err(ureq::Error::Timeout(_)) => Err((format!("no answer within {}s", timeout.as_secs_f32().ceil()), false)),
        Err(ureq::Error::HostNotFound) => Err((format!("host {} not found", url.redacted()), true)),
        Err(ureq::Error::Io(e)) => Err((url.scrub(&e.to_string()), true)),
        Err(e) => Err((url.scrub(&e.to_string()), true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Recorded;
    use zoffsite_core::notify::Signal;
    use zoffsite_testkit::http::{Answer, HttpRecorder};

    const KEY: &str = "0f3c9a2e-77aa-4c1b-9d1e-5b2d1c0a9e11";

    fn url(server: &HttpRecorder) -> PingUrl {
        PingUrl::parse(&server.url(&format!("/ping/{KEY}"))).unwrap()
    }

    fn shown(r: &Recorded) -> String {
        format!("{:?}{:?}{:?}", r.lines, r.warnings, r.errors)
    }

    #[test]
    fn pings_post_the_body_to_the_signal_paths() {
        let server = HttpRecorder::start(Answer::Ok);
        let u = url(&server);
        let mut ev = Recorded::default();
        let actions = vec![
            Action::Ping { url: u.signal(Signal::Start), body: String::new() },
            Action::Ping { url: u.signal(Signal::Failure), body: "{\"exit_code\": 4}".into() },
            Action::Ping { url: u.signal(Signal::Success), body: "{\"exit_code\": 0}".into() },
        ];
        send(actions, Duration::from_secs(10), &mut ev);
        assert!(ev.warnings.is_empty(), "{ev:?}");
        let mut got: Vec<_> = server.requests().into_iter().map(|r| (r.method, r.path, r.body)).collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("POST".into(), format!("/ping/{KEY}"), "{\"exit_code\": 0}".into()),
                ("POST".into(), format!("/ping/{KEY}/fail"), "{\"exit_code\": 4}".into()),
                ("POST".into(), format!("/ping/{KEY}/start"), String::new()),
            ]
        );
    }

    #[test]
    fn a_ping_that_gets_no_answer_is_a_warning_within_the_timeout() {
        let server = HttpRecorder::start(Answer::Never);
        let mut ev = Recorded::default();
        let started = Instant::now();
        send(vec![Action::Ping { url: url(&server), body: "{}".into() }], Duration::from_secs(1), &mut ev);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1) + GRACE, "{took:?}");
        assert_eq!(ev.warnings.len(), 1, "{ev:?}");
        assert!(ev.warnings[0].contains("no answer within 1s"), "{ev:?}");
        assert!(ev.errors.is_empty() && ev.worst == zoffsite_core::report::Severity::Ok);
        assert!(!shown(&ev).contains(KEY) && shown(&ev).contains("http://127.0.0.1:"), "{ev:?}");
    }

    #[test]
    fn refused_and_failing_pings_are_warnings_that_never_show_the_url() {
        // A port nobody listens on: the server is dropped, its port closed.
        let closed = url(&HttpRecorder::start(Answer::Ok));
        let failing = HttpRecorder::start(Answer::Status(500));
        let gone = HttpRecorder::start(Answer::Status(404));
        let moved = HttpRecorder::start(Answer::Status(301));
        let mut ev = Recorded::default();
        let actions = [&closed, &url(&failing), &url(&gone), &url(&moved)]
            .into_iter()
            .map(|u| Action::Ping { url: u.clone(), body: "{}".into() })
            .collect();
        send(actions, Duration::from_secs(5), &mut ev);
        assert_eq!(ev.warnings.len(), 4, "{ev:?}");
        let all = shown(&ev);
        assert!(!all.contains(KEY) && !all.contains("/ping"), "{all}");
        assert!(all.contains("answered HTTP 500 (after 3 attempts)"), "{all}");
        assert!(all.contains("answered HTTP 404\""), "a 4xx is not retried: {all}");
        assert!(all.contains("answered HTTP 301, a redirect"), "{all}");
        assert_eq!(failing.requests().len(), 3);
        assert_eq!(gone.requests().len(), 1);
    }

    #[test]
    fn a_program_gets_the_message_the_env_and_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let prog = dir.path().join("tell");
        std::fs::write(
            &prog,
            format!(
                "#!/bin/sh\n{{ printf '%s|' \"$@\" \"$ZOFFSITE_EVENT\" \"$ZOFFSITE_EXIT_CODE\"; cat; }} > {}\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let action = Action::Program {
            argv: vec![prog.display().to_string(), "--to".into(), "me".into(), "the message".into()],
            env: vec![("ZOFFSITE_EVENT".into(), "failure".into()), ("ZOFFSITE_EXIT_CODE".into(), "3".into())],
            stdin: "{\"exit_code\": 3}".into(),
        };
        let mut ev = Recorded::default();
        send(vec![action], Duration::from_secs(10), &mut ev);
        assert!(ev.warnings.is_empty(), "{ev:?}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "--to|me|the message|failure|3|{\"exit_code\": 3}");
    }

    #[test]
    fn failing_and_hanging_programs_are_bounded_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            p.display().to_string()
        };
        let failing = script("failing", "echo mail server down; exit 3");
        let hanging = script("hanging", "sleep 60");
        let run = |p: &str| Action::Program { argv: vec![p.to_owned(), "msg".into()], env: vec![], stdin: "{}".into() };
        let mut ev = Recorded::default();
        let started = Instant::now();
        let missing = run("/nonexistent/notify");
        send(vec![run(&failing), run(&hanging), missing], Duration::from_secs(1), &mut ev);
        assert!(started.elapsed() < Duration::from_secs(1) + GRACE, "{:?}", started.elapsed());
        let all = shown(&ev);
        assert_eq!(ev.warnings.len(), 3, "{all}");
        assert!(all.contains("failing: failed (exit status: 3): mail server down"), "{all}");
        assert!(all.contains("hanging: did not finish within 1s and was killed"), "{all}");
        assert!(all.contains("/nonexistent/notify"), "{all}");
        assert!(ev.errors.is_empty());
    }
}
