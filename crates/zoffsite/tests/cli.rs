//! The command line as a user (or a monitor) meets it, whole binary, no
//! root and no real ZFS: `--json` on failure (a config that cannot be
//! read, a command line clap refuses, an unknown target, the run lock
//! held, a box that cannot be reached), `-q`, `-c` before the subcommand,
//! `ZOFFSITE_CONFIG`, `config check` without zfs or ssh anywhere on PATH,
//! and `serve` started by hand on a terminal (through util-linux's
//! `script`, which gives it one). The box that cannot be reached needs
//! `ssh`, the terminal `script`: without them those tests skip with a
//! message, unless `ZOFFSITE_REQUIRE_TOOLS=1` makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use zoffsite_testkit::FakeZfs;

fn have(tool: &str) -> bool {
    if Command::new("which").arg(tool).output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    let why = format!("{tool} is not installed");
    assert!(std::env::var_os("ZOFFSITE_REQUIRE_TOOLS").is_none_or(|v| v != "1"), "{why}, and ZOFFSITE_REQUIRE_TOOLS=1");
    eprintln!("SKIPPED: {why} (ZOFFSITE_REQUIRE_TOOLS=1 makes this a failure)");
    false
}

/// `zoffsite ARGS`, with no ZOFFSITE_CONFIG of the caller's.
fn zoffsite(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zoffsite"));
    c.args(args).env_remove("ZOFFSITE_CONFIG").env_remove("ZOFFSITE_LOG").stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}\nstderr:\n{}", stdout(out), stderr(out)))
}

/// A source config in a temporary directory, its key files there (or
/// not), its one target `friend` at `127.0.0.1:PORT`.
struct Source {
    tmp: tempfile::TempDir,
}

impl Source {
    fn new(port: u16, with_files: bool) -> Source {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        if with_files {
            std::fs::write(d.join("id"), "not a key: nothing logs in with it\n").unwrap();
            std::fs::write(d.join("known_hosts"), "").unwrap();
        }
        let text = format!(
            "[source]\ndatasets = [\"tank/data\"]\n[source.keep]\nlast = 24\n\
             [[target]]\nname = \"friend\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"zoffsite\"\n\
             identity_file = \"{}\"\nknown_hosts = \"{}\"\nconnect_timeout = \"5s\"\n\
             [[target]]\nname = \"other\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"zoffsite\"\n\
             identity_file = \"{}\"\nknown_hosts = \"{}\"\n",
            d.join("id").display(),
            d.join("known_hosts").display(),
            d.join("id").display(),
            d.join("known_hosts").display(),
        );
        std::fs::write(d.join("zoffsite.toml"), text).unwrap();
        Source { tmp }
    }

    fn config(&self) -> PathBuf {
        self.tmp.path().join("zoffsite.toml")
    }

    fn config_str(&self) -> String {
        self.config().display().to_string()
    }
}

#[test]
fn a_config_that_cannot_be_read_is_json_with_kind_message_and_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("zoffsite.toml");
    for cmd in [&["status", "--json"][..], &["backup", "--json"], &["verify", "--json"], &["prune", "--json"]] {
        let out = run(zoffsite(cmd).arg("-c").arg(&missing));
        assert_eq!(code(&out), 2, "{cmd:?}: {}", stderr(&out));
        let doc = json(&out);
        assert_eq!(doc["exit_code"], 2);
        assert_eq!(doc["error"]["kind"], "config", "{cmd:?}");
        assert!(doc["error"]["message"].as_str().unwrap().contains("zoffsite.toml"), "{doc}");
        assert!(doc["error"]["hint"].as_str().unwrap().starts_with("create it"), "{doc}");
        assert_eq!(doc["errors"].as_array().unwrap().len(), 1);
    }
    // A directory is not "create it": it says what is wrong.
    let out = run(zoffsite(&["status", "--json", "-c"]).arg(tmp.path()));
    let doc = json(&out);
    let hint = doc["error"]["hint"].as_str().unwrap();
    assert!(hint.contains("directory") && !hint.contains("create"), "{hint}");
    // An invalid one: the key named, the hint points at config check.
    std::fs::write(&missing, "[source]\ndatasets = [\"tank/data\"]\ntagret = 1\n").unwrap();
    let doc = json(&run(zoffsite(&["status", "--json", "-c"]).arg(&missing)));
    assert!(doc["error"]["message"].as_str().unwrap().contains("tagret"), "{doc}");
    assert!(doc["error"]["hint"].as_str().unwrap().contains("config check"), "{doc}");
    // The box's config too, and its hint points at the format, not --help.
    for cmd in [&["box", "check", "--json"][..], &["box", "prune", "--json"]] {
        let out = run(zoffsite(cmd).arg("-c").arg(tmp.path().join("box.toml")));
        assert_eq!(code(&out), 2);
        let doc = json(&out);
        assert_eq!(doc["error"]["kind"], "config");
        let hint = doc["error"]["hint"].as_str().unwrap();
        assert!(hint.contains("docs/box.md") && !hint.contains("--help"), "{hint}");
    }
}

#[test]
fn a_command_line_clap_refuses_is_json_when_json_was_asked() {
    let out = run(&mut zoffsite(&["status", "--json", "--bogus"]));
    assert_eq!(code(&out), 2);
    let doc = json(&out);
    assert_eq!(doc["error"]["kind"], "usage");
    assert!(doc["error"]["message"].as_str().unwrap().contains("--bogus"), "{doc}");
    assert_eq!(doc["error"]["hint"], "`zoffsite status --help` lists the options");
    assert!(stderr(&out).contains("--bogus"), "clap still explains on stderr");
    // Without --json: clap's text only, nothing on stdout.
    let out = run(&mut zoffsite(&["status", "--bogus"]));
    assert_eq!((code(&out), stdout(&out).as_str()), (2, ""));
    // -c on a command that reads no config is a usage error.
    let out = run(&mut zoffsite(&["-c", "/etc/x.toml", "box", "apply", "b.bundle"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("reads no configuration file"), "{}", stderr(&out));
    // ZOFFSITE_CONFIG is no such error: it may be set for every command.
    let out = run(zoffsite(&["box", "apply", "/nonexistent/b.bundle"]).env("ZOFFSITE_CONFIG", "/etc/x.toml"));
    assert!(!stderr(&out).contains("reads no configuration file"), "{}", stderr(&out));
}

#[test]
fn an_unknown_target_is_a_usage_error_that_lists_the_known_ones() {
    // The key files are missing: the name is checked first.
    let s = Source::new(9, false);
    for cmd in ["status", "backup", "verify"] {
        let out = run(&mut zoffsite(&[cmd, "--target", "nope", "--json", "-c", &s.config_str()]));
        assert_eq!(code(&out), 2, "{cmd}");
        let doc = json(&out);
        assert_eq!(doc["error"]["kind"], "usage");
        assert!(doc["error"]["message"].as_str().unwrap().contains("\"nope\""), "{doc}");
        assert_eq!(doc["error"]["hint"], "its targets: friend, other", "{cmd}");
    }
    let out = run(&mut zoffsite(&["status", "--target", "nope", "-c", &s.config_str()]));
    assert!(stderr(&out).contains("no target \"nope\"") && stderr(&out).contains("its targets: friend, other"));
    // A known one: only its files must exist (here they do not).
    let doc = json(&run(&mut zoffsite(&["status", "--target", "other", "--json", "-c", &s.config_str()])));
    assert_eq!(doc["error"]["kind"], "config");
    assert!(doc["error"]["message"].as_str().unwrap().contains("target other: identity_file"), "{doc}");
}

#[test]
fn config_comes_from_c_before_or_after_the_subcommand_then_the_environment() {
    let s = Source::new(9, true);
    let other = tempfile::tempdir().unwrap();
    let absent = other.path().join("absent.toml");
    let check = |c: &mut Command| {
        let out = run(c);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        json(&out)["config"].as_str().unwrap().to_owned()
    };
    assert_eq!(check(&mut zoffsite(&["-c", &s.config_str(), "config", "check", "--json"])), s.config_str());
    assert_eq!(check(&mut zoffsite(&["config", "check", "--json", "--config", &s.config_str()])), s.config_str());
    assert_eq!(check(zoffsite(&["config", "check", "--json"]).env("ZOFFSITE_CONFIG", s.config())), s.config_str());
    // -c wins over the environment.
    assert_eq!(
        check(zoffsite(&["config", "check", "--json", "-c", &s.config_str()]).env("ZOFFSITE_CONFIG", &absent)),
        s.config_str()
    );
    let out = run(zoffsite(&["config", "check", "--json"]).env("ZOFFSITE_CONFIG", &absent));
    assert_eq!(code(&out), 2);
    assert!(json(&out)["error"]["message"].as_str().unwrap().contains("absent.toml"));
    // Without either: the default path.
    let out = run(&mut zoffsite(&["config", "check", "--json"]));
    let doc = json(&out);
    let named = doc.get("config").or(doc["error"].get("message")).unwrap().to_string();
    assert!(named.contains(zoffsite_core::config::DEFAULT_PATH), "{doc}");
}

#[test]
fn config_check_touches_neither_zfs_nor_the_network() {
    let s = Source::new(9, true);
    // A PATH with nothing on it: no zfs, no ssh, no systemctl.
    let empty = tempfile::tempdir().unwrap();
    let out = run(zoffsite(&["config", "check", "-c", &s.config_str()]).env("PATH", empty.path()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(": valid"), "{text}");
    assert!(text.contains("backs up tank/data and every dataset below it"), "{text}");
    assert!(text.contains("keeps the newest 24"), "{text}");
    assert!(text.contains("target friend: zoffsite@127.0.0.1 port 9"), "{text}");
    assert!(text.contains("stale (status exits 6) after 1d 2h") && text.contains("bandwidth unlimited"), "{text}");
    assert!(text.contains("schedule: "), "{text}");
    // -q: nothing on stdout when all is well.
    let out = run(zoffsite(&["-q", "config", "check", "-c", &s.config_str()]).env("PATH", empty.path()));
    assert_eq!((code(&out), stdout(&out).as_str(), stderr(&out).as_str()), (0, "", ""));
    // A missing key file: exit 2, named with the fix, and the rest still said.
    let s = Source::new(9, false);
    let out = run(zoffsite(&["config", "check", "-c", &s.config_str()]).env("PATH", empty.path()));
    assert_eq!(code(&out), 2);
    assert!(stdout(&out).contains("target friend"), "{}", stdout(&out));
    assert!(stderr(&out).contains("identity_file") && stderr(&out).contains("ssh-keygen"), "{}", stderr(&out));
    // -q keeps the errors.
    let out = run(zoffsite(&["config", "check", "-q", "-c", &s.config_str()]).env("PATH", empty.path()));
    assert_eq!((code(&out), stdout(&out).as_str()), (2, ""));
    assert!(stderr(&out).contains("identity_file"), "{}", stderr(&out));
}

#[test]
fn config_check_says_who_is_notified_without_the_ping_url_and_the_bandwidth_windows() {
    let s = Source::new(9, true);
    let mut text = std::fs::read_to_string(s.config()).unwrap();
    let secret = "5f2c1e0a-secret-check-uuid";
    // The windows belong to the last target (other); [notify] after it.
    text.push_str(&format!(
        "bandwidth_limit = \"1MiB/s\"\n\n[[target.bandwidth_window]]\nfrom = \"01:00\"\nto = \"06:00\"\nlimit = \"unlimited\"\n\n[notify]\non_failure = [\"/usr/local/bin/alert-owner\", \"--to\", \"me\"]\nping_url = \"https://hc-ping.com/{secret}\"\n"
    ));
    std::fs::write(s.config(), text).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = run(zoffsite(&["config", "check", "-c", &s.config_str()]).env("PATH", empty.path()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("notify: on_failure /usr/local/bin/alert-owner --to me; ping https://hc-ping.com"), "{said}");
    assert!(said.contains("unlimited from 01:00 to 06:00"), "{said}");
    let out = run(zoffsite(&["config", "check", "--json", "-c", &s.config_str()]).env("PATH", empty.path()));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["notify"]["ping"], "https://hc-ping.com");
    assert_eq!(doc["notify"]["on_failure"][0], "/usr/local/bin/alert-owner");
    assert_eq!(doc["targets"][1]["bandwidth_limit"], 1024 * 1024);
    assert_eq!(doc["targets"][1]["bandwidth_windows"][0]["from"], "01:00");
    assert!(doc["targets"][1]["bandwidth_windows"][0]["limit"].is_null(), "unlimited");
    for o in [&said, &stdout(&out), &stderr(&out)] {
        assert!(!o.contains(secret), "the ping URL's secret part shown: {o}");
    }
}

#[test]
fn the_run_lock_held_is_json_with_kind_busy() {
    let s = Source::new(9, true);
    let held = match zoffsite_exec::lock::acquire_default(&s.config()) {
        Ok(l) => l,
        Err(e) => {
            // Its directory is /run/zoffsite: only root makes it.
            eprintln!("SKIPPED: cannot take the run lock here ({e})");
            return;
        }
    };
    let out = run(&mut zoffsite(&["backup", "--json", "-c", &s.config_str()]));
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["error"]["kind"], "busy");
    assert!(
        doc["error"]["message"].as_str().unwrap().contains(&std::process::id().to_string()),
        "names our pid: {doc}"
    );
    drop(held);
}

#[test]
fn status_json_comes_when_the_box_cannot_be_reached() {
    if !have("ssh") {
        return;
    }
    let fake = FakeZfs::new();
    fake.create("tank/data", true);
    // Port 9 on the loopback: nothing listens, the connection is refused.
    let s = Source::new(9, true);
    let path = format!("{}:{}", fake.dir().display(), std::env::var("PATH").unwrap_or_default());
    let out = run(zoffsite(&["status", "--json", "--target", "friend", "-c", &s.config_str()]).env("PATH", &path));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let doc = json(&out);
    let targets = doc["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "--target: that one only");
    assert_eq!(targets[0]["name"], "friend");
    assert!(targets[0]["error"].as_str().unwrap().starts_with("target friend: "), "{doc}");
    assert_eq!(doc["exit_code"], 4);
    // -q: only the unreachable target, nothing else.
    let out = run(zoffsite(&["status", "-q", "--target", "friend", "-c", &s.config_str()]).env("PATH", &path));
    assert_eq!(code(&out), 4);
    let text = stdout(&out);
    assert!(text.starts_with("target friend (max_age 1d 2h):\n  UNREACHABLE: "), "{text}");
}

#[test]
fn serve_on_a_terminal_says_what_it_is_and_prints_no_binary() {
    if !have("script") {
        return;
    }
    let exe = env!("CARGO_BIN_EXE_zoffsite");
    let tmp = tempfile::tempdir().unwrap();
    let typescript = tmp.path().join("typescript");
    // `script -e` runs it on a new terminal and exits with its status.
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &format!("{exe} serve --root offsite/home")])
        .arg(&typescript)
        .env_remove("ZOFFSITE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let seen = std::fs::read(&typescript).unwrap_or_default();
    let seen = String::from_utf8_lossy(&seen);
    assert_eq!(code(&out), 2, "{seen}");
    assert!(seen.contains("forced command") && seen.contains("not run by hand"), "{seen}");
    assert!(!seen.contains("hello") && !seen.contains('\u{0}'), "no protocol on a terminal: {seen}");
    // Piped, as sshd runs it: the protocol, not the explanation.
    let out = run(&mut zoffsite(&["serve", "--root", "offsite/home"]));
    assert!(!stderr(&out).contains("not run by hand"), "{}", stderr(&out));
    assert_ne!(code(&out), 2);
}

#[test]
fn logs_carry_no_colour_off_a_terminal_and_no_timestamp_under_the_journal() {
    // serve fed garbage logs a protocol warning: a pipe gets no escape
    // codes, and with INVOCATION_ID (a systemd unit) no timestamp of ours.
    let plain = run(&mut zoffsite(&["serve", "--root", "offsite/home"]));
    let log = stderr(&plain);
    assert!(log.contains("WARN") && !log.contains('\u{1b}'), "{log:?}");
    assert!(log.lines().any(|l| l.starts_with("20")), "a timestamp off systemd: {log}");
    let unit = run(zoffsite(&["serve", "--root", "offsite/home"]).env("INVOCATION_ID", "0123456789abcdef"));
    let log = stderr(&unit);
    assert!(log.contains("WARN") && !log.lines().any(|l| l.starts_with("20")), "{log}");
}

/// The docs say what the binary does.
#[test]
fn the_readme_documents_the_global_options() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    for needle in ["ZOFFSITE_CONFIG", "zoffsite config check", "-q", "--target"] {
        assert!(readme.contains(needle), "README.md mentions {needle}");
    }
}
