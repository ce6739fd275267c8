//! Whole source<->box sessions in-process, no root, no VM: the real client
//! (`Session::over`) and the real `Server` over a pipe pair, each side with
//! its own fake machine. What the box receives is checked on the box's
//! machine (GUIDs, data, stamps, the key pin), and what reached `zfs
//! receive` in the box's log.

mod common;

use common::*;
use zoffsite_core::boxside::{KEYWRAP_PROPERTY, RECEIVED_PROPERTY};
use zoffsite_core::nvlist::{pack, unpack, Value};
use zoffsite_core::protocol::{ErrorCode, Request};
use zoffsite_core::records::{craft, RecordType, RECORD_LEN};
use zoffsite_exec::process::Running;
use zoffsite_exec::proto::client::RemoteError;
use zoffsite_exec::zfs::{SendFrom, Zfs};
use zoffsite_testkit::fake::stream::keydata;
use zoffsite_testkit::fake::world::World;

const DS: &str = "tank/data";

/// Sends `to` (from `from`, by name and GUID) through `session`.
fn sent(
    session: &mut zoffsite_exec::proto::client::Session,
    src: &zoffsite_testkit::FakeZfs,
    to: &str,
    from: Option<(&str, SendFrom)>,
) -> Result<(u64, u64), RemoteError> {
    let (ds, snapshot) = to.split_once('@').unwrap();
    let from_guid = from.map(|(f, _)| src.guid(&format!("{ds}@{f}")).expect("the base"));
    let req = receive(ds, snapshot, src.guid(to).unwrap(), from_guid);
    session.receive(&req, send(src, to, from), &mut |_| {}).map(|(g, b)| (g.get(), b))
}

fn refused(r: Result<(u64, u64), RemoteError>) -> (ErrorCode, String) {
    match r {
        Err(RemoteError::Refused { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn full_then_incremental_sends_land_with_the_sources_guids_stamped_and_pinned() {
    let _one = serial();
    let src = source();
    let b = BoxSide::new("offsite/home");
    let (mut s, server) = b.connect();
    assert_eq!(s.root.as_str(), "offsite/home");
    let listed = s.list(&[ds(DS)]).unwrap();
    assert!(!listed[&ds(DS)].exists);

    src.snapshot("tank/data@zoffsite-1");
    let (g, bytes) = sent(&mut s, &src, "tank/data@zoffsite-1", None).unwrap();
    assert_eq!(g, src.guid("tank/data@zoffsite-1").unwrap());
    assert!(bytes > 300_000, "{bytes}");
    let copy = b.at("tank/data@zoffsite-1");
    assert_eq!(b.fake.content(&copy), src.content("tank/data@zoffsite-1"), "the data arrived whole");
    assert!(b.fake.local(&copy, RECEIVED_PROPERTY).is_some(), "stamped with the box's clock");
    assert_eq!(b.fake.local(&b.at(DS), KEYWRAP_PROPERTY), src.key(DS), "the first receive pins the key");
    assert_eq!(b.fake.local(&b.at("tank"), "mountpoint"), None, "a placeholder inherits mountpoint=none");
    assert!(b.fake.exists(&b.at("tank")));

    // -i: one snapshot's changes.
    src.write(DS, 5000).snapshot("tank/data@zoffsite-2");
    sent(&mut s, &src, "tank/data@zoffsite-2", Some(("zoffsite-1", SendFrom::Snapshot))).unwrap();
    // -I: everything in between too, as one stream.
    for n in 3..=5 {
        src.write(DS, 1000 * n).snapshot(&format!("tank/data@zoffsite-{n}"));
    }
    sent(&mut s, &src, "tank/data@zoffsite-5", Some(("zoffsite-2", SendFrom::SnapshotWithIntermediates))).unwrap();
    let names: Vec<String> = (1..=5).map(|n| format!("zoffsite-{n}")).collect();
    assert_eq!(b.fake.snapshot_names(&b.at(DS)), names);
    assert_eq!(b.fake.snapshots(&b.at(DS)), src.snapshots(DS), "same names, same GUIDs");
    assert_eq!(b.fake.content(&b.at("tank/data@zoffsite-5")), src.content("tank/data@zoffsite-5"));
    for n in &names {
        assert!(b.fake.local(&b.at(&format!("tank/data@{n}")), RECEIVED_PROPERTY).is_some(), "{n} stamped");
    }
    let listed = s.list(&[ds(DS)]).unwrap();
    assert_eq!(listed[&ds(DS)].snapshots.len(), 5);
    assert_eq!(b.fake.calls("receive").len(), 3);
    assert!(!b.fake.log().contains("-F"), "{}", b.fake.log());
    s.close();
    server.outcome().unwrap();
}

#[test]
fn an_interrupted_transfer_is_finished_from_the_boxs_resume_token() {
    let _one = serial();
    let src = source();
    src.write(DS, 400_000).snapshot("tank/data@zoffsite-1");
    let b = BoxSide::new("offsite/home");
    let (mut s, server) = b.connect();
    // The send dies a third of the way in.
    src.truncate_send(1, 250_000);
    let e = sent(&mut s, &src, "tank/data@zoffsite-1", None).unwrap_err();
    assert!(matches!(e, RemoteError::Send(_)), "the local failure explains it: {e}");
    assert!(b.fake.snapshots(&b.at(DS)).is_empty());
    // The session goes on; the box shows what it kept.
    let listed = s.list(&[ds(DS)]).unwrap();
    let token = listed[&ds(DS)].resume_token.clone().expect("a resume token");
    // The source reads the token before it sends anything from it.
    let z = Zfs::with_binary(src.path());
    zoffsite_core::resume::check_token_alphabet(&token).unwrap();
    let info = zoffsite_core::resume::parse_send_nvt(&z.describe_token(&token).unwrap()).unwrap();
    let g = src.guid("tank/data@zoffsite-1").unwrap();
    zoffsite_core::resume::check_against(&info, &ds(DS), guid(g), None).unwrap();
    assert!(info.bytes > 0 && info.rawok);
    let req =
        Request::Receive { dataset: ds(DS), snapshot: name("zoffsite-1"), guid: guid(g), from: None, resume: true };
    let (got, bytes) = s.receive(&req, Running::with_stdout(&z.send_resume(&token)).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(got.get(), g);
    assert!(bytes < 700_000, "only the rest was sent: {bytes}");
    assert_eq!(b.fake.content(&b.at("tank/data@zoffsite-1")), src.content("tank/data@zoffsite-1"));
    assert_eq!(b.fake.resume_token(&b.at(DS)), None);
    assert!(b.fake.local(&b.at("tank/data@zoffsite-1"), RECEIVED_PROPERTY).is_some());

    // An incremental cut short, then resumed from its base.
    src.clear_faults().write(DS, 500_000).snapshot("tank/data@zoffsite-2");
    src.truncate_send(0, 200_000);
    sent(&mut s, &src, "tank/data@zoffsite-2", Some(("zoffsite-1", SendFrom::Snapshot))).unwrap_err();
    src.clear_faults();
    let token = s.list(&[ds(DS)]).unwrap()[&ds(DS)].resume_token.clone().expect("a token");
    let info = zoffsite_core::resume::parse_send_nvt(&z.describe_token(&token).unwrap()).unwrap();
    let g2 = src.guid("tank/data@zoffsite-2").unwrap();
    zoffsite_core::resume::check_against(&info, &ds(DS), guid(g2), Some(guid(g))).unwrap();
    let req = Request::Receive {
        dataset: ds(DS),
        snapshot: name("zoffsite-2"),
        guid: guid(g2),
        from: Some(guid(g)),
        resume: true,
    };
    s.receive(&req, Running::with_stdout(&z.send_resume(&token)).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(b.fake.snapshots(&b.at(DS)), src.snapshots(DS));
    assert_eq!(b.fake.content(&b.at("tank/data@zoffsite-2")), src.content("tank/data@zoffsite-2"));
    s.close();
    server.outcome().unwrap();
}

#[test]
fn a_resume_posing_as_a_new_stream_and_a_new_stream_posing_as_a_resume_are_refused() {
    let _one = serial();
    let src = source();
    src.snapshot("tank/data@zoffsite-1");
    let b = BoxSide::new("offsite/home");
    let (mut s, server) = b.connect();
    sent(&mut s, &src, "tank/data@zoffsite-1", None).unwrap();
    src.write(DS, 400_000).snapshot("tank/data@zoffsite-2");
    src.truncate_send(1, 200_000);
    sent(&mut s, &src, "tank/data@zoffsite-2", Some(("zoffsite-1", SendFrom::Snapshot))).unwrap_err();
    let token = b.fake.resume_token(&b.at(DS)).expect("partial state");
    let receives = b.fake.calls("receive").len();
    let (g1, g2) = (src.guid("tank/data@zoffsite-1").unwrap(), src.guid("tank/data@zoffsite-2").unwrap());
    let as_resume = Request::Receive {
        dataset: ds(DS),
        snapshot: name("zoffsite-2"),
        guid: guid(g2),
        from: Some(guid(g1)),
        resume: true,
    };
    let (code, msg) = refused(
        s.receive(
            &as_resume,
            send(&src, "tank/data@zoffsite-2", Some(("zoffsite-1", SendFrom::Snapshot))),
            &mut |_| {},
        )
        .map(|(g, b)| (g.get(), b)),
    );
    assert_eq!(code, ErrorCode::Refused);
    assert!(msg.contains("does not resume an interrupted send"), "{msg}");
    let z = Zfs::with_binary(src.path());
    let as_new = receive(DS, "zoffsite-2", g2, Some(g1));
    let (code, msg) = refused(
        s.receive(&as_new, Running::with_stdout(&z.send_resume(&token)).unwrap(), &mut |_| {})
            .map(|(g, b)| (g.get(), b)),
    );
    assert_eq!(code, ErrorCode::Refused);
    assert!(msg.contains("resumes an interrupted send, but no resume was requested"), "{msg}");
    assert_eq!(b.fake.calls("receive").len(), receives, "neither reached zfs receive: {}", b.fake.log());
    assert_eq!(b.fake.resume_token(&b.at(DS)), Some(token), "the partial state is kept");
    s.close();
    server.outcome().unwrap();
}

#[test]
fn a_plaintext_stream_is_refused_before_zfs_receive_sees_it() {
    let _one = serial();
    // `zfs send -w` of an unencrypted dataset is plaintext: the source's
    // selection leaves such datasets out, and the box refuses the stream
    // if one comes all the same.
    let src = machine();
    src.create("tank/plain", false).write("tank/plain", 10_000).snapshot("tank/plain@zoffsite-1");
    let b = BoxSide::new("offsite/home");
    let (mut s, server) = b.connect();
    let (code, msg) = refused(sent(&mut s, &src, "tank/plain@zoffsite-1", None));
    assert_eq!(code, ErrorCode::Refused);
    assert!(msg.contains("not raw") && msg.contains("never receive plaintext"), "{msg}");
    assert!(b.fake.calls("receive").is_empty() && b.fake.received().is_empty(), "{}", b.fake.log());
    assert!(!b.fake.exists(&b.at("tank/plain")));
    s.close();
    server.outcome().unwrap();
}

#[test]
fn a_stream_for_another_snapshot_than_requested_is_refused() {
    let _one = serial();
    let src = source();
    src.snapshot("tank/data@zoffsite-1").write(DS, 10).snapshot("tank/data@zoffsite-2");
    let b = BoxSide::new("offsite/home");
    let (mut s, server) = b.connect();
    // The request names @zoffsite-1's GUID, the stream is @zoffsite-2.
    let g1 = src.guid("tank/data@zoffsite-1").unwrap();
    let req = receive(DS, "zoffsite-1", g1, None);
    let (code, msg) =
        refused(s.receive(&req, send(&src, "tank/data@zoffsite-2", None), &mut |_| {}).map(|(g, b)| (g.get(), b)));
    assert_eq!(code, ErrorCode::Refused);
    assert!(msg.contains(&g1.to_string()) && msg.contains("refused stream"), "{msg}");
    // A GUID that is not the snapshot's at all.
    let req = receive(DS, "zoffsite-1", 4242, None);
    let (_, msg) =
        refused(s.receive(&req, send(&src, "tank/data@zoffsite-1", None), &mut |_| {}).map(|(g, b)| (g.get(), b)));
    assert!(msg.contains("4242"), "{msg}");
    assert!(b.fake.calls("receive").is_empty(), "{}", b.fake.log());
    // The session is still in step: a right one goes through.
    sent(&mut s, &src, "tank/data@zoffsite-1", None).unwrap();
    s.close();
    server.outcome().unwrap();
}

#[test]
fn a_diverged_box_is_refused_by_zfs_receive_and_keeps_what_it_has() {
    let _one = serial();
    let src = source();
    src.snapshot("tank/data@zoffsite-1");
    let b = BoxSide::new("offsite/home");
    let (mut s, server) = b.connect();
    sent(&mut s, &src, "tank/data@zoffsite-1", None).unwrap();
    // Someone snapshotted the box's copy: its newest is not the source's.
    b.fake.snapshot(&b.at("tank/data@by-hand"));
    src.write(DS, 10).snapshot("tank/data@zoffsite-2");
    let before = b.fake.snapshots(&b.at(DS));
    let (code, msg) = refused(sent(&mut s, &src, "tank/data@zoffsite-2", Some(("zoffsite-1", SendFrom::Snapshot))));
    assert_eq!(code, ErrorCode::Zfs);
    assert!(msg.contains("does not") && msg.contains("match incremental source"), "{msg}");
    assert_eq!(b.fake.snapshots(&b.at(DS)), before, "nothing received, nothing destroyed (no -F)");
    assert!(
        b.fake.local(&b.at("tank/data@by-hand"), RECEIVED_PROPERTY).is_none(),
        "no stamp on what it did not receive"
    );
    s.close();
    server.outcome().unwrap();
}

#[test]
fn a_changed_source_key_is_refused_and_the_box_keeps_the_pinned_one() {
    let _one = serial();
    let src = source();
    src.snapshot("tank/data@zoffsite-1");
    let b = BoxSide::new("offsite/home");
    let (mut s, server) = b.connect();
    sent(&mut s, &src, "tank/data@zoffsite-1", None).unwrap();
    let pinned = b.fake.key(&b.at(DS));
    src.change_key(DS).write(DS, 10).snapshot("tank/data@zoffsite-2");
    assert_ne!(src.key(DS), pinned);
    b.fake.clear_log();
    let (code, msg) = refused(sent(&mut s, &src, "tank/data@zoffsite-2", Some(("zoffsite-1", SendFrom::Snapshot))));
    assert_eq!(code, ErrorCode::Refused);
    assert!(msg.contains("different encryption key") && msg.contains("zfs inherit zoffsite:keywrap"), "{msg}");
    assert!(b.fake.calls("receive").is_empty(), "{}", b.fake.log());
    assert_eq!(b.fake.key(&b.at(DS)), pinned, "the box's copy is still wrapped as pinned");
    assert_eq!(b.fake.local(&b.at(DS), KEYWRAP_PROPERTY), pinned);
    s.close();
    server.outcome().unwrap();
}

/// A box holding `tank/data@zoffsite-1..3` from `src`.
fn box_with_three(src: &zoffsite_testkit::FakeZfs) -> BoxSide {
    for n in 1..=3 {
        src.write(DS, 1000).snapshot(&format!("tank/data@zoffsite-{n}"));
    }
    let b = BoxSide::new("offsite/home");
    let (mut s, server) = b.connect();
    sent(&mut s, src, "tank/data@zoffsite-1", None).unwrap();
    sent(&mut s, src, "tank/data@zoffsite-3", Some(("zoffsite-1", SendFrom::SnapshotWithIntermediates))).unwrap();
    s.close();
    server.outcome().unwrap();
    b
}

#[test]
fn a_replayed_history_is_refused_before_zfs_receive_sees_it_and_no_stamp_moves() {
    let _one = serial();
    let src = source();
    let b = box_with_three(&src);
    let stamps = |b: &BoxSide| -> Vec<Option<String>> {
        (1..=3).map(|n| b.fake.local(&b.at(&format!("tank/data@zoffsite-{n}")), RECEIVED_PROPERTY)).collect()
    };
    // Stamps the replay would have to overwrite to make old history look
    // new (write-once, so set them apart from "now").
    for n in 1..=3 {
        b.fake.set(&b.at(&format!("tank/data@zoffsite-{n}")), RECEIVED_PROPERTY, &format!("170000000{n}"));
    }
    let before = (stamps(&b), b.fake.snapshots(&b.at(DS)));
    b.fake.clear_log();
    // A compromised source sends the whole history again, as one -I
    // stream to a new snapshot: zfs receive would skip what it holds,
    // succeed, and the old snapshots would count as received now.
    src.write(DS, 10).snapshot("tank/data@zoffsite-4");
    let (mut s, server) = b.connect();
    let (code, msg) =
        refused(sent(&mut s, &src, "tank/data@zoffsite-4", Some(("zoffsite-1", SendFrom::SnapshotWithIntermediates))));
    assert_eq!(code, ErrorCode::Refused);
    assert!(msg.contains("tank/data@zoffsite-2") && msg.contains("already holds"), "{msg}");
    // A full stream of a snapshot it holds, under a new name (by GUID).
    src.world(|w| w.ds_mut(DS).unwrap().snapshots[0].name = "zoffsite-0".into());
    let (_, msg) = refused(sent(&mut s, &src, "tank/data@zoffsite-0", None));
    assert!(msg.contains("already holds"), "{msg}");
    s.close();
    server.outcome().unwrap();
    assert!(b.fake.calls("receive").is_empty(), "zfs receive never saw a byte: {}", b.fake.log());
    assert!(b.fake.calls("set").is_empty(), "nothing stamped or pinned: {}", b.fake.log());
    assert_eq!((stamps(&b), b.fake.snapshots(&b.at(DS))), before);
}

/// The source's `-I @zoffsite-3 @zoffsite-5` stream, with a second
/// `crypt_keydata` (another key's) after the real one in its second
/// substream: libnvpair's lookup finds the last, so real `zfs receive` would
/// install it.
fn with_second_key_data(src: &zoffsite_testkit::FakeZfs) -> Vec<u8> {
    let stream = src.send(&["-w", "-I", "tank/data@zoffsite-3", "tank/data@zoffsite-5"]);
    let other = World::new(99).new_key();
    craft::with_begin_payloads(&stream, |i, p| {
        let mut top = unpack(p).unwrap();
        if i == 1 {
            top.pairs.push(("crypt_keydata".into(), Value::List(keydata(&other))));
        }
        pack(&top, false)
    })
}

#[test]
fn a_duplicate_crypt_keydata_is_refused_and_the_pinned_key_stays() {
    let _one = serial();
    let src = source();
    let b = box_with_three(&src);
    let pinned = b.fake.key(&b.at(DS));
    for n in 4..=5 {
        src.write(DS, 1000).snapshot(&format!("tank/data@zoffsite-{n}"));
    }
    let evil = with_second_key_data(&src);
    let earlier = b.fake.received().len();
    let (mut s, server) = b.connect();
    let req = receive(DS, "zoffsite-5", src.guid("tank/data@zoffsite-5").unwrap(), src.guid("tank/data@zoffsite-3"));
    let (_file, running) = crafted(&evil);
    let (code, msg) = refused(s.receive(&req, running, &mut |_| {}).map(|(g, b)| (g.get(), b)));
    assert_eq!(code, ErrorCode::Refused);
    assert!(msg.contains("\"crypt_keydata\" appears twice") && msg.contains("never writes"), "{msg}");
    assert!(msg.contains("tank/data@zoffsite-5"), "names the crafted part: {msg}");
    // The first substream may have landed; the crafted key data never
    // reached zfs receive whole, and neither the key nor its pin changed.
    let begins: Vec<_> = craft::records(&evil).0.into_iter().filter(|r| r.rtype == RecordType::Begin).collect();
    let crafted_end = begins[2].at + RECORD_LEN + begins[2].payload;
    let got = b.fake.received()[earlier..].to_vec();
    assert!(
        got.len() < crafted_end && evil.starts_with(&got),
        "{} bytes of {crafted_end} reached zfs receive",
        got.len()
    );
    assert!(!b.fake.exists(&b.at("tank/data@zoffsite-5")));
    assert_eq!(b.fake.key(&b.at(DS)), pinned);
    assert_eq!(b.fake.local(&b.at(DS), KEYWRAP_PROPERTY), pinned);

    // A key data list that is not what OpenZFS writes (its nvl_nvflag
    // cleared, which the kernel reads as "no lookup works"): refused too.
    let odd =
        craft::with_begin_payloads(&src.send(&["-w", "-i", "tank/data@zoffsite-3", "tank/data@zoffsite-4"]), |_, p| {
            let mut p = p.to_vec();
            p[8..12].copy_from_slice(&0u32.to_le_bytes());
            p
        });
    let req = receive(DS, "zoffsite-4", src.guid("tank/data@zoffsite-4").unwrap(), src.guid("tank/data@zoffsite-3"));
    let (_file, running) = crafted(&odd);
    let (_, msg) = refused(s.receive(&req, running, &mut |_| {}).map(|(g, b)| (g.get(), b)));
    assert!(msg.contains("never writes"), "{msg}");
    assert_eq!(b.fake.key(&b.at(DS)), pinned);
    s.close();
    server.outcome().unwrap();
}

#[test]
fn a_snapshot_comes_back_raw_for_a_restore() {
    let _one = serial();
    let src = source();
    src.snapshot("tank/data@zoffsite-1");
    let b = BoxSide::new("offsite/home");
    let (mut s, server) = b.connect();
    sent(&mut s, &src, "tank/data@zoffsite-1", None).unwrap();
    let mut stream = Vec::new();
    let (g, bytes) = s
        .fetch(&ds(DS), &name("zoffsite-1"), &mut |d| {
            stream.extend_from_slice(d);
            Ok(())
        })
        .unwrap();
    assert_eq!((g.get(), bytes), (src.guid("tank/data@zoffsite-1").unwrap(), stream.len() as u64));
    s.close();
    server.outcome().unwrap();
    // What came back is raw, for that very snapshot, and lands whole.
    let mut v = zoffsite_core::records::StreamValidator::new(zoffsite_core::records::Expect::new(None, g));
    v.feed(&stream).unwrap();
    assert_eq!(v.finish().unwrap().key.map(|k| k.to_string()), src.key(DS));
    let back = machine();
    back.pool("tank");
    let (_f, running) = crafted(&stream);
    let receive = Zfs::with_binary(back.path()).receive_new(&ds("tank/restored"));
    let mut r = Running::with_stdin(&receive).unwrap();
    let mut out = running;
    std::io::copy(out.child.stdout.as_mut().unwrap(), r.child.stdin.as_mut().unwrap()).unwrap();
    drop(r.child.stdin.take());
    assert!(r.finish().unwrap().success() && out.finish().unwrap().success());
    assert_eq!(back.content("tank/restored@zoffsite-1"), src.content("tank/data@zoffsite-1"));
    assert_eq!(back.key("tank/restored"), src.key(DS));
}

/// The box's audit, as root's doctor left it, reaches the source through
/// `serve` in the session `status` already has (after the listing), and
/// the source judges it; a box without one says so, and neither ends the
/// session badly.
#[test]
fn the_boxs_audit_reaches_the_source_and_is_judged_there() {
    use std::os::unix::fs::PermissionsExt;
    use zoffsite_core::doctor::boxaudit::{Fetched, Posture, PostureState};
    use zoffsite_core::doctor::{Check, CheckId, Report, Status};

    let _one = serial();
    let b = BoxSide::new("offsite/home");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("box.json");
    let me = rustix::process::geteuid().as_raw();

    // None yet: the timer has not run.
    let (mut s, server) = b.connect_with(|srv| srv.with_audit(&path, me));
    assert!(!s.list(&[ds(DS)]).unwrap()[&ds(DS)].exists);
    assert_eq!(s.audit().unwrap(), Fetched::Missing);
    server.outcome().unwrap();

    let now = 1_796_000_000;
    let mut r = Report::new();
    r.push(Check::ok(CheckId::Firewall, "ssh is reachable from the tunnel only"));
    r.push(Check::fail(CheckId::SecureBoot, "Secure Boot is disabled", "enable it in the firmware setup"));
    r.set_generated_at(now - 3 * 3600);
    std::fs::write(&path, serde_json::to_string_pretty(&r).unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (mut s, server) = b.connect_with(|srv| srv.with_audit(&path, me));
    s.list(&[ds(DS)]).unwrap();
    let fetched = s.audit().unwrap();
    server.outcome().unwrap();
    let p = Posture::judge(&fetched, now);
    assert_eq!((p.state, p.status, p.stale), (PostureState::Audited, Status::Fail, false));
    assert_eq!(p.line(), "fail (1 fail), audited 3h ago");
    assert!(p.is_finding());

    // A report root did not write (here: one others may write) is not
    // handed over; the source is told why, the session ends cleanly.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (s, server) = b.connect_with(|srv| srv.with_audit(&path, me));
    let Fetched::Unreadable(why) = s.audit().unwrap() else { panic!("refused") };
    assert!(why.contains("writable by others"), "{why}");
    server.outcome().unwrap();
    assert_eq!(b.fake.calls("receive").len(), 0);
}

#[test]
fn a_stream_keeps_to_the_bandwidth_window_in_force_and_lands_whole() {
    use jiff::tz::TimeZone;
    use std::time::{Duration, Instant};
    use zoffsite_core::bandwidth::{Limit, Schedule, TimeOfDay, Window};

    let _one = serial();
    let src = source();
    src.snapshot("tank/data@zoffsite-1");
    let b = BoxSide::new("offsite/home");
    let (s, server) = b.connect();
    // Unlimited by default; 128 KiB/s in a window around now (UTC), so the
    // session's pacer takes its limit from the window.
    let hour = u8::try_from(jiff::Timestamp::now().to_zoned(TimeZone::UTC).hour()).unwrap();
    let limit = 128 * 1024;
    let window = Window {
        from: TimeOfDay::new((hour + 23) % 24, 0).unwrap(),
        to: TimeOfDay::new((hour + 2) % 24, 0).unwrap(),
        limit: Limit::BytesPerSec(limit),
    };
    let schedule = Schedule::new(Limit::Unlimited, vec![window]).unwrap();
    let mut s = s.with_bandwidth(schedule, TimeZone::UTC);
    let started = Instant::now();
    let mut at: Vec<(Duration, u64)> = Vec::new();
    let req = receive(DS, "zoffsite-1", src.guid("tank/data@zoffsite-1").unwrap(), None);
    let (g, bytes) =
        s.receive(&req, send(&src, "tank/data@zoffsite-1", None), &mut |n| at.push((started.elapsed(), n))).unwrap();
    let took = started.elapsed();
    assert_eq!(g.get(), src.guid("tank/data@zoffsite-1").unwrap());
    assert_eq!(b.fake.content(&b.at("tank/data@zoffsite-1")), src.content("tank/data@zoffsite-1"));
    // Never faster than the limit allows (a tenth of a second's burst)...
    let least = Duration::from_secs_f64((bytes as f64 - limit as f64 / 10.0) / limit as f64);
    assert!(took >= least, "{bytes} bytes in {took:?}; at {limit} B/s at least {least:?}");
    // ...nor more than a fifth over it in any second (progress is told
    // after each write, with the bytes so far).
    for (i, &(t0, before)) in at.iter().enumerate() {
        let base = if i == 0 { 0 } else { at[i - 1].1 };
        let within = at.iter().take_while(|(t, _)| *t < t0 + Duration::from_secs(1)).last().map_or(before, |x| x.1);
        assert!((within - base) as f64 <= 1.2 * limit as f64, "{} bytes in the second from {t0:?}", within - base);
    }
    s.close();
    server.outcome().unwrap();
}
