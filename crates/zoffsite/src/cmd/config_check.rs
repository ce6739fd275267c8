//! `zoffsite config check [-c FILE] [--box] [--json]`: validates a config
//! file and says what it means, touching neither ZFS nor the network: it
//! reads the file, looks whether the files it names exist, and reads the
//! backup timer's unit files for its schedule. Nothing else: it runs no
//! program (so it works where zfs and ssh are missing, e.g. on a laptop
//! checking a config before copying it over).
//!
//! The source's config: the selection (roots and exclusions), source
//! retention in words, each target (address, user, key files, timeouts,
//! bandwidth limit) and when `zoffsite backup` runs. The box's (`--box`):
//! the root, its ages, who is notified, the txg journal and box retention.
//!
//! Exit 0 when the config is valid and every file it names exists, 2
//! otherwise (each problem named, with the fix); `--json` prints the
//! document either way (docs/json.md).

use std::path::{Path, PathBuf};

use serde_json::json;
use zoffsite_core::boxside::BoxConfig;
use zoffsite_core::config::{Config, CongestionControl, Target};
use zoffsite_core::human;
use zoffsite_core::provision::{units, UNIT_DIR};
use zoffsite_core::retention::KeepPolicy;

use crate::cli::ConfigCheckArgs;
use crate::cmd::common;
use crate::exit::{Code as _, Exit};
use crate::ui::{StopKind, Ui};

/// Where the backup timer may be installed: by `box apply` (first), or by
/// a package.
const TIMER_DIRS: [&str; 3] = [UNIT_DIR, "/usr/lib/systemd/system", "/lib/systemd/system"];

pub(crate) fn run(args: &ConfigCheckArgs) -> Exit {
    let mut ui = Ui::new(args.json, true);
    let doc = if args.box_side {
        let Some(cfg) = common::box_config(&args.config, &mut ui) else { return ui.bail() };
        box_side(&cfg, &args.config, &mut ui)
    } else {
        let cfg = match common::parse_config(&args.config) {
            Ok(c) => c,
            Err(p) => {
                ui.stop(StopKind::Config, p.message, p.hint);
                return ui.bail();
            }
        };
        source(&cfg, &args.config, &schedule(), &mut ui)
    };
    if ui.json() {
        let mut doc = doc;
        doc["errors"] = json!(ui.errors());
        doc["exit_code"] = ui.exit().code().into();
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    }
    ui.exit()
}

/// The backup timer as installed: its unit file, its schedule, whether it
/// is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Schedule {
    path: PathBuf,
    on_calendar: Vec<String>,
    enabled: bool,
}

/// The first unit file of the backup timer in [`TIMER_DIRS`], with its
/// drop-ins (`DIR/zoffsite-backup.timer.d/*.conf`, in name order).
fn schedule() -> Option<Schedule> {
    let path = TIMER_DIRS.iter().map(|d| Path::new(d).join(units::BACKUP_TIMER)).find(|p| p.is_file())?;
    let mut texts = vec![std::fs::read_to_string(&path).unwrap_or_default()];
    let mut dropins: Vec<PathBuf> = TIMER_DIRS
        .iter()
        .filter_map(|d| std::fs::read_dir(Path::new(d).join(format!("{}.d", units::BACKUP_TIMER))).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    dropins.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    texts.extend(dropins.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    let enabled = Path::new(UNIT_DIR).join("timers.target.wants").join(units::BACKUP_TIMER).exists();
    Some(Schedule { path, on_calendar: on_calendar(&texts), enabled })
}

/// The `OnCalendar=` values in force after the unit and its drop-ins, in
/// order (an empty assignment clears the list, as systemd does).
fn on_calendar(texts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in texts.iter().flat_map(|t| t.lines()) {
        if let Some(v) = line.trim().strip_prefix("OnCalendar=") {
            let v = v.trim();
            if v.is_empty() {
                out.clear();
            } else {
                out.push(v.to_owned());
            }
        }
    }
    out
}

/// Says what the source's config means; the JSON document.
fn source(cfg: &Config, path: &Path, schedule: &Option<Schedule>, ui: &mut Ui) -> serde_json::Value {
    let src = &cfg.source;
    ui.say(format_args!("{}: valid", path.display()));
    for d in &src.datasets {
        ui.say(format_args!("backs up {d} and every dataset below it"));
    }
    for e in &src.exclude {
        ui.say(format_args!("  except {e} and every dataset below it"));
    }
    ui.say("  (a dataset's zoffsite:backup=on|off property overrides this; `zoffsite backup -n` shows the selection)");
    ui.say(format_args!("source retention ([source.keep]): {}", retention(src.keep.as_ref(), "on the source")));
    let mut targets = Vec::new();
    for t in &cfg.targets {
        ui.say(format_args!("target {}", target_line(t)));
        let missing = common::target_files(t);
        for p in &missing {
            ui.stop(StopKind::Config, &p.message, p.hint.clone());
        }
        targets.push(json!({
            "name": t.name,
            "host": t.host,
            "port": t.port,
            "user": t.user,
            "identity_file": t.identity_file,
            "known_hosts": t.known_hosts,
            "connect_timeout": t.connect_timeout.as_secs(),
            "max_age": t.max_age.as_secs(),
            "bandwidth_limit": t.bandwidth.default_limit().bytes_per_sec(),
            "bandwidth_windows": t.bandwidth.windows().iter().map(|w| json!({
                "from": w.from.to_string(),
                "to": w.to.to_string(),
                "limit": w.limit.bytes_per_sec(),
            })).collect::<Vec<_>>(),
            "congestion_control": t.congestion_control.to_string(),
            "missing": missing.iter().map(|p| p.message.clone()).collect::<Vec<_>>(),
        }));
    }
    // Who hears of a run; the ping URL only as its scheme and host (a
    // secret: the rest of it is never shown).
    let n = &cfg.notify;
    let argv = |a: &Option<zoffsite_core::notify::Argv>| a.as_ref().map(|a| a.as_slice().to_vec());
    let ping = n.ping_url.as_ref().map(|u| u.redacted().to_owned());
    let said: Vec<String> =
        [("on_start", argv(&n.on_start)), ("on_success", argv(&n.on_success)), ("on_failure", argv(&n.on_failure))]
            .into_iter()
            .filter_map(|(k, a)| a.map(|a| format!("{k} {}", a.join(" "))))
            .chain(ping.iter().map(|p| format!("ping {p} (the rest of the URL is a secret)")))
            .collect();
    if said.is_empty() {
        ui.say("notify: nobody (no [notify]): only the exit code tells of a failure");
    } else {
        ui.say(format_args!("notify: {}; each bounded by {}", said.join("; "), human::duration(n.timeout)));
    }
    match schedule {
        Some(s) => ui.say(format_args!(
            "schedule: {} ({}), {}",
            if s.on_calendar.is_empty() { "no OnCalendar=".to_owned() } else { s.on_calendar.join(", ") },
            s.path.display(),
            if s.enabled { "enabled" } else { "NOT enabled: `systemctl enable --now zoffsite-backup.timer`" }
        )),
        None => ui.say(format_args!(
            "schedule: no {} installed; `zoffsite box apply` of a source bundle installs it, or run `zoffsite backup` from your own timer",
            units::BACKUP_TIMER
        )),
    }
    json!({
        "config": path,
        "side": "source",
        "datasets": src.datasets,
        "exclude": src.exclude,
        "keep": src.keep.as_ref().map(keep_json),
        "keep_words": retention(src.keep.as_ref(), "on the source"),
        "targets": targets,
        "notify": {
            "on_start": argv(&n.on_start),
            "on_success": argv(&n.on_success),
            "on_failure": argv(&n.on_failure),
            "ping": ping,
            "timeout": n.timeout.as_secs(),
        },
        "schedule": schedule.as_ref().map(|s| json!({
            "unit": s.path,
            "on_calendar": s.on_calendar,
            "enabled": s.enabled,
        })),
    })
}

/// One target, in words.
fn target_line(t: &Target) -> String {
    format!(
        "{}: {}@{} port {}, key {}, host key pinned in {}; connect timeout {}; stale (status exits 6) after {}; bandwidth {}; TCP congestion control {}",
        t.name,
        t.user,
        t.host,
        t.port,
        t.identity_file.display(),
        t.known_hosts.display(),
        human::duration(t.connect_timeout),
        human::duration(t.max_age),
        t.bandwidth.describe(),
        match &t.congestion_control {
            CongestionControl::System => "the system's".to_owned(),
            CongestionControl::Named(n) => n.clone(),
        },
    )
}

/// A retention policy in words, or what its absence means.
fn retention(keep: Option<&KeepPolicy>, whose: &str) -> String {
    match keep {
        Some(k) => format!("{} (and every snapshot a target still needs as its base)", k.in_words()),
        None => format!("none: nothing is ever pruned {whose}"),
    }
}

fn keep_json(k: &KeepPolicy) -> serde_json::Value {
    json!({
        "last": k.last, "hourly": k.hourly, "daily": k.daily,
        "weekly": k.weekly, "monthly": k.monthly, "yearly": k.yearly,
    })
}

/// Says what the box's config means; the JSON document.
fn box_side(cfg: &BoxConfig, path: &Path, ui: &mut Ui) -> serde_json::Value {
    ui.say(format_args!("{}: valid", path.display()));
    ui.say(format_args!("root: {} (the source's datasets are kept below it)", cfg.root));
    ui.say(format_args!(
        "box check: fails when a dataset received nothing for {} (max_age); notifies {}",
        human::duration(cfg.max_age),
        if cfg.notify.is_empty() {
            "nobody (only its exit code tells)".to_owned()
        } else {
            format!("{:?}", cfg.notify)
        }
    ));
    let keep = match &cfg.keep {
        Some(k) => format!(
            "{}, by the box's own receive times; nothing younger than {} (min_age), and each dataset's newest",
            k.in_words(),
            human::duration(cfg.min_age)
        ),
        None => "none: box prune prunes nothing ([keep] is not set)".to_owned(),
    };
    ui.say(format_args!("box retention ([keep]): {keep}"));
    ui.say(format_args!("txg journal: {}", cfg.journal.display()));
    json!({
        "config": path,
        "side": "box",
        "root": cfg.root,
        "min_age": cfg.min_age.as_secs(),
        "max_age": cfg.max_age.as_secs(),
        "notify": cfg.notify,
        "journal": cfg.journal,
        "keep": cfg.keep.as_ref().map(keep_json),
        "keep_words": keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timers_schedule_is_the_last_word_of_its_unit_and_drop_ins() {
        let unit = "[Timer]\nOnCalendar=daily\nPersistent=true\n".to_owned();
        assert_eq!(on_calendar(std::slice::from_ref(&unit)), ["daily"]);
        let reset = "[Timer]\nOnCalendar=\nOnCalendar=*-*-* 03:30\n".to_owned();
        assert_eq!(on_calendar(&[unit.clone(), reset]), ["*-*-* 03:30"], "an empty assignment clears");
        let more = "[Timer]\nOnCalendar=hourly\n".to_owned();
        assert_eq!(on_calendar(&[unit, more]), ["daily", "hourly"]);
        assert!(on_calendar(&["[Timer]\n".to_owned()]).is_empty());
    }

    #[test]
    fn the_config_in_words_and_in_json() {
        let text = "[source]\ndatasets = [\"tank/data\"]\nexclude = [\"tank/data/games\"]\n[source.keep]\nlast = 24\ndaily = 7\n\
                    [[target]]\nname = \"friend\"\nhost = \"10.77.0.2\"\nuser = \"zoffsite\"\n\
                    identity_file = \"/nonexistent/id\"\nknown_hosts = \"/nonexistent/kh\"\nbandwidth_limit = \"2MiB/s\"\n";
        let cfg = Config::parse(text).unwrap();
        assert_eq!(
            target_line(&cfg.targets[0]),
            "friend: zoffsite@10.77.0.2 port 22, key /nonexistent/id, host key pinned in /nonexistent/kh; connect timeout 15s; stale (status exits 6) after 1d 2h; bandwidth 2 MiB/s; TCP congestion control bbr"
        );
        let mut ui = Ui::new(true, true);
        let schedule = Schedule {
            path: "/etc/systemd/system/zoffsite-backup.timer".into(),
            on_calendar: vec!["daily".into()],
            enabled: true,
        };
        let doc = source(&cfg, Path::new("/etc/zoffsite/zoffsite.toml"), &Some(schedule), &mut ui);
        assert_eq!(ui.exit(), Exit::Usage, "its key files are missing");
        assert_eq!(doc["targets"][0]["missing"].as_array().unwrap().len(), 2);
        assert_eq!(doc["targets"][0]["bandwidth_limit"], 2 * 1024 * 1024);
        assert_eq!(doc["targets"][0]["max_age"], 26 * 3600);
        assert_eq!(doc["targets"][0]["congestion_control"], "bbr");
        assert_eq!(doc["keep"]["daily"], 7);
        assert!(doc["keep_words"]
            .as_str()
            .unwrap()
            .starts_with("keeps the newest 24, and the newest of each of the last 7 days"));
        assert_eq!(doc["schedule"]["on_calendar"][0], "daily");
        let docs = include_str!("../../../../docs/json.md");
        let section = &docs[docs.find("zoffsite config check --json").expect("documented")..];
        for key in doc.as_object().unwrap().keys().chain(doc["targets"][0].as_object().unwrap().keys()) {
            assert!(section.contains(&format!("\"{key}\"")), "docs/json.md documents config check's {key}");
        }
        assert_eq!(retention(None, "on the source"), "none: nothing is ever pruned on the source");
    }
}
