//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use zoffsite_core::names::Dataset;

#[derive(Parser)]
#[command(name = "zoffsite", version, about = "Personal, encrypted, offsite ZFS backups", long_about = None)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Snapshot the selected datasets and send them, raw, to every target.
    Backup(BackupArgs),
    /// Apply source retention ([source.keep]) to zoffsite's own snapshots.
    Prune(PruneArgs),
    /// For every target and dataset: newest snapshot on the source and on the
    /// box, its age, bytes behind. Exits 6 when any is older than max_age.
    Status(StatusArgs),
    /// The box side: speak the zoffsite protocol on stdin/stdout. Meant to be
    /// the forced command of the source's key in the box's authorized_keys.
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct BackupArgs {
    /// Configuration file.
    #[arg(short, long, value_name = "FILE", default_value = zoffsite_core::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Show what would be snapshotted and sent; change nothing anywhere.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print the result (or, with -n, the plan) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Take a new snapshot even if no selected dataset changed since its
    /// last zoffsite snapshot.
    #[arg(long)]
    pub force_snapshot: bool,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Configuration file.
    #[arg(short, long, value_name = "FILE", default_value = zoffsite_core::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// List every snapshot with keep/destroy and the reason; destroy nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Pretend it is this time (RFC 3339, e.g. 2026-11-26T07:30:00Z), for what-if runs.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Print the decisions as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Configuration file.
    #[arg(short, long, value_name = "FILE", default_value = zoffsite_core::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Print the status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ServeArgs {
    /// The box dataset under which source dataset `tank/x` is stored as
    /// `ROOT/tank/x`. Nothing outside it is ever touched.
    #[arg(long, value_name = "DATASET")]
    pub root: Dataset,
}
