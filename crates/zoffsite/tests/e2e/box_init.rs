//! End-to-end area `box_init`: the box `zoffsite box init` prepares. An
//! append-only box under ZFS delegation (what the kernel refuses the box
//! user, what sshd refuses the source's key, and that `serve` may still
//! record the source's heartbeat), a refused abort of a partial receive
//! under delegation, and the snapshot, filesystem and space limits.
//!
//! Needs root and real OpenZFS: `scripts/e2e --area box_init` (see
//! `harness.rs` and `e2e/README.md`).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::*;

/// The source's ssh to the box as `user`, with its key and pinned host key:
/// `ssh OPTS... USER@BOX [COMMAND]`.
fn source_ssh(w: &World, user: &str, extra: &[&str], command: Option<&str>) -> Output {
    let target = format!("{user}@{}", w.env("BOX_ADDR"));
    let kh = format!("UserKnownHostsFile={}", w.env("KNOWN_HOSTS"));
    let mut argv = vec![
        "timeout",
        "60",
        "ssh",
        "-F",
        "none",
        "-i",
        w.env("IDENTITY"),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        &kh,
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=20",
    ];
    argv.extend_from_slice(extra);
    argv.push(&target);
    argv.extend(command);
    w.at_home(&argv)
}

/// `box init` prepares the box idempotently (dry run changes nothing, a
/// second run changes nothing); `serve` then runs as the unprivileged user
/// with exactly create,mount,receive:append,send,userprop, and full and
/// incremental backups work. As that user the kernel refuses destroy,
/// rollback, `receive -F`, release (and snapshot, rename, mountpoint); with
/// the source's key no shell, pty, forwarding or sftp. The box's names and
/// GUIDs are unchanged by all of that.
#[test]
#[ignore = "needs root and real OpenZFS: run `make e2e`"]
fn box_init_makes_an_append_only_box() {
    let w = World::new();
    let (user, [dry, first, second]) = box_init(&w);
    let home2 = user.root.clone();
    for o in [&dry, &first, &second] {
        eprintln!("box init:\n{}", text(o));
    }
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    let dry_out = String::from_utf8_lossy(&dry.stdout);
    assert!(dry_out.contains("to do: create user") && dry_out.contains("dry run"), "{dry_out}");
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert!(String::from_utf8_lossy(&first.stdout).contains("the box is ready"), "{}", text(&first));
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let again = String::from_utf8_lossy(&second.stdout);
    assert!(again.contains("nothing to change") && !again.contains("to do:"), "{again}");

    // Exactly the five permissions, on the root only; never mounted.
    let allow = zfs(&["allow", &home2]);
    let lines: Vec<&str> = allow.lines().collect();
    assert_eq!(lines.len(), 3, "{allow}");
    assert!(lines[0].starts_with(&format!("---- Permissions on {home2} ")), "{allow}");
    assert_eq!(lines[1], "Local+Descendent permissions:");
    assert_eq!(lines[2], format!("\tuser {} create,mount,receive:append,send,userprop", user.name));
    assert_eq!(w.prop(&home2, "mountpoint"), "none");
    assert_eq!(w.prop(&home2, "canmount"), "off");
    // One line for the key: the forced command, from the source only.
    let ak_path = w.dir.join("net/authorized_keys");
    let ak = std::fs::read_to_string(&ak_path).unwrap();
    let exe = Path::new(BIN).canonicalize().unwrap();
    let pubkey = std::fs::read_to_string(w.dir.join("net/id_ed25519.pub")).unwrap();
    assert_eq!(
        ak,
        format!("restrict,from=\"10.77.0.1\",command=\"{} serve --root {home2}\" {}\n", exe.display(), pubkey.trim())
    );
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&ak_path).unwrap();
        assert_eq!((m.uid().to_string(), m.mode() & 0o777), (user.uid.clone(), 0o600));
    }

    // Full, then incremental, with serve running as the box user.
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    w.write(&data, "a", b"first");
    let cfg = w.config(&[&data], &[]);
    let text_cfg =
        std::fs::read_to_string(&cfg).unwrap().replace("user = \"root\"", &format!("user = \"{}\"", user.name));
    std::fs::write(&cfg, text_cfg).unwrap();
    let out = w.backup(&cfg, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s1 = format!("{data}@{}", json(&out)["snapshot"].as_str().unwrap());
    w.write(&data, "b", b"second");
    let out = w.backup(&cfg, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = json(&out);
    assert_eq!(r["targets"][0]["datasets"][0]["send"]["kind"], "incremental", "{r}");
    let s2 = format!("{data}@{}", r["snapshot"].as_str().unwrap());
    let src = w.snapshots(&w.tank);
    let boxed = w.snapshots(&w.offsite);
    for s in [&s1, &s2] {
        assert_eq!(boxed.get(&format!("{home2}/{s}")), src.get(s), "{s}");
    }
    let log = std::fs::read_to_string(w.dir.join("net/sshd.log")).unwrap();
    assert!(log.contains(&format!("Accepted publickey for {}", user.name)), "{log}");
    let box_ds = format!("{home2}/{data}");
    assert_eq!(w.prop(&box_ds, "mounted"), "no");
    assert!(w.prop(&format!("{home2}/{s2}"), "zoffsite:received").parse::<u64>().is_ok());

    // A run that finds nothing changed sends nothing but ends with a
    // heartbeat, which the delegated `serve` may record (`userprop` covers
    // the root and what is below it).
    let out = w.backup(&cfg, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = json(&out);
    assert_eq!((r["snapshot"].is_null(), r["targets"][0]["heartbeat"].as_u64()), (true, Some(1)), "{r}");
    let local =
        |name: &str, prop: &str| zfs(&["get", "-H", "-p", "-s", "local", "-o", "value", prop, name]).trim().to_owned();
    let beat: i64 = local(&box_ds, "zoffsite:heartbeat").parse().unwrap();
    assert!((unix_now() - beat).abs() < 600, "{beat}");
    assert_eq!(local(&home2, "zoffsite:heartbeat"), beat.to_string(), "the root's own");
    // The source records the run on the first confirmed snapshot every
    // run (status's last backup run), on the others when due.
    assert!(local(&s2, "zoffsite:confirmed:friend").parse::<i64>().is_ok(), "the source's record");
    // `box check`: the data arrived 3 h ago (its stamp set back, as root),
    // the source checked in just now. With max_age 1h the heartbeat
    // excuses it within the grace; with heartbeats off it is stale.
    let rcv = format!("{home2}/{s2}");
    zfs(&["set", &format!("zoffsite:received={}", beat - 3 * 3600), &rcv]);
    let soon = rfc3339(beat + 600);
    for (grace, code, excused) in [("7d", 0, true), ("0s", 6, false)] {
        let bcfg = w.dir.join(format!("box-{grace}.toml"));
        let journal = w.dir.join("state/hb-journal");
        let body = format!(
            "root = \"{home2}\"\njournal = \"{}\"\nmax_age = \"1h\"\nheartbeat_grace = \"{grace}\"\n",
            journal.display()
        );
        std::fs::write(&bcfg, body).unwrap();
        let out = box_cmd("check", &bcfg, &["--now", &soon, "--json"]);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
        let d = json(&out);
        assert_eq!((d["heard"].as_i64(), d["last_received"].as_i64()), (Some(beat), Some(beat - 3 * 3600)), "{d}");
        assert_eq!(d["datasets"][0]["heartbeat"], beat, "{d}");
        assert_eq!(d["datasets"][0]["excused"], excused, "{d}");
    }

    let before = (w.datasets(&w.offsite), w.snapshots(&w.offsite));

    // As the box user directly: the kernel refuses everything that is not
    // appending.
    let b1 = format!("{home2}/{s1}");
    let b2 = format!("{home2}/{s2}");
    zfs(&["hold", "owner", &b1]);
    let refused = |argv: &[&str]| {
        let out = user.run(argv);
        assert!(!out.status.success(), "{argv:?} succeeded as {}: {}", user.name, text(&out));
    };
    refused(&["zfs", "destroy", &b1]);
    refused(&["zfs", "destroy", "-r", &box_ds]);
    refused(&["zfs", "destroy", "-r", &home2]);
    refused(&["zfs", "rollback", "-r", &b1]);
    refused(&["zfs", "release", "owner", &b1]);
    refused(&["zfs", "snapshot", &format!("{box_ds}@evil")]);
    refused(&["zfs", "rename", &box_ds, &format!("{home2}/renamed")]);
    refused(&["zfs", "set", "mountpoint=/mnt", &box_ds]);
    refused(&["zfs", "set", "canmount=on", &home2]);
    // `receive -F` of a stream that would roll back (and so destroy s2).
    ok(&["zfs", "snapshot", &format!("{data}@s3")]);
    let forced = Command::new("sh")
        .args([
            "-c",
            "zfs send -w -i \"$1\" \"$2\" | setpriv --reuid \"$3\" --regid \"$4\" --clear-groups -- zfs receive -F -u \"$5\"",
            "sh",
            &s1,
            &format!("{data}@s3"),
            &user.uid,
            &user.gid,
            &box_ds,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!forced.status.success(), "receive -F as the box user: {}", text(&forced));
    zfs(&["release", "owner", &b1]);
    assert_eq!((w.datasets(&w.offsite), w.snapshots(&w.offsite)), before, "the box changed");
    assert!(w.snapshots(&w.offsite).contains_key(&b2));

    // With the source's key: no shell command, pty, forwarding or sftp.
    let marker = w.dir.join("pwned");
    let evil = format!("touch {}; zfs destroy -r {}", marker.display(), w.offsite);
    let out = source_ssh(&w, &user.name, &[], Some(&evil));
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zoffsite protocol"), "{}", text(&out));
    let out = source_ssh(&w, &user.name, &["-tt"], Some(&evil));
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PTY allocation request failed"), "{}", text(&out));
    // -W is -L's channel (direct-tcpip) on stdio: to the box's own sshd.
    let out = source_ssh(&w, &user.name, &["-W", &format!("{}:22", w.env("BOX_ADDR"))], None);
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SSH-2.0"), "{}", text(&out));
    let out = source_ssh(
        &w,
        &user.name,
        &["-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:2299:127.0.0.1:22"],
        None,
    );
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("forwarding failed"), "{}", text(&out));
    // -L: the local listener comes up, but the box refuses the channel, so
    // nothing of the box's sshd (its banner) comes through it.
    let mut fwd = Command::new("ip")
        .args(["netns", "exec", w.env("HOME_NS"), "ssh", "-F", "none", "-i", w.env("IDENTITY")])
        .args(["-o", "IdentitiesOnly=yes", "-o", &format!("UserKnownHostsFile={}", w.env("KNOWN_HOSTS"))])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-N"])
        .args(["-L", &format!("127.0.0.1:2298:{}:22", w.env("BOX_ADDR"))])
        .arg(format!("{}@{}", user.name, w.env("BOX_ADDR")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let probe = "for i in $(seq 50); do exec 3<>/dev/tcp/127.0.0.1/2298 && break; sleep 0.2; done 2>/dev/null; timeout 5 head -c 7 <&3";
    let through = w.at_home(&["timeout", "30", "bash", "-c", probe]);
    let _ = fwd.kill();
    let fwd = fwd.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&through.stdout).contains("SSH-"), "-L reached the box: {}", text(&through));
    assert!(String::from_utf8_lossy(&fwd.stderr).contains("prohibited"), "{}", String::from_utf8_lossy(&fwd.stderr));
    let target = format!("{}@{}", user.name, w.env("BOX_ADDR"));
    let out = w.at_home(&[
        "timeout",
        "60",
        "sftp",
        "-F",
        "none",
        "-i",
        w.env("IDENTITY"),
        "-o",
        &format!("UserKnownHostsFile={}", w.env("KNOWN_HOSTS")),
        "-o",
        "StrictHostKeyChecking=yes",
        "-b",
        "/dev/null",
        &target,
    ]);
    assert_ne!(out.status.code(), Some(0), "sftp: {}", text(&out));
    assert!(!marker.exists(), "a requested command ran on the box");
    assert_eq!((w.datasets(&w.offsite), w.snapshots(&w.offsite)), before, "the box changed");
}

/// Under delegation the box user may not `zfs receive -A` (the kernel
/// requires destroying `%recv`): when the source asks to discard a partial
/// receive it cannot continue, the box refuses, the source says so and the
/// partial state stays for the box's owner.
#[test]
#[ignore = "needs root and real OpenZFS: run `make e2e`"]
fn abort_under_delegation_is_refused_clearly() {
    let w = World::new();
    let (user, [_, first, _]) = box_init(&w);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    w.write(&data, "blob", &random_hex(100_000).into_bytes());
    ok(&["zfs", "snapshot", &format!("{data}@gone")]);
    // A partial receive made by the box user itself (as an interrupted
    // zoffsite transfer leaves), of a snapshot the source then destroys.
    let parent = format!("{}/{}", user.root, w.tank);
    let out = user.run(&["zfs", "create", "-u", &parent]);
    assert!(out.status.success(), "{}", text(&out));
    let box_ds = format!("{}/{data}", user.root);
    let planted = Command::new("sh")
        .args([
            "-c",
            "zfs send -w \"$1\" | head -c 20000 | setpriv --reuid \"$2\" --regid \"$3\" --clear-groups -- zfs receive -s -u \"$4\"",
            "sh",
            &format!("{data}@gone"),
            &user.uid,
            &user.gid,
            &box_ds,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!planted.status.success());
    assert_ne!(w.prop(&box_ds, "receive_resume_token"), "-", "partial state planted: {}", text(&planted));
    let out = user.run(&["zfs", "receive", "-A", &box_ds]);
    assert!(!out.status.success(), "receive -A as the box user: {}", text(&out));
    zfs(&["destroy", &format!("{data}@gone")]);
    let cfg = w.config(&[&data], &[]);
    let text_cfg =
        std::fs::read_to_string(&cfg).unwrap().replace("user = \"root\"", &format!("user = \"{}\"", user.name));
    std::fs::write(&cfg, text_cfg).unwrap();
    let out = w.backup(&cfg, &["--json"]);
    eprintln!("backup with an abort refused under delegation:\n{}", text(&out));
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    // The source reports the kernel's refusal with the fix (exit 3, the
    // dataset failed), on every run until the box's owner discards the
    // partial receive as root.
    assert!(err.contains("the box refused") && err.contains("permission denied"), "{}", text(&out));
    assert!(err.contains(&format!("as root on the box: zfs receive -A {box_ds}")), "{}", text(&out));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_ne!(w.prop(&box_ds, "receive_resume_token"), "-", "the partial state stays");
}

/// `box init --snapshot-limit N`: the kernel caps how many snapshots the
/// delegated user can add under the root, so a flooding source runs into a
/// wall (and the source says so) instead of filling the pool's metadata.
#[test]
#[ignore = "needs root and ZFS (scripts/e2e)"]
fn snapshot_limit_caps_what_a_source_can_add() {
    let w = World::new();
    let (user, [_, first, _]) = box_init(&w);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let limited = box_init_again(&w, &user, &["--snapshot-limit", "2"]);
    assert_eq!(limited.status.code(), Some(0), "{}", text(&limited));
    assert!(text(&limited).contains("snapshot_limit=2"), "{}", text(&limited));
    assert_eq!(w.prop(&user.root, "snapshot_limit"), "2");
    // The other limits: set by default on the first run, kept by this one.
    assert_eq!(w.prop(&user.root, "filesystem_limit"), "1000");
    assert!(text(&limited).contains("filesystem_limit=1000") && text(&limited).contains("kept"), "{}", text(&limited));
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    let cfg = w.config(&[&data], &[]);
    let text_cfg =
        std::fs::read_to_string(&cfg).unwrap().replace("user = \"root\"", &format!("user = \"{}\"", user.name));
    std::fs::write(&cfg, text_cfg).unwrap();
    for i in 0..2 {
        w.write(&data, "f", format!("version {i}").as_bytes());
        let out = w.backup(&cfg, &[]);
        assert_eq!(out.status.code(), Some(0), "backup {i}: {}", text(&out));
    }
    w.write(&data, "f", b"one too many");
    let over = w.backup(&cfg, &[]);
    eprintln!("over the limit:\n{}", text(&over));
    assert_eq!(over.status.code(), Some(3), "{}", text(&over));
    assert!(text(&over).contains("snapshot_limit"), "names the limit: {}", text(&over));
    let under_root = w.snapshots(&w.offsite).keys().filter(|s| s.starts_with(&user.root)).count();
    assert_eq!(under_root, 2, "the kernel kept the box at its limit");
}

/// `box init` caps the datasets under the root (`filesystem_limit`, by
/// default, and as asked) and the space (`--quota`): the kernel refuses the
/// delegated user a dataset over the limit, whatever `serve` would do.
#[test]
#[ignore = "needs root and ZFS (scripts/e2e)"]
fn filesystem_limit_caps_the_datasets_a_source_can_make() {
    let w = World::new();
    let (user, [_, first, second]) = box_init(&w);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(w.prop(&user.root, "filesystem_limit"), "1000", "{}", text(&first));
    assert_eq!(w.prop(&user.root, "snapshot_limit"), "100000", "{}", text(&first));
    assert!(String::from_utf8_lossy(&second.stdout).contains("nothing to change"), "{}", text(&second));
    let limited = box_init_again(&w, &user, &["--filesystem-limit", "3", "--quota", "64M"]);
    eprintln!("box init with limits:\n{}", text(&limited));
    assert_eq!(limited.status.code(), Some(0), "{}", text(&limited));
    assert_eq!(w.prop(&user.root, "filesystem_limit"), "3");
    assert_eq!(w.prop(&user.root, "quota"), (64u64 << 20).to_string());
    // As the delegated user (what `serve` runs as): three datasets, nested
    // like placeholders, then no more.
    let a = format!("{}/a", user.root);
    for ds in [a.clone(), format!("{a}/b"), format!("{a}/b/c")] {
        let o = user.run(&["zfs", "create", "-u", &ds]);
        assert!(o.status.success(), "{ds}: {}", text(&o));
    }
    let over = format!("{a}/b/c/d");
    let o = user.run(&["zfs", "create", "-u", &over]);
    eprintln!("over the limit:\n{}", text(&o));
    assert!(!o.status.success(), "the kernel refuses a fourth: {}", text(&o));
    assert!(!w.datasets(&w.offsite).contains(&over));
    let beside = format!("{}/e", user.root);
    assert!(!user.run(&["zfs", "create", "-u", &beside]).status.success(), "anywhere under the root");
    // Lifted again with `none`.
    let lifted = box_init_again(&w, &user, &["--filesystem-limit", "none", "--quota", "none"]);
    assert_eq!(lifted.status.code(), Some(0), "{}", text(&lifted));
    assert_eq!(w.prop(&user.root, "filesystem_limit"), "none");
    assert_eq!(w.prop(&user.root, "quota"), "0");
    assert!(user.run(&["zfs", "create", "-u", &over]).status.success());
}
