//! Command-line interface.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use zoffsite_core::names::Dataset;

#[derive(Parser)]
#[command(name = "zoffsite", version, about = "Personal, encrypted, offsite ZFS backups", long_about = None)]
pub(crate) struct Cli {
    /// More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print only warnings and errors (and, with --json, the document): no
    /// narrative, tables or progress. The exit code says the rest.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// The configuration file, before or after the subcommand: the source's
    /// (default /etc/zoffsite/zoffsite.toml), or for box prune, box check,
    /// box keepalive and serve the box's (default /etc/zoffsite/box.toml;
    /// serve reads only its max_age, and goes on without it); doctor reads
    /// the one of its side. -c wins over ZOFFSITE_CONFIG, which wins
    /// over the default.
    #[arg(short, long, value_name = "FILE", global = true, env = zoffsite_core::config::ENV)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses `argv` and puts the configuration file (`-c`, before or after
    /// the subcommand, else [`zoffsite_core::config::ENV`], else the command's default)
    /// where the command reads it. `-c` on a command that reads no
    /// configuration is a usage error (the variable is not: it may be set
    /// for every command).
    pub(crate) fn try_parse_resolved<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(argv)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        let given = cli.config.clone();
        let on_command_line = matches.value_source("config") == Some(ValueSource::CommandLine);
        if !cli.command.take_config(given) && on_command_line {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "this command reads no configuration file: leave out -c/--config",
            ));
        }
        Ok(cli)
    }
}

impl Command {
    /// Puts `given` (or the default) where this command reads its config;
    /// false when it reads none.
    fn take_config(&mut self, given: Option<PathBuf>) -> bool {
        use zoffsite_core::{boxside, config};
        let or = |default: &str| given.clone().unwrap_or_else(|| PathBuf::from(default));
        let slot = match self {
            Command::Backup(a) => &mut a.config,
            Command::Prune(a) => &mut a.config,
            Command::Status(a) => &mut a.config,
            Command::Restore(a) => &mut a.config,
            Command::Verify(a) => &mut a.config,
            Command::Box(BoxCommand::New(a)) => &mut a.config,
            Command::Box(BoxCommand::Wait(a)) => &mut a.config,
            Command::Config(ConfigCommand::Check(a)) => {
                a.config = or(if a.box_side { boxside::DEFAULT_PATH } else { config::DEFAULT_PATH });
                return true;
            }
            Command::Box(BoxCommand::Prune(a)) => {
                a.config = or(boxside::DEFAULT_PATH);
                return true;
            }
            Command::Box(BoxCommand::Check(a)) => {
                a.config = or(boxside::DEFAULT_PATH);
                return true;
            }
            Command::Box(BoxCommand::Keepalive(a)) => {
                a.config = or(boxside::DEFAULT_PATH);
                return true;
            }
            // Read only for its max_age (heartbeat refresh), and optional.
            Command::Serve(a) => {
                a.config = or(boxside::DEFAULT_PATH);
                return true;
            }
            // Its side decides the default.
            Command::Doctor(a) => {
                a.config = given;
                return true;
            }
            Command::Box(
                BoxCommand::Init(_) | BoxCommand::Apply(_) | BoxCommand::Image(_) | BoxCommand::Install(_),
            )
            | Command::Dist(_)
            | Command::SshConnect(_) => return false,
        };
        *slot = or(config::DEFAULT_PATH);
        true
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Snapshot the selected datasets and send them, raw, to every target.
    Backup(BackupArgs),
    /// Apply source retention ([source.keep]) to zoffsite's own snapshots.
    Prune(PruneArgs),
    /// For every target and dataset: newest snapshot on the source and on the
    /// box, its age, bytes behind. Exits 6 when any is older than max_age.
    Status(StatusArgs),
    /// Bring a dataset (and its children) back from a box, raw, without
    /// ever giving the box a key: over the network (--target) or from the
    /// box's pool imported here (--from-pool).
    Restore(RestoreArgs),
    /// Without any key: check that every target holds what it confirmed,
    /// with the source's GUIDs, on a healthy, scrubbed pool.
    Verify(VerifyArgs),
    /// Audit the security posture of the box (--box, as root) or of the
    /// source (--source): one line per check, ok/warn/unknown/fail, with
    /// the fix. Exits 0 when all are ok, 6 on a warning or an unknown, 3 on
    /// a failure.
    Doctor(DoctorArgs),
    /// Boxes: make one (new), build its installer image (image), wait for it
    /// and back up to it the first time (wait), all on the source; install a
    /// bundle (apply, both machines); and the box-side tasks run by root on
    /// the box (init, prune, check, keepalive, install).
    #[command(subcommand)]
    Box(BoxCommand),
    /// The box side: speak the zoffsite protocol on stdin/stdout. Meant to be
    /// the forced command of the source's key in the box's authorized_keys.
    Serve(ServeArgs),
    /// The configuration file: `config check` validates it and says what it
    /// means, touching neither ZFS nor the network.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// For packagers: write the man pages, the shell completions and the
    /// systemd units a package installs under DIR (dist/ in the
    /// repository holds them; `make dist-files` refreshes it). Hidden: not
    /// an operator's command.
    #[command(hide = true)]
    Dist(DistArgs),
    /// ssh's ProxyCommand toward a box (`ssh-connect`): connect, set the
    /// target's TCP congestion control on that socket, pass it to ssh.
    /// Hidden: the backup's ssh runs it, not an operator.
    #[command(name = "ssh-connect", hide = true)]
    SshConnect(SshConnectArgs),
}

#[derive(Args)]
pub(crate) struct SshConnectArgs {
    /// The algorithm, by its kernel name (bbr, cubic, ...).
    #[arg(long, value_name = "NAME")]
    pub congestion_control: String,
    /// Seconds to wait for each address to accept.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// The box's host name or address.
    pub host: String,
    /// Its SSH port.
    pub port: u16,
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate the config (-c FILE, ZOFFSITE_CONFIG or the default) and
    /// print what it means: the datasets, each target, retention in words,
    /// the backup timer's schedule and bandwidth limits. Reads only files:
    /// no zfs, no ssh. Exits 0 when it is valid, 2 when not.
    Check(ConfigCheckArgs),
}

#[derive(Args)]
pub(crate) struct ConfigCheckArgs {
    /// The config file (from -c, ZOFFSITE_CONFIG or the default).
    #[arg(skip)]
    pub config: PathBuf,
    /// Check the box's config (box.toml, default /etc/zoffsite/box.toml)
    /// instead of the source's.
    #[arg(long = "box")]
    pub box_side: bool,
    /// Print what it means as JSON on stdout (on failure too).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub(crate) struct DistArgs {
    /// Where to write them: DIR/man, DIR/completions, DIR/systemd.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// List the files it would write; write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub(crate) struct BackupArgs {
    /// The config file (from -c, ZOFFSITE_CONFIG or the default).
    #[arg(skip)]
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
    /// Send only to this target of the config (default: every target).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The config file (from -c, ZOFFSITE_CONFIG or the default).
    #[arg(skip)]
    pub config: PathBuf,
    /// Only this target (default: all; with --drill, the first).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// A restore drill: pull a snapshot back into a scratch dataset, load
    /// the key, compare every file with the source's snapshot, destroy the
    /// scratch.
    #[arg(long)]
    pub drill: bool,
    /// With --drill: the dataset (default: the first selected).
    #[arg(long, value_name = "DATASET", requires = "drill")]
    pub dataset: Option<Dataset>,
    /// With --drill: a random snapshot the box holds (default: the newest
    /// it confirmed).
    #[arg(long, requires = "drill")]
    pub random: bool,
    /// With --drill: give up (and destroy the scratch) after this long, e.g.
    /// "2h" (default: 30 min plus the stream's size at 256 KiB/s).
    #[arg(long, value_name = "DURATION", requires = "drill", value_parser = parse_duration)]
    pub max_time: Option<std::time::Duration>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    zoffsite_core::config::parse_duration("--max-time", s).map_err(|e| e.to_string())
}

fn parse_count_limit(s: &str) -> Result<zoffsite_core::boxinit::Limit, String> {
    zoffsite_core::boxinit::Limit::parse(s, |n| {
        n.parse::<u64>().map_err(|_| format!("{n:?} is not a count; give a number or none"))
    })
}

fn parse_quota(s: &str) -> Result<zoffsite_core::boxinit::Limit, String> {
    zoffsite_core::boxinit::Limit::parse(s, zoffsite_core::limits::parse_bytes)
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    zoffsite_core::limits::parse_bytes(s)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ApplyProperties {
    Data,
    All,
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// The config file (from -c, ZOFFSITE_CONFIG or the default).
    #[arg(skip)]
    pub config: PathBuf,
    /// Restore over the network from this target of the config.
    #[arg(long, value_name = "NAME", conflicts_with = "from_pool")]
    pub target: Option<String>,
    /// Restore from the box's pool imported on this machine: its root
    /// dataset as imported (e.g. offsite2/home).
    #[arg(long, value_name = "POOL/ROOT")]
    pub from_pool: Option<Dataset>,
    /// The dataset to restore, named as on the source (e.g. tank/data).
    #[arg(long, value_name = "SRC")]
    pub dataset: Dataset,
    /// The snapshot to restore (default: the newest on the box).
    #[arg(long, value_name = "SNAP")]
    pub snapshot: Option<zoffsite_core::names::SnapName>,
    /// Where to restore it (default: in place, as SRC). Never overwritten:
    /// it must not exist.
    #[arg(long, value_name = "DEST")]
    pub to: Option<Dataset>,
    /// Set this keylocation on every restored dataset (each its own
    /// encryption root, wrapped as the box holds it), load the keys, and
    /// mount (default: leave it locked and say how).
    #[arg(long, value_name = "URI")]
    pub keylocation: Option<String>,
    /// Restore only SRC, not the datasets below it.
    #[arg(long)]
    pub no_children: bool,
    /// Bring back the children the box holds under the snapshot's name even
    /// when the restored point's manifest cannot say which were part of it
    /// (no --keylocation, or a snapshot from before the manifest listed
    /// its datasets). By default only the children it lists come back.
    #[arg(long, conflicts_with = "no_children")]
    pub children_unverified: bool,
    /// Which recorded properties to set again: `data` (compression,
    /// recordsize, atime, xattr, acltype, ..., user properties) or `all`
    /// (also mountpoint, sharenfs, setuid, quotas, ...: only for a point you
    /// trust, since the manifest was written by the source).
    #[arg(long, value_enum, value_name = "WHICH", default_value = "data")]
    pub apply_properties: ApplyProperties,
    /// Show what would be restored where; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Accept at most this many stream bytes from the box in all, e.g. 2T
    /// (default: what the destination pool has available, less a
    /// twentieth, so a lying box cannot fill it).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub max_bytes: Option<u64>,
    /// Give up after this long, e.g. "3d" (default: 30 min plus the byte
    /// limit at 256 KiB/s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_time: Option<std::time::Duration>,
    /// Print what was (or, with -n, would be) restored as JSON on stdout
    /// (on failure too).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub(crate) struct PruneArgs {
    /// The config file (from -c, ZOFFSITE_CONFIG or the default).
    #[arg(skip)]
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
pub(crate) struct StatusArgs {
    /// The config file (from -c, ZOFFSITE_CONFIG or the default).
    #[arg(skip)]
    pub config: PathBuf,
    /// Print the status as JSON on stdout (on failure too).
    #[arg(long)]
    pub json: bool,
    /// Only this target of the config (default: every target).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
}

#[derive(Args)]
pub(crate) struct DoctorArgs {
    /// Audit this machine as the box (default when /etc/zoffsite/box.toml
    /// exists and /etc/zoffsite/zoffsite.toml does not).
    #[arg(long = "box", conflicts_with = "source")]
    pub box_side: bool,
    /// Audit this machine as the source (default when
    /// /etc/zoffsite/zoffsite.toml exists and /etc/zoffsite/box.toml does
    /// not).
    #[arg(long)]
    pub source: bool,
    /// The config file from -c or ZOFFSITE_CONFIG: box.toml with --box
    /// (default /etc/zoffsite/box.toml), zoffsite.toml with --source
    /// (default /etc/zoffsite/zoffsite.toml).
    #[arg(skip)]
    pub config: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to FILE, atomically and mode 0644 (for the
    /// box's audit timer: `serve` hands it to the source), e.g.
    /// /var/lib/zoffsite-doctor/box.json.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The box dataset under which source dataset `tank/x` is stored as
    /// `ROOT/tank/x`. Nothing outside it is ever touched.
    #[arg(long, value_name = "DATASET")]
    pub root: Dataset,
    /// The box's config (from -c, ZOFFSITE_CONFIG or the default), read
    /// only for `max_age`: how often a heartbeat is written again. Optional.
    #[arg(skip)]
    pub config: std::path::PathBuf,
}

#[derive(Subcommand)]
pub(crate) enum BoxCommand {
    /// On the source: make a new box's keys (both ends' WireGuard keys, the
    /// box's SSH host key, this source's SSH key for it) and its files, as
    /// two bundles for `box apply`, and add its [[target]] to the config.
    New(BoxNewArgs),
    /// Prepare the box: the unprivileged user, the root dataset, the
    /// append-only delegation and the forced-command authorized_keys line.
    Init(BoxInitArgs),
    /// Box retention by the box's own receive times ([keep] in box.toml).
    Prune(BoxPruneArgs),
    /// Dead-man's switch: fail (and notify) when nothing arrived within
    /// max_age, the pool is unhealthy, or a partial receive was abandoned.
    Check(BoxCheckArgs),
    /// Install a bundle made by `zoffsite box new` (box.bundle on the box,
    /// source.bundle on the source), idempotently: its files and keys, what
    /// `box init` does (box, under /), and its units, enabled.
    Apply(BoxApplyArgs),
    /// Follow the source's address: when the tunnel's last handshake is
    /// stale and the source's name now resolves elsewhere, set the peer's
    /// endpoint (WireGuard resolves it only once). Run by a timer.
    Keepalive(BoxKeepaliveArgs),
    /// On the source: build box NAME's installer image with mkosi (its
    /// bundle, this zoffsite, OpenZFS signed with your Secure Boot db key,
    /// a signed unified kernel image, your PK/KEK/db enrollment files) and
    /// write it to a file or a USB stick.
    Image(BoxImageArgs),
    /// On the source, once the box is powered on: wait for its tunnel and
    /// a session with its pinned host key, show its audit, enable the
    /// backup timer and run the first backup to it. Stops (exit 3) when
    /// the box's audit has a failed check, unless --force.
    Wait(BoxWaitArgs),
    /// On the box's USB stick (its unit runs it at boot): check Secure Boot
    /// and the TPM 2.0, put the system on the smaller of exactly two blank
    /// internal disks (LUKS2 unlocked by the TPM, and a recovery key written
    /// only to the report on the stick) and the pool on the larger.
    Install(BoxInstallArgs),
}

#[derive(Args)]
pub(crate) struct BoxInitArgs {
    /// The box dataset the source's key is forced to serve.
    #[arg(long, value_name = "DATASET")]
    pub root: Dataset,
    /// The unprivileged user that runs `zoffsite serve`.
    #[arg(long, default_value = zoffsite_core::boxinit::DEFAULT_USER)]
    pub user: String,
    /// The source's SSH public key (one line, `ssh-ed25519 AAAA...`).
    #[arg(long, value_name = "FILE")]
    pub source_key: PathBuf,
    /// Only accept the key from this address (the source's VPN address).
    #[arg(long, value_name = "ADDRESS")]
    pub from: Option<String>,
    /// Write the forced-command line here instead of the user's ~/.ssh/authorized_keys.
    #[arg(long, value_name = "FILE")]
    pub authorized_keys: Option<PathBuf>,
    /// Cap the number of snapshots under the root (ZFS snapshot_limit), or
    /// `none` (default: 100000 where the root has no limit yet).
    #[arg(long, value_name = "N|none", value_parser = parse_count_limit)]
    pub snapshot_limit: Option<zoffsite_core::boxinit::Limit>,
    /// Cap the number of datasets under the root, placeholders included (ZFS
    /// filesystem_limit), or `none` (default: 1000 where the root has no
    /// limit yet).
    #[arg(long, value_name = "N|none", value_parser = parse_count_limit)]
    pub filesystem_limit: Option<zoffsite_core::boxinit::Limit>,
    /// Cap the space the source can take from the box's pool (ZFS quota on
    /// the root), e.g. 2T, or `none` (default: leave the quota as it is).
    #[arg(long, value_name = "SIZE|none", value_parser = parse_quota)]
    pub quota: Option<zoffsite_core::boxinit::Limit>,
    /// Print what would be done; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print the plan and what was done as JSON on stdout (on failure too).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub(crate) struct BoxPruneArgs {
    /// The config file (from -c, ZOFFSITE_CONFIG or the default).
    #[arg(skip)]
    pub config: PathBuf,
    /// List every snapshot with keep/destroy and the reason; destroy nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Pretend it is this time (RFC 3339), for what-if runs.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Print the decisions as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub(crate) struct BoxCheckArgs {
    /// The config file (from -c, ZOFFSITE_CONFIG or the default).
    #[arg(skip)]
    pub config: PathBuf,
    /// Pretend it is this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Print the findings as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub(crate) struct BoxApplyArgs {
    /// The bundle (made by `zoffsite box new`; it holds private keys: 0600).
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Install under this directory instead of / (an image being built, a
    /// test); implies --offline and runs as any user.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Ask no running systemd anything: enable the units with `systemctl
    /// --root=DIR enable`, start and reload nothing.
    #[arg(long)]
    pub offline: bool,
    /// Show every file and command; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print the plan and the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub(crate) struct BoxKeepaliveArgs {
    /// The box config file (from -c, ZOFFSITE_CONFIG or the default). Not
    /// read by keepalive (the tunnel is described by its WireGuard file);
    /// accepted like every box command.
    #[arg(skip)]
    pub config: PathBuf,
    /// The WireGuard interface (default: the one zo-* interface installed,
    /// /etc/wireguard/zo-*.conf or /etc/systemd/network/zo-*.netdev).
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// Decide and say what would be set; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print what was found and done as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub(crate) struct BoxWaitArgs {
    /// The box's name: its target in the config (`box new NAME` made it).
    pub name: String,
    /// The config file (from -c, ZOFFSITE_CONFIG or the default).
    #[arg(skip)]
    pub config: PathBuf,
    /// Give up waiting for the box after this long, e.g. "10m", "2h".
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
    /// Back up even when the box's audit has a failed check (the exit code
    /// still says 3).
    #[arg(long)]
    pub force: bool,
    /// Wait and show the box's audit; enable nothing, only plan the backup.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print what was reached and done as JSON on stdout (on failure too).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub(crate) struct BoxInstallArgs {
    /// The box's bundle (its [init].root names the pool).
    #[arg(long, value_name = "PATH", default_value = zoffsite_core::image::STICK_BUNDLE)]
    pub bundle: PathBuf,
    /// Where the report goes (zoffsite-install.txt and .json): a directory
    /// on the stick's ESP. The recovery key is written there and nowhere
    /// else.
    #[arg(long, value_name = "DIR")]
    pub report_dir: PathBuf,
    /// Check and show the plan (also systemd-repart's own dry run); change
    /// nothing and write no report.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    zoffsite_core::config::parse_duration("--timeout", s).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum WgBackend {
    /// /etc/wireguard/IF.conf and wg-quick@IF.service.
    WgQuick,
    /// /etc/systemd/network/IF.netdev and IF.network.
    Networkd,
}

#[derive(Args)]
pub(crate) struct BoxNewArgs {
    /// The box's name (1-12 of a-z, 0-9 and '-'): its target's name, and
    /// its WireGuard interface zo-NAME on both ends.
    pub name: String,
    /// The source's WireGuard server as the box dials it: HOST:PORT, HOST
    /// a DNS name (re-resolved by the box when it changes) or an address.
    #[arg(long, value_name = "HOST:PORT")]
    pub endpoint: String,
    /// The tunnel's private IPv4 network: the source is its first address,
    /// the box its second.
    #[arg(long, value_name = "NET", default_value = zoffsite_core::provision::values::Tunnel::DEFAULT)]
    pub tunnel: String,
    /// The box's root dataset, under which this source's datasets are kept
    /// (default: offsite/HOST, HOST this machine's short host name).
    #[arg(long, value_name = "DATASET")]
    pub root: Option<Dataset>,
    /// Where the bundles and keys are written (0700; default
    /// /etc/zoffsite/boxes/NAME). It must be new or empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The source's config file, which gets the box's [[target]] (from -c,
    /// ZOFFSITE_CONFIG or the default).
    #[arg(skip)]
    pub config: PathBuf,
    /// The box user that runs `zoffsite serve`.
    #[arg(long, default_value = zoffsite_core::boxinit::DEFAULT_USER)]
    pub user: String,
    /// Use this existing SSH key of the source (its FILE.pub is read)
    /// instead of making DIR/id_ed25519.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// The box's sshd port, inside the tunnel.
    #[arg(long, value_name = "N", default_value_t = 22)]
    pub ssh_port: u16,
    /// The box's WireGuard PersistentKeepalive, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = zoffsite_core::provision::values::Keepalive::DEFAULT.secs())]
    pub keepalive: u16,
    /// How this machine brings up the tunnel.
    #[arg(long, value_enum, value_name = "BACKEND", default_value = "wg-quick")]
    pub source_backend: WgBackend,
    /// How the box brings up the tunnel.
    #[arg(long, value_enum, value_name = "BACKEND", default_value = "wg-quick")]
    pub box_backend: WgBackend,
    /// When `zoffsite backup` runs: a systemd calendar expression.
    #[arg(long, value_name = "CAL", default_value = "daily")]
    pub schedule: String,
    /// zoffsite on the box (its forced command and timers run it).
    #[arg(long, value_name = "PATH", default_value = zoffsite_core::provision::DEFAULT_EXE)]
    pub box_exe: String,
    /// zoffsite on this machine, as its timers run it (default: this
    /// binary).
    #[arg(long, value_name = "PATH")]
    pub source_exe: Option<String>,
    /// Show every file the bundles would install and the config change;
    /// make no key, write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print the result (or, with -n, the plan) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["output", "write"])))]
pub(crate) struct BoxImageArgs {
    /// The box's name, as given to `box new`.
    pub name: String,
    /// Write the image to this file (0600: it holds the box's private keys).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write the image to this USB stick (a whole removable disk, nothing
    /// mounted), e.g. /dev/sdb.
    #[arg(long, value_name = "DEVICE")]
    pub write: Option<PathBuf>,
    /// The box's directory from `box new` (default /etc/zoffsite/boxes/NAME).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Your Secure Boot keys (made there on first use; default
    /// /etc/zoffsite/secureboot). Keep a copy offline: every box trusts them.
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// The build tree and mkosi's cache (default /var/cache/zoffsite/image/NAME).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// Make the serial port the console (a box with one, or a VM): the
    /// screen is otherwise.
    #[arg(long)]
    pub serial_console: bool,
    /// Show what would be made and run; make no key, build nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}
