//! `zoffsite box apply BUNDLE [--root DIR] [--offline] [-n] [--json]`:
//! installs what `zoffsite box new` made for this machine (the bundle says
//! which side), idempotently. Plan
//! ([`zoffsite_core::provision::apply::plan`] over the facts
//! [`zoffsite_exec::boxapply::gather`] finds), show (every directory, file
//! and command; a secret by its path only; with `-v` the text of a new
//! public file or the diff of a replaced one, never the old text of a file
//! that may hold a private key: [`apply::old_text_shown`]), execute. The
//! bundle's SHA-256 is printed first (and is `sha256` in `--json`), to
//! compare with the one `box new` printed. Nothing is changed while the plan
//! has a problem, or with `-n`.

use std::path::{Path, PathBuf};

use serde_json::json;
use zoffsite_core::provision::apply::{self, Current, Facts, InitPlan, Options, Plan};
use zoffsite_core::provision::bundle::Bundle;
use zoffsite_exec::boxapply::{self, ApplyError};
use zoffsite_exec::system;
use zoffsite_exec::zfs::Zfs;

use crate::cli::BoxApplyArgs;
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

pub(crate) fn run(args: &BoxApplyArgs, verbose: bool) -> Exit {
    let mut ui = Ui::new(args.json, args.dry_run);
    let opts = match options(args) {
        Ok(o) => o,
        Err(e) => {
            ui.err(Exit::Usage, format_args!("box apply: {e}"));
            return ui.bail();
        }
    };
    if must_be_root(&opts) && !system::is_root() {
        ui.err(
            Exit::Usage,
            "box apply: run it as root (it installs files under /etc, enables units and runs what `box init` does); \
             --root DIR installs into a directory as any user",
        );
        return ui.bail();
    }
    let (bundle, sha256) = match boxapply::read_bundle(&args.bundle) {
        Ok(r) => (r.bundle, r.sha256),
        Err(e) => {
            ui.err(Exit::Usage, format_args!("box apply: {e}"));
            return ui.bail();
        }
    };
    // Plan.
    let zfs = Zfs::new();
    let facts = match boxapply::gather(&bundle, &opts, &zfs) {
        Ok(f) => f,
        Err(e) => {
            ui.err(Exit::Error, format_args!("box apply: nothing was changed: {e}"));
            return ui.bail();
        }
    };
    let mut plan = apply::plan(&bundle, &opts, &facts);
    plan.warnings.extend(boxapply::init_warnings(&bundle, &facts));
    // Show.
    if ui.text() {
        show(&bundle, &sha256, &opts, &plan, &facts, verbose);
    }
    for w in &plan.warnings {
        ui.warning(w);
    }
    let mut applied = false;
    if !plan.problems.is_empty() {
        ui.err(Exit::Error, "box apply: nothing was changed; fix the problems above and run it again");
    } else if args.dry_run {
        ui.say("dry run: nothing was changed");
    } else {
        // Execute.
        match boxapply::execute(&bundle, &opts, &plan, &facts, &zfs, &mut ui) {
            Ok(()) => {
                applied = true;
                ui.say(summary(&bundle, &plan));
            }
            Err(e @ (ApplyError::SshdRefused { .. } | ApplyError::SshdBroken { .. })) => {
                ui.err(Exit::Error, format_args!("box apply: {e}; nothing was enabled"));
            }
            Err(e) => ui.err(
                Exit::Error,
                format_args!(
                    "box apply: {e}\nzoffsite: box apply: what came before it was done; fix the cause and run it again"
                ),
            ),
        }
    }
    if args.json {
        print_json(args, &bundle, &sha256, &opts, &plan, applied, &ui);
    }
    ui.exit()
}

/// Whether this installs into the machine itself (`/`, however it was
/// given: `--root /` too), which only root may.
fn must_be_root(opts: &Options) -> bool {
    opts.live_root()
}

fn options(args: &BoxApplyArgs) -> Result<Options, String> {
    let root = match &args.root {
        None => PathBuf::from("/"),
        Some(r) => r.canonicalize().map_err(|e| format!("--root {}: {e}", r.display()))?,
    };
    let root = root.to_str().ok_or("--root is not UTF-8")?.to_owned();
    Ok(Options::new(root, args.offline))
}

fn mode(m: u32) -> String {
    format!("{m:04o}")
}

fn show(bundle: &Bundle, sha256: &str, opts: &Options, plan: &Plan, facts: &Facts, verbose: bool) {
    let how = if opts.offline { "offline: nothing started or reloaded" } else { "live" };
    println!("zoffsite box apply: the {} bundle of box {}, under {} ({how})", bundle.side, bundle.name, opts.root);
    println!("  bundle SHA-256: {sha256} (compare it with the one `zoffsite box new` printed)");
    for d in &plan.mkdirs {
        println!("  create     {}/ (directory, {})", d.path, mode(d.mode));
    }
    for f in &plan.files {
        let secret = if f.secret { ", secret: not shown" } else { "" };
        let details = f.action.details(f.mode, f.owner);
        let details = if details.is_empty() { String::new() } else { format!(": {}", details.join(", ")) };
        println!("  {:<10} {} ({}{secret}){details}", f.action.word(), f.path, mode(f.mode));
        if verbose && !f.secret && f.action.changes() {
            let new = bundle.files.iter().find(|x| x.path == f.path).map_or("", |x| x.text.as_str());
            let lines = verbose_lines(&f.path, facts.files.get(&f.path), new);
            for l in lines {
                println!("      {l}");
            }
        }
    }
    match &plan.init {
        InitPlan::None => {}
        InitPlan::Deferred => {
            println!("  box init: not under {}: it runs when `box apply` runs on the box itself", opts.root);
        }
        InitPlan::Planned(ip) => {
            for o in &ip.ok {
                println!("  box init: ok: {o}");
            }
            for s in &ip.steps {
                println!("  box init: to do: {s}");
            }
            if ip.steps.is_empty() {
                println!("  box init: nothing to change");
            }
        }
    }
    for c in &plan.commands {
        println!("  run        {c}  ({})", c.why());
    }
    for p in &plan.problems {
        println!("  PROBLEM: {p}");
    }
}

/// What `-v` shows of a file being installed: the diff from the old text,
/// or, when the old text may hold a private key
/// ([`apply::old_text_shown`]), the new text after a note.
fn verbose_lines(path: &str, current: Option<&Current>, new: &str) -> Vec<String> {
    let all_new = || new.lines().map(|l| format!("+ {l}")).collect::<Vec<_>>();
    match current {
        Some(Current::File { bytes: Some(b), .. }) => match apply::old_text_shown(path, b) {
            Some(old) => apply::diff(&old, new),
            None => {
                let mut v = vec!["(the old text is not shown: it may hold a private key)".to_owned()];
                v.extend(all_new());
                v
            }
        },
        _ => all_new(),
    }
}

fn summary(bundle: &Bundle, plan: &Plan) -> String {
    let count = |w: &str| plan.files.iter().filter(|f| f.action.word() == w).count();
    let (c, r, u) = (count("create"), count("replace"), count("unchanged"));
    if plan.changes() {
        format!("applied the {} bundle of box {}: {c} created, {r} replaced, {u} unchanged", bundle.side, bundle.name)
    } else {
        format!(
            "nothing to change: all {u} files were already installed (the commands that make them take effect ran again, which changes nothing)"
        )
    }
}

fn print_json(args: &BoxApplyArgs, bundle: &Bundle, sha256: &str, opts: &Options, plan: &Plan, applied: bool, ui: &Ui) {
    let init = match &plan.init {
        InitPlan::None => json!(null),
        InitPlan::Deferred => json!({"state": "deferred", "steps": [], "ok": [], "warnings": []}),
        InitPlan::Planned(ip) => json!({
            "state": "planned",
            "steps": ip.steps.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ok": ip.ok,
            "warnings": ip.warnings,
        }),
    };
    let doc = json!({
        "bundle": path_text(&args.bundle),
        "sha256": sha256,
        "side": bundle.side,
        "name": bundle.name.as_str(),
        "root": opts.root,
        "offline": opts.offline,
        "dry_run": args.dry_run,
        "directories": plan.mkdirs.iter().map(|d| json!({"path": d.path, "mode": mode(d.mode)})).collect::<Vec<_>>(),
        "files": plan.files.iter().map(|f| json!({
            "path": f.path,
            "mode": mode(f.mode),
            "owner": [f.owner.uid, f.owner.gid],
            "secret": f.secret,
            "action": f.action.word(),
            "changes": f.action.details(f.mode, f.owner),
        })).collect::<Vec<_>>(),
        "init": init,
        "commands": plan.commands.iter().map(|c| json!({"argv": c.argv(), "why": c.why()})).collect::<Vec<_>>(),
        "problems": plan.problems,
        "warnings": plan.warnings,
        "changes": plan.changes(),
        "applied": applied,
        "errors": ui.errors(),
        "exit_code": ui.exit().code(),
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
}

fn path_text(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(root: Option<&str>) -> BoxApplyArgs {
        BoxApplyArgs {
            bundle: PathBuf::from("box.bundle"),
            root: root.map(PathBuf::from),
            offline: false,
            dry_run: true,
            json: false,
        }
    }

    #[test]
    fn root_slash_must_be_root_like_no_root() {
        assert!(must_be_root(&options(&args(None)).unwrap()));
        assert!(must_be_root(&options(&args(Some("/"))).unwrap()), "--root / is the machine itself");
        assert!(must_be_root(&options(&args(Some("/etc/.."))).unwrap()));
        let d = tempfile::tempdir().unwrap();
        assert!(!must_be_root(&options(&args(Some(d.path().to_str().unwrap()))).unwrap()));
    }

    #[test]
    fn verbose_shows_no_old_private_key() {
        let old = |text: &str| Current::File { bytes: Some(text.as_bytes().to_vec()), mode: 0o600, uid: 0, gid: 0 };
        let conf = old("[Interface]\nPrivateKey = c2VjcmV0a2V5\n");
        let shown = verbose_lines("/etc/wireguard/zo-friend.conf", Some(&conf), "[Interface]\nPostUp = x\n").join("\n");
        assert!(!shown.contains("c2VjcmV0a2V5") && shown.contains("+ PostUp = x"), "{shown}");
        let shown = verbose_lines("/etc/systemd/network/zo-friend.netdev", Some(&conf), "[NetDev]\n").join("\n");
        assert!(!shown.contains("c2VjcmV0a2V5"), "{shown}");
        let shown = verbose_lines("/etc/zoffsite/box.nft", Some(&conf), "table\n").join("\n");
        assert!(!shown.contains("c2VjcmV0a2V5") && shown.contains("- PrivateKey = (hidden)"), "{shown}");
        let shown = verbose_lines("/etc/zoffsite/box.nft", Some(&old("a\n")), "b\n");
        assert_eq!(shown, ["- a", "+ b"]);
    }
}
