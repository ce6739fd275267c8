//! `zoffsite box new NAME --endpoint HOST:PORT ...`, on the source: plan
//! (the inputs validated, then [`zoffsite_exec::boxnew::gather`]), show
//! (where every file of both bundles goes, the config's new lines, the
//! next steps), execute ([`zoffsite_exec::boxnew::execute`]: the keys, the
//! bundles, `known_hosts`, the config). `-n` shows the plan and makes no
//! key and writes nothing. Nothing is made while the plan has a problem.

use std::path::{Path, PathBuf};

use zoffsite_core::boxinit::UserName;
use zoffsite_core::provision::bundle::Bundle;
use zoffsite_core::provision::values::{AbsPath, BoxName, BoxRoot, Endpoint, Keepalive, Port, Schedule, Tunnel};
use zoffsite_core::provision::{Backend, Inputs, Keys};
use zoffsite_exec::boxnew::{self, BoxNewError, Identity, Made, Plan};
use zoffsite_exec::zfs::Zfs;

use crate::cli::{BoxNewArgs, WgBackend};
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

pub(crate) fn run(args: &BoxNewArgs) -> Exit {
    let mut ui = Ui::new(args.json, args.dry_run);
    let (inputs, dir, config, identity) = match inputs(args) {
        Ok(x) => x,
        Err(e) => {
            ui.err(Exit::Usage, format_args!("box new: {e}"));
            return ui.bail();
        }
    };
    // Plan.
    let plan = match boxnew::gather(&Zfs::new(), inputs, &dir, &config, identity.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            let severity = if matches!(e, BoxNewError::Usage(_)) { Exit::Usage } else { Exit::Error };
            ui.err(severity, format_args!("box new: {e}; nothing was made"));
            return ui.bail();
        }
    };
    // Show.
    for w in &plan.warnings {
        ui.warning(w);
    }
    if ui.text() {
        show(&plan);
    }
    if args.dry_run {
        ui.say("dry run: no key was made, nothing was written; then it would be:");
        say_next_steps(&plan, &ui);
        return report(&plan, None, true, &ui);
    }
    // Execute.
    let made = match boxnew::execute(&plan, &mut ui) {
        Ok(m) => m,
        Err(e @ BoxNewError::Usage(_)) => {
            ui.err(Exit::Error, format_args!("box new: {e}; nothing was made"));
            return report(&plan, None, false, &ui);
        }
        Err(e) => {
            ui.err(
                Exit::Error,
                format_args!(
                    "box new: {e}\nzoffsite: box new: {dir} holds what was made so far; unless the message says the files are complete, remove it (rm -r {dir}) and run box new again",
                    dir = plan.dir.display()
                ),
            );
            return report(&plan, None, false, &ui);
        }
    };
    ui.say(format_args!("box {} is made; next:", plan.inputs.name));
    ui.say(format_args!(
        "  (SHA-256 of {src}: {}, of {boxf}: {}; `zoffsite box apply` prints the SHA-256 of the bundle it read: compare them)",
        made.source_sha256,
        made.box_sha256,
        src = zoffsite_core::provision::bundle::SOURCE_FILE,
        boxf = zoffsite_core::provision::bundle::BOX_FILE,
    ));
    say_next_steps(&plan, &ui);
    report(&plan, Some(&made), false, &ui)
}

type Planned = (Inputs, PathBuf, PathBuf, Option<PathBuf>);

fn absolute(p: &Path, what: &str) -> Result<PathBuf, String> {
    std::path::absolute(p).map_err(|e| format!("{what} {}: {e}", p.display()))
}

fn backend(b: WgBackend) -> Backend {
    match b {
        WgBackend::WgQuick => Backend::WgQuick,
        WgBackend::Networkd => Backend::Networkd,
    }
}

/// The command line, validated into the renderers' inputs (with stand-in
/// keys: `execute` makes the real ones), the output directory, the config
/// and `--identity`, all absolute.
fn inputs(args: &BoxNewArgs) -> Result<Planned, String> {
    let e = |e: zoffsite_core::boxinit::InputError| e.to_string();
    let name = BoxName::new(&args.name).map_err(e)?;
    let root = match &args.root {
        Some(r) => BoxRoot::new(r.clone()).map_err(e)?,
        None => boxnew::hostname().as_deref().and_then(boxnew::default_root).ok_or(
            "this machine's host name cannot name the box's root dataset (offsite/HOST): give --root POOL/DATASET",
        )?,
    };
    let mut i = Inputs::new(name, Endpoint::parse(&args.endpoint).map_err(e)?, root, boxnew::placeholder_keys());
    i.tunnel = Tunnel::parse(&args.tunnel).map_err(e)?;
    i.user = UserName::new(&args.user).map_err(e)?;
    i.ssh_port = Port::new(args.ssh_port).map_err(|x| format!("--ssh-port: {x}"))?;
    i.keepalive = Keepalive::new(args.keepalive).map_err(|x| format!("--keepalive: {x}"))?;
    i.source_backend = backend(args.source_backend);
    i.box_backend = backend(args.box_backend);
    i.backup_schedule = Schedule::new(&args.schedule).map_err(|x| format!("--schedule: {x}"))?;
    i.box_exe = AbsPath::new(&args.box_exe).map_err(|x| format!("--box-exe: {x}"))?;
    let source_exe = match &args.source_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .map_err(|x| format!("cannot find the running zoffsite binary ({x}): give --source-exe PATH"))?
            .to_str()
            .ok_or("the running zoffsite binary's path is not UTF-8: give --source-exe PATH")?
            .to_owned(),
    };
    i.source_exe = AbsPath::new(&source_exe).map_err(|x| format!("--source-exe: {x}"))?;
    let config = absolute(&args.config, "-c")?;
    i.source_config = AbsPath::new(&config.to_string_lossy())
        .map_err(|x| format!("-c: the backup unit runs `zoffsite backup --config` with it, so: {x}"))?;
    let dir = match &args.dir {
        Some(d) => absolute(d, "--dir")?,
        None => Path::new(boxnew::DEFAULT_DIR).join(i.name.as_str()),
    };
    let identity = args.identity.as_deref().map(|p| absolute(p, "--identity")).transpose()?;
    Ok((i, dir, config, identity))
}

fn mode(m: u32) -> String {
    format!("{m:04o}")
}

fn show_bundle(path: &Path, b: &Bundle, for_whom: &str) {
    println!("  {} (0600, secret): for {for_whom}; installs:", path.display());
    for f in &b.files {
        println!("      {} ({})", f.path, mode(f.mode));
    }
    for s in &b.secrets {
        let group = s.group.as_ref().map(|g| format!(", group {g}")).unwrap_or_default();
        println!("      {} ({}{group}, private key)", s.path, mode(s.mode));
    }
    println!("    and enables: {}", b.enable.join(", "));
    if let Some(init) = &b.init {
        println!(
            "    and does what `box init` does: user {}, root {}, the key from {} only, forced to `{} serve`",
            init.user,
            init.root,
            init.from.as_str(),
            init.exe
        );
    }
}

fn show(plan: &Plan) {
    let i = &plan.inputs;
    println!(
        "zoffsite box new {}: the box dials {} (tunnel {}: this machine {}, the box {}); on the box, root {} and user {}",
        i.name,
        i.endpoint,
        i.tunnel,
        i.tunnel.source(),
        i.tunnel.box_addr(),
        i.root,
        i.user
    );
    println!("makes: WireGuard key pairs for both ends (wg genkey, wg pubkey), the box's SSH host key (ssh-keygen -t ed25519){}",
        if plan.identity == Identity::New { ", this machine's SSH key for the box (ssh-keygen -t ed25519)" } else { "" });
    println!("writes in {} (0700):", plan.dir.display());
    let (source, boxb) = plan.preview();
    show_bundle(&plan.dir.join(zoffsite_core::provision::bundle::SOURCE_FILE), &source, "this machine");
    show_bundle(&plan.dir.join(zoffsite_core::provision::bundle::BOX_FILE), &boxb, "the box");
    println!("  {}: the box's SSH host key, pinned", plan.dir.join(boxnew::KNOWN_HOSTS).display());
    match &plan.identity {
        Identity::New => {
            println!("  {}, .pub: this machine's SSH key for the box", plan.dir.join(boxnew::IDENTITY).display());
        }
        Identity::Existing { .. } => {
            println!("  (this machine's SSH key for the box: {}, as it is)", plan.identity_file.display());
        }
    }
    let path = plan.config_path.display();
    println!("adds to {path}:\n--- {path}\n+++ {path}");
    for l in plan.config.diff_lines() {
        println!("{l}");
    }
}

fn say_next_steps(plan: &Plan, ui: &Ui) {
    for (n, step) in next_steps(plan).iter().enumerate() {
        ui.say(format_args!("  {}. {step}", n + 1));
    }
}

fn next_steps(plan: &Plan) -> Vec<String> {
    let dir = plan.dir.display();
    vec![
        format!("here, as root: zoffsite box apply {dir}/{}", zoffsite_core::provision::bundle::SOURCE_FILE),
        format!(
            "let UDP port {} reach this machine from the internet (a port forward on its router): the box dials {}",
            plan.inputs.endpoint.port, plan.inputs.endpoint
        ),
        format!(
            "copy {dir}/{} to the box (it holds the box's private keys: a USB stick or scp, and delete the copy afterwards), and there, as root: zoffsite box apply {}",
            zoffsite_core::provision::bundle::BOX_FILE,
            zoffsite_core::provision::bundle::BOX_FILE
        ),
        "once the box is up: zoffsite backup -n, then zoffsite backup".to_owned(),
    ]
}

fn bundle_json(path: &Path, b: &Bundle, sha256: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "path": path,
        "sha256": sha256,
        "files": b.files.iter().map(|f| serde_json::json!({"path": f.path, "mode": mode(f.mode)})).collect::<Vec<_>>(),
        "secrets": b.secrets.iter().map(|s| serde_json::json!({
            "path": s.path.as_str(),
            "mode": mode(s.mode),
            "group": s.group.as_ref().map(ToString::to_string),
        })).collect::<Vec<_>>(),
        "enable": b.enable,
    })
}

fn keys_json(k: &Keys) -> serde_json::Value {
    serde_json::json!({
        "source_wg": k.source_wg.as_str(),
        "box_wg": k.box_wg.as_str(),
        "box_host": k.box_host.to_string(),
        "source_ssh": k.source_ssh.to_string(),
    })
}

/// With `--json`, the document (docs/json.md); the exit code either way.
fn report(plan: &Plan, made: Option<&Made>, dry_run: bool, ui: &Ui) -> Exit {
    if ui.json() {
        let i = &plan.inputs;
        let (source, boxb) = plan.preview();
        let doc = serde_json::json!({
            "name": i.name.as_str(),
            "dry_run": dry_run,
            "made": made.is_some(),
            "dir": plan.dir,
            "config": plan.config_path,
            "endpoint": i.endpoint.to_string(),
            "tunnel": i.tunnel.to_string(),
            "source_address": i.tunnel.source().to_string(),
            "box_address": i.tunnel.box_addr().to_string(),
            "root": i.root.to_string(),
            "user": i.user.as_str(),
            "identity_file": plan.identity_file,
            "writes": plan.written(),
            "bundles": {
                "source": bundle_json(
                    &plan.dir.join(zoffsite_core::provision::bundle::SOURCE_FILE),
                    &source,
                    made.map(|m| m.source_sha256.as_str()),
                ),
                "box": bundle_json(
                    &plan.dir.join(zoffsite_core::provision::bundle::BOX_FILE),
                    &boxb,
                    made.map(|m| m.box_sha256.as_str()),
                ),
            },
            "config_added": plan.config.added,
            "keys": made.map(|m| keys_json(&m.keys)),
            "next_steps": next_steps(plan),
            "warnings": plan.warnings,
            "errors": ui.errors(),
            "exit_code": ui.exit().code(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    }
    ui.exit()
}
