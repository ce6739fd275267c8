//! `zoffsite box init`: prepares the box, idempotently: plan
//! (`zoffsite_core::boxinit::plan` over facts `zoffsite_exec::boxinit`
//! gathers), show, execute. Nothing is changed while the plan has a
//! problem; `--dry-run` only prints the steps. A second run finds nothing
//! to do and says so.

use zoffsite_core::boxinit::{self, FromList, Inputs, Limit, Plan, PublicKey, Step, UserName};
use zoffsite_exec::boxinit::{commands, execute, gather, local_warnings, read_small};
use zoffsite_exec::system;
use zoffsite_exec::zfs::Zfs;

use crate::cli::BoxInitArgs;
use crate::exit::Exit;
use crate::ui::Ui;

pub(crate) fn run(args: &BoxInitArgs) -> Exit {
    let mut ui = Ui::new(false, args.dry_run);
    box_init(args, &mut ui);
    ui.exit()
}

fn box_init(args: &BoxInitArgs, ui: &mut Ui) {
    let inputs = match inputs(args) {
        Ok(i) => i,
        Err(e) => return ui.err(Exit::Usage, format_args!("box init: {e:#}")),
    };
    if !args.dry_run && !system::is_root() {
        return ui.err(
            Exit::Usage,
            "box init: run it as root (it creates a user, datasets and delegations); --dry-run works as any user",
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
    report(&inputs, &plan);
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

fn report(inp: &Inputs, plan: &Plan) {
    println!("zoffsite box init: root {}, user {}", inp.root, inp.user);
    for o in &plan.ok {
        println!("  ok: {o}");
    }
    for w in &plan.warnings {
        println!("  warning: {w}");
    }
    for p in &plan.problems {
        println!("  PROBLEM: {p}");
    }
    for s in &plan.steps {
        println!("  to do: {s}");
        for c in commands(&Zfs::new(), s) {
            println!("      {c}");
        }
        if let Step::WriteAuthorizedKeys { .. } = s {
            println!("      line: {}", inp.key_line());
        }
    }
}
