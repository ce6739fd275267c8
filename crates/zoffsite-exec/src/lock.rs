//! One run at a time per configuration file.
//!
//! Two `backup` (or `prune`) runs on one config would race on snapshots,
//! holds and the box's partial-receive state. The lock is an advisory
//! `flock` on a file named after the config's canonical path, so it is
//! released by the kernel however the holder dies; the holder's pid is
//! written into it so the loser can say who is running.
//!
//! The file lives in zoffsite's private runtime directory
//! ([`crate::rundir`], `/run/zoffsite`, 0700), not in a world-writable one
//! such as `/run/lock`: there another user could plant a symlink under the
//! predictable name and have root truncate whatever it points to, or hold
//! the lock to stop backups. It is opened relative to the checked directory
//! and with `O_NOFOLLOW`.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::rundir::RunDir;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another zoffsite run (pid {pid}) is already using {config}; wait for it to finish (lock file {lock})")]
    Busy { pid: String, config: String, lock: String },
    #[error("cannot take the run lock {lock}: {source}")]
    Io { lock: String, source: std::io::Error },
    #[error(transparent)]
    RunDir(#[from] crate::rundir::RunDirError),
}

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

/// 64-bit FNV-1a: a stable name for a path (std's hasher is not stable
/// across Rust versions, and two zoffsite builds must agree).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The lock file's name for `config`.
pub fn lock_name(config: &Path) -> String {
    let canonical = config.canonicalize().unwrap_or_else(|_| config.to_owned());
    format!("zoffsite-{:016x}.lock", fnv1a(canonical.as_os_str().as_encoded_bytes()))
}

/// Takes the lock for `config` without waiting, in the runtime directory
/// ([`RunDir::open_default`]).
pub fn acquire_default(config: &Path) -> Result<RunLock, LockError> {
    acquire(&RunDir::open_default()?, config)
}

/// Takes the lock for `config` without waiting.
pub fn acquire(dir: &RunDir, config: &Path) -> Result<RunLock, LockError> {
    let name = lock_name(config);
    let path = dir.path().join(&name);
    let io = |source| LockError::Io { lock: path.display().to_string(), source };
    let mut file = dir.open_file(&name).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim().chars().filter(char::is_ascii_digit).take(10).collect::<String>();
            return Err(LockError::Busy {
                pid: if pid.is_empty() { "unknown".into() } else { pid },
                config: config.display().to_string(),
                lock: path.display().to_string(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(RunLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_is_refused_with_the_holders_pid() {
        let t = tempfile::tempdir().unwrap();
        let dir = &RunDir::open(&t.path().join("run")).unwrap();
        let cfg = t.path().join("zoffsite.toml");
        std::fs::write(&cfg, "").unwrap();
        let held = acquire(dir, &cfg).unwrap();
        let e = acquire(dir, &cfg).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains("zoffsite.toml"), "{msg}");
        // Another config is independent.
        let other = t.path().join("other.toml");
        std::fs::write(&other, "").unwrap();
        let _o = acquire(dir, &other).unwrap();
        drop(held);
        // Another test thread's fork may share the descriptor for the
        // moment before its exec closes it (O_CLOEXEC): allow for that.
        let released = (0..100).any(|_| {
            acquire(dir, &cfg).is_ok() || {
                std::thread::sleep(std::time::Duration::from_millis(10));
                false
            }
        });
        assert!(released, "released on drop");
    }

    #[test]
    fn a_planted_symlink_is_not_followed_and_the_lock_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let t = tempfile::tempdir().unwrap();
        let run = t.path().join("run");
        let dir = RunDir::open(&run).unwrap();
        let cfg = t.path().join("zoffsite.toml");
        std::fs::write(&cfg, "").unwrap();
        // What another user would have done in /run/lock: a symlink under
        // the lock's predictable name, to a file root must not truncate.
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, run.join(lock_name(&cfg))).unwrap();
        let e = acquire(&dir, &cfg).unwrap_err();
        assert!(matches!(e, LockError::Io { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        std::fs::remove_file(run.join(lock_name(&cfg))).unwrap();
        let l = acquire(&dir, &cfg).unwrap();
        assert!(l.path.starts_with(&run));
        assert_eq!(std::fs::metadata(&l.path).unwrap().permissions().mode() & 0o777, 0o600);
        // The runtime directory, as root uses it, is not /run/lock.
        assert_eq!(crate::rundir::SYSTEM_DIR, "/run/zoffsite");
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
