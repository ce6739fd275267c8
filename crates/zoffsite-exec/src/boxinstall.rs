//! `zoffsite box install`'s shell: gathers the installer's facts
//! ([`gather`]) for [`zoffsite_core::image::install::plan`], carries out
//! the plan ([`execute`]) and writes the report ([`write_report`]).
//!
//! Invariants:
//! - Every absolute path read is under [`Env::root`] (`/` on the stick; a
//!   tree of fixture files in tests), every tool is looked up in
//!   [`Env::bin`] when set (fake tools in tests), every file read is
//!   bounded and every tool runs through [`crate::process`] with a
//!   deadline and bounded output.
//! - The one-time LUKS key is 64 bytes from the kernel's random source, in a
//!   new 0700 directory of zoffsite's runtime directory (`/run/zoffsite`),
//!   created 0600 and exclusive, on a file system in memory (refused
//!   otherwise, [`Env::require_memory_fs`]), overwritten and removed when
//!   the run ends, however it ends.
//! - The recovery key is written to the report as soon as it exists (and
//!   again at the end): a run that fails or loses power after that still
//!   leaves the owner the key to the disk it made.
//! - Nothing is changed on a disk before `systemd-repart --dry-run=yes`
//!   accepted the plan; a failure before the real repart is a refusal
//!   ("nothing was changed"), one after it says what was done and how to
//!   start over.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zoffsite_core::image::install::{
    self, BundleFacts, ByIdLink, Command, Facts, InstallPlan, Outcome, Report, REPORT_JSON, REPORT_TEXT,
};
use zoffsite_core::names::Dataset;
use zoffsite_core::provision::bundle::Side;

use crate::doctor::read_file;
use crate::events::Events;
use crate::process::{self, Cmd};
use crate::rundir::{PrivateDir, RunDir};

/// Most bytes read from an efivars or sysfs file.
const SMALL: usize = 4096;
/// Most entries of `/dev/disk/by-id` read.
const MAX_LINKS: usize = 4096;
/// Most bytes a tool may print (luksDump's JSON is a few KiB).
const OUTPUT_LIMIT: usize = 4 << 20;
/// Bytes of the one-time key.
const KEY_BYTES: usize = 64;
/// File systems in memory (`statfs`'s `f_type`): tmpfs and ramfs.
const MEMORY_FS: [u64; 2] = [0x0102_1994, 0x8584_58f6];

/// Where the installer looks and how long its tools may run.
#[derive(Debug, Clone)]
pub struct Env {
    /// Prefix of every absolute path read: `/` on the stick.
    pub root: PathBuf,
    /// The directory of the tools (`None`: PATH and the sbin directories).
    pub bin: Option<PathBuf>,
    /// How long a quick tool may run (lsblk, luksDump, udevadm).
    pub deadline: Duration,
    /// How long repart may copy the root and zpool make the pool.
    pub long_deadline: Duration,
    /// Refuse a runtime directory that is not in memory (tests turn it off).
    pub require_memory_fs: bool,
    /// The runtime directory (`None`: [`RunDir::open_default`]).
    pub run_dir: Option<PathBuf>,
    /// The zoffsite that installs the bundle into the new root (`None`:
    /// this one).
    pub exe: Option<PathBuf>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            root: PathBuf::from("/"),
            bin: None,
            deadline: Duration::from_secs(120),
            long_deadline: Duration::from_secs(3600),
            require_memory_fs: true,
            run_dir: None,
            exe: None,
        }
    }
}

impl Env {
    /// `abs` (an absolute path) under [`Env::root`].
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    fn program(&self, name: &str) -> OsString {
        match &self.bin {
            // By its file name: the plan names zoffsite by its path.
            Some(d) => d.join(Path::new(name).file_name().unwrap_or(name.as_ref())).into_os_string(),
            None => process::find_program(name),
        }
    }

    fn cmd(&self, argv: &[String]) -> Cmd {
        Cmd::new(self.program(&argv[0])).args(&argv[1..])
    }
}

// ---------------------------------------------------------------------------
// Facts

/// The bundle's facts: its box name, the pool from `[init].root`, its
/// SHA-256 (read as `box apply` reads it: root's regular file, 0600).
pub fn bundle_facts(path: &Path) -> Result<BundleFacts, String> {
    let read = crate::boxapply::read_bundle(path).map_err(|e| e.to_string())?;
    if read.bundle.side != Side::Box {
        return Err(format!("{} is the {} bundle, not the box's", path.display(), read.bundle.side));
    }
    let init = read.bundle.init.as_ref().ok_or_else(|| format!("{} has no [init]", path.display()))?;
    let pool = Dataset::new(init.root.pool()).map_err(|e| format!("the pool of {}: {e}", init.root))?;
    Ok(BundleFacts { name: read.bundle.name.to_string(), pool, sha256: read.sha256 })
}

/// Whether `dir` can take the report: made if missing, and (unless
/// `dry_run`, which writes nothing) a probe file written, synced and
/// removed. Its absolute path, or why not.
pub fn report_dir(dir: &Path, dry_run: bool) -> Result<String, String> {
    let shown = dir.display();
    let usable = |d: &Path| -> Result<String, String> {
        let abs = d.canonicalize().map_err(|e| format!("{shown}: {e}"))?;
        if !abs.is_dir() {
            return Err(format!("{shown} is not a directory"));
        }
        abs.to_str().map(str::to_owned).ok_or_else(|| format!("{shown} is not UTF-8"))
    };
    if dry_run {
        let existing = if dir.exists() { dir } else { dir.parent().unwrap_or(Path::new("/")) };
        rustix::fs::access(existing, rustix::fs::Access::WRITE_OK)
            .map_err(|e| format!("{} is not writable: {e}", existing.display()))?;
        return if dir.exists() { usable(dir) } else { Ok(format!("{shown} (made by a real run)")) };
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {shown}: {e}"))?;
    let probe = dir.join(".zoffsite-install.probe");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&probe)?;
        f.write_all(b"probe\n")?;
        f.sync_all()
    };
    let r = write();
    let _ = std::fs::remove_file(&probe);
    r.map_err(|e| format!("cannot write in {shown}: {e}"))?;
    usable(dir)
}

fn read_text(env: &Env, abs: &str) -> Result<Option<String>, String> {
    read_file(&env.path(abs), SMALL)?
        .map(|b| String::from_utf8(b).map_err(|_| format!("{abs} is not UTF-8 text")))
        .transpose()
}

fn tpm_device(env: &Env) -> Result<bool, String> {
    match std::fs::metadata(env.path(install::TPM_DEVICE)) {
        Ok(m) => Ok(m.file_type().is_char_device()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{}: {e}", install::TPM_DEVICE)),
    }
}

/// The disks as lsblk lists them.
pub fn lsblk(env: &Env) -> Result<Vec<install::BlockDevice>, String> {
    let mut argv = vec!["lsblk".to_owned()];
    argv.extend(install::lsblk_args());
    let out =
        process::run_by(&env.cmd(&argv), install::LSBLK_MAX_BYTES, Some(env.deadline)).map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!("lsblk failed: {}", first_line(&out.stderr)));
    }
    install::parse_lsblk(&out.stdout)
}

fn by_id(env: &Env) -> Result<Vec<ByIdLink>, String> {
    let dir = env.path(install::BY_ID_DIR);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        // No stable names at all (some virtual disks): the kernel's are used.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", install::BY_ID_DIR)),
    };
    let mut links = Vec::new();
    for e in rd {
        let e = e.map_err(|e| format!("{}: {e}", install::BY_ID_DIR))?;
        if links.len() == MAX_LINKS {
            return Err(format!("{} has more than {MAX_LINKS} entries", install::BY_ID_DIR));
        }
        let (Some(name), Ok(target)) = (e.file_name().to_str().map(str::to_owned), std::fs::read_link(e.path())) else {
            continue;
        };
        if let Some(target) = target.to_str() {
            links.push(ByIdLink { name, target: target.to_owned() });
        }
    }
    links.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(links)
}

/// Everything [`install::plan`] needs.
pub fn gather(env: &Env, bundle: &Path, report: &Path, dry_run: bool) -> Facts {
    let efivar = |name: &str| read_file(&env.path(&zoffsite_core::doctor::firmware::efivar_path(name)), SMALL);
    Facts {
        report_dir: report_dir(report, dry_run),
        bundle: bundle_facts(bundle),
        efi: env.path(install::EFI_DIR).is_dir(),
        secure_boot: efivar("SecureBoot"),
        setup_mode: efivar("SetupMode"),
        tpm_version: read_text(env, zoffsite_core::doctor::firmware::TPM_VERSION_PATH),
        tpm_device: tpm_device(env),
        lsblk: lsblk(env),
        by_id: by_id(env),
    }
}

// ---------------------------------------------------------------------------
// The report

/// Writes `name` in `dir` with `text`: a temporary file, synced, renamed
/// over the old one, the directory synced (the unit powers the box off
/// right after, and the stick's FAT keeps only what reached it).
fn write_synced(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the report (text and JSON) into `dir`. A report without a
/// recovery key never replaces one with a key: a stick booted again on an
/// installed box (it refuses: the disks are no longer blank) must not
/// destroy the only copy of that box's key. It then goes beside it, named
/// by its time. Returns the text report's file name.
pub fn write_report(dir: &Path, r: &Report) -> Result<String, String> {
    let holds_key = |name: &str| std::fs::read(dir.join(name)).is_ok_and(|b| install::report_holds_key(&b));
    let (text, json) = if r.recovery_key.is_none() && holds_key(REPORT_JSON) {
        let stem = REPORT_TEXT.trim_end_matches(".txt");
        (format!("{stem}-{}.txt", r.time), format!("{stem}-{}.json", r.time))
    } else {
        (REPORT_TEXT.to_owned(), REPORT_JSON.to_owned())
    };
    write_synced(dir, &text, &install::render_text(r))
        .and_then(|()| write_synced(dir, &json, &install::render_json_text(r)))
        .map_err(|e| format!("cannot write the report into {}: {e}", dir.display()))?;
    Ok(text)
}

// ---------------------------------------------------------------------------
// Execution

/// The one-time key and the definitions, in a private directory; removed
/// (the key overwritten first) when dropped.
struct Scratch {
    /// Held for its drop, which removes the directory.
    _dir: PrivateDir,
    key: PathBuf,
    defs: PathBuf,
}

impl Scratch {
    fn new(env: &Env, plan: &InstallPlan) -> Result<Scratch, String> {
        let run = match &env.run_dir {
            Some(p) => RunDir::open(p),
            None => RunDir::open_default(),
        }
        .map_err(|e| e.to_string())?;
        let dir = run.private_dir("install-").map_err(|e| format!("cannot make a private directory: {e}"))?;
        if env.require_memory_fs {
            let st = rustix::fs::statfs(dir.path()).map_err(|e| format!("{}: {e}", dir.path().display()))?;
            let kind = u64::try_from(st.f_type).unwrap_or(0);
            if !MEMORY_FS.contains(&kind) {
                return Err(format!(
                    "{} is not on a file system in memory (tmpfs): the one-time disk key must never reach a disk",
                    dir.path().display()
                ));
            }
        }
        let key = dir.path().join("key");
        let defs = dir.subdir("repart.d").map_err(|e| format!("cannot make the definitions' directory: {e}"))?;
        let s = Scratch { _dir: dir, key, defs };
        let mut bytes = [0u8; KEY_BYTES];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?,
            &mut bytes,
        )
        .map_err(|e| format!("/dev/urandom: {e}"))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&s.key)
            .map_err(|e| format!("cannot make the key file: {e}"))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| format!("cannot write the key file: {e}"))?;
        for d in &plan.definitions {
            std::fs::write(s.defs.join(d.file), &d.text).map_err(|e| format!("cannot write {}: {e}", d.file))?;
        }
        Ok(s)
    }

    fn key(&self) -> &str {
        self.key.to_str().unwrap_or_default()
    }

    fn defs(&self) -> &str {
        self.defs.to_str().unwrap_or_default()
    }

    /// Overwrites and removes the key file (done as soon as its slot is
    /// wiped, and again on drop).
    fn forget_key(&self) {
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&self.key) {
            let _ = f.write_all(&[0u8; KEY_BYTES]).and_then(|()| f.sync_all());
        }
        let _ = std::fs::remove_file(&self.key);
    }
}

impl Drop for Scratch {
    /// The key and the definitions go; the directories (then empty) go
    /// with [`PrivateDir`]'s own drop.
    fn drop(&mut self) {
        self.forget_key();
        if let Ok(rd) = std::fs::read_dir(&self.defs) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn first_line(s: &str) -> String {
    zoffsite_core::protocol::sanitize(s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("(no message)"), 300)
}

/// What a step of [`execute`] failed with.
struct StepError(String);

/// Runs `c` (stdin `input`, when given) within `deadline`; its stdout when
/// it succeeded.
fn run(env: &Env, c: &Command, input: Option<&[u8]>, deadline: Duration) -> Result<Vec<u8>, StepError> {
    let cmd = env.cmd(&c.argv);
    let out = match input {
        Some(i) => process::run_with_input(&cmd, i, OUTPUT_LIMIT, Some(deadline)),
        None => process::run_by(&cmd, OUTPUT_LIMIT, Some(deadline)),
    }
    .map_err(|e| StepError(e.to_string()))?;
    if !out.success() {
        return Err(StepError(format!("`{}` failed ({}): {}", c.argv.join(" "), out.status, first_line(&out.stderr))));
    }
    Ok(out.stdout)
}

/// `systemd-repart --dry-run=yes` of `plan` (its definitions and a key
/// file in a scratch directory that is gone when this returns): what `-n`
/// runs. Changes no disk.
pub fn repart_check(env: &Env, plan: &InstallPlan) -> Result<(), String> {
    let scratch = Scratch::new(env, plan)?;
    run(env, &plan.repart(scratch.defs(), scratch.key(), true), None, env.deadline)
        .map(|_| ())
        .map_err(|StepError(e)| e)
}

/// Carries out `plan`, recording in `report` what was done (and the
/// recovery key), writing the report into `report_dir` as soon as the
/// recovery key exists. Sets `report.outcome`: [`Outcome::Installed`],
/// [`Outcome::Refused`] (nothing was changed: repart's dry run or the
/// scratch directory failed) or [`Outcome::Failed`].
pub fn execute(
    env: &Env,
    plan: &InstallPlan,
    bundle: &Path,
    report: &mut Report,
    report_dir: &Path,
    events: &mut dyn Events,
) {
    let refuse = |report: &mut Report, reason: String, fix: &str| {
        report.outcome = Outcome::Refused { reason, fix: fix.to_owned() };
    };
    // Held open until the report is written. The report directory is on
    // the stick's ESP, which systemd's gpt-auto generator mounts on /boot
    // through an automount that unmounts it after two idle minutes, and the
    // install unit requires that mount (`RequiresMountsFor=`): when repart's
    // copy took longer than that (the image test, under load), the idle
    // unmount stopped the unit with no word. An open directory keeps the
    // mount busy. Failing to open it is not fatal here: writing the report
    // says what is wrong.
    let _keep_mounted = std::fs::File::open(report_dir).ok();
    let scratch = match Scratch::new(env, plan) {
        Ok(s) => s,
        Err(e) => return refuse(report, e, "the stick's /run (a memory file system) could not take the one-time key: boot the stick again; if it happens again, rebuild it with `zoffsite box image`"),
    };
    let check = plan.repart(scratch.defs(), scratch.key(), true);
    events.line(&format!("checking the plan with {}", check.argv.join(" ")));
    if let Err(StepError(e)) = run(env, &check, None, env.deadline) {
        return refuse(
            report,
            format!("systemd-repart refuses the plan: {e}"),
            "systemd-repart's message says why; the stick's root must be a partition of type root (the image's)",
        );
    }
    report.done.push(check.why.to_owned());
    if let Err((step, error)) = install_steps(env, plan, bundle, &scratch, report, report_dir, events) {
        let fix = format!(
            "the disks are no longer blank: to start over, wipe both ({} and {}: `wipefs -a` on each, with the disks in another computer; the stick has no login) and boot the stick again{}",
            plan.system.path,
            plan.data.path,
            if report.recovery_key.is_some() { "; the recovery key above is then worthless" } else { "" }
        );
        report.outcome = Outcome::Failed { step, error, fix };
        return;
    }
    report.outcome = Outcome::Installed;
}

fn install_steps(
    env: &Env,
    plan: &InstallPlan,
    bundle: &Path,
    scratch: &Scratch,
    report: &mut Report,
    report_dir: &Path,
    events: &mut dyn Events,
) -> Result<(), (String, String)> {
    let fail = |c: &Command| {
        let why = c.why.to_owned();
        move |StepError(e): StepError| (why, e)
    };
    let mut step = |report: &mut Report, c: &Command, deadline: Duration, input: Option<&[u8]>| {
        events.line(&format!("{}: {}", c.why, c.argv.join(" ")));
        let out = run(env, c, input, deadline).map_err(fail(c))?;
        report.done.push(c.why.to_owned());
        Ok::<Vec<u8>, (String, String)>(out)
    };
    let c = plan.repart(scratch.defs(), scratch.key(), false);
    step(report, &c, env.long_deadline, None)?;
    step(report, &plan.settle(), env.deadline, None)?;

    let c = plan.recovery_key(scratch.key());
    let out = step(report, &c, env.deadline, None)?;
    let key = install::parse_recovery_key(&out).map_err(|e| (c.why.to_owned(), e))?;
    report.recovery_key = Some(key.clone());
    // Written now: from here on the disk exists with this key.
    report.outcome = Outcome::Failed {
        step: "the install did not finish (this report was written as soon as the recovery key existed)".into(),
        error: "interrupted".into(),
        fix: format!("wipe both disks (`wipefs -a {} {}`) and boot the stick again", plan.system.path, plan.data.path),
    };
    if let Err(e) = write_report(report_dir, report) {
        return Err(("write the recovery key to the report".into(), e));
    }

    // The copied root becomes the box's: the bundle installed into it, its
    // units switched, while the one-time key still opens it.
    step(report, &plan.open_root(scratch.key()), env.deadline, None)?;
    let exe = match &env.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe().map_err(|e| ("find this zoffsite binary".to_owned(), e.to_string()))?,
    }
    .to_string_lossy()
    .into_owned();
    let target = env.path(install::TARGET_MOUNT);
    std::fs::create_dir_all(&target).map_err(|e| (format!("make {}", target.display()), e.to_string()))?;
    let finish = plan.finish(&exe, &bundle.to_string_lossy());
    let (grow_mount, rest) = finish.split_at(2);
    let result = (|| {
        for c in grow_mount {
            step(report, c, env.long_deadline, None)?;
        }
        // The root's fstab: read-write (the stick's root stays read-only).
        let etc = target.join("etc");
        std::fs::create_dir_all(&etc)
            .and_then(|()| std::fs::write(etc.join("fstab"), zoffsite_core::image::build::FSTAB))
            .map_err(|e| ("write the new root's /etc/fstab".to_owned(), e.to_string()))?;
        for c in rest {
            step(report, c, env.long_deadline, None)?;
        }
        Ok::<(), (String, String)>(())
    })();
    if result.is_err() {
        // Leave nothing open on the way out; the report says what failed.
        let _ = run(
            env,
            &Command { argv: vec!["umount".into(), install::TARGET_MOUNT.into()], why: "" },
            None,
            env.deadline,
        );
        let _ = run(
            env,
            &Command { argv: vec!["cryptsetup".into(), "close".into(), install::TARGET_MAPPER.into()], why: "" },
            None,
            env.deadline,
        );
    }
    result?;

    // The recovery key must open the root before the one-time key goes:
    // otherwise a bad key would leave only the TPM.
    step(report, &plan.test_recovery_key(), env.deadline, Some(key.expose().as_bytes()))?;
    let dump = plan.luks_dump();
    let header = String::from_utf8_lossy(&step(report, &dump, env.deadline, None)?).into_owned();
    let slot =
        install::parse_keyslots(&header).and_then(|k| k.key_file_slot()).map_err(|e| (dump.why.to_owned(), e))?;
    step(report, &plan.wipe_slot(scratch.key(), slot), env.deadline, None)?;
    scratch.forget_key();
    let header = String::from_utf8_lossy(&step(report, &dump, env.deadline, None)?).into_owned();
    install::parse_keyslots(&header)
        .and_then(|k| k.check_final())
        .and_then(|()| install::check_tpm2_pcr7(&header))
        .map_err(|e| ("check the root's key slots".to_owned(), e))?;

    step(report, &plan.zpool_create(), env.long_deadline, None)?;
    step(report, &plan.zpool_export(), env.deadline, None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use zoffsite_core::image::install::{plan, Role};

    use super::*;
    use crate::events::Recorded;

    const KEY: &str = "fjfhcgbd-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj-uurvtlhi";

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../zoffsite-core/testdata/install").join(name)
    }

    /// A box as the installer sees it: efivars, the TPM, by-id links under
    /// a fake root; lsblk, repart, cryptenroll, cryptsetup and zpool as
    /// scripts that log their argv (and stdin) and answer as the real ones
    /// did (the headers are `testdata/install`'s real ones).
    struct World {
        dir: tempfile::TempDir,
        env: Env,
    }

    impl World {
        /// Plans the install from this world's facts and carries it out,
        /// the report started at `now`.
        fn install(&self, now: i64) -> Report {
            let p = plan(&self.facts()).unwrap();
            let mut r = Report::planned(&p, now, Outcome::Installed);
            execute(
                &self.env,
                &p,
                Path::new("/usr/lib/zoffsite/box.bundle"),
                &mut r,
                &self.report_dir(),
                &mut Recorded::default(),
            );
            r
        }

        fn new(lsblk_json: &str) -> World {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            let efivars = root.join("sys/firmware/efi/efivars");
            std::fs::create_dir_all(&efivars).unwrap();
            let guid = zoffsite_core::doctor::firmware::EFI_GLOBAL_GUID;
            std::fs::write(efivars.join(format!("SecureBoot-{guid}")), [6, 0, 0, 0, 1]).unwrap();
            std::fs::write(efivars.join(format!("SetupMode-{guid}")), [6, 0, 0, 0, 0]).unwrap();
            std::fs::create_dir_all(root.join("sys/class/tpm/tpm0")).unwrap();
            std::fs::write(root.join("sys/class/tpm/tpm0/tpm_version_major"), "2\n").unwrap();
            std::fs::create_dir_all(root.join("dev/disk/by-id")).unwrap();
            std::os::unix::fs::symlink("/dev/null", root.join("dev/tpmrm0")).unwrap();
            std::os::unix::fs::symlink("../../sdb", root.join("dev/disk/by-id/ata-WDC_WD20EFRX_WD-1")).unwrap();
            std::os::unix::fs::symlink("../../sdb", root.join("dev/disk/by-id/wwn-0x50014ee2")).unwrap();
            std::fs::create_dir_all(dir.path().join("esp/zoffsite")).unwrap();
            let bin = dir.path().join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let log = dir.path().join("log");
            std::fs::write(dir.path().join("lsblk.json"), lsblk_json).unwrap();
            let d = dir.path().display();
            let script = |name: &str, body: &str| {
                let p = bin.join(name);
                std::fs::write(&p, format!("#!/bin/sh\necho \"{name} $*\" >>{}\n{body}\n", log.display())).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            };
            script("lsblk", &format!("cat {d}/lsblk.json"));
            script("systemd-repart", "exit 0");
            script("udevadm", "exit 0");
            script(
                "systemd-cryptenroll",
                &format!(
                    "case \"$*\" in *--recovery-key*) echo {KEY}; echo 'New recovery key enrolled as key slot 2.' >&2;; *--wipe-slot=*) touch {d}/wiped;; esac"
                ),
            );
            script(
                "cryptsetup",
                &format!(
                    "case \"$1\" in luksDump) if [ -e {d}/wiped ]; then cat {}; else cat {}; fi;; open) case \"$*\" in *--test-passphrase*) [ \"$(cat)\" = {KEY} ];; esac;; esac",
                    fixture("luks2-tpm2-recovery.json").display(),
                    fixture("luks2-keyfile-tpm2-recovery.json").display(),
                ),
            );
            for tool in ["resize2fs", "mount", "umount", "systemctl", "zoffsite"] {
                script(tool, "exit 0");
            }
            script(
                "zpool",
                &format!("[ -e {d}/zpool-fails ] && {{ echo 'cannot create: busy' >&2; exit 1; }}; exit 0"),
            );
            let env = Env {
                root,
                bin: Some(bin),
                deadline: Duration::from_secs(20),
                long_deadline: Duration::from_secs(20),
                require_memory_fs: false,
                run_dir: Some(dir.path().join("run")),
                exe: Some(PathBuf::from("/usr/local/bin/zoffsite")),
            };
            World { dir, env }
        }

        fn esp(&self) -> String {
            self.dir.path().join("esp").to_str().unwrap().to_owned()
        }

        fn report_dir(&self) -> PathBuf {
            self.dir.path().join("esp/zoffsite")
        }

        fn log(&self) -> Vec<String> {
            std::fs::read_to_string(self.dir.path().join("log"))
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        }

        fn facts(&self) -> Facts {
            let mut f = gather(&self.env, &self.dir.path().join("no-bundle"), &self.report_dir(), false);
            assert!(f.bundle.is_err(), "no bundle there");
            f.bundle = Ok(BundleFacts {
                name: "friend".into(),
                pool: Dataset::new("offsite").unwrap(),
                sha256: "00".repeat(32),
            });
            f
        }
    }

    /// lsblk 2.38's JSON of a mini PC: the stick (ESP on `esp`, root on
    /// /), a 256 GiB and a 2 TiB blank disk.
    fn mini_pc(esp: &str) -> String {
        let dev = |path: &str, kind: &str, size: u64, mounts: &str, rest: &str| {
            let name = path.rsplit('/').next().unwrap();
            format!(
                r#"{{"name": "{name}", "path": "{path}", "type": "{kind}", "size": {size}, "rm": false, "ro": false,
                "pttype": {pt}, "parttype": {parttype}, "fstype": null, "mountpoints": [{mounts}], "tran": null,
                "model": null, "serial": null{rest}}}"#,
                pt = if path == "/dev/sda" { "\"gpt\"".to_owned() } else { "null".to_owned() },
                parttype =
                    if path == "/dev/sda1" { format!("\"{}\"", install::ESP_PARTTYPE) } else { "null".to_owned() },
            )
        };
        let children = format!(
            r#", "children": [{}, {}]"#,
            dev("/dev/sda1", "part", 512 << 20, &format!("\"{esp}\""), ""),
            dev("/dev/sda2", "part", 4 << 30, "\"/\"", "")
        );
        format!(
            r#"{{"blockdevices": [{}, {}, {}]}}"#,
            dev("/dev/sda", "disk", 32 << 30, "null", &children),
            dev("/dev/nvme0n1", "disk", 256 << 30, "null", ""),
            dev("/dev/sdb", "disk", 2048 << 30, "null", "")
        )
    }

    fn world() -> World {
        let w = World::new("");
        std::fs::write(w.dir.path().join("lsblk.json"), mini_pc(&w.esp())).unwrap();
        w
    }

    #[test]
    fn gather_reads_the_fake_root_and_the_plan_is_made_from_it() {
        let w = world();
        let f = w.facts();
        assert!(f.efi);
        assert_eq!(f.secure_boot, Ok(Some(vec![6, 0, 0, 0, 1])));
        assert_eq!(f.tpm_version, Ok(Some("2\n".into())));
        assert_eq!(f.tpm_device, Ok(true), "a character device");
        assert_eq!(f.report_dir.as_deref(), Ok(w.report_dir().canonicalize().unwrap().to_str().unwrap()));
        let p = plan(&f).expect("a plan");
        assert_eq!(p.data.stable, "/dev/disk/by-id/ata-WDC_WD20EFRX_WD-1");
        assert_eq!(p.system.path, "/dev/nvme0n1");
        assert!(!w.report_dir().join(".zoffsite-install.probe").exists(), "the probe is removed");
        // Without a TPM device, and with a regular file where it should be.
        std::fs::remove_file(w.env.path(install::TPM_DEVICE)).unwrap();
        assert_eq!(tpm_device(&w.env), Ok(false));
        std::fs::write(w.env.path(install::TPM_DEVICE), "").unwrap();
        assert_eq!(tpm_device(&w.env), Ok(false), "not a character device");
        // No by-id directory: no links, not an error.
        std::fs::remove_dir_all(w.env.path(install::BY_ID_DIR)).unwrap();
        assert_eq!(by_id(&w.env), Ok(Vec::new()));
    }

    #[test]
    fn the_report_directory_is_held_open_while_repart_copies_the_root() {
        let w = world();
        // repart fails unless its parent (this process) holds the report
        // directory open: an idle automount must not unmount it mid-copy.
        let repart = w.env.bin.as_ref().unwrap().join("systemd-repart");
        std::fs::write(
            &repart,
            format!(
                "#!/bin/sh\nls -l /proc/$PPID/fd | grep -qF -- '{}' || {{ echo 'the report directory is not held open' >&2; exit 1; }}\n",
                w.report_dir().display()
            ),
        )
        .unwrap();
        let r = w.install(1_796_000_000);
        assert_eq!(r.outcome, Outcome::Installed, "{:?}", r.outcome);
    }

    #[test]
    fn an_install_runs_every_step_in_order_and_leaves_the_key_only_in_the_report() {
        let w = world();
        let p = plan(&w.facts()).unwrap();
        let mut r = Report::planned(&p, 1_796_000_000, Outcome::Installed);
        let mut ev = Recorded::default();
        execute(&w.env, &p, Path::new("/usr/lib/zoffsite/box.bundle"), &mut r, &w.report_dir(), &mut ev);
        assert_eq!(r.outcome, Outcome::Installed, "{:?}", r.outcome);
        assert_eq!(r.recovery_key.as_ref().map(install::RecoveryKey::expose), Some(KEY));
        let log = w.log();
        let programs: Vec<&str> =
            log.iter().filter(|l| !l.starts_with("lsblk")).map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(
            programs,
            [
                "systemd-repart",
                "systemd-repart",
                "udevadm",
                "systemd-cryptenroll",
                "cryptsetup",
                "mount",
                "resize2fs",
                "zoffsite",
                "systemctl",
                "systemctl",
                "umount",
                "cryptsetup",
                "cryptsetup",
                "cryptsetup",
                "systemd-cryptenroll",
                "cryptsetup",
                "zpool",
                "zpool"
            ]
        );
        assert!(
            log[1].contains("--dry-run=yes") && log[2].contains("--dry-run=no") && log[2].ends_with(" /dev/nvme0n1")
        );
        assert!(log.iter().any(|l| l.starts_with("systemd-cryptenroll") && l.contains("--wipe-slot=0 /dev/nvme0n1p2")));
        // The copied root is made the box's before the one-time key goes.
        assert!(
            log.iter()
                .any(|l| l == "zoffsite box apply --root /run/zoffsite/target --offline /usr/lib/zoffsite/box.bundle"),
            "{log:?}"
        );
        assert!(log.iter().any(|l| l == "systemctl --root=/run/zoffsite/target disable zoffsite-install.service"));
        assert!(log
            .iter()
            .any(|l| l == "systemctl --root=/run/zoffsite/target enable zoffsite-firstboot.service ssh.service"));
        let fstab = std::fs::read_to_string(w.env.path("/run/zoffsite/target/etc/fstab")).unwrap();
        assert!(fstab.contains("/dev/gpt-auto-root / ext4 rw"), "{fstab}");
        assert!(log.iter().any(|l| l == "zpool create -o ashift=12 -o cachefile=none -O mountpoint=none -O canmount=off offsite /dev/disk/by-id/ata-WDC_WD20EFRX_WD-1"));
        // The key file is gone with its directory; the definitions too.
        let run = w.dir.path().join("run");
        assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0, "the scratch directory is removed");
        // The report written during the run holds the key; the command
        // writes the final one.
        let text = std::fs::read_to_string(w.report_dir().join(REPORT_TEXT)).unwrap();
        assert!(text.contains(KEY) && text.contains("WRITE THIS DOWN"), "{text}");
        write_report(&w.report_dir(), &r).unwrap();
        let json = std::fs::read_to_string(w.report_dir().join(REPORT_JSON)).unwrap();
        assert!(
            json.contains("\"outcome\": \"installed\"") && json.contains(&format!("\"recovery_key\": \"{KEY}\"")),
            "{json}"
        );
        assert_eq!(std::fs::read_dir(w.report_dir()).unwrap().count(), 2, "no temporary file left");
    }

    #[test]
    fn a_failure_after_the_recovery_key_keeps_it_in_the_report_and_says_how_to_start_over() {
        let w = world();
        std::fs::write(w.dir.path().join("zpool-fails"), "").unwrap();
        let r = w.install(0);
        let Outcome::Failed { step, error, fix } = &r.outcome else { panic!("{:?}", r.outcome) };
        assert_eq!(step, "create the pool on the data disk");
        assert!(error.contains("cannot create: busy"), "{error}");
        assert!(fix.contains("(/dev/nvme0n1 and /dev/sdb: `wipefs -a` on each"), "{fix}");
        assert!(r.recovery_key.is_some());
        let text = std::fs::read_to_string(w.report_dir().join(REPORT_TEXT)).unwrap();
        assert!(text.contains(KEY), "written as soon as it existed");
    }

    #[test]
    fn repart_refusing_the_dry_run_changes_nothing() {
        let w = world();
        let repart = w.env.bin.as_ref().unwrap().join("systemd-repart");
        std::fs::write(
            &repart,
            "#!/bin/sh\necho 'Unable to automatically discover suitable partition to copy blocks from.' >&2\nexit 1\n",
        )
        .unwrap();
        let p = plan(&w.facts()).unwrap();
        assert!(repart_check(&w.env, &p).unwrap_err().contains("Unable to automatically discover"));
        let r = w.install(0);
        let Outcome::Refused { reason, .. } = &r.outcome else { panic!("{:?}", r.outcome) };
        assert!(reason.contains("systemd-repart refuses the plan"), "{reason}");
        assert!(r.done.is_empty() && r.recovery_key.is_none());
        assert!(!w.log().iter().any(|l| l.starts_with("zpool") || l.starts_with("systemd-cryptenroll")));
    }

    #[test]
    fn a_key_that_does_not_open_the_root_fails_the_install() {
        let w = world();
        let cs = w.env.bin.as_ref().unwrap().join("cryptsetup");
        let body = std::fs::read_to_string(&cs).unwrap().replace(&format!("= {KEY} ]"), "= other ]");
        std::fs::write(&cs, body).unwrap();
        let r = w.install(0);
        assert!(
            matches!(&r.outcome, Outcome::Failed { step, .. } if step == "check that the recovery key opens the root")
        );
        assert!(!w.log().iter().any(|l| l.starts_with("zpool")), "no pool on a box whose key does not work");
        assert!(matches!(r.disks.iter().find(|d| d.path == "/dev/sdb").map(|d| &d.role), Some(Role::Data)));
    }

    #[test]
    fn a_report_without_a_key_never_replaces_one_with_a_key() {
        let w = world();
        let p = plan(&w.facts()).unwrap();
        let mut installed = Report::planned(&p, 100, Outcome::Installed);
        installed.recovery_key = Some(install::parse_recovery_key(format!("{KEY}\n").as_bytes()).unwrap());
        assert_eq!(write_report(&w.report_dir(), &installed).unwrap(), REPORT_TEXT);
        // The stick booted again on the installed box: refused, no key.
        let refused = Report::planned(&p, 200, Outcome::Refused { reason: "not blank".into(), fix: "-".into() });
        let name = write_report(&w.report_dir(), &refused).unwrap();
        assert_eq!(name, "zoffsite-install-200.txt");
        let kept = std::fs::read_to_string(w.report_dir().join(REPORT_TEXT)).unwrap();
        assert!(kept.contains(KEY), "the key's report was replaced: {kept}");
        assert!(std::fs::read_to_string(w.report_dir().join(&name)).unwrap().contains("not blank"));
    }

    #[test]
    fn the_report_dir_must_be_writable() {
        let w = world();
        assert!(report_dir(&w.dir.path().join("new/dir"), false).is_ok(), "made when missing");
        assert!(report_dir(&w.dir.path().join("other"), true).unwrap().contains("made by a real run"));
        assert!(!w.dir.path().join("other").exists(), "-n makes nothing");
        let file = w.dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(report_dir(&file, false).is_err());
    }
}
