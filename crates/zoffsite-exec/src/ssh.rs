//! The OpenSSH client invocation toward a box.
//!
//! Everything about the connection is decided by this argv, not by the
//! user's `~/.ssh/config` (`-F none`): the pinned `known_hosts` file with
//! strict checking (an unknown or changed host key is refused, never
//! learned), the one identity file, no agent, no X11, no port forwarding, no
//! multiplexing, no password prompts, keepalives so a dead link is noticed.
//! The remote command is a constant; the box's `authorized_keys` forces
//! `zoffsite serve` anyway.

use std::time::Duration;

use zoffsite_core::config::Target;

use crate::process::Cmd;

/// What the source asks the box to run. Informational only: the box's
/// forced command decides what really runs.
pub const REMOTE_COMMAND: &str = "zoffsite serve";

/// The argv that connects to `t`'s `zoffsite serve`.
pub fn command(t: &Target) -> Cmd {
    let timeout = t.connect_timeout.as_secs().max(1);
    Cmd::new("ssh")
        .args(["-F", "none", "-T", "-x", "-a", "-e", "none"])
        .args(["-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes"])
        .arg("-i")
        .arg(&t.identity_file)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", t.known_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .args(["-o", "UpdateHostKeys=no"])
        .args(["-o", "CheckHostIP=no"])
        .args(["-o", "ClearAllForwardings=yes"])
        .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
        .args(["-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no"])
        .arg("-o")
        .arg(format!("ConnectTimeout={timeout}"))
        .args(["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"])
        .args(["-o", "LogLevel=ERROR"])
        .arg("-p")
        .arg(t.port.to_string())
        .arg("-l")
        .arg(&t.user)
        // `--` ends ssh's options: the host can never be read as one.
        .arg("--")
        .arg(&t.host)
        .arg(REMOTE_COMMAND)
}

/// Why ssh itself failed (exit 255 before any protocol exchange).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshFailure {
    HostKeyChanged,
    HostKeyUnknown,
    AuthFailed,
    Unreachable(String),
    Other(String),
}

/// Classifies ssh's stderr. OpenSSH's messages are stable across versions.
pub fn classify(stderr: &str) -> SshFailure {
    let first_line = |needle: &str| stderr.lines().find(|l| l.contains(needle)).unwrap_or(needle).trim().to_owned();
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("Host key for") && stderr.contains("has changed")
    {
        SshFailure::HostKeyChanged
    } else if stderr.contains("host key is known") || stderr.contains("Host key verification failed") {
        SshFailure::HostKeyUnknown
    } else if stderr.contains("Permission denied") {
        SshFailure::AuthFailed
    } else if let Some(n) = [
        "Connection timed out",
        "Operation timed out",
        "Connection refused",
        "No route to host",
        "Network is unreachable",
        "Could not resolve hostname",
        "Name or service not known",
        "Connection closed by",
        "Connection reset",
        // Any other failure to connect ("Required key not available" when
        // WireGuard has no peer for the address, ...).
        "ssh: connect to host",
    ]
    .iter()
    .find(|n| stderr.contains(**n))
    {
        SshFailure::Unreachable(first_line(n))
    } else {
        SshFailure::Other(stderr.trim().lines().last().unwrap_or("ssh failed without a message").to_owned())
    }
}

/// A short default for when no target config is at hand.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn target() -> Target {
        Target {
            name: "friend".into(),
            host: "10.77.0.2".into(),
            port: 22,
            user: "root".into(),
            identity_file: PathBuf::from("/tmp/box/id_ed25519"),
            known_hosts: PathBuf::from("/tmp/box/known_hosts"),
            connect_timeout: Duration::from_secs(7),
            max_age: Duration::from_secs(3600),
            bandwidth: Default::default(),
        }
    }

    #[test]
    fn argv_pins_everything() {
        let argv = command(&target()).argv();
        let has = |s: &str| argv.iter().any(|a| a == s);
        for must in [
            "-F",
            "none",
            "-T",
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/tmp/box/known_hosts",
            "GlobalKnownHostsFile=/dev/null",
            "ClearAllForwardings=yes",
            "ConnectTimeout=7",
            "IdentitiesOnly=yes",
        ] {
            assert!(has(must), "{must} missing from {argv:?}");
        }
        // The host comes after `--`, followed only by the constant command.
        let n = argv.len();
        assert_eq!(&argv[n - 3..], ["--", "10.77.0.2", REMOTE_COMMAND]);
    }

    #[test]
    fn classifies_openssh_messages() {
        let changed = "@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n...\nHost key verification failed.\n";
        assert_eq!(classify(changed), SshFailure::HostKeyChanged);
        let unknown = "No ED25519 host key is known for 10.77.0.2 and you have requested strict checking.\r\nHost key verification failed.\r\n";
        assert_eq!(classify(unknown), SshFailure::HostKeyUnknown);
        assert_eq!(classify("root@10.77.0.2: Permission denied (publickey).\n"), SshFailure::AuthFailed);
        assert_eq!(
            classify("ssh: connect to host 10.77.0.2 port 22: Connection timed out\n"),
            SshFailure::Unreachable("ssh: connect to host 10.77.0.2 port 22: Connection timed out".into())
        );
        assert!(matches!(classify("kex_exchange_identification: weird\n"), SshFailure::Other(_)));
    }
}
