//! `zoffsite`: personal, encrypted, offsite ZFS backups.
//!
//! This file only parses the command line, sets up logging and maps the
//! outcome to an exit code (docs/exit-codes.md). Each subcommand lives in
//! `cmd/`.

mod cli;
mod cmd;
mod exit;
mod logging;
mod ui;

use std::ffi::OsString;

use exit::Code as _;

fn main() -> std::process::ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match cli::Cli::try_parse_resolved(&argv) {
        Ok(c) => c,
        Err(e) => return command_line_error(&e, &argv),
    };
    logging::init(cli.verbose);
    ui::set_quiet(cli.quiet);
    let code = match cli.command {
        cli::Command::Backup(a) => cmd::backup::run(&a),
        cli::Command::Prune(a) => cmd::prune::run(&a),
        cli::Command::Status(a) => cmd::status::run(&a),
        cli::Command::Restore(a) => cmd::restore::run(&a),
        cli::Command::Verify(a) => cmd::verify::run(&a),
        cli::Command::Doctor(a) => cmd::doctor::run(&a),
        cli::Command::Box(cli::BoxCommand::New(a)) => cmd::box_new::run(&a),
        cli::Command::Box(cli::BoxCommand::Init(a)) => cmd::box_init::run(&a),
        cli::Command::Box(cli::BoxCommand::Prune(a)) => cmd::box_prune::run(&a),
        cli::Command::Box(cli::BoxCommand::Check(a)) => cmd::box_check::run(&a),
        cli::Command::Box(cli::BoxCommand::Apply(a)) => cmd::box_apply::run(&a, cli.verbose > 0),
        cli::Command::Box(cli::BoxCommand::Keepalive(a)) => cmd::box_keepalive::run(&a),
        cli::Command::Box(cli::BoxCommand::Image(a)) => cmd::box_image::run(&a),
        cli::Command::Box(cli::BoxCommand::Wait(a)) => cmd::box_wait::run(&a),
        cli::Command::Box(cli::BoxCommand::Install(a)) => cmd::box_install::run(&a),
        cli::Command::Serve(a) => cmd::serve::run(a),
        cli::Command::Config(cli::ConfigCommand::Check(a)) => cmd::config_check::run(&a),
        cli::Command::Dist(a) => cmd::dist::run(&a),
        cli::Command::SshConnect(a) => cmd::ssh_connect::run(&a),
    };
    std::process::ExitCode::from(code.code())
}

/// A command line clap refused (or `--help`, `--version`): clap's text on
/// stderr (help on stdout) and exit 2; with `--json` among the arguments,
/// also the short JSON document on stdout, so a monitor always gets JSON.
fn command_line_error(e: &clap::Error, argv: &[OsString]) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    if wants_json(argv) {
        let stop = ui::Stop {
            kind: ui::StopKind::Usage,
            message: clap_message(&e.render().to_string()),
            hint: Some(clap_hint(argv)),
        };
        let doc = ui::short_document(std::slice::from_ref(&stop.message), Some(&stop), exit::Exit::Usage);
        println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
    }
    // Printing to a closed stderr is no reason to panic.
    let _ = e.print();
    std::process::ExitCode::from(exit::Exit::Usage.code())
}

/// Whether `--json` is among the arguments (before a `--`).
fn wants_json(argv: &[OsString]) -> bool {
    argv.iter().skip(1).take_while(|a| *a != "--").any(|a| a == "--json")
}

/// clap's first line without its `error: ` prefix.
fn clap_message(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// Where the options are described: the `--help` of the (sub)command as
/// far as the arguments name one.
fn clap_hint(argv: &[OsString]) -> String {
    use clap::CommandFactory as _;
    let mut command = cli::Cli::command();
    let mut words = Vec::new();
    for a in argv.iter().skip(1).map_while(|a| a.to_str()) {
        match command.find_subcommand(a) {
            Some(sub) => {
                words.push(a);
                command = sub.clone();
            }
            None if a.starts_with('-') => continue,
            None => break,
        }
    }
    let named: String = words.iter().map(|w| format!("{w} ")).collect();
    format!("`zoffsite {named}--help` lists the options")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn json_is_wanted_when_asked_before_a_double_dash() {
        assert!(wants_json(&argv(&["zoffsite", "status", "--json", "--bogus"])));
        assert!(!wants_json(&argv(&["zoffsite", "status", "--", "--json"])));
        assert!(!wants_json(&argv(&["--json"])), "argv[0] is the program");
    }

    #[test]
    fn clap_errors_become_a_message_and_a_hint() {
        assert_eq!(
            clap_message("error: unexpected argument '--bogus' found\n\nUsage: ..."),
            "unexpected argument '--bogus' found"
        );
        assert_eq!(
            clap_hint(&argv(&["zoffsite", "box", "check", "--bogus"])),
            "`zoffsite box check --help` lists the options"
        );
        assert_eq!(clap_hint(&argv(&["zoffsite", "--bogus"])), "`zoffsite --help` lists the options");
        assert_eq!(
            clap_hint(&argv(&["zoffsite", "-q", "status", "nope"])),
            "`zoffsite status --help` lists the options"
        );
    }
}
