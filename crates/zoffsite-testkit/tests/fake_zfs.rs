//! The fake `zfs` through the real callers: every argv `zoffsite_exec::zfs`
//! builds and every parser of its output in core, so the fake cannot drift
//! from what the code runs. What real ZFS does here is tested in the VM.

use std::io::{Read as _, Write as _};
use std::path::Path;

use zoffsite_core::names::{Dataset, SnapName, Snapshot};
use zoffsite_exec::process::{Cmd, Running};
use zoffsite_exec::zfs::{SendFrom, Zfs, ZfsError};
use zoffsite_testkit::fake::world::FaultAction;
use zoffsite_testkit::FakeZfs;

fn machine() -> FakeZfs {
    FakeZfs::with_program(Path::new(env!("CARGO_BIN_EXE_fake-zfs")))
}

fn ds(s: &str) -> Dataset {
    Dataset::new(s).unwrap()
}

fn snap(s: &str) -> Snapshot {
    Snapshot::new(s).unwrap()
}

fn name(s: &str) -> SnapName {
    SnapName::new(s).unwrap()
}

/// Pipes `send` into `receive`, as the wire would: the exit status and
/// stderr of both.
fn pipe(send: &Cmd, receive: &Cmd) -> ((bool, String), (bool, String)) {
    let mut s = Running::with_stdout(send).unwrap();
    let mut r = Running::with_stdin(receive).unwrap();
    let mut out = s.child.stdout.take().unwrap();
    let mut inp = r.child.stdin.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 || inp.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    drop((out, inp));
    let (so, ro) = (s.finish().unwrap(), r.finish().unwrap());
    ((so.success(), so.stderr), (ro.success(), ro.stderr))
}

/// A source with an encrypted `tank/data` and its child, and an
/// unencrypted `tank/plain`.
fn source() -> FakeZfs {
    let f = machine();
    f.create("tank/data", true).create("tank/data/sub", true).create("tank/plain", false);
    f.write("tank/data", 300_000);
    f
}

#[test]
fn listings_parse_with_cores_parsers() {
    let f = source();
    f.set("tank/data/sub", "zoffsite:backup", "off");
    let z = Zfs::with_binary(f.path());
    let rows = z.list_datasets(&ds("tank")).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.dataset.as_str()).collect();
    assert_eq!(names, ["tank", "tank/data", "tank/data/sub", "tank/plain"]);
    assert!(rows[1].encryption.is_on() && !rows[3].encryption.is_on());
    assert_eq!(rows[1].written, 300_000, "written counts data since the last snapshot");
    assert_eq!(rows[2].backup.as_deref(), Some("off"));
    assert_eq!(rows[1].backup, None);

    z.snapshot(&[snap("tank/data@zoffsite-1"), snap("tank/data/sub@zoffsite-1")]).unwrap();
    assert_eq!(z.list_datasets(&ds("tank/data")).unwrap()[0].written, 0);
    z.bookmark(&snap("tank/data@zoffsite-1")).unwrap();
    z.hold("zoffsite-friend", &[snap("tank/data@zoffsite-1")]).unwrap();
    let l = z.list_snapshots_and_bookmarks(&[ds("tank/data"), ds("tank/data/sub")]).unwrap();
    assert_eq!(l.snapshots.len(), 2);
    assert_eq!(l.bookmarks.len(), 1);
    assert_eq!(l.bookmarks[0].guid, l.snapshots[0].guid, "a bookmark keeps its snapshot's GUID");
    assert!(l.held.contains(&snap("tank/data@zoffsite-1")) && l.held.len() == 1);
    let s1 = z.snapshot_guid(&snap("tank/data@zoffsite-1")).unwrap();
    assert_eq!(s1, l.snapshots[0].guid);
    assert_eq!(z.written_since(&name("zoffsite-1"), &[ds("tank/data")]).unwrap(), [(ds("tank/data"), 0)]);
    assert!(z.exists(&ds("tank/data")).unwrap() && !z.exists(&ds("tank/nope")).unwrap());
    assert!(z.dataset_snapshots(&ds("tank/nope")).unwrap().is_empty(), "a missing dataset has no snapshots");
    assert!(matches!(z.list_datasets(&ds("tank/nope")), Err(ZfsError::NotFound { .. })));
    let props = z.local_properties(&[ds("tank/data/sub")]).unwrap();
    assert_eq!(props, [(ds("tank/data/sub"), "zoffsite:backup".to_owned(), "off".to_owned())]);
    assert_eq!(z.get_value("tank/data", "mountpoint").unwrap(), "/tank/data");
    assert_eq!(z.get_value("tank/data", "keystatus").unwrap(), "available");
}

#[test]
fn holds_bookmarks_and_destroys_behave_as_zfs_does() {
    let f = source();
    let z = Zfs::with_binary(f.path());
    let (a, b) = (snap("tank/data@zoffsite-1"), snap("tank/data@zoffsite-2"));
    z.snapshot(std::slice::from_ref(&a)).unwrap();
    z.snapshot(std::slice::from_ref(&b)).unwrap();
    z.hold("zoffsite-friend", std::slice::from_ref(&a)).unwrap();
    let e = z.hold("zoffsite-friend", std::slice::from_ref(&a)).unwrap_err();
    assert!(e.to_string().contains("tag already exists"), "{e}");
    let h = z.holds(&[a.clone(), b.clone()]).unwrap();
    assert_eq!((h.len(), h[0].snapshot.clone(), h[0].tag.as_str()), (1, a.clone(), "zoffsite-friend"));
    // A held snapshot is busy: the destroy takes none of the list.
    let e = z.destroy_own_snapshots(&ds("tank/data"), &[name("zoffsite-1"), name("zoffsite-2")]).unwrap_err();
    assert!(e.to_string().contains("dataset is busy"), "{e}");
    assert_eq!(f.snapshot_names("tank/data"), ["zoffsite-1", "zoffsite-2"]);
    z.release("zoffsite-friend", std::slice::from_ref(&a)).unwrap();
    assert!(z.release("zoffsite-friend", std::slice::from_ref(&a)).is_err(), "no such tag");
    z.bookmark(&a).unwrap();
    let e = z.bookmark(&a).unwrap_err();
    assert!(e.to_string().contains("bookmark exists"), "{e}");
    z.destroy_own_snapshots(&ds("tank/data"), &[name("zoffsite-1")]).unwrap();
    assert_eq!(f.snapshot_names("tank/data"), ["zoffsite-2"]);
    assert_eq!(f.bookmarks("tank/data"), ["zoffsite-1"], "the bookmark outlives its snapshot");
}

#[test]
fn full_incremental_and_bookmark_sends_land_on_another_machine() {
    let (src, dst) = (source(), machine());
    dst.box_root("offsite/home");
    let (zs, zd) = (Zfs::with_binary(src.path()), Zfs::with_binary(dst.path()));
    let target = ds("offsite/home/tank/data");
    zd.create_placeholder(&ds("offsite/home/tank")).unwrap();
    src.snapshot("tank/data@s1");
    let (s, r) = pipe(&zs.send_raw(&snap("tank/data@s1"), None), &zd.receive_append(&target));
    assert!(s.0 && r.0, "{s:?} {r:?}");
    assert_eq!(dst.guid("offsite/home/tank/data@s1"), src.guid("tank/data@s1"));
    assert_eq!(dst.content("offsite/home/tank/data@s1"), src.content("tank/data@s1"));
    assert_eq!(dst.key("offsite/home/tank/data"), src.key("tank/data"), "a raw receive carries the wrapped key");
    assert_eq!(zd.get_value(target.as_str(), "keystatus").unwrap(), "unavailable");
    assert_eq!(zd.get_value(target.as_str(), "mountpoint").unwrap(), "none", "inherited from the root");

    // -I with two snapshots in between: one compound stream.
    for s in ["s2", "s3", "s4"] {
        src.write("tank/data", 1000).snapshot(&format!("tank/data@{s}"));
    }
    let est = zs.estimate(&snap("tank/data@s4"), Some((&name("s1"), SendFrom::SnapshotWithIntermediates))).unwrap();
    let cmd = zs.send_raw(&snap("tank/data@s4"), Some((&name("s1"), SendFrom::SnapshotWithIntermediates)));
    let (s, r) = pipe(&cmd, &zd.receive_append(&target));
    assert!(s.0 && r.0, "{s:?} {r:?}");
    assert_eq!(dst.snapshot_names(target.as_str()), ["s1", "s2", "s3", "s4"]);
    assert_eq!(dst.content("offsite/home/tank/data@s4"), src.content("tank/data@s4"));
    assert!(est > 3000, "the estimate is the stream's size: {est}");

    // From a bookmark, its snapshot gone.
    zs.bookmark(&snap("tank/data@s4")).unwrap();
    src.write("tank/data", 10).snapshot("tank/data@s5");
    assert!(src.run(&["destroy", "tank/data@s4"]).status.success());
    let (s, r) =
        pipe(&zs.send_raw(&snap("tank/data@s5"), Some((&name("s4"), SendFrom::Bookmark))), &zd.receive_append(&target));
    assert!(s.0 && r.0, "{s:?} {r:?}");
    assert_eq!(dst.guid("offsite/home/tank/data@s5"), src.guid("tank/data@s5"));

    // The box's listings.
    let (dsets, snaps) = zd.list_box(&ds("offsite/home")).unwrap();
    assert_eq!(dsets.len(), 3);
    assert_eq!(snaps.len(), 5);
    let rows = zd.list_receiver(&ds("offsite/home")).unwrap();
    assert!(rows.iter().all(|r| r.resume_token.is_none()));
}

#[test]
fn a_receive_refuses_what_zfs_refuses_and_skips_what_it_holds() {
    let (src, dst) = (source(), machine());
    dst.box_root("offsite/home").create("offsite/home/tank", false);
    let (zs, zd) = (Zfs::with_binary(src.path()), Zfs::with_binary(dst.path()));
    let target = ds("offsite/home/tank/data");
    for s in ["s1", "s2", "s3"] {
        src.write("tank/data", 100).snapshot(&format!("tank/data@{s}"));
    }
    // An incremental into nothing.
    let (_, r) =
        pipe(&zs.send_raw(&snap("tank/data@s2"), Some((&name("s1"), SendFrom::Snapshot))), &zd.receive_append(&target));
    assert!(!r.0 && r.1.contains("does not exist"), "{r:?}");
    assert!(!dst.exists(target.as_str()));
    let (_, r) = pipe(&zs.send_raw(&snap("tank/data@s1"), None), &zd.receive_append(&target));
    assert!(r.0, "{r:?}");
    // A full stream onto it again: no -F, refused.
    let (_, r) = pipe(&zs.send_raw(&snap("tank/data@s2"), None), &zd.receive_append(&target));
    assert!(!r.0 && r.1.contains("exists"), "{r:?}");
    // An incremental from a base that is not its newest snapshot.
    let (_, r) =
        pipe(&zs.send_raw(&snap("tank/data@s3"), Some((&name("s2"), SendFrom::Snapshot))), &zd.receive_append(&target));
    assert!(!r.0 && r.1.contains("does not\nmatch incremental source"), "{r:?}");
    let (_, r) =
        pipe(&zs.send_raw(&snap("tank/data@s2"), Some((&name("s1"), SendFrom::Snapshot))), &zd.receive_append(&target));
    assert!(r.0, "{r:?}");
    // The whole history again (a replay): zfs receive skips what it holds
    // and succeeds, with nothing new: what serve must refuse up front.
    let before = dst.snapshots(target.as_str());
    let (_, r) =
        pipe(&zs.send_raw(&snap("tank/data@s2"), Some((&name("s1"), SendFrom::Snapshot))), &zd.receive_append(&target));
    assert!(r.0, "{r:?}");
    assert_eq!(dst.snapshots(target.as_str()), before);
    // `zfs send -w` of an unencrypted dataset is plaintext, and a
    // plaintext incremental does not go into an encrypted dataset.
    src.snapshot("tank/plain@p1");
    let plain = src.send(&["-w", "tank/plain@p1"]);
    let mut v = zoffsite_core::records::StreamValidator::new(zoffsite_core::records::Expect::new(
        None,
        zoffsite_core::names::Guid::new(src.guid("tank/plain@p1").unwrap()).unwrap(),
    ));
    assert!(v.feed(&plain).unwrap_err().to_string().contains("not raw"));
}

#[test]
fn a_cut_send_leaves_resumable_state_that_a_resumed_send_completes() {
    let (src, dst) = (source(), machine());
    dst.box_root("offsite/home").create("offsite/home/tank", false);
    let (zs, zd) = (Zfs::with_binary(src.path()), Zfs::with_binary(dst.path()));
    let target = ds("offsite/home/tank/data");
    src.snapshot("tank/data@s1");
    src.truncate_send(1, 140_000);
    let (s, r) = pipe(&zs.send_raw(&snap("tank/data@s1"), None), &zd.receive_append(&target));
    assert!(!s.0 && s.1.contains("signal received"), "{s:?}");
    assert!(!r.0 && r.1.contains("failed to read from stream"), "{r:?}");
    let rows = zd.list_receiver(&ds("offsite/home")).unwrap();
    let token = rows.iter().find(|r| r.dataset == target).and_then(|r| r.resume_token.clone()).expect("a token");
    assert!(dst.snapshots(target.as_str()).is_empty());
    // The source reads the token as the real one is read.
    zoffsite_core::resume::check_token_alphabet(&token).unwrap();
    let text = zs.describe_token(&token).unwrap();
    let info = zoffsite_core::resume::parse_send_nvt(&text).unwrap();
    assert_eq!(
        (info.toname, info.toguid.get(), info.fromguid, info.rawok),
        (snap("tank/data@s1"), src.guid("tank/data@s1").unwrap(), None, true)
    );
    assert!(info.bytes > 0);
    // A second receive must continue it, not start over.
    let (_, r) = pipe(&zs.send_raw(&snap("tank/data@s1"), None), &zd.receive_append(&target));
    assert!(!r.0 && r.1.contains("partially-complete state"), "{r:?}");
    let (s, r) = pipe(&zs.send_resume(&token), &zd.receive_append(&target));
    assert!(s.0 && r.0, "{s:?} {r:?}");
    assert_eq!(dst.content("offsite/home/tank/data@s1"), src.content("tank/data@s1"));
    assert_eq!(dst.resume_token(target.as_str()), None);

    // An incremental cut and aborted: the partial state goes, the
    // snapshots stay.
    src.write("tank/data", 300_000).snapshot("tank/data@s2");
    src.truncate_send(0, 50_000);
    let (_, r) =
        pipe(&zs.send_raw(&snap("tank/data@s2"), Some((&name("s1"), SendFrom::Snapshot))), &zd.receive_append(&target));
    assert!(!r.0, "{r:?}");
    assert!(dst.resume_token(target.as_str()).is_some());
    zd.abort_receive(&target).unwrap();
    assert_eq!((dst.resume_token(target.as_str()), dst.snapshot_names(target.as_str())), (None, vec!["s1".to_owned()]));
    assert!(zd.abort_receive(&target).is_err(), "nothing left to abort");
    // A token whose snapshot is gone cannot be described.
    src.clear_faults().truncate_send(0, 60_000);
    let (_, r) =
        pipe(&zs.send_raw(&snap("tank/data@s2"), Some((&name("s1"), SendFrom::Snapshot))), &zd.receive_append(&target));
    assert!(!r.0);
    let token = dst.resume_token(target.as_str()).unwrap();
    assert!(src.run(&["destroy", "tank/data@s2"]).status.success());
    assert!(zs.describe_token(&token).is_err());
}

#[test]
fn box_side_properties_stamps_and_pool_queries() {
    let f = machine();
    f.box_root("offsite/home").create("offsite/home/a", false).write("offsite/home/a", 10);
    f.snapshot("offsite/home/a@s1").snapshot("offsite/home/a@s2");
    f.world(|w| {
        w.pools.get_mut("offsite").unwrap().last_scrub = Some(1_795_000_000);
    });
    let z = Zfs::with_binary(f.path());
    let names = vec!["offsite/home/a@s1".to_owned(), "offsite/home/a@s2".to_owned()];
    z.set_user_property(&names[..1], "zoffsite:received", "1795000000").unwrap();
    // A stamp on the dataset is inherited by its snapshots, and is not
    // theirs (`-s local`).
    z.set_user_property(&["offsite/home/a".to_owned()], "zoffsite:received", "1").unwrap();
    let local = z.local_values(&names, "zoffsite:received").unwrap();
    assert_eq!(local.into_iter().collect::<Vec<_>>(), [("offsite/home/a@s1".to_owned(), "1795000000".to_owned())]);
    assert_eq!(z.get_value("offsite/home/a@s2", "zoffsite:received").unwrap(), "1", "inherited");
    assert_eq!(z.get_local("offsite/home/a@s2", "zoffsite:received").unwrap(), None);
    let boxed = z.list_box_snapshots(&ds("offsite/home")).unwrap();
    assert_eq!(boxed.len(), 2);
    assert_ne!(boxed[0].received, boxed[1].received, "one stamped, one not: {boxed:?}");
    assert_eq!(z.pool_health("offsite").unwrap(), "ONLINE");
    assert_eq!(z.last_scrub("offsite").unwrap(), Some(1_795_000_000));
    assert!(z.pool_guid("offsite").unwrap() > 0);
    assert!(z.pool_health("nopool").is_err());
    z.sync_pools(["offsite"]).unwrap();
    assert_eq!(z.get_value("offsite/home", "snapshot_limit").unwrap(), "18446744073709551615");
    z.destroy_received_snapshots(&ds("offsite/home"), &ds("offsite/home/a"), &[name("s1")]).unwrap();
    assert_eq!(f.snapshot_names("offsite/home/a"), ["s2"]);
}

#[test]
fn faults_fire_on_the_nth_call_and_everything_is_logged() {
    let f = source();
    let z = Zfs::with_binary(f.path());
    f.fail("snapshot", 2, "cannot create snapshots : permission denied");
    z.snapshot(&[snap("tank/data@a")]).unwrap();
    let e = z.snapshot(&[snap("tank/data@b")]).unwrap_err();
    assert!(matches!(e, ZfsError::PermissionDenied { .. }), "{e}");
    z.snapshot(&[snap("tank/data@c")]).unwrap();
    assert_eq!(f.snapshot_names("tank/data"), ["a", "c"]);
    f.fault("zpool list", None, 0, FaultAction::Fail { code: 1, stderr: "no pools\n".into() });
    assert!(z.pool_health("tank").is_err());
    f.fault("get", Some("mountpoint"), 1, FaultAction::Stderr { stderr: "warning: noise\n".into() });
    assert_eq!(z.get_value("tank", "mountpoint").unwrap(), "/tank", "exit 0 decides, whatever stderr says");
    let log = f.log();
    assert!(log.contains("snapshot tank/data@b\n") && log.contains("zpool list -H -o health tank\n"), "{log}");
    assert_eq!(f.calls("snapshot").len(), 3);
    let out = f.run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "an unknown command is not passed by luck");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not modelled"));
}

#[test]
fn the_box_and_the_source_may_call_their_fakes_at_once() {
    // Many calls at once on one machine: the lock keeps the state whole.
    let f = source();
    let z = Zfs::with_binary(f.path());
    std::thread::scope(|s| {
        for t in 0..4 {
            let z = z.clone();
            s.spawn(move || {
                for i in 0..5 {
                    z.snapshot(&[snap(&format!("tank/data@t{t}-{i}"))]).unwrap();
                }
            });
        }
    });
    assert_eq!(f.snapshots("tank/data").len(), 20);
}
