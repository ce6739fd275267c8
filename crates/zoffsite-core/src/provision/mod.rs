//! Provisioning: the text of every file `zoffsite box new` makes for the
//! source and for the box, as pure functions of validated [`Inputs`].
//!
//! Each renderer returns one file's text; [`source_files`] and
//! [`box_files`] list them with where they go and their mode. Nothing here
//! reads, writes or runs anything: `box new` gathers the inputs (and makes
//! the keys), `box apply` installs the files.
//!
//! # Invariants
//!
//! - **No private key in any rendered file.** No renderer takes a private
//!   key at all: each file that needs one names the file that holds it,
//!   and that key file is the only place the secret is written (by `box
//!   new`, apart from the rendered files: 0600, or 0640
//!   root:systemd-network for networkd, [`Backend::key_file`]). wg-quick sets its key
//!   after making the interface (`PostUp = wg set %i private-key FILE`),
//!   systemd-networkd reads `PrivateKeyFile=`, sshd reads `HostKey`. So
//!   every rendered file can be shown by `-n`, diffed, logged and
//!   snapshot-tested, and none needs to be secret. (A typed secret would
//!   also have worked for wg-quick's `PrivateKey =`, but would have made
//!   that one file a second copy of the key, and networkd cannot take a key
//!   inline without the same problem.)
//! - **Every interpolated value comes from a validated type**
//!   ([`values`]): its characters need no quoting in any of the formats
//!   here, so no input can add a line, a section, a rule or a shell
//!   command to a file. Fixed text is constants in the renderers.
//!
//! # Decisions
//!
//! - **wg-quick is the default WireGuard backend** ([`Backend`]), with
//!   systemd-networkd (`.netdev` + `.network`) as the alternative:
//!   wg-quick comes with wireguard-tools, which both ends need anyway
//!   (`wg` for the keepalive and for `doctor`), and works whatever manages
//!   the rest of the network (ifupdown, NetworkManager, networkd), while
//!   networkd must first be enabled on distributions that do not use it
//!   (Debian's default). A machine already on networkd picks it.
//! - **sshd on the box binds the tunnel address whether or not the tunnel
//!   is up**, by `net.ipv4.ip_nonlocal_bind = 1` ([`sshd::sysctl_conf`]),
//!   not by ordering sshd after the tunnel: sshd exits on a failed bind
//!   (status 255, which Debian's unit does not restart), and the tunnel
//!   can be late (the source's name not resolvable yet at boot) or
//!   restarted later; ordering would make the box unreachable until
//!   someone reboots it. The unit's name also differs between
//!   distributions (`ssh.service`, `sshd.service`); the sysctl does not.
//!   Packets reach the address only when the interface holds it, so
//!   nothing is exposed while the tunnel is down.
//! - **Ports, not hosts, in the box's outbound rules** (DNS, NTP, the
//!   distribution's mirror): nftables matches addresses, and the mirrors'
//!   and servers' addresses move under their names.
//! - **The box's private keys are made on the source** (by `box new`):
//!   the source is the trusted machine, and it pins the box's SSH host key
//!   and WireGuard key from the start, with no trust on first use; the box
//!   only installs a finished bundle (as an image build can). The cost,
//!   that the source once held the box's keys, buys an attacker of the
//!   source nothing: whoever holds the source already holds the data and
//!   its keys, and can send the box anything. The source's own private
//!   keys never go into the box's bundle: no renderer here can even see
//!   them.

pub mod apply;
pub mod boxtoml;
pub mod bundle;
pub mod keepalive;
pub mod nft;
pub mod sshd;
pub mod target;
pub mod units;
pub mod values;
pub mod wait;
pub mod wireguard;

use crate::boxinit::{PublicKey, UserName};
use values::{AbsPath, BoxName, BoxRoot, Endpoint, HostKey, Keepalive, Port, Schedule, Tunnel, WgKey};

/// Where `box new` assumes zoffsite is installed, on both machines (as the
/// README installs it).
pub const DEFAULT_EXE: &str = "/usr/local/bin/zoffsite";

/// Where the Debian package and the Arch PKGBUILD install zoffsite: the
/// units they ship ([`units::packaged`]) run it there, and a box that has
/// the package is made with `box new --box-exe /usr/bin/zoffsite`.
pub const PACKAGE_EXE: &str = "/usr/bin/zoffsite";

/// The box's WireGuard port: fixed (not random), so the box's firewall
/// can name it.
pub const DEFAULT_BOX_WG_PORT: u16 = 51820;

/// Where the box's sshd finds its host key (the one `box new` made and the
/// source pins): beside the distribution's, which sshd then no longer
/// offers (a `HostKey` line replaces the defaults).
pub const DEFAULT_HOST_KEY_FILE: &str = "/etc/ssh/ssh_host_zoffsite_ed25519_key";

/// How a machine brings up its WireGuard interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// `/etc/wireguard/IF.conf` and `wg-quick@IF.service`.
    #[default]
    WgQuick,
    /// `/etc/systemd/network/IF.netdev` and `IF.network`.
    Networkd,
}

impl Backend {
    /// The file holding this end's WireGuard private key. networkd reads
    /// it as the user systemd-network, and `/etc/wireguard` is 0700 root:
    /// its key lives beside its files (0640 root:systemd-network).
    pub fn key_file(self, interface: &str) -> String {
        match self {
            Backend::WgQuick => format!("{WG_DIR}/{interface}.key"),
            Backend::Networkd => format!("/etc/systemd/network/{interface}.key"),
        }
    }

    /// The unit that brings the interface up (and that `box apply` enables).
    pub fn unit(self, interface: &str) -> String {
        match self {
            Backend::WgQuick => format!("wg-quick@{interface}.service"),
            Backend::Networkd => "systemd-networkd.service".to_owned(),
        }
    }
}

/// The public halves of the four key pairs of one box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub source_wg: WgKey,
    pub box_wg: WgKey,
    /// The box's SSH host key, pinned in the source's known_hosts.
    pub box_host: HostKey,
    /// The source's SSH key for this box (authorized_keys on the box).
    pub source_ssh: PublicKey,
}

/// Everything `zoffsite box new NAME --endpoint HOST:PORT [--tunnel NET]
/// [--root DATASET] ...` decides, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub name: BoxName,
    /// The source's WireGuard server, as the box dials it.
    pub endpoint: Endpoint,
    pub tunnel: Tunnel,
    pub root: BoxRoot,
    /// The box user that runs `serve` (the only one sshd lets in).
    pub user: UserName,
    pub keys: Keys,
    pub keepalive: Keepalive,
    /// The box's WireGuard `ListenPort`.
    pub box_wg_port: Port,
    /// The box's sshd port, inside the tunnel.
    pub ssh_port: Port,
    pub source_backend: Backend,
    pub box_backend: Backend,
    /// zoffsite on the source.
    pub source_exe: AbsPath,
    /// zoffsite on the box (what the forced command and the box's units run).
    pub box_exe: AbsPath,
    /// The source's configuration file.
    pub source_config: AbsPath,
    /// The box's configuration file.
    pub box_config: AbsPath,
    /// The box sshd's host key file.
    pub host_key_file: AbsPath,
    /// When `zoffsite backup` runs (`OnCalendar=`).
    pub backup_schedule: Schedule,
    /// Where `backup` writes besides its runtime directory: the mountpoints
    /// of the source's configured datasets, where it keeps each root's
    /// properties manifest (`.zoffsite/properties.json`). `box new` reads
    /// them from ZFS; a dataset added later needs its mountpoint here too.
    pub backup_write_paths: Vec<AbsPath>,
}

fn path(s: &str) -> AbsPath {
    AbsPath::new(s).unwrap_or_else(|e| unreachable!("a constant path is valid: {e}"))
}

impl Inputs {
    /// The inputs with every default: tunnel [`Tunnel::DEFAULT`], user
    /// [`crate::boxinit::DEFAULT_USER`], keepalive 25 s, WireGuard's usual
    /// port on the box, ssh on 22, wg-quick on both ends, zoffsite in
    /// [`DEFAULT_EXE`], the configs at their default paths, a daily backup.
    pub fn new(name: BoxName, endpoint: Endpoint, root: BoxRoot, keys: Keys) -> Inputs {
        let port = |n| Port::new(n).unwrap_or_else(|e| unreachable!("a constant port is valid: {e}"));
        Inputs {
            name,
            endpoint,
            tunnel: Tunnel::default(),
            root,
            user: UserName::new(crate::boxinit::DEFAULT_USER)
                .unwrap_or_else(|e| unreachable!("the default user is valid: {e}")),
            keys,
            keepalive: Keepalive::DEFAULT,
            box_wg_port: port(DEFAULT_BOX_WG_PORT),
            ssh_port: port(22),
            source_backend: Backend::default(),
            box_backend: Backend::default(),
            source_exe: path(DEFAULT_EXE),
            box_exe: path(DEFAULT_EXE),
            source_config: path(crate::config::DEFAULT_PATH),
            box_config: path(crate::boxside::DEFAULT_PATH),
            host_key_file: path(DEFAULT_HOST_KEY_FILE),
            backup_schedule: Schedule::new("daily").unwrap_or_else(|e| unreachable!("a constant schedule: {e}")),
            backup_write_paths: Vec::new(),
        }
    }

    /// The WireGuard interface on both ends.
    pub fn interface(&self) -> String {
        self.name.interface()
    }
}

/// One generated file: where it goes, its mode, its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub mode: u32,
    pub text: String,
}

/// wireguard-tools' directory (0700: it holds wg-quick's keys).
pub const WG_DIR: &str = "/etc/wireguard";
/// Where the generated units (and wg-quick's drop-in) go.
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// Where systemd-networkd's `.netdev` and `.network` go.
pub const NETWORK_DIR: &str = "/etc/systemd/network";

/// wg-quick's configuration of `interface`.
pub fn wg_quick_path(interface: &str) -> String {
    format!("{WG_DIR}/{interface}.conf")
}

/// systemd-networkd's `.netdev` of `interface` (the WireGuard device,
/// its key file and peer).
pub fn netdev_path(interface: &str) -> String {
    format!("{NETWORK_DIR}/{interface}.netdev")
}

/// systemd-networkd's `.network` of `interface` (its address).
pub fn network_path(interface: &str) -> String {
    format!("{NETWORK_DIR}/{interface}.network")
}

/// The drop-in zoffsite adds to `wg-quick@interface.service`.
pub fn wg_quick_dropin_path(interface: &str) -> String {
    format!("{UNIT_DIR}/wg-quick@{interface}.service.d/zoffsite.conf")
}

/// Where a generated unit goes.
pub fn unit_path(unit: &str) -> String {
    format!("{UNIT_DIR}/{unit}")
}

/// Every path a bundle for box `name` may install, for either side and
/// either backend: exactly what [`source_files`], [`box_files`] and the
/// bundles' key files can name, and nothing else (`box apply` runs as
/// root; see [`bundle::parse`]). Secrets (private keys) first.
pub fn allowed_paths(name: &BoxName) -> (Vec<String>, Vec<String>) {
    let interface = name.interface();
    let secrets = vec![
        Backend::WgQuick.key_file(&interface),
        Backend::Networkd.key_file(&interface),
        DEFAULT_HOST_KEY_FILE.to_owned(),
    ];
    let mut files = vec![
        wg_quick_path(&interface),
        netdev_path(&interface),
        network_path(&interface),
        wg_quick_dropin_path(&interface),
        nft::BOX_PATH.to_owned(),
        nft::source_path(name),
        sshd::DROPIN_PATH.to_owned(),
        sshd::SYSCTL_PATH.to_owned(),
        crate::boxside::DEFAULT_PATH.to_owned(),
        unit_path(&units::firewall_unit_name(None)),
        unit_path(&units::firewall_unit_name(Some(name))),
    ];
    files.extend(units::ALL.iter().map(|u| unit_path(u)));
    (secrets, files)
}

fn file(path: String, mode: u32, text: String) -> File {
    File { path, mode, text }
}

fn wireguard_files(backend: Backend, interface: &str, conf: String, pair: (String, String)) -> Vec<File> {
    match backend {
        // wg-quick warns about a configuration others can read, though
        // this one holds no secret.
        Backend::WgQuick => vec![file(wg_quick_path(interface), 0o600, conf)],
        Backend::Networkd => {
            vec![file(netdev_path(interface), 0o644, pair.0), file(network_path(interface), 0o644, pair.1)]
        }
    }
}

/// The files for the source, for this box.
pub fn source_files(i: &Inputs) -> Vec<File> {
    let interface = i.interface();
    let mut files = wireguard_files(
        i.source_backend,
        &interface,
        wireguard::source_wg_quick(i),
        (wireguard::source_netdev(i), wireguard::source_network(i)),
    );
    if i.source_backend == Backend::WgQuick {
        files.push(file(wg_quick_dropin_path(&interface), 0o644, wireguard::source_wg_quick_dropin()));
    }
    let nft_path = nft::source_path(&i.name);
    let firewall_unit = units::firewall_unit_name(Some(&i.name));
    files.push(file(nft_path.clone(), 0o644, nft::source_table(i)));
    files.push(file(
        unit_path(&firewall_unit),
        0o644,
        units::firewall_service(&nft_path, &i.name.nft_table(), &format!("the tunnel to box {}", i.name)),
    ));
    for (name, text) in [
        (units::BACKUP, units::backup_service(i)),
        (units::BACKUP_TIMER, units::backup_timer(i)),
        (units::DRILL, units::drill_service(i)),
        (units::DRILL_TIMER, units::drill_timer()),
    ] {
        files.push(file(unit_path(name), 0o644, text));
    }
    files
}

/// The files for the box (its bundle).
pub fn box_files(i: &Inputs) -> Vec<File> {
    let interface = i.interface();
    let mut files = wireguard_files(
        i.box_backend,
        &interface,
        wireguard::box_wg_quick(i),
        (wireguard::box_netdev(i), wireguard::box_network(i)),
    );
    if i.box_backend == Backend::WgQuick {
        files.push(file(wg_quick_dropin_path(&interface), 0o644, wireguard::box_wg_quick_dropin()));
    }
    files.push(file(nft::BOX_PATH.to_owned(), 0o644, nft::box_ruleset(i)));
    files.push(file(
        unit_path(&units::firewall_unit_name(None)),
        0o644,
        units::firewall_service(nft::BOX_PATH, nft::BOX_TABLE, "the box"),
    ));
    files.push(file(sshd::DROPIN_PATH.to_owned(), 0o644, sshd::dropin(i)));
    files.push(file(sshd::SYSCTL_PATH.to_owned(), 0o644, sshd::sysctl_conf()));
    files.push(file(i.box_config.to_string(), 0o644, boxtoml::render(i)));
    for (name, text) in [
        (units::BOX_PRUNE, units::box_prune_service(i)),
        (units::BOX_PRUNE_TIMER, units::box_prune_timer()),
        (units::BOX_CHECK, units::box_check_service(i)),
        (units::BOX_CHECK_TIMER, units::box_check_timer()),
        (units::KEEPALIVE, units::keepalive_service(i)),
        (units::KEEPALIVE_TIMER, units::keepalive_timer()),
        (units::BOX_DOCTOR, units::box_doctor_service(i)),
        (units::BOX_DOCTOR_TIMER, units::box_doctor_timer()),
    ] {
        files.push(file(unit_path(name), 0o644, text));
    }
    files
}

#[cfg(test)]
pub(crate) mod tests;
