//! One run at a time per configuration file.
//!
//! Two `backup` (or `prune`) runs on one config would race on snapshots,
//! holds and the box's partial-receive state. The lock is an advisory
//! `flock` on a file named after the config's canonical path, so it is
//! released by the kernel however the holder dies; the holder's pid is
//! written into it so the loser can say who is running.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another zoffsite run (pid {pid}) is already using {config}; wait for it to finish (lock file {lock})")]
    Busy { pid: String, config: String, lock: String },
    #[error("cannot take the run lock {lock}: {source}")]
    Io { lock: String, source: std::io::Error },
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

/// The lock file for `config`, in `dir`.
pub fn lock_path(dir: &Path, config: &Path) -> PathBuf {
    let canonical = config.canonicalize().unwrap_or_else(|_| config.to_owned());
    dir.join(format!("zoffsite-{:016x}.lock", fnv1a(canonical.as_os_str().as_encoded_bytes())))
}

/// Where lock files live: `/run/lock` when usable, else the temp dir.
pub fn default_dir() -> PathBuf {
    let run_lock = Path::new("/run/lock");
    if run_lock.is_dir() && can_create_in(run_lock) {
        run_lock.to_owned()
    } else {
        std::env::temp_dir()
    }
}

fn can_create_in(p: &Path) -> bool {
    // A probe file is the portable way to ask "can I create files here".
    let probe = p.join(format!(".zoffsite-probe-{}", std::process::id()));
    let ok = File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Takes the lock for `config` without waiting.
pub fn acquire(dir: &Path, config: &Path) -> Result<RunLock, LockError> {
    let path = lock_path(dir, config);
    let io = |source| LockError::Io { lock: path.display().to_string(), source };
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
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
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("zoffsite.toml");
        std::fs::write(&cfg, "").unwrap();
        let held = acquire(dir.path(), &cfg).unwrap();
        let e = acquire(dir.path(), &cfg).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains("zoffsite.toml"), "{msg}");
        // Another config is independent.
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "").unwrap();
        let _o = acquire(dir.path(), &other).unwrap();
        drop(held);
        // Another test thread's fork may share the descriptor for the
        // moment before its exec closes it (O_CLOEXEC): allow for that.
        let released = (0..100).any(|_| {
            acquire(dir.path(), &cfg).is_ok() || {
                std::thread::sleep(std::time::Duration::from_millis(10));
                false
            }
        });
        assert!(released, "released on drop");
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
