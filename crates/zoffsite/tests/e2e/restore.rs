//! End-to-end area `restore`: getting the data back. A restore after a
//! disaster (in place, to another name, from the box's disk), `verify` and
//! its restore drills, and a lying box that cannot fill the source's pool
//! while drills mount privately.
//!
//! Needs root and real OpenZFS: `scripts/e2e --area restore` (see
//! `harness.rs` and `e2e/README.md`).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Output;

use zoffsite_core::boxside::KEYWRAP_PROPERTY;

use crate::harness::*;

/// `zoffsite restore` at home from the world's box (`--target friend`).
fn restore_from_friend(w: &World, cfg: &Path, args: &[&str]) -> Output {
    let mut argv = vec![BIN, "restore", "-c", cfg.to_str().unwrap(), "--target", "friend"];
    argv.extend_from_slice(args);
    w.at_home(&argv)
}

/// sha256 of every file under `dir`, by path relative to it.
fn tree_hashes(dir: &Path) -> BTreeMap<String, String> {
    let out = run(&[
        "bash",
        "-c",
        "cd \"$1\" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum",
        "_",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (h, p) = l.split_once("  ").unwrap();
            (p.to_owned(), h.to_owned())
        })
        .collect()
}

/// The disaster: the source tree is destroyed and restored in place from
/// the box, every file comes back, one key unlocks all of it, and backups
/// go on incrementally. Then an older snapshot to a new name, and a restore
/// from the box's pool imported under another name (the seed's "move the
/// disk" path).
#[test]
#[ignore = "needs root and ZFS (scripts/e2e)"]
fn restore_after_a_disaster_and_from_the_boxs_disk() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    let (docs, photos) = (format!("{data}/docs"), format!("{data}/photos"));
    w.create_encrypted(&data);
    w.create_child(&docs);
    w.create_child(&photos);
    // Properties set by hand, which must come back (the mountpoint too:
    // create_encrypted sets one).
    zfs(&["set", "compression=lz4", &data]);
    zfs(&["set", "recordsize=65536", "user:note=kept", &docs]);
    // Not a data property: set again only when asked (the manifest is
    // written by the source, which may have been compromised since).
    zfs(&["set", "setuid=off", &data]);
    w.write(&docs, "taxes.txt", b"first version");
    w.write(&photos, "cat.jpg", &random_hex(200_000).into_bytes());
    let cfg = w.config(&[&data], &[]);
    let first = w.backup(&cfg, &["--json"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let s1 = json(&first)["snapshot"].as_str().unwrap().to_owned();
    // The manifest lists the tree of this point, in a directory only root
    // may write.
    let kept = w.mountpoint(&data).join(".zoffsite");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kept.join("properties.json")).unwrap()).unwrap();
    assert_eq!(manifest["tree"], serde_json::json!(["", "docs", "photos"]), "{manifest}");
    let meta = std::fs::metadata(&kept).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755));
    let at_s1 = tree_hashes(&w.mountpoint(&data));
    w.write(&docs, "taxes.txt", b"second version");
    w.write(&data, "top.txt", b"at the top");
    let second = w.backup(&cfg, &["--json"]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let s2 = json(&second)["snapshot"].as_str().unwrap().to_owned();
    let at_s2 = tree_hashes(&w.mountpoint(&data));
    assert_ne!(at_s1, at_s2);
    let key = format!("file://{}", w.dir.join("key").display());
    // What the box holds before the disaster, and the wrapped keys it
    // pinned at each dataset's first receive.
    let box_ds = |d: &str| format!("{}/{d}", w.root);
    let pinned = |d: &str| zfs(&["get", "-H", "-p", "-s", "local", "-o", "value", KEYWRAP_PROPERTY, &box_ds(d)]);
    let pins: Vec<String> = [&data, &docs, &photos].map(|d| pinned(d)).to_vec();
    assert!(pins.iter().all(|p| p.starts_with("sha256:")), "{pins:?}");
    let box_history = w.snapshots(&w.offsite);

    // An existing dataset is never overwritten.
    let refused = restore_from_friend(&w, &cfg, &["--dataset", &data]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("never overwrites") && text(&refused).contains("--to"), "{}", text(&refused));

    // Disaster: the source tree is gone. (Renamed away rather than
    // destroyed: under the test topology its mounts can stay referenced
    // from a network namespace's copy of the mount table, which makes a
    // destroy "busy". What matters here is that the name is free and
    // nothing of it is used: the restore comes from the box.)
    let mnt = w.mountpoint(&data);
    let lost = format!("{}/lost", w.tank);
    zfs(&["rename", "-u", &data, &lost]);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let mut stale: Vec<&str> = mounts
        .lines()
        .filter(|l| l.starts_with(&format!("{lost} ")) || l.starts_with(&format!("{lost}/")))
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    stale.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in stale {
        ok(&["umount", "-l", m]);
    }
    let restored =
        restore_from_friend(&w, &cfg, &["--dataset", &data, "--keylocation", &key, "--apply-properties", "all"]);
    eprintln!("restore:\n{}", text(&restored));
    assert_eq!(restored.status.code(), Some(0), "{}", text(&restored));
    // The recorded properties are set again, the mountpoint among them,
    // so the unlocked tree is mounted where it was.
    let said = text(&restored);
    assert!(
        said.contains("recorded properties again") && said.contains(&format!("mounted at {}", mnt.display())),
        "{said}"
    );
    assert_eq!(w.prop(&data, "compression"), "lz4");
    assert_eq!(w.prop(&docs, "recordsize"), "65536");
    assert_eq!(w.prop(&docs, "user:note"), "kept");
    assert_eq!(w.prop(&data, "setuid"), "off", "--apply-properties all");
    assert_eq!(w.mountpoint(&data), mnt);
    // restore ran inside the source's network namespace (to reach the
    // box), whose mount table is its own: mount here too, to look.
    for d in [&data, &docs, &photos] {
        let _ = run(&["zfs", "mount", d]);
    }
    assert_eq!(tree_hashes(&mnt), at_s2, "every file as backed up");
    assert_eq!(
        w.snapshots(&w.tank).get(&format!("{data}@{s2}")),
        w.snapshots(&w.offsite).get(&format!("{}/{data}@{s2}", w.root))
    );

    // The next backup just works, with nothing done on the box: the
    // restored keys are wrapped exactly as the box pinned them, so every
    // dataset goes incrementally from the restored snapshot.
    for (d, f) in [(&data, "top2.txt"), (&docs, "after.txt"), (&photos, "dog.jpg")] {
        w.write(d, f, b"life goes on");
    }
    let after = w.backup(&cfg, &["--json"]);
    eprintln!("backup after the restore:\n{}", text(&after));
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
    let sent = json(&after)["targets"][0]["datasets"].as_array().unwrap().clone();
    assert_eq!(sent.len(), 3, "{sent:?}");
    for d in &sent {
        assert_eq!(d["send"]["kind"], "incremental", "no full resend: {d}");
        assert_eq!(d["send"]["from"]["name"], s2.as_str(), "from the restored snapshot: {d}");
    }
    let boxed = w.snapshots(&w.offsite);
    for (name, guid) in &box_history {
        assert_eq!(boxed.get(name), Some(guid), "{name}: the box's history is intact");
    }
    assert_eq!(boxed.len(), box_history.len() + 3, "one new snapshot per dataset");
    assert_eq!([&data, &docs, &photos].map(|d| pinned(d)).to_vec(), pins, "no pin changed");
    let out = text(&restored);
    assert!(!out.contains("zoffsite:keywrap"), "no step on the box after a restore: {out}");
    // What the restored tree looks like (docs/restore.md): each dataset
    // its own encryption root, as the box holds it, with the key file as
    // its keylocation, so one key file unlocks all of them.
    for d in [&data, &docs, &photos] {
        assert_eq!(w.prop(d, "encryptionroot"), *d, "{d}: its own encryption root");
        assert_eq!(w.prop(d, "keylocation"), key, "{d}");
        assert_eq!(w.prop(d, "keystatus"), "available", "{d}");
    }

    // A reboot, as far as the keys go: nothing mounted, no key loaded.
    // The guide's unlock (docs/restore.md) brings it all back.
    let now = tree_hashes(&mnt);
    for d in [&photos, &docs, &data] {
        zfs(&["unmount", d]);
    }
    for d in [&photos, &docs, &data] {
        once_not_busy(&["zfs", "unload-key", d]);
    }
    for d in [&data, &docs, &photos] {
        assert_eq!(w.prop(d, "keystatus"), "unavailable", "{d}");
    }
    ok(&["sh", "-c", "zfs load-key -r \"$0\" && zfs list -H -o name -r \"$0\" | xargs -n1 zfs mount", &data]);
    for d in [&data, &docs, &photos] {
        assert_eq!((w.prop(d, "keystatus"), w.prop(d, "mounted")), ("available".into(), "yes".into()), "{d}");
    }
    assert_eq!(tree_hashes(&mnt), now, "every file readable again");

    // A compromised source re-keys after the restore. `serve` refuses it:
    // the box keeps every snapshot under the key it pinned. First a child
    // made to inherit its parent's key again (`change-key -i`, what a
    // restore used to do: the same key, wrapped anew), then a new key on
    // the top.
    let of = |m: &BTreeMap<String, String>, d: &str| {
        m.iter()
            .filter(|(n, _)| n.starts_with(&format!("{}@", box_ds(d))))
            .map(|(n, g)| (n.clone(), g.clone()))
            .collect::<Vec<_>>()
    };
    let opens = |key: &str, d: &str| run(&["zfs", "load-key", "-n", "-L", key, &box_ds(d)]).status.success();
    let key2 = format!("file://{}", w.dir.join("key2").display());
    std::fs::write(w.dir.join("key2"), random_hex(32)).unwrap();
    let new_key = format!("keylocation={key2}");
    let attacks: [(&str, Vec<&str>); 2] = [
        (&docs, vec!["change-key", "-i", &docs]),
        (&data, vec!["change-key", "-o", "keyformat=hex", "-o", &new_key, &data]),
    ];
    for (i, (victim, cmd)) in attacks.into_iter().enumerate() {
        zfs(&cmd);
        for (d, f) in [(&data, "top"), (&docs, "ransom"), (&photos, "bird")] {
            w.write(d, &format!("{f}{i}.txt"), b"re-keyed");
        }
        let before = w.snapshots(&w.offsite);
        let refused = w.backup(&cfg, &[]);
        let said = text(&refused);
        eprintln!("backup after {cmd:?}:\n{said}");
        assert_eq!(refused.status.code(), Some(3), "{said}");
        assert!(
            said.contains(&format!("the substream for {victim}@")) && said.contains("different encryption key"),
            "{said}"
        );
        let boxed = w.snapshots(&w.offsite);
        assert_eq!(of(&boxed, victim), of(&before, victim), "{victim}: nothing received");
        assert_eq!([&data, &docs, &photos].map(|d| pinned(d)).to_vec(), pins, "no pin changed");
        assert!(opens(&key, victim) && !opens(&key2, victim), "{victim}: the box's copy opens with the owner's key");
        if victim == docs {
            for d in [&data, &photos] {
                assert_eq!(of(&boxed, d).len(), of(&before, d).len() + 1, "{d}, not re-keyed, goes on: {said}");
            }
        }
    }

    // A compromised source adds a child on the box under the old run's
    // name s1 (here straight into the box's pool: through `serve` the
    // delegated user may create and receive a new dataset just the same).
    let evil = format!("{data}/evil");
    w.create_child(&evil);
    w.write(&evil, "payload", b"planted after s1");
    zfs(&["snapshot", &format!("{evil}@{s1}")]);
    ok(&[
        "sh",
        "-c",
        "zfs send -w \"$0\" | zfs receive -u \"$1\"",
        &format!("{evil}@{s1}"),
        &format!("{}/{evil}", w.root),
    ]);

    // An older snapshot, to a new name: its children come along, those
    // its own manifest lists; the planted one is left out, and named.
    // Without --apply-properties all, only data properties are set.
    let old = format!("{}/old", w.tank);
    let restore_s1 = |to: &str, extra: &[&str]| {
        let mut argv = vec!["--dataset", &data, "--snapshot", &s1, "--to", to];
        argv.extend_from_slice(extra);
        restore_from_friend(&w, &cfg, &argv)
    };
    let out = restore_s1(&old, &["--keylocation", &key]);
    eprintln!("restore at s1:\n{}", text(&out));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("left out {evil}: ")) && said.contains("does not list it"), "{said}");
    let restored: Vec<String> = w.datasets(&w.tank).into_iter().filter(|d| d.starts_with(&old)).collect();
    assert_eq!(restored, [old.clone(), format!("{old}/docs"), format!("{old}/photos")], "not the planted child");
    assert_eq!(w.prop(&old, "compression"), "lz4");
    assert_eq!(w.prop(&old, "setuid"), "on", "not a data property: left unset");
    assert!(said.contains("setuid=\"off\"") && said.contains("--apply-properties all"), "{said}");
    // Beside the live data: the mountpoint is never set.
    assert_ne!(w.mountpoint(&old), mnt);
    let old_mnt = w.dir.join("mnt-old");
    zfs(&["set", &format!("mountpoint={}", old_mnt.display()), &old]);
    assert_eq!(tree_hashes(&old_mnt), at_s1, "the older snapshot's content");
    // Without the key, the children cannot be checked: refused up front.
    let old2 = format!("{}/old2", w.tank);
    let out = restore_s1(&old2, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("needs the key") && text(&out).contains("--children-unverified"), "{}", text(&out));
    assert!(!w.datasets(&w.tank).contains(&old2), "nothing received");
    zfs(&["destroy", "-r", &format!("{}/{evil}", w.root)]);

    // The box's disk, moved to this machine: its pool imported under
    // another name as the guide says (nothing mounted, read-only, under an
    // altroot); no network, same result. The box put an unencrypted
    // dataset with a mountpoint of its choosing on it.
    let hostile = w.dir.join("hostile-mountpoint");
    zfs(&[
        "create",
        "-o",
        "encryption=off",
        "-o",
        &format!("mountpoint={}", hostile.display()),
        &format!("{}/evil", w.offsite),
    ]);
    std::fs::write(hostile.join("cron-job"), b"* * * * * root planted").unwrap();
    let vdev = w.vdev(&w.offsite);
    let vdir = vdev.parent().unwrap().to_str().unwrap().to_owned();
    once_not_busy(&["zpool", "export", &w.offsite]);
    let moved = format!("moved{}", &w.offsite["offsite".len()..]);
    let altroot = w.dir.join("box-pool");
    let altroot = altroot.to_str().unwrap();
    zfs_pool(&["import", "-d", &vdir, "-N", "-o", "readonly=on", "-R", altroot, &w.offsite, &moved]);
    let mounted = zfs(&["list", "-H", "-o", "name,mounted", "-r", "-t", "filesystem", &moved]);
    assert!(mounted.lines().all(|l| l.ends_with("\tno")), "nothing of the box's is mounted: {mounted}");
    assert!(!hostile.join("cron-job").exists());
    let disk = format!("{}/fromdisk", w.tank);
    let from_pool = |to: &str| {
        run(&[
            BIN,
            "restore",
            "--from-pool",
            &format!("{moved}/home"),
            "--dataset",
            &data,
            "--snapshot",
            &s2,
            "--to",
            to,
            "--keylocation",
            &key,
        ])
    };
    let out = from_pool(&disk);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Imported the way the guide used to say (everything mounted, at the
    // box's mountpoints): refused before anything is read from it.
    once_not_busy(&["zpool", "export", &moved]);
    zfs_pool(&["import", "-d", &vdir, &w.offsite, &moved]);
    assert!(hostile.join("cron-job").exists(), "control: a plain import mounts what the box chose");
    let disk2 = format!("{}/fromdisk2", w.tank);
    let refused = from_pool(&disk2);
    once_not_busy(&["zpool", "export", &moved]);
    zfs_pool(&["import", "-d", &vdir, &moved, &w.offsite]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let said = text(&refused);
    assert!(said.contains(&format!("mounted: {moved}/evil")), "{said}");
    assert!(said.contains(&format!("zpool import -N -o readonly=on -R /run/zoffsite/box-pool {moved}")), "{said}");
    assert!(!w.datasets(&w.tank).contains(&disk2));
    let disk_mnt = w.dir.join("mnt-disk");
    zfs(&["set", &format!("mountpoint={}", disk_mnt.display()), &disk]);
    assert_eq!(tree_hashes(&disk_mnt), at_s2, "from the disk, as backed up");
}

/// Runs `argv`, again while it fails as "busy" (up to 5 min): a test
/// running beside this one that entered a network namespace (`ip netns
/// exec`) while a dataset was mounted holds a copy of that mount until its
/// command ends (the VM's mounts are private, so an unmount here does not
/// reach the copy), and `zfs unload-key` or `zpool export` waits for it.
fn once_not_busy(argv: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let o = run(argv);
        if o.status.success() {
            return;
        }
        assert!(text(&o).contains("busy") && std::time::Instant::now() < deadline, "{argv:?}: {}", text(&o));
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

fn zfs_pool(args: &[&str]) {
    let mut argv = vec!["zpool"];
    argv.extend_from_slice(args);
    ok(&argv);
}

/// `verify` passes on a healthy box, warns about a missing scrub, and fails
/// once the box's root deletes the snapshot the box last confirmed.
#[test]
#[ignore = "needs root and ZFS (scripts/e2e)"]
fn verify_passes_then_fails_when_the_box_loses_a_snapshot() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    w.create_child(&format!("{data}/docs"));
    let cfg = w.config(&[&data], &[]);
    for i in 0..2 {
        w.write(&data, "f", format!("version {i}").as_bytes());
        let out = w.backup(&cfg, &["--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let v = w.at_home(&[BIN, "verify", "-c", cfg.to_str().unwrap(), "--json"]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    let doc = json(&v);
    let t = &doc["targets"][0];
    assert_eq!(t["datasets"].as_array().unwrap().len(), 2, "{doc}");
    for d in t["datasets"].as_array().unwrap() {
        assert_eq!(d["matched"], 2, "{d}");
        assert!(d["problems"].as_array().unwrap().is_empty(), "{d}");
    }
    assert_eq!(t["pool"]["health"], "ONLINE");
    assert!(t["pool"]["last_scrub"].is_null() && String::from_utf8_lossy(&v.stderr).contains("never finished a scrub"));
    ok(&["zpool", "scrub", "-w", &w.offsite]);
    let v = w.at_home(&[BIN, "verify", "-c", cfg.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    assert!(!text(&v).contains("never finished") && text(&v).contains("last scrub finished 20"), "{}", text(&v));

    // A restore drill: the newest confirmed snapshot, and a random one,
    // come back file for file; no scratch is left behind.
    w.write(&data, "big.bin", &random_hex(300_000).into_bytes());
    let out = w.backup(&cfg, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let last = json(&out)["snapshot"].as_str().unwrap().to_owned();
    let d = w.at_home(&[BIN, "verify", "-c", cfg.to_str().unwrap(), "--drill"]);
    eprintln!("drill:\n{}", text(&d));
    assert_eq!(d.status.code(), Some(0), "{}", text(&d));
    assert!(text(&d).contains(&format!("drill {data}@{last}")) && text(&d).contains(" 0 differences"), "{}", text(&d));
    assert!(text(&d).contains(" 3 files, "), "f, big.bin and the properties manifest: {}", text(&d));
    let d = w.at_home(&[
        BIN,
        "verify",
        "-c",
        cfg.to_str().unwrap(),
        "--drill",
        "--random",
        "--dataset",
        &format!("{data}/docs"),
        "--json",
    ]);
    assert_eq!(d.status.code(), Some(0), "{}", text(&d));
    assert_eq!(json(&d)["diff"]["different"], 0);
    assert!(!w.datasets(&w.tank).iter().any(|n| n.contains("zoffsite-drill-")), "{:?}", w.datasets(&w.tank));

    // Someone with root on the box destroys the newest snapshot.
    zfs(&["destroy", &format!("{}/{data}/docs@{last}", w.root)]);
    let v = w.at_home(&[BIN, "verify", "-c", cfg.to_str().unwrap(), "--target", "friend"]);
    assert_eq!(v.status.code(), Some(3), "{}", text(&v));
    assert!(text(&v).contains(&format!("{data}/docs: @{last} is missing on the box")), "{}", text(&v));
    assert!(text(&v).contains(&format!("{data}: ok")), "{}", text(&v));
}

/// A box that lies about a snapshot cannot fill the source's pool: a drill
/// accepts what the source itself would send for that snapshot plus a
/// margin, and a restore `--max-bytes` (the excess never reaches `zfs
/// receive`, which leaves nothing behind). A drill looks at decrypted data
/// only in a private directory under /run/zoffsite, mounted
/// `ro,nosuid,nodev,noexec` (a `mount` wrapper records what the kernel
/// shows for each mount zoffsite makes).
#[test]
#[ignore = "needs root and ZFS (scripts/e2e)"]
fn a_lying_box_cannot_fill_the_pool_and_drills_mount_privately() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    w.write(&data, "f", b"the real thing");
    let cfg = w.config(&[&data], &[]);
    let out = w.backup(&cfg, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let snap = json(&out)["snapshot"].as_str().unwrap().to_owned();

    // An honest drill, with every mount recorded by a wrapper.
    let real_mount = ok(&["sh", "-c", "command -v mount"]).trim().to_owned();
    let bin = w.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = w.dir.join("mounts.log");
    let wrapper = format!(
        "#!/bin/sh\n{real_mount} \"$@\"; rc=$?\nfor last in \"$@\"; do :; done\nif [ $rc -eq 0 ]; then\n  echo \"options $(findmnt -n -o OPTIONS --mountpoint \"$last\")\" >> {log}\n  echo \"private $(stat -c '%a %u' \"$(dirname \"$last\")\") $(dirname \"$last\")\" >> {log}\n  echo \"rundir $(stat -c '%a %u' \"$(dirname \"$(dirname \"$last\")\")\") $(dirname \"$(dirname \"$last\")\")\" >> {log}\nfi\nexit $rc\n",
        log = log.display()
    );
    std::fs::write(bin.join("mount"), wrapper).unwrap();
    ok(&["chmod", "755", bin.join("mount").to_str().unwrap()]);
    let path = format!("PATH={}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let drill = |extra: &[&str]| {
        let mut argv = vec!["env", &path, BIN, "verify", "-c", cfg.to_str().unwrap(), "--drill"];
        argv.extend_from_slice(extra);
        w.at_home(&argv)
    };
    let d = drill(&[]);
    eprintln!("drill:\n{}", text(&d));
    assert_eq!(d.status.code(), Some(0), "{}", text(&d));
    assert!(text(&d).contains(" 0 differences"), "{}", text(&d));
    let mounts = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("mounts:\n{mounts}");
    let options: Vec<&str> = mounts.lines().filter(|l| l.starts_with("options ")).collect();
    assert_eq!(options.len(), 2, "the received snapshot and the source's: {mounts}");
    for o in options {
        for want in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(o[8..].split(',').any(|x| x == want), "{want} missing: {o}");
        }
    }
    // /run/zoffsite, unless the caller pointed zoffsite elsewhere.
    let rundir = std::env::var("ZOFFSITE_RUN_DIR").unwrap_or_else(|_| "/run/zoffsite".into());
    for l in mounts.lines().filter(|l| l.starts_with("private ")) {
        assert!(l.starts_with(&format!("private 700 0 {rundir}/drill-")), "{l}");
    }
    for l in mounts.lines().filter(|l| l.starts_with("rundir ")) {
        assert_eq!(l, format!("rundir 700 0 {rundir}"));
    }

    // A restore that would take more than --max-bytes (the stream is about
    // 23 KB) is cut, and leaves nothing.
    let r1 = format!("{}/r1", w.tank);
    let cut = restore_from_friend(&w, &cfg, &["--dataset", &data, "--to", &r1, "--max-bytes", "4K"]);
    eprintln!("restore over --max-bytes:\n{}", text(&cut));
    assert_eq!(cut.status.code(), Some(1), "{}", text(&cut));
    assert!(text(&cut).contains("more than 4096 bytes") && text(&cut).contains("--max-bytes"), "{}", text(&cut));
    assert!(!w.datasets(&w.tank).contains(&r1), "{:?}", w.datasets(&w.tank));

    // The box swaps in another, much larger snapshot under the same name
    // (it holds raw datasets; any of them will do for a lie).
    let big = format!("{}/big", w.tank);
    w.create_encrypted(&big);
    ok(&["sh", "-c", &format!("head -c 40000000 /dev/urandom > {}/junk", w.mountpoint(&big).display())]);
    zfs(&["snapshot", &format!("{big}@{snap}")]);
    let on_box = format!("{}/{data}", w.root);
    zfs(&["destroy", "-r", &on_box]);
    ok(&["sh", "-c", &format!("zfs send -w {big}@{snap} | zfs receive -u {on_box}")]);
    let before = w.datasets(&w.tank);
    let d = drill(&[]);
    eprintln!("drill of the larger lie:\n{}", text(&d));
    assert_ne!(d.status.code(), Some(0), "{}", text(&d));
    assert!(
        text(&d).contains("the box sent more than") && text(&d).contains("what the source would send"),
        "{}",
        text(&d)
    );
    assert_eq!(w.datasets(&w.tank), before, "no scratch left, nothing received");
}
