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
//!   sends), wrapped exactly as the box holds it, and stays so: restore
//!   never changes a key. The box pinned each dataset's wrapped key at its
//!   first receive and refuses any other (`serve`), so a re-wrapped key
//!   (`zfs change-key`, `-i` included) would stop the backups that follow
//!   a restore in place. One key file still unlocks the tree: on the
//!   source every child's key was wrapped with the top's, so
//!   `--keylocation` is set on every restored dataset (a plain property,
//!   not part of the wrapped key) and `zfs load-key -r` loads them all.
//! - Children are matched by name on the box, which a compromised source
//!   can add to. So the top comes first, its key is loaded, and its
//!   snapshot's own properties manifest (encrypted, written before that
//!   snapshot) says which children belong to that point; only those are
//!   received (`restore::vet_children`). Without that list, children come
//!   back only with `--children-unverified`.
//! - The manifest's properties are applied only as far as they are data
//!   properties (`manifest::is_data_property`), unless `--apply-properties
//!   all`; the rest is named.
//! - `--from-pool` refuses a box pool that is writable, has no altroot, or
//!   has anything mounted: the box must not decide what this machine mounts.
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
use zoffsite_core::manifest::{Apply, Manifest};
use zoffsite_core::names::{Dataset, Guid, SnapName};
use zoffsite_core::protocol::RemoteDataset;
use zoffsite_core::records::{Expect, StreamValidator};
use zoffsite_core::restore::{self, Plan, Request, Step, Witness};
use zoffsite_exec::process::{ExecError, Running};
use zoffsite_exec::proto::client::Session;
use zoffsite_exec::zfs::Zfs;

use crate::cli::{ApplyProperties, RestoreArgs};
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
    if let Origin::Pool(root) = &origin {
        // Before anything is read from it: what the box stored must not
        // already be mounted here, nor be mountable later.
        let checked = zfs
            .imported_pool(root.pool())
            .map_err(|e| e.to_string())
            .and_then(|state| restore::check_imported_pool(root.pool(), &state).map_err(|e| e.to_string()));
        if let Err(e) = checked {
            eprintln!("zoffsite: refusing --from-pool {root}: {e}");
            return Exit::Error;
        }
    }
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
    let top = plan.steps[0].clone();
    let candidates = plan.steps.len() - 1;
    // Which children belong to the restored point is recorded inside its
    // encrypted data: without the key, nothing can check them.
    let unchecked = candidates > 0 && args.keylocation.is_none() && !args.children_unverified;
    let refusal = format!(
        "the box holds {candidates} dataset(s) below {} under @{}, and which of them were part of the tree at that point is recorded inside the encrypted data, so restore needs the key to check them (the box, or a compromised source, can add children under an old snapshot's name): give --keylocation URI, or --no-children, or --children-unverified to bring back whatever the box holds under that name",
        top.source, top.snapshot
    );
    if args.dry_run {
        for (i, s) in plan.steps.iter().enumerate() {
            let note = match (i, args.keylocation.is_some()) {
                (0, _) => "",
                (_, true) => " if the manifest of that point lists it",
                (_, false) => " unchecked (--children-unverified)",
            };
            println!("would restore {}@{} (guid {}) as {}{note}", s.source, s.snapshot, s.guid, s.dest);
        }
        if unchecked {
            eprintln!("zoffsite: without -n this would be refused: {refusal}");
            return Exit::Usage;
        }
        return partial_if(&plan, &[], Exit::Ok);
    }
    if unchecked {
        eprintln!("zoffsite: {refusal}");
        return Exit::Usage;
    }
    let close = |origin: Origin| {
        if let Origin::Box(s) = origin {
            s.close();
        }
    };
    if let Err(exit) = receive_step(&zfs, &mut origin, &top, &mut limits) {
        close(origin);
        return exit;
    }
    // The top's key, then its snapshot's manifest: which children belong
    // to this point, and the properties to set again.
    let mut exit = Exit::Ok;
    let (manifest, witness) = match &args.keylocation {
        Some(uri) => {
            if let Err(e) = unlock(&zfs, &top.dest, uri) {
                eprintln!("zoffsite: {e}; nothing below {} was restored", top.dest);
                close(origin);
                return Exit::Error;
            }
            match read_manifest(&top) {
                Ok(Some(m)) => {
                    let w = match m.tree() {
                        Some(t) => Witness::Listed(t),
                        None => Witness::Missing(format!(
                            "the manifest of {}@{} has no list of its datasets (written by a zoffsite from before it kept one)",
                            top.source, top.snapshot
                        )),
                    };
                    (Some(m), w)
                }
                Ok(None) => {
                    println!(
                        "{} has no properties manifest ({}): its properties are as inherited here",
                        top.dest,
                        zoffsite_core::manifest::MANIFEST_PATH
                    );
                    (None, Witness::Missing(format!("{}@{} has no properties manifest", top.source, top.snapshot)))
                }
                Err(e) => {
                    eprintln!(
                        "zoffsite: the properties manifest of {}@{} is not used: {e:#}",
                        top.source, top.snapshot
                    );
                    exit = Exit::Partial;
                    (
                        None,
                        Witness::Missing(format!("the manifest of {}@{} could not be used", top.source, top.snapshot)),
                    )
                }
            }
        }
        None => (None, Witness::Missing("restored without --keylocation".into())),
    };
    let vetted = restore::vet_children(&plan, &witness, args.children_unverified);
    for (d, why) in &vetted.left_out {
        eprintln!("zoffsite: left out {d}: {why}");
    }
    if !vetted.unverified.is_empty() {
        let why = match &witness {
            Witness::Missing(why) => why.as_str(),
            Witness::Listed(_) => "",
        };
        eprintln!(
            "zoffsite: warning: {} child(ren) brought back unchecked (--children-unverified; {why}): {}. Any of them may have been added on the box after that snapshot: look before you trust them",
            vetted.unverified.len(),
            vetted.unverified.iter().map(Dataset::as_str).collect::<Vec<_>>().join(", ")
        );
    }
    for step in &vetted.steps {
        if let Err(exit) = receive_step(&zfs, &mut origin, step, &mut limits) {
            close(origin);
            return exit;
        }
    }
    close(origin);
    let children: Vec<&Dataset> = vetted.steps.iter().map(|s| &s.dest).collect();
    let mut restored = vec![top.clone()];
    restored.extend(vetted.steps.iter().cloned());
    let keyed = keys(&zfs, &args, &top.dest, &children, manifest.as_ref(), &restored);
    partial_if(&plan, &vetted.left_out, exit.max(keyed))
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

/// Receives one step and says so; on failure says what failed.
fn receive_step(zfs: &Zfs, origin: &mut Origin, step: &Step, limits: &mut Limits) -> Result<(), Exit> {
    match receive(zfs, origin, step, limits) {
        Ok(bytes) => {
            println!(
                "restored {}@{} as {} ({} bytes, guid {})",
                step.source, step.snapshot, step.dest, bytes, step.guid
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("zoffsite: {}@{}: {e}", step.source, step.snapshot);
            Err(Exit::Error)
        }
    }
}

/// Sets `uri` as the restored top's keylocation and loads its key.
fn unlock(zfs: &Zfs, top: &Dataset, uri: &str) -> Result<(), String> {
    zfs.set_keylocation(top, uri).map_err(|e| format!("set keylocation on {top}: {e}"))?;
    zfs.load_key(top, None).map_err(|e| format!("load the key of {top}: {e}"))
}

fn partial_if(plan: &Plan, left_out: &[(Dataset, String)], exit: Exit) -> Exit {
    if plan.skipped.is_empty() && left_out.is_empty() {
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
    let mut v = StreamValidator::new(Expect {
        from: None,
        to: step.guid,
        resuming: false,
        key: None,
        name: None,
        held: Default::default(),
    });
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

/// Puts the key in place: with `--keylocation` (the top is unlocked by
/// now), loads each child's key with it and sets it as the child's
/// keylocation (each stays its own encryption root, wrapped as the box
/// holds it: no `change-key`), sets the recorded properties, and mounts;
/// without, says exactly how.
fn keys(
    zfs: &Zfs,
    args: &RestoreArgs,
    top: &Dataset,
    children: &[&Dataset],
    manifest: Option<&Manifest>,
    restored: &[Step],
) -> Exit {
    let Some(uri) = &args.keylocation else {
        println!(
            "restored, not mounted: the keys are not loaded. Each restored dataset is its own encryption root, wrapped as the box holds it, and they all open with the key file of {top}. To unlock and mount them:"
        );
        for c in restore::unlock_commands(top, children, "file:///PATH/TO/KEY") {
            println!("  {c}");
        }
        println!(
            "Leave the keys as they are (no zfs change-key, not even -i): the box refuses a changed key, and backups go on from these snapshots as they are (docs/restore.md)."
        );
        println!(
            "The properties you had set are recorded inside it, in {}: set them again from there (with --keylocation, restore sets its data properties itself).",
            zoffsite_core::manifest::MANIFEST_PATH
        );
        return Exit::Ok;
    };
    let step = |what: String, r: Result<(), zoffsite_exec::zfs::ZfsError>| match r {
        Ok(()) => true,
        Err(e) => {
            eprintln!("zoffsite: {what}: {e}");
            false
        }
    };
    // Loaded first, then set: a child that does not open with `uri` (it
    // had a key of its own on the source) keeps keylocation=prompt, and
    // `zfs load-key -a` at boot does not trip over a wrong file.
    let mut ok = true;
    for c in children {
        ok = ok
            && step(
                format!("load the key of {c} with {uri} (if it had a key of its own, load that: zfs load-key -L URI {c}, then zfs set keylocation=URI {c})"),
                zfs.load_key(c, Some(uri)),
            )
            && step(format!("set keylocation on {c}"), zfs.set_keylocation(c, uri));
    }
    if !ok {
        return Exit::Error;
    }
    let mut exit = Exit::Ok;
    if let Some(m) = manifest {
        let apply = match args.apply_properties {
            ApplyProperties::Data => Apply::Data,
            ApplyProperties::All => Apply::All,
        };
        match restore_properties(zfs, m, restored, apply) {
            Ok(0) => {}
            Ok(n) => println!("set {n} recorded propert{} again", if n == 1 { "y" } else { "ies" }),
            Err(e) => {
                eprintln!("zoffsite: the recorded properties were not all set again: {e:#}");
                exit = Exit::Partial;
            }
        }
    }
    // Mount only where the tree now has a mountpoint path (recorded, or
    // inherited from where it sits).
    let mountpoint = zfs.get_value(top.as_str(), "mountpoint").unwrap_or_default();
    if !mountpoint.starts_with('/') {
        println!("{top} is unlocked with {uri} (one key file for the whole tree), not mounted: it has mountpoint={mountpoint} here. Give it one, and it mounts: zfs set mountpoint=/PATH {top}");
        say_keys(top, uri);
        return exit;
    }
    for d in std::iter::once(&top).chain(children.iter()) {
        // Setting a recorded mountpoint on an unlocked dataset mounts it.
        let mounted = zfs.get_value(d.as_str(), "mounted").is_ok_and(|m| m == "yes");
        ok = ok && (mounted || step(format!("mount {d}"), zfs.mount(d)));
    }
    if !ok {
        return Exit::Error;
    }
    println!("{top} is unlocked with {uri} (one key file for the whole tree) and mounted at {mountpoint}");
    say_keys(top, uri);
    exit
}

/// Reads the properties manifest from the restored snapshot of the top
/// (mounted read-only aside for a moment: its key is loaded by now).
/// `None` when the snapshot has none.
fn read_manifest(top: &Step) -> anyhow::Result<Option<Manifest>> {
    let snap = top.dest.snapshot(&top.snapshot)?;
    // Decrypted: looked at only in a private directory (0700, a name no
    // one else could predict or plant), nosuid,nodev,noexec, read without
    // following symlinks.
    let private = zoffsite_exec::rundir::RunDir::open_default()?.private_dir("restore-")?;
    let dir = private.subdir("snapshot")?;
    zoffsite_exec::system::mount_snapshot(&snap.to_string(), &dir)?;
    // No symlink followed; only a manifest root wrote is believed.
    let text = zoffsite_exec::manifest_file::read(&dir);
    if let Err(e) = zoffsite_exec::system::unmount(&dir) {
        eprintln!("zoffsite: could not unmount {} ({e}); unmount it by hand", dir.display());
    }
    drop(private);
    match text? {
        Some(t) => Ok(Some(Manifest::parse(&t)?)),
        None => Ok(None),
    }
}

/// Sets what `manifest` recorded on each restored dataset, as far as
/// `apply` allows, and names what it left unset. Returns how many
/// properties were set.
fn restore_properties(zfs: &Zfs, manifest: &Manifest, restored: &[Step], apply: Apply) -> anyhow::Result<usize> {
    let top = &restored[0];
    let restored: Vec<(String, Dataset)> = restored
        .iter()
        .map(|s| (s.source.strip_root(&top.source).map_or_else(String::new, |d| d.to_string()), s.dest.clone()))
        .collect();
    let in_place = top.dest == top.source;
    let plan = manifest.to_set(&restored, in_place, apply);
    if !plan.held_back.is_empty() {
        println!(
            "left unset, as they are not data properties and the manifest was written by the source (set them by hand, or restore with --apply-properties all if you trust this point):"
        );
        for (ds, props) in &plan.held_back {
            // Debug-quoted: a value from the manifest reaches the terminal.
            let list: Vec<String> = props.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            println!("  {ds}: {}", list.join(" "));
        }
    }
    let mut n = 0;
    for (ds, props) in &plan.set {
        zfs.set_properties(ds, props)?;
        n += props.len();
    }
    Ok(n)
}

/// What the restored tree's keys look like, and how to unlock it again.
fn say_keys(top: &Dataset, uri: &str) {
    println!(
        "Each restored dataset is its own encryption root with keylocation={uri}, wrapped exactly as the box holds it, so backups go on from it as before. After a reboot: zfs load-key -r {top}, then mount. Leave the keys as they are: a zfs change-key (-i included) is a key change the box refuses (docs/restore.md)."
    );
}
