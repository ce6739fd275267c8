//! End-to-end area `notify`: `[notify]` around real backups. A backup that
//! succeeds and one that fails (the box's host key changed), each heard of
//! by a healthchecks-style HTTP listener inside the source's network
//! namespace (the pings' paths and bodies recorded) and by a notify program
//! that records its arguments, environment and stdin.
//!
//! Needs root and real OpenZFS: `scripts/e2e --area notify` (see
//! `harness.rs` and `e2e/README.md`).

use std::net::TcpListener;
use std::os::fd::AsFd as _;
use std::os::unix::fs::PermissionsExt as _;

use zoffsite_testkit::http::{Answer, HttpRecorder};

use crate::harness::*;

/// A listener on 127.0.0.1 inside the network namespace `ns`, where the
/// source runs: made by a thread that moves into `ns` and ends (the socket
/// stays in `ns`, the rest of the test where it was).
fn listen_in(ns: &str) -> TcpListener {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        rustix::thread::move_into_link_name_space(f.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network)).unwrap();
        TcpListener::bind("127.0.0.1:0").unwrap()
    })
    .join()
    .unwrap()
}

#[test]
#[ignore = "needs root and real OpenZFS: run `make e2e`"]
fn a_backup_that_succeeds_and_one_that_fails_are_heard_of() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    w.write(&data, "a.txt", b"first version");
    let server = HttpRecorder::on(listen_in(w.env("HOME_NS")), Answer::Ok);
    let key = random_hex(16);
    let tell = w.dir.join("tell");
    std::fs::write(
        &tell,
        format!(
            "#!/bin/sh\nout={}/told-$ZOFFSITE_EVENT\n{{ printf '%s\\n' \"$@\"; echo \"env $ZOFFSITE_EVENT $ZOFFSITE_COMMAND $ZOFFSITE_EXIT_CODE\"; echo stdin:; cat; }} > $out\n",
            w.dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&tell, std::fs::Permissions::from_mode(0o755)).unwrap();
    let notify = format!(
        "\n[notify]\non_start = [\"{t}\"]\non_success = [\"{t}\"]\non_failure = [\"{t}\", \"--urgent\"]\nping_url = \"{}\"\ntimeout = \"20s\"\n",
        server.url(&format!("/ping/{key}")),
        t = tell.display()
    );
    let cfg = w.config_with(&[&data], &[], &notify);
    let told = |event: &str| std::fs::read_to_string(w.dir.join(format!("told-{event}"))).ok();
    let paths = |from: usize| -> Vec<String> {
        server.requests()[from..].iter().map(|r| format!("{} {}", r.method, r.path)).collect()
    };

    // Success: /start before, the report to the URL itself after.
    let ok = w.backup(&cfg, &["--json"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert_eq!(paths(0), [format!("POST /ping/{key}/start"), format!("POST /ping/{key}")], "{}", text(&ok));
    let reqs = server.requests();
    assert_eq!(reqs[0].body, "");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(reqs[1].body.trim(), stdout.trim(), "the body is the --json report");
    let report: serde_json::Value = serde_json::from_str(&reqs[1].body).unwrap();
    assert_eq!(report["targets"][0]["datasets"][0]["status"], "ok", "{report}");
    assert!(report["snapshot"].is_string(), "{report}");
    let start = told("start").expect("on_start ran");
    assert!(start.ends_with(": starting\nenv start backup \nstdin:\n"), "{start}");
    let success = told("success").expect("on_success ran");
    let (head, stdin) = success.split_once("stdin:\n").unwrap();
    assert!(head.contains(": ok\nenv success backup 0\n"), "{success}");
    assert_eq!(stdin, reqs[1].body);
    assert!(told("failure").is_none());

    // Failure: the box presents another host key; the source refuses it.
    ok_topology(&w, "rotate-hostkey");
    w.write(&data, "b.txt", b"second file");
    let failed = w.backup(&cfg, &[]);
    assert_eq!(failed.status.code(), Some(4), "{}", text(&failed));
    assert_eq!(paths(2), [format!("POST /ping/{key}/start"), format!("POST /ping/{key}/fail")], "{}", text(&failed));
    let body = &server.requests()[3].body;
    let report: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(report["exit_code"], 4);
    assert!(report["targets"][0]["error"].as_str().is_some_and(|e| e.contains("host key")), "{report}");
    let failure = told("failure").expect("on_failure ran");
    let (head, stdin) = failure.split_once("stdin:\n").unwrap();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("--urgent"));
    let msg = lines.next().unwrap();
    assert!(msg.contains(": failed (exit 4: a box could not be reached or verified): target friend"), "{msg}");
    assert_eq!(lines.next(), Some("env failure backup 4"));
    assert_eq!(stdin, *body);
    // The URL's secret part is nowhere in what either run printed.
    for out in [&ok, &failed] {
        assert!(!text(out).contains(&key), "{}", text(out));
    }
}

fn ok_topology(w: &World, verb: &str) {
    ok(&[repo_root().join("e2e/topology.sh").to_str().unwrap(), verb, w.dir.join("net").to_str().unwrap()]);
}
