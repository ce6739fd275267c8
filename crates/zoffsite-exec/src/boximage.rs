//! `box image`'s shell, on the source: the owner's Secure Boot keys (made
//! once, [`ensure_keys`]), the build tree ([`write_tree`]: core's rendered
//! files, the binary, the bundle, the enrollment files), mkosi
//! ([`run_mkosi`]) and the result's delivery ([`deliver`]).
//!
//! # Invariants
//!
//! - **Keys are made once and never overwritten**: a key without its
//!   certificate (or the reverse) is refused, not repaired, since every
//!   box already enrolled trusts the old one. Private keys are 0600 in a
//!   0700 directory and never leave it: the PK and KEK keys sign the
//!   enrollment files here, the db key is read by mkosi and the finalize
//!   script in place (a mounted build source), never copied.
//! - **The image holds the box's private keys** (its bundle): it is
//!   written 0600, and so is the build tree's copy of the bundle.
//! - **`--write` only to a removable disk with nothing mounted**, checked
//!   from sysfs and `/proc/self/mountinfo` right before writing.
//! - Tools run by argv with a fixed `PATH` (mkosi's helpers, ukify, must
//!   be the system's, not a Python of the user's).

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zoffsite_core::image::build::{self, tree, Rendered};

use crate::process::{self, Cmd, ExecError};

/// The owner's Secure Boot keys on the source: one set for all boxes.
pub const DEFAULT_KEYS: &str = "/etc/zoffsite/secureboot";
/// Build trees (and mkosi's cache), one directory per box.
pub const DEFAULT_WORK: &str = "/var/cache/zoffsite/image";
/// mkosi's log in the build tree.
pub const LOG: &str = "mkosi.log";
/// The signature owner GUID of the enrollment files, made once.
pub const OWNER_GUID: &str = "owner.guid";

/// The PATH the build tools run with.
const TOOL_PATH: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

/// The three Secure Boot variables and who signs each one's update: the
/// platform key signs itself and the KEK, the KEK signs db.
pub const VARS: [(&str, &str); 3] = [("PK", "PK"), ("KEK", "PK"), ("db", "KEK")];

/// The longest a build may take (a first build downloads and builds
/// OpenZFS; under emulation it is slow).
pub const BUILD_DEADLINE: Duration = Duration::from_secs(4 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("`{cmd}` failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error(
        "{dir}: {have} exists without {missing}: a Secure Boot key set is made once and never replaced \
         (boxes that enrolled it trust it); restore {missing} from your backup, or move the directory \
         away to start over with new keys (every box must then be re-imaged)"
    )]
    HalfKey { dir: PathBuf, have: String, missing: String },
    #[error("mkosi failed (exit {code}): see {log} (the last lines:\n{tail})")]
    Mkosi { code: String, log: PathBuf, tail: String },
    #[error("mkosi finished but made no {0}")]
    NoImage(PathBuf),
    #[error("{0}")]
    Refused(String),
}

/// `dir` is ours (root's, when root runs this) and no one else may write
/// in it: the build tree holds the finalize script mkosi runs as root with
/// the db key mounted, and the key directory the keys.
fn check_own_dir(dir: &Path, what: &str) -> Result<(), ImageError> {
    use std::os::unix::fs::MetadataExt as _;
    let m = fs::symlink_metadata(dir).map_err(io_at(dir))?;
    let me = rustix::process::geteuid().as_raw();
    if !m.is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(ImageError::Refused(format!(
            "{what} {} must be a directory of user {me}'s that no one else may write (it is {}, user {}, mode {:04o}): \
             give another with {}",
            dir.display(),
            if m.is_dir() { "a directory" } else { "not a directory" },
            m.uid(),
            m.mode() & 0o7777,
            if what == "the build tree" { "--work DIR" } else { "--keys DIR" },
        )));
    }
    Ok(())
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io { path: path.to_owned(), source }
}

fn run_ok(cmd: &Cmd) -> Result<process::Output, ImageError> {
    let out = process::run_by(cmd, 1 << 20, Some(Duration::from_secs(120)))?;
    if !out.success() {
        return Err(ImageError::Failed { cmd: cmd.to_string(), stderr: out.stderr.trim().to_owned() });
    }
    Ok(out)
}

fn tool(program: &str) -> Cmd {
    Cmd::new("/usr/bin/env").arg(TOOL_PATH).arg(program)
}

/// What of [`build::HOST_NEEDS`] this machine lacks (none of its paths
/// exists).
pub fn host_missing() -> Vec<&'static build::HostNeed> {
    build::HOST_NEEDS.iter().filter(|n| !n.paths.iter().any(|p| Path::new(p).exists())).collect()
}

/// Which key sets ([`VARS`]) are missing in `dir`; a half set is an error.
pub fn missing_keys(dir: &Path) -> Result<Vec<&'static str>, ImageError> {
    let mut missing = Vec::new();
    for (var, _) in VARS {
        let key = dir.join(format!("{var}.key"));
        let crt = dir.join(format!("{var}.crt"));
        match (key.exists(), crt.exists()) {
            (true, true) => {}
            (false, false) => missing.push(var),
            (k, _) => {
                let (have, miss) = if k { (key, crt) } else { (crt, key) };
                return Err(ImageError::HalfKey {
                    dir: dir.to_owned(),
                    have: have.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                    missing: miss.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                });
            }
        }
    }
    Ok(missing)
}

/// Makes the missing key sets (RSA 2048, the size every UEFI firmware
/// takes) and the owner GUID; returns what it made. `host` names the
/// certificates, so the owner can tell them apart in a firmware menu.
pub fn ensure_keys(dir: &Path, host: &str) -> Result<Vec<PathBuf>, ImageError> {
    let missing = missing_keys(dir)?;
    let mut made = Vec::new();
    if !dir.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_at(dir))?;
    }
    check_own_dir(dir, "the key directory")?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_at(dir))?;
    for var in missing {
        let key = dir.join(format!("{var}.key"));
        let crt = dir.join(format!("{var}.crt"));
        let cn = format!("/CN=zoffsite {var} ({host})/");
        let cmd = tool("openssl")
            .args(["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "7300", "-subj"])
            .arg(&cn)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt);
        run_ok(&cmd)?;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).map_err(io_at(&key))?;
        made.push(key);
        made.push(crt);
    }
    let guid = dir.join(OWNER_GUID);
    if !guid.exists() {
        let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").map_err(io_at(Path::new("/proc")))?;
        fs::write(&guid, format!("{}\n", uuid.trim())).map_err(io_at(&guid))?;
        made.push(guid);
    }
    Ok(made)
}

/// Writes `path` (making its parents) with `mode`.
fn put(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ImageError> {
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).map_err(io_at(parent))?;
    }
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io_at(path))?;
    f.write_all(bytes).map_err(io_at(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_at(path))
}

/// What goes into the build tree besides core's files.
pub struct TreeInputs<'a> {
    pub files: &'a [Rendered],
    /// The zoffsite binary to put in the image, and where.
    pub exe: &'a Path,
    pub exe_dest: &'a str,
    /// The box's bundle, verbatim.
    pub bundle: &'a [u8],
    /// The owner's key directory (for the enrollment files).
    pub keys: &'a Path,
}

/// Writes the build tree under `work`: the extra tree and the rendered
/// files are replaced whole (no stale file from an earlier build stays);
/// mkosi's cache and output directories are kept (the cache is what makes
/// a second build fast).
pub fn write_tree(work: &Path, t: &TreeInputs<'_>) -> Result<(), ImageError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(work).map_err(io_at(work))?;
    check_own_dir(work, "the build tree")?;
    fs::set_permissions(work, fs::Permissions::from_mode(0o700)).map_err(io_at(work))?;
    for d in [tree::EXTRA, "mkosi.pkgmngr", tree::INITRD, tree::WORKSPACE] {
        let p = work.join(d);
        match fs::remove_dir_all(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::Io { path: p, source: e }),
        }
    }
    let workspace = work.join(tree::WORKSPACE);
    fs::DirBuilder::new().mode(0o700).create(&workspace).map_err(io_at(&workspace))?;
    for f in t.files {
        put(&work.join(&f.path), f.text.as_bytes(), f.mode)?;
    }
    let exe = fs::read(t.exe).map_err(io_at(t.exe))?;
    put(&work.join(format!("{}{}", tree::EXTRA, t.exe_dest)), &exe, 0o755)?;
    put(&work.join(format!("{}{}", tree::EXTRA, build::STICK_BUNDLE)), t.bundle, 0o600)?;
    make_stub(work)?;
    // The db key's public half: the key the root's TPM policy trusts to
    // sign PCR 11 (zoffsite_core::image::install::TPM2_SIGNED_PCRS).
    let pem = run_ok(&tool("openssl").args(["x509", "-pubkey", "-noout", "-in"]).arg(t.keys.join(build::DB_CRT)))?;
    put(&work.join(format!("{}{}", tree::EXTRA, build::PCR_PUBLIC_KEY)), &pem.stdout, 0o644)?;
    make_auth(t.keys, &work.join(tree::AUTH_DIR), &work.join("mkosi.workspace-auth"))
}

/// The initrd's stand-in package ([`build::stub_control`]), built once:
/// mkosi's cache key includes its file's name and mtime, so it is never
/// rebuilt while its control text is unchanged.
pub fn make_stub(work: &Path) -> Result<(), ImageError> {
    let dir = work.join(tree::STUB);
    let deb = dir.join("systemd-cryptsetup_254~zoffsite1_all.deb");
    let src = work.join("mkosi.initrd-stub");
    let control = src.join("DEBIAN/control");
    if deb.is_file() && fs::read(&control).ok().as_deref() == Some(build::stub_control().as_bytes()) {
        return Ok(());
    }
    let _ = fs::remove_dir_all(&dir);
    put(&control, build::stub_control().as_bytes(), 0o644)?;
    fs::DirBuilder::new().recursive(true).mode(0o755).create(&dir).map_err(io_at(&dir))?;
    run_ok(&tool("dpkg-deb").args(["--build", "--root-owner-group"]).arg(&src).arg(&deb))?;
    Ok(())
}

/// The enrollment files (`PK.auth`, `KEK.auth`, `db.auth`): each
/// variable's certificate as a signature list, signed by its signer
/// ([`VARS`]), by sbsigntool's `sbsiglist` and `sbvarsign` (what mkosi
/// itself uses).
pub fn make_auth(keys: &Path, out: &Path, scratch: &Path) -> Result<(), ImageError> {
    let guid_path = keys.join(OWNER_GUID);
    let guid = fs::read_to_string(&guid_path).map_err(io_at(&guid_path))?;
    let guid = guid.trim();
    fs::DirBuilder::new().recursive(true).mode(0o700).create(scratch).map_err(io_at(scratch))?;
    fs::DirBuilder::new().recursive(true).mode(0o755).create(out).map_err(io_at(out))?;
    for (var, signer) in VARS {
        let der = scratch.join(format!("{var}.der"));
        let esl = scratch.join(format!("{var}.esl"));
        run_ok(
            &tool("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(keys.join(format!("{var}.crt")))
                .arg("-out")
                .arg(&der),
        )?;
        run_ok(&tool("sbsiglist").args(["--owner", guid, "--type", "x509", "--output"]).arg(&esl).arg(&der))?;
        let auth = out.join(format!("{var}.auth"));
        run_ok(
            &tool("sbvarsign")
                .args([
                    "--attr",
                    "NON_VOLATILE,BOOTSERVICE_ACCESS,RUNTIME_ACCESS,TIME_BASED_AUTHENTICATED_WRITE_ACCESS",
                ])
                .arg("--key")
                .arg(keys.join(format!("{signer}.key")))
                .arg("--cert")
                .arg(keys.join(format!("{signer}.crt")))
                .arg("--output")
                .arg(&auth)
                .arg(var)
                .arg(&esl),
        )?;
    }
    let _ = fs::remove_dir_all(scratch);
    Ok(())
}

/// The mkosi command for the tree at `work`: [`build::TOOLS_DIR`] first
/// on its `PATH`.
pub fn mkosi_cmd(work: &Path) -> Cmd {
    Cmd::new("/usr/bin/env")
        .arg(format!("PATH={}:/usr/sbin:/usr/bin:/sbin:/bin", build::TOOLS_DIR))
        .arg("mkosi")
        .arg("-C")
        .arg(work)
        .args(["--force", "build"])
}

/// Installs the ukify wrapper ([`build::ukify_wrapper`]) in
/// [`build::TOOLS_DIR`] (root's, 0755), replacing what is there.
pub fn install_tools() -> Result<(), ImageError> {
    let dir = Path::new(build::TOOLS_DIR);
    fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(io_at(dir))?;
    put(&dir.join("ukify"), build::ukify_wrapper().as_bytes(), 0o755)
}

/// Runs mkosi, its output to [`LOG`] in the tree; the image it made.
pub fn run_mkosi(work: &Path, image_id: &str) -> Result<PathBuf, ImageError> {
    let log_path = work.join(LOG);
    let log = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(io_at(&log_path))?;
    install_tools()?;
    let status = process::run_logged(&mkosi_cmd(work), &log, Some(BUILD_DEADLINE))?;
    if !status.success() {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        return Err(ImageError::Mkosi {
            code: status.code().map_or("signal".into(), |c| c.to_string()),
            log: log_path,
            tail,
        });
    }
    let image = work.join(tree::OUTPUT).join(format!("{image_id}.raw"));
    if !image.is_file() {
        return Err(ImageError::NoImage(image));
    }
    // mkosi writes it 0644; it holds the box's private keys.
    fs::set_permissions(&image, fs::Permissions::from_mode(0o600)).map_err(io_at(&image))?;
    Ok(image)
}

/// Where the image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    Device(PathBuf),
}

/// What sysfs and the mount table say about a disk `--write` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    pub is_block: bool,
    /// The kernel's name (`sdb`), if it is a whole disk.
    pub kernel_name: Option<String>,
    pub removable: bool,
    /// Its mounted partitions (or itself), as the mount table names them.
    pub mounted: Vec<String>,
    /// What holds it or its partitions (device-mapper, md, LVM: sysfs's
    /// `holders`), and whether it or one of them is swap.
    pub held_by: Vec<String>,
}

/// Whether `--write` may write to the disk, and if not why (with the fix).
pub fn write_refusal(dev: &Path, f: &DeviceFacts) -> Option<String> {
    let d = dev.display();
    if !f.is_block {
        return Some(format!("{d} is not a block device: give the stick's disk, e.g. /dev/sdb (see `lsblk`)"));
    }
    let Some(name) = &f.kernel_name else {
        return Some(format!("{d} is a partition, not a whole disk: give the disk, e.g. /dev/sdb"));
    };
    if !f.removable {
        return Some(format!(
            "{d} ({name}) is not a removable disk: zoffsite writes images only to USB sticks and card readers, \
             so it never overwrites an internal disk; use --output FILE and write it yourself if you must"
        ));
    }
    if !f.mounted.is_empty() {
        return Some(format!("{d} has mounted filesystems ({}): unmount them first", f.mounted.join(", ")));
    }
    if !f.held_by.is_empty() {
        return Some(format!(
            "{d} is in use ({}: an encrypted volume, RAID, LVM or swap on it): close it first",
            f.held_by.join(", ")
        ));
    }
    None
}

/// Reads [`DeviceFacts`] for `dev` from sysfs and `/proc/self/mountinfo`.
pub fn device_facts(dev: &Path) -> DeviceFacts {
    use std::os::unix::fs::FileTypeExt as _;
    let real = fs::canonicalize(dev).unwrap_or_else(|_| dev.to_owned());
    let is_block = fs::metadata(&real).map(|m| m.file_type().is_block_device()).unwrap_or(false);
    let base = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sys = Path::new("/sys/block").join(&base);
    let kernel_name = sys.exists().then(|| base.clone());
    let removable = fs::read_to_string(sys.join("removable")).map(|s| s.trim() == "1").unwrap_or(false);
    let mut mounted = Vec::new();
    if kernel_name.is_some() {
        let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mi.lines() {
            // The mount source is the first field after " - fstype ".
            let Some((_, after)) = line.split_once(" - ") else { continue };
            let Some(src) = after.split(' ').nth(1) else { continue };
            let Some(src_base) = src.strip_prefix("/dev/") else { continue };
            if src_base == base || (src_base.starts_with(&base) && sys.join(src_base).exists()) {
                mounted.push(src.to_owned());
            }
        }
    }
    let mut held_by = Vec::new();
    if kernel_name.is_some() {
        let mut dirs = vec![sys.clone()];
        if let Ok(rd) = fs::read_dir(&sys) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&base) {
                    dirs.push(e.path());
                }
            }
        }
        for d in dirs {
            if let Ok(rd) = fs::read_dir(d.join("holders")) {
                held_by.extend(rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
            }
        }
        let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
        for line in swaps.lines().skip(1) {
            if let Some(src) = line.split_whitespace().next().and_then(|s| s.strip_prefix("/dev/")) {
                if src == base || (src.starts_with(&base) && sys.join(src).exists()) {
                    held_by.push(format!("swap {src}"));
                }
            }
        }
    }
    DeviceFacts { is_block, kernel_name, removable, mounted, held_by }
}

/// Copies the image to its target: a file (0600: it holds the box's
/// private keys), written beside it and renamed; or a disk, refused unless
/// [`write_refusal`] says none, and synced.
pub fn deliver(image: &Path, target: &Target) -> Result<(), ImageError> {
    match target {
        Target::File(out) => {
            let tmp = out.with_extension("zoffsite-part");
            let _ = fs::remove_file(&tmp);
            let mut src = fs::File::open(image).map_err(io_at(image))?;
            let mut dst =
                fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_at(&tmp))?;
            io::copy(&mut src, &mut dst).map_err(io_at(&tmp))?;
            dst.sync_all().map_err(io_at(&tmp))?;
            fs::rename(&tmp, out).map_err(io_at(out))
        }
        Target::Device(dev) => {
            if let Some(why) = write_refusal(dev, &device_facts(dev)) {
                return Err(ImageError::Refused(why));
            }
            let mut src = fs::File::open(image).map_err(io_at(image))?;
            // O_EXCL on a block device: the kernel refuses (EBUSY) one that
            // is mounted or held, also if that happened since the check.
            let mut dst = fs::OpenOptions::new()
                .write(true)
                .custom_flags(rustix::fs::OFlags::EXCL.bits().cast_signed())
                .open(dev)
                .map_err(io_at(dev))?;
            io::copy(&mut src, &mut dst).map_err(io_at(dev))?;
            dst.sync_all().map_err(io_at(dev))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(block: bool, name: Option<&str>, removable: bool, mounted: &[&str]) -> DeviceFacts {
        DeviceFacts {
            is_block: block,
            kernel_name: name.map(str::to_owned),
            removable,
            mounted: mounted.iter().map(|s| (*s).to_owned()).collect(),
            held_by: Vec::new(),
        }
    }

    #[test]
    fn write_goes_only_to_an_unmounted_removable_whole_disk() {
        let d = Path::new("/dev/sdb");
        assert_eq!(write_refusal(d, &facts(true, Some("sdb"), true, &[])), None);
        assert!(write_refusal(d, &facts(false, None, false, &[])).unwrap().contains("not a block device"));
        assert!(write_refusal(d, &facts(true, None, true, &[])).unwrap().contains("partition"));
        assert!(write_refusal(d, &facts(true, Some("sdb"), false, &[])).unwrap().contains("not a removable disk"));
        let m = write_refusal(d, &facts(true, Some("sdb"), true, &["/dev/sdb1"])).unwrap();
        assert!(m.contains("/dev/sdb1") && m.contains("unmount"), "{m}");
        let mut held = facts(true, Some("sdb"), true, &[]);
        held.held_by = vec!["dm-0".into()];
        assert!(write_refusal(d, &held).unwrap().contains("in use (dm-0"));
    }

    #[test]
    fn a_build_tree_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        fs::set_permissions(&work, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_own_dir(&work, "the build tree").unwrap_err().to_string();
        assert!(e.contains("no one else may write") && e.contains("--work DIR"), "{e}");
        fs::set_permissions(&work, fs::Permissions::from_mode(0o700)).unwrap();
        check_own_dir(&work, "the build tree").unwrap();
    }

    #[test]
    fn a_half_key_set_is_refused_and_a_missing_one_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(missing_keys(dir.path()).unwrap(), vec!["PK", "KEK", "db"]);
        fs::write(dir.path().join("PK.key"), "x").unwrap();
        fs::write(dir.path().join("PK.crt"), "x").unwrap();
        assert_eq!(missing_keys(dir.path()).unwrap(), vec!["KEK", "db"]);
        fs::write(dir.path().join("db.crt"), "x").unwrap();
        let e = missing_keys(dir.path()).unwrap_err().to_string();
        assert!(e.contains("db.crt exists without db.key"), "{e}");
    }

    #[test]
    fn keys_and_enrollment_files_are_made_by_the_real_tools() {
        if !Path::new("/usr/bin/sbvarsign").exists() {
            if std::env::var_os("ZOFFSITE_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
                panic!("sbvarsign (sbsigntool) is not installed");
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let made = ensure_keys(&keys, "test").unwrap();
        assert_eq!(made.len(), 7, "{made:?}");
        let mode = fs::metadata(keys.join("db.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(ensure_keys(&keys, "test").unwrap().is_empty(), "made twice");
        let out = dir.path().join("auth");
        make_auth(&keys, &out, &dir.path().join("scratch")).unwrap();
        for (var, _) in VARS {
            let auth = fs::read(out.join(format!("{var}.auth"))).unwrap();
            // An authenticated variable: EFI_TIME (16 bytes), then a
            // WIN_CERTIFICATE_UEFI_GUID whose type is PKCS7 (0x0EF1).
            assert!(auth.len() > 100, "{var}.auth is {} bytes", auth.len());
            assert_eq!(&auth[16 + 6..16 + 8], &[0xf1, 0x0e][..], "{var}.auth has no PKCS7 signature");
        }
    }
}
