//! End-to-end area `box_retention`: the box owner's own commands, `box
//! prune` (retention by receive time, a clock gone back, a flood of
//! snapshots from a compromised source) and `box check` (the dead-man's
//! switch and its notify program).
//!
//! Needs root and real OpenZFS: `scripts/e2e --area box_retention` (see
//! `harness.rs` and `e2e/README.md`).

use crate::harness::*;

/// Box retention by receive time: with `last = 1` and no `min_age` only the
/// newest survives, a dry run lists every snapshot with its reason and
/// destroys nothing, a clock gone back is refused, and the next backup is
/// still incremental.
#[test]
#[ignore = "needs root and real OpenZFS: run `make e2e`"]
fn box_prune_keeps_the_newest_and_refuses_a_clock_gone_back() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    let cfg = w.config(&[&data], &[]);
    let mut names = Vec::new();
    for i in 0..3 {
        w.write(&data, &format!("f{i}"), b"some data");
        let out = w.backup(&cfg, &["--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        names.push(json(&out)["snapshot"].as_str().unwrap().to_owned());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let box_ds = format!("{}/{data}", w.root);
    assert_eq!(box_snap_names(&w, &box_ds).len(), 3);
    let bcfg = box_config(&w, "min_age = \"0s\"\nmax_age = \"1h\"\n[keep]\nlast = 1\n");

    // Dry run: every snapshot with its verdict; nothing destroyed.
    let out = box_cmd("prune", &bcfg, &["-n"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    for n in &names[..2] {
        assert!(listing.contains(&format!("{box_ds}@{n} (received ")), "{listing}");
    }
    assert_eq!(listing.matches(": destroy").count(), 2, "{listing}");
    assert!(listing.contains("keep (last 1 of 1, protected: newest snapshot"), "{listing}");
    let doc = json(&box_cmd("prune", &bcfg, &["-n", "--json"]));
    let d = doc["decisions"].as_array().unwrap();
    assert_eq!(d.iter().map(|d| d["destroy"].as_bool().unwrap()).collect::<Vec<_>>(), [true, true, false], "{doc}");
    assert!(d.iter().all(|d| d["received"].as_i64().unwrap() > unix_now() - 3600), "{doc}");
    assert_eq!(box_snap_names(&w, &box_ds).len(), 3, "a dry run destroys nothing");

    // The clock says a year before the receives: refused, nothing destroyed.
    let past = rfc3339(unix_now() - 365 * 86400);
    let out = box_cmd("prune", &bcfg, &["--now", &past]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("clock went back") && err.contains("nothing is destroyed"), "{err}");
    assert_eq!(box_snap_names(&w, &box_ds).len(), 3);

    // The real run: only the newest is left, the source is untouched, and
    // the run is recorded on the root.
    let out = box_cmd("prune", &bcfg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(box_snap_names(&w, &box_ds), [names[2].clone()]);
    assert_eq!(w.snapshots(&w.tank).len(), 3, "the source keeps its own");
    let last: i64 = w.prop(&w.root, "zoffsite:lastrun").parse().unwrap();
    assert!((unix_now() - last).abs() < 600, "{last}");

    // The protected base carries the next incremental.
    w.write(&data, "after", b"after the prune");
    let out = w.backup(&cfg, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = json(&out);
    assert_eq!(r["targets"][0]["datasets"][0]["send"]["kind"], "incremental", "{r}");
}

/// The dead-man's switch: quiet right after a backup; when nothing arrived
/// within max_age (seen through `--now`) and a partial receive was
/// abandoned, it exits 6 and the notify program gets the message on stdin.
#[test]
#[ignore = "needs root and real OpenZFS: run `make e2e`"]
fn box_check_passes_then_notifies_when_stale() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    let cfg = w.config(&[&data], &[]);
    let out = w.backup(&cfg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = w.dir.join("notified.txt");
    let script = w.dir.join("alert-owner");
    std::fs::write(&script, format!("#!/bin/sh\necho \"args: $*\" > {0}\ncat >> {0}\n", got.display())).unwrap();
    ok(&["chmod", "755", script.to_str().unwrap()]);
    let bcfg = box_config(&w, &format!("max_age = \"1h\"\nnotify = [\"{}\", \"owner\"]\n", script.display()));

    let out = box_cmd("check", &bcfg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: 1 dataset(s)"), "{}", text(&out));
    assert!(!got.exists(), "nobody is bothered when all is well");

    // An interrupted full receive the source never came back for.
    let other = format!("{}/other", w.tank);
    w.create_encrypted(&other);
    w.write(&other, "x", &vec![9u8; 300_000]);
    ok(&["zfs", "snapshot", &format!("{other}@s")]);
    let partial = format!("{}/{other}", w.root);
    plant_partial(&w, &["-w", &format!("{other}@s")], &partial);

    let later = rfc3339(unix_now() + 3 * 3600);
    let out = box_cmd("check", &bcfg, &["--now", &later, "--json"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let doc = json(&out);
    let kinds: Vec<&str> = doc["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["stale", "abandoned_partial"], "{doc}");
    assert_eq!(doc["notified"], true, "{doc}");
    let msg = std::fs::read_to_string(&got).unwrap();
    assert!(msg.starts_with("args: owner\nzoffsite box check on "), "{msg}");
    assert!(msg.contains(&format!("- {}/{data}: nothing received for 3h", w.root)), "{msg}");
    assert!(msg.contains(&format!("- {partial}: a partial receive started")), "{msg}");
    assert!(msg.contains(&format!("zfs receive -A {partial}")), "{msg}");

    // A notify program that fails: exit 1, the owner was not told.
    std::fs::write(&script, "#!/bin/sh\nexit 7\n").unwrap();
    let out = box_cmd("check", &bcfg, &["--now", &later]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT notified"), "{}", text(&out));
}

/// A compromised source floods the box with 200 tiny snapshots in one -I
/// stream. Box retention ages by receive time (real history received on
/// earlier days, simulated by re-stamping it) with min_age and day/week
/// buckets: the flood is kept while young, then shrinks to a few, and the
/// real history survives throughout.
#[test]
#[ignore = "needs root and real OpenZFS: run `make e2e`"]
fn box_flood_cannot_push_out_real_history() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    let cfg = w.config(&[&data], &[]);
    let box_ds = format!("{}/{data}", w.root);
    let now = unix_now();
    let mut real = Vec::new();
    for i in 0..3 {
        w.write(&data, &format!("real{i}"), b"real history");
        let out = w.backup(&cfg, &["--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        real.push(json(&out)["snapshot"].as_str().unwrap().to_owned());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // Received 10, 9 and 8 days ago by the box's clock.
    for (i, n) in real.iter().enumerate() {
        let t = now - (10 - i64::try_from(i).unwrap()) * 86400;
        zfs(&["set", &format!("zoffsite:received={t}"), &format!("{box_ds}@{n}")]);
    }
    // The flood: 60 snapshots on the source (20 times the real history;
    // what retention does with them does not depend on how many, and each
    // costs seconds to receive under emulation), sent by one backup as -I.
    let flood: usize = 60;
    let script = format!("for i in $(seq -w 1 {flood}); do zfs snapshot \"$0@zoffsite-flood-$i\" || exit 1; done");
    ok(&["sh", "-c", &script, &data]);
    w.write(&data, "after-flood", b"x");
    let out = w.backup(&cfg, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = json(&out);
    assert_eq!(r["targets"][0]["datasets"][0]["send"]["intermediates"], flood, "{r}");
    assert_eq!(box_snap_names(&w, &box_ds).len(), flood + 4);

    let bcfg = box_config(&w, "min_age = \"7d\"\n[keep]\nlast = 3\ndaily = 7\nweekly = 4\n");
    // Now: the flood is younger than min_age, the real history has its days.
    let out = box_cmd("prune", &bcfg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(box_snap_names(&w, &box_ds).len(), flood + 4, "nothing to destroy yet: {}", text(&out));
    // Eight days on: the flood shrinks to its last 3; real history stays.
    let out = box_cmd("prune", &bcfg, &["--now", &rfc3339(now + 8 * 86400)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let left = box_snap_names(&w, &box_ds);
    for n in &real {
        assert!(left.contains(n), "real history {n} survived the flood: {left:?}");
    }
    // last 3 (the newest also its day's and week's) and the real three; one
    // more if the flood straddled midnight UTC.
    assert!(left.len() <= 7, "the flood was pruned: {left:?}");
    let newest = r["snapshot"].as_str().unwrap();
    assert!(left.iter().any(|n| n == newest), "the newest (next base) is kept: {left:?}");
}
