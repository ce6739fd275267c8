//! `zoffsite restore`: bring a dataset tree back from a box, over the
//! network (`--target`, through `serve`) or from the box's pool imported on
//! this machine (`--from-pool POOL/ROOT`).
//!
//! This is the command only: it picks where the streams come from and
//! hands the rest to [`zoffsite_exec::restore::restore`] (the receive, its
//! bounds and checks, keys, manifest and mounts; its module docs state the
//! invariants), which reports through the [`Ui`]: text and, on a terminal,
//! a progress line per receive as it goes; with `--json` its report at the
//! end (on failure too: as far as it got; the short document when it
//! stopped before a plan).

use zoffsite_core::manifest::Apply;
use zoffsite_core::restore::{Report, Request};
use zoffsite_exec::proto::client::Session;
use zoffsite_exec::restore::{self, Options, Origin};
use zoffsite_exec::zfs::Zfs;

use crate::cli::{ApplyProperties, RestoreArgs};
use crate::cmd::common;
use crate::exit::{Code as _, Exit};
use crate::ui::{StopKind, Ui};

pub(crate) fn run(args: &RestoreArgs) -> Exit {
    let mut ui = Ui::new(args.json, args.dry_run);
    let origin = match (&args.target, &args.from_pool) {
        (Some(name), None) => {
            let Some(cfg) = common::config_for_target(&args.config, Some(name), &mut ui) else { return ui.bail() };
            match Session::connect(&cfg.targets[0]) {
                Ok(s) => Origin::Box(Box::new(s)),
                Err(e) => {
                    ui.stop(StopKind::Target, format_args!("target {name}: {e}"), None);
                    return ui.bail();
                }
            }
        }
        (None, Some(root)) => Origin::Pool(root.clone()),
        _ => {
            ui.stop(
                StopKind::Usage,
                "restore from either --target NAME (over the network) or --from-pool POOL/ROOT (the box's disk, imported here)",
                None,
            );
            return ui.bail();
        }
    };
    let opts = Options {
        request: Request {
            dataset: args.dataset.clone(),
            snapshot: args.snapshot.clone(),
            to: args.to.clone(),
            children: !args.no_children,
        },
        keylocation: args.keylocation.clone(),
        children_unverified: args.children_unverified,
        apply: match args.apply_properties {
            ApplyProperties::Data => Apply::Data,
            ApplyProperties::All => Apply::All,
        },
        dry_run: args.dry_run,
        max_bytes: args.max_bytes,
        max_time: args.max_time,
    };
    let report = restore::restore(&Zfs::new(), origin, &opts, &mut ui);
    if ui.json() {
        println!("{}", serde_json::to_string_pretty(&document(args, &report, &ui)).expect("serializes"));
    }
    ui.exit()
}

/// `restore --json`'s document (docs/json.md).
fn document(args: &RestoreArgs, report: &Report, ui: &Ui) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "dataset": args.dataset,
        "from": match (&args.target, &args.from_pool) {
            (Some(t), _) => serde_json::json!({"target": t}),
            (_, Some(p)) => serde_json::json!({"pool": p}),
            _ => serde_json::Value::Null,
        },
    });
    let fields = serde_json::to_value(report).expect("serializes");
    if let (Some(d), serde_json::Value::Object(f)) = (doc.as_object_mut(), fields) {
        d.extend(f);
        d.insert("errors".into(), serde_json::json!(ui.errors()));
        d.insert("exit_code".into(), ui.exit().code().into());
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use zoffsite_core::names::{Dataset, Guid, SnapName};
    use zoffsite_core::restore::Step;

    #[test]
    fn the_json_document_says_how_far_it_got() {
        let cli = crate::cli::Cli::try_parse_from([
            "zoffsite",
            "restore",
            "--target",
            "friend",
            "--dataset",
            "tank/data",
            "--json",
        ])
        .unwrap();
        let crate::cli::Command::Restore(args) = cli.command else { panic!("not restore") };
        assert!(args.json);
        let ds = |s: &str| Dataset::new(s).unwrap();
        let step = |s: &str| Step {
            source: ds(s),
            dest: ds(s),
            snapshot: SnapName::new("zoffsite-20261126T073000Z").unwrap(),
            guid: Guid::new(42).unwrap(),
        };
        let mut report = Report::planned(false, &[step("tank/data"), step("tank/data/a"), step("tank/data/b")]);
        report.received(&ds("tank/data"), Some(4096));
        report.left_out(&ds("tank/data/b"), "not listed by the manifest");
        report.received(&ds("tank/data/a"), None);
        let mut ui = Ui::new(true, false);
        ui.err(Exit::Error, "tank/data/a@zoffsite-20261126T073000Z: zfs receive failed");
        let doc = document(&args, &report, &ui);
        assert_eq!(doc["dataset"], "tank/data");
        assert_eq!(doc["from"], serde_json::json!({"target": "friend"}));
        assert_eq!(doc["steps"][0]["state"], "restored");
        assert_eq!(doc["steps"][0]["bytes"], 4096);
        assert_eq!(doc["steps"][1]["state"], "failed");
        assert_eq!(doc["steps"].as_array().unwrap().len(), 2, "a child left out is no step");
        assert_eq!(
            doc["left_out"][0],
            serde_json::json!({"dataset": "tank/data/b", "reason": "not listed by the manifest"})
        );
        assert_eq!(doc["exit_code"], 1);
        assert_eq!(doc["errors"].as_array().unwrap().len(), 1);
        let docs = include_str!("../../../../docs/json.md");
        for key in [
            "dry_run",
            "steps",
            "left_out",
            "unverified",
            "max_bytes",
            "max_time",
            "keylocation",
            "unlocked",
            "mountpoint",
        ] {
            assert!(doc.get(key).is_some(), "{key} is always there");
            assert!(docs.contains(&format!("\"{key}\"")), "docs/json.md documents restore's {key}");
        }
    }
}
