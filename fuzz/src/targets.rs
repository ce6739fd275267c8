//! The in-process targets: one per parser of hostile (or user) input.
//!
//! Each target takes raw bytes, runs the crate's parser on them exactly as
//! zoffsite does (text from `zfs` goes through `from_utf8_lossy`, frames
//! through `read_frame`...), records every error it returns (the driver
//! checks that each reads as a clear message), checks a few properties of
//! what was accepted (round trips, agreement between related parsers, the
//! same answer for any chunking of a stream), and says whether the input
//! was accepted.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Cursor, Read};
use std::sync::OnceLock;

use zoffsite_core::config::Config;
use zoffsite_core::names::{Bookmark, Dataset, Guid, SnapName, Snapshot};
use zoffsite_core::protocol::{
    self, check_listing, Frame, ProtoError, Request, Response, MAX_DATA_LEN, MAX_REQUEST_LEN, MAX_RESPONSE_LEN,
};
use zoffsite_core::records::{Expect, StreamValidator, MAX_SUBSTREAMS};
use zoffsite_core::{doctor, nvlist, parse, resume};

use crate::corpus::{self, guid};
use crate::mutate::Shape;
use crate::rng::Rng;

/// What one execution found besides its verdict.
#[derive(Debug, Default)]
pub struct Ctx {
    /// The Display of every error the parsers returned.
    pub errors: Vec<String>,
    /// Broken properties: each is a finding.
    pub violations: Vec<String>,
}

impl Ctx {
    pub fn refused(&mut self, e: impl fmt::Display) {
        self.errors.push(e.to_string());
    }

    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.violations.push(what());
        }
    }
}

pub type RunFn = Box<dyn FnMut(&mut Ctx, &[u8]) -> bool>;

pub struct Target {
    pub name: &'static str,
    pub shape: Shape,
    pub dict: &'static [&'static [u8]],
    pub seeds: Vec<Vec<u8>>,
    pub max_len: usize,
    /// Most bytes one execution may allocate at its peak:
    /// `mem_base + mem_per_byte * input length`.
    pub mem_base: usize,
    pub mem_per_byte: usize,
    /// The input comes from the other side: its errors must also be free
    /// of control characters and of bounded length.
    pub hostile: bool,
    /// Share of the time budget.
    pub weight: u32,
    pub run: RunFn,
}

const MIB: usize = 1 << 20;

fn text_target(
    name: &'static str,
    seeds: &[&str],
    dict: &'static [&'static [u8]],
    f: fn(&mut Ctx, &str) -> bool,
) -> Target {
    Target {
        name,
        shape: Shape::Text,
        dict,
        seeds: seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        max_len: 64 * 1024,
        mem_base: MIB,
        // Linear: `parse::rows` holds every line's columns (a Vec per
        // line) before it checks anything across lines, about 150 bytes
        // per byte for newline-only input.
        mem_per_byte: 256,
        hostile: true,
        weight: 1,
        // zoffsite reads every zfs output with from_utf8_lossy.
        run: Box::new(move |ctx, input| f(ctx, &String::from_utf8_lossy(input))),
    }
}

/// Lines of `-H` output, as `parse::rows` counts them.
fn row_count(text: &str) -> usize {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.is_empty() {
        0
    } else {
        body.split('\n').count()
    }
}

fn rows_parsed<T>(ctx: &mut Ctx, text: &str, r: Result<Vec<T>, parse::ParseError>) -> bool {
    match r {
        Ok(rows) => {
            let (got, want) = (rows.len(), row_count(text));
            ctx.check(got == want, || format!("{got} rows parsed from {want} lines"));
            true
        }
        Err(e) => {
            ctx.refused(e);
            false
        }
    }
}

pub fn all() -> Vec<Target> {
    let mut v = vec![
        frames_target("frames-request", false),
        frames_target("frames-response", true),
        json_target("json-request", false),
        json_target("json-response", true),
        text_target("zfs-snapshots", corpus::SNAPSHOT_ROWS, corpus::TEXT_DICT, |ctx, t| {
            let r = parse::snapshots(t);
            if let Ok(rows) = &r {
                for (row, line) in rows.iter().zip(t.split('\n')) {
                    let name = line.split('\t').next().unwrap_or_default();
                    ctx.check(row.snapshot.to_string() == name, || format!("snapshot {} from {name:?}", row.snapshot));
                }
            }
            rows_parsed(ctx, t, r)
        }),
        text_target("zfs-source-listing", corpus::SOURCE_ROWS, corpus::TEXT_DICT, |ctx, t| {
            // Every line lands on exactly one side, as the kind its name
            // says; only snapshots can be held.
            let r = parse::source_listing(t).map(|l| {
                for (row, line) in l.snapshots.iter().zip(t.split('\n').filter(|l| !l.contains('#'))) {
                    let name = line.split('\t').next().unwrap_or_default();
                    ctx.check(row.snapshot.to_string() == name, || format!("snapshot {} from {name:?}", row.snapshot));
                }
                for (row, line) in l.bookmarks.iter().zip(t.split('\n').filter(|l| l.contains('#'))) {
                    let name = line.split('\t').next().unwrap_or_default();
                    ctx.check(row.bookmark.to_string() == name, || format!("bookmark {} from {name:?}", row.bookmark));
                }
                for h in &l.held {
                    ctx.check(l.snapshots.iter().any(|s| s.snapshot == *h), || format!("{h} held but not listed"));
                }
                vec![(); l.snapshots.len() + l.bookmarks.len()]
            });
            rows_parsed(ctx, t, r)
        }),
        text_target("zfs-datasets", corpus::DATASET_ROWS, corpus::TEXT_DICT, |ctx, t| {
            let r = parse::datasets(t);
            rows_parsed(ctx, t, r)
        }),
        text_target("zfs-receiver", corpus::RECEIVER_ROWS, corpus::TEXT_DICT, |ctx, t| {
            let r = parse::receiver_datasets(t);
            if let Ok(rows) = &r {
                for tok in rows.iter().filter_map(|r| r.resume_token.as_deref()) {
                    ctx.check(tok.len() <= parse::MAX_TOKEN_LEN, || format!("{}-byte token accepted", tok.len()));
                }
            }
            rows_parsed(ctx, t, r)
        }),
        text_target("zfs-box-inventory", corpus::BOX_ROWS, corpus::TEXT_DICT, |ctx, t| match parse::box_inventory(t) {
            Ok((datasets, snaps)) => {
                let (got, want) = (datasets.len() + snaps.len(), row_count(t));
                ctx.check(got == want, || format!("{got} rows parsed from {want} lines"));
                true
            }
            Err(e) => {
                ctx.refused(e);
                false
            }
        }),
        text_target("zfs-holds", corpus::HOLD_ROWS, corpus::TEXT_DICT, |ctx, t| {
            let r = parse::holds(t);
            rows_parsed(ctx, t, r)
        }),
        text_target("zfs-numbers", corpus::NUMBER_ROWS, corpus::TEXT_DICT, |ctx, t| match parse::dataset_numbers(t) {
            Ok(rows) => {
                let lines = row_count(t);
                ctx.check(rows.len() <= lines, || format!("{} values from {lines} lines", rows.len()));
                true
            }
            Err(e) => {
                ctx.refused(e);
                false
            }
        }),
        text_target("zfs-send-size", corpus::SEND_SIZES, corpus::TEXT_DICT, |ctx, t| match parse::send_size(t) {
            Ok(n) => {
                ctx.check(t.contains("size\t"), || format!("size {n} from no size line"));
                true
            }
            Err(e) => {
                ctx.refused(e);
                false
            }
        }),
        text_target("zfs-single-guid", corpus::SINGLE_GUIDS, corpus::TEXT_DICT, |ctx, t| match parse::single_guid(t) {
            Ok(g) => {
                // Leading zeros are tolerated; the value must be the text's.
                let digits = t.trim_end_matches('\n').trim_start_matches('0');
                ctx.check(digits == g.to_string(), || format!("GUID {g} from {t:?}"));
                true
            }
            Err(e) => {
                ctx.refused(e);
                false
            }
        }),
        nvlist_target(),
        validator_target(),
        text_target(
            "resume-token",
            &corpus::TOKENS.iter().map(|t| std::str::from_utf8(t).expect("ascii").trim()).collect::<Vec<_>>(),
            corpus::NVT_DICT,
            resume_token,
        ),
        text_target(
            "resume-nvt",
            &corpus::NVT.iter().map(|t| std::str::from_utf8(t).expect("ascii")).collect::<Vec<_>>(),
            corpus::NVT_DICT,
            resume_nvt,
        ),
        text_target("names", corpus::NAMES, corpus::TEXT_DICT, names),
    ];
    let mut config = text_target("config", corpus::CONFIGS, corpus::CONFIG_DICT, |ctx, t| match Config::parse(t) {
        Ok(c) => {
            ctx.check(!c.source.datasets.is_empty() && !c.targets.is_empty(), || "empty config accepted".into());
            for t in &c.targets {
                bandwidth(ctx, &t.bandwidth);
            }
            true
        }
        Err(e) => {
            ctx.refused(e);
            false
        }
    });
    // The config is the user's own file, not hostile: its errors quote it.
    config.hostile = false;
    config.mem_per_byte = 256;
    v.push(config);
    // The properties manifest comes back from the box inside a restored
    // snapshot, written by a source that may have been compromised since.
    let mut manifest = text_target("manifest", &[], corpus::MANIFEST_DICT, manifest);
    manifest.shape = Shape::Json;
    manifest.seeds = corpus::manifests();
    v.push(manifest);
    // The box's txg journal is root's own file, but a parser that refuses
    // what it does not fully understand is still worth a bounded run.
    let mut journal = text_target("txg-journal", &[], corpus::TEXT_DICT, txg_journal);
    journal.hostile = false;
    journal.seeds = corpus::journals();
    v.push(journal);
    // doctor: what the box's own tools print, judged into checks.
    let mut doctor_json = text_target("doctor-json", &[], corpus::JSON_DICT, doctor_json);
    doctor_json.shape = Shape::Json;
    doctor_json.seeds = corpus::DOCTOR_JSON.iter().map(|s| s.as_bytes().to_vec()).collect();
    // serde_json's Value (and the rule set's copies of rules) take more per
    // input byte than the row parsers.
    doctor_json.mem_per_byte = 1024;
    v.push(doctor_json);
    v.push(text_target("doctor-text", corpus::DOCTOR_TEXT, corpus::TEXT_DICT, doctor_text));
    // The kernel's listening sockets, judged with sshd -T's verdict.
    v.push(text_target("doctor-sockets", corpus::DOCTOR_SOCKETS, corpus::TEXT_DICT, doctor_sockets));
    // box keepalive: the installed WireGuard file and `wg show`'s output.
    v.push(text_target("keepalive", KEEPALIVE_SEEDS, corpus::TEXT_DICT, keepalive));
    // The box's audit, as `serve` hands it to the source.
    let mut box_audit = text_target("box-audit", &[], corpus::JSON_DICT, box_audit);
    box_audit.shape = Shape::Json;
    box_audit.seeds = corpus::box_audits();
    box_audit.max_len = doctor::boxaudit::MAX_AUDIT_LEN + 1024;
    box_audit.mem_per_byte = 1024;
    v.push(box_audit);
    // `box apply`'s bundle: root installs what it says.
    let mut bundle = text_target("bundle", BUNDLE_SEEDS, corpus::CONFIG_DICT, bundle);
    bundle.max_len = 256 * 1024;
    bundle.mem_per_byte = 1024;
    v.push(bundle);
    // `box install`: lsblk's tree (a disk's model and serial come from its
    // firmware), decided into a plan or a refusal and rendered; and the
    // root's LUKS2 header.
    v.push(Target {
        name: "install-lsblk",
        shape: Shape::Json,
        dict: corpus::LSBLK_DICT,
        seeds: corpus::LSBLK.iter().map(|s| s.as_bytes().to_vec()).collect(),
        max_len: 256 * 1024,
        mem_base: MIB,
        mem_per_byte: 1024,
        hostile: true,
        weight: 1,
        run: Box::new(install_lsblk),
    });
    let mut luks = text_target("install-luks", corpus::INSTALL_LUKS, corpus::JSON_DICT, install_luks);
    luks.shape = Shape::Json;
    luks.mem_per_byte = 1024;
    v.push(luks);
    for t in &mut v {
        if t.name.starts_with("frames") || t.name == "stream-validator" {
            t.weight = 2;
        }
    }
    v
}

// ---- box install ----

/// lsblk's tree: refused, or every device bounded and plain, and the plan
/// made from it (a stick and whatever disks it lists) never a disk that
/// is not blank, and its report plain ASCII.
fn install_lsblk(ctx: &mut Ctx, input: &[u8]) -> bool {
    use zoffsite_core::image::install::{self, BundleFacts, Facts, Outcome, Report};
    match install::parse_lsblk(input) {
        Ok(devices) => {
            let all: Vec<&install::BlockDevice> = devices.iter().flat_map(install::BlockDevice::walk).collect();
            ctx.check(all.len() <= install::MAX_DEVICES, || format!("{} devices", all.len()));
            for d in &all {
                ctx.check(d.path.starts_with("/dev/") && !d.path.contains(".."), || format!("path {:?}", d.path));
                for w in [&d.model, &d.serial].into_iter().flatten() {
                    ctx.check(w.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), || format!("shown {w:?}"));
                }
            }
            let facts = Facts {
                report_dir: Ok("/efi/zoffsite".into()),
                bundle: Ok(BundleFacts {
                    name: "friend".into(),
                    pool: Dataset::new("offsite").expect("pool"),
                    sha256: "00".repeat(32),
                }),
                efi: true,
                secure_boot: Ok(Some(vec![6, 0, 0, 0, 1])),
                setup_mode: Ok(Some(vec![6, 0, 0, 0, 0])),
                tpm_version: Ok(Some("2\n".into())),
                tpm_device: Ok(true),
                lsblk: Ok(devices.clone()),
                by_id: Ok(Vec::new()),
            };
            let report = match install::plan(&facts) {
                Ok(p) => {
                    for disk in [&p.system, &p.data] {
                        let d = devices.iter().find(|d| d.path == disk.path);
                        ctx.check(
                            d.is_some_and(|d| {
                                d.kind == "disk"
                                    && d.pttype.is_none()
                                    && d.fstype.is_none()
                                    && d.children.is_empty()
                                    && !d.removable
                                    && !d.holds_root()
                            }),
                            || format!("{} chosen but not blank", disk.path),
                        );
                    }
                    ctx.check(p.system.path != p.data.path && p.system.size <= p.data.size, || {
                        "system and data".into()
                    });
                    Report::planned(&p, 0, Outcome::DryRun)
                }
                Err(r) => {
                    ctx.check(!r.reason.is_empty() && !r.fix.is_empty(), || "a refusal without a reason or fix".into());
                    Report::refused(*r, 0)
                }
            };
            let text = install::render_text(&report);
            ctx.check(text.is_ascii(), || "a report that is not ASCII".into());
            ctx.check(install::render_json_text(&report).is_ascii(), || "a JSON report that is not ASCII".into());
            true
        }
        Err(e) => {
            ctx.refused(e);
            false
        }
    }
}

/// The root's LUKS2 header: refused, or a key file slot that no token
/// names, and never both a slot to wipe and a finished header.
fn install_luks(ctx: &mut Ctx, t: &str) -> bool {
    use zoffsite_core::image::install;
    match install::parse_keyslots(t) {
        Ok(k) => {
            if let Ok(slot) = k.key_file_slot() {
                ctx.check(k.slots.contains(&slot), || format!("slot {slot} not in the header"));
                ctx.check(!k.tokens.values().any(|(_, s)| s.contains(&slot)), || format!("slot {slot} has a token"));
                ctx.check(k.check_final().is_err(), || "a slot to wipe in a finished header".into());
            }
            true
        }
        Err(e) => {
            ctx.refused(e);
            false
        }
    }
}

// ---- files read back: the restored manifest, the box's txg journal ----

fn manifest(ctx: &mut Ctx, t: &str) -> bool {
    match zoffsite_core::manifest::Manifest::parse(t) {
        Ok(m) => {
            let again = zoffsite_core::manifest::Manifest::parse(&m.render());
            ctx.check(again.as_ref() == Ok(&m), || format!("renders to something else: {again:?}"));
            if let Some(tree) = m.tree() {
                ctx.check(tree.contains(""), || "a tree without its top".into());
            }
            true
        }
        Err(e) => {
            ctx.refused(e);
            false
        }
    }
}

fn txg_journal(ctx: &mut Ctx, t: &str) -> bool {
    match zoffsite_core::journal::Journal::parse(t) {
        Ok(j) => {
            let again = zoffsite_core::journal::Journal::parse(&j.render());
            ctx.check(again.as_ref() == Ok(&j), || format!("renders to something else: {again:?}"));
            // Every window is ordered, and a clamped time stays in it.
            for txg in j.entries.iter().map(|e| e.txg).chain([0, 1, u64::MAX]) {
                let w = j.window(txg);
                if let (Some(by), Some(after)) = (w.by, w.after) {
                    ctx.check(after <= by, || format!("txg {txg}: after {after} > by {by}"));
                }
                if let (Some(got), Some(by)) = (j.received(txg, Some(i64::MAX)), w.by) {
                    ctx.check(got <= by, || format!("txg {txg}: {got} past its window's end {by}"));
                }
            }
            true
        }
        Err(e) => {
            ctx.refused(e);
            false
        }
    }
}

// ---- doctor ----

/// Every check is one bounded line; unknown ones are the parsers' refusals.
fn doctor_checks(ctx: &mut Ctx, checks: &[doctor::Check]) -> bool {
    let mut accepted = false;
    for c in checks {
        for line in [c.summary(), c.fix().unwrap_or("-")] {
            ctx.check(
                !line.is_empty()
                    && line.len() <= doctor::MAX_LINE + '…'.len_utf8()
                    && !line.chars().any(char::is_control),
                || format!("{}: not one bounded line: {line:?}", c.id()),
            );
        }
        ctx.check((c.status() == doctor::Status::Ok) == c.fix().is_none(), || format!("{}: fix iff not ok", c.id()));
        if c.status() == doctor::Status::Unknown {
            ctx.refused(c.summary());
        } else {
            accepted = true;
        }
    }
    accepted
}

fn doctor_json(ctx: &mut Ctx, t: &str) -> bool {
    let fw = doctor::firewall::Expect {
        tunnel_if: "wg0".into(),
        ssh_port: 22,
        tunnel_nets: vec![doctor::firewall::Net::parse("10.77.0.0/24").expect("net")],
    };
    let checks =
        [doctor::luks::check_luks_tpm(doctor::luks::RootDevice::Luks2(t), None), doctor::firewall::check(t, &fw)];
    doctor_checks(ctx, &checks)
}

fn doctor_text(ctx: &mut Ctx, t: &str) -> bool {
    let want = doctor::sshd::Expect { listen: vec!["10.77.0.2:22".parse().expect("addr")], user: "zoffsite".into() };
    let mut checks = doctor::sshd::check(t, &want);
    // The three `wg show` listings, separated by a form feed.
    let mut l = t.splitn(3, '\x0c');
    let show = doctor::wireguard::Show {
        latest_handshakes: l.next().unwrap_or(""),
        endpoints: l.next().unwrap_or(""),
        persistent_keepalive: l.next().unwrap_or(""),
    };
    checks.extend(doctor::wireguard::check(doctor::Side::Box, &show, 1_796_000_000));
    checks.push(doctor::zfs::check_version(doctor::Side::Box, t));
    let user = zoffsite_core::boxinit::UserName::new("zoffsite").expect("user");
    let root = Dataset::new("offsite/home").expect("root");
    checks.push(doctor::zfs::check_delegation(&user, &root, true, t));
    doctor_checks(ctx, &checks)
}

/// `/proc/net/tcp` (and `tcp6`): refused, or only listening sockets
/// (at most one per line), and `box.sshd-listen` from them one bounded
/// line, never ok when anything but the tunnel address listens on port 22.
fn doctor_sockets(ctx: &mut Ctx, t: &str) -> bool {
    let want = doctor::sshd::Expect { listen: vec!["10.77.0.2:22".parse().expect("addr")], user: "zoffsite".into() };
    let ok = doctor::Check::ok(doctor::CheckId::SshdListen, "sshd listens only on 10.77.0.2:22");
    match doctor::sockets::parse_proc_net_tcp(t) {
        Ok(l) => {
            ctx.check(l.len() < t.lines().count().max(1), || {
                format!("{} sockets from {} lines", l.len(), t.lines().count())
            });
            let exposed = l.iter().any(|a| a.port() == 22 && a.ip().to_canonical() != want.listen[0].ip());
            let c = doctor::sshd::with_sockets(ok, Some(Ok(l)), &want);
            ctx.check((c.status() == doctor::Status::Ok) != exposed, || format!("{c:?}"));
            doctor_checks(ctx, &[c])
        }
        Err(e) => {
            ctx.check(!e.is_empty() && !e.contains('\n'), || format!("error {e:?}"));
            ctx.refused(e);
            false
        }
    }
}

/// The box's report: refused, or consistent (counts and status as its
/// checks say, a fix exactly when not ok, every text one safe bounded
/// line), and the posture judged from it one safe line too.
fn box_audit(ctx: &mut Ctx, t: &str) -> bool {
    use doctor::boxaudit::{self, Fetched, Posture, PostureState};
    let safe = |s: &str| !s.chars().any(protocol::must_escape);
    match boxaudit::parse(t) {
        Ok(a) => {
            let c = a.counts();
            ctx.check(c.ok + c.warn + c.unknown + c.fail == a.checks().len(), || format!("counts {c:?}"));
            ctx.check(a.checks().len() <= boxaudit::MAX_CHECKS, || "too many checks".into());
            let worst = a.checks().iter().map(|k| k.status).max().unwrap_or(doctor::Status::Unknown);
            ctx.check(a.status() == worst, || "status is not the worst check's".into());
            for k in a.checks() {
                ctx.check(k.id.as_str().starts_with("box.") && k.id.as_str().len() <= boxaudit::MAX_ID_LEN, || {
                    format!("id {:?}", k.id)
                });
                for line in [k.summary.as_str(), k.fix.as_deref().unwrap_or("")] {
                    ctx.check(safe(line) && line.len() <= boxaudit::MAX_TEXT, || format!("unsafe text {line:?}"));
                }
                ctx.check((k.status == doctor::Status::Ok) == k.fix.is_none(), || format!("{}: fix iff not ok", k.id));
            }
            let p = Posture::judge(&Fetched::Report(t.to_owned()), 1_796_000_000);
            ctx.check(p.state == PostureState::Audited, || format!("posture {:?}", p.state));
            let line = p.line();
            ctx.check(safe(&line), || format!("unsafe posture line {line:?}"));
            doctor_checks(ctx, &[p.check("friend")]);
            true
        }
        Err(e) => {
            let p = Posture::judge(&Fetched::Report(t.to_owned()), 1_796_000_000);
            ctx.check(p.state == PostureState::Invalid && p.is_finding(), || {
                "a refused report is an invalid posture".into()
            });
            ctx.refused(e);
            false
        }
    }
}

// ---- frames ----

/// A reader that hands out the input a few bytes at a time, as a pipe does.
/// (It does not inject `Interrupted`: `read_frame` reads a frame's first
/// byte with a bare `read`, which would pass EINTR up as an I/O error, but
/// zoffsite installs no signal handlers, so its pipe reads never see one.)
struct Trickle<'a> {
    data: &'a [u8],
    rng: Rng,
    max: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.rng.range(1, self.max).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// What reading a byte stream frame by frame gave.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Msg(Vec<u8>),
    Data(usize),
    End,
    Closed,
    Error(String),
}

fn read_all(r: &mut impl Read, max_msg: usize) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        match protocol::read_frame(r, max_msg) {
            Ok(Frame::Msg(b)) => out.push(Event::Msg(b)),
            Ok(Frame::Data(d)) => out.push(Event::Data(d.len())),
            Ok(Frame::End) => out.push(Event::End),
            Err(ProtoError::Closed) => {
                out.push(Event::Closed);
                return out;
            }
            Err(e) => {
                out.push(Event::Error(e.to_string()));
                return out;
            }
        }
    }
}

fn frames_target(name: &'static str, response: bool) -> Target {
    let mut seeds = Vec::new();
    for mode in [0u8, 0x13, 0x42, 0xc7] {
        if response {
            seeds.push([&[mode][..], &corpus::response_frames()].concat());
        } else {
            for s in corpus::sessions() {
                seeds.push([&[mode][..], &s].concat());
            }
        }
    }
    Target {
        name,
        shape: Shape::Frames { prefix: 1 },
        dict: corpus::JSON_DICT,
        seeds,
        max_len: 2 * MIB,
        // A frame is allocated once its length passed the check: up to the
        // limit, whatever the input's size.
        mem_base: if response { MAX_RESPONSE_LEN } else { MAX_REQUEST_LEN.max(MAX_DATA_LEN) } + 4 * MIB,
        mem_per_byte: 64,
        // What the box says reaches the user's terminal; what the source
        // says reaches only serve's answers, which the source sanitizes.
        hostile: response,
        weight: 2,
        run: Box::new(move |ctx, input| frames(ctx, input, response)),
    }
}

/// The first byte picks how the bytes arrive; the rest is the wire.
fn frames(ctx: &mut Ctx, input: &[u8], response: bool) -> bool {
    let (&mode, wire) = input.split_first().unwrap_or((&0, &[]));
    let max_msg = if response { MAX_RESPONSE_LEN } else { MAX_REQUEST_LEN };
    let events = read_all(&mut Cursor::new(wire), max_msg);
    // However the bytes arrive, the frames are the same.
    let mut trickle = Trickle { data: wire, rng: Rng::new(u64::from(mode)), max: 1 + usize::from(mode & 0x7f) };
    let again = read_all(&mut trickle, max_msg);
    ctx.check(again == events, || {
        let first = events.iter().zip(&again).position(|(a, b)| a != b).unwrap_or(events.len().min(again.len()));
        format!(
            "reading the same bytes in pieces gave {:?} where one read gave {:?} (frame {first})",
            again.get(first),
            events.get(first)
        )
    });
    let mut ok = true;
    let asked = asked_datasets();
    for e in events {
        match e {
            Event::Msg(body) if response => match protocol::decode::<Response>(&body) {
                Ok(r) => {
                    round_trip(ctx, &r);
                    if let Response::Listing { datasets } = r {
                        ok &= listing(ctx, asked, datasets);
                    }
                }
                Err(e) => {
                    ctx.refused(e);
                    ok = false;
                }
            },
            Event::Msg(body) => match protocol::decode::<Request>(&body) {
                Ok(r) => round_trip(ctx, &r),
                Err(e) => {
                    ctx.refused(e);
                    ok = false;
                }
            },
            Event::Data(_) | Event::End | Event::Closed => {}
            Event::Error(e) => {
                ctx.errors.push(e);
                ok = false;
            }
        }
    }
    // Feed the data itself (read_all kept only lengths).
    if !response {
        ok &= feed_requests(ctx, wire);
    }
    ok
}

/// What the source asks for in its `List` (the corpus's).
fn asked_datasets() -> &'static [Dataset] {
    static ASKED: OnceLock<Vec<Dataset>> = OnceLock::new();
    ASKED.get_or_init(|| {
        corpus::requests()
            .into_iter()
            .find_map(|r| if let Request::List { datasets } = r { Some(datasets) } else { None })
            .unwrap_or_default()
    })
}

/// serve's pipeline over a session: each Receive's D frames into a
/// validator, refusals recorded.
fn feed_requests(ctx: &mut Ctx, wire: &[u8]) -> bool {
    let mut r = Cursor::new(wire);
    let mut validator: Option<StreamValidator> = None;
    let mut ok = true;
    while let Ok(f) = protocol::read_frame(&mut r, MAX_REQUEST_LEN) {
        match f {
            Frame::Msg(b) => {
                if let Ok(Request::Receive { guid, from, resume, .. }) = protocol::decode::<Request>(&b) {
                    validator = Some(StreamValidator::new(Expect {
                        from,
                        to: guid,
                        resuming: resume,
                        key: None,
                        name: None,
                        held: Default::default(),
                    }));
                }
            }
            Frame::Data(d) => {
                if let Some(v) = validator.as_mut() {
                    if let Err(e) = v.feed(&d) {
                        ctx.refused(e);
                        ok = false;
                        validator = None;
                    }
                }
            }
            Frame::End => {
                if let Some(v) = validator.take() {
                    if let Err(e) = v.finish() {
                        ctx.refused(e);
                        ok = false;
                    }
                }
            }
        }
    }
    ok
}

/// A decoded message encodes and decodes to itself.
fn round_trip<T>(ctx: &mut Ctx, v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
{
    let again = serde_json::to_vec(v)
        .map_err(|e| e.to_string())
        .and_then(|b| protocol::decode::<T>(&b).map_err(|e| e.to_string()));
    ctx.check(again.as_ref().ok() == Some(v), || format!("{v:?} does not survive a round trip: {again:?}"));
}

fn listing(ctx: &mut Ctx, asked: &[Dataset], datasets: Vec<protocol::RemoteDataset>) -> bool {
    let names: Vec<Dataset> = datasets.iter().map(|d| d.name.clone()).collect();
    let unique: BTreeSet<&Dataset> = names.iter().collect();
    // Against what the source asked, and against exactly the names listed.
    let mut ok = true;
    for asked in [asked, &names[..]] {
        match check_listing(asked, datasets.clone()) {
            Ok(m) => {
                ctx.check(m.len() == datasets.len() && m.keys().all(|k| asked.contains(k)), || {
                    format!("check_listing kept {} of {} entries", m.len(), datasets.len())
                });
                for d in m.values() {
                    let guids: BTreeSet<Guid> = d.snapshots.iter().map(|s| s.guid).collect();
                    ctx.check(guids.len() == d.snapshots.len(), || format!("duplicate GUIDs accepted in {}", d.name));
                    if let Some(t) = &d.resume_token {
                        ctx.check(!t.is_empty() && t.len() <= parse::MAX_TOKEN_LEN, || "bad token accepted".into());
                    }
                }
            }
            Err(e) => {
                ctx.refused(e);
                ok = false;
            }
        }
    }
    if unique.len() != names.len() {
        ctx.check(!ok, || "a listing naming a dataset twice was accepted".into());
    }
    ok
}

fn json_target(name: &'static str, response: bool) -> Target {
    let seeds = if response {
        corpus::responses().iter().map(corpus::json).collect()
    } else {
        corpus::requests().iter().map(corpus::json).collect()
    };
    Target {
        name,
        shape: Shape::Json,
        dict: corpus::JSON_DICT,
        seeds,
        max_len: 256 * 1024,
        mem_base: MIB,
        mem_per_byte: 64,
        hostile: response,
        weight: 1,
        run: Box::new(move |ctx, body| {
            if response {
                match protocol::decode::<Response>(body) {
                    Ok(r) => {
                        round_trip(ctx, &r);
                        match r {
                            Response::Listing { datasets } => listing(ctx, asked_datasets(), datasets),
                            Response::Error { message, .. } => {
                                let s = protocol::sanitize(&message, protocol::MAX_ERROR_TEXT);
                                ctx.check(
                                    s.len() <= protocol::MAX_ERROR_TEXT + '…'.len_utf8()
                                        && !s.chars().any(|c| c.is_control() && c != '\n'),
                                    || format!("sanitize left {s:?}"),
                                );
                                true
                            }
                            _ => true,
                        }
                    }
                    Err(e) => {
                        ctx.refused(e);
                        false
                    }
                }
            } else {
                match protocol::decode::<Request>(body) {
                    Ok(r) => {
                        round_trip(ctx, &r);
                        true
                    }
                    Err(e) => {
                        ctx.refused(e);
                        false
                    }
                }
            }
        }),
    }
}

// ---- streams ----

fn nvlist_target() -> Target {
    let seeds = corpus::streams()
        .into_iter()
        .filter_map(|s| {
            let len = u32::from_le_bytes(s.bytes.get(4..8)?.try_into().ok()?) as usize;
            s.bytes.get(312..312 + len).filter(|p| !p.is_empty()).map(<[u8]>::to_vec)
        })
        .collect();
    Target {
        name: "nvlist",
        shape: Shape::NvList,
        dict: corpus::NVLIST_DICT,
        seeds,
        max_len: 4096,
        mem_base: MIB,
        mem_per_byte: 64,
        hostile: true,
        weight: 1,
        run: Box::new(|ctx, input| {
            let list = nvlist::unpack(input);
            let key = nvlist::KeyWrap::from_begin_payload(input);
            ctx.check(key.is_err() || list.is_ok(), || "a key read from a list that does not decode".into());
            match (list, key) {
                (Ok(l), _) => {
                    ctx.check(l.pairs.len() <= nvlist::MAX_PAIRS, || format!("{} pairs", l.pairs.len()));
                    // One reading only: no name twice in a list (libnvpair
                    // would read the last), and the canonical bytes.
                    ctx.check(unique_names(&l), || "a list with a name twice was accepted".into());
                    ctx.check(nvlist::pack(&l, input[1] == 0) == input, || {
                        "accepted bytes that do not pack back to themselves".into()
                    });
                    true
                }
                (Err(e), _) => {
                    ctx.refused(e);
                    false
                }
            }
        }),
    }
}

/// Input: `[expectation, chunking, seed, seed]` then the stream.
/// Expectations 0..8 are the fixtures'; the others are read from the
/// stream's own first BEGIN (so mutants of any stream can be valid).
fn validator_target() -> Target {
    let seeds = corpus::streams()
        .into_iter()
        .enumerate()
        .flat_map(|(i, s)| {
            [[i as u8, 0, 1, 2], [i as u8, 3, 7, 9], [i as u8, 5, 0, 0]].map(|h| [&h[..], &s.bytes].concat())
        })
        .collect();
    Target {
        name: "stream-validator",
        shape: Shape::Stream { prefix: 4 },
        dict: corpus::TEXT_DICT,
        seeds,
        max_len: 512 * 1024,
        // O(1) in the stream: a header buffer and the substream list.
        mem_base: MIB,
        mem_per_byte: 0,
        hostile: true,
        weight: 2,
        run: Box::new(validate),
    }
}

fn fixture_expects() -> &'static [Expect] {
    static EXPECTS: OnceLock<Vec<Expect>> = OnceLock::new();
    EXPECTS.get_or_init(|| {
        corpus::streams()
            .iter()
            .map(|f| Expect {
                from: f.from.map(|n| Guid::new(guid(n)).expect("nonzero")),
                to: Guid::new(guid(f.to)).expect("nonzero"),
                resuming: f.resuming,
                key: None,
                name: None,
                held: Default::default(),
            })
            .collect()
    })
}

fn expectation(sel: u8, chunking: u8, s: &[u8]) -> Expect {
    if let Some(e) = fixture_expects().get(usize::from(sel)) {
        return e.clone();
    }
    // From the stream: the first BEGIN's fromguid, and the toguid of the
    // first or last BEGIN (little-endian guess; wrong guesses are refusals).
    let u64at = |o: usize| s.get(o..o + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8")));
    let compound = s.get(16).is_some_and(|b| b & 3 == 2);
    let first = if compound { 624 } else { 0 };
    let to = if compound { u64at(first + 40) } else { u64at(40) };
    Expect {
        from: Guid::new(u64at(first + 48)).ok(),
        to: Guid::new(to).unwrap_or(Guid::new(1).expect("nonzero")),
        resuming: chunking & 0x80 != 0,
        key: None,
        name: None,
        held: Default::default(),
    }
}

fn validate(ctx: &mut Ctx, input: &[u8]) -> bool {
    let (head, s) = input.split_at(input.len().min(4));
    let [sel, chunking, a, b] = [0, 1, 2, 3].map(|i| head.get(i).copied().unwrap_or(0));
    let expect = expectation(sel % 12, chunking, s);
    let mut whole = StreamValidator::new(expect.clone());
    let fed = whole.feed(s);
    let complete = whole.is_complete();
    ctx.check(whole.substreams().len() <= MAX_SUBSTREAMS, || "more substreams than the cap".into());
    let sticky = whole.feed(&[]);
    if let Err(e) = &fed {
        ctx.check(sticky.as_ref().err() == Some(e), || format!("error not sticky: {e} then {sticky:?}"));
    }
    let one = whole.finish();
    if complete {
        ctx.check(one.is_ok(), || format!("is_complete but finish says {one:?}"));
    }
    if let Ok(sum) = &one {
        ctx.check(sum.bytes == s.len() as u64, || format!("summary says {} bytes of {}", sum.bytes, s.len()));
    }
    // The same bytes in other pieces.
    let max = [1, 7, 311, 312, 313, 4096, 65536, usize::MAX][usize::from(chunking & 7)];
    let mut rng = Rng::new(u64::from(a) << 8 | u64::from(b));
    let mut v = StreamValidator::new(expect);
    let mut rest = s;
    let mut r = Ok(());
    while !rest.is_empty() && r.is_ok() {
        let n = rng.range(1, max.min(rest.len()));
        r = v.feed(&rest[..n]);
        rest = &rest[n..];
    }
    let chunked = r.and_then(|()| v.finish());
    ctx.check(chunked == one, || format!("chunks of up to {max} bytes gave {chunked:?}, one feed gave {one:?}"));
    if one.is_ok() {
        // Every substream's key data in an accepted stream has one reading.
        for p in zoffsite_core::records::craft::begin_payloads(s) {
            let l = nvlist::unpack(&p);
            ctx.check(l.as_ref().is_ok_and(unique_names), || format!("accepted key data that reads {l:?}"));
        }
    }
    match one {
        Ok(_) => true,
        Err(e) => {
            ctx.refused(e);
            false
        }
    }
}

/// No name twice in any list, checked here independently of the reader.
fn unique_names(l: &nvlist::NvList) -> bool {
    let mut seen = std::collections::HashSet::new();
    l.pairs.iter().all(|(n, v)| {
        seen.insert(n.as_str())
            && match v {
                nvlist::Value::List(inner) => unique_names(inner),
                _ => true,
            }
    })
}

// ---- resume ----

fn resume_token(ctx: &mut Ctx, t: &str) -> bool {
    match resume::check_token_alphabet(t) {
        Ok(()) => {
            // What passes the strict check passes the lenient ones.
            let row = format!("offsite/home/t\t{t}\n");
            ctx.check(parse::receiver_datasets(&row).is_ok(), || "token refused by receiver_datasets".into());
            let d = Dataset::new("t").expect("valid");
            let rd = protocol::RemoteDataset {
                name: d.clone(),
                exists: true,
                snapshots: vec![],
                resume_token: Some(t.to_owned()),
            };
            ctx.check(check_listing(&[d], vec![rd]).is_ok(), || "token refused by check_listing".into());
            true
        }
        Err(e) => {
            ctx.refused(e);
            false
        }
    }
}

fn resume_nvt(ctx: &mut Ctx, t: &str) -> bool {
    let info = match resume::parse_send_nvt(t) {
        Ok(i) => i,
        Err(e) => {
            ctx.refused(e);
            return false;
        }
    };
    ctx.check(t.contains(&format!("\ttoname = {}\n", info.toname)), || {
        format!("toname {} not in the output", info.toname)
    });
    // Against itself: refused only for not raw or a base elsewhere.
    let own = resume::check_against(&info, &info.toname.dataset, info.toguid, info.fromguid);
    let elsewhere = info.from.as_ref().is_some_and(|f| *f.dataset() != info.toname.dataset);
    ctx.check(own.is_ok() == (info.rawok && !elsewhere), || format!("check_against itself: {own:?}"));
    if let Err(e) = own {
        ctx.refused(e);
    }
    // Against the fixtures' plans.
    for (ds, to, from) in
        [("t/big", "t/big@b1", None), ("t/big", "t/big@b2", Some("t/big@b1")), ("t/src", "t/src@s3", Some("t/src@s2"))]
    {
        let to = Guid::new(guid(to)).expect("nonzero");
        let from = from.map(|f| Guid::new(guid(f)).expect("nonzero"));
        if let Err(e) = resume::check_against(&info, &Dataset::new(ds).expect("valid"), to, from) {
            ctx.refused(e);
        }
    }
    true
}

// ---- names ----

/// A parsed bandwidth schedule's decisions never panic, and a change it
/// announces is one (around both of a year's DST jumps, and far out).
fn bandwidth(ctx: &mut Ctx, s: &zoffsite_core::bandwidth::Schedule) {
    let _ = s.describe();
    let tz = jiff::tz::TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").expect("a valid rule");
    // 1970, 2025-03-30T00:30Z, 2025-10-26T00:30Z, the end of time.
    for t in [jiff::Timestamp::UNIX_EPOCH, ts(1_743_294_600), ts(1_761_438_600), jiff::Timestamp::MAX] {
        let now = s.limit_at(t, &tz);
        if let Some(c) = s.next_change(t, &tz) {
            ctx.check(c.at > t && c.limit != now && s.limit_at(c.at, &tz) == c.limit, || {
                format!("next_change from {t} ({now}): {c:?}")
            });
        }
    }
}

fn ts(secs: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(secs).expect("in range")
}

fn names(ctx: &mut Ctx, s: &str) -> bool {
    let mut any = false;
    let root = Dataset::new("offsite/home").expect("valid");
    match Dataset::new(s) {
        Ok(d) => {
            any = true;
            ctx.check(d.to_string() == s && s.len() <= 255, || format!("dataset {d} from {s:?}"));
            ctx.check(d.parent().is_some() == (d.depth() > 1), || format!("{d}: parent vs depth"));
            if let Some(p) = d.parent() {
                ctx.check(d.is_within(&p) && !p.is_within(&d), || format!("{d} is not within its parent {p}"));
            }
            match root.join(&d) {
                Ok(j) => {
                    ctx.check(j.strip_root(&root).as_ref() == Some(&d), || format!("{j} does not strip back to {d}"));
                    ctx.check(j.is_within(&root), || format!("{j} escapes {root}"));
                    let anc = j.ancestors_below(&root);
                    ctx.check(anc.len() == d.depth() - 1, || format!("{j}: {} ancestors", anc.len()));
                    ctx.check(anc.iter().all(|a| a.is_within(&root) && *a != root), || {
                        format!("{j}: ancestor outside")
                    });
                }
                Err(e) => ctx.refused(e),
            }
            let via_json: Result<Dataset, _> = serde_json::from_value(serde_json::Value::String(s.to_owned()));
            ctx.check(via_json.as_ref().ok() == Some(&d), || format!("serde disagrees on {s:?}"));
        }
        Err(e) => {
            let via_json: Result<Dataset, _> = serde_json::from_value(serde_json::Value::String(s.to_owned()));
            ctx.check(via_json.is_err(), || format!("serde accepts {s:?}"));
            ctx.refused(e);
        }
    }
    match SnapName::new(s) {
        Ok(n) => {
            any = true;
            ctx.check(n.to_string() == s, || format!("snapshot name {n} from {s:?}"));
        }
        Err(e) => ctx.refused(e),
    }
    match Snapshot::new(s) {
        Ok(n) => {
            any = true;
            ctx.check(n.to_string() == s && s.len() <= 255, || format!("snapshot {n} from {s:?}"));
            match root.join(&n.dataset).and_then(|j| j.snapshot(&n.name)) {
                Ok(j) => ctx.check(j.to_string().len() <= 255, || format!("{j} is too long")),
                Err(e) => ctx.refused(e),
            }
        }
        Err(e) => ctx.refused(e),
    }
    match Bookmark::new(s) {
        Ok(b) => {
            any = true;
            ctx.check(b.to_string() == s && s.len() <= 255, || format!("bookmark {b} from {s:?}"));
        }
        Err(e) => ctx.refused(e),
    }
    match s.parse::<Guid>() {
        Ok(g) => {
            any = true;
            ctx.check(g.to_string() == s.trim_start_matches('0'), || format!("GUID {g} from {s:?}"));
        }
        Err(e) => ctx.refused(e),
    }
    any
}

const KEEPALIVE_SEEDS: &[&str] = &[
    "[Interface]\nAddress = 10.77.0.2/24\n\n[Peer]\nPublicKey = dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=\nEndpoint = home.example.org:51820\n",
    "[NetDev]\nName=zo-x\n[WireGuardPeer]\nPublicKey=dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=\nEndpoint=[2001:db8::1]:51820\n",
    "dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=\t1796000000\n",
    "dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=\t203.0.113.7:51820\n",
    "dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=\t(none)\n",
];

fn keepalive(ctx: &mut Ctx, t: &str) -> bool {
    use zoffsite_core::provision::keepalive as k;
    let mut any = false;
    for r in [
        k::parse_wg_quick(t).map(|_| ()),
        k::parse_netdev(t).map(|_| ()),
        // box wait: the box's key from the source's own file.
        k::parse_source_peer_key(t, zoffsite_core::provision::Backend::WgQuick).map(|_| ()),
        k::parse_source_peer_key(t, zoffsite_core::provision::Backend::Networkd).map(|_| ()),
    ] {
        match r {
            Ok(()) => any = true,
            Err(e) => ctx.refused(e),
        }
    }
    match k::parse_handshakes(t) {
        Ok(h) => {
            ctx.check(h.len() == t.lines().count(), || "a handshake line lost".into());
            any = true;
        }
        Err(e) => ctx.refused(e),
    }
    match k::parse_endpoints(t) {
        Ok(e) => {
            ctx.check(e.len() == t.lines().count(), || "an endpoint line lost".into());
            any = true;
        }
        Err(e) => ctx.refused(e),
    }
    any
}

// ---- box apply's bundle ----

const BUNDLE_SEEDS: &[&str] = &[
    "format = \"zoffsite-bundle\"\nversion = 1\nside = \"source\"\nname = \"friend\"\nenable = [\"zoffsite-backup.timer\", \"systemd-networkd.service\"]\n\n[[file]]\npath = \"/etc/sysctl.d/60-zoffsite.conf\"\nmode = \"0644\"\ntext = \"# x\\nnet.ipv4.ip_nonlocal_bind = 1\\n\"\n\n[[file]]\npath = \"/etc/systemd/system/wg-quick@zo-friend.service.d/zoffsite.conf\"\nmode = \"0644\"\ntext = \"[Service]\\n\"\n\n[[secret]]\npath = \"/etc/systemd/network/zo-friend.key\"\nmode = \"0640\"\ngroup = \"systemd-network\"\ntext = \"k\\n\"\n",
];

fn bundle(ctx: &mut Ctx, t: &str) -> bool {
    use zoffsite_core::provision::{allowed_paths, bundle as b};
    match b::parse(t) {
        Ok(parsed) => {
            let (secrets, files) = allowed_paths(&parsed.name);
            for f in &parsed.files {
                ctx.check(files.contains(&f.path) && f.mode & 0o7133 == 0, || format!("file {} {:o}", f.path, f.mode));
            }
            for s in &parsed.secrets {
                ctx.check(secrets.iter().any(|p| p == s.path.as_str()) && s.mode & 0o7137 == 0, || {
                    format!("secret {} {:o}", s.path, s.mode)
                });
            }
            ctx.check(b::parse(&b::render(&parsed)).ok().as_ref() == Some(&parsed), || "no round trip".into());
            true
        }
        Err(e) => {
            ctx.refused(e);
            false
        }
    }
}
