//! `zoffsite box image NAME (--output FILE | --write DEV) [--keys DIR]
//! [--work DIR] [--serial-console] [-n] [--json]`: on the source, as
//! root, builds box NAME's installer stick with mkosi from the box's
//! bundle (`box new`'s `box.bundle`). The files are core's
//! ([`zoffsite_core::image::build`]); the keys, the tree, mkosi and the
//! copy are [`zoffsite_exec::boximage`]'s. docs/box.md, "The image".
//!
//! Exit codes: 0 built and written; 1 a tool, mkosi or the copy failed;
//! 2 a bad argument, bundle or key directory, or `--write` refused.

use std::path::{Path, PathBuf};

use serde_json::json;
use zoffsite_core::image::build::{self, tree, Inputs};
use zoffsite_core::provision::bundle::{self, Side};
use zoffsite_exec::boximage::{self, Target};
use zoffsite_exec::{boxapply, boxnew, system};

use crate::cli::BoxImageArgs;
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

pub(crate) fn run(args: &BoxImageArgs) -> Exit {
    let mut ui = Ui::new(args.json, args.dry_run);
    let dir = args.dir.clone().unwrap_or_else(|| Path::new(boxnew::DEFAULT_DIR).join(&args.name));
    let keys = args.keys.clone().unwrap_or_else(|| PathBuf::from(boximage::DEFAULT_KEYS));
    let work = args.work.clone().unwrap_or_else(|| Path::new(boximage::DEFAULT_WORK).join(&args.name));
    let target = match (&args.output, &args.write) {
        (Some(f), None) => Target::File(f.clone()),
        (None, Some(d)) => Target::Device(d.clone()),
        _ => {
            ui.err(Exit::Usage, "box image: give exactly one of --output FILE and --write DEVICE");
            return ui.bail();
        }
    };
    if !args.dry_run && !system::is_root() {
        ui.err(Exit::Usage, "box image: run it as root (mkosi builds the image as root)");
        return ui.bail();
    }
    let bundle_path = dir.join(bundle::BOX_FILE);
    let read = match boxapply::read_bundle(&bundle_path) {
        Ok(r) => r,
        Err(e) => {
            ui.err(
                Exit::Usage,
                format_args!("box image: {e} (make the box with `zoffsite box new {}` first)", args.name),
            );
            return ui.bail();
        }
    };
    let b = &read.bundle;
    let init = match (&b.side, &b.init) {
        (Side::Box, Some(init)) if b.name.as_str() == args.name => init,
        _ => {
            ui.err(
                Exit::Usage,
                format_args!("box image: {} is not box {}'s box bundle", bundle_path.display(), args.name),
            );
            return ui.bail();
        }
    };
    let keys_abs = match keys.to_str().map(zoffsite_core::provision::values::AbsPath::new) {
        Some(Ok(k)) => k,
        _ => {
            ui.err(Exit::Usage, format_args!("box image: --keys {}: give an absolute path", keys.display()));
            return ui.bail();
        }
    };
    let work_abs = match work.to_str().map(zoffsite_core::provision::values::AbsPath::new) {
        Some(Ok(w)) => w,
        _ => {
            ui.err(Exit::Usage, format_args!("box image: --work {}: give an absolute path", work.display()));
            return ui.bail();
        }
    };
    let inputs =
        match Inputs::new(b.name.clone(), init.exe.clone(), &init.root, keys_abs, work_abs, args.serial_console) {
            Ok(i) => i,
            Err(e) => {
                ui.err(Exit::Usage, format_args!("box image: {e}"));
                return ui.bail();
            }
        };
    let files = build::files(&inputs);
    let missing = match boximage::missing_keys(&keys) {
        Ok(m) => m,
        Err(e) => {
            ui.err(Exit::Usage, format_args!("box image: {e}"));
            return ui.bail();
        }
    };
    if let Target::Device(dev) = &target {
        if let Some(why) = boximage::write_refusal(dev, &boximage::device_facts(dev)) {
            ui.err(Exit::Usage, format_args!("box image: --write {why}"));
            return ui.bail();
        }
    }
    // Before anything is made: a build without them fails far in.
    let lacking = boximage::host_missing();
    let host_refusal = build::host_refusal(&lacking);
    if let (Some(why), false) = (&host_refusal, args.dry_run) {
        ui.err(Exit::Usage, format_args!("box image: {why}"));
        return ui.bail();
    }
    let image_id = format!("zoffsite-{}", b.name);
    ui.say(format_args!(
        "zoffsite box image: box {} (bundle {}, sha256 {})",
        b.name,
        bundle_path.display(),
        read.sha256
    ));
    if !missing.is_empty() {
        ui.say(format_args!(
            "  Secure Boot keys: makes {} in {} (kept there; only the public enrollment files go on the stick)",
            missing.join(", "),
            keys.display()
        ));
    }
    ui.say(format_args!("  build tree {} (mkosi's cache kept there):", work.display()));
    for f in &files {
        ui.say(format_args!("      {} ({:04o})", f.path, f.mode));
    }
    ui.say(format_args!("      {}{} (this zoffsite binary)", tree::EXTRA, init.exe));
    ui.say(format_args!("      {}{} (the bundle, 0600)", tree::EXTRA, build::STICK_BUNDLE));
    ui.say(format_args!("      {}/{{PK,KEK,db}}.auth (enrollment files)", tree::AUTH_DIR));
    ui.say(format_args!("  kernel command line: {}", build::kernel_cmdline(&inputs)));
    ui.say(format_args!(
        "  installs {}/ukify (signs the kernel image's PCR 11 policy for the initrd only) and runs: {}",
        zoffsite_core::image::build::TOOLS_DIR,
        boximage::mkosi_cmd(&work)
    ));
    match &target {
        Target::File(f) => ui.say(format_args!("  writes {} (0600: it holds the box's private keys)", f.display())),
        Target::Device(d) => ui.say(format_args!("  writes the stick {}", d.display())),
    }
    if let Some(why) = &host_refusal {
        ui.say(format_args!("  would refuse to build: {why}"));
    }
    let mut made = Vec::new();
    let mut image = None;
    if !args.dry_run {
        let host = boxnew::hostname().unwrap_or_else(|| "source".into());
        let result = (|| {
            made = boximage::ensure_keys(&keys, &host)?;
            let exe = std::env::current_exe()
                .map_err(|source| boximage::ImageError::Io { path: PathBuf::from("/proc/self/exe"), source })?;
            let text = bundle::render(b);
            boximage::write_tree(
                &work,
                &boximage::TreeInputs {
                    files: &files,
                    exe: &exe,
                    exe_dest: init.exe.as_str(),
                    bundle: text.as_bytes(),
                    keys: &keys,
                },
            )?;
            ui.say(format_args!("building (log: {}) ...", work.join(boximage::LOG).display()));
            let built = boximage::run_mkosi(&work, &image_id)?;
            boximage::deliver(&built, &target)?;
            Ok::<_, boximage::ImageError>(built)
        })();
        match result {
            Ok(built) => {
                image = Some(built);
                match &target {
                    Target::File(f) => ui.say(format_args!("wrote {}", f.display())),
                    Target::Device(d) => ui.say(format_args!("wrote the stick {}", d.display())),
                }
                ui.say("next: boot the box from it (docs/box.md, \"The image\"), then `zoffsite box wait` here");
            }
            Err(e @ (boximage::ImageError::Refused(_) | boximage::ImageError::HalfKey { .. })) => {
                ui.err(Exit::Usage, format_args!("box image: {e}"));
            }
            Err(e) => ui.err(Exit::Error, format_args!("box image: {e}")),
        }
    }
    if args.json {
        let doc = json!({
            "box": b.name.as_str(),
            "bundle": bundle_path.display().to_string(),
            "bundle_sha256": read.sha256,
            "keys": keys.display().to_string(),
            "keys_missing": missing,
            "host_missing": lacking.iter().map(|n| n.package).collect::<Vec<_>>(),
            "keys_made": made.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "work": work.display().to_string(),
            "files": files.iter().map(|f| &f.path).collect::<Vec<_>>(),
            "cmdline": build::kernel_cmdline(&inputs),
            "image": image.map(|p| p.display().to_string()),
            "output": match &target { Target::File(f) => f.display().to_string(), Target::Device(d) => d.display().to_string() },
            "dry_run": args.dry_run,
            "errors": ui.errors(),
            "exit_code": ui.exit().code(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    }
    ui.exit()
}
