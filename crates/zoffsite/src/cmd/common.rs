//! What several subcommands share: loading the config, the run lock, and
//! the frame of a reporting command ([`notified`]: its `[notify]`, its JSON).

use std::path::Path;

use anyhow::Context as _;
use zoffsite_core::config::Config;
use zoffsite_core::notify::{self, Ended, Phase, Run};
use zoffsite_exec::lock::{self, RunLock};

use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

/// Reads and validates the config, and checks that the files it names exist.
pub(crate) fn load_config(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read config file {}: create it (see README.md, \"Quick start\") or pass another with -c FILE",
            path.display()
        )
    })?;
    let cfg = Config::parse(&text).with_context(|| format!("config file {}", path.display()))?;
    for t in &cfg.targets {
        if !t.identity_file.is_file() {
            anyhow::bail!(
                "target {}: identity_file {} does not exist: create the source's key with `ssh-keygen -t ed25519 -N '' -f {}` and install its .pub on the box, or fix the path",
                t.name,
                t.identity_file.display(),
                t.identity_file.display()
            );
        }
        if !t.known_hosts.is_file() {
            anyhow::bail!(
                "target {}: known_hosts {} does not exist: pin the box's host key there (its /etc/ssh/ssh_host_ed25519_key.pub, as `{} ssh-ed25519 AAAA...`), or fix the path",
                t.name,
                t.known_hosts.display(),
                t.host
            );
        }
    }
    Ok(cfg)
}

/// [`load_config`], reporting a failure through `ui` (exit code 2).
pub(crate) fn config(path: &Path, ui: &mut Ui) -> Option<Config> {
    load_config(path).map_err(|e| ui.err(Exit::Usage, format_args!("{e:#}"))).ok()
}

/// Lists every filesystem and volume under the configured roots (only
/// there) and applies the selection ([`zoffsite_exec::selection::list`]).
pub(crate) fn list_selection(
    cfg: &Config,
    zfs: &zoffsite_exec::zfs::Zfs,
    config_path: &Path,
) -> Result<(zoffsite_core::plan::Selection, Vec<String>), zoffsite_exec::zfs::ZfsError> {
    zoffsite_exec::selection::list(cfg, zfs, config_path)
}

/// Parses `--now` (RFC 3339, e.g. `2026-11-26T07:30:00Z`).
pub(crate) fn parse_now(s: &str) -> Result<jiff::Timestamp, String> {
    s.parse().map_err(|e| format!("--now {s:?} is not a time ({e}); write it like 2026-11-26T07:30:00Z"))
}

/// `--now`, or the clock; and whether it is `--now` (a what-if run, which
/// records nothing on the box).
pub(crate) fn now_or_clock(now: Option<&str>) -> Result<(jiff::Timestamp, bool), String> {
    match now {
        Some(t) => parse_now(t).map(|t| (t, true)),
        None => Ok((jiff::Timestamp::now(), false)),
    }
}

/// The run lock for a run that changes things (`Some(None)` for a dry run,
/// which changes nothing and may look while a real run works); `None`
/// when it cannot be taken, reported through `ui`.
pub(crate) fn lock_unless_dry_run(config: &Path, dry_run: bool, ui: &mut Ui) -> Option<Option<RunLock>> {
    if dry_run {
        Some(None)
    } else {
        lock(config, ui).map(Some)
    }
}

/// Takes this config's run lock, or says who holds it (exit code 5).
pub(crate) fn lock(config: &Path, ui: &mut Ui) -> Option<RunLock> {
    match lock::acquire_default(config) {
        Ok(l) => Some(l),
        Err(e @ lock::LockError::Busy { .. }) => {
            ui.err(Exit::Busy, e);
            None
        }
        Err(e) => {
            ui.err(Exit::Error, e);
            None
        }
    }
}

/// Runs a reporting command's `work` between its notifications: `[notify]`'s
/// start (before the work: `on_start`, `ping_url/start`), then `work`, whose
/// JSON document is printed with `--json`, then success or failure with
/// that very text as the report (`zoffsite_core::notify` decides what is
/// sent; a dry run sends nothing). A notification that fails or hangs is a
/// warning, bounded by `[notify] timeout`: the exit code is the work's.
///
/// `work` returns its document ([`crate::ui::doc`]) with its `exit_code`
/// set; on a path that stops early, [`Ui::bail_doc`].
pub(crate) fn notified(
    cfg: &Config,
    command: notify::Command,
    dry_run: bool,
    ui: &mut Ui,
    work: impl FnOnce(&mut Ui) -> String,
) -> Exit {
    let host = zoffsite_exec::boxnew::hostname().unwrap_or_else(|| "the source".into());
    let run = Run { command, host: &host, dry_run };
    zoffsite_exec::notify::send(notify::plan(&cfg.notify, &run, Phase::Start), cfg.notify.timeout, ui);
    let text = work(ui);
    if ui.json() {
        println!("{text}");
    }
    let ended = Ended { severity: ui.exit(), exit_code: ui.exit().code(), errors: ui.errors(), report: &text };
    let actions = notify::plan(&cfg.notify, &run, Phase::End(ended));
    zoffsite_exec::notify::send(actions, cfg.notify.timeout, ui);
    ui.exit()
}
