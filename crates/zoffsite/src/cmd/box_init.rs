//! `zoffsite box init`: prepares the box, idempotently: plan
//! (`zoffsite_core::boxinit::plan` over facts `zoffsite_exec::boxinit`
//! gathers), show, execute. Nothing is changed while the plan has a
//! problem; `--dry-run` only prints the steps. A second run finds nothing
//! to do and says so. With `--json` the plan and what was done come as one
//! document at the end (on failure too), nothing else on stdout.

use serde::Serialize;
use zoffsite_core::boxinit::{self, FromList, Inputs, Limit, Plan, PublicKey, Step, UserName};
use zoffsite_exec::boxinit::{commands, execute, gather, local_warnings, read_small};
use zoffsite_exec::system;
use zoffsite_exec::zfs::Zfs;

use crate::cli::BoxInitArgs;
use crate::exit::{Code as _, Exit};
use crate::ui::{StopKind, Ui};

/// `box init --json`'s document (docs/json.md).
#[derive(Debug, Default, Serialize)]
struct Doc {
    root: String,
    user: String,
    dry_run: bool,
    /// The authorized_keys line for the source's key (null before the
    /// inputs were read).
    key_line: Option<String>,
    ok: Vec<String>,
    warnings: Vec<String>,
    problems: Vec<String>,
    steps: Vec<StepDoc>,
    /// The steps carried out, in order (a failed one is not among them).
    done: Vec<String>,
    errors: Vec<String>,
    exit_code: u8,
}

#[derive(Debug, Serialize)]
struct StepDoc {
    step: String,
    commands: Vec<Vec<String>>,
}

pub(crate) fn run(args: &BoxInitArgs) -> Exit {
    let mut ui = Ui::new(args.json, args.dry_run);
    let mut doc = Doc { root: args.root.to_string(), user: args.user.clone(), dry_run: args.dry_run, ..Doc::default() };
    box_init(args, &mut ui, &mut doc);
    if ui.json() {
        doc.errors = ui.errors().to_vec();
        doc.exit_code = ui.exit().code();
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    }
    ui.exit()
}

fn box_init(args: &BoxInitArgs, ui: &mut Ui, doc: &mut Doc) {
    let inputs = match inputs(args) {
        Ok(i) => i,
        Err(e) => return ui.stop(StopKind::Usage, format_args!("box init: {e:#}"), None),
    };
    doc.key_line = Some(inputs.key_line());
    if !args.dry_run && !system::is_root() {
        return ui.stop(
            StopKind::Usage,
            "box init: run it as root (it creates a user, datasets and delegations)",
            Some("--dry-run works as any user".into()),
        );
    }
    let zfs = Zfs::new();
    // First what everything else depends on: a new enough OpenZFS, loaded.
    match zfs.version_text().map(|t| boxinit::check_version(&t)) {
        Ok(Ok(_)) => {}
        Ok(Err(problem)) => return ui.err(Exit::Error, format_args!("box init: {problem}; nothing was changed")),
        Err(e) => {
            return ui.err(Exit::Error, format_args!("box init: cannot run `zfs version` ({e}): is OpenZFS installed?"))
        }
    }
    // Plan.
    let facts = match gather(&zfs, &inputs) {
        Ok(f) => f,
        Err(e) => return ui.err(Exit::Error, format_args!("box init: {e}")),
    };
    let mut plan = boxinit::plan(&inputs, &facts);
    plan.warnings.extend(local_warnings(&inputs, facts.user.as_ref().map(|u| u.uid)));
    // Show.
    describe(&plan, &zfs, doc);
    if ui.text() {
        print!("{}", report(&inputs, &plan, &zfs));
    }
    if !plan.problems.is_empty() {
        return ui.err(Exit::Error, "box init: nothing was changed; fix the problems above and run it again");
    }
    if plan.steps.is_empty() {
        return ui.say(format_args!("nothing to change: the box is ready for `{}`", inputs.forced_command()));
    }
    if args.dry_run {
        return ui.say("dry run: nothing was changed");
    }
    // Execute.
    for step in &plan.steps {
        if let Err(e) = execute(&zfs, &inputs, step) {
            return ui.err(
                Exit::Error,
                format_args!(
                    "box init: failed to {step}: {e}\nzoffsite: box init: the steps before it were done; fix the cause and run it again"
                ),
            );
        }
        doc.done.push(step.to_string());
        ui.say(format_args!("done: {step}"));
    }
    ui.say("the box is ready");
}

fn inputs(args: &BoxInitArgs) -> anyhow::Result<Inputs> {
    use anyhow::Context as _;
    let key_text = read_small(&args.source_key)
        .with_context(|| format!("--source-key {}: cannot read it", args.source_key.display()))?;
    let key = PublicKey::parse(&key_text).with_context(|| format!("--source-key {}", args.source_key.display()))?;
    let exe =
        std::env::current_exe().and_then(|p| p.canonicalize()).context("cannot find the running zoffsite binary")?;
    let exe = exe.to_str().context("the zoffsite binary's path is not UTF-8")?.to_owned();
    let authorized_keys = match &args.authorized_keys {
        None => None,
        Some(p) => Some(p.to_str().context("--authorized-keys is not UTF-8")?.to_owned()),
    };
    let inputs = Inputs {
        root: args.root.clone(),
        user: UserName::new(&args.user)?,
        key,
        from: args.from.as_deref().map(FromList::new).transpose()?,
        exe,
        authorized_keys,
        snapshot_limit: args.snapshot_limit.unwrap_or(Limit::Default),
        filesystem_limit: args.filesystem_limit.unwrap_or(Limit::Default),
        quota: args.quota.unwrap_or(Limit::Default),
    };
    inputs.check()?;
    Ok(inputs)
}

/// The plan into the JSON document.
fn describe(plan: &Plan, zfs: &Zfs, doc: &mut Doc) {
    doc.ok.clone_from(&plan.ok);
    doc.warnings.clone_from(&plan.warnings);
    doc.problems.clone_from(&plan.problems);
    doc.steps = plan
        .steps
        .iter()
        .map(|s| StepDoc {
            step: s.to_string(),
            commands: commands(zfs, s).iter().map(zoffsite_exec::process::Cmd::argv).collect(),
        })
        .collect();
}

/// The plan as text.
fn report(inp: &Inputs, plan: &Plan, zfs: &Zfs) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "zoffsite box init: root {}, user {}", inp.root, inp.user);
    for o in &plan.ok {
        let _ = writeln!(out, "  ok: {o}");
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    for p in &plan.problems {
        let _ = writeln!(out, "  PROBLEM: {p}");
    }
    for s in &plan.steps {
        let _ = writeln!(out, "  to do: {s}");
        for c in commands(zfs, s) {
            let _ = writeln!(out, "      {c}");
        }
        if let Step::WriteAuthorizedKeys { .. } = s {
            let _ = writeln!(out, "      line: {}", inp.key_line());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_document_has_every_documented_field_on_failure_too() {
        let mut ui = Ui::new(true, true);
        ui.stop(StopKind::Usage, "box init: --source-key /x: cannot read it", None);
        let doc = Doc {
            root: "offsite/home".into(),
            user: "zoffsite".into(),
            errors: ui.errors().to_vec(),
            exit_code: ui.exit().code(),
            ..Doc::default()
        };
        let v = serde_json::to_value(&doc).unwrap();
        let docs = include_str!("../../../../docs/json.md");
        assert!(docs.contains("zoffsite box init --json"));
        let section = &docs[docs.find("zoffsite box init --json").unwrap()..];
        for key in v.as_object().unwrap().keys() {
            assert!(section.contains(&format!("\"{key}\"")), "docs/json.md documents box init's {key}");
        }
        assert_eq!(v["exit_code"], 2);
        assert_eq!(v["key_line"], serde_json::Value::Null);
    }
}
