//! `zoffsite box image`: the text of every file of the mkosi build tree that
//! makes a box's installer stick, as pure functions of validated [`Inputs`].
//!
//! The stick boots a Debian 12 system (the backports kernel and OpenZFS,
//! systemd 254) from a unified kernel image signed with the owner's Secure
//! Boot db key. Its first boot, on firmware in setup mode, enrolls the
//! owner's PK, KEK and db (systemd-boot's `secure-boot-enroll force`, from
//! `/loader/keys/auto` on the stick's ESP) and resets; the next one, now
//! with Secure Boot enforcing, runs `zoffsite box install`
//! ([`INSTALL_UNIT`]), which copies the stick's own root onto the box's
//! blank system disk, encrypted and bound to the TPM, makes the pool on
//! the data disk, installs the bundle into the new root and powers off.
//! The installed system's first boot imports the pool and runs `box apply`
//! live ([`FIRSTBOOT_UNIT`]).
//!
//! # Invariants
//!
//! - **No secret in any rendered file.** The bundle (with the box's private
//!   keys) and the binary are copied into the tree by the shell, and the
//!   db key is only read by the finalize script, from the build sources,
//!   to sign the OpenZFS modules: it is never copied into the image. The
//!   PK and KEK private keys are used only to make the enrollment files
//!   (`*.auth`, public) and never reach the build at all.
//! - **Every interpolated value is validated** ([`Inputs::new`]): names and
//!   paths whose characters need no quoting in a unit, mkosi's INI or a
//!   shell word.
//! - **The stick runs none of the box's services.** The bundle is applied
//!   to the installed root by the installer, not to the stick's: a stick
//!   that booted would otherwise dial the source with the box's key and
//!   answer `box wait` in the box's place.
//! - **The stick's root is mounted read-only** (`ro` on the command line):
//!   the installer copies it block for block, which is only consistent if
//!   nothing writes to it meanwhile. The installed system's `/etc/fstab`
//!   remounts its root read-write ([`FSTAB`]).
//! - **The box mounts nothing from the pool** (invariant 2): `zfs-mount`
//!   and `zfs-share` are masked in the image, on top of the pool's
//!   `mountpoint=none`.

use std::fmt::Write as _;

use crate::names::Dataset;
use crate::provision::values::{AbsPath, BoxName};

/// The Debian release the image is built from.
pub const RELEASE: &str = "bookworm";

pub use super::STICK_BUNDLE;

/// Where the stick's ESP is mounted: systemd's gpt-auto-generator mounts
/// the ESP the system booted from on `/boot` when that directory is empty
/// in the root, as mkosi leaves it (an automount: the first access mounts
/// it).
pub const ESP_MOUNT: &str = "/boot";

/// The directory on the stick's ESP that gets the installer's report: FAT,
/// so the owner can read it on any computer.
pub const REPORT_DIR: &str = "/boot/zoffsite";

/// The stick's installer unit.
pub const INSTALL_UNIT: &str = "zoffsite-install.service";

/// The installed system's first-boot unit.
pub const FIRSTBOOT_UNIT: &str = "zoffsite-firstboot.service";

/// The stamp the first-boot unit leaves when it has finished: its
/// condition, so it runs again after a failure and never after a success.
pub const FIRSTBOOT_DONE: &str = "/var/lib/zoffsite-firstboot/done";

/// The base network of the box: DHCP on every Ethernet port (the box's
/// only configuration need is "power and Ethernet").
pub const NETWORK_FILE: &str = "/etc/systemd/network/89-zoffsite-ethernet.network";

/// Units masked in the image: OpenZFS's mount and share (the box mounts
/// and shares nothing), and systemd-boot's updater (it would replace the
/// boot loader your db key signed with the package's unsigned one, and
/// the box would no longer boot).
pub const MASKED: [&str; 3] = ["zfs-mount.service", "zfs-share.service", "systemd-boot-update.service"];

/// Debian's sshd unit: off on the stick (the presets), enabled by the
/// installer on the box.
pub const SSH_UNIT: &str = "ssh.service";

/// The image's presets: mkosi (and systemd's first boot) enable every unit
/// a preset does not disable, which would start the first-boot unit and
/// sshd on the stick. An explicit `systemctl enable` ignores presets, and
/// systemd's first boot only enables by them, never disables: the
/// installer's enables on the box stay.
pub const PRESET_FILE: &str = "/usr/lib/systemd/system-preset/10-zoffsite.preset";

/// The public half of the db key, in the image: the key whose signature
/// of PCR 11 (in each kernel image) the root's TPM policy requires
/// ([`super::install::TPM2_SIGNED_PCRS`]).
pub const PCR_PUBLIC_KEY: &str = "/usr/lib/zoffsite/tpm2-pcr-public-key.pem";

/// Units enabled in the image (on the stick and, copied, on the box).
pub const ENABLED: [&str; 3] = ["systemd-networkd.service", "systemd-resolved.service", INSTALL_UNIT];

/// Paths inside the build directory (`mkosi -C DIR`).
pub mod tree {
    pub const CONF: &str = "mkosi.conf";
    pub const SOURCES: &str = "mkosi.pkgmngr/etc/apt/sources.list.d/mkosi.sources";
    pub const PREFERENCES: &str = "mkosi.pkgmngr/etc/apt/preferences.d/zoffsite";
    pub const EXTRA: &str = "mkosi.extra";
    pub const FINALIZE: &str = "mkosi.finalize";
    /// Included into mkosi's default initrd's configuration
    /// ([`super::initrd_conf`]).
    pub const INITRD: &str = "mkosi.initrd";
    pub const INITRD_CONF: &str = "mkosi.initrd/mkosi.conf";
    /// The stand-in package for the initrd (built by the shell with
    /// `dpkg-deb` from [`super::stub_control`]).
    pub const STUB: &str = "mkosi.initrd-packages";
    pub const CACHE: &str = "mkosi.cache";
    /// mkosi's workspace (the staged root, with the bundle): in the 0700
    /// build tree, not /var/tmp.
    pub const WORKSPACE: &str = "mkosi.workspace";

    pub const OUTPUT: &str = "mkosi.output";
    /// Where the owner's key directory appears in the finalize script's
    /// build sources (`$SRCDIR/secureboot`), mounted, never copied.
    pub const KEYS: &str = "secureboot";
    /// The enrollment files, in the extra tree (so on the stick's ESP).
    pub const AUTH_DIR: &str = "mkosi.extra/efi/loader/keys/auto";
}

/// The directory put first on mkosi's `PATH`, for the ukify wrapper
/// ([`ukify_wrapper`]). Under /usr: mkosi runs its tools in a sandbox
/// that sees the host's /usr and not much else (its `ExtraSearchPaths=`
/// makes the directory a tools tree, which this is not).
pub const TOOLS_DIR: &str = "/usr/local/lib/zoffsite/mkosi-bin";

/// One thing the build needs on the source, found by any of `paths` (a
/// program or a shared library, where the tool that uses it looks), and
/// the Debian package that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostNeed {
    pub what: &'static str,
    pub paths: &'static [&'static str],
    pub package: &'static str,
}

/// What `box image` needs on the source, checked before anything is made:
/// a build fails 10 to 25 minutes in without some of them, and the TPM
/// libraries in particular nothing depends on (systemd-measure dlopens
/// them to sign the PCR 11 policy and says only "TPM2 support not
/// installed"). The packages are Debian 12's, with `systemd`, `mkosi` and
/// `systemd-boot-efi` from bookworm-backports (systemd 254, mkosi 24).
pub const HOST_NEEDS: &[HostNeed] = &[
    HostNeed { what: "mkosi", paths: &["/usr/bin/mkosi"], package: "mkosi (bookworm-backports)" },
    HostNeed {
        what: "ukify and systemd-measure (systemd 254)",
        paths: &["/usr/lib/systemd/ukify"],
        package: "systemd (bookworm-backports)",
    },
    HostNeed {
        what: "systemd-boot and its kernel stub",
        paths: &["/usr/lib/systemd/boot/efi/linuxx64.efi.stub"],
        package: "systemd-boot-efi (bookworm-backports)",
    },
    HostNeed { what: "sbsign", paths: &["/usr/bin/sbsign"], package: "sbsigntool" },
    HostNeed {
        what: "pefile for ukify",
        paths: &["/usr/lib/python3/dist-packages/pefile.py"],
        package: "python3-pefile",
    },
    HostNeed { what: "bwrap, mkosi's sandbox", paths: &["/usr/bin/bwrap"], package: "bubblewrap" },
    HostNeed { what: "mkfs.vfat", paths: &["/usr/sbin/mkfs.vfat", "/sbin/mkfs.vfat"], package: "dosfstools" },
    HostNeed { what: "mcopy", paths: &["/usr/bin/mcopy"], package: "mtools" },
    HostNeed { what: "reprepro", paths: &["/usr/bin/reprepro"], package: "reprepro" },
    HostNeed {
        what: "the TPM library libtss2-esys",
        paths: &["/usr/lib/x86_64-linux-gnu/libtss2-esys.so.0", "/lib/x86_64-linux-gnu/libtss2-esys.so.0"],
        package: "libtss2-esys-3.0.2-0",
    },
    HostNeed {
        what: "the TPM library libtss2-mu",
        paths: &["/usr/lib/x86_64-linux-gnu/libtss2-mu.so.0", "/lib/x86_64-linux-gnu/libtss2-mu.so.0"],
        package: "libtss2-mu0",
    },
    HostNeed {
        what: "the TPM library libtss2-rc",
        paths: &["/usr/lib/x86_64-linux-gnu/libtss2-rc.so.0", "/lib/x86_64-linux-gnu/libtss2-rc.so.0"],
        package: "libtss2-rc0",
    },
];

/// The refusal for what is missing (`None`: nothing is): each thing with
/// its package, and one command that installs them all.
pub fn host_refusal(missing: &[&HostNeed]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let things: Vec<String> = missing.iter().map(|n| format!("{} ({})", n.what, n.package)).collect();
    let (bpo, plain): (Vec<&&HostNeed>, Vec<&&HostNeed>) =
        missing.iter().partition(|n| n.package.ends_with(" (bookworm-backports)"));
    let name = |n: &&&HostNeed| n.package.trim_end_matches(" (bookworm-backports)").to_owned();
    let mut fix = Vec::new();
    if !bpo.is_empty() {
        fix.push(format!("apt install -t bookworm-backports {}", bpo.iter().map(name).collect::<Vec<_>>().join(" ")));
    }
    if !plain.is_empty() {
        fix.push(format!("apt install {}", plain.iter().map(name).collect::<Vec<_>>().join(" ")));
    }
    Some(format!(
        "this machine lacks what the build needs: {}; install it ({}; docs/box.md, \"The image\")",
        things.join(", "),
        fix.join(" && ")
    ))
}

/// The db key and certificate's names under [`tree::KEYS`] (and in the
/// owner's key directory).
pub const DB_KEY: &str = "db.key";
pub const DB_CRT: &str = "db.crt";

/// What the image is made from, each value validated for where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub name: BoxName,
    /// Where the zoffsite binary is installed in the image: the bundle's
    /// `[init].exe`, which its units run.
    pub exe: AbsPath,
    /// The pool `box install` makes on the data disk (the bundle's root
    /// dataset's pool).
    pub pool: String,
    /// The owner's Secure Boot key directory on the source (holds
    /// [`DB_KEY`] and [`DB_CRT`]): mkosi signs with it and the finalize
    /// script reads it in place.
    pub keys: AbsPath,
    /// The build tree (`mkosi -C`), named by absolute path where mkosi
    /// needs one.
    pub work: AbsPath,
    /// Kernel messages and the console on the first serial port as well
    /// as the screen; the screen stays `/dev/console` (the disk's recovery
    /// prompt must show on a box with no serial port) unless this is set,
    /// when the serial port is (for tests under QEMU).
    pub serial_console: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error(
        "the pool name {0:?} has a space: the image's units name the pool as one word; \
         make the box with a root dataset whose pool has no space (`box new --root`)"
    )]
    PoolSpace(String),
    #[error("the zoffsite path {0:?} has a space or a character that a unit would need quoted: install zoffsite elsewhere (`box new --box-exe`)")]
    ExePath(String),
    #[error("the Secure Boot key directory {0:?} has a space or a character mkosi's configuration would need quoted: use --keys DIR elsewhere")]
    KeysPath(String),
    #[error("the build directory {0:?} has a space or a character mkosi's configuration would need quoted: use --work DIR elsewhere")]
    WorkPath(String),
}

impl Inputs {
    pub fn new(
        name: BoxName,
        exe: AbsPath,
        root: &Dataset,
        keys: AbsPath,
        work: AbsPath,
        serial_console: bool,
    ) -> Result<Self, InputError> {
        let pool = root.pool().to_owned();
        if pool.contains(' ') {
            return Err(InputError::PoolSpace(pool));
        }
        if !plain(&exe) {
            return Err(InputError::ExePath(exe.as_str().to_owned()));
        }
        if !plain(&keys) {
            return Err(InputError::KeysPath(keys.as_str().to_owned()));
        }
        if !plain(&work) {
            return Err(InputError::WorkPath(work.as_str().to_owned()));
        }
        Ok(Self { name, exe, pool, keys, work, serial_console })
    }
}

/// A path whose characters need no quoting in a unit, mkosi's INI or a
/// shell word.
fn plain(p: &AbsPath) -> bool {
    p.as_str().chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.'))
}

/// A rendered file of the build tree: its path relative to the build
/// directory, its mode, its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub path: String,
    pub mode: u32,
    pub text: String,
}

/// The packages of the image. The kernel, its headers (dkms builds
/// OpenZFS against them while the image is built, so the module matches
/// the kernel exactly) and OpenZFS come from bookworm-backports
/// ([`apt_preferences`]).
pub const PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "linux-headers-amd64",
    "systemd",
    "systemd-sysv",
    "systemd-boot",
    "systemd-resolved",
    // The box's clock ages its retention and its alarms: NTP.
    "systemd-timesyncd",
    "udev",
    "dbus",
    "zfs-dkms",
    "zfsutils-linux",
    "openssh-server",
    "wireguard-tools",
    "nftables",
    "iproute2",
    "cryptsetup",
    "libtss2-esys-3.0.2-0",
    "libtss2-rc0",
    "libtss2-mu0",
    "libtss2-tcti-device0",
    "tpm2-tools",
    "kmod",
    "e2fsprogs",
    "dosfstools",
    "util-linux",
];

/// The kernel command line, in the signed UKI (so the same on the stick
/// and on the box, and not editable at boot under Secure Boot).
pub fn kernel_cmdline(i: &Inputs) -> String {
    // `ro`: see the module's invariants. The last console= is
    // /dev/console, where systemd asks for the recovery key.
    let consoles = if i.serial_console { "console=tty0 console=ttyS0" } else { "console=ttyS0 console=tty0" };
    format!("ro {consoles} rd.luks.options=tpm2-device=auto")
}

/// `mkosi.conf`.
pub fn mkosi_conf(i: &Inputs) -> String {
    let mut packages = String::new();
    for p in PACKAGES {
        let _ = writeln!(packages, "        {p}");
    }
    format!(
        "\
# Generated by `zoffsite box image {name}`: the installer stick of box {name}.
# Rebuilt from scratch by every `box image`; edits are lost.
[Distribution]
Distribution=debian
Release={RELEASE}
Repositories=contrib
PackageManagerTrees=mkosi.pkgmngr

[Config]
InitrdInclude={initrd}

[Host]
Incremental=yes

[Validation]
SecureBoot=yes
SecureBootKey={keys}/{DB_KEY}
SecureBootCertificate={keys}/{DB_CRT}
SecureBootAutoEnroll=no

[Output]
Format=disk
ImageId=zoffsite-{name}
OutputDirectory={out}
CacheDirectory={cache}
WorkspaceDirectory={work}/{workspace}

[Content]
Bootable=yes
Bootloader=systemd-boot
UnifiedKernelImages=yes
KernelCommandLine={cmdline}
ExtraTrees={extra}
FinalizeScripts={finalize}
BuildSources={keys}:{src_keys}
Hostname=zoffsite-{name}
Locale=C.UTF-8
Timezone=UTC
Packages=
{packages}",
        name = i.name,
        out = tree::OUTPUT,
        cache = tree::CACHE,
        cmdline = kernel_cmdline(i),
        keys = i.keys,
        src_keys = tree::KEYS,
        extra = tree::EXTRA,
        finalize = tree::FINALIZE,
        initrd = tree::INITRD,
        work = i.work,
        workspace = tree::WORKSPACE,
    )
}

/// A wrapper mkosi finds before ukify ([`TOOLS_DIR`] first on its
/// `PATH`; mkosi runs it with Python, as it runs ukify): the real ukify with
/// `--phases=enter-initrd` when it signs PCR 11's expected values. mkosi
/// 24 has no setting for the phases, and ukify's default signs every
/// phase, which would let the root's key unseal after the initrd too
/// ([`super::install::TPM2_SIGNED_PCRS`]).
pub fn ukify_wrapper() -> &'static str {
    "\
#!/usr/bin/python3
# Generated by `zoffsite box image`: see zoffsite_core::image::build::ukify_wrapper.
import os
import sys

args = sys.argv[1:]
if any(a == '--pcr-private-key' or a.startswith('--pcr-private-key=') for a in args):
    args.append('--phases=enter-initrd')
os.execv(sys.executable, [sys.executable, '/usr/lib/systemd/ukify', *args])
"
}

/// The image's presets ([`PRESET_FILE`]).
pub fn preset_file() -> String {
    format!(
        "\
# Generated by `zoffsite box image`: off on the stick; the installer
# enables them on the box.
disable {FIRSTBOOT_UNIT}
disable {SSH_UNIT}
# sshd by socket would listen on every address (the box's sshd binds the
# tunnel's only: docs/box.md); Debian's nftables.service loads
# /etc/nftables.conf, whose `flush ruleset` would race the box's firewall;
# nothing here updates by systemd-sysupdate.
disable ssh.socket
disable nftables.service
disable systemd-sysupdate.timer
disable systemd-sysupdate-reboot.timer
"
    )
}

/// The stand-in package's `DEBIAN/control` ([`tree::STUB`]). mkosi 24's
/// default initrd asks apt for `?exact-name(systemd-cryptsetup)` (the
/// package newer Debian splits out of systemd); on bookworm that name is
/// known (dracut's dependencies mention it) but no package has it, and apt
/// fails the whole initrd. systemd 254 ships systemd-cryptsetup itself, so
/// an empty package of that name, depending on it, gives apt what it asks
/// for and the initrd what it needs.
pub fn stub_control() -> &'static str {
    "\
Package: systemd-cryptsetup
Version: 254~zoffsite1
Architecture: all
Maintainer: zoffsite <root@localhost>
Depends: systemd (>= 254)
Section: admin
Priority: optional
Description: empty stand-in: systemd 254 ships systemd-cryptsetup itself
 Made by zoffsite box image for mkosi's default initrd on Debian 12.
"
}

/// Included into mkosi's default initrd's configuration (`InitrdInclude=`):
/// the directory with the stand-in package ([`stub_control`]). Only the
/// initrd sees it, so the main image's cache stays valid.
pub fn initrd_conf(i: &Inputs) -> String {
    format!(
        "\
# Generated by `zoffsite box image`: see zoffsite_core::image::build::stub_control.
[Content]
PackageDirectories={work}/{stub}
",
        work = i.work,
        stub = tree::STUB,
    )
}

/// apt's sources for the build: bookworm with its updates, security and
/// backports, main and contrib (OpenZFS is in contrib).
pub fn apt_sources() -> String {
    format!(
        "\
Types: deb
URIs: http://deb.debian.org/debian
Suites: {RELEASE} {RELEASE}-updates {RELEASE}-backports
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.debian.org/debian-security
Suites: {RELEASE}-security
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"
    )
}

/// Backports at the same priority as the release: the newer version wins,
/// which takes the 6.12 kernel, OpenZFS 2.3 and systemd 254 (TPM2
/// enrollment by systemd-repart, `--unlock-key-file`) from backports and
/// everything else from bookworm.
pub fn apt_preferences() -> String {
    format!(
        "\
Package: *
Pin: release n={RELEASE}-backports
Pin-Priority: 500
"
    )
}

/// systemd-boot's `loader.conf` on the stick's ESP.
pub fn loader_conf() -> &'static str {
    // `force`: enroll the owner's keys from /loader/keys/auto when the
    // firmware is in setup mode, also on real hardware (`if-safe` does so
    // only in virtual machines). Out of setup mode it does nothing, so the
    // copy on the box's own ESP is inert.
    "\
timeout 0
secure-boot-enroll force
"
}

/// The stick's installer unit.
pub fn install_unit(i: &Inputs) -> String {
    format!(
        "\
# Generated by `zoffsite box image`: runs the installer on the stick.
[Unit]
Description=zoffsite: install box {name} onto its blank disks
Documentation=https://github.com/zoffsite/zoffsite/blob/main/docs/box.md
After=local-fs.target systemd-udev-settle.service zfs-load-module.service
Wants=systemd-udev-settle.service zfs-load-module.service
ConditionPathExists={STICK_BUNDLE}
RequiresMountsFor={ESP_MOUNT}
# Done: power off, so the owner knows to pull the stick. Refused: stay up,
# with the reason on the screen (and in the report on the stick).
SuccessAction=poweroff

[Service]
Type=oneshot
ExecStart={exe} box install --bundle {STICK_BUNDLE} --report-dir {REPORT_DIR}
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=4h

[Install]
WantedBy=multi-user.target
",
        name = i.name,
        exe = i.exe,
    )
}

/// The installed system's first-boot unit: imports the pool `box install`
/// made (and exported), so that `zfs-import-cache` imports it from then
/// on, and applies the bundle live (`box init`'s user, root dataset and
/// delegation; the units started).
pub fn firstboot_unit(i: &Inputs) -> String {
    let done_dir = FIRSTBOOT_DONE.rsplit_once('/').map_or(FIRSTBOOT_DONE, |(d, _)| d);
    let state = done_dir.strip_prefix("/var/lib/").unwrap_or(done_dir);
    format!(
        "\
# Generated by `zoffsite box image`: the box's first boot after the install.
[Unit]
Description=zoffsite: import the pool and apply the bundle of box {name} (first boot)
After=zfs-load-module.service zfs-import.target network-pre.target
Wants=zfs-load-module.service
Before=ssh.service
ConditionPathExists=!{FIRSTBOOT_DONE}

[Service]
Type=oneshot
RemainAfterExit=yes
StateDirectory={state}
# `box apply` checks sshd's whole configuration (`sshd -t`) before it
# reloads sshd, and `sshd -t` refuses to run without its privilege
# separation directory, which ssh.service makes: this unit runs before it.
RuntimeDirectory=sshd
RuntimeDirectoryPreserve=yes
# Already imported (a rerun after a failure below): fine. By name, from
# zpool's default search (by-id first, then every device: a disk without
# a serial has no by-id name).
ExecStart=-/usr/sbin/zpool import -N {pool}
ExecStart=/usr/sbin/zpool set cachefile=/etc/zfs/zpool.cache {pool}
# Scrubbed once now (the pool is empty: seconds), and monthly from now on
# (OpenZFS's own timer): the audit judges the last scrub's age.
ExecStart=/usr/sbin/zpool scrub -w {pool}
ExecStart=/usr/bin/systemctl enable --now --no-block zfs-scrub-monthly@{pool}.timer
ExecStart={exe} box apply {STICK_BUNDLE}
ExecStart=/usr/bin/touch {FIRSTBOOT_DONE}
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
",
        name = i.name,
        pool = i.pool,
        exe = i.exe,
    )
}

/// The box's base network: DHCP on every Ethernet port.
pub fn network_file() -> &'static str {
    "\
# Generated by `zoffsite box image`: the box needs only power and Ethernet.
[Match]
Type=ether

[Network]
DHCP=yes
"
}

/// The installed root's `/etc/fstab`: remounts the root read-write (the
/// stick's, with no fstab entry for `/`, stays read-only: `ro` on the
/// command line). `/dev/gpt-auto-root` is the root the initrd found and
/// unlocked.
pub const FSTAB: &str = "\
# Written by `zoffsite box install`.
/dev/gpt-auto-root / ext4 rw,errors=remount-ro 0 1
";

/// `mkosi.finalize`: runs on the build machine after the packages are
/// installed (and after the cached part of an incremental build). Signs
/// the OpenZFS modules dkms built with the db key (Debian's kernel, under
/// Secure Boot, loads only modules signed by a key it trusts, and it
/// trusts db's keys), and enables and masks the image's units.
pub fn finalize_script() -> String {
    let mut enable = String::new();
    for u in ENABLED {
        let _ = write!(enable, " {u}");
    }
    let mut mask = String::new();
    for u in MASKED {
        let _ = write!(mask, " {u}");
    }
    format!(
        "\
#!/bin/sh
# Generated by `zoffsite box image`: signs the OpenZFS modules with the
# owner's db key (read from the build sources, never copied into the
# image) and enables the image's units.
set -eu
key=\"$SRCDIR/{keys}/{DB_KEY}\"
crt=\"$SRCDIR/{keys}/{DB_CRT}\"
signed=0
for kbuild in \"$BUILDROOT\"/usr/lib/linux-kbuild-*; do :; done
sign=\"$kbuild/scripts/sign-file\"
[ -x \"$sign\" ] || {{ echo \"zoffsite: no sign-file under $kbuild\" >&2; exit 1; }}
for m in \"$BUILDROOT\"/usr/lib/modules/*/updates/dkms/*.ko*; do
    [ -e \"$m\" ] || continue
    case \"$m\" in
    *.ko.xz) xz -d \"$m\"; k=\"${{m%.xz}}\" ;;
    *.ko) k=\"$m\" ;;
    *) echo \"zoffsite: cannot sign $m\" >&2; exit 1 ;;
    esac
    \"$sign\" sha256 \"$key\" \"$crt\" \"$k\"
    case \"$m\" in *.ko.xz) xz --check=crc32 --lzma2=dict=1MiB \"$k\" ;; esac
    signed=$((signed + 1))
done
[ \"$signed\" -gt 0 ] || {{ echo \"zoffsite: no OpenZFS module to sign (did dkms build?)\" >&2; exit 1; }}
echo \"zoffsite: signed $signed modules\"
# The host keys Debian's openssh-server made while the packages were
# installed are in mkosi's cache, the same in every image built from it:
# the box's own host key comes with its bundle.
rm -f \"$BUILDROOT\"/etc/ssh/ssh_host_*
systemctl --root=\"$BUILDROOT\" enable{enable}
systemctl --root=\"$BUILDROOT\" mask{mask}
",
        keys = tree::KEYS,
    )
}

/// Every rendered file of the build tree. The shell adds the binary, the
/// bundle, the enrollment files and the db key and certificate.
pub fn files(i: &Inputs) -> Vec<Rendered> {
    let extra = |p: &str| format!("{}{p}", tree::EXTRA);
    vec![
        Rendered { path: tree::CONF.into(), mode: 0o644, text: mkosi_conf(i) },
        Rendered { path: tree::SOURCES.into(), mode: 0o644, text: apt_sources() },
        Rendered { path: tree::PREFERENCES.into(), mode: 0o644, text: apt_preferences() },
        Rendered { path: tree::FINALIZE.into(), mode: 0o755, text: finalize_script() },
        Rendered { path: tree::INITRD_CONF.into(), mode: 0o644, text: initrd_conf(i) },
        Rendered { path: extra("/efi/loader/loader.conf"), mode: 0o644, text: loader_conf().into() },
        Rendered {
            path: extra(&format!("/usr/lib/systemd/system/{INSTALL_UNIT}")),
            mode: 0o644,
            text: install_unit(i),
        },
        Rendered {
            path: extra(&format!("/usr/lib/systemd/system/{FIRSTBOOT_UNIT}")),
            mode: 0o644,
            text: firstboot_unit(i),
        },
        Rendered { path: extra(NETWORK_FILE), mode: 0o644, text: network_file().into() },
        Rendered { path: extra(PRESET_FILE), mode: 0o644, text: preset_file() },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs::new(
            BoxName::new("friend").unwrap(),
            AbsPath::new("/usr/local/bin/zoffsite").unwrap(),
            &Dataset::new("offsite/home").unwrap(),
            AbsPath::new("/etc/zoffsite/secureboot").unwrap(),
            AbsPath::new("/var/cache/zoffsite/image/friend").unwrap(),
            false,
        )
        .unwrap()
    }

    #[test]
    fn a_host_without_the_tools_is_told_each_package_and_one_command() {
        assert_eq!(host_refusal(&[]), None);
        let by = |w: &str| HOST_NEEDS.iter().find(|n| n.what.contains(w)).unwrap();
        let msg = host_refusal(&[by("mkosi"), by("libtss2-esys"), by("libtss2-rc")]).unwrap();
        assert_eq!(
            msg,
            "this machine lacks what the build needs: mkosi (mkosi (bookworm-backports)), \
             the TPM library libtss2-esys (libtss2-esys-3.0.2-0), the TPM library libtss2-rc (libtss2-rc0); \
             install it (apt install -t bookworm-backports mkosi && apt install libtss2-esys-3.0.2-0 libtss2-rc0; \
             docs/box.md, \"The image\")"
        );
        // Every need names absolute paths and a package.
        for n in HOST_NEEDS {
            assert!(!n.paths.is_empty() && n.paths.iter().all(|p| p.starts_with('/')), "{n:?}");
            assert!(!n.package.is_empty(), "{n:?}");
        }
    }

    #[test]
    fn the_pool_is_the_roots_pool_and_a_space_is_refused() {
        assert_eq!(inputs().pool, "offsite");
        let e = Inputs::new(
            BoxName::new("friend").unwrap(),
            AbsPath::new("/usr/local/bin/zoffsite").unwrap(),
            &Dataset::new("my pool/home").unwrap(),
            AbsPath::new("/etc/zoffsite/secureboot").unwrap(),
            AbsPath::new("/var/cache/zoffsite/image/friend").unwrap(),
            false,
        )
        .unwrap_err();
        assert_eq!(e, InputError::PoolSpace("my pool".into()));
    }

    #[test]
    fn the_screen_is_the_console_unless_serial_is_asked_for() {
        let mut i = inputs();
        assert!(kernel_cmdline(&i).ends_with("console=tty0 rd.luks.options=tpm2-device=auto"));
        i.serial_console = true;
        assert!(kernel_cmdline(&i).contains("console=tty0 console=ttyS0 "));
        assert!(kernel_cmdline(&i).starts_with("ro "), "the stick's root must stay read-only");
    }

    #[test]
    fn no_file_names_the_pk_or_kek_and_the_db_key_only_in_the_build_sources() {
        for f in files(&inputs()) {
            assert!(!f.text.contains("PK.key") && !f.text.contains("KEK.key"), "{}", f.path);
            if f.text.contains(DB_KEY) {
                assert!(f.path == tree::CONF || f.path == tree::FINALIZE, "{} names the db key", f.path);
            }
        }
    }

    #[test]
    fn the_stick_enables_only_the_installer_and_the_network() {
        let fin = finalize_script();
        assert!(fin.contains(&format!("enable {}", ENABLED.join(" "))));
        assert!(!fin.contains("wg-quick") && !ENABLED.contains(&SSH_UNIT), "the stick must not run the box's services");
        assert!(fin.contains("mask zfs-mount.service zfs-share.service systemd-boot-update.service"));
        assert!(fin.contains("rm -f \"$BUILDROOT\"/etc/ssh/ssh_host_*"));
        let preset = preset_file();
        assert!(preset.contains("disable zoffsite-firstboot.service\n") && preset.contains("disable ssh.service\n"));
        assert!(preset.contains("disable ssh.socket\n") && preset.contains("disable nftables.service\n"));
    }

    #[test]
    fn files_are_where_mkosi_looks_for_them() {
        let paths: Vec<String> = files(&inputs()).into_iter().map(|f| f.path).collect();
        assert!(paths.contains(&"mkosi.extra/efi/loader/loader.conf".to_owned()));
        assert!(paths.contains(&"mkosi.extra/usr/lib/systemd/system/zoffsite-install.service".to_owned()));
        let mut sorted = paths.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), paths.len(), "a path twice");
    }

    #[test]
    fn units_name_the_bundle_the_pool_and_the_binary() {
        let i = inputs();
        let fb = firstboot_unit(&i);
        assert!(fb.contains("ExecStart=-/usr/sbin/zpool import -N offsite\n"));
        assert!(fb.contains(&format!("ExecStart=/usr/local/bin/zoffsite box apply {STICK_BUNDLE}\n")));
        assert!(fb.contains("StateDirectory=zoffsite-firstboot\n"));
        assert!(
            fb.contains("RuntimeDirectory=sshd\nRuntimeDirectoryPreserve=yes\n"),
            "sshd -t needs /run/sshd before ssh.service"
        );
        let inst = install_unit(&i);
        assert!(inst.contains("ExecStart=/usr/local/bin/zoffsite box install --bundle /usr/lib/zoffsite/box.bundle --report-dir /boot/zoffsite\n"));
        assert!(inst.contains("SuccessAction=poweroff\n"));
    }
}
