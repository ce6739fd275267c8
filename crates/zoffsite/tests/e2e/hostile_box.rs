//! End-to-end area `hostile_box`: the source against a box that cannot be
//! trusted. No plaintext ever reaches the box's disk; an impostor (a changed
//! host key) gets nothing; resume tokens forged by the box are refused; a
//! box that lies or babbles cannot hang, crash or fool the source.
//!
//! Needs root and real OpenZFS: `scripts/e2e --area hostile_box` (see
//! `harness.rs` and `e2e/README.md`).

use std::io::Read;
use std::path::Path;
use std::process::Command;

use crate::harness::*;

/// Whether `needle` occurs anywhere in the file (read in chunks, with
/// overlap, so a match across a chunk boundary is found).
fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let finder = memchr::memmem::Finder::new(needle);
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return false;
        }
        let mut window = std::mem::take(&mut carry);
        window.extend_from_slice(&buf[..n]);
        if finder.find(&window).is_some() {
            return true;
        }
        carry = window[window.len().saturating_sub(needle.len() - 1)..].to_vec();
    }
}

/// A random canary written on the source never appears in the box pool's
/// vdev; the same canary sent without -w (the positive control) does, so
/// the check can fail.
#[test]
#[ignore = "needs root and real OpenZFS: run `make e2e`"]
fn canary_never_reaches_the_box_in_plaintext() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    let canary = format!("CANARY-{}", random_hex(24));
    let mut content = canary.clone().into_bytes();
    content.extend(std::iter::repeat_n(b'.', 16 * 1024));
    w.write(&data, "canary.txt", &content);
    let cfg = w.config(&[&data], &[]);
    let out = w.backup(&cfg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    ok(&["zpool", "sync", &w.offsite]);
    let vdev = w.vdev(&w.offsite);
    assert!(!file_contains(&vdev, canary.as_bytes()), "plaintext canary found on the box's disk");

    // Positive control: the same kind of data, unencrypted, sent the way
    // zoffsite never does, lands on that disk in the clear.
    let plain = format!("{}/control", w.tank);
    w.create_plain(&plain);
    let control = format!("CONTROL-{}", random_hex(24));
    let mut content = control.clone().into_bytes();
    content.extend(std::iter::repeat_n(b'.', 16 * 1024));
    w.write(&plain, "control.txt", &content);
    zfs(&["snapshot", &format!("{plain}@c")]);
    let status = Command::new("sh")
        .args([
            "-c",
            "zfs send \"$1\" | zfs receive -u \"$2\"",
            "sh",
            &format!("{plain}@c"),
            &format!("{}/control", w.offsite),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    ok(&["zpool", "sync", &w.offsite]);
    assert!(file_contains(&vdev, control.as_bytes()), "positive control: the check must be able to find plaintext");
    assert!(!file_contains(&vdev, canary.as_bytes()));
}

/// A changed host key is refused before anything is sent.
#[test]
#[ignore = "needs root and real OpenZFS: run `make e2e`"]
fn changed_host_key_is_refused() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    let cfg = w.config(&[&data], &[]);
    assert_eq!(w.backup(&cfg, &[]).status.code(), Some(0));
    let before = w.snapshots(&w.offsite);
    ok(&[repo_root().join("e2e/topology.sh").to_str().unwrap(), "rotate-hostkey", w.dir.join("net").to_str().unwrap()]);
    w.write(&data, "more.txt", b"more");
    let out = w.backup(&cfg, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("host key") && err.contains(w.env("KNOWN_HOSTS")), "{err}");
    assert_eq!(w.snapshots(&w.offsite), before, "nothing may reach the box");
}

/// Resume tokens come from the box: a token for another dataset, or for a
/// non-raw send, is refused by the source (nothing is sent from it, no
/// plaintext ever), with a message saying how the box owner clears it;
/// the other datasets go on.
#[test]
#[ignore = "needs root and real OpenZFS: run `make e2e`"]
fn forged_resume_tokens_are_refused() {
    let w = World::new();
    let a = format!("{}/a", w.tank);
    let b = format!("{}/b", w.tank);
    w.create_encrypted(&a);
    w.create_encrypted(&b);
    w.write(&b, "x", &vec![b'b'; 200_000]);
    ok(&["zfs", "snapshot", &format!("{b}@other")]);
    // The box never held a or b. Its root "left" partial state at their
    // places: for a, a raw stream of dataset b; for b, a stream of b sent
    // without -w (decrypted: what zoffsite never sends).
    zfs(&["create", "-p", "-o", "canmount=off", &format!("{}/{}", w.root, w.tank)]);
    plant_partial(&w, &["-w", &format!("{b}@other")], &format!("{}/{a}", w.root));
    plant_partial(&w, &[&format!("{b}@other")], &format!("{}/{b}", w.root));
    let cfg = w.config(&[&a, &b], &[]);
    let out = w.backup(&cfg, &["--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another dataset") && err.contains("zfs receive -A"), "{}", text(&out));
    assert!(err.contains("non-raw") && err.contains("refusing"), "{}", text(&out));
    // Nothing was sent on either token: the planted state is as it was.
    assert_ne!(w.prop(&format!("{}/{a}", w.root), "receive_resume_token"), "-");
    assert_ne!(w.prop(&format!("{}/{b}", w.root), "receive_resume_token"), "-");
}

/// A box that lies or babbles (e2e/hostile-box.py in place of `serve`):
/// every run ends non-zero within a bounded time, never panics, changes
/// nothing on the source but its own new snapshot, and lets out only raw
/// stream bytes.
#[test]
#[ignore = "needs root and ZFS (scripts/e2e)"]
fn a_hostile_box_cannot_hang_crash_or_fool_the_source() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    w.write(&data, "a.txt", b"my data");
    let cfg = w.config(&[&data], &[]);
    let script = repo_root().join("e2e/hostile-box.py");
    let cases: [(&str, &str); 9] = [
        ("garbage", "broke the protocol"),
        ("endless", "sent stream data"),
        ("huge-message", "broke the protocol"),
        ("foreign-name", "which was not asked for"),
        ("bad-name", "malformed message"),
        ("dup-guid", "twice"),
        ("fake-token", "resume token"),
        ("long-token", "malformed resume token"),
        ("wrong-guid", "guid"),
    ];
    for (mode, says) in cases {
        let log = w.dir.join(format!("hostile-{mode}.log"));
        w.set_forced_command(&format!("/usr/bin/python3 {} {mode} {}", script.display(), log.display()));
        let before = w.source_state();
        let started = std::time::Instant::now();
        let out = w.backup(&cfg, &["--force-snapshot"]);
        let took = started.elapsed();
        let all = text(&out);
        assert!(took < std::time::Duration::from_secs(150), "{mode}: took {took:?}");
        assert!(!all.contains("panicked"), "{mode}: {all}");
        assert!(matches!(out.status.code(), Some(1..=6)), "{mode}: exit {:?}: {all}", out.status.code());
        assert!(all.to_lowercase().contains(&says.to_lowercase()), "{mode}: expected {says:?} in: {all}");
        // The source: what was there is there, unchanged; the only new
        // things are this run's own snapshot (no holds, no bookmarks).
        let after = w.source_state();
        for (k, v) in &before {
            assert_eq!(after.get(k), Some(v), "{mode}: {k} changed");
        }
        let new: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        assert!(
            new.iter().all(|k| k.contains("@zoffsite-") && (!k.ends_with(" holds") || after[*k].trim().is_empty())),
            "{mode}: {new:?}"
        );
        // Whatever reached the box is a raw stream.
        let stream = std::fs::read(format!("{}.stream", log.display())).unwrap_or_default();
        if mode == "wrong-guid" {
            let begin = zoffsite_core::stream::parse_begin(&stream).expect("a full stream was sent");
            assert!(begin.is_raw(), "{mode}: {begin:?}");
        } else {
            assert!(stream.is_empty(), "{mode}: {} stream bytes sent to a box that lied", stream.len());
        }
    }
}
