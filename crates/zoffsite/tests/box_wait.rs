//! `zoffsite box wait`, the whole command, with a fake `ssh` first in PATH
//! (no network, no box): the real observers, the real session code, the
//! rendering and the exit codes. What the box does once reached is the
//! testkit's test (`zoffsite-testkit/tests/box_wait.rs`, the real server
//! over pipes).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A config with one target, `zwtest` (a box name, but no tunnel of that
/// name exists here: the tunnel cannot be watched and the session is tried
/// directly), and an `ssh` that fails with `stderr`.
fn world(ssh_stderr: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("id"), "").unwrap();
    std::fs::write(p.join("known_hosts"), "").unwrap();
    std::fs::write(
        p.join("zoffsite.toml"),
        format!(
            "[source]\ndatasets = [\"tank/data\"]\n[[target]]\nname = \"zwtest\"\nhost = \"10.77.0.2\"\nuser = \"zoffsite\"\nidentity_file = \"{0}/id\"\nknown_hosts = \"{0}/known_hosts\"\nconnect_timeout = \"2s\"\n",
            p.display()
        ),
    )
    .unwrap();
    std::fs::create_dir(p.join("bin")).unwrap();
    let ssh = p.join("bin/ssh");
    std::fs::write(&ssh, format!("#!/bin/sh\nprintf '%s\\n' '{ssh_stderr}' >&2\nexit 255\n")).unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn wait(d: &Path, args: &[&str]) -> (Output, serde_json::Value) {
    let path = format!("{}:{}", d.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(env!("CARGO_BIN_EXE_zoffsite"))
        .args(["box", "wait", "-c"])
        .arg(d.join("zoffsite.toml"))
        .args(args)
        .arg("--json")
        .env("PATH", path)
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (out, doc)
}

#[test]
fn a_box_that_never_answers_exits_4_with_the_tpm_hint_in_one_json_document() {
    let d = world("ssh: connect to host 10.77.0.2 port 22: Connection timed out");
    // -n: waits as a real run does, and needs no run lock (root's), so
    // this runs as any user.
    let (out, doc) = wait(d.path(), &["zwtest", "--timeout", "0s", "-n"]);
    assert_eq!(out.status.code(), Some(4), "{doc}");
    assert_eq!(doc["exit_code"], 4);
    assert_eq!(doc["phases"], serde_json::json!([]));
    assert_eq!(doc["attempts"], 1);
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["interface"], "zo-zwtest");
    assert_eq!((doc["box_posture"].is_null(), doc["backup"].is_null()), (true, true));
    let e = doc["errors"][0].as_str().unwrap();
    assert!(e.contains("no session with box zwtest within 0s (1 attempt)"), "{e}");
    assert!(e.contains("Connection timed out") && e.contains("docs/box.md#when-the-box-does-not-come-back"), "{e}");
    // JSON: nothing on stdout but the document; the error on stderr too.
    assert!(String::from_utf8_lossy(&out.stderr).contains("zoffsite: no session with box zwtest"));
}

#[test]
fn a_changed_host_key_ends_a_long_wait_at_once_with_the_fix() {
    let d = world("@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @");
    let start = Instant::now();
    let (out, doc) = wait(d.path(), &["zwtest", "--timeout", "30m", "-n"]);
    assert!(start.elapsed() < Duration::from_secs(60), "no retry: {:?}", start.elapsed());
    assert_eq!(out.status.code(), Some(4), "{doc}");
    assert_eq!(doc["attempts"], 1);
    let e = doc["errors"][0].as_str().unwrap();
    assert!(e.contains("not the one pinned in") && e.contains("known_hosts") && e.contains("replace its line"), "{e}");
}

#[test]
fn an_unknown_box_name_is_a_usage_error_that_names_the_targets() {
    let d = world("unused");
    let (out, doc) = wait(d.path(), &["nobox"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(doc["exit_code"], 2);
    let e = doc["errors"][0].as_str().unwrap();
    assert!(e.contains("no target named \"nobox\" (it has: zwtest)") && e.contains("zoffsite box new nobox"), "{e}");
}
