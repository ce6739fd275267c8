//! `zoffsite restore`: bring a dataset tree back from a box, over the
//! network (`--target`, through `serve`) or from the box's pool imported on
//! this machine (`--from-pool POOL/ROOT`).
//!
//! Invariants:
//! - The box only ever hands over raw streams, and keys stay here: the
//!   restored datasets are encrypted exactly as they were sent.
//! - The stream comes from the box, so it is hostile input: every record
//!   header is checked (raw, one snapshot, the GUID the box listed) before
//!   the chunk that carries it reaches `zfs receive`.
//! - Nothing local is overwritten or destroyed: destinations must not
//!   exist, receives never use `-F`.
//! - Each received dataset is its own encryption root (per-dataset raw
//!   sends); with `--keylocation` the children are re-parented (`zfs
//!   change-key -i`) so that one key unlocks the tree as before.
//! - Bounded ([`zoffsite_core::limits`]): the box's bytes count against a
//!   limit before they reach the checks or `zfs receive`, the whole restore
//!   against a time limit, and every child process has a deadline
//!   ([`bounded_zfs`]): a box cannot fill the pool, nor hang the restore
//!   (e.g. with a huge `pbkdf2iters` that `zfs load-key` would grind on).
//! - Decrypted data is only looked at in a private directory
//!   (`/run/zoffsite/...`, 0700), mounted `nosuid,nodev,noexec`, and read
//!   without following symlinks.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use zoffsite_core::boxside;
use zoffsite_core::limits::{self, ByteBudget};
use zoffsite_core::names::{Dataset, Guid, SnapName};
use zoffsite_core::protocol::RemoteDataset;
use zoffsite_core::records::{Expect, StreamValidator};
use zoffsite_core::restore::{self, Plan, Request, Step};
use zoffsite_exec::process::{ExecError, Running};
use zoffsite_exec::remote::Session;
use zoffsite_exec::zfs::Zfs;

use crate::cli::RestoreArgs;
use crate::exit::Exit;

/// How long each zfs command of a restore or drill may run: listing a
/// large imported box pool is the slowest, and takes minutes at worst.
pub(crate) const CHILD_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// How long `zfs load-key` may run. It derives the wrapping key in userland
/// with the dataset's `pbkdf2iters`, which the received stream sets: the
/// default (350,000) takes well under a second, a hundred times that under
/// a minute; a box that raised it to billions is stopped here.
pub(crate) const LOAD_KEY_DEADLINE: Duration = Duration::from_secs(2 * 60);

/// `zfs` with the deadlines of a restore or drill.
pub(crate) fn bounded_zfs(zfs: Zfs) -> Zfs {
    zfs.with_deadlines(CHILD_DEADLINE, LOAD_KEY_DEADLINE)
}

/// What a restore or drill accepts from the box ([`zoffsite_core::limits`]).
pub(crate) struct Limits {
    pub bytes: ByteBudget,
    /// When the whole restore or drill must be done.
    pub deadline: Instant,
    pub max_time: Duration,
    /// Where the time limit comes from, for the error.
    pub time_why: String,
}

impl Limits {
    pub fn new(bytes: ByteBudget, max_time: Duration, time_why: impl Into<String>) -> Self {
        Self { bytes, deadline: Instant::now() + max_time, max_time, time_why: time_why.into() }
    }

    fn out_of_time(&self) -> String {
        format!("did not finish within {:?} ({}): stopped", self.max_time, self.time_why)
    }
}

/// Where the streams come from.
pub(crate) enum Origin {
    Box(Box<Session>),
    Pool(Dataset),
}

pub fn run(args: RestoreArgs) -> Exit {
    let zfs = bounded_zfs(Zfs::new());
    let mut origin = match (&args.target, &args.from_pool) {
        (Some(name), None) => {
            let cfg = match super::common::config_or_exit(&args.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let Some(target) = cfg.targets.iter().find(|t| t.name == *name) else {
                let names: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
                eprintln!(
                    "zoffsite: no target {name:?} in {}; its targets: {}",
                    args.config.display(),
                    names.join(", ")
                );
                return Exit::Usage;
            };
            match Session::connect(target) {
                Ok(s) => Origin::Box(Box::new(s)),
                Err(e) => {
                    eprintln!("zoffsite: target {name}: {e}");
                    return Exit::Target;
                }
            }
        }
        (None, Some(root)) => Origin::Pool(root.clone()),
        _ => {
            eprintln!("zoffsite: restore from either --target NAME (over the network) or --from-pool POOL/ROOT (the box's disk, imported here)");
            return Exit::Usage;
        }
    };
    let listing = match list(&zfs, &mut origin, &args.dataset) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("zoffsite: cannot list what the box holds of {}: {e}", args.dataset);
            return Exit::Target;
        }
    };
    let req = Request {
        dataset: args.dataset.clone(),
        snapshot: args.snapshot.clone(),
        to: args.to.clone(),
        children: !args.no_children,
    };
    let mut exists_failure = None;
    let plan = restore::plan(&req, &listing, |d| match zfs.exists(d) {
        Ok(e) => e,
        Err(e) => {
            exists_failure = Some(e.to_string());
            true
        }
    });
    if let Some(e) = exists_failure {
        eprintln!("zoffsite: cannot check the local datasets: {e}");
        return Exit::Error;
    }
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            eprintln!("zoffsite: {e}");
            return Exit::Error;
        }
    };
    for (d, why) in &plan.skipped {
        eprintln!("zoffsite: left out {d}: {why}");
    }
    let mut limits = match restore_limits(&zfs, &args, &plan) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("zoffsite: {e:#}");
            return Exit::Error;
        }
    };
    println!(
        "accepting at most {} bytes from the box ({}), for at most {:?} ({})",
        limits.bytes.limit(),
        if args.max_bytes.is_some() { "--max-bytes" } else { "the default" },
        limits.max_time,
        limits.time_why
    );
    if args.dry_run {
        for s in &plan.steps {
            println!("would restore {}@{} (guid {}) as {}", s.source, s.snapshot, s.guid, s.dest);
        }
        return partial_if(&plan, Exit::Ok);
    }
    for step in &plan.steps {
        match receive(&zfs, &mut origin, step, &mut limits) {
            Ok(bytes) => println!(
                "restored {}@{} as {} ({} bytes, guid {})",
                step.source, step.snapshot, step.dest, bytes, step.guid
            ),
            Err(e) => {
                eprintln!("zoffsite: {}@{}: {e}", step.source, step.snapshot);
                if let Origin::Box(s) = origin {
                    s.close();
                }
                return Exit::Error;
            }
        }
    }
    if let Origin::Box(s) = origin {
        s.close();
    }
    let exit = keys(&zfs, &args, &plan);
    partial_if(&plan, exit)
}

/// `--max-bytes` and `--max-time`, or their defaults: what the
/// destination pool has available less a twentieth, and 30 min plus that at
/// 256 KiB/s ([`zoffsite_core::limits`]).
fn restore_limits(zfs: &Zfs, args: &RestoreArgs, plan: &Plan) -> anyhow::Result<Limits> {
    let bytes = match args.max_bytes {
        Some(n) => ByteBudget::new(n, "--max-bytes"),
        None => {
            let pool = plan.steps.first().map(|s| s.dest.pool().to_owned()).unwrap_or_default();
            let available = zfs
                .get_value(&pool, "available")
                .map_err(anyhow::Error::from)
                .and_then(|v| v.parse::<u64>().map_err(|e| anyhow::anyhow!("available={v:?}: {e}")))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot tell how much space {pool} has ({e}); give the most the box may send with --max-bytes"
                    )
                })?;
            let n = limits::restore_default_bytes(available);
            ByteBudget::new(
                n,
                format!("the default: {pool}'s available {available} bytes less a twentieth; a larger restore needs --max-bytes"),
            )
        }
    };
    let (max_time, why) = match args.max_time {
        Some(t) => (t, "--max-time".to_owned()),
        None => {
            (limits::default_time(bytes.limit()), "the default for that many bytes; more needs --max-time".to_owned())
        }
    };
    Ok(Limits::new(bytes, max_time, why))
}

fn partial_if(plan: &Plan, exit: Exit) -> Exit {
    if plan.skipped.is_empty() {
        exit
    } else {
        exit.max(Exit::Partial)
    }
}

/// What the box (or the imported pool) holds of `dataset` and below.
fn list(zfs: &Zfs, origin: &mut Origin, dataset: &Dataset) -> anyhow::Result<BTreeMap<Dataset, RemoteDataset>> {
    Ok(match origin {
        Origin::Box(s) => s.list_tree(dataset)?,
        Origin::Pool(root) => {
            let (datasets, snapshots) = zfs.list_box(root)?;
            boxside::tree_listing(root, dataset, datasets, snapshots).into_iter().map(|d| (d.name.clone(), d)).collect()
        }
    })
}

/// Receives one step's stream into a new local dataset, checking every
/// record header first; confirms the GUID. Returns the stream's size.
/// Every chunk counts against `limits` before it is checked or received;
/// past either limit, the stream is cut and `zfs receive` killed (without
/// `-s`, it leaves nothing behind).
pub(crate) fn receive(zfs: &Zfs, origin: &mut Origin, step: &Step, limits: &mut Limits) -> anyhow::Result<u64> {
    if Instant::now() >= limits.deadline {
        anyhow::bail!("{}", limits.out_of_time());
    }
    let cmd = zfs.receive_new(&step.dest);
    let deadline = limits.deadline;
    let mut child = Running::with_stdin(&cmd)?.deadline(deadline);
    let mut stdin = child.child.stdin.take().expect("piped");
    let mut v = StreamValidator::new(Expect { from: None, to: step.guid, resuming: false, key: None });
    let mut sink = |chunk: &[u8]| -> std::io::Result<()> {
        limits.bytes.take(chunk.len() as u64).map_err(std::io::Error::other)?;
        if Instant::now() >= limits.deadline {
            return Err(std::io::Error::other(limits.out_of_time()));
        }
        v.feed(chunk).map_err(|e| std::io::Error::other(format!("refused the box's stream: {e}")))?;
        stdin.write_all(chunk)
    };
    let streamed = match origin {
        Origin::Box(s) => s.fetch(&step.source, &step.snapshot, &mut sink).map_err(anyhow::Error::from),
        Origin::Pool(root) => send_local(zfs, root, &step.source, &step.snapshot, deadline, &mut sink),
    };
    // The sink borrowed stdin: closing it ends zfs receive's input.
    drop(stdin);
    let streamed = match streamed {
        Ok(s) => s,
        Err(e) => {
            // zfs receive killed at the deadline explains a broken pipe.
            return Err(match child.kill() {
                Err(d @ ExecError::Deadline { .. }) => d.into(),
                _ => e,
            });
        }
    };
    if let Err(e) = v.finish() {
        let _ = child.kill();
        anyhow::bail!("refused the box's stream: {e}");
    }
    let out = child.finish()?;
    if !out.success() {
        return Err(Zfs::stream_error(&cmd, step.dest.as_str(), out).into());
    }
    let got = zfs.snapshot_guid(&step.dest.snapshot(&step.snapshot)?)?;
    anyhow::ensure!(
        got == step.guid,
        "restored {}@{} has GUID {got}, not the box's {}",
        step.dest,
        step.snapshot,
        step.guid
    );
    Ok(streamed.1)
}

/// `zfs send -w ROOT/DATASET@SNAPSHOT` from the imported pool into `sink`.
fn send_local(
    zfs: &Zfs,
    root: &Dataset,
    dataset: &Dataset,
    snapshot: &SnapName,
    deadline: Instant,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> anyhow::Result<(Guid, u64)> {
    let snap = root.join(dataset)?.snapshot(snapshot)?;
    let guid = zfs.snapshot_guid(&snap)?;
    let cmd = zfs.send_raw(&snap, None);
    let mut running = Running::with_stdout(&cmd)?.deadline(deadline);
    let mut out = running.child.stdout.take().expect("piped");
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = running.kill();
                return Err(e.into());
            }
        };
        if let Err(e) = sink(&buf[..n]) {
            drop(out);
            let _ = running.kill();
            return Err(e.into());
        }
        bytes += n as u64;
    }
    drop(out);
    let o = running.finish()?;
    if !o.success() {
        return Err(Zfs::stream_error(&cmd, snap.dataset.as_str(), o).into());
    }
    Ok((guid, bytes))
}

/// Puts the key in place: with `--keylocation`, sets it on the restored
/// top, loads it, re-parents the children so that one key unlocks the tree
/// again, and mounts; without, says exactly how.
fn keys(zfs: &Zfs, args: &RestoreArgs, plan: &Plan) -> Exit {
    let top = &plan.steps[0].dest;
    let children: Vec<&Dataset> = plan.steps[1..].iter().map(|s| &s.dest).collect();
    let Some(uri) = &args.keylocation else {
        println!("restored, not mounted: the key is not loaded. To unlock and mount it:");
        println!("  zfs set keylocation=file:///PATH/TO/KEY {top}    # or keep prompt");
        println!("  zfs load-key {top}");
        for c in &children {
            println!("  zfs load-key -L file:///PATH/TO/KEY {c} && zfs change-key -i {c}");
        }
        println!("  zfs mount {top}{}", children.iter().map(|c| format!(" && zfs mount {c}")).collect::<String>());
        println!(
            "The properties you had set are recorded inside it, in {}: set them again from there (with --keylocation, restore does that itself).",
            zoffsite_core::manifest::MANIFEST_PATH
        );
        note_pins(args, &children);
        return Exit::Ok;
    };
    let step = |what: String, r: Result<(), zoffsite_exec::zfs::ZfsError>| match r {
        Ok(()) => true,
        Err(e) => {
            eprintln!("zoffsite: {what}: {e}");
            false
        }
    };
    let mut ok = step(format!("set keylocation on {top}"), zfs.set_keylocation(top, uri))
        && step(format!("load the key of {top}"), zfs.load_key(top, None));
    for c in &children {
        ok = ok
            && step(format!("load the key of {c}"), zfs.load_key(c, Some(uri)))
            && step(format!("re-parent {c} under {top}'s key"), zfs.change_key_inherit(c));
    }
    if !ok {
        return Exit::Error;
    }
    let mut exit = Exit::Ok;
    match restore_properties(zfs, plan) {
        Ok(0) => {}
        Ok(n) => println!("set {n} recorded propert{} again", if n == 1 { "y" } else { "ies" }),
        Err(e) => {
            eprintln!("zoffsite: the recorded properties were not all set again: {e:#}");
            exit = Exit::Partial;
        }
    }
    // Mount only where the tree now has a mountpoint path (recorded, or
    // inherited from where it sits).
    let mountpoint = zfs.get_value(top.as_str(), "mountpoint").unwrap_or_default();
    if !mountpoint.starts_with('/') {
        println!("{top} is unlocked with {uri} (one key for the whole tree), not mounted: it has mountpoint={mountpoint} here. Give it one, and it mounts: zfs set mountpoint=/PATH {top}");
        note_pins(args, &children);
        return Exit::Ok;
    }
    for d in std::iter::once(&top).chain(children.iter()) {
        // Setting a recorded mountpoint on an unlocked dataset mounts it.
        let mounted = zfs.get_value(d.as_str(), "mounted").is_ok_and(|m| m == "yes");
        ok = ok && (mounted || step(format!("mount {d}"), zfs.mount(d)));
    }
    if !ok {
        return Exit::Error;
    }
    println!("{top} is unlocked with {uri} (one key for the whole tree) and mounted at {mountpoint}");
    note_pins(args, &children);
    exit
}

/// Reads the properties manifest from the restored snapshot of the top
/// (mounted read-only aside for a moment: the key is loaded by now) and
/// sets what it recorded on each restored dataset. Returns how many
/// properties were set; 0 when the snapshot has no manifest.
fn restore_properties(zfs: &Zfs, plan: &Plan) -> anyhow::Result<usize> {
    use zoffsite_core::manifest::{Manifest, MANIFEST_PATH, MAX_MANIFEST_LEN};
    let top = &plan.steps[0];
    let snap = top.dest.snapshot(&top.snapshot)?;
    // Decrypted: looked at only in a private directory (0700, a name no
    // one else could predict or plant), nosuid,nodev,noexec, read without
    // following symlinks.
    let private = zoffsite_exec::rundir::RunDir::open_default()?.private_dir("restore-")?;
    let dir = private.subdir("snapshot")?;
    zoffsite_exec::system::mount_snapshot(&snap.to_string(), &dir)?;
    let text = zoffsite_exec::rundir::open_beneath(&dir, std::path::Path::new(MANIFEST_PATH)).and_then(|f| {
        let mut s = String::new();
        f.take(MAX_MANIFEST_LEN as u64 + 1).read_to_string(&mut s).map(|_| s)
    });
    if let Err(e) = zoffsite_exec::system::unmount(&dir) {
        eprintln!("zoffsite: could not unmount {} ({e}); unmount it by hand", dir.display());
    }
    drop(private);
    let text = match text {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{} has no properties manifest ({MANIFEST_PATH}): its properties are as inherited here", top.dest);
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    anyhow::ensure!(text.len() <= MAX_MANIFEST_LEN, "the manifest is larger than {MAX_MANIFEST_LEN} bytes");
    let manifest = Manifest::parse(&text)?;
    let restored: Vec<(String, Dataset)> = plan
        .steps
        .iter()
        .map(|s| (s.source.strip_root(&top.source).map_or_else(String::new, |d| d.to_string()), s.dest.clone()))
        .collect();
    let in_place = top.dest == top.source;
    let mut n = 0;
    for (ds, props) in manifest.to_set(&restored, in_place) {
        zfs.set_properties(&ds, &props)?;
        n += props.len();
    }
    Ok(n)
}

/// Re-parenting re-wraps each child's key, which the box refuses from then
/// on (it cannot tell that from a compromised source re-keying its
/// history): a restore in place that backups continue from needs the box
/// owner to accept the children's new wrapping once.
fn note_pins(args: &RestoreArgs, children: &[&Dataset]) {
    if children.is_empty() || args.target.is_none() {
        return;
    }
    println!(
        "note: once re-parented, each child's key is re-wrapped, and the box refuses it until its owner accepts, as root on the box: zfs inherit -r zoffsite:keywrap ROOT/{}",
        args.dataset
    );
}
