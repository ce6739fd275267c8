//! What several subcommands share: loading the config, picking a target,
//! taking the run lock, and the frame of a reporting command ([`notified`]:
//! its `[notify]`, its JSON).

use std::fmt;
use std::path::Path;

use zoffsite_core::boxside::BoxConfig;
use zoffsite_core::config::{Config, Target};
use zoffsite_core::notify::{self, Ended, Phase, Run};
use zoffsite_exec::lock::{self, RunLock};

use crate::exit::{Code as _, Exit};
use crate::ui::{StopKind, Ui};

/// Where the source config's format is described, for the hint of a
/// missing one.
const CONFIG_KEYS: &str = "every key: README.md, \"Using it\", and examples/zoffsite.toml";

/// Why the config cannot be used: what is wrong, and what to do.
#[derive(Debug)]
pub(crate) struct ConfigProblem {
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.hint {
            Some(h) => write!(f, "; {h}"),
            None => Ok(()),
        }
    }
}

/// Reads and validates the config, without looking at anything it names.
pub(crate) fn parse_config(path: &Path) -> Result<Config, ConfigProblem> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigProblem {
        message: format!("cannot read config file {}: {e}", path.display()),
        hint: Some(zoffsite_core::config::read_hint(e.kind(), CONFIG_KEYS)),
    })?;
    Config::parse(&text).map_err(|e| ConfigProblem {
        message: format!("config file {}: {e}", path.display()),
        hint: Some(
            "fix that key (every key: examples/zoffsite.toml); `zoffsite config check` checks the file alone".into(),
        ),
    })
}

/// Reads and validates the config, and checks that the files it names exist.
pub(crate) fn load_config(path: &Path) -> Result<Config, ConfigProblem> {
    let cfg = parse_config(path)?;
    match cfg.targets.iter().flat_map(target_files).next() {
        Some(problem) => Err(problem),
        None => Ok(cfg),
    }
}

/// What is missing of the files a target names (its key, its pinned host
/// key).
pub(crate) fn target_files(t: &Target) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    if !t.identity_file.is_file() {
        out.push(ConfigProblem {
            message: format!("target {}: identity_file {} does not exist", t.name, t.identity_file.display()),
            hint: Some(format!(
                "create the source's key with `ssh-keygen -t ed25519 -N '' -f {}` and install its .pub on the box, or fix the path",
                t.identity_file.display()
            )),
        });
    }
    if !t.known_hosts.is_file() {
        out.push(ConfigProblem {
            message: format!("target {}: known_hosts {} does not exist", t.name, t.known_hosts.display()),
            hint: Some(format!(
                "pin the box's host key there (its /etc/ssh/ssh_host_ed25519_key.pub, as `{} ssh-ed25519 AAAA...`), or fix the path",
                t.host
            )),
        });
    }
    out
}

/// [`load_config`], reporting a failure through `ui` (exit code 2).
pub(crate) fn config(path: &Path, ui: &mut Ui) -> Option<Config> {
    load_config(path).map_err(|p| ui.stop(StopKind::Config, p.message, p.hint)).ok()
}

/// The box's config, reporting a failure through `ui` (exit code 2).
pub(crate) fn box_config(path: &Path, ui: &mut Ui) -> Option<BoxConfig> {
    zoffsite_exec::boxstate::load_config(path).map_err(|e| ui.stop(StopKind::Config, e.problem(), Some(e.hint()))).ok()
}

/// [`config`] for `--target NAME`: the config with only that target (all
/// of them without one), whose files alone must exist. An unknown name is
/// a usage error listing the known ones.
pub(crate) fn config_for_target(path: &Path, name: Option<&str>, ui: &mut Ui) -> Option<Config> {
    let cfg = parse_config(path).map_err(|p| ui.stop(StopKind::Config, p.message, p.hint)).ok()?;
    let cfg = match name {
        None => cfg,
        Some(name) => match cfg.targets.iter().find(|t| t.name == name) {
            Some(t) => Config { targets: vec![t.clone()], ..cfg.clone() },
            None => {
                ui.stop(StopKind::Usage, unknown_target(name, path), Some(known_targets(&cfg)));
                return None;
            }
        },
    };
    if let Some(p) = cfg.targets.iter().flat_map(target_files).next() {
        ui.stop(StopKind::Config, p.message, p.hint);
        return None;
    }
    Some(cfg)
}

/// The message for a `--target` the config does not have.
fn unknown_target(name: &str, config: &Path) -> String {
    format!("no target {name:?} in {}", config.display())
}

/// The hint that lists the config's targets.
fn known_targets(cfg: &Config) -> String {
    let names: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
    format!("its targets: {}", names.join(", "))
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
            ui.stop(StopKind::Busy, e, Some("wait for that run to end; each config has one run at a time".into()));
            None
        }
        Err(e) => {
            ui.stop(StopKind::Error, e, None);
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
