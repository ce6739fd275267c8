//! The source's own posture: every box reachable with its pinned host key,
//! every selected dataset encrypted, every key file readable by root only,
//! and a recent backup on every target.
//! (The tunnel, the timers and the OpenZFS version are judged by
//! [`super::wireguard`], [`super::timers`] and [`super::zfs`].)
//!
//! Reused, not re-decided: the selection ([`crate::plan::select`], which
//! already refuses unencrypted datasets), file facts as `box init` reads them
//! ([`crate::boxinit::FileFacts`]) and `status`'s per-dataset verdict
//! ([`crate::status::evaluate`]).

use crate::boxinit::FileFacts;
use crate::names::Dataset;
use crate::plan::{Selection, Skip};
use crate::status::{DatasetStatus, State};

use super::{quote, Check, CheckId, Status};

/// Most names listed in one summary.
const MAX_NAMED: usize = 5;

fn named<T: std::fmt::Display>(items: &[T]) -> String {
    let mut s = items.iter().take(MAX_NAMED).map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if items.len() > MAX_NAMED {
        s.push_str(&format!(" and {} more", items.len() - MAX_NAMED));
    }
    s
}

/// Every dataset the configuration selects is encrypted (an unencrypted one
/// is never sent: `backup` refuses it each run).
pub fn check_encryption(sel: &Selection) -> Check {
    const ID: CheckId = CheckId::SourceEncryption;
    let plain: Vec<&Dataset> = sel.skipped.iter().filter(|(_, s)| *s == Skip::Unencrypted).map(|(d, _)| d).collect();
    if !plain.is_empty() {
        return Check::fail(
            ID,
            format!("{} selected dataset(s) are not encrypted and are never backed up: {}", plain.len(), named(&plain)),
            "move their data into an encrypted dataset (`zfs create -o encryption=on ...` and copy), or exclude them (`zfs set zoffsite:backup=off DATASET`)",
        );
    }
    if sel.included.is_empty() {
        return Check::warn(
            ID,
            "the configuration selects no dataset",
            "name the datasets to back up in source.datasets (zoffsite.toml)",
        );
    }
    Check::ok(ID, format!("all {} selected datasets are encrypted", sel.included.len()))
}

/// One encryption root's key, as the shell found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub encryption_root: Dataset,
    /// The `keylocation` property (`prompt`, `file:///...`, `https://...`).
    pub keylocation: String,
    /// For `file://` locations: the file, not followed if a symlink (`None`:
    /// it does not exist). Its `content` is not read.
    pub file: Option<FileFacts>,
}

fn judge_key(k: &Key) -> (Status, String) {
    let root = &k.encryption_root;
    match k.keylocation.as_str() {
        "prompt" => (Status::Ok, format!("{root}: typed at load time (no key file)")),
        loc if loc.starts_with("file:///") => {
            let path = super::one_line(&loc["file://".len()..]);
            match &k.file {
                None => (Status::Warn, format!("{root}: its key file {path} does not exist")),
                Some(f) if f.is_symlink => {
                    (Status::Unknown, format!("{root}: its key file {path} is a symlink, which doctor does not follow"))
                }
                Some(f) if f.is_dir => (Status::Fail, format!("{root}: its key file {path} is a directory")),
                Some(f) if f.uid != 0 => {
                    (Status::Fail, format!("{root}: its key file {path} belongs to uid {}, not root", f.uid))
                }
                Some(f) if f.mode & 0o077 != 0 => (
                    Status::Fail,
                    format!(
                        "{root}: its key file {path} is readable or writable by others (mode {:04o})",
                        f.mode & 0o7777
                    ),
                ),
                Some(_) => (Status::Ok, format!("{root}: {path} is root's alone")),
            }
        }
        loc if loc.starts_with("https://") || loc.starts_with("http://") => (
            Status::Unknown,
            format!("{root}: its key is fetched from {}, whose readers doctor cannot see", quote(loc)),
        ),
        loc => (Status::Unknown, format!("{root}: keylocation {}", quote(loc))),
    }
}

/// Every encryption root's key file is readable by root only.
pub fn check_key_files(keys: &[Key]) -> Check {
    const ID: CheckId = CheckId::SourceKeyFiles;
    let verdicts: Vec<(Status, String)> = keys.iter().map(judge_key).collect();
    let Some(status) = verdicts.iter().map(|v| v.0).max() else {
        return Check::unknown(ID, "no encryption root to check", "look at `zfs get keylocation`");
    };
    let shown: Vec<&str> = verdicts.iter().filter(|v| v.0 == status).map(|v| v.1.as_str()).collect();
    let summary = if status == Status::Ok {
        format!("{} key(s), none readable by others", verdicts.len())
    } else {
        named(&shown)
    };
    Check::with_status(
        ID,
        status,
        summary,
        "`chown root:root FILE && chmod 0400 FILE` for each key file (and keep a copy off this machine: without it no backup can be read)",
    )
}

/// Every target's box answered over ssh with the host key pinned in its
/// `known_hosts` (`Err`: why not, one line).
pub fn check_box_ssh(targets: &[(String, Result<(), String>)]) -> Check {
    const ID: CheckId = CheckId::SourceBoxSsh;
    if targets.is_empty() {
        return Check::unknown(ID, "no target to reach", "configure a [[target]] (`zoffsite box new`)");
    }
    let failed: Vec<String> =
        targets.iter().filter_map(|(t, r)| r.as_ref().err().map(|e| format!("{t}: {e}"))).collect();
    if failed.is_empty() {
        let names: Vec<&str> = targets.iter().map(|(t, _)| t.as_str()).collect();
        return Check::ok(ID, format!("reached {} with the pinned host key", named(&names)));
    }
    Check::fail(
        ID,
        named(&failed),
        "check the tunnel (source.wg-handshake), the box's sshd, and that the target's known_hosts holds the key `zoffsite box new` pinned",
    )
}

/// A recent backup on every target: `status`'s verdicts (computed with each
/// target's `max_age`), per target name.
pub fn check_last_run(targets: &[(String, Vec<DatasetStatus>)]) -> Check {
    const ID: CheckId = CheckId::SourceLastRun;
    if targets.is_empty() || targets.iter().all(|(_, d)| d.is_empty()) {
        return Check::unknown(ID, "no target and dataset to check", "configure a [[target]] and source.datasets");
    }
    let mut bad = Vec::new();
    for (target, datasets) in targets {
        for d in datasets.iter().filter(|d| d.state.is_problem()) {
            let why = match d.state {
                // Since the box was last known to hold all of it.
                State::Stale => format!("{} days old", d.confirmed_age.or(d.age).unwrap_or_default() / 86_400),
                State::Never => "never backed up".to_owned(),
                _ => "diverged".to_owned(),
            };
            bad.push(format!("{} on {}: {why}", d.dataset, super::one_line(target)));
        }
    }
    if bad.is_empty() {
        let n: usize = targets.iter().map(|(_, d)| d.len()).sum();
        return Check::ok(ID, format!("{n} dataset(s) on {} target(s) within max_age", targets.len()));
    }
    Check::fail(
        ID,
        format!("{} backup(s) missing or older than max_age: {}", bad.len(), named(&bad)),
        "look at `zoffsite status` and `journalctl -u zoffsite-backup.service`; check that the backup timer is enabled",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Guid;
    use crate::parse::{DatasetRow, Encryption};
    use crate::plan::{Include, Included};

    fn ds(s: &str) -> Dataset {
        Dataset::new(s).unwrap()
    }

    fn row(name: &str) -> DatasetRow {
        DatasetRow {
            dataset: ds(name),
            guid: Guid::new(1).unwrap(),
            encryption: Encryption::On("aes-256-gcm".into()),
            written: 0,
            backup: None,
        }
    }

    #[test]
    fn an_unencrypted_selected_dataset_fails() {
        let mut sel = Selection::default();
        assert_eq!(check_encryption(&sel).status(), Status::Warn, "nothing selected");
        sel.included.push(Included { row: row("tank/a"), why: Include::Selected { root: ds("tank") } });
        assert_eq!(check_encryption(&sel).status(), Status::Ok);
        sel.skipped.push((ds("tank/games"), Skip::Excluded { by: ds("tank/games") }));
        assert_eq!(check_encryption(&sel).status(), Status::Ok, "excluded on purpose");
        sel.skipped.push((ds("tank/plain"), Skip::Unencrypted));
        let c = check_encryption(&sel);
        assert_eq!(c.status(), Status::Fail);
        assert!(c.summary().contains("tank/plain") && !c.summary().contains("games"), "{c:?}");
    }

    fn key(loc: &str, file: Option<(bool, bool, u32, u32)>) -> Key {
        Key {
            encryption_root: ds("tank"),
            keylocation: loc.into(),
            file: file.map(|(is_symlink, is_dir, uid, mode)| FileFacts {
                is_symlink,
                is_dir,
                uid,
                mode,
                content: None,
            }),
        }
    }

    #[test]
    fn key_files_must_be_roots_alone() {
        let s = |k: Key| check_key_files(&[k]).status();
        assert_eq!(s(key("file:///etc/zfs/tank.key", Some((false, false, 0, 0o100_400)))), Status::Ok);
        assert_eq!(s(key("file:///etc/zfs/tank.key", Some((false, false, 0, 0o600)))), Status::Ok);
        assert_eq!(s(key("file:///etc/zfs/tank.key", Some((false, false, 0, 0o644)))), Status::Fail);
        assert_eq!(s(key("file:///etc/zfs/tank.key", Some((false, false, 0, 0o640)))), Status::Fail);
        assert_eq!(s(key("file:///etc/zfs/tank.key", Some((false, false, 1000, 0o400)))), Status::Fail);
        assert_eq!(s(key("file:///etc/zfs/tank.key", Some((false, true, 0, 0o700)))), Status::Fail);
        assert_eq!(s(key("file:///etc/zfs/tank.key", Some((true, false, 0, 0o777)))), Status::Unknown);
        assert_eq!(s(key("file:///etc/zfs/tank.key", None)), Status::Warn);
        assert_eq!(s(key("prompt", None)), Status::Ok);
        assert_eq!(s(key("https://keys.example/tank", None)), Status::Unknown);
        assert_eq!(s(key("file://relative", None)), Status::Unknown);
        assert_eq!(check_key_files(&[]).status(), Status::Unknown);
        let mixed = check_key_files(&[key("prompt", None), key("file:///k", Some((false, false, 0, 0o644)))]);
        assert!(mixed.summary().contains("mode 0644"), "{mixed:?}");
    }

    #[test]
    fn every_box_must_answer_with_its_pinned_key() {
        assert_eq!(check_box_ssh(&[]).status(), Status::Unknown);
        let ok = check_box_ssh(&[("friend".into(), Ok(()))]);
        assert_eq!(ok.status(), Status::Ok);
        let bad = check_box_ssh(&[("friend".into(), Ok(())), ("far".into(), Err("host key changed\n!".into()))]);
        assert_eq!(bad.status(), Status::Fail);
        assert_eq!(bad.summary(), "far: host key changed\\n!");
    }

    fn st(name: &str, state: State, age: Option<i64>) -> DatasetStatus {
        DatasetStatus {
            dataset: ds(name),
            source_newest: None,
            box_newest: None,
            age,
            confirmed: None,
            confirmed_age: age,
            behind_bytes: None,
            partial: false,
            state,
        }
    }

    #[test]
    fn every_target_needs_a_backup_within_max_age() {
        let t = |v: Vec<DatasetStatus>| vec![("friend".to_owned(), v)];
        assert_eq!(check_last_run(&t(vec![st("tank/a", State::Current, Some(60))])).status(), Status::Ok);
        assert_eq!(check_last_run(&t(vec![st("tank/a", State::Behind, Some(60))])).status(), Status::Ok);
        let stale = check_last_run(&t(vec![st("tank/a", State::Stale, Some(3 * 86_400))]));
        assert_eq!(stale.status(), Status::Fail);
        assert!(stale.summary().contains("tank/a on friend: 3 days old"), "{stale:?}");
        assert_eq!(check_last_run(&t(vec![st("tank/a", State::Never, None)])).status(), Status::Fail);
        assert_eq!(check_last_run(&t(vec![st("tank/a", State::Diverged, None)])).status(), Status::Fail);
        assert_eq!(check_last_run(&[]).status(), Status::Unknown);
        assert_eq!(check_last_run(&t(vec![])).status(), Status::Unknown);
    }
}
