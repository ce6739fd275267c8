//! `[notify]`, the whole binary: `prune`, `status`, `verify` and `backup`
//! against the fake zfs (first in PATH), a real HTTP listener on 127.0.0.1
//! recording the pings, and a notify program that records its arguments,
//! environment and stdin. A box that cannot be reached is a closed port on
//! 127.0.0.1 (ssh is refused at once).

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use zoffsite_testkit::http::{Answer, HttpRecorder, Request};
use zoffsite_testkit::FakeZfs;

/// The ping URL's secret part: it must never be shown.
const KEY: &str = "5ec2e5c1-0b0a-4a11-9d1e-5b2d1c0a9e11";

struct Source {
    fake: FakeZfs,
    tmp: tempfile::TempDir,
}

impl Source {
    fn new() -> Source {
        let fake = FakeZfs::new();
        fake.create("tank/data", true);
        let tmp = tempfile::tempdir().unwrap();
        for f in ["id_ed25519", "known_hosts"] {
            std::fs::write(tmp.path().join(f), "").unwrap();
        }
        std::fs::create_dir(tmp.path().join("run")).unwrap();
        std::fs::set_permissions(tmp.path().join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
        // The recording program: one file per call, named by the event.
        let tell = tmp.path().join("tell");
        std::fs::write(
            &tell,
            format!(
                "#!/bin/sh\nout={}/told-$ZOFFSITE_EVENT\n{{ printf '%s\\n' \"$@\"; echo \"env $ZOFFSITE_EVENT $ZOFFSITE_COMMAND $ZOFFSITE_EXIT_CODE\"; echo stdin:; cat; }} > $out\n",
                tmp.path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tell, std::fs::Permissions::from_mode(0o755)).unwrap();
        Source { fake, tmp }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A config for `datasets`, with `[notify]` as given, and one target on
    /// a closed port.
    fn config(&self, datasets: &str, notify: &str) -> PathBuf {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let text = format!(
            "[source]\ndatasets = {datasets}\n\n[source.keep]\nlast = 5\n\n[[target]]\nname = \"friend\"\nhost = \"127.0.0.1\"\nport = {closed}\nuser = \"zoffsite\"\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\nconnect_timeout = \"5s\"\n\n[notify]\n{notify}\n",
            self.path("id_ed25519").display(),
            self.path("known_hosts").display(),
        );
        let p = self.path("zoffsite.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The `[notify]` with every program and the ping URL on `server`.
    fn notify_all(&self, server: &HttpRecorder, timeout: &str) -> String {
        let tell = self.path("tell");
        format!(
            "on_start = [\"{t}\", \"--start\"]\non_success = [\"{t}\"]\non_failure = [\"{t}\", \"--urgent\"]\nping_url = \"{}\"\ntimeout = \"{timeout}\"\n",
            server.url(&format!("/ping/{KEY}")),
            t = tell.display()
        )
    }

    fn zoffsite(&self, args: &[&str]) -> Output {
        let path = format!("{}:{}", self.fake.dir().display(), std::env::var("PATH").unwrap_or_default());
        Command::new(env!("CARGO_BIN_EXE_zoffsite"))
            .args(args)
            .env("PATH", path)
            .env("ZOFFSITE_RUN_DIR", self.path("run"))
            .env_remove("ZOFFSITE_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// What the recording program got for `event`, if it ran.
    fn told(&self, event: &str) -> Option<String> {
        std::fs::read_to_string(self.path(&format!("told-{event}"))).ok()
    }
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn paths(reqs: &[Request]) -> Vec<(String, String)> {
    reqs.iter().map(|r| (r.method.clone(), r.path.clone())).collect()
}

fn post(path: &str) -> (String, String) {
    ("POST".into(), path.into())
}

#[test]
fn a_successful_run_pings_start_then_success_with_its_report_and_runs_the_programs() {
    let s = Source::new();
    let server = HttpRecorder::start(Answer::Ok);
    let cfg = s.config("[\"tank/data\"]", &s.notify_all(&server, "10s"));
    let out = s.zoffsite(&["prune", "--json", "-c", cfg.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let reqs = server.requests();
    assert_eq!(paths(&reqs), [post(&format!("/ping/{KEY}/start")), post(&format!("/ping/{KEY}"))], "{stderr}");
    assert_eq!(reqs[0].body, "");
    // The body is the report, exactly as --json printed it.
    assert_eq!(reqs[1].body.trim(), stdout.trim());
    assert!(reqs[1].headers.contains(&("content-type".into(), "application/json".into())));
    let v: serde_json::Value = serde_json::from_str(&reqs[1].body).unwrap();
    assert_eq!(v["exit_code"], 0);

    let start = s.told("start").expect("on_start ran");
    let host = zoffsite_exec::boxnew::hostname().unwrap_or_else(|| "the source".into());
    assert_eq!(start, format!("--start\nzoffsite prune on {host}: starting\nenv start prune \nstdin:\n"));
    let ok = s.told("success").expect("on_success ran");
    assert_eq!(ok, format!("zoffsite prune on {host}: ok\nenv success prune 0\nstdin:\n{}", stdout.trim_end()));
    assert!(s.told("failure").is_none());
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn a_failed_run_pings_fail_with_its_report_and_runs_on_failure() {
    let s = Source::new();
    let server = HttpRecorder::start(Answer::Ok);
    // tank/gone does not exist: prune exits 3 (partial).
    let cfg = s.config("[\"tank/data\", \"tank/gone\"]", &s.notify_all(&server, "10s"));
    let out = s.zoffsite(&["prune", "-c", cfg.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let reqs = server.requests();
    assert_eq!(paths(&reqs), [post(&format!("/ping/{KEY}/start")), post(&format!("/ping/{KEY}/fail"))]);
    // Without --json too, the report is the JSON document.
    let v: serde_json::Value = serde_json::from_str(&reqs[1].body).unwrap();
    assert_eq!(v["exit_code"], 3);
    let told = s.told("failure").expect("on_failure ran");
    let mut lines = told.lines();
    assert_eq!(lines.next(), Some("--urgent"));
    let msg = lines.next().unwrap();
    assert!(
        msg.starts_with("zoffsite prune on ") && msg.contains(": failed (exit 3: some datasets were not done): "),
        "{msg}"
    );
    assert!(msg.contains("tank/gone"), "{msg}");
    assert_eq!(lines.next(), Some("env failure prune 3"));
    assert_eq!(told.split_once("stdin:\n").unwrap().1, reqs[1].body);
    assert!(s.told("success").is_none());
}

#[test]
fn status_reports_an_unreachable_box_as_a_failure_and_keeps_its_exit_code() {
    let s = Source::new();
    let server = HttpRecorder::start(Answer::Ok);
    let cfg = s.config("[\"tank/data\"]", &s.notify_all(&server, "10s"));
    let out = s.zoffsite(&["status", "--json", "-c", cfg.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    let reqs = server.requests();
    assert_eq!(paths(&reqs), [post(&format!("/ping/{KEY}/start")), post(&format!("/ping/{KEY}/fail"))]);
    assert_eq!(reqs[1].body.trim(), stdout.trim());
    assert!(s.told("failure").unwrap().contains("env failure status 4"));
}

#[test]
fn verify_and_backup_notify_too() {
    let s = Source::new();
    let server = HttpRecorder::start(Answer::Ok);
    let cfg = s.config("[\"tank/data\"]", &s.notify_all(&server, "10s"));
    for (cmd, code) in [("verify", 4), ("backup", 4)] {
        let before = server.requests().len();
        let out = s.zoffsite(&[cmd, "-c", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(code), "{cmd}: {:?}", text(&out));
        let reqs = server.requests();
        assert_eq!(paths(&reqs[before..]), [post(&format!("/ping/{KEY}/start")), post(&format!("/ping/{KEY}/fail"))]);
        assert!(s.told("failure").unwrap().contains(&format!("env failure {cmd} {code}")), "{cmd}");
    }
    // The backup really ran between its notifications: it took a snapshot.
    assert_eq!(s.fake.snapshot_names("tank/data").len(), 1);
}

#[test]
fn a_dry_run_notifies_nobody() {
    let s = Source::new();
    let server = HttpRecorder::start(Answer::Ok);
    let cfg = s.config("[\"tank/data\"]", &s.notify_all(&server, "10s"));
    for args in [["prune", "-n"], ["backup", "-n"]] {
        let out = s.zoffsite(&[args[0], args[1], "-c", cfg.to_str().unwrap()]);
        assert!(out.status.code().is_some(), "{args:?}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert!(s.told("start").is_none());
}

#[test]
fn a_ping_url_that_never_answers_costs_only_the_timeout_and_a_warning() {
    let s = Source::new();
    let server = HttpRecorder::start(Answer::Never);
    let cfg = s.config("[\"tank/data\"]", &s.notify_all(&server, "1s"));
    let started = Instant::now();
    let out = s.zoffsite(&["prune", "--json", "-c", cfg.to_str().unwrap()]);
    let took = started.elapsed();
    let (stdout, stderr) = text(&out);
    // Its own exit code (0), and its own report on stdout.
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["exit_code"], 0);
    // Two waits (start and end) of 1s, plus the grace each; far under it in practice.
    assert!(took < Duration::from_secs(2 * (1 + 3) + 2), "{took:?}");
    assert_eq!(stderr.matches("warning: notify: ping to http://127.0.0.1:").count(), 2, "{stderr}");
    assert!(stderr.contains("no answer within 1s"), "{stderr}");
    // The programs still ran.
    assert!(s.told("start").is_some() && s.told("success").is_some());
    // A hanging program is killed at the timeout the same way.
    let hang = s.path("hang");
    std::fs::write(&hang, "#!/bin/sh\nsleep 60\n").unwrap();
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = s.config(
        "[\"tank/data\", \"tank/gone\"]",
        &format!("on_failure = [\"{}\"]\ntimeout = \"1s\"\n", hang.display()),
    );
    let started = Instant::now();
    let out = s.zoffsite(&["prune", "-c", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(1 + 3 + 2), "{:?}", started.elapsed());
    assert!(text(&out).1.contains("did not finish within 1s and was killed"), "{:?}", text(&out));
}

#[test]
fn the_ping_url_is_never_shown_in_any_output() {
    let s = Source::new();
    // Refused (a closed port), failing (500) and a redirect: every path
    // that writes a message about the URL, at the most verbose log level.
    let closed = HttpRecorder::start(Answer::Ok).url(&format!("/ping/{KEY}"));
    for url in [
        closed,
        HttpRecorder::start(Answer::Status(500)).url(&format!("/ping/{KEY}")),
        HttpRecorder::start(Answer::Status(302)).url(&format!("/ping/{KEY}")),
    ] {
        let cfg = s.config("[\"tank/data\", \"tank/gone\"]", &format!("ping_url = \"{url}\"\ntimeout = \"2s\"\n"));
        for verbose in [&["-vvv"][..], &[]] {
            let mut args = verbose.to_vec();
            args.extend(["prune", "--json", "-c", cfg.to_str().unwrap()]);
            let out = s.zoffsite(&args);
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(3));
            assert!(stderr.contains("warning: notify: ping to http://127.0.0.1:"), "{stderr}");
            for shown in [&stdout, &stderr] {
                assert!(!shown.contains(KEY) && !shown.contains("/ping/"), "{url}: {shown}");
            }
        }
    }
    // Nor in a config error.
    let cfg = s.config("[\"tank/data\"]", &format!("ping_url = \"ftp://hc.example.org/ping/{KEY}\""));
    let out = s.zoffsite(&["status", "--json", "-c", cfg.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("notify.ping_url"), "{stderr}");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY), "{stdout}{stderr}");
}

#[test]
fn relative_programs_are_refused_with_the_fix() {
    let s = Source::new();
    let cfg = s.config("[\"tank/data\"]", "on_failure = [\"mail\", \"-s\", \"backup failed\", \"me\"]");
    let out = s.zoffsite(&["backup", "-c", cfg.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("notify.on_failure: \"mail\" must be an absolute path"), "{stderr}");
    assert!(s.fake.snapshot_names("tank/data").is_empty(), "a bad config changes nothing");
}
