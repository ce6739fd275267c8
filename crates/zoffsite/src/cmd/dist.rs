//! `zoffsite dist --out DIR [-n]` (hidden, for packagers): what a package
//! installs beside the binary, generated from the binary's own definitions
//! so that none of it can drift from what the binary does:
//!
//! - `DIR/man/`: one page per command, as clap_mangen names them
//!   (`zoffsite.1`, `zoffsite-backup.1`, `zoffsite-box.1`,
//!   `zoffsite-box-new.1`, ...), from the command line of `cli.rs`;
//! - `DIR/completions/`: bash (`zoffsite.bash`), zsh (`_zoffsite`) and fish
//!   (`zoffsite.fish`), by clap_complete from the same definition;
//! - `DIR/systemd/`: the units that are the same on every machine, running
//!   the package's binary ([`units::packaged`], core's one owner of every
//!   unit's text; the per-machine ones are `box new`'s).
//!
//! The repository keeps a copy in `dist/`, which the Debian package
//! (`[package.metadata.deb]`) and the PKGBUILD install; the test below
//! generates them again and compares, so a change to the command line or a
//! unit that forgets `make dist-files` fails `cargo test`.
//!
//! Hidden commands (this one) and clap's `help` get no page and no
//! completion: they are not an operator's.

use std::path::Path;

use clap::CommandFactory as _;
use zoffsite_core::provision::{units, values::AbsPath, PACKAGE_EXE};

use crate::cli::{Cli, DistArgs};
use crate::exit::Exit;
use crate::ui::Ui;

/// Every generated file: its path under `DIR` and its bytes.
pub(crate) fn generated() -> Vec<(String, Vec<u8>)> {
    let mut files = man_pages();
    files.extend(completions());
    let exe = AbsPath::new(PACKAGE_EXE).unwrap_or_else(|e| unreachable!("the package's path is valid: {e}"));
    files.extend(units::packaged(&exe).into_iter().map(|(name, text)| (format!("systemd/{name}"), text.into_bytes())));
    files
}

/// The command line as the pages and completions show it: built (so every
/// subcommand has its full display name, `zoffsite-box-new`, and the
/// global flags), without clap's `help` subcommand.
fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

fn man_pages() -> Vec<(String, Vec<u8>)> {
    fn add(cmd: &clap::Command, files: &mut Vec<(String, Vec<u8>)>) {
        let man = clap_mangen::Man::new(cmd.clone());
        let mut page = Vec::new();
        man.render(&mut page).unwrap_or_else(|e| unreachable!("rendering into memory cannot fail: {e}"));
        files.push((format!("man/{}", man.get_filename()), page));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            add(sub, files);
        }
    }
    let mut files = Vec::new();
    add(&command(), &mut files);
    files
}

/// The command line without its hidden subcommands, which clap_complete
/// would otherwise offer (it completes hidden subcommands' names): the top
/// level's name, version, about and arguments, and its visible
/// subcommands as they are. Only the top level has hidden ones.
fn visible_command() -> clap::Command {
    let cli = Cli::command();
    let mut cmd = clap::Command::new("zoffsite")
        .version(env!("CARGO_PKG_VERSION"))
        .args(cli.get_arguments().cloned())
        .subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .disable_help_subcommand(true);
    if let Some(about) = cli.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd
}

fn completions() -> Vec<(String, Vec<u8>)> {
    use clap_complete::Shell;
    let name = visible_command().get_name().to_owned();
    [(Shell::Bash, format!("{name}.bash")), (Shell::Zsh, format!("_{name}")), (Shell::Fish, format!("{name}.fish"))]
        .into_iter()
        .map(|(shell, file)| {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut visible_command(), &name, &mut text);
            (format!("completions/{file}"), text)
        })
        .collect()
}

pub(crate) fn run(args: &DistArgs) -> Exit {
    let mut ui = Ui::new(false, args.dry_run);
    let files = generated();
    for (rel, bytes) in &files {
        let path = args.out.join(rel);
        if args.dry_run {
            ui.say(format_args!("would write {}", path.display()));
            continue;
        }
        if let Err(e) = write(&path, bytes) {
            ui.err(Exit::Error, format_args!("dist: {}: {e}", path.display()));
            return ui.bail();
        }
    }
    if !args.dry_run {
        ui.say(format_args!("wrote {} files under {}", files.len(), args.out.display()));
    }
    ui.exit()
}

fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    /// The subdirectories of `DIR` this command writes, each wholly.
    const SUBDIRS: [&str; 3] = ["man", "completions", "systemd"];

    fn dist() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
    }

    fn names(files: &[(String, Vec<u8>)], under: &str) -> BTreeSet<String> {
        files.iter().filter_map(|(rel, _)| rel.strip_prefix(under)).map(str::to_owned).collect()
    }

    /// dist/ is exactly what the binary generates: the files the packages
    /// install are never stale.
    #[test]
    fn committed_dist_files_are_up_to_date() {
        let files = generated();
        let mut problems = Vec::new();
        for (rel, bytes) in &files {
            match std::fs::read(dist().join(rel)) {
                Ok(have) if have == *bytes => {}
                Ok(_) => problems.push(format!("dist/{rel} differs from what the binary generates")),
                Err(e) => problems.push(format!("dist/{rel}: {e}")),
            }
        }
        let wanted: BTreeSet<&str> = files.iter().map(|(rel, _)| rel.as_str()).collect();
        for sub in SUBDIRS {
            for entry in std::fs::read_dir(dist().join(sub)).into_iter().flatten().flatten() {
                let rel = format!("{sub}/{}", entry.file_name().to_string_lossy());
                if !wanted.contains(rel.as_str()) {
                    problems.push(format!("dist/{rel} is no longer generated"));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "{}\nThe man pages, completions or packaged units changed: run `make dist-files` and commit dist/.",
            problems.join("\n")
        );
    }

    /// One page per command the operator can type, nested ones too, and
    /// none for the hidden ones or clap's help.
    #[test]
    fn a_man_page_per_visible_command() {
        let pages = names(&man_pages(), "man/");
        for page in ["zoffsite.1", "zoffsite-backup.1", "zoffsite-serve.1", "zoffsite-box.1", "zoffsite-box-new.1"] {
            assert!(pages.contains(page), "{page} missing from {pages:?}");
        }
        let visible = |c: &clap::Command| c.get_subcommands().filter(|s| !s.is_hide_set()).count();
        let cmd = command();
        let expected =
            1 + visible(&cmd) + cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(visible).sum::<usize>();
        assert_eq!(pages.len(), expected, "{pages:?}");
        assert!(!pages.iter().any(|p| p.contains("dist") || p.contains("help")), "{pages:?}");
        let new = &man_pages().into_iter().find(|(rel, _)| rel == "man/zoffsite-box-new.1").unwrap().1;
        let new = String::from_utf8_lossy(new);
        assert!(new.starts_with(".ie \\n(.g .ds Aq"), "a roff page: {}", &new[..40]);
        assert!(new.contains("zoffsite\\-box\\-new") && new.contains("\\-\\-endpoint"), "{new}");
    }

    /// The completions' command is the real one less its hidden parts.
    #[test]
    fn completions_complete_the_real_command() {
        let (real, visible) = (command(), visible_command());
        assert_eq!(visible.get_name(), real.get_name());
        assert_eq!(visible.get_version(), real.get_version());
        let names = |c: &clap::Command| {
            c.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| s.get_name().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(names(&visible), names(&real));
        assert!(real.get_subcommands().any(|s| s.get_name() == "dist" && s.is_hide_set()));
        assert!(visible.get_subcommands().all(|s| s.get_name() != "dist"));
        let args = |c: &clap::Command| c.get_arguments().map(|a| a.get_id().to_string()).collect::<Vec<_>>();
        assert!(args(&Cli::command()).iter().all(|a| args(&visible).contains(a)));
    }

    /// Each shell's completion knows the subcommands and their flags, and
    /// not the hidden command.
    #[test]
    fn completions_for_three_shells() {
        let files = completions();
        assert_eq!(
            names(&files, "completions/"),
            BTreeSet::from(["zoffsite.bash", "_zoffsite", "zoffsite.fish"].map(String::from))
        );
        for (rel, text) in &files {
            let text = String::from_utf8_lossy(text);
            for word in ["backup", "keepalive", "dry-run", "json"] {
                assert!(text.contains(word), "{rel} lacks {word}");
            }
            assert!(!text.contains("dist"), "{rel} completes the hidden command");
        }
    }

    /// The packaged units run the binary where the package puts it.
    #[test]
    fn units_run_the_packaged_binary() {
        let units = names(&generated(), "systemd/");
        assert!(units.contains(units::BOX_CHECK) && units.contains(units::DRILL_TIMER), "{units:?}");
        for (rel, text) in generated().iter().filter(|(rel, _)| rel.starts_with("systemd/")) {
            let text = String::from_utf8_lossy(text);
            for exec in text.lines().filter(|l| l.starts_with("ExecStart=")) {
                assert!(exec.starts_with(&format!("ExecStart={PACKAGE_EXE} ")), "{rel}: {exec}");
            }
        }
    }
}
