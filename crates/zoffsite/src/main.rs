//! `zoffsite`: personal, encrypted, offsite ZFS backups.
//!
//! This file only parses the command line, sets up logging and maps the
//! outcome to an exit code (docs/exit-codes.md). Each subcommand lives in
//! `cmd/`.

mod cli;
mod cmd;
mod exit;
mod ui;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
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
        cli::Command::Dist(a) => cmd::dist::run(&a),
    };
    std::process::ExitCode::from(exit::Code::code(code))
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZOFFSITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Logs go to stderr: stdout carries results (and, in `serve`, the
    // protocol itself).
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}
