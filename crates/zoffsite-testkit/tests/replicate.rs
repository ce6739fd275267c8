//! Whole backup runs (`zoffsite_exec::replicate::backup`, the driver
//! `zoffsite backup` is) against fake machines, run after run: the source's
//! `zfs` is a fake machine, each target a real `Server` on a thread with a
//! fake machine of its own, reached through `Session::over`. Real streams
//! flow, so what a box holds after a run is what a run really sent.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use zoffsite_core::config::{Config, Target};
use zoffsite_core::plan::{BaseKind, Send};
use zoffsite_core::report::{BackupReport, DatasetStatus, Severity};
use zoffsite_exec::events::Recorded;
use zoffsite_exec::proto::client::RemoteError;
use zoffsite_exec::replicate::{backup, Connect, Options};
use zoffsite_exec::zfs::Zfs;
use zoffsite_testkit::FakeZfs;

const DS: &str = "tank/data";

/// A source and its targets by name (a target without a box is away).
struct World {
    src: FakeZfs,
    boxes: BTreeMap<String, Arc<BoxSide>>,
    targets: Vec<String>,
    keep: String,
    /// The clock of the next run (it names the snapshot).
    runs: i64,
}

impl World {
    fn new(targets: &[&str], keep: &str) -> World {
        let src = source();
        let boxes = targets.iter().map(|t| (t.to_string(), Arc::new(BoxSide::new("offsite/home")))).collect();
        World {
            src,
            boxes,
            targets: targets.iter().map(std::string::ToString::to_string).collect(),
            keep: keep.into(),
            runs: 0,
        }
    }

    fn config(&self) -> Config {
        let mut text = format!("[source]\ndatasets = [\"{DS}\"]\n{}\n", self.keep);
        for t in &self.targets {
            text.push_str(&format!(
                "[[target]]\nname = \"{t}\"\nhost = \"10.77.0.2\"\nuser = \"root\"\nidentity_file = \"/nonexistent/id\"\nknown_hosts = \"/nonexistent/kh\"\n"
            ));
        }
        Config::parse(&text).unwrap()
    }

    /// Reaches each target's box, except those in `away`.
    fn connect(&self, away: &[&str]) -> Arc<Connect> {
        let boxes = self.boxes.clone();
        let away: Vec<String> = away.iter().map(std::string::ToString::to_string).collect();
        Arc::new(move |t: &Target| {
            if away.contains(&t.name) {
                return Err(RemoteError::Unreachable { host: t.host.clone(), detail: "No route to host".into() });
            }
            Ok(boxes[&t.name].connect().0)
        })
    }

    /// One `zoffsite backup` run, with the targets in `away` unreachable.
    fn run(&mut self, away: &[&str]) -> (BackupReport, Recorded) {
        self.runs += 1;
        let now = jiff::Timestamp::from_second(1_767_225_600 + self.runs * 3600).unwrap();
        let opts = Options {
            dry_run: false,
            force_snapshot: false,
            config_path: Path::new("/etc/zoffsite/test.toml"),
            now,
            connect: self.connect(away),
        };
        let mut ev = Recorded::default();
        let report = backup(&self.config(), &Zfs::with_binary(self.src.path()), &opts, &mut ev);
        (report, ev)
    }

    fn at(&self, target: &str) -> Arc<BoxSide> {
        self.boxes[target].clone()
    }
}

/// The source's snapshot a run took, as `DS@name`.
fn taken(report: &BackupReport) -> String {
    format!("{DS}@{}", report.snapshot.as_ref().expect("a snapshot was taken"))
}

fn statuses(report: &BackupReport, target: &str) -> Vec<DatasetStatus> {
    let t = report.targets.iter().find(|t| t.name == target).expect("the target is reported");
    t.datasets.iter().map(|d| d.status).collect()
}

#[test]
fn a_first_run_sends_in_full_and_later_runs_only_what_changed() {
    let _one = serial();
    let mut w = World::new(&["friend"], "");
    w.src.create("tank/data/sub", true).write("tank/data/sub", 50_000);
    w.src.create("tank/data/plain", false);
    let (r, ev) = w.run(&[]);
    // The unencrypted child is refused by name; the rest goes.
    assert_eq!(ev.worst, Severity::Partial, "{:?}", ev.errors);
    assert!(r.skipped.iter().any(|s| s.dataset.as_str() == "tank/data/plain"), "{:?}", r.skipped);
    assert_eq!(statuses(&r, "friend"), [DatasetStatus::Ok, DatasetStatus::Ok]);
    let s1 = taken(&r);
    let b = w.at("friend");
    for ds in [DS, "tank/data/sub"] {
        assert_eq!(b.fake.snapshots(&b.at(ds)), w.src.snapshots(ds), "{ds}: same snapshots, same GUIDs");
    }
    assert_eq!(b.fake.content(&b.at(&s1)), w.src.content(&s1));
    assert!(!b.fake.exists(&b.at("tank/data/plain")), "nothing of it reached the box");
    assert_eq!(w.src.holds(&s1), ["zoffsite-friend"], "the next incremental's base is held");
    assert_eq!(w.src.bookmarks(DS), [r.snapshot.as_ref().unwrap().to_string()], "and bookmarked");

    // Nothing changed: no snapshot, nothing sent.
    w.src.set("tank/data/plain", "zoffsite:backup", "off");
    let (r, ev) = w.run(&[]);
    assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
    assert_eq!(r.snapshot, None);
    assert!(ev.lines.iter().any(|l| l.starts_with("friend: tank/data: box already holds")), "{:?}", ev.lines);
    assert_eq!(b.fake.calls("receive").len(), 2);

    // A change: an incremental, and the hold moves to it.
    w.src.write(DS, 20_000);
    let (r, ev) = w.run(&[]);
    assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
    let s2 = taken(&r);
    let sent = &r.targets[0].datasets[0];
    assert!(
        matches!(&sent.send, Some(Send::Incremental { base: BaseKind::Snapshot, intermediates: 0, .. })),
        "{sent:?}"
    );
    assert!(sent.bytes.unwrap() < 50_000, "only the change: {sent:?}");
    assert_eq!(b.fake.snapshots(&b.at(DS)), w.src.snapshots(DS));
    assert_eq!((w.src.holds(&s1), w.src.holds(&s2)), (vec![], vec!["zoffsite-friend".to_owned()]));
    assert!(!b.fake.log().contains("-F") && !b.fake.log().contains("destroy"), "{}", b.fake.log());
}

#[test]
fn an_interrupted_transfer_is_finished_on_the_next_run() {
    let _one = serial();
    let mut w = World::new(&["friend"], "");
    w.src.write(DS, 600_000);
    w.src.truncate_send(1, 300_000);
    let (r, ev) = w.run(&[]);
    assert_eq!(ev.worst, Severity::Partial, "{:?}", ev.errors);
    assert_eq!(statuses(&r, "friend"), [DatasetStatus::Failed]);
    let s1 = taken(&r);
    let b = w.at("friend");
    assert!(b.fake.resume_token(&b.at(DS)).is_some(), "the box kept what came");
    assert!(w.src.holds(&s1).is_empty(), "not confirmed: no base moved");

    // The next run: nothing changed on the source, so no new snapshot; the
    // transfer is finished from where it stopped.
    w.src.clear_faults();
    let (r, ev) = w.run(&[]);
    assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
    assert_eq!(r.snapshot, None);
    let d = &r.targets[0].datasets[0];
    assert_eq!(d.status, DatasetStatus::Ok);
    let resumed = d.resumed_bytes.expect("resumed");
    // Of about 900 KB, about 300 KB had arrived: only the rest is sent.
    assert!(resumed > 0 && resumed < 700_000, "only the rest: {resumed}");
    assert!(ev.lines.iter().any(|l| l.contains("resumed the interrupted transfer of @")), "{:?}", ev.lines);
    assert_eq!(b.fake.content(&b.at(&s1)), w.src.content(&s1));
    assert_eq!(b.fake.resume_token(&b.at(DS)), None);
    assert_eq!(w.src.holds(&s1), ["zoffsite-friend"]);
    assert_eq!(w.src.calls("send -w -t").len(), 1, "{}", w.src.log());
}

#[test]
fn a_transfer_the_source_cannot_continue_is_discarded_and_sent_afresh() {
    let _one = serial();
    let mut w = World::new(&["friend"], "");
    w.src.truncate_send(1, 100_000);
    let (r, _) = w.run(&[]);
    let s1 = taken(&r);
    let b = w.at("friend");
    assert!(b.fake.resume_token(&b.at(DS)).is_some());
    // The snapshot the token names is gone (not held: never confirmed).
    w.src.clear_faults();
    assert!(w.src.run(&["destroy", &s1]).status.success());
    w.src.write(DS, 1000);
    let (r, ev) = w.run(&[]);
    assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
    let s2 = taken(&r);
    assert!(ev.lines.iter().any(|l| l.contains("discarded an interrupted transfer")), "{:?}", ev.lines);
    assert_eq!(b.fake.calls("receive -A").len(), 1, "{}", b.fake.log());
    assert_eq!(b.fake.snapshots(&b.at(DS)), w.src.snapshots(DS));
    assert_eq!(b.fake.content(&b.at(&s2)), w.src.content(&s2));
}

#[test]
fn two_targets_each_move_their_own_hold_and_retention_keeps_a_base_while_a_target_needs_it() {
    // The e2e scenario of 3c7a11d, in-process: the second target must find
    // the bookmark the first made (it tried to make it again, failed with
    // "bookmark exists", and never moved its hold), and each target moves
    // only its own tag (07bc754).
    let _one = serial();
    let mut w = World::new(&["friend", "friend2"], "[source.keep]\nlast = 1\n");
    let tags = |w: &World, s: &str| w.src.holds(s);
    let both = vec!["zoffsite-friend".to_owned(), "zoffsite-friend2".to_owned()];

    let (r, ev) = w.run(&[]);
    assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
    let s1 = taken(&r);
    assert_eq!(tags(&w, &s1), both);
    assert_eq!(w.src.calls("bookmark").len(), 1, "one bookmark for both targets: {}", w.src.log());

    // Both move to the new snapshot; the old one, held by nobody, is pruned.
    w.src.write(DS, 100);
    let (r, ev) = w.run(&[]);
    assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
    let s2 = taken(&r);
    assert_eq!(tags(&w, &s2), both);
    assert!(!w.src.exists(&s1), "{s1} is no one's base any more and last = 1");
    assert_eq!(r.pruned.iter().map(ToString::to_string).collect::<Vec<_>>(), [s1.as_str()]);

    // friend2 is away: friend moves on, friend2's base stays held and kept.
    w.src.write(DS, 100);
    let (r, ev) = w.run(&["friend2"]);
    assert_eq!(ev.worst, Severity::Target, "{:?}", ev.errors);
    let s3 = taken(&r);
    assert_eq!(tags(&w, &s3), ["zoffsite-friend"]);
    assert_eq!(tags(&w, &s2), ["zoffsite-friend2"]);
    assert!(w.src.exists(&s2), "friend2's base must survive retention");

    // friend2 is back (nothing changed: no new snapshot): it gets @s3 from
    // its base, takes its hold there, and its old base goes.
    let (r, ev) = w.run(&[]);
    assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
    assert_eq!(r.snapshot, None);
    assert_eq!(tags(&w, &s3), both);
    assert!(!w.src.exists(&s2), "{s2} is no one's base any more");
    for t in ["friend", "friend2"] {
        let b = w.at(t);
        assert_eq!(b.fake.guid(&b.at(&s3)), w.src.guid(&s3), "{t}");
        assert_eq!(b.fake.content(&b.at(&s3)), w.src.content(&s3), "{t}");
    }
    assert_eq!(w.src.bookmarks(DS).len(), 3, "one bookmark per confirmed snapshot, made once");
}

#[test]
fn a_target_whose_base_snapshot_is_gone_gets_an_increment_from_its_bookmark() {
    let _one = serial();
    let mut w = World::new(&["friend"], "");
    let (r, _) = w.run(&[]);
    let s1 = taken(&r);
    // Someone releases the hold and destroys the base by hand.
    assert!(w.src.run(&["release", "zoffsite-friend", &s1]).status.success());
    assert!(w.src.run(&["destroy", &s1]).status.success());
    w.src.write(DS, 100);
    let (r, ev) = w.run(&[]);
    assert_eq!(ev.worst, Severity::Ok, "{:?}", ev.errors);
    let sent = &r.targets[0].datasets[0];
    assert!(matches!(&sent.send, Some(Send::Incremental { base: BaseKind::Bookmark, .. })), "{sent:?}");
    assert_eq!(w.src.calls("send -w -i tank/data#").len(), 1, "{}", w.src.log());
    let b = w.at("friend");
    assert_eq!(b.fake.guid(&b.at(&taken(&r))), w.src.guid(&taken(&r)));
}

#[test]
fn a_diverged_box_is_left_alone_and_the_run_says_why() {
    let _one = serial();
    let mut w = World::new(&["friend"], "");
    let (r, _) = w.run(&[]);
    let b = w.at("friend");
    b.fake.snapshot(&b.at("tank/data@made-on-the-box"));
    let before = b.fake.snapshots(&b.at(DS));
    let _ = r;
    w.src.write(DS, 100);
    let (r, ev) = w.run(&[]);
    assert_eq!(ev.worst, Severity::Partial, "{:?}", ev.errors);
    let d = &r.targets[0].datasets[0];
    assert_eq!(d.status, DatasetStatus::Failed);
    assert!(d.error.as_deref().unwrap_or_default().contains("histories diverged"), "{d:?}");
    assert_eq!(b.fake.snapshots(&b.at(DS)), before, "nothing forced, nothing destroyed");
    assert_eq!(b.fake.calls("receive").len(), 1, "{}", b.fake.log());
}
