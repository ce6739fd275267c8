//! `zoffsite box install`: the installer on the box's USB stick. It checks
//! the firmware (Secure Boot enforcing, a TPM 2.0), picks the two blank
//! internal disks, puts the system on the smaller one (an ESP and a root
//! encrypted with LUKS2, unlocked by the TPM bound to PCR 7, plus a
//! recovery key for the owner) and the pool on the larger one.
//!
//! This module decides; `zoffsite_exec::boxinstall` gathers the [`Facts`]
//! and runs the [`InstallPlan`]'s commands. The order of a run:
//!
//! 1. [`plan`]: every check and every disk seen, and either the plan or the
//!    reason it refuses (with the fix). Nothing has been changed yet.
//! 2. `systemd-repart --dry-run=yes`, then `--dry-run=no`
//!    ([`InstallPlan::repart`]) with the definitions [`plan`] rendered:
//!    the ESP's files copied from the stick's mounted ESP, the root's blocks
//!    copied from the stick's root partition (`CopyBlocks=auto`), encrypted
//!    with a one-time key file and enrolled to the TPM.
//! 3. `systemd-cryptenroll --recovery-key` ([`parse_recovery_key`]), the
//!    key file's slot found in the header ([`parse_keyslots`],
//!    [`Keyslots::key_file_slot`]) and wiped, the header checked again
//!    ([`Keyslots::check_final`], [`check_tpm2_pcr7`]) and the recovery key
//!    tried (`cryptsetup open --test-passphrase`).
//! 4. `zpool create` on the data disk by its stable name, `zpool export`.
//! 5. The report ([`Report`], [`render_text`], [`render_json`]).
//!
//! Invariants:
//! - **Only blank disks.** A disk with a partition table, a file system
//!   signature, anything below it (partitions, holders), a mount, the
//!   removable or read-only flag, or less than the minimum size is never
//!   chosen; the stick (the disk that holds `/`) never either. Exactly two
//!   must be left, or nothing is done.
//! - **lsblk is hostile-ish input** (a disk's model and serial come from
//!   its firmware): [`parse_lsblk`] takes exactly the columns asked for
//!   (an unknown or repeated key is refused), strict types, at most
//!   [`LSBLK_MAX_BYTES`], [`MAX_DEVICES`] devices and [`MAX_DEPTH`] levels;
//!   names and paths that reach an argv or a repart definition must be
//!   plain; model and serial are shown only after [`display`].
//! - **The recovery key is written only to the report** on the stick. It
//!   is a [`RecoveryKey`], whose `Debug` hides it; [`render_text`] and
//!   [`render_json`] are the only places that show it.
//! - **The one-time key never lives on a disk** (the exec layer keeps it in
//!   a 0700 directory under `/run`) and its key slot is wiped before the
//!   pool is made: afterwards only the TPM (PCR 7) and the recovery key
//!   open the root ([`Keyslots::check_final`]).
//! - **No decision here reads a clock**: the report's time is a parameter.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::doctor::firmware;
use crate::names::Dataset;

// ---------------------------------------------------------------------------
// Constants: each fact has its owner here.

const GIB: u64 = 1 << 30;
/// Smallest system disk: the ESP, the root copied from the stick, the
/// journal and zoffsite's state.
pub const MIN_SYSTEM_DISK: u64 = 8 * GIB;
/// Smallest data disk (the pool). Backups need far more; this only
/// refuses a disk that cannot be meant.
pub const MIN_DATA_DISK: u64 = 8 * GIB;
/// The installed ESP's size: room for two unified kernel images (the
/// running one and an update) and the boot loader.
pub const ESP_SIZE: &str = "512M";
/// The PCRs the root's TPM key is bound to by value: 7, the Secure Boot
/// state and keys (docs/box.md). Trixie could add 15; this image's
/// systemd is 254.
pub const TPM2_PCRS: &str = "7";
/// And by a signed policy ([`super::build::PCR_PUBLIC_KEY`]): 11, which
/// systemd-stub extends with the unified kernel image and systemd with
/// each boot phase. The image's kernel images carry a signature of PCR
/// 11's value in the `enter-initrd` phase only, so the key unseals only
/// inside the signed initrd, which unlocks only the root of the disk it
/// booted from. PCR 7 alone would not do: it is the same for every
/// system the owner's db key signed, including the stick, so anyone who
/// boots a signed kernel image beside a root partition of their own
/// could unseal the box's key from that root's userspace. Once the
/// initrd is left, PCR 11 has moved on and nothing unseals it.
pub const TPM2_SIGNED_PCRS: &str = "11";
/// The TPM resource manager device `systemd-repart --tpm2-device=auto`
/// uses.
pub const TPM_DEVICE: &str = "/dev/tpmrm0";
/// Where the kernel shows EFI (absent: a legacy/CSM boot).
pub const EFI_DIR: &str = "/sys/firmware/efi";
/// Where the stable names of disks are.
pub const BY_ID_DIR: &str = "/dev/disk/by-id";
/// The GPT type of an EFI System Partition (lsblk's PARTTYPE).
pub const ESP_PARTTYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// The report's file names in `--report-dir`.
pub const REPORT_TEXT: &str = "zoffsite-install.txt";
pub const REPORT_JSON: &str = "zoffsite-install.json";
/// The repart definition files [`plan`] renders, in the order repart
/// creates their partitions (by file name): the ESP is partition 1, the
/// root partition 2.
pub const ESP_DEFINITION: &str = "00-esp.conf";
pub const ROOT_DEFINITION: &str = "10-root.conf";
/// The root's partition number on the system disk ([`ROOT_DEFINITION`] is
/// the second definition, on a disk repart found empty).
pub const ROOT_PARTITION_NUMBER: u32 = 2;
/// The LUKS2 token types systemd writes for the TPM and a recovery key.
pub const TPM2_TOKEN: &str = "systemd-tpm2";
pub const RECOVERY_TOKEN: &str = "systemd-recovery";

/// lsblk's columns, exactly the fields [`parse_lsblk`] accepts.
/// PARTTYPE (beyond what the disks' checks need) finds the stick's ESP.
pub const LSBLK_COLUMNS: &str = "NAME,PATH,TYPE,SIZE,RM,RO,PTTYPE,PARTTYPE,FSTYPE,MOUNTPOINTS,TRAN,MODEL,SERIAL";
/// Most bytes of lsblk output read (a machine with a few disks prints a
/// few KiB).
pub const LSBLK_MAX_BYTES: usize = 1 << 20;
/// Most block devices in the whole tree.
pub const MAX_DEVICES: usize = 1024;
/// Most levels of the tree (disk, partition, crypt, lvm... is 4).
pub const MAX_DEPTH: usize = 8;
/// Most bytes of one text field lsblk prints.
const MAX_FIELD: usize = 1024;
/// Most mountpoints of one device.
const MAX_MOUNTS: usize = 64;
/// Most bytes of a model or serial shown.
const MAX_SHOWN: usize = 64;

/// `lsblk`'s arguments (the program is the exec layer's).
pub fn lsblk_args() -> Vec<String> {
    ["--json", "--bytes", "--output", LSBLK_COLUMNS, "--tree"].map(str::to_owned).to_vec()
}

// ---------------------------------------------------------------------------
// lsblk

/// One block device of lsblk's tree, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// The kernel's name (`sda`, `nvme0n1p2`).
    pub name: String,
    /// Its device node (`/dev/sda`).
    pub path: String,
    /// lsblk's TYPE: `disk`, `part`, `crypt`, `loop`, `rom`, `lvm`...
    pub kind: String,
    pub size: u64,
    pub removable: bool,
    pub read_only: bool,
    /// The partition table's type (`gpt`, `dos`), when it has one.
    pub pttype: Option<String>,
    /// A partition's type (a GPT type UUID, lowercase).
    pub parttype: Option<String>,
    /// The signature found on it (`vfat`, `crypto_LUKS`, `zfs_member`).
    pub fstype: Option<String>,
    /// Where it is mounted.
    pub mountpoints: Vec<String>,
    /// Its transport (`sata`, `nvme`, `usb`).
    pub tran: Option<String>,
    /// The disk's own words, made printable ASCII ([`display`]).
    pub model: Option<String>,
    pub serial: Option<String>,
    pub children: Vec<BlockDevice>,
}

impl BlockDevice {
    /// Every device in this one's subtree, itself first.
    pub fn walk(&self) -> Vec<&BlockDevice> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }

    /// Whether anything in its subtree is mounted at `/`.
    pub fn holds_root(&self) -> bool {
        self.walk().iter().any(|d| d.mountpoints.iter().any(|m| m == "/"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTree {
    blockdevices: Vec<RawDevice>,
}

// Every column asked for must be there, and nothing else: serde refuses an
// unknown field (`deny_unknown_fields`) and a field given twice.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: String,
    path: String,
    #[serde(rename = "type")]
    kind: String,
    size: u64,
    rm: bool,
    ro: bool,
    #[serde(deserialize_with = "nullable")]
    pttype: Option<String>,
    #[serde(deserialize_with = "nullable")]
    parttype: Option<String>,
    #[serde(deserialize_with = "nullable")]
    fstype: Option<String>,
    mountpoints: Vec<Option<String>>,
    #[serde(deserialize_with = "nullable")]
    tran: Option<String>,
    #[serde(deserialize_with = "nullable")]
    model: Option<String>,
    #[serde(deserialize_with = "nullable")]
    serial: Option<String>,
    /// Absent when it has none (lsblk never prints it empty or null).
    #[serde(default)]
    children: Vec<RawDevice>,
}

/// A column that may be `null` but must be there: serde would take a
/// missing `Option` field for `None`, and a missing column means this is not
/// the lsblk whose output zoffsite understands.
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// Printable ASCII of a disk's own words (model, serial): anything else
/// becomes `?`, surrounding blanks go, at most [`MAX_SHOWN`] bytes. For
/// text shown on a console and in a FAT file any OS may read.
pub fn display(s: &str) -> String {
    let t: String = s.trim().chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    if t.len() > MAX_SHOWN {
        format!("{}...", &t[..MAX_SHOWN])
    } else {
        t
    }
}

/// A token lsblk prints that zoffsite compares or passes on (a name, a
/// type): 1 to [`MAX_FIELD`] bytes of ASCII graphic characters.
fn token(what: &str, s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_FIELD || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{what} {:?} is not a plain token", crate::protocol::sanitize(s, 80)));
    }
    Ok(s.to_owned())
}

fn opt_token(what: &str, s: Option<String>) -> Result<Option<String>, String> {
    s.map(|s| token(what, &s)).transpose()
}

fn device(raw: RawDevice, depth: usize, count: &mut usize) -> Result<BlockDevice, String> {
    *count += 1;
    if *count > MAX_DEVICES {
        return Err(format!("more than {MAX_DEVICES} block devices"));
    }
    if depth > MAX_DEPTH {
        return Err(format!("block devices nested deeper than {MAX_DEPTH} levels"));
    }
    let name = token("NAME", &raw.name)?;
    if name.contains('/') {
        return Err(format!("NAME {name:?} has a '/'"));
    }
    let path = token("PATH", &raw.path)?;
    if !path.starts_with("/dev/") || path.split('/').any(|c| c == "..") {
        return Err(format!("{name}: PATH {path:?} is not a device node under /dev"));
    }
    let kind = token("TYPE", &raw.kind)?;
    if !kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err(format!("{path}: TYPE {kind:?} is not a word"));
    }
    if raw.mountpoints.len() > MAX_MOUNTS {
        return Err(format!("{path}: more than {MAX_MOUNTS} mountpoints"));
    }
    let mut mountpoints = Vec::new();
    for m in raw.mountpoints.into_iter().flatten() {
        if !m.starts_with('/') || m.len() > MAX_FIELD || m.chars().any(char::is_control) {
            return Err(format!("{path}: mountpoint {:?} is not an absolute path", crate::protocol::sanitize(&m, 80)));
        }
        mountpoints.push(m);
    }
    let shown = |s: Option<String>| -> Result<Option<String>, String> {
        match s {
            Some(s) if s.len() > MAX_FIELD => Err(format!("{path}: a MODEL or SERIAL longer than {MAX_FIELD} bytes")),
            Some(s) => Ok(Some(display(&s)).filter(|s| !s.is_empty())),
            None => Ok(None),
        }
    };
    let model = shown(raw.model)?;
    let serial = shown(raw.serial)?;
    let mut children = Vec::new();
    for c in raw.children {
        children.push(device(c, depth + 1, count)?);
    }
    Ok(BlockDevice {
        pttype: opt_token("PTTYPE", raw.pttype)?,
        parttype: opt_token("PARTTYPE", raw.parttype)?.map(|t| t.to_ascii_lowercase()),
        fstype: opt_token("FSTYPE", raw.fstype)?,
        tran: opt_token("TRAN", raw.tran)?,
        name,
        path,
        kind,
        size: raw.size,
        removable: raw.rm,
        read_only: raw.ro,
        mountpoints,
        model,
        serial,
        children,
    })
}

/// Parses `lsblk --json --bytes --output` [`LSBLK_COLUMNS`] `--tree`
/// (util-linux 2.38's types: sizes are numbers, RM and RO booleans)
/// strictly: see the module's invariants. Top-level devices must have
/// distinct paths.
pub fn parse_lsblk(bytes: &[u8]) -> Result<Vec<BlockDevice>, String> {
    if bytes.len() > LSBLK_MAX_BYTES {
        return Err(format!("{} bytes, more than the {LSBLK_MAX_BYTES} read", bytes.len()));
    }
    let raw: RawTree = serde_json::from_slice(bytes)
        .map_err(|e| format!("not lsblk's JSON: {}", crate::protocol::sanitize(&e.to_string(), 200)))?;
    let mut count = 0;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for d in raw.blockdevices {
        let d = device(d, 0, &mut count)?;
        if !seen.insert(d.path.clone()) {
            return Err(format!("{} is listed twice", d.path));
        }
        out.push(d);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Facts

/// A symlink in [`BY_ID_DIR`]: its name and what it points to, as
/// `readlink` gives it (`../../sda`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByIdLink {
    pub name: String,
    pub target: String,
}

impl ByIdLink {
    /// The device node it names: the target resolved against
    /// [`BY_ID_DIR`] (`../../sda` is `/dev/sda`), by text only.
    pub fn resolved(&self) -> String {
        let mut parts: Vec<&str> = if self.target.starts_with('/') {
            Vec::new()
        } else {
            BY_ID_DIR.split('/').filter(|p| !p.is_empty()).collect()
        };
        for p in self.target.split('/') {
            match p {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        format!("/{}", parts.join("/"))
    }

    /// Whether the name is an opaque number (a WWN, an EUI) rather than
    /// the model and serial the owner can read off the disk's label.
    fn opaque(&self) -> bool {
        ["wwn-", "nvme-eui.", "nvme-nvme.", "nvme-uuid."].iter().any(|p| self.name.starts_with(p))
    }
}

/// What the box's bundle says, for the installer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFacts {
    /// The box's name.
    pub name: String,
    /// The pool: the first component of the bundle's `[init].root`.
    pub pool: Dataset,
    /// SHA-256 of the bundle's bytes, to compare with `box new`'s.
    pub sha256: String,
}

/// A file read: `Ok(None)` when it does not exist, `Err` why it could not
/// be read.
pub type Read<T> = Result<Option<T>, String>;

/// Everything the installer looks at, gathered by the exec layer.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The report directory: its path when it can be written, else why not.
    pub report_dir: Result<String, String>,
    pub bundle: Result<BundleFacts, String>,
    /// Whether [`EFI_DIR`] exists.
    pub efi: bool,
    /// The `SecureBoot` and `SetupMode` efivars files' bytes.
    pub secure_boot: Read<Vec<u8>>,
    pub setup_mode: Read<Vec<u8>>,
    /// [`firmware::TPM_VERSION_PATH`]'s text.
    pub tpm_version: Read<String>,
    /// Whether [`TPM_DEVICE`] is a character device.
    pub tpm_device: Result<bool, String>,
    /// [`parse_lsblk`]'s result.
    pub lsblk: Result<Vec<BlockDevice>, String>,
    /// The links in [`BY_ID_DIR`] (empty when there is none).
    pub by_id: Result<Vec<ByIdLink>, String>,
}

// ---------------------------------------------------------------------------
// Checks and disks

/// What a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckName {
    ReportDir,
    Bundle,
    SecureBoot,
    Tpm2,
    Disks,
}

impl CheckName {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::ReportDir => "report-dir",
            CheckName::Bundle => "bundle",
            CheckName::SecureBoot => "secure-boot",
            CheckName::Tpm2 => "tpm2",
            CheckName::Disks => "disks",
        }
    }
}

/// One check and its result; `fix` exactly when it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: CheckName,
    pub ok: bool,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: CheckName, detail: impl Into<String>) -> Check {
        Check { name, ok: true, detail: detail.into(), fix: None }
    }

    fn fail(name: CheckName, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, ok: false, detail: detail.into(), fix: Some(fix.into()) }
    }
}

/// What became of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The smaller blank disk: the system.
    System,
    /// The larger blank disk: the pool.
    Data,
    /// Blank and big enough, but not used: there were not exactly two.
    Blank,
    /// Not a candidate, and why (with the fix, when there is one).
    NotTaken { why: String, fix: Option<String> },
}

/// A top-level block device as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSeen {
    pub path: String,
    pub size: u64,
    pub kind: String,
    pub tran: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub role: Role,
}

/// Bytes as GiB with one decimal, for people.
pub fn gib(bytes: u64) -> String {
    // Display only: f64 is exact enough for a size shown to one decimal.
    #[allow(clippy::cast_precision_loss)]
    let g = bytes as f64 / GIB as f64;
    format!("{g:.1} GiB")
}

fn wipe_fix(path: &str) -> String {
    format!(
        "zoffsite installs only onto blank disks; wipe it with `wipefs -a {path}` on another machine if it holds nothing you need"
    )
}

/// Why a top-level device is not a candidate (`None`: it is one).
fn not_taken(d: &BlockDevice) -> Option<(String, Option<String>)> {
    let mounted: Vec<String> =
        d.walk().iter().flat_map(|x| x.mountpoints.iter().map(move |m| format!("{} on {m}", x.path))).collect();
    if d.holds_root() {
        return Some(("the installer's own disk (it holds the running system's /)".into(), None));
    }
    if d.kind != "disk" {
        return Some((format!("a {} device, not a disk", d.kind), None));
    }
    if d.removable {
        return Some((
            "removable: zoffsite installs only onto internal disks".into(),
            Some("use an internal SATA or NVMe disk".into()),
        ));
    }
    if d.read_only {
        return Some(("read-only".into(), Some("use a writable disk (is a write-protect switch on?)".into())));
    }
    if let Some(pt) = &d.pttype {
        return Some((format!("has a partition table ({pt})"), Some(wipe_fix(&d.path))));
    }
    if let Some(fs) = &d.fstype {
        return Some((format!("has a file system signature ({fs})"), Some(wipe_fix(&d.path))));
    }
    if !d.children.is_empty() {
        let below: Vec<&str> = d.children.iter().map(|c| c.path.as_str()).collect();
        return Some((
            format!("has devices below it ({}): something uses it", below.join(", ")),
            Some(wipe_fix(&d.path)),
        ));
    }
    if !mounted.is_empty() {
        return Some((format!("mounted ({})", mounted.join(", ")), Some(wipe_fix(&d.path))));
    }
    let min = MIN_SYSTEM_DISK.min(MIN_DATA_DISK);
    if d.size < min {
        return Some((format!("{} bytes ({}), smaller than {}", d.size, gib(d.size), gib(min)), None));
    }
    None
}

fn seen(d: &BlockDevice, role: Role) -> DiskSeen {
    DiskSeen {
        path: d.path.clone(),
        size: d.size,
        kind: d.kind.clone(),
        tran: d.tran.clone(),
        model: d.model.clone(),
        serial: d.serial.clone(),
        role,
    }
}

/// A path that may go into a repart definition or an argv verbatim: no
/// specifier (`%`), separator (`:`) or blank, nothing repart or a reader
/// of the report could take for anything but the path.
fn plain_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 1024
        && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_.-+@".contains(&b))
        && !p.split('/').any(|c| c == "..")
}

/// The kernel's name of partition `n` of disk `path`: `p` between when
/// the disk's name ends in a digit (`nvme0n1p2`, `mmcblk0p2`), else none
/// (`sda2`, `vda2`).
pub fn partition_path(path: &str, n: u32) -> String {
    if path.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{path}p{n}")
    } else {
        format!("{path}{n}")
    }
}

// ---------------------------------------------------------------------------
// The plan

/// A disk the plan uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: String,
    pub size: u64,
    /// The name the plan passes to tools: `/dev/disk/by-id/...` when the
    /// disk has one (ZFS records it in the pool's label, and it survives a
    /// change of port or probe order), else [`Disk::path`].
    pub stable: String,
}

/// A repart definition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub file: &'static str,
    pub text: String,
}

/// What the installer will do, from the facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    pub checks: Vec<Check>,
    pub disks: Vec<DiskSeen>,
    pub bundle: BundleFacts,
    pub system: Disk,
    pub data: Disk,
    /// Where the stick's ESP is mounted, whose files the new ESP gets.
    pub esp_mount: String,
    /// The root partition repart will make on the system disk.
    pub root_partition: String,
    pub definitions: Vec<Definition>,
}

/// Why the installer refuses, with everything it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub checks: Vec<Check>,
    pub disks: Vec<DiskSeen>,
    /// The bundle, when it could be read.
    pub bundle: Option<BundleFacts>,
    /// The first failed check's detail and fix.
    pub reason: String,
    pub fix: String,
}

fn secure_boot_check(f: &Facts) -> Check {
    const N: CheckName = CheckName::SecureBoot;
    const FIX: &str = "in the firmware setup, enable Secure Boot with your keys enrolled (put it in setup mode and boot the stick once: it enrolls them), then boot the stick again";
    if !f.efi {
        return Check::fail(
            N,
            format!("no {EFI_DIR}: the box did not boot through UEFI"),
            "in the firmware setup, turn legacy/CSM boot off and boot the stick in UEFI mode",
        );
    }
    let sb = match &f.secure_boot {
        Ok(Some(b)) => firmware::efi_bool("SecureBoot", b),
        Ok(None) => Err("no SecureBoot EFI variable".to_owned()),
        Err(e) => Err(e.clone()),
    };
    let setup = match &f.setup_mode {
        Ok(Some(b)) => firmware::efi_bool("SetupMode", b),
        Ok(None) => Err("no SetupMode EFI variable".to_owned()),
        Err(e) => Err(e.clone()),
    };
    match (sb, setup) {
        (Ok(true), Ok(false)) => Check::ok(N, "Secure Boot is enabled, in user mode (enforcing)"),
        (Ok(false), _) => Check::fail(N, "Secure Boot is disabled", FIX),
        (Ok(true), Ok(true)) => Check::fail(
            N,
            "Secure Boot is on but the firmware is in setup mode: anyone could enroll their own keys",
            "boot the stick in setup mode once so that it enrolls your keys (the firmware then leaves setup mode), then boot it again",
        ),
        (Err(e), _) | (_, Err(e)) => Check::fail(N, format!("cannot tell whether Secure Boot is enforcing: {e}"), FIX),
    }
}

fn tpm_check(f: &Facts) -> Check {
    const N: CheckName = CheckName::Tpm2;
    const FIX: &str =
        "in the firmware setup, turn the TPM 2.0 on (Security Chip / PTT / fTPM), then boot the stick again";
    let version = match &f.tpm_version {
        Ok(Some(v)) => v.strip_suffix('\n').unwrap_or(v).to_owned(),
        Ok(None) => return Check::fail(N, format!("no TPM: {} is missing", firmware::TPM_VERSION_PATH), FIX),
        Err(e) => return Check::fail(N, format!("cannot read the TPM's version: {e}"), FIX),
    };
    if version != "2" {
        return Check::fail(
            N,
            format!("the TPM is version {}, not 2: the root's key cannot be sealed to it", display(&version)),
            "use a machine with a TPM 2.0 (or a firmware TPM 2.0: Intel PTT, AMD fTPM), or install by hand (docs/box.md)",
        );
    }
    match &f.tpm_device {
        Ok(true) => Check::ok(N, format!("TPM 2.0, {TPM_DEVICE}")),
        Ok(false) => Check::fail(
            N,
            format!("TPM 2.0, but no {TPM_DEVICE}"),
            "use a kernel with the TPM resource manager (4.12 or newer)",
        ),
        Err(e) => Check::fail(N, format!("cannot look at {TPM_DEVICE}: {e}"), FIX),
    }
}

/// The chosen disks, the ESP's mount, and every disk seen; or why not
/// (the detail and the fix of the disks' check).
struct DiskChoice {
    system: Disk,
    data: Disk,
    esp_mount: String,
}

fn stable_name(disk: &BlockDevice, by_id: &[ByIdLink]) -> String {
    let mut links: Vec<&ByIdLink> = by_id.iter().filter(|l| l.resolved() == disk.path).collect();
    links.sort_by(|a, b| (a.opaque(), a.name.len(), &a.name).cmp(&(b.opaque(), b.name.len(), &b.name)));
    links
        .first()
        .map(|l| format!("{BY_ID_DIR}/{}", l.name))
        .filter(|p| plain_path(p))
        .unwrap_or_else(|| disk.path.clone())
}

fn choose_disks(f: &Facts, disks: &mut Vec<DiskSeen>) -> Result<DiskChoice, (String, String)> {
    const LOOK: &str = "the stick's system could not list the disks: boot it again; if it happens again, rebuild it with `zoffsite box image`";
    let devices = f.lsblk.as_ref().map_err(|e| (format!("cannot list the disks: {e}"), LOOK.to_owned()))?;
    let by_id = f.by_id.as_ref().map_err(|e| (format!("cannot read {BY_ID_DIR}: {e}"), LOOK.to_owned()))?;
    let mut candidates = Vec::new();
    for d in devices {
        match not_taken(d) {
            Some((why, fix)) => disks.push(seen(d, Role::NotTaken { why, fix })),
            None => {
                candidates.push(d);
                disks.push(seen(d, Role::Blank));
            }
        }
    }
    // The stick: the disk that holds `/`, and on it the ESP.
    let boot: Vec<&BlockDevice> = devices.iter().filter(|d| d.holds_root()).collect();
    let [boot] = boot.as_slice() else {
        return Err((
            format!(
                "{} disks hold the running system's /: the installer must run from the stick's root partition",
                boot.len()
            ),
            "boot the box from the zoffsite stick".into(),
        ));
    };
    let root_dev = boot.walk().into_iter().find(|d| d.mountpoints.iter().any(|m| m == "/"));
    if root_dev.is_some_and(|d| d.kind == "crypt") {
        return Err((
            format!("/ is on an encrypted device ({}): this is an installed box, not the installer stick", boot.path),
            "nothing to do: the installer runs only from the stick".into(),
        ));
    }
    let esps: Vec<&BlockDevice> =
        boot.children.iter().filter(|c| c.parttype.as_deref() == Some(ESP_PARTTYPE)).collect();
    let esp_mount = match esps.as_slice() {
        [esp] => match esp.mountpoints.first() {
            Some(m) if plain_path(m) => m.clone(),
            Some(m) => {
                return Err((
                    format!("the stick's ESP is mounted at {}, a path the installer does not pass on", display(m)),
                    "mount it at /efi or /boot".into(),
                ))
            }
            None => {
                return Err((
                    format!("the stick's ESP ({}) is not mounted", esp.path),
                    "the installer's unit mounts it (RequiresMountsFor= the report directory)".into(),
                ))
            }
        },
        _ => {
            return Err((
                format!("the stick ({}) has {} EFI System Partitions, not one", boot.path, esps.len()),
                "boot the box from the zoffsite stick".into(),
            ))
        }
    };
    let bad = candidates.iter().find(|d| !plain_path(&d.path));
    if let Some(d) = bad {
        return Err((format!("{} is not a plain device path", display(&d.path)), LOOK.into()));
    }
    let mut sorted = candidates.clone();
    sorted.sort_by(|a, b| (a.size, &a.path).cmp(&(b.size, &b.path)));
    let [system, data] = sorted.as_slice() else {
        let n = sorted.len();
        let what = match n {
            0 => "no blank internal disk".to_owned(),
            1 => format!("one blank internal disk ({}), not two", sorted[0].path),
            _ => format!(
                "{n} blank internal disks ({}), not two: zoffsite will not guess which to use",
                sorted.iter().map(|d| d.path.as_str()).collect::<Vec<_>>().join(", ")
            ),
        };
        let fix = if n > 2 {
            "leave exactly two blank internal disks (the smaller for the system, the larger for the backups): give the others a partition table, or take them out"
        } else {
            "the box needs two blank internal disks: the smaller for the system, the larger for the backups (each listed below with why it was not taken)"
        };
        return Err((what, fix.into()));
    };
    if system.size < MIN_SYSTEM_DISK || data.size < MIN_DATA_DISK {
        return Err((
            format!("the disks are too small ({} and {})", gib(system.size), gib(data.size)),
            format!(
                "use a system disk of at least {} and a data disk of at least {}",
                gib(MIN_SYSTEM_DISK),
                gib(MIN_DATA_DISK)
            ),
        ));
    }
    for (d, role) in [(system, Role::System), (data, Role::Data)] {
        if let Some(s) = disks.iter_mut().find(|s| s.path == d.path) {
            s.role = role;
        }
    }
    let disk = |d: &BlockDevice| Disk { path: d.path.clone(), size: d.size, stable: stable_name(d, by_id) };
    Ok(DiskChoice { system: disk(system), data: disk(data), esp_mount })
}

/// Every check, every disk seen, and the plan, or why the installer refuses
/// (the first failed check: the checks run in [`CheckName`]'s order, and
/// all of them run, so the report names every problem at once).
pub fn plan(f: &Facts) -> Result<InstallPlan, Box<Refused>> {
    let mut checks = Vec::new();
    checks.push(match &f.report_dir {
        Ok(d) => Check::ok(CheckName::ReportDir, format!("the report goes to {d}")),
        Err(e) => Check::fail(
            CheckName::ReportDir,
            format!("cannot write the report: {e}"),
            "the stick must be writable: the recovery key is written to it and nowhere else",
        ),
    });
    checks.push(match &f.bundle {
        Ok(b) => Check::ok(CheckName::Bundle, format!("box {}, pool {} (bundle SHA-256 {})", b.name, b.pool, b.sha256)),
        Err(e) => Check::fail(
            CheckName::Bundle,
            format!("cannot read the box's bundle: {e}"),
            "build the stick again with `zoffsite box image`",
        ),
    });
    checks.push(secure_boot_check(f));
    checks.push(tpm_check(f));
    let mut disks = Vec::new();
    let choice = choose_disks(f, &mut disks);
    checks.push(match &choice {
        Ok(c) => Check::ok(
            CheckName::Disks,
            format!(
                "system disk {} ({}), data disk {} ({})",
                c.system.path,
                gib(c.system.size),
                c.data.path,
                gib(c.data.size)
            ),
        ),
        Err((why, fix)) => Check::fail(CheckName::Disks, why.clone(), fix.clone()),
    });
    let bundle = f.bundle.as_ref().ok().cloned();
    if let Some(failed) = checks.iter().find(|c| !c.ok) {
        return Err(Box::new(Refused {
            reason: format!("{}: {}", failed.name.as_str(), failed.detail),
            fix: failed.fix.clone().unwrap_or_default(),
            checks,
            disks,
            bundle,
        }));
    }
    let (Ok(c), Some(bundle), Ok(report_dir)) = (choice, bundle, &f.report_dir) else {
        unreachable!("every check passed")
    };
    let definitions = definitions(&c.esp_mount, report_dir);
    Ok(InstallPlan {
        root_partition: partition_path(&c.system.path, ROOT_PARTITION_NUMBER),
        checks,
        disks,
        bundle,
        system: c.system,
        data: c.data,
        esp_mount: c.esp_mount,
        definitions,
    })
}

/// The repart definitions (systemd 254's repart.d(5); every setting used
/// is in it):
///
/// - the ESP: a new vfat file system (`CopyFiles=` implies `Format=vfat`
///   for an ESP; said anyway) of [`ESP_SIZE`] with the files of the stick's
///   mounted ESP, but not this installer's reports (an earlier run's report
///   may hold a recovery key, which must not reach a disk) nor systemd-boot's
///   random seed (each machine needs its own). Files, not blocks: the
///   stick's ESP holds those reports, and a copy of its blocks would also
///   give both the same file system UUID.
/// - the root: `Type=root` with `CopyBlocks=auto`, repart's copy of the
///   partition the running `/` is on (the stick's root, which must be of
///   type root), encrypted (`Encrypt=key-file+tpm2`: a LUKS2 key slot for
///   the one-time key file and one sealed to the TPM), and the rest of the
///   disk (no size limit: the only weighted partition). `GrowFileSystem=`
///   is on by default for the root type, so the file system grows into it
///   at its first mount.
pub fn definitions(esp_mount: &str, report_dir: &str) -> Vec<Definition> {
    let mut esp = format!(
        "# The box's ESP: the stick's boot files (zoffsite box install).\n[Partition]\nType=esp\nFormat=vfat\nSizeMinBytes={ESP_SIZE}\nSizeMaxBytes={ESP_SIZE}\nCopyFiles={esp_mount}:/\n"
    );
    let inside = report_dir == esp_mount || report_dir.starts_with(&format!("{}/", esp_mount.trim_end_matches('/')));
    if inside && plain_path(report_dir) {
        let dir = report_dir.trim_end_matches('/');
        if dir == esp_mount.trim_end_matches('/') {
            for f in [REPORT_TEXT, REPORT_JSON] {
                esp.push_str(&format!("ExcludeFiles={dir}/{f}\n"));
            }
        } else {
            // The whole directory: the reports (one holds the recovery
            // key), older ones and any half-written one stay on the stick.
            esp.push_str(&format!("ExcludeFiles={dir}/\n"));
        }
    }
    esp.push_str(&format!("ExcludeFiles={}/loader/random-seed\n", esp_mount.trim_end_matches('/')));
    // The enrollment files stay on the stick: a box put back into setup
    // mode must not silently take the keys again (loader.conf's
    // `secure-boot-enroll force` finds nothing to enroll on the box).
    esp.push_str(&format!("ExcludeFiles={}/loader/keys/\n", esp_mount.trim_end_matches('/')));
    let root = format!(
        "# The box's root: the stick's root partition, encrypted, unlocked by the TPM (PCR {TPM2_PCRS}, signed policy on PCR {TPM2_SIGNED_PCRS}).\n[Partition]\nType=root\nCopyBlocks=auto\nEncrypt=key-file+tpm2\n"
    );
    vec![Definition { file: ESP_DEFINITION, text: esp }, Definition { file: ROOT_DEFINITION, text: root }]
}

// ---------------------------------------------------------------------------
// The commands

/// A command of the plan: the program and its arguments, and why it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<String>,
    pub why: &'static str,
}

fn command(why: &'static str, argv: &[&str]) -> Command {
    Command { argv: argv.iter().map(|s| (*s).to_owned()).collect(), why }
}

impl InstallPlan {
    /// `systemd-repart` on the system disk, with the definitions in `defs`
    /// and the one-time key in `key_file`. `--empty=require`: repart itself
    /// refuses a disk that has a partition table. `--seed=random`: each
    /// box's partition and LUKS UUIDs are its own, not derived from the
    /// stick's machine ID (the same on every stick built from one image).
    pub fn repart(&self, defs: &str, key_file: &str, dry_run: bool) -> Command {
        let defs = format!("--definitions={defs}");
        let key = format!("--key-file={key_file}");
        let pcrs = format!("--tpm2-pcrs={TPM2_PCRS}");
        let pubkey = format!("--tpm2-public-key={}", super::build::PCR_PUBLIC_KEY);
        let pubkey_pcrs = format!("--tpm2-public-key-pcrs={TPM2_SIGNED_PCRS}");
        let run = if dry_run { "--dry-run=yes" } else { "--dry-run=no" };
        let why = if dry_run {
            "repart checks the definitions against the disk (and finds the stick's root), writing nothing"
        } else {
            "make the ESP and the encrypted root on the system disk"
        };
        command(
            why,
            &[
                "systemd-repart",
                run,
                "--empty=require",
                "--seed=random",
                "--no-pager",
                &defs,
                &key,
                "--tpm2-device=auto",
                &pcrs,
                &pubkey,
                &pubkey_pcrs,
                &self.system.path,
            ],
        )
    }

    /// Waits until udev has seen the new partitions.
    pub fn settle(&self) -> Command {
        command("wait for udev to see the new partitions", &["udevadm", "settle", "--timeout=60"])
    }

    /// Enrolls a recovery key; it prints the key on stdout
    /// ([`parse_recovery_key`]).
    pub fn recovery_key(&self, key_file: &str) -> Command {
        let unlock = format!("--unlock-key-file={key_file}");
        command(
            "add a recovery key for the owner",
            &["systemd-cryptenroll", &unlock, "--recovery-key", &self.root_partition],
        )
    }

    /// The root's LUKS2 header as JSON ([`parse_keyslots`]).
    pub fn luks_dump(&self) -> Command {
        command("read the root's key slots", &["cryptsetup", "luksDump", "--dump-json-metadata", &self.root_partition])
    }

    /// Wipes the one-time key file's slot.
    pub fn wipe_slot(&self, key_file: &str, slot: u32) -> Command {
        let unlock = format!("--unlock-key-file={key_file}");
        let wipe = format!("--wipe-slot={slot}");
        command(
            "wipe the one-time key's slot: only the TPM and the recovery key open the root",
            &["systemd-cryptenroll", &unlock, &wipe, &self.root_partition],
        )
    }

    /// Tries the recovery key (on stdin) without opening the volume.
    pub fn test_recovery_key(&self) -> Command {
        command(
            "check that the recovery key opens the root",
            &["cryptsetup", "open", "--test-passphrase", "--key-file=-", &self.root_partition],
        )
    }

    /// Creates the pool. `ashift=12` (4 KiB sectors, right for every
    /// current disk, also those that claim 512); the root dataset has
    /// `mountpoint=none` and `canmount=off`: the box mounts nothing, and
    /// what arrives are raw streams whose datasets keep their own
    /// properties. No `compression` (a raw stream's blocks keep the
    /// source's) or `atime` (nothing is mounted). `cachefile=none`: this
    /// runs on the stick, whose root was already copied; the installed
    /// system imports the pool by name at its first boot. Never `-f`: a
    /// disk `zpool` thinks in use is refused.
    pub fn zpool_create(&self) -> Command {
        let pool = self.bundle.pool.as_str();
        command(
            "create the pool on the data disk",
            &[
                "zpool",
                "create",
                "-o",
                "ashift=12",
                "-o",
                "cachefile=none",
                "-O",
                "mountpoint=none",
                "-O",
                "canmount=off",
                pool,
                &self.data.stable,
            ],
        )
    }

    /// Exports the pool, for the installed system to import.
    pub fn zpool_export(&self) -> Command {
        command(
            "export the pool: the installed system imports it at its first boot",
            &["zpool", "export", self.bundle.pool.as_str()],
        )
    }

    /// Opens the new root with the one-time key, to finish it
    /// ([`Self::finish`]) before that key's slot is wiped.
    pub fn open_root(&self, key_file: &str) -> Command {
        let key = format!("--key-file={key_file}");
        command(
            "open the new root with the one-time key",
            &["cryptsetup", "open", &key, &self.root_partition, TARGET_MAPPER],
        )
    }

    /// What makes the copied root the box's, once opened and mounted at
    /// [`TARGET_MOUNT`] (the shell writes [`super::build::FSTAB`] there
    /// first): the bundle installed offline (`box apply --root`: the keys,
    /// the configuration, its units enabled; its `box init` runs at the
    /// first boot, live, where the pool is), the installer's unit disabled
    /// and the first-boot unit enabled. `exe` is this zoffsite, `bundle`
    /// the stick's.
    pub fn finish(&self, exe: &str, bundle: &str) -> Vec<Command> {
        let dev = format!("/dev/mapper/{TARGET_MAPPER}");
        let root = format!("--root={TARGET_MOUNT}");
        vec![
            command("mount the new root", &["mount", &dev, TARGET_MOUNT]),
            // Online, mounted: an unmounted ext4 is grown only after a
            // forced fsck.
            command("grow the new root's file system to its partition", &["resize2fs", &dev]),
            command(
                "install the bundle into the new root (box apply, offline)",
                &[exe, "box", "apply", "--root", TARGET_MOUNT, "--offline", bundle],
            ),
            command(
                "the new root: the installer's unit off, the first boot's on",
                &["systemctl", &root, "disable", super::build::INSTALL_UNIT],
            ),
            command(
                "enable the first boot's unit and sshd (the image's presets leave both off on the stick)",
                &["systemctl", &root, "enable", super::build::FIRSTBOOT_UNIT, super::build::SSH_UNIT],
            ),
            command("unmount the new root", &["umount", TARGET_MOUNT]),
            command("close the new root", &["cryptsetup", "close", TARGET_MAPPER]),
        ]
    }

    /// Every command a run makes, in order, for the dry run's plan; the
    /// slot to wipe is found when the header can be read (`SLOT`).
    pub fn commands(&self, defs: &str, key_file: &str) -> Vec<Command> {
        let mut wipe = self.wipe_slot(key_file, 0);
        if let Some(a) = wipe.argv.iter_mut().find(|a| a.starts_with("--wipe-slot=")) {
            *a = "--wipe-slot=SLOT".into();
        }
        vec![
            self.repart(defs, key_file, true),
            self.repart(defs, key_file, false),
            self.settle(),
            self.recovery_key(key_file),
            self.open_root(key_file),
        ]
        .into_iter()
        .chain(self.finish(crate::provision::DEFAULT_EXE, super::STICK_BUNDLE))
        .chain([
            self.test_recovery_key(),
            self.luks_dump(),
            wipe,
            self.luks_dump(),
            self.zpool_create(),
            self.zpool_export(),
        ])
        .collect()
    }
}

/// The device-mapper name and the mount point of the new root while the
/// installer finishes it.
pub const TARGET_MAPPER: &str = "zoffsite-target";
pub const TARGET_MOUNT: &str = "/run/zoffsite/target";

// ---------------------------------------------------------------------------
// The recovery key and the LUKS2 header

/// A recovery key as `systemd-cryptenroll --recovery-key` makes it: 8
/// groups of 8 modhex characters, joined by `-`. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryKey(String);

impl RecoveryKey {
    /// The key, for the report and for `cryptsetup --test-passphrase`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryKey(..)")
    }
}

/// The modhex alphabet (YubiKey's; systemd's recovery keys use it).
const MODHEX: &str = "cbdefghijklnrtuv";

/// Parses what `systemd-cryptenroll --recovery-key` prints on stdout
/// when stdout is not a terminal (systemd 254): the key and a newline,
/// nothing else (its explanation goes to stderr).
pub fn parse_recovery_key(stdout: &[u8]) -> Result<RecoveryKey, String> {
    let text = std::str::from_utf8(stdout).map_err(|_| "the recovery key output is not UTF-8".to_owned())?;
    let key = text.strip_suffix('\n').unwrap_or(text);
    let groups: Vec<&str> = key.split('-').collect();
    let ok = groups.len() == 8 && groups.iter().all(|g| g.len() == 8 && g.chars().all(|c| MODHEX.contains(c)));
    if !ok {
        return Err(format!(
            "systemd-cryptenroll printed {} bytes that are not one recovery key (8 groups of 8 modhex characters)",
            stdout.len()
        ));
    }
    Ok(RecoveryKey(key.to_owned()))
}

/// The key slots and the tokens of a LUKS2 header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keyslots {
    pub slots: BTreeSet<u32>,
    /// Each token's type and the slots it names, by token id.
    pub tokens: BTreeMap<u32, (String, Vec<u32>)>,
}

/// LUKS2's most key slots and tokens.
const LUKS2_MAX: u32 = 32;

fn luks_number(what: &str, s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|n| *n < LUKS2_MAX && *s == n.to_string())
        .ok_or_else(|| format!("{what} {:?} is not a number below {LUKS2_MAX}", crate::protocol::sanitize(s, 40)))
}

/// Parses the key slots and tokens of `cryptsetup luksDump
/// --dump-json-metadata` (strict JSON, no duplicate key: `doctor::json`).
/// A token's `keyslots` must name slots that exist.
pub fn parse_keyslots(text: &str) -> Result<Keyslots, String> {
    let v = crate::doctor::json::parse(text)?;
    let obj = |v: &Value, what: &str| v.as_object().cloned().ok_or_else(|| format!("{what} is not an object"));
    let top = obj(&v, "the header")?;
    let slots = obj(top.get("keyslots").unwrap_or(&Value::Null), "keyslots")?;
    let tokens = obj(top.get("tokens").unwrap_or(&Value::Null), "tokens")?;
    let mut out = Keyslots::default();
    for id in slots.keys() {
        out.slots.insert(luks_number("key slot", id)?);
    }
    for (id, t) in &tokens {
        let n = luks_number("token", id)?;
        let t = obj(t, "a token")?;
        let kind = t.get("type").and_then(Value::as_str).ok_or_else(|| format!("token {n} has no type"))?;
        let named = t.get("keyslots").and_then(Value::as_array).ok_or_else(|| format!("token {n} has no keyslots"))?;
        let mut list = Vec::new();
        for s in named {
            let s = s.as_str().ok_or_else(|| format!("token {n}: a key slot is not a string"))?;
            let s = luks_number("key slot", s)?;
            if !out.slots.contains(&s) {
                return Err(format!("token {n} names key slot {s}, which does not exist"));
            }
            list.push(s);
        }
        out.tokens.insert(n, (crate::protocol::sanitize(kind, 64), list));
    }
    Ok(out)
}

impl Keyslots {
    /// The one slot of the token of type `kind`, if there is exactly one
    /// such token naming exactly one slot.
    fn only(&self, kind: &str) -> Result<u32, String> {
        let of: Vec<&[u32]> = self.tokens.values().filter(|(k, _)| k == kind).map(|(_, s)| s.as_slice()).collect();
        match of.as_slice() {
            [[s]] => Ok(*s),
            _ => Err(format!("{} {kind} tokens where one naming one key slot was expected", of.len())),
        }
    }

    /// The one-time key file's slot, after repart and the recovery key:
    /// the header must have exactly three slots, one for a `systemd-tpm2`
    /// token, one for a `systemd-recovery` token and one that no token
    /// names (the key file, a plain passphrase slot), and no other token.
    /// Found from the header rather than assumed (repart's order), and by
    /// number rather than `--wipe-slot=password`, which would wipe every
    /// tokenless slot there is.
    pub fn key_file_slot(&self) -> Result<u32, String> {
        let tpm = self.only(TPM2_TOKEN)?;
        let recovery = self.only(RECOVERY_TOKEN)?;
        if self.tokens.len() != 2 {
            return Err(format!("{} tokens, not the TPM's and the recovery key's", self.tokens.len()));
        }
        let rest: Vec<u32> = self.slots.iter().copied().filter(|s| *s != tpm && *s != recovery).collect();
        match rest.as_slice() {
            [k] if self.slots.len() == 3 => Ok(*k),
            _ => Err(format!(
                "key slots {:?} (TPM {tpm}, recovery {recovery}): not exactly one left for the key file",
                self.slots
            )),
        }
    }

    /// After the wipe: exactly two slots, the TPM's and the recovery
    /// key's.
    pub fn check_final(&self) -> Result<(), String> {
        let tpm = self.only(TPM2_TOKEN)?;
        let recovery = self.only(RECOVERY_TOKEN)?;
        let want: BTreeSet<u32> = [tpm, recovery].into();
        if self.slots != want || self.tokens.len() != 2 {
            return Err(format!(
                "key slots {:?} remain, not only the TPM's ({tpm}) and the recovery key's ({recovery})",
                self.slots
            ));
        }
        Ok(())
    }
}

/// Whether a JSON report ([`render_json_text`], read back from the stick)
/// holds a recovery key. Anything unreadable counts as holding one: the
/// caller then writes beside it rather than over it.
pub fn report_holds_key(json: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(json) {
        Ok(v) => !matches!(v.get("recovery_key"), None | Some(Value::Null)),
        Err(_) => true,
    }
}

/// The root's `systemd-tpm2` token is bound to exactly PCR [`TPM2_PCRS`]
/// and the signed policy on PCR [`TPM2_SIGNED_PCRS`] (the doctor's own
/// parser of the header: what `doctor --box` will read).
pub fn check_tpm2_pcr7(dump: &str) -> Result<(), String> {
    let h = crate::doctor::luks::parse_dump(dump)?;
    match h.tpm2.as_slice() {
        [t] if t.pcrs == [7] && t.pubkey_pcrs == [11] && !t.pcrlock => Ok(()),
        [t] => Err(format!(
            "the TPM token is bound to PCRs {:?} and a signed policy on {:?}, not PCR 7 and a signed policy on 11",
            t.pcrs, t.pubkey_pcrs
        )),
        ts => Err(format!("{} TPM tokens, not one", ts.len())),
    }
}

// ---------------------------------------------------------------------------
// The report

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Installed: the system disk boots, the pool waits to be imported.
    Installed,
    /// `-n`: checked and planned, nothing changed.
    DryRun,
    /// Refused before anything was changed.
    Refused { reason: String, fix: String },
    /// A step failed after the disks were changed.
    Failed { step: String, error: String, fix: String },
}

/// Everything the report says.
#[derive(Debug, Clone)]
pub struct Report {
    /// When (Unix seconds, the box's clock).
    pub time: i64,
    pub outcome: Outcome,
    pub checks: Vec<Check>,
    pub disks: Vec<DiskSeen>,
    pub bundle: Option<BundleFacts>,
    /// The plan, when there was one.
    pub plan: Option<InstallPlan>,
    /// The steps done, in order (each command's `why`).
    pub done: Vec<String>,
    /// The root's recovery key, once enrolled.
    pub recovery_key: Option<RecoveryKey>,
}

impl Report {
    /// The report of a refusal.
    pub fn refused(r: Refused, time: i64) -> Report {
        Report {
            time,
            outcome: Outcome::Refused { reason: r.reason, fix: r.fix },
            checks: r.checks,
            disks: r.disks,
            bundle: r.bundle,
            plan: None,
            done: Vec::new(),
            recovery_key: None,
        }
    }

    /// The report of a plan, before (or without: `-n`) carrying it out.
    pub fn planned(p: &InstallPlan, time: i64, outcome: Outcome) -> Report {
        Report {
            time,
            outcome,
            checks: p.checks.clone(),
            disks: p.disks.clone(),
            bundle: Some(p.bundle.clone()),
            plan: Some(p.clone()),
            done: Vec::new(),
            recovery_key: None,
        }
    }

    /// The word for the outcome (JSON's `outcome`).
    pub fn outcome_word(&self) -> &'static str {
        match self.outcome {
            Outcome::Installed => "installed",
            Outcome::DryRun => "dry-run",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// `s` with every character that is not ASCII as `?`: the report is a
/// file on a FAT stick, read on any OS, and on a console without fonts.
pub fn ascii(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii() { c } else { '?' }).collect()
}

fn time_text(t: i64) -> String {
    jiff::Timestamp::from_second(t).map_or_else(|_| format!("{t} (Unix seconds)"), |ts| ts.to_string())
}

fn disk_line(d: &DiskSeen) -> String {
    let mut words = vec![format!("{} bytes ({})", d.size, gib(d.size))];
    if let Some(t) = &d.tran {
        words.push(t.clone());
    }
    if let Some(m) = &d.model {
        words.push(m.clone());
    }
    if let Some(s) = &d.serial {
        words.push(format!("serial {s}"));
    }
    let role = match &d.role {
        Role::System => "SYSTEM DISK".to_owned(),
        Role::Data => "DATA DISK (the pool)".to_owned(),
        Role::Blank => "blank, not used".to_owned(),
        Role::NotTaken { why, .. } => format!("not taken: {why}"),
    };
    format!("{}: {}: {role}", d.path, words.join(", "))
}

/// The report as text: plain ASCII lines (every field that came from a
/// device went through [`display`] or is a checked token), for the
/// console and for a file on the stick read on any OS.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    let head = match &r.outcome {
        Outcome::Installed => "INSTALLED",
        Outcome::DryRun => "DRY RUN (nothing was changed)",
        Outcome::Refused { .. } => "REFUSED (nothing was changed)",
        Outcome::Failed { .. } => "FAILED",
    };
    line(&format!("zoffsite box install: {head}"));
    line(&format!("time: {}", time_text(r.time)));
    if let Some(b) = &r.bundle {
        line(&format!("box: {} (bundle SHA-256 {})", b.name, b.sha256));
    }
    line("");
    if let Some(k) = &r.recovery_key {
        let bar = "#".repeat(72);
        line(&bar);
        line("# RECOVERY KEY of the box's system disk. WRITE THIS DOWN, THEN DELETE THIS FILE.");
        line("#");
        line(&format!("#     {}", k.expose()));
        line("#");
        line("# It is written nowhere else: not on the box, not on your source.");
        line("# The box asks for it at boot when the TPM no longer unlocks the disk");
        line("# (a firmware update, Secure Boot turned off, a new TPM): type it there.");
        line("# Keep it on paper, away from the box; then delete this file from the stick.");
        line(&bar);
        line("");
    }
    line("checks:");
    for c in &r.checks {
        line(&format!("  {:<4} {:<11} {}", if c.ok { "ok" } else { "FAIL" }, c.name.as_str(), c.detail));
        if let Some(f) = &c.fix {
            line(&format!("       fix: {f}"));
        }
    }
    line("");
    line("disks seen:");
    if r.disks.is_empty() {
        line("  (none)");
    }
    for d in &r.disks {
        line(&format!("  {}", disk_line(d)));
        if let Role::NotTaken { fix: Some(f), .. } = &d.role {
            line(&format!("      {f}"));
        }
    }
    if let Some(p) = &r.plan {
        line("");
        line(&format!(
            "system disk: {} ({}): ESP, root (LUKS2, TPM PCR {TPM2_PCRS} + signed PCR {TPM2_SIGNED_PCRS} + recovery key) {}",
            p.system.path,
            gib(p.system.size),
            p.root_partition
        ));
        line(&format!("pool: {} on {}", p.bundle.pool, p.data.stable));
        if r.outcome == Outcome::DryRun {
            line("");
            line("would run (RUN: a new 0700 directory in /run/zoffsite):");
            for c in p.commands("RUN/repart.d", "RUN/key") {
                line(&format!("  {}", c.argv.join(" ")));
            }
            for d in &p.definitions {
                line(&format!("RUN/repart.d/{}:", d.file));
                for l in d.text.lines() {
                    line(&format!("  {l}"));
                }
            }
        }
    }
    if !r.done.is_empty() {
        line("");
        line("done:");
        for d in &r.done {
            line(&format!("  {d}"));
        }
    }
    line("");
    match &r.outcome {
        Outcome::Installed => {
            line("The box is installed. Remove the stick; the box boots from its system disk,");
            line("unlocks it with the TPM, imports the pool and dials your source.");
            line("On the source: `zoffsite box wait NAME`.");
        }
        Outcome::DryRun => line("Dry run: the plan above was not carried out."),
        Outcome::Refused { reason, fix } => {
            line(&format!("REFUSED: {reason}"));
            line(&format!("fix: {fix}"));
            line("Nothing was changed on any disk. Fix it, then boot the stick again.");
        }
        Outcome::Failed { step, error, fix } => {
            line(&format!("FAILED at: {step}"));
            line(&format!("error: {error}"));
            line(&format!("fix: {fix}"));
        }
    }
    ascii(&out)
}

fn check_json(c: &Check) -> Value {
    json!({"name": c.name.as_str(), "ok": c.ok, "detail": c.detail, "fix": c.fix})
}

fn disk_json(d: &DiskSeen) -> Value {
    let (role, why, fix) = match &d.role {
        Role::System => ("system", None, None),
        Role::Data => ("data", None, None),
        Role::Blank => ("blank", None, None),
        Role::NotTaken { why, fix } => ("not-taken", Some(why), fix.as_ref()),
    };
    json!({
        "path": d.path, "size": d.size, "type": d.kind, "tran": d.tran, "model": d.model, "serial": d.serial,
        "role": role, "why": why, "fix": fix,
    })
}

/// The report as JSON (docs/json.md, `zoffsite box install --json`).
pub fn render_json(r: &Report) -> Value {
    let (reason, fix, step, error) = match &r.outcome {
        Outcome::Refused { reason, fix } => (Some(reason), Some(fix), None, None),
        Outcome::Failed { step, error, fix } => (None, Some(fix), Some(step), Some(error)),
        Outcome::Installed | Outcome::DryRun => (None, None, None, None),
    };
    let plan = r.plan.as_ref().map(|p| {
        json!({
            "system_disk": {"path": p.system.path, "size": p.system.size},
            "data_disk": {"path": p.data.path, "size": p.data.size, "stable": p.data.stable},
            "esp_mount": p.esp_mount,
            "root_partition": p.root_partition,
            "pool": p.bundle.pool.as_str(),
            "definitions": p.definitions.iter().map(|d| json!({"file": d.file, "text": d.text})).collect::<Vec<_>>(),
        })
    });
    json!({
        "outcome": r.outcome_word(),
        "time": time_text(r.time),
        "box": r.bundle.as_ref().map(|b| b.name.clone()),
        "bundle_sha256": r.bundle.as_ref().map(|b| b.sha256.clone()),
        "pool": r.bundle.as_ref().map(|b| b.pool.as_str().to_owned()),
        "checks": r.checks.iter().map(check_json).collect::<Vec<_>>(),
        "disks": r.disks.iter().map(disk_json).collect::<Vec<_>>(),
        "plan": plan,
        "done": r.done,
        "recovery_key": r.recovery_key.as_ref().map(RecoveryKey::expose),
        "reason": reason,
        "fix": fix,
        "failed_step": step,
        "error": error,
    })
}

/// [`render_json`] as the text written and printed: pretty, ASCII only
/// (JSON escapes nothing it need not, so [`ascii`] goes over it).
pub fn render_json_text(r: &Report) -> String {
    let text =
        serde_json::to_string_pretty(&render_json(r)).unwrap_or_else(|e| unreachable!("a Value serializes: {e}"));
    ascii(&format!("{text}\n"))
}

#[cfg(test)]
mod tests;
