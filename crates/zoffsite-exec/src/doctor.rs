//! `zoffsite doctor`'s shell: gathers every fact its checks need, on the
//! box (as root) or on the source, and hands them to the pure checks of
//! [`zoffsite_core::doctor`], which decide.
//!
//! Invariants:
//! - Nothing here decides a status but "could not look": a file or a tool
//!   that is missing, unreadable, too large, too slow or failing gives an
//!   [`Status::Unknown`](zoffsite_core::doctor::Status) check saying why,
//!   never an ok and never a crash.
//! - Every file read is bounded ([`read_file`]), every command runs through
//!   [`crate::process`] with a deadline ([`Host::deadline`]) and bounded
//!   output.
//! - No secret is asked for: WireGuard is read with `wg show IF
//!   latest-handshakes|endpoints|persistent-keepalive`
//!   ([`wireguard::Show::WHAT`]), never `wg show IF dump` (its first line
//!   is the private key); key files are `lstat`ed, never read.
//! - Every absolute path is read under [`Host::root`] (`/` on a machine; a
//!   tree of fixture files in tests), and every tool is looked up in
//!   [`Host::bin`] when set (fake tools in tests).

use std::ffi::OsString;
use std::io::Read as _;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zoffsite_core::boxinit::FileFacts;
use zoffsite_core::boxside::BoxConfig;
use zoffsite_core::config::Config;
use zoffsite_core::doctor::boxaudit::{Fetched, Posture};
use zoffsite_core::doctor::expect::{self, BoxExpect, DropIn, Tunnel};
use zoffsite_core::doctor::firmware::{self, AuthObject};
use zoffsite_core::doctor::luks::{self, RootDevice};
use zoffsite_core::doctor::{
    self, sockets, source, sshd, timers, wireguard, zfs as zcheck, Check, CheckId, Report, Side,
};
use zoffsite_core::names::Dataset;
use zoffsite_core::provision::values::BoxName;
use zoffsite_core::provision::{self, units, Backend};

use crate::process::{self, Cmd, Output};
use crate::proto::client::Session;
use crate::zfs::{Zfs, ZfsError};

/// How long one tool may run by default.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Most bytes read from a small sysfs or efivars file.
const SMALL: usize = 4096;
/// Most entries listed in one directory (firmware attributes, configs).
const MAX_ENTRIES: usize = 256;
/// Most levels of block devices followed below the root filesystem.
const MAX_DEPTH: usize = 8;

/// Where doctor looks.
#[derive(Debug, Clone)]
pub struct Host {
    /// Prefix of every absolute path read: `/` on a machine.
    pub root: PathBuf,
    /// The directory of the tools (`None`: PATH and the sbin directories).
    pub bin: Option<PathBuf>,
    /// How long each tool may run.
    pub deadline: Duration,
}

impl Default for Host {
    fn default() -> Self {
        Host { root: PathBuf::from("/"), bin: None, deadline: DEADLINE }
    }
}

impl Host {
    /// `abs` (an absolute path) under [`Host::root`].
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    fn program(&self, name: &str) -> OsString {
        match &self.bin {
            Some(d) => d.join(name).into_os_string(),
            None => process::find_program(name),
        }
    }

    fn zfs(&self) -> Zfs {
        Zfs::with_binary(self.program("zfs")).with_deadlines(self.deadline, self.deadline)
    }

    /// Runs `name args...`: its output whatever its exit status, or why
    /// it could not run (missing, killed at the deadline, too much output).
    fn run(&self, name: &str, args: &[&str]) -> Result<Output, String> {
        let cmd = Cmd::new(self.program(name)).args(args);
        process::run_by(&cmd, doctor::MAX_INPUT, Some(self.deadline)).map_err(|e| match e {
            process::ExecError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                format!("`{name}` is not installed (or not on PATH)")
            }
            e => e.to_string(),
        })
    }

    /// [`Host::run`], its stdout as text when it succeeded; otherwise why
    /// not (with the first line of its stderr).
    fn stdout(&self, name: &str, args: &[&str]) -> Result<String, String> {
        let out = self.run(name, args)?;
        if out.success() {
            String::from_utf8(out.stdout)
                .map_err(|_| format!("`{name} {}` printed bytes that are not UTF-8", args.join(" ")))
        } else {
            Err(format!("`{name} {}` failed: {}", args.join(" "), first_line(&out.stderr)))
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("(no message)")
}

/// Reads at most `limit` bytes of the file at `path` (following links, as
/// sysfs needs): `Ok(None)` when it does not exist; larger is an error.
pub fn read_file(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, String> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if !f.metadata().map_err(|e| format!("{}: {e}", path.display()))?.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut buf = Vec::new();
    f.take(limit as u64 + 1).read_to_end(&mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() > limit {
        return Err(format!("{} is larger than {limit} bytes", path.display()));
    }
    Ok(Some(buf))
}

fn read_text(path: &Path, limit: usize) -> Result<Option<String>, String> {
    read_file(path, limit)?
        .map(|b| String::from_utf8(b).map_err(|_| format!("{} is not UTF-8 text", path.display())))
        .transpose()
}

/// The names in a directory (at most [`MAX_ENTRIES`]); `Ok(None)` when it
/// does not exist.
fn list_dir(path: &Path) -> Result<Option<Vec<String>>, String> {
    let rd = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot list {}: {e}", path.display())),
    };
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        if names.len() == MAX_ENTRIES {
            return Err(format!("{} has more than {MAX_ENTRIES} entries", path.display()));
        }
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(Some(names))
}

// ---------------------------------------------------------------------------
// The box

/// Every box check, in [`CheckId::ALL`]'s order, at `now` (Unix seconds).
pub fn box_report(host: &Host, cfg: &BoxConfig, now: i64) -> Report {
    let mut r = Report::new();
    r.push(secure_boot(host));
    r.push(luks_tpm(host));
    r.push(tpm_version(host));
    r.push(bios_password(host));
    let dropin = read_text(&host.path(provision::sshd::DROPIN_PATH), doctor::MAX_INPUT)
        .ok()
        .flatten()
        .map(|t| expect::parse_dropin(&t))
        .unwrap_or_default();
    let tunnel = box_tunnel(host);
    let want = tunnel.as_ref().map(|(t, _)| BoxExpect::new(t.clone(), &dropin)).map_err(Clone::clone);
    r.extend(sshd_checks(host, &want));
    r.push(firewall(host, &want));
    match &tunnel {
        Ok((t, _)) => r.extend(wg_checks(host, Side::Box, &t.interface, now)),
        Err(e) => {
            r.extend([CheckId::WgKeepalive, CheckId::WgHandshake, CheckId::WgEndpoint].map(|id| no_tunnel(id, e)));
        }
    }
    r.extend(box_zfs(host, cfg, &dropin, now));
    let mut units = vec![units::firewall_unit_name(None)];
    if let Ok((t, backend)) = &tunnel {
        units.push(backend.unit(&t.interface));
    }
    units.extend([units::BOX_PRUNE_TIMER, units::BOX_CHECK_TIMER, units::KEEPALIVE_TIMER].map(str::to_owned));
    r.push(enabled(host, Side::Box, &units));
    r
}

fn secure_boot(host: &Host) -> Check {
    let read = |name: &str| read_file(&host.path(&firmware::efivar_path(name)), SMALL);
    match (read("SecureBoot"), read("SetupMode")) {
        (Ok(sb), Ok(sm)) => firmware::check_secure_boot(sb.as_deref(), sm.as_deref()),
        (Err(e), _) | (_, Err(e)) => {
            Check::unknown(CheckId::SecureBoot, e, "run doctor as root; look at `bootctl status`")
        }
    }
}

fn tpm_version(host: &Host) -> Check {
    match read_text(&host.path(firmware::TPM_VERSION_PATH), SMALL) {
        Ok(v) => firmware::check_tpm_version(v.as_deref()),
        Err(e) => Check::unknown(CheckId::TpmVersion, e, "look at `ls /sys/class/tpm/`"),
    }
}

fn bios_password(host: &Host) -> Check {
    let base = host.path(firmware::FIRMWARE_ATTRIBUTES);
    let small = |p: PathBuf| read_text(&p, SMALL).ok().flatten();
    let mut objects = Vec::new();
    let drivers = match list_dir(&base) {
        Ok(d) => d.unwrap_or_default(),
        Err(e) => return Check::unknown(CheckId::BiosPassword, e, "look in the firmware setup"),
    };
    for driver in drivers {
        let auth = base.join(&driver).join("authentication");
        let Ok(Some(names)) = list_dir(&auth) else { continue };
        for name in names {
            let dir = auth.join(&name);
            objects.push(AuthObject {
                driver: driver.clone(),
                role: small(dir.join("role")),
                is_enabled: small(dir.join("is_enabled")),
                name,
            });
        }
    }
    firmware::check_bios_password(&objects)
}

/// What one block device below the root filesystem is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Backing {
    /// A LUKS2 dm-crypt device whose header is on this device.
    Luks2(String),
    Luks1,
    /// A disk or partition reached without passing through dm-crypt.
    Plain(String),
    /// Could not be followed.
    Unknown(String),
}

/// The root filesystem's `MAJOR:MINOR`, file system type and source, from
/// `/proc/self/mountinfo` (the last mount on `/` is the visible one).
fn root_mount(host: &Host) -> Result<(String, String, String), String> {
    let path = host.path("/proc/self/mountinfo");
    let text = read_text(&path, doctor::MAX_INPUT)?.ok_or_else(|| format!("{} does not exist", path.display()))?;
    let mut found = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else { continue };
        if f.len() < dash + 3 || dash < 6 || f[4] != "/" {
            continue;
        }
        found = Some((f[2].to_owned(), f[dash + 1].to_owned(), f[dash + 2].to_owned()));
    }
    found.ok_or_else(|| format!("{} lists no mount on /", path.display()))
}

/// Follows `MAJOR:MINOR` down through device-mapper and md slaves.
fn backing(host: &Host, majmin: &str, depth: usize, out: &mut Vec<Backing>) {
    if depth > MAX_DEPTH {
        out.push(Backing::Unknown(format!("block devices nest deeper than {MAX_DEPTH}")));
        return;
    }
    let dir = host.path(&format!("/sys/dev/block/{majmin}"));
    if !dir.is_dir() {
        out.push(Backing::Unknown(format!("no {} (block device {majmin})", dir.display())));
        return;
    }
    let uuid = read_text(&dir.join("dm/uuid"), SMALL).ok().flatten().unwrap_or_default();
    let slaves = match list_dir(&dir.join("slaves")) {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            out.push(Backing::Unknown(e));
            return;
        }
    };
    if uuid.starts_with("CRYPT-LUKS2-") {
        out.push(match slaves.as_slice() {
            [one] => Backing::Luks2(format!("/dev/{one}")),
            _ => Backing::Unknown(format!("the LUKS2 device {majmin} sits on {} devices, not one", slaves.len())),
        });
        return;
    }
    if uuid.starts_with("CRYPT-LUKS1-") {
        out.push(Backing::Luks1);
        return;
    }
    if uuid.starts_with("CRYPT-") {
        out.push(Backing::Unknown(format!(
            "the root is on dm-crypt without LUKS ({}), which has no TPM token",
            uuid.split('-').nth(1).unwrap_or("?")
        )));
        return;
    }
    if slaves.is_empty() {
        let name = read_text(&dir.join("uevent"), SMALL)
            .ok()
            .flatten()
            .and_then(|u| u.lines().find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_owned)))
            .unwrap_or_else(|| majmin.to_owned());
        out.push(Backing::Plain(name));
        return;
    }
    for s in slaves {
        match read_text(&host.path(&format!("/sys/class/block/{s}/dev")), SMALL) {
            Ok(Some(mm)) => backing(host, mm.trim(), depth + 1, out),
            Ok(None) => out.push(Backing::Unknown(format!("no /sys/class/block/{s}/dev"))),
            Err(e) => out.push(Backing::Unknown(e)),
        }
    }
}

fn luks_tpm(host: &Host) -> Check {
    const ID: CheckId = CheckId::LuksTpm;
    const LOOK: &str = "look at `lsblk` and `cryptsetup luksDump DEVICE` by hand";
    let (majmin, fstype, source) = match root_mount(host) {
        Ok(m) => m,
        Err(e) => return Check::unknown(ID, e, LOOK),
    };
    let majmin = if majmin.starts_with("0:") {
        // btrfs, zfs, overlay...: the device number is not a block device.
        match std::fs::metadata(host.path(&source)) {
            Ok(m) if source.starts_with("/dev/") && m.rdev() != 0 => {
                format!("{}:{}", rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()))
            }
            _ => {
                return Check::unknown(
                    ID,
                    format!("the root file system ({fstype} from {source}) is not on a block device doctor can follow"),
                    LOOK,
                )
            }
        }
    } else {
        majmin
    };
    let mut leaves = Vec::new();
    backing(host, &majmin, 0, &mut leaves);
    if let Some(Backing::Unknown(e)) = leaves.iter().find(|b| matches!(b, Backing::Unknown(_))) {
        return Check::unknown(ID, e, LOOK);
    }
    if leaves.iter().any(|b| matches!(b, Backing::Plain(_))) {
        return luks::check_luks_tpm(RootDevice::NotEncrypted, None);
    }
    if leaves.contains(&Backing::Luks1) {
        return luks::check_luks_tpm(RootDevice::Luks1, None);
    }
    let pcr7 = read_text(&host.path("/sys/class/tpm/tpm0/pcr-sha256/7"), SMALL).ok().flatten();
    let mut checks = Vec::new();
    for b in leaves {
        let Backing::Luks2(dev) = b else { continue };
        let c = match host.stdout("cryptsetup", &["luksDump", "--dump-json-metadata", &dev]) {
            Ok(dump) => luks::check_luks_tpm(RootDevice::Luks2(&dump), pcr7.as_deref()),
            Err(e) => Check::unknown(ID, e, "run doctor as root, with cryptsetup 2.4 or newer"),
        };
        checks.push((dev, c));
    }
    let labelled = checks.len() > 1;
    doctor::merge(ID, checks.into_iter().map(|(d, c)| (if labelled { d } else { String::new() }, c)).collect())
        .unwrap_or_else(|| Check::unknown(ID, "found no device below the root file system", LOOK))
}

/// The box's one zoffsite tunnel: `/etc/wireguard/zo-NAME.conf`
/// (wg-quick) or `/etc/systemd/network/zo-NAME.netdev` (networkd).
fn box_tunnel(host: &Host) -> Result<(Tunnel, Backend), String> {
    let mut found = Vec::new();
    for (dir, ext, backend) in
        [("/etc/wireguard", "conf", Backend::WgQuick), ("/etc/systemd/network", "netdev", Backend::Networkd)]
    {
        for name in list_dir(&host.path(dir))?.unwrap_or_default() {
            if let Some(i) = expect::interface_of(&name, ext) {
                found.push((i, backend, format!("{dir}/{name}")));
            }
        }
    }
    let [(interface, backend, file)] = found.as_slice() else {
        return Err(if found.is_empty() {
            "no zoffsite WireGuard configuration (/etc/wireguard/zo-NAME.conf or /etc/systemd/network/zo-NAME.netdev): was `zoffsite box apply` run?".to_owned()
        } else {
            format!(
                "{} zoffsite WireGuard configurations ({}): doctor checks a box with one",
                found.len(),
                found.iter().map(|f| f.2.as_str()).collect::<Vec<_>>().join(", ")
            )
        });
    };
    let read = |p: &str| -> Result<String, String> {
        read_text(&host.path(p), doctor::MAX_INPUT)?.ok_or_else(|| format!("{p} does not exist"))
    };
    let t = match backend {
        Backend::WgQuick => expect::parse_wg_quick(interface, &read(file)?),
        Backend::Networkd => {
            let network = file.replace(".netdev", ".network");
            expect::parse_networkd(interface, &read(file)?, &read(&network)?)
        }
    }
    .map_err(|e| format!("{file}: {e}"))?;
    Ok((t, *backend))
}

fn no_tunnel(id: CheckId, why: &str) -> Check {
    Check::unknown(id, format!("cannot tell what to expect: {why}"), "install the box's bundle (`zoffsite box apply`)")
}

fn sshd_checks(host: &Host, want: &Result<BoxExpect, String>) -> Vec<Check> {
    const IDS: [CheckId; 5] = sshd::IDS;
    let want = match want {
        Ok(w) => w,
        Err(e) => return IDS.iter().map(|id| no_tunnel(*id, e)).collect(),
    };
    let plain = match host.stdout("sshd", &["-T"]) {
        Ok(t) => t,
        Err(e) => {
            return IDS
                .iter()
                .map(|id| Check::unknown(*id, e.clone(), "run doctor as root; run `sshd -T` by hand"))
                .collect()
        }
    };
    // The source's connection, as sshd would match it (UseDNS no: the host
    // is the address).
    let t = &want.tunnel;
    let spec = format!(
        "user={},addr={},host={},laddr={},lport={}",
        want.user, t.source, t.source, t.address.addr, want.ssh_port
    );
    let matched = host.stdout("sshd", &["-T", "-C", &spec]).ok();
    let want = want.sshd();
    let mut checks = sshd::check_both(&plain, matched.as_deref(), &want);
    if let Some(c) = checks.iter_mut().find(|c| c.id() == CheckId::SshdListen) {
        *c = sshd::with_sockets(c.clone(), listening(host), &want);
    }
    checks
}

/// The listening TCP sockets, from the kernel's tables (`/proc/net/tcp`
/// and `tcp6`; see [`sockets`]); `None` when neither exists (no `/proc`,
/// or a test's root without one). A missing `tcp6` is IPv6 turned off.
fn listening(host: &Host) -> Option<Result<Vec<SocketAddr>, String>> {
    let mut found = false;
    let mut all = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match read_text(&host.path(table), doctor::MAX_INPUT) {
            Ok(None) => {}
            Ok(Some(text)) => {
                found = true;
                match sockets::parse_proc_net_tcp(&text) {
                    Ok(l) => all.extend(l),
                    Err(e) => return Some(Err(format!("{table}: {e}"))),
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
    found.then_some(Ok(all))
}

fn firewall(host: &Host, want: &Result<BoxExpect, String>) -> Check {
    let want = match want {
        Ok(w) => w,
        Err(e) => return no_tunnel(CheckId::Firewall, e),
    };
    match host.stdout("nft", &["-j", "list", "ruleset"]) {
        Ok(json) => doctor::firewall::check(&json, &want.firewall()),
        Err(e) => Check::unknown(CheckId::Firewall, e, "run doctor as root; look at `nft list ruleset`"),
    }
}

/// The WireGuard checks of `side` for `interface`.
fn wg_checks(host: &Host, side: Side, interface: &str, now: i64) -> Vec<Check> {
    let ids: &[CheckId] = match side {
        Side::Box => &[CheckId::WgKeepalive, CheckId::WgHandshake, CheckId::WgEndpoint],
        Side::Source => &[CheckId::SourceWgHandshake],
    };
    let mut texts = Vec::new();
    for what in wireguard::Show::WHAT {
        match host.run("wg", &["show", interface, what]) {
            Ok(out) if out.success() => texts.push(String::from_utf8_lossy(&out.stdout).into_owned()),
            Ok(out) if out.stderr.contains("No such device") => {
                return ids
                    .iter()
                    .map(|id| {
                        Check::fail(
                            *id,
                            format!("the WireGuard interface {interface} does not exist: the tunnel is down"),
                            format!("bring it up: `systemctl start wg-quick@{interface}` (or `networkctl up {interface}`), and look at its log"),
                        )
                    })
                    .collect()
            }
            Ok(out) => {
                let e = format!("`wg show {interface} {what}` failed: {}", first_line(&out.stderr));
                return ids.iter().map(|id| Check::unknown(*id, e.clone(), "run doctor as root; look at `wg show`")).collect();
            }
            Err(e) => {
                return ids.iter().map(|id| Check::unknown(*id, e.clone(), "install wireguard-tools")).collect();
            }
        }
    }
    let show = wireguard::Show { latest_handshakes: &texts[0], endpoints: &texts[1], persistent_keepalive: &texts[2] };
    wireguard::check(side, &show, now)
}

fn zfs_version(host: &Host, side: Side) -> Check {
    let id = match side {
        Side::Box => CheckId::ZfsVersion,
        Side::Source => CheckId::SourceZfsVersion,
    };
    match host.zfs().version_text() {
        Ok(t) => zcheck::check_version(side, &t),
        Err(e) => Check::unknown(id, e.to_string(), "install OpenZFS (zfsutils-linux, zfs-dkms)"),
    }
}

fn box_zfs(host: &Host, cfg: &BoxConfig, dropin: &DropIn, now: i64) -> Vec<Check> {
    let zfs = host.zfs();
    let root = &cfg.root;
    let pool = root.pool();
    let user = dropin.user_or_default();
    let mut out = vec![zfs_version(host, Side::Box)];
    let exists = zfs.exists(root);
    let unknown =
        |id: CheckId, e: &ZfsError| Check::unknown(id, e.to_string(), "run doctor as root; look at `zfs list`");
    out.push(match &exists {
        Err(e) => unknown(CheckId::ZfsDelegation, e),
        Ok(exists) => {
            let listed = if *exists { Some(root.clone()) } else { root.parent() };
            match listed.map(|ds| zfs.allow_listing(&ds)) {
                Some(Ok(text)) => zcheck::check_delegation(&user, root, *exists, &text),
                Some(Err(e)) => unknown(CheckId::ZfsDelegation, &e),
                None => zcheck::check_delegation(&user, root, false, ""),
            }
        }
    });
    out.push(match &exists {
        Err(e) => unknown(CheckId::ZfsLimits, e),
        Ok(false) => Check::fail(
            CheckId::ZfsLimits,
            format!("the box root {root} does not exist"),
            "run `zoffsite box apply` (or `box init`): it creates the root with both limits",
        ),
        Ok(true) => {
            match (zfs.get_value(root.as_str(), "filesystem_limit"), zfs.get_value(root.as_str(), "snapshot_limit")) {
                (Ok(f), Ok(s)) => zcheck::check_limits(root, &f, &s),
                (Err(e), _) | (_, Err(e)) => unknown(CheckId::ZfsLimits, &e),
            }
        }
    });
    out.push(match zfs.pool_health(pool) {
        Ok(h) => zcheck::check_pool_health(pool, &h),
        Err(e) => unknown(CheckId::PoolHealth, &e),
    });
    out.push(match zfs.last_scrub(pool) {
        Ok(t) => zcheck::check_pool_scrub(pool, t, now),
        Err(e) => unknown(CheckId::PoolScrub, &e),
    });
    out
}

/// `systemctl is-enabled UNIT` for each unit.
fn enabled(host: &Host, side: Side, units: &[String]) -> Check {
    let mut states = Vec::new();
    for u in units {
        match host.run("systemctl", &["is-enabled", u]) {
            // Non-zero for anything but enabled; stdout says what.
            Ok(out) => {
                let s = String::from_utf8_lossy(&out.stdout).into_owned();
                states.push((u.clone(), (!s.is_empty()).then_some(s)));
            }
            Err(e) => {
                let id = if side == Side::Box { CheckId::Timers } else { CheckId::SourceTimers };
                return Check::unknown(id, e, "look at `systemctl list-unit-files 'zoffsite*'`");
            }
        }
    }
    timers::check(side, &states)
}

// ---------------------------------------------------------------------------
// The source

/// Every source check, in [`CheckId::ALL`]'s order, at `now` (Unix
/// seconds). The boxes are reached through ssh from PATH, as `backup` does.
pub fn source_report(host: &Host, cfg: &Config, config_path: &Path, now: i64) -> Report {
    let zfs = host.zfs();
    let mut r = Report::new();
    // The tunnel of each target `box new` made (its interface is zo-NAME).
    let mut wg = Vec::new();
    let mut units_wanted = Vec::new();
    for t in &cfg.targets {
        let Ok(name) = BoxName::new(&t.name) else {
            wg.push((
                t.name.clone(),
                Check::unknown(
                    CheckId::SourceWgHandshake,
                    "this target was not made by `zoffsite box new` (its name is not a box name)",
                    "check its tunnel by hand (`wg show`)",
                ),
            ));
            continue;
        };
        let interface = name.interface();
        let backend = if host.path(&format!("/etc/wireguard/{interface}.conf")).exists() {
            Some(Backend::WgQuick)
        } else if host.path(&format!("/etc/systemd/network/{interface}.netdev")).exists() {
            Some(Backend::Networkd)
        } else {
            None
        };
        if let Some(b) = backend {
            units_wanted.push(units::firewall_unit_name(Some(&name)));
            units_wanted.push(b.unit(&interface));
        }
        let c = wg_checks(host, Side::Source, &interface, now).into_iter().next();
        wg.push((t.name.clone(), c.unwrap_or_else(|| no_tunnel(CheckId::SourceWgHandshake, "no check"))));
    }
    r.push(doctor::merge(CheckId::SourceWgHandshake, wg).unwrap_or_else(|| {
        Check::unknown(CheckId::SourceWgHandshake, "no target configured", "add one with `zoffsite box new`")
    }));

    // Reach each box (its pinned host key) and list what it holds.
    let listed = crate::selection::list(cfg, &zfs, config_path);
    let sel = listed.as_ref().ok().map(|(s, _)| s);
    let datasets = sel.map(zoffsite_core::plan::Selection::datasets).unwrap_or_default();
    let local = zfs.list_snapshots_and_bookmarks(&datasets);
    let mut reached = Vec::new();
    let mut last = Vec::new();
    let mut postures = Vec::new();
    for t in &cfg.targets {
        // The box's own audit, in the same session (its last request).
        let listing = Session::connect(t).and_then(|mut s| {
            let l = s.list(&datasets)?;
            let audit = s.audit().unwrap_or_else(|e| Fetched::Unreachable(e.to_string()));
            Ok((l, audit))
        });
        match listing {
            Ok((remote, audit)) => {
                postures.push((String::new(), Posture::judge(&audit, now).check(&t.name)));
                reached.push((t.name.clone(), Ok(())));
                let max_age = i64::try_from(t.max_age.as_secs()).unwrap_or(i64::MAX);
                let c = match &local {
                    Ok(l) => {
                        // As `status` judges it: a run that found nothing
                        // to send confirmed the box's newest.
                        let confirmed =
                            crate::replicate::confirmations(&zfs, &t.name, &datasets, &l.snapshots, &remote)
                                .unwrap_or_default();
                        let st: Vec<_> = datasets
                            .iter()
                            .map(|d| {
                                zoffsite_core::status::evaluate(
                                    d,
                                    &l.snapshots,
                                    &l.bookmarks,
                                    remote.get(d),
                                    &confirmed,
                                    now,
                                    max_age,
                                )
                            })
                            .collect();
                        source::check_last_run(&[(t.name.clone(), st)])
                    }
                    Err(e) => Check::unknown(CheckId::SourceLastRun, e.to_string(), "look at `zoffsite status`"),
                };
                last.push((String::new(), c));
            }
            Err(e) => {
                postures
                    .push((String::new(), Posture::judge(&Fetched::Unreachable(e.to_string()), now).check(&t.name)));
                reached.push((t.name.clone(), Err(e.to_string())));
                last.push((
                    t.name.clone(),
                    Check::unknown(
                        CheckId::SourceLastRun,
                        "cannot list what the box holds (see source.box-ssh)",
                        "look at `zoffsite status`",
                    ),
                ));
            }
        }
    }
    r.push(source::check_box_ssh(&reached));
    if let Some(c) = doctor::merge(CheckId::SourceBoxPosture, postures) {
        r.push(c);
    }
    match &listed {
        Ok((sel, _missing)) => {
            r.push(source::check_encryption(sel));
            r.push(key_files(host, &zfs, &datasets));
        }
        Err(e) => {
            for id in [CheckId::SourceEncryption, CheckId::SourceKeyFiles] {
                r.push(Check::unknown(id, format!("cannot list the configured datasets: {e}"), "look at `zfs list`"));
            }
        }
    }
    r.push(doctor::merge(CheckId::SourceLastRun, last).unwrap_or_else(|| source::check_last_run(&[])));
    r.push(zfs_version(host, Side::Source));
    units_wanted.extend([units::BACKUP_TIMER, units::DRILL_TIMER].map(str::to_owned));
    r.push(enabled(host, Side::Source, &units_wanted));
    r
}

/// Each selected dataset's encryption root, its `keylocation`, and its
/// key file's owner and mode (never its content).
fn key_files(host: &Host, zfs: &Zfs, datasets: &[Dataset]) -> Check {
    const ID: CheckId = CheckId::SourceKeyFiles;
    let names: Vec<String> = datasets.iter().map(ToString::to_string).collect();
    if names.is_empty() {
        return source::check_key_files(&[]);
    }
    let roots = match zfs.values(&names, "encryptionroot") {
        Ok(v) => {
            let mut r: Vec<String> =
                v.into_iter().map(|(_, root)| root).filter(|r| r != "-" && !r.is_empty()).collect();
            r.sort();
            r.dedup();
            r
        }
        Err(e) => return Check::unknown(ID, e.to_string(), "look at `zfs get encryptionroot`"),
    };
    let locations = match zfs.values(&roots, "keylocation") {
        Ok(v) => v,
        Err(e) => return Check::unknown(ID, e.to_string(), "look at `zfs get keylocation`"),
    };
    let mut keys = Vec::new();
    for (root, loc) in locations {
        let Ok(encryption_root) = Dataset::new(root.as_str()) else {
            return Check::unknown(
                ID,
                format!("zfs named an encryption root {root:?}"),
                "look at `zfs get keylocation`",
            );
        };
        let file = loc.strip_prefix("file://").filter(|p| p.starts_with('/')).and_then(|p| {
            std::fs::symlink_metadata(host.path(p)).ok().map(|m| FileFacts {
                is_symlink: m.file_type().is_symlink(),
                is_dir: m.is_dir(),
                uid: m.uid(),
                mode: m.mode(),
                content: None,
            })
        });
        keys.push(source::Key { encryption_root, keylocation: loc, file });
    }
    source::check_key_files(&keys)
}

// ---------------------------------------------------------------------------
// The report file

/// Writes `json` to `path` for `serve` to hand to the source: atomically,
/// mode 0644 whatever the umask, in a directory that must be this user's
/// and writable by nobody else (made 0755 when missing), never through a
/// symlink.
pub fn write_report(path: &Path, json: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(format!("{} is not a file path", path.display()));
    };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let fd = match crate::private::open_dir(dir) {
        Ok(Some(fd)) => fd,
        Ok(None) => return Err(format!("{} does not exist", dir.display())),
        Err(crate::private::Error::Untrusted(f)) => return Err(format!("{} is {f}", dir.display())),
        Err(crate::private::Error::Io(e)) => return Err(format!("cannot open {}: {e}", dir.display())),
    };
    match crate::private::check(&fd, rustix::fs::FileType::Directory, crate::private::Rule::NotWritableByOthers) {
        Ok(()) => {}
        Err(crate::private::Error::Untrusted(f)) => {
            return Err(format!("{} is {f}: refusing to write the report there", dir.display()))
        }
        Err(crate::private::Error::Io(e)) => return Err(format!("cannot inspect {}: {e}", dir.display())),
    }
    crate::private::replace_exact(&fd, name, json, 0o644, None)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
