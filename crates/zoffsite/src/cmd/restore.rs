//! `zoffsite restore`: bring a dataset tree back from a box, over the
//! network (`--target`, through `serve`) or from the box's pool imported on
//! this machine (`--from-pool POOL/ROOT`).
//!
//! This is the command only: it picks where the streams come from and
//! hands the rest to [`zoffsite_exec::restore::restore`] (the receive, its
//! bounds and checks, keys, manifest and mounts; its module docs state the
//! invariants), which reports through the [`Ui`].

use zoffsite_core::manifest::Apply;
use zoffsite_core::restore::Request;
use zoffsite_exec::proto::client::Session;
use zoffsite_exec::restore::{self, Options, Origin};
use zoffsite_exec::zfs::Zfs;

use crate::cli::{ApplyProperties, RestoreArgs};
use crate::exit::Exit;
use crate::ui::Ui;

pub(crate) fn run(args: &RestoreArgs) -> Exit {
    let mut ui = Ui::new(false, args.dry_run);
    let origin = match (&args.target, &args.from_pool) {
        (Some(name), None) => {
            let Some(cfg) = super::common::config(&args.config, &mut ui) else { return ui.bail() };
            let Some(target) = cfg.targets.iter().find(|t| t.name == *name) else {
                let names: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
                ui.err(
                    Exit::Usage,
                    format_args!("no target {name:?} in {}; its targets: {}", args.config.display(), names.join(", ")),
                );
                return ui.bail();
            };
            match Session::connect(target) {
                Ok(s) => Origin::Box(Box::new(s)),
                Err(e) => {
                    ui.err(Exit::Target, format_args!("target {name}: {e}"));
                    return ui.bail();
                }
            }
        }
        (None, Some(root)) => Origin::Pool(root.clone()),
        _ => {
            ui.err(Exit::Usage, "restore from either --target NAME (over the network) or --from-pool POOL/ROOT (the box's disk, imported here)");
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
    restore::restore(&Zfs::new(), origin, &opts, &mut ui);
    ui.exit()
}
