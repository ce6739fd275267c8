//! The box's own state, as `box prune` and `box check` (root, from timers)
//! read and record it: `box.toml`, the snapshots under the root with the
//! txg journal entry their listing makes, `zoffsite:lastrun` on the root,
//! the journal file ([`crate::journal`]), partial receives, the source's
//! heartbeats as `serve` recorded them; and what they carry out: box
//! prune's destroys, box check's notification.
//!
//! Decisions are `zoffsite_core::boxside`'s; this gathers the facts and
//! carries them out. Invariants:
//! - Nothing outside the configured root is listed or destroyed: a
//!   decision for a snapshot elsewhere is refused here, and again by
//!   [`Zfs::destroy_received_snapshots`].
//! - The journal and `zoffsite:lastrun` are recorded only by the caller's
//!   decision (a run whose clock check passed, with the real clock): an
//!   entry from a wrong clock would skew every later bound.
//! - The notify program is an argv (never a shell), gets the message on
//!   stdin, and is killed after [`NOTIFY_TIMEOUT`] with everything it
//!   started (its process group: [`process::run_bounded`], as the source's
//!   `[notify]`).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use zoffsite_core::boxside::{self, BoxConfig, BoxDecision, BoxSnapshot, Partial};
use zoffsite_core::config::ConfigError;
use zoffsite_core::journal::{Entry, Journal};
use zoffsite_core::names::{Dataset, SnapName};
use zoffsite_core::report::Severity;

use crate::events::Events;
use crate::journal::{self, JournalFileError};
use crate::process::{self, Cmd, ExecError};
use crate::zfs::{Zfs, ZfsError};

/// Longest the notify program may take.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// Most bytes of message given to the notify program (a pipe buffer holds
/// 64 KiB, so a program that never reads cannot block the write).
const MAX_MESSAGE: usize = 32 * 1024;

/// Most names per `zfs destroy` call (keeps the argv well under limits).
const DESTROY_CHUNK: usize = 200;

/// Where the format of `box.toml` is described, for the hint of a missing
/// one (`box apply` of a box bundle writes it).
pub const CONFIG_KEYS: &str =
    "every key: docs/box.md, \"box.toml\", and examples/box.toml; `zoffsite box apply` of a box bundle writes it";

/// Why `box.toml` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BoxConfigError {
    #[error("cannot read box config file {}: {source}; {}", path.display(), self.hint())]
    Read { path: PathBuf, source: io::Error },
    #[error("box config file {}: {source}", path.display())]
    Invalid { path: PathBuf, source: ConfigError },
}

impl BoxConfigError {
    /// What is wrong, without the fix.
    pub fn problem(&self) -> String {
        match self {
            BoxConfigError::Read { path, source } => {
                format!("cannot read box config file {}: {source}", path.display())
            }
            BoxConfigError::Invalid { .. } => self.to_string(),
        }
    }

    /// What to do about it, where the message alone does not say.
    pub fn hint(&self) -> String {
        match self {
            BoxConfigError::Read { source, .. } => zoffsite_core::config::read_hint(source.kind(), CONFIG_KEYS),
            BoxConfigError::Invalid { .. } => "fix that key (every key: docs/box.md, \"box.toml\"); `zoffsite config check --box` checks the file alone".into(),
        }
    }
}

/// Reads and validates the box config at `path`
/// (default [`boxside::DEFAULT_PATH`]).
pub fn load_config(path: &Path) -> Result<BoxConfig, BoxConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| BoxConfigError::Read { path: path.to_owned(), source })?;
    BoxConfig::parse(&text).map_err(|source| BoxConfigError::Invalid { path: path.to_owned(), source })
}

/// The root's `zoffsite:lastrun`, if set and readable (a value that is not
/// Unix seconds is ignored, with a warning: the run rewrites it).
pub fn lastrun(zfs: &Zfs, root: &Dataset, events: &mut dyn Events) -> Result<Option<i64>, ZfsError> {
    let v = zfs.get_value(root.as_str(), boxside::LASTRUN_PROPERTY)?;
    if v == "-" {
        return Ok(None);
    }
    match v.parse::<i64>() {
        Ok(t) => Ok(Some(t)),
        Err(_) => {
            events.warn(&format!(
                "{} on {root} is {v:?}, not Unix seconds; ignored (it is rewritten after this run)",
                boxside::LASTRUN_PROPERTY
            ));
            Ok(None)
        }
    }
}

/// Records a sane run's time on the root.
pub fn record_lastrun(zfs: &Zfs, root: &Dataset, now: jiff::Timestamp, events: &mut dyn Events) {
    if let Err(e) = zfs.set_user_property(&[root.to_string()], boxside::LASTRUN_PROPERTY, &now.as_second().to_string())
    {
        events.warn(&format!("cannot record this run in {} on {root}: {e}", boxside::LASTRUN_PROPERTY));
    }
}

/// The box's snapshots, and the txg journal entry this listing makes: the
/// highest `createtxg` it saw, with the real clock before and after it.
pub fn list_timed(zfs: &Zfs, root: &Dataset) -> Result<(Vec<BoxSnapshot>, Option<Entry>), ZfsError> {
    let start = jiff::Timestamp::now().as_second();
    let snaps = zfs.list_box_snapshots(root)?;
    let end = jiff::Timestamp::now().as_second();
    let entry = snaps.iter().map(|s| s.createtxg).max().map(|txg| Entry { txg, start, end });
    Ok((snaps, entry))
}

/// Why the txg journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalLoadError {
    /// The pool it is kept for cannot be told.
    #[error(transparent)]
    Pool(ZfsError),
    #[error(transparent)]
    File(JournalFileError),
}

/// The txg journal kept for this root's pool (see `zoffsite_core::journal`).
/// A file kept for another pool or root is replaced by a new journal (with
/// a warning).
pub fn load_journal(zfs: &Zfs, cfg: &BoxConfig, events: &mut dyn Events) -> Result<Journal, JournalLoadError> {
    let guid = zfs.pool_guid(cfg.root.pool()).map_err(JournalLoadError::Pool)?;
    let loaded = journal::load(&cfg.journal, guid, &cfg.root).map_err(JournalLoadError::File)?;
    if let Some(was) = loaded.replaced {
        events.warn(&format!(
            "txg journal {} was kept for {was}, not pool {guid} root {}; starting a new one",
            cfg.journal.display(),
            cfg.root
        ));
    }
    Ok(loaded.journal)
}

/// Adds this run's entry to the journal (after a clock check passed, with
/// the real clock: an entry from a wrong clock would skew every bound).
pub fn record_journal(cfg: &BoxConfig, mut j: Journal, entry: Option<Entry>, events: &mut dyn Events) {
    if let Some(e) = entry {
        if j.record(e) {
            if let Err(e) = journal::save(&cfg.journal, &j) {
                events.warn(&format!("cannot record this run in the txg journal: {e}"));
            }
        }
    }
}

/// Destroys what box prune decided to, with one `zfs destroy DS@a,b,...`
/// per dataset (in chunks), only below `root`. A failed destroy is
/// [`Severity::Partial`]; the others still run.
pub fn destroy(zfs: &Zfs, root: &Dataset, decisions: &[BoxDecision], events: &mut dyn Events) {
    let mut doomed: BTreeMap<&Dataset, Vec<SnapName>> = BTreeMap::new();
    for d in decisions.iter().filter(|d| d.destroy) {
        if d.snapshot.dataset.is_within(root) {
            doomed.entry(&d.snapshot.dataset).or_default().push(d.snapshot.name.clone());
        } else {
            // Core decides only on what was listed under the root; said (as
            // it always was), never done.
            events
                .error(Severity::Ok, &format!("box prune: not destroying {}: not a snapshot under {root}", d.snapshot));
        }
    }
    for (ds, names) in doomed {
        for chunk in names.chunks(DESTROY_CHUNK) {
            if let Err(e) = zfs.destroy_received_snapshots(root, ds, chunk) {
                events.error(Severity::Partial, &format!("box prune: {e}"));
            }
        }
    }
}

/// The source's heartbeats under the root
/// ([`boxside::HEARTBEAT_PROPERTY`]), read strictly; what was not taken is
/// a warning (without it, a dataset alarms as it did before heartbeats).
pub fn heartbeats(zfs: &Zfs, root: &Dataset, events: &mut dyn Events) -> Result<boxside::Heartbeats, ZfsError> {
    let h = boxside::parse_heartbeats(root, &zfs.box_heartbeats(root)?);
    for i in &h.ignored {
        events.warn(&format!(
            "{} {i} is not a heartbeat (not Unix seconds on a dataset under {root}); ignored",
            boxside::HEARTBEAT_PROPERTY
        ));
    }
    Ok(h)
}

/// Datasets under the root with partial-receive state, dated by the box:
/// `DATASET/%recv` for an interrupted incremental, the dataset itself for
/// an interrupted full receive (both carry the box's clock, while
/// snapshots carry the stream's; verified on OpenZFS 2.3.2).
pub fn partials(zfs: &Zfs, root: &Dataset) -> Result<Vec<Partial>, ZfsError> {
    let mut out = Vec::new();
    for r in zfs.list_receiver(root)? {
        if r.resume_token.is_none() {
            continue;
        }
        let hidden = format!("{}/%recv", r.dataset);
        let created = match zfs.get_value(&hidden, "creation") {
            Ok(v) => Ok(v),
            Err(ZfsError::NotFound { .. }) => zfs.get_value(r.dataset.as_str(), "creation"),
            Err(e) => Err(e),
        }?;
        out.push(Partial { dataset: r.dataset, since: created.parse().ok() });
    }
    Ok(out)
}

/// Why the owner was not told.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{program} did not finish within {}s and was killed", NOTIFY_TIMEOUT.as_secs())]
    Timeout { program: String },
    #[error("{program} failed ({status}): {stderr}")]
    Failed { program: String, status: ExitStatus, stderr: String },
}

/// Who heard of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    /// The notify program ran and succeeded.
    Owner,
    /// No notify program is configured: only the exit status tells anyone.
    Nobody,
}

/// Runs the notify argv with `msg` on stdin (at most 32 KiB of it),
/// killed after [`NOTIFY_TIMEOUT`].
pub fn notify(argv: &[String], msg: &str) -> Result<Notified, NotifyError> {
    notify_within(argv, msg, NOTIFY_TIMEOUT)
}

fn notify_within(argv: &[String], msg: &str, timeout: Duration) -> Result<Notified, NotifyError> {
    let Some((program, rest)) = argv.split_first() else {
        return Ok(Notified::Nobody);
    };
    let cmd = Cmd::new(program).args(rest);
    let mut bytes = msg.as_bytes();
    if bytes.len() > MAX_MESSAGE {
        bytes = &bytes[..MAX_MESSAGE];
    }
    // The source's [notify] runner: its own process group, killed whole at
    // the deadline (a script's `curl` or `sleep` with it), a program that
    // does not read its stdin is no failure, bounded output.
    match process::run_bounded(&cmd, &[], bytes, MAX_OUTPUT, timeout) {
        Ok(out) if out.status.success() => Ok(Notified::Owner),
        Ok(out) => Err(NotifyError::Failed {
            program: program.clone(),
            status: out.status,
            stderr: out.output.trim().to_owned(),
        }),
        Err(ExecError::Deadline { .. }) => Err(NotifyError::Timeout { program: program.clone() }),
        Err(e) => Err(e.into()),
    }
}

/// The most of a notify program's output kept for its failure message.
const MAX_OUTPUT: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Recorded;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;
    use zoffsite_core::names::Snapshot;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn root() -> Dataset {
        Dataset::new("offsite/home").unwrap()
    }

    #[test]
    fn notify_gets_the_message_on_stdin_with_its_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let prog = script(dir.path(), "notify.sh", &format!("echo \"$1\" > {0}; cat >> {0}", out.display()));
        let argv = [prog.to_str().unwrap().to_owned(), "--urgent".into()];
        assert_eq!(notify(&argv, "line one\nline two\n").unwrap(), Notified::Owner);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "--urgent\nline one\nline two\n");
    }

    #[test]
    fn a_hung_notify_program_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("child.pid");
        let p = script(dir.path(), "hang", &format!("sleep 300 &\necho $! > {}\nsleep 300", pid.display()));
        let started = Instant::now();
        let e = notify_within(&[p.display().to_string()], "m", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, NotifyError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
        // Its background child went with it (the whole process group).
        let child: i32 = std::fs::read_to_string(&pid).unwrap().trim().parse().unwrap();
        let gone = (0..50).any(|_| {
            let alive = std::path::Path::new(&format!("/proc/{child}")).exists()
                && !std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default().contains(") Z ");
            if alive {
                std::thread::sleep(Duration::from_millis(100));
            }
            !alive
        });
        assert!(gone, "the notify program's background sleep {child} still runs");
    }

    #[test]
    fn notify_failures_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let prog = script(dir.path(), "notify.sh", "echo mail server down >&2; exit 3");
        let e = notify(&[prog.to_str().unwrap().to_owned()], "x").unwrap_err();
        assert!(e.to_string().contains("mail server down"), "{e}");
        let e = notify(&["/nonexistent/alert".into()], "x").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/alert"), "{e}");
        // A program that ignores stdin is fine, also with a long message.
        let prog = script(dir.path(), "quiet.sh", "exit 0");
        assert_eq!(notify(&[prog.to_str().unwrap().to_owned()], &"x".repeat(200_000)).unwrap(), Notified::Owner);
        assert_eq!(notify(&[], "nobody configured").unwrap(), Notified::Nobody);
    }

    #[test]
    fn config_errors_say_which_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("box.toml");
        let e = load_config(&p).unwrap_err();
        assert!(matches!(e, BoxConfigError::Read { .. }) && e.to_string().contains("create it"), "{e}");
        assert!(e.to_string().contains("docs/box.md, \"box.toml\""), "the hint points at the format: {e}");
        assert!(!e.to_string().contains("--help"), "{e}");
        let e = load_config(dir.path()).unwrap_err();
        assert!(e.to_string().contains("is a directory") && !e.to_string().contains("create it"), "{e}");
        std::fs::write(&p, "root = \"offsite/home\"\nkeeep = 1\n").unwrap();
        let e = load_config(&p).unwrap_err();
        assert!(matches!(e, BoxConfigError::Invalid { .. }) && e.to_string().contains("keeep"), "{e}");
        std::fs::write(&p, "root = \"offsite/home\"\n").unwrap();
        assert_eq!(load_config(&p).unwrap().root.as_str(), "offsite/home");
    }

    /// A fake `zfs` that answers the box listing (snapshots, then their
    /// receive stamps) and `zoffsite:lastrun`, and logs every argv.
    fn fake_zfs(dir: &Path, lastrun: &str) -> Zfs {
        let log = dir.join("log");
        let body = format!(
            "echo \"$*\" >> '{log}'\ncase \"$*\" in\n 'list -H -p -r -t snapshot'*) printf 'offsite/home/tank/a@s1\\t11\\t100\\t5\\noffsite/home/tank/a@s2\\t12\\t140\\t6\\noffsite/home/tank/b@s1\\t13\\t120\\t7\\n';;\n *zoffsite:received*) printf 'offsite/home/tank/a@s1\\t1000\\n';;\n *zoffsite:lastrun*) echo '{lastrun}';;\n destroy*) ;;\n *) exit 1;;\nesac\n",
            log = log.display()
        );
        Zfs::with_binary(script(dir, "zfs", &body))
    }

    #[test]
    fn the_listing_makes_a_journal_entry_at_its_highest_txg() {
        let dir = tempfile::tempdir().unwrap();
        let zfs = fake_zfs(dir.path(), "-");
        let before = jiff::Timestamp::now().as_second();
        let (snaps, entry) = list_timed(&zfs, &root()).unwrap();
        let after = jiff::Timestamp::now().as_second();
        assert_eq!(snaps.len(), 3);
        assert_eq!(snaps[0].received.at(), Some(1000), "the stamp comes with the listing");
        assert_eq!(snaps[1].received.at(), None);
        let e = entry.unwrap();
        assert_eq!(e.txg, 140, "the highest createtxg listed, not the last");
        assert!(before <= e.start && e.start <= e.end && e.end <= after, "{e:?}");
    }

    #[test]
    fn lastrun_is_unix_seconds_or_ignored_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let mut ev = Recorded::default();
        assert_eq!(lastrun(&fake_zfs(dir.path(), "-"), &root(), &mut ev).unwrap(), None);
        assert_eq!(lastrun(&fake_zfs(dir.path(), "1795600000"), &root(), &mut ev).unwrap(), Some(1_795_600_000));
        assert!(ev.warnings.is_empty() && ev.errors.is_empty());
        assert_eq!(lastrun(&fake_zfs(dir.path(), "yesterday"), &root(), &mut ev).unwrap(), None);
        assert!(ev.warnings[0].contains("\"yesterday\", not Unix seconds"), "{:?}", ev.warnings);
    }

    fn decision(snapshot: &str, destroy: bool) -> BoxDecision {
        BoxDecision {
            snapshot: Snapshot::new(snapshot).unwrap(),
            received: Some(1),
            aged_from: Some(1),
            creation: 1,
            destroy,
            verdict: if destroy { "destroy".into() } else { "keep".into() },
        }
    }

    #[test]
    fn destroy_never_leaves_the_root() {
        // Refused before any zfs runs (the binary does not exist).
        let z = Zfs::with_binary("/nonexistent/zfs");
        let name = [SnapName::new("zoffsite-1").unwrap()];
        for outside in ["offsite", "offsite/homework", "tank/home"] {
            let e = z.destroy_received_snapshots(&root(), &Dataset::new(outside).unwrap(), &name).unwrap_err();
            assert!(e.to_string().contains("not under the box root"), "{e}");
        }
        // Inside, it would run zfs (and here fail to spawn it).
        let e =
            z.destroy_received_snapshots(&root(), &Dataset::new("offsite/home/tank/a").unwrap(), &name).unwrap_err();
        assert!(!e.to_string().contains("not under the box root"), "{e}");
        // A forged decision outside the root is skipped by destroy as well:
        // said, and nothing runs.
        let mut ev = Recorded::default();
        destroy(&z, &root(), &[decision("tank/data@zoffsite-1", true)], &mut ev);
        assert_eq!(ev.worst, Severity::Ok);
        assert!(ev.errors[0].1.contains("not destroying tank/data@zoffsite-1"), "{:?}", ev.errors);
    }

    #[test]
    fn destroy_runs_one_zfs_destroy_per_dataset_and_only_what_was_decided() {
        let dir = tempfile::tempdir().unwrap();
        let zfs = fake_zfs(dir.path(), "-");
        let mut ev = Recorded::default();
        let d = [
            decision("offsite/home/tank/a@s1", true),
            decision("offsite/home/tank/a@s2", false),
            decision("offsite/home/tank/b@s1", true),
            decision("offsite/home/tank/a@s3", true),
        ];
        destroy(&zfs, &root(), &d, &mut ev);
        assert!(ev.errors.is_empty(), "{:?}", ev.errors);
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(log, "destroy offsite/home/tank/a@s1,s3\ndestroy offsite/home/tank/b@s1\n");
    }
}
