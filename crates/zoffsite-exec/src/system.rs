//! Typed wrappers around the few system tools `box init` needs: `getent`
//! to read account entries, `useradd`/`usermod` to create and fix the box
//! user. Argv only, like everything in this crate.

use crate::process::{self, Cmd, ExecError};

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("`{cmd}` failed: {stderr}")]
    Failed { cmd: String, stderr: String },
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `getent DB KEY`: the entry, or `None` when there is none (exit 2) or it
/// may not be read (shadow as non-root).
pub fn getent(db: &str, key: &str) -> Result<Option<String>, SystemError> {
    let cmd = Cmd::new(process::find_program("getent")).arg(db).arg(key);
    let out = process::run(&cmd, 64 * 1024)?;
    match out.status.code() {
        Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_owned())),
        Some(2) => Ok(None),
        _ if db == "shadow" => Ok(None),
        _ => Err(SystemError::Failed { cmd: cmd.to_string(), stderr: out.stderr.trim().to_owned() }),
    }
}

/// Creates a system user with its own group, a home directory, a real
/// shell (sshd runs forced commands through it) and the password field
/// `*`: no password can match it, and unlike `!` it does not mark the
/// account locked, which sshd refuses under `UsePAM no`.
pub fn useradd_cmd(user: &str, home: &str, shell: &str) -> Cmd {
    Cmd::new(process::find_program("useradd"))
        .args(["--system", "--user-group", "--create-home", "--home-dir", home, "--shell", shell])
        .args(["--password", "*", "--comment", "zoffsite serve", "--"])
        .arg(user)
}

/// `usermod --shell SHELL USER`.
pub fn set_shell_cmd(user: &str, shell: &str) -> Cmd {
    Cmd::new(process::find_program("usermod")).args(["--shell", shell, "--"]).arg(user)
}

/// Runs an account command built here; success by exit status.
pub fn run(cmd: &Cmd) -> Result<(), SystemError> {
    let out = process::run(cmd, 64 * 1024)?;
    if out.success() {
        Ok(())
    } else {
        Err(SystemError::Failed { cmd: cmd.to_string(), stderr: out.stderr.trim().to_owned() })
    }
}

/// How long `mount` or `umount` of a snapshot may take.
pub const MOUNT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Mount options for data zoffsite only reads (a drill's or a restore's
/// look inside a snapshot, which came from the box): read-only, and no
/// setuid program, device node or executable in it takes effect.
pub const READ_ONLY_MOUNT: &str = "ro,nosuid,nodev,noexec";

/// `mount -t zfs -o ro,nosuid,nodev,noexec SNAPSHOT DIR`: a snapshot,
/// read-only, where a drill or a restore can read it (the `.zfs/snapshot`
/// automount needs a usermode helper that not every system, nor the test
/// VM, has).
pub fn mount_snapshot_cmd(snap: &str, dir: &std::path::Path) -> Cmd {
    Cmd::new(process::find_program("mount")).args(["-t", "zfs", "-o", READ_ONLY_MOUNT, "--"]).arg(snap).arg(dir)
}

/// Runs [`mount_snapshot_cmd`], within [`MOUNT_DEADLINE`].
pub fn mount_snapshot(snap: &str, dir: &std::path::Path) -> Result<(), SystemError> {
    run_by(&mount_snapshot_cmd(snap, dir), Some(MOUNT_DEADLINE))
}

/// `umount DIR`, within [`MOUNT_DEADLINE`].
pub fn unmount(dir: &std::path::Path) -> Result<(), SystemError> {
    run_by(&Cmd::new(process::find_program("umount")).arg(dir), Some(MOUNT_DEADLINE))
}

fn run_by(cmd: &Cmd, deadline: Option<std::time::Duration>) -> Result<(), SystemError> {
    let out = process::run_by(cmd, 64 * 1024, deadline)?;
    if out.success() {
        Ok(())
    } else {
        Err(SystemError::Failed { cmd: cmd.to_string(), stderr: out.stderr.trim().to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv() {
        let c = useradd_cmd("zoffsite", "/var/lib/zoffsite", "/bin/sh").argv();
        assert!(c[0].ends_with("useradd"), "{c:?}");
        assert_eq!(
            &c[1..],
            [
                "--system",
                "--user-group",
                "--create-home",
                "--home-dir",
                "/var/lib/zoffsite",
                "--shell",
                "/bin/sh",
                "--password",
                "*",
                "--comment",
                "zoffsite serve",
                "--",
                "zoffsite"
            ]
        );
        assert_eq!(&set_shell_cmd("zo", "/bin/sh").argv()[1..], ["--shell", "/bin/sh", "--", "zo"]);
        let m = mount_snapshot_cmd("tank/a@s", std::path::Path::new("/run/zoffsite/drill-1/source")).argv();
        assert_eq!(
            &m[1..],
            ["-t", "zfs", "-o", "ro,nosuid,nodev,noexec", "--", "tank/a@s", "/run/zoffsite/drill-1/source"]
        );
    }

    #[test]
    fn getent_finds_root_and_not_nobody_else() {
        let root = getent("passwd", "root").unwrap().unwrap();
        assert!(root.starts_with("root:x:0:0:"), "{root}");
        assert_eq!(getent("passwd", "no-such-user-zoffsite-test").unwrap(), None);
    }
}
