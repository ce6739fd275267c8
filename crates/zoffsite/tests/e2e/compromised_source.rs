//! End-to-end area `compromised_source`: the box against a source an
//! attacker controls. The forced command runs nothing but `serve`; `serve`
//! refuses re-keying the history (a key change, a duplicate
//! `crypt_keydata`), replays of what the box holds, and every request that is
//! not appending, with `serve` as the unprivileged box user.
//!
//! Needs root and real OpenZFS: `scripts/e2e --area compromised_source`
//! (see `harness.rs` and `e2e/README.md`).

use std::path::Path;
use std::process::{Command, Stdio};

use zoffsite_core::boxside::KEYWRAP_PROPERTY;

use crate::harness::*;

/// Whatever the client asks to run, the forced command only speaks the
/// protocol: destroy and touch run nowhere.
#[test]
#[ignore = "needs root and real OpenZFS: run `make e2e`"]
fn forced_command_ignores_requested_commands() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    let cfg = w.config(&[&data], &[]);
    assert_eq!(w.backup(&cfg, &[]).status.code(), Some(0));
    let before = (w.datasets(&w.offsite), w.snapshots(&w.offsite));
    let marker = w.dir.join("pwned");
    for evil in [
        format!("zfs destroy -r {}; touch {}", w.offsite, marker.display()),
        format!("sh -c 'touch {}'", marker.display()),
        format!("zfs receive -F {}/home/x", w.offsite),
    ] {
        let out = w.at_home(&[
            "ssh",
            "-F",
            "none",
            "-i",
            w.env("IDENTITY"),
            "-o",
            &format!("UserKnownHostsFile={}", w.env("KNOWN_HOSTS")),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            &format!("root@{}", w.env("BOX_ADDR")),
            &evil,
        ]);
        assert_ne!(out.status.code(), Some(0), "{evil}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("zoffsite protocol"), "serve answered, not a shell: {err}");
    }
    assert!(!marker.exists(), "a requested command ran on the box");
    assert_eq!((w.datasets(&w.offsite), w.snapshots(&w.offsite)), before, "the box changed");
}

/// The re-keying attack of the threat model: `zfs change-key` on the
/// source, then a raw incremental, would re-wrap every snapshot the box
/// holds with the new key. `serve` refuses it; the box owner accepts a real
/// key change by clearing the pinned fingerprint.
#[test]
#[ignore = "needs root and ZFS (scripts/e2e)"]
fn a_source_key_change_cannot_re_key_the_history() {
    let w = World::new();
    let data = format!("{}/data", w.tank);
    let docs = format!("{data}/docs");
    w.create_encrypted(&data);
    w.create_child(&docs);
    w.write(&docs, "a.txt", b"one");
    let cfg = w.config(&[&data], &[]);
    let first = w.backup(&cfg, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let (box_data, box_docs) = (format!("{}/{data}", w.root), format!("{}/{docs}", w.root));
    let pinned = |ds: &str| zfs(&["get", "-H", "-p", "-s", "local", "-o", "value", KEYWRAP_PROPERTY, ds]);
    let pins: Vec<String> = [&box_data, &box_docs].map(|d| pinned(d)).to_vec();
    for (ds, pin) in [&box_data, &box_docs].iter().zip(&pins) {
        assert!(pin.starts_with("sha256:"), "{ds} pinned locally after its first receive: {pin:?}");
    }
    assert_ne!(pins[0], pins[1], "each dataset has a master key of its own");
    w.write(&docs, "b.txt", b"two");
    let same_key = w.backup(&cfg, &[]);
    assert_eq!(same_key.status.code(), Some(0), "the same key passes: {}", text(&same_key));
    assert_eq!([&box_data, &box_docs].map(|d| pinned(d)).to_vec(), pins, "a pin is never rewritten");

    // Someone with root on the source changes the key and backs up.
    let old_key = w.dir.join("key");
    let new_key = w.dir.join("key2");
    std::fs::write(&new_key, random_hex(32)).unwrap();
    zfs(&["change-key", "-o", "keyformat=hex", "-o", &format!("keylocation=file://{}", new_key.display()), &data]);
    w.write(&docs, "c.txt", b"three");
    let before = w.snapshots(&w.offsite);
    let refused = w.backup(&cfg, &[]);
    let out = text(&refused);
    assert_ne!(refused.status.code(), Some(0), "{out}");
    assert!(out.contains("different encryption key") && out.contains("zfs change-key"), "{out}");
    assert!(out.contains(&format!("zfs inherit zoffsite:keywrap {box_data} (that dataset only")), "{out}");
    assert_eq!(w.snapshots(&w.offsite), before, "nothing received");
    // The box's copy still opens with the owner's key, and not the new one
    // (`load-key -n` checks a key without loading it).
    let try_key = |key: &Path, ds: &str| {
        run(&["zfs", "load-key", "-n", "-L", &format!("file://{}", key.display()), ds]).status.success()
    };
    assert!(try_key(&old_key, &box_data) && try_key(&old_key, &box_docs));
    assert!(!try_key(&new_key, &box_data));

    // The owner changed the key on purpose: the box owner accepts it.
    zfs(&["inherit", "-r", KEYWRAP_PROPERTY, &box_data]);
    let accepted = w.backup(&cfg, &[]);
    assert_eq!(accepted.status.code(), Some(0), "{}", text(&accepted));
    assert!(try_key(&new_key, &box_data) && try_key(&new_key, &box_docs), "re-wrapped with the new key");
    let repinned = [&box_data, &box_docs].map(|d| pinned(d)).to_vec();
    assert!(repinned.iter().all(|p| p.starts_with("sha256:")) && repinned != pins, "{repinned:?}");
    let src = w.snapshots(&w.tank);
    let boxed = w.snapshots(&w.offsite);
    for (name, guid) in src.iter().filter(|(n, _)| n.starts_with(&data)) {
        assert_eq!(boxed.get(&format!("{}/{name}", w.root)), Some(guid), "{name} on the box");
    }
}

/// A source with the key replays history the box already holds: `zfs send
/// -w -I @first @last` for the box's newest snapshot. `zfs receive` alone
/// would skip every substream and exit 0 (OpenZFS 2.3.2, `recv_skip`), and
/// `serve` used to confirm it and stamp years of history as received now.
/// Now it is refused before zfs receive sees a byte and no stamp moves; and
/// should stamps be rewritten all the same (root on the box, a bug), box
/// retention and box check age snapshots by the root-owned txg journal.
#[test]
#[ignore = "needs root and ZFS (scripts/e2e)"]
fn replayed_history_is_refused_and_restamps_cannot_age_it() {
    use zoffsite_core::names::{Dataset, Guid, SnapName};
    use zoffsite_core::protocol::{self, ErrorCode, Request, Response};
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    let cfg = w.config(&[&data], &[]);
    let mut names = Vec::new();
    for i in 0..3 {
        w.write(&data, &format!("f{i}"), format!("version {i}").as_bytes());
        let out = w.backup(&cfg, &["--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        names.push(json(&out)["snapshot"].as_str().unwrap().to_owned());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let box_ds = format!("{}/{data}", w.root);
    let stamps = || {
        zfs(&[
            "get",
            "-H",
            "-p",
            "-r",
            "-t",
            "snapshot",
            "-s",
            "local",
            "-o",
            "name,value",
            "zoffsite:received",
            &box_ds,
        ])
    };
    let (box_before, stamps_before) = (w.snapshots(&w.offsite), stamps());
    assert_eq!(stamps_before.lines().count(), 3, "{stamps_before}");
    let guid = |n: &str| {
        zfs(&["get", "-H", "-p", "-o", "value", "guid", &format!("{data}@{n}")]).trim().parse::<u64>().unwrap()
    };
    let replay = Command::new("zfs")
        .args(["send", "-w", "-I", &format!("@{}", names[0]), &format!("{data}@{}", names[2])])
        .output()
        .unwrap();
    assert!(replay.status.success());

    // What zfs receive itself does with it: nothing, and exit 0.
    let mut rcv = Command::new("zfs").args(["receive", "-u", "-s", &box_ds]).stdin(Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write;
        rcv.stdin.take().unwrap().write_all(&replay.stdout).unwrap();
    }
    assert!(rcv.wait().unwrap().success(), "OpenZFS skips snapshots it holds and reports success");
    assert_eq!(w.snapshots(&w.offsite), box_before);

    // Through serve: refused, nothing received, no stamp moved.
    let mut input = Vec::new();
    protocol::write_msg(
        &mut input,
        &Request::Hello { protocol: "zoffsite".into(), version: 1, client: "replay".into() },
    )
    .unwrap();
    protocol::write_msg(
        &mut input,
        &Request::Receive {
            dataset: Dataset::new(&data).unwrap(),
            snapshot: SnapName::new(&names[2]).unwrap(),
            guid: Guid::new(guid(&names[2])).unwrap(),
            from: Some(Guid::new(guid(&names[0])).unwrap()),
            resume: false,
        },
    )
    .unwrap();
    for chunk in replay.stdout.chunks(64 << 10) {
        protocol::write_data(&mut input, chunk).unwrap();
    }
    protocol::write_end(&mut input).unwrap();
    protocol::write_msg(&mut input, &Request::Bye).unwrap();
    let msgs = raw_session(&w, "root", input);
    match &msgs[..] {
        [Response::Hello { .. }, Response::Error { code: ErrorCode::Refused, message }] => {
            assert!(message.contains("already holds") && message.contains(&names[1]), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.snapshots(&w.offsite), box_before);
    assert_eq!(stamps(), stamps_before, "no stamp moved");

    // Stamps rewritten anyway (as root on the box): every snapshot now says
    // "received just now". The journal's runs say otherwise: written here
    // as box prune writes it, for runs 30, 20 and 10 days ago, each just
    // after one snapshot arrived.
    let now = unix_now();
    let txg =
        |n: &str| zfs(&["get", "-H", "-p", "-o", "value", "createtxg", &format!("{box_ds}@{n}")]).trim().to_owned();
    let pool_guid = run(&["zpool", "get", "-H", "-p", "-o", "value", "guid", &w.offsite]);
    let mut journal = format!(
        "zoffsite-txg-journal 1\npool {}\nroot {}\n",
        String::from_utf8_lossy(&pool_guid.stdout).trim(),
        w.root
    );
    for (i, n) in names.iter().enumerate() {
        let t = now - (30 - 10 * i64::try_from(i).unwrap()) * 86400;
        journal.push_str(&format!("{} {} {}\n", txg(n), t - 1, t));
    }
    let state = w.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("txg-journal"), &journal).unwrap();
    for n in &names {
        zfs(&["set", &format!("zoffsite:received={now}"), &format!("{box_ds}@{n}")]);
    }
    // Box retention: one a day; by the stamps all three are today's, and
    // two would go. By the journal each has its own day: all stay.
    let bcfg = box_config(&w, "min_age = \"0s\"\nmax_age = \"2d\"\n[keep]\ndaily = 7\n");
    let out = box_cmd("prune", &bcfg, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc = json(&out);
    let aged: Vec<i64> =
        doc["decisions"].as_array().unwrap().iter().map(|d| d["aged_from"].as_i64().unwrap()).collect();
    assert_eq!(aged, [now - 30 * 86400, now - 20 * 86400, now - 10 * 86400], "{doc}");
    assert_eq!(box_snap_names(&w, &box_ds).len(), 3, "history kept: {doc}");
    // The run added its own entry: the box's newest txg, now.
    let written = std::fs::read_to_string(state.join("txg-journal")).unwrap();
    let last = written.lines().last().unwrap().to_owned();
    assert!(written.starts_with(&journal) && last.starts_with(&format!("{} ", txg(&names[2]))), "{written}");
    // Box check: nothing new for 10 days, whatever the stamps say.
    let out = box_cmd("check", &bcfg, &["--json"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["findings"][0]["kind"], "stale", "{doc}");
    assert_eq!(doc["findings"][0]["received"], now - 10 * 86400, "{doc}");

    // A stamp set on the dataset is inherited by every snapshot without one
    // of its own (`zfs list -o` shows it as theirs): it is not theirs.
    let newest = format!("{box_ds}@{}", names[2]);
    zfs(&["inherit", "zoffsite:received", &newest]);
    zfs(&["set", &format!("zoffsite:received={now}"), &box_ds]);
    let listed = zfs(&["list", "-H", "-p", "-o", "zoffsite:received", &newest]);
    assert_eq!(listed.trim(), now.to_string(), "ZFS shows the dataset's value on the snapshot");
    let doc = json(&box_cmd("prune", &bcfg, &["-n", "--json"]));
    let d = &doc["decisions"][2];
    assert_eq!(d["snapshot"], newest.as_str(), "{doc}");
    assert_eq!(d["received"], serde_json::Value::Null, "only a snapshot's own stamp counts: {doc}");
    assert_eq!(d["aged_from"], now - 10 * 86400, "aged by the journal: {doc}");
}

/// The duplicate-key attack: after `zfs change-key` on the source, a raw
/// incremental whose BEGIN payload carries crypt_keydata twice, the pinned
/// (old) one first and the new one after it, sent through a raw protocol
/// session. libnvpair's lookup in the kernel returns the last pair of a
/// name, so `zfs receive` would install the new key; `serve` must refuse
/// the stream because the name appears twice. The positive control feeds
/// the same crafted bytes to `zfs receive` directly, as root, bypassing
/// `serve`: OpenZFS 2.3.2 takes it and re-wraps the box's copy, so the
/// attack is real and the refusal is what stops it.
#[test]
#[ignore = "needs root and ZFS (scripts/e2e)"]
fn a_duplicate_crypt_keydata_cannot_re_key_the_history() {
    use zoffsite_core::names::{Dataset, Guid, SnapName};
    use zoffsite_core::nvlist::{self, KeyWrap};
    use zoffsite_core::protocol::{self, Request, Response};
    use zoffsite_core::records::craft;
    let w = World::new();
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    w.write(&data, "a.txt", b"one");
    let cfg = w.config(&[&data], &[]);
    let first = w.backup(&cfg, &["--json"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let base = format!("{data}@{}", json(&first)["snapshot"].as_str().unwrap());
    let box_data = format!("{}/{data}", w.root);
    let pin = zfs(&["get", "-H", "-p", "-s", "local", "-o", "value", KEYWRAP_PROPERTY, &box_data]).trim().to_owned();
    assert!(pin.starts_with("sha256:"), "pinned at the first receive: {pin:?}");
    let send = |args: &[&str]| {
        let out = Command::new("zfs").args(["send", "-w"]).args(args).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "zfs send {args:?}: {}", text(&out));
        out.stdout
    };
    // The pinned key data, as any stream of the dataset carries it before
    // the key change.
    let old_payload = craft::begin_payloads(&send(&[&base])).remove(0);
    assert_eq!(KeyWrap::from_begin_payload(&old_payload).unwrap().to_string(), pin);

    // Root on the source changes the key and makes the next incremental.
    let old_key = w.dir.join("key");
    let new_key = w.dir.join("key2");
    std::fs::write(&new_key, random_hex(32)).unwrap();
    zfs(&["change-key", "-o", "keyformat=hex", "-o", &format!("keylocation=file://{}", new_key.display()), &data]);
    w.write(&data, "b.txt", b"two");
    let next = format!("{data}@evil");
    zfs(&["snapshot", &next]);
    let incr = send(&["-i", &base, &next]);
    let crafted = craft::with_begin_payloads(&incr, |_, p| {
        let mut top = nvlist::unpack(p).unwrap();
        let old = nvlist::unpack(&old_payload).unwrap();
        let old_keys = old.pairs.into_iter().find(|(n, _)| n == "crypt_keydata").unwrap();
        let at = top.pairs.iter().position(|(n, _)| n == "crypt_keydata").unwrap();
        top.pairs.insert(at, old_keys);
        nvlist::pack(&top, false)
    });
    assert_ne!(crafted, incr);

    let guid =
        |s: &str| Guid::new(zfs(&["get", "-H", "-p", "-o", "value", "guid", s]).trim().parse().unwrap()).unwrap();
    let mut input = Vec::new();
    let hello = Request::Hello { protocol: "zoffsite".into(), version: 1, client: "e2e".into() };
    protocol::write_msg(&mut input, &hello).unwrap();
    let req = Request::Receive {
        dataset: Dataset::new(&data).unwrap(),
        snapshot: SnapName::new("evil").unwrap(),
        guid: guid(&next),
        from: Some(guid(&base)),
        resume: false,
    };
    protocol::write_msg(&mut input, &req).unwrap();
    protocol::write_data(&mut input, &crafted).unwrap();
    protocol::write_end(&mut input).unwrap();
    let before = w.snapshots(&w.offsite);
    let msgs = raw_session(&w, "root", input);
    eprintln!("{msgs:#?}");
    match &msgs[..] {
        [Response::Hello { .. }, Response::Error { message, .. }] => {
            assert!(message.contains("crypt_keydata") && message.contains("twice"), "{message}");
            assert!(message.contains(&box_data) || message.contains(&data), "{message}");
        }
        other => panic!("expected a refusal: {other:?}"),
    }
    assert_eq!(w.snapshots(&w.offsite), before, "nothing received");
    assert_eq!(w.prop(&box_data, "receive_resume_token"), "-", "no partial receive left");
    let try_key = |key: &Path| {
        run(&["zfs", "load-key", "-n", "-L", &format!("file://{}", key.display()), &box_data]).status.success()
    };
    assert!(try_key(&old_key), "the owner's key still opens the box's copy");
    assert!(!try_key(&new_key));

    // Positive control, bypassing serve: real ZFS receives the crafted
    // stream (its checksums were recomputed) and installs the LAST key.
    let mut child = Command::new("zfs")
        .args(["receive", "-u", &box_data])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&crafted).unwrap();
    }
    let direct = child.wait_with_output().unwrap();
    eprintln!("zfs receive of the crafted stream, bypassing serve: {}", text(&direct));
    assert!(direct.status.success(), "OpenZFS 2.3.2 takes the crafted stream: {}", text(&direct));
    assert!(w.snapshots(&w.offsite).contains_key(&format!("{}/{next}", w.root)));
    assert!(try_key(&new_key), "the kernel used the second crypt_keydata");
    assert!(!try_key(&old_key), "the history no longer opens with the owner's key");
}

/// Speaks the protocol to the box's forced command as `user`, with the
/// source's key: `input` is the whole session (hello included); returns
/// what `serve` answered.
fn raw_session(w: &World, user: &str, input: Vec<u8>) -> Vec<zoffsite_core::protocol::Response> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", w.env("HOME_NS"), "timeout", "120", "ssh", "-F", "none", "-i", w.env("IDENTITY")])
        .args(["-o", "IdentitiesOnly=yes", "-o", &format!("UserKnownHostsFile={}", w.env("KNOWN_HOSTS"))])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-T"])
        .arg(format!("{user}@{}", w.env("BOX_ADDR")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let mut r = std::io::Cursor::new(out.stdout);
    let mut msgs = Vec::new();
    while let Ok(m) = zoffsite_core::protocol::read_msg(&mut r, usize::MAX) {
        msgs.push(m);
    }
    msgs
}

/// What `serve` must refuse even though each request is well-formed
/// protocol, with `serve` running as the unprivileged box user: a forced
/// receive, an incremental from an older base, a full stream onto an
/// existing dataset, names outside the root. The box's datasets and
/// snapshots stay exactly as they were.
#[test]
#[ignore = "needs root and ZFS (scripts/e2e)"]
fn serve_refuses_everything_but_appending_under_delegation() {
    use zoffsite_core::names::{Dataset, Guid, SnapName};
    use zoffsite_core::protocol::{self, ErrorCode, Request, Response};
    let w = World::new();
    let (user, [_, first, _]) = box_init(&w);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let data = format!("{}/data", w.tank);
    w.create_encrypted(&data);
    w.write(&data, "a", b"first");
    let cfg = w.config(&[&data], &[]);
    let text_cfg =
        std::fs::read_to_string(&cfg).unwrap().replace("user = \"root\"", &format!("user = \"{}\"", user.name));
    std::fs::write(&cfg, text_cfg).unwrap();
    let mut snaps = Vec::new();
    for content in [b"one".as_slice(), b"two"] {
        w.write(&data, "a", content);
        let out = w.backup(&cfg, &["--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        snaps.push(json(&out)["snapshot"].as_str().unwrap().to_owned());
    }
    ok(&["zfs", "snapshot", &format!("{data}@s3")]);
    let guid =
        |s: &str| Guid::new(zfs(&["get", "-H", "-p", "-o", "value", "guid", s]).trim().parse().unwrap()).unwrap();
    let send = |args: &[&str]| {
        let out = Command::new("zfs").args(["send", "-w"]).args(args).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "zfs send {args:?}: {}", text(&out));
        out.stdout
    };
    let (s1, s3) = (format!("{data}@{}", snaps[0]), format!("{data}@s3"));
    let older_base = send(&["-i", &s1, &s3]);
    let full = send(&[&s3]);
    let ds = |s: &str| Dataset::new(s).unwrap();
    let receive = |dataset: &str, from: Option<Guid>| Request::Receive {
        dataset: ds(dataset),
        snapshot: SnapName::new("s3").unwrap(),
        guid: guid(&s3),
        from,
        resume: false,
    };
    let mut input = Vec::new();
    let hello = Request::Hello { protocol: "zoffsite".into(), version: 1, client: "e2e".into() };
    protocol::write_msg(&mut input, &hello).unwrap();
    for (req, stream) in [
        // From s1, though the box holds s2: only `receive -F` could take it.
        (receive(&data, Some(guid(&s1))), &older_base),
        // A full stream onto the existing dataset.
        (receive(&data, None), &full),
        // Another pool's name: it can only ever land under the root.
        (receive(&format!("{}/elsewhere", w.offsite), None), &full),
    ] {
        protocol::write_msg(&mut input, &req).unwrap();
        protocol::write_data(&mut input, stream).unwrap();
        protocol::write_end(&mut input).unwrap();
    }
    // A request with a "force" flag the protocol does not have ends the
    // session before anything is done.
    let forced = format!(
        r#"{{"type":"receive","dataset":"{data}","snapshot":"s3","guid":{},"from":null,"force":true}}"#,
        guid(&s3)
    );
    input.push(b'M');
    input.extend_from_slice(&u32::try_from(forced.len()).unwrap().to_be_bytes());
    input.extend_from_slice(forced.as_bytes());
    let before = (w.datasets(&w.offsite), w.snapshots(&w.offsite));
    let msgs = raw_session(&w, &user.name, input);
    eprintln!("{msgs:#?}");
    assert!(matches!(msgs.first(), Some(Response::Hello { .. })), "{msgs:?}");
    let errors: Vec<&String> = msgs
        .iter()
        .filter_map(|m| match m {
            Response::Error { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(msgs.len(), 5, "hello, 2 refusals, 1 receive, the refused force: {msgs:?}");
    assert_eq!(errors.len(), 3, "{msgs:?}");
    // OpenZFS 2.3.2 says "has been modified since most recent snapshot"
    // (the box's newest is not the stream's base); only -F would roll back.
    assert!(errors[0].contains("has been modified") || errors[0].contains("must destroy"), "older base: {}", errors[0]);
    assert!(errors[1].contains("exists"), "full onto existing: {}", errors[1]);
    assert!(matches!(&msgs[3], Response::Received { .. }), "a new dataset under the root is appending: {msgs:?}");
    assert!(
        matches!(&msgs[4], Response::Error { code: ErrorCode::Protocol, message } if message.contains("force")),
        "{msgs:?}"
    );
    // The "elsewhere" stream landed under the root, never beside it.
    let (datasets, snapshots) = (w.datasets(&w.offsite), w.snapshots(&w.offsite));
    assert!(!datasets.contains(&format!("{}/elsewhere", w.offsite)), "{datasets:?}");
    let landed = format!("{}/{}/elsewhere", user.root, w.offsite);
    assert!(datasets.contains(&landed), "{datasets:?}");
    let added: Vec<&String> = datasets.iter().filter(|d| !before.0.contains(d)).collect();
    assert!(added.iter().all(|d| landed.starts_with(d.as_str())), "only {landed} and its parents: {added:?}");
    for (s, g) in &before.1 {
        assert_eq!(snapshots.get(s), Some(g), "{s} changed");
    }
    // Names that leave the root do not even parse.
    for bad in ["../etc", "/etc", "offsite/../x", ""] {
        let mut input = Vec::new();
        protocol::write_msg(&mut input, &hello).unwrap();
        let req = format!(r#"{{"type":"list","datasets":["{bad}"]}}"#);
        input.push(b'M');
        input.extend_from_slice(&u32::try_from(req.len()).unwrap().to_be_bytes());
        input.extend_from_slice(req.as_bytes());
        let msgs = raw_session(&w, &user.name, input);
        assert!(
            matches!(&msgs[..], [Response::Hello { .. }, Response::Error { code: ErrorCode::Protocol, .. }]),
            "{bad}: {msgs:?}"
        );
    }
}
