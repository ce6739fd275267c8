//! The OpenSSH client invocation toward a box.
//!
//! Everything about the connection is decided by this argv, not by the
//! user's `~/.ssh/config` (`-F none`): the pinned `known_hosts` file with
//! strict checking (an unknown or changed host key is refused, never
//! learned), the one identity file, no agent, no X11, no port forwarding, no
//! multiplexing, no password prompts, keepalives so a dead link is noticed.
//! The remote command is a constant; the box's `authorized_keys` forces
//! `zoffsite serve` anyway.
//!
//! The TCP connection itself is zoffsite's when the target names a
//! congestion control (BBR by default): ssh runs this same binary as its
//! `ProxyCommand` ([`PROXY_SUBCOMMAND`], [`connect_and_pass`]), which
//! connects, sets the algorithm on that one socket and hands the socket to
//! ssh (`ProxyUseFdpass`), then exits; ssh speaks SSH over it as over its
//! own. OpenSSH offers no option for the congestion control, and setting it
//! system-wide would change every other connection of the source too.
//! ssh runs a ProxyCommand through `$SHELL -c`: the one string zoffsite
//! hands to a shell, so it is built only from fixed words, numbers and the
//! config's host (letters, digits, `.:_-` only, checked again here), with
//! `SHELL=/bin/sh`.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use zoffsite_core::config::{CongestionControl, Target};

use crate::process::Cmd;

/// The hidden subcommand ssh runs as its ProxyCommand.
pub const PROXY_SUBCOMMAND: &str = "ssh-connect";

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
        .args(proxy_options(t))
        .env("SHELL", "/bin/sh")
        .arg("-p")
        .arg(t.port.to_string())
        .arg("-l")
        .arg(&t.user)
        // `--` ends ssh's options: the host can never be read as one.
        .arg("--")
        .arg(&t.host)
        .arg(REMOTE_COMMAND)
}

/// `-o ProxyCommand=... -o ProxyUseFdpass=yes` when `t` names a congestion
/// control; nothing (ssh connects by itself) for `system`.
fn proxy_options(t: &Target) -> Vec<String> {
    let CongestionControl::Named(name) = &t.congestion_control else {
        return Vec::new();
    };
    // Our own binary, whatever its path (and even if an upgrade replaced
    // the file since this run started: the subcommand's flags are this
    // version's). Only where /proc is this process's PID namespace's: in
    // another one (a container's, `unshare -p` without its own /proc) the
    // same number is some other process, whose binary ssh would run.
    let pid = std::process::id();
    if std::fs::read_link("/proc/self").ok().and_then(|p| p.to_str()?.parse::<u32>().ok()) != Some(pid) {
        tracing::warn!(
            "/proc is not this process's: connecting to {} on the system's TCP congestion control, not {name}",
            t.host
        );
        return Vec::new();
    }
    let exe = format!("/proc/{pid}/exe");
    let timeout = t.connect_timeout.as_secs().max(1);
    // The config checked the host and the name already; a shell must never
    // see anything else, so each is checked once more, field by field (a
    // space would split it into more arguments; ssh expands `%` tokens in
    // the line: none can be there either).
    let name_ok = CongestionControl::valid_name(name);
    let host_ok = zoffsite_core::config::valid_host(&t.host);
    if !(name_ok && host_ok) {
        tracing::warn!("not setting the congestion control for {:?}: unexpected characters", t.host);
        return Vec::new();
    }
    if let Some(why) = congestion_unusable(name, &CongestionFacts::read(name)) {
        // Still set up: the socket then keeps the system's default, and a
        // kernel that changes its mind (a module installed) is used.
        tracing::warn!(
            "target {}: TCP congestion control {name} cannot be used here ({why}): the connection to the box keeps the system's default, which crawls on a line that loses packets (docs/box.md, \"A line that loses packets\")",
            t.name
        );
    }
    let line =
        format!("{exe} {PROXY_SUBCOMMAND} --congestion-control {name} --timeout {timeout} -- {} {}", t.host, t.port);
    vec!["-o".into(), format!("ProxyCommand={line}"), "-o".into(), "ProxyUseFdpass=yes".into()]
}

/// What decides whether this process may put a socket on a congestion
/// control (the kernel's `tcp_set_congestion_control`).
#[derive(Debug, Default)]
struct CongestionFacts {
    /// `net.ipv4.tcp_available_congestion_control`: the loaded ones.
    available: String,
    /// `net.ipv4.tcp_allowed_congestion_control`: those any process may take.
    allowed: String,
    /// The algorithm's module is installed for the running kernel (the
    /// kernel loads it on the first request by a process with CAP_NET_ADMIN).
    module: bool,
    /// This process has CAP_NET_ADMIN (which lifts the allowed list).
    net_admin: bool,
}

impl CongestionFacts {
    fn read(name: &str) -> Self {
        let sysctl = |k: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{k}")).unwrap_or_default();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let dir = format!("/lib/modules/{}/kernel/net/ipv4", release.trim());
        let module = std::fs::read_dir(dir).is_ok_and(|entries| {
            let stem = format!("tcp_{name}.ko");
            entries.flatten().any(|e| e.file_name().to_str().is_some_and(|f| f.starts_with(&stem)))
        });
        // CapEff's bit 12 (CAP_NET_ADMIN).
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let net_admin = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << 12) != 0);
        Self {
            available: sysctl("tcp_available_congestion_control"),
            allowed: sysctl("tcp_allowed_congestion_control"),
            module,
            net_admin,
        }
    }
}

/// Why a socket of this process cannot take `name`, or `None` when it can.
fn congestion_unusable(name: &str, f: &CongestionFacts) -> Option<&'static str> {
    let has = |list: &str| list.split_whitespace().any(|n| n == name);
    let loaded = has(&f.available);
    if f.net_admin {
        return (!loaded && !f.module).then_some("the kernel has no such algorithm, loaded or as a module");
    }
    if !loaded {
        return Some("it is not loaded, and only a process with CAP_NET_ADMIN makes the kernel load it");
    }
    (!has(&f.allowed))
        .then_some("it is not in net.ipv4.tcp_allowed_congestion_control, and this process lacks CAP_NET_ADMIN")
}

/// How [`connect_and_pass`] went, when it passed a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Congestion {
    /// The socket uses the asked algorithm.
    Set,
    /// The kernel refused it (not built, not loadable, or not allowed for
    /// this user: `net.ipv4.tcp_allowed_congestion_control`): the socket
    /// keeps the system's default. The backup goes on; only its speed on a
    /// lossy line differs.
    Refused(String),
}

/// ssh's ProxyCommand: connects to `host` `port` (each address it resolves
/// to in turn, `timeout` each), sets `congestion` on the socket and passes
/// it over `to` (ssh's end, `ProxyUseFdpass`) with the one byte ssh reads
/// beside it. A failure to connect is an error whose text ssh's failure
/// classification ([`classify`]) knows: "connect to host H port P: ...".
pub fn connect_and_pass(
    host: &str,
    port: u16,
    congestion: &str,
    timeout: Duration,
    to: impl AsFd,
) -> io::Result<Congestion> {
    let fail = |e: &dyn std::fmt::Display| io::Error::other(format!("connect to host {host} port {port}: {e}"));
    let addrs = (host, port).to_socket_addrs().map_err(|e| fail(&format!("Could not resolve hostname: {e}")))?;
    let mut last = None;
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = match (stream, last) {
        (Some(s), _) => s,
        // ssh's own words, which its classification knows.
        (None, Some(e)) if e.kind() == io::ErrorKind::TimedOut => return Err(fail(&"Connection timed out")),
        (None, Some(e)) => return Err(fail(&e)),
        (None, None) => return Err(fail(&"Could not resolve hostname: no address")),
    };
    let outcome = match rustix::net::sockopt::set_tcp_congestion(&stream, congestion) {
        Ok(()) => Congestion::Set,
        Err(e) => Congestion::Refused(e.to_string()),
    };
    // What ssh's TCPKeepAlive=yes (its default) does on sockets it opens.
    rustix::net::sockopt::set_socket_keepalive(&stream, true)?;
    let fds = [stream.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("internal: no room for the descriptor"));
    }
    rustix::net::sendmsg(to, &[IoSlice::new(&[0])], &mut control, SendFlags::empty())?;
    Ok(outcome)
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
    } else if stderr.contains("Permission denied (") {
        // "user@host: Permission denied (publickey)." A bare "Permission
        // denied" is a local failure (the ProxyCommand could not run).
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
        // WireGuard has no peer for the address, ...), ssh's or its
        // ProxyCommand's (`connect_and_pass`).
        "connect to host",
        // The ProxyCommand ended without a connection and without saying
        // why above.
        "proxy dialer did not pass back a connection",
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
            congestion_control: CongestionControl::System,
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
        // `system`: ssh connects by itself.
        assert!(!argv.iter().any(|a| a.starts_with("ProxyCommand")), "{argv:?}");
    }

    #[test]
    fn a_named_congestion_control_makes_zoffsite_its_own_proxy() {
        let t = Target { congestion_control: CongestionControl::Named("bbr".into()), ..target() };
        let cmd = command(&t);
        let argv = cmd.argv();
        let proxy = argv.iter().find_map(|a| a.strip_prefix("ProxyCommand=")).expect("a ProxyCommand");
        assert_eq!(
            proxy,
            format!(
                "/proc/{}/exe ssh-connect --congestion-control bbr --timeout 7 -- 10.77.0.2 22",
                std::process::id()
            )
        );
        assert!(argv.iter().any(|a| a == "ProxyUseFdpass=yes"), "{argv:?}");
        // ssh runs it through $SHELL: a plain POSIX shell.
        assert!(cmd.env.iter().any(|(k, v)| k == "SHELL" && v == "/bin/sh"));
        // Still everything else, and the host last but the command.
        let n = argv.len();
        assert_eq!(&argv[n - 3..], ["--", "10.77.0.2", REMOTE_COMMAND]);
        // A host the config would refuse never reaches the shell.
        for host in ["b;reboot", "b c", "-oX", "b%h", "b$(x)"] {
            let odd = Target { host: host.into(), ..t.clone() };
            assert!(!command(&odd).argv().iter().any(|a| a.starts_with("ProxyCommand")), "{host}");
        }
        for name in ["bbr --x", "BBR", "", "bbr;x", "a_name_too_long_x"] {
            let odd = Target { congestion_control: CongestionControl::Named(name.into()), ..t.clone() };
            assert!(!command(&odd).argv().iter().any(|a| a.starts_with("ProxyCommand")), "{name}");
        }
    }

    #[test]
    fn a_congestion_control_this_process_cannot_take_is_told_and_why() {
        let f = |available: &str, allowed: &str, module: bool, net_admin: bool| CongestionFacts {
            available: available.into(),
            allowed: allowed.into(),
            module,
            net_admin,
        };
        // Root (CAP_NET_ADMIN): loaded, or a module the kernel will load.
        assert_eq!(congestion_unusable("bbr", &f("reno cubic bbr\n", "reno cubic", false, true)), None);
        assert_eq!(congestion_unusable("bbr", &f("reno cubic", "reno cubic", true, true)), None);
        assert!(congestion_unusable("bbr", &f("reno cubic", "reno cubic", false, true)).unwrap().contains("no such"));
        // Without it: loaded and allowed only.
        assert_eq!(congestion_unusable("bbr", &f("reno cubic bbr", "reno cubic bbr", false, false)), None);
        assert!(congestion_unusable("bbr", &f("reno cubic", "reno cubic", true, false))
            .unwrap()
            .contains("not loaded"));
        assert!(congestion_unusable("bbr", &f("reno cubic bbr", "reno cubic", true, false))
            .unwrap()
            .contains("allowed"));
        // Whole names only.
        assert!(congestion_unusable("bb", &f("reno cubic bbr", "reno cubic bbr", false, false)).is_some());
    }

    /// ssh's end and the ProxyCommand's of a `ProxyUseFdpass` channel.
    fn socket_pair() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None).unwrap()
    }

    /// Receives the descriptor `connect_and_pass` sent, checking the one
    /// byte that comes with it (what ssh's `mm_receive_fd` expects).
    fn receive_fd(from: impl AsFd) -> std::os::fd::OwnedFd {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [9u8; 4];
        let got = rustix::net::recvmsg(from, &mut [io::IoSliceMut::new(&mut byte)], &mut control, RecvFlags::empty())
            .unwrap();
        assert_eq!(got.bytes, 1, "exactly one byte beside the descriptor");
        let mut fds = control.drain().filter_map(|m| match m {
            RecvAncillaryMessage::ScmRights(fds) => Some(fds),
            _ => None,
        });
        // Bound first: the iterator borrows `space`, which the block's end
        // drops.
        let fd = fds.next().expect("a descriptor").next().expect("one");
        #[allow(clippy::let_and_return)]
        fd
    }

    #[test]
    fn the_proxy_connects_sets_the_congestion_control_and_passes_the_socket() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (ours, ssh_end) = socket_pair();
        // reno is built into every Linux kernel: the mechanism, whatever
        // this machine has loaded.
        let how = connect_and_pass("127.0.0.1", port, "reno", Duration::from_secs(5), &ours).unwrap();
        assert_eq!(how, Congestion::Set);
        let fd = receive_fd(&ssh_end);
        assert_eq!(rustix::net::sockopt::tcp_congestion(&fd).unwrap(), "reno");
        assert!(rustix::net::sockopt::socket_keepalive(&fd).unwrap());
        // It is the connection: bytes reach the listener's side.
        let mut passed = TcpStream::from(fd);
        let (mut accepted, _) = listener.accept().unwrap();
        passed.write_all(b"SSH-2.0-test\r\n").unwrap();
        let mut got = [0u8; 14];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"SSH-2.0-test\r\n");

        // An algorithm the kernel does not have: the connection is still
        // passed, on the system's default.
        let how = connect_and_pass("127.0.0.1", port, "no_such_cc", Duration::from_secs(5), &ours).unwrap();
        assert!(matches!(how, Congestion::Refused(_)), "{how:?}");
        let fd = receive_fd(&ssh_end);
        assert_ne!(rustix::net::sockopt::tcp_congestion(&fd).unwrap(), "no_such_cc");
    }

    #[test]
    fn a_proxy_that_cannot_connect_says_so_in_words_ssh_failures_are_classified_by() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (ours, _ssh_end) = socket_pair();
        let e = connect_and_pass("127.0.0.1", port, "reno", Duration::from_secs(5), &ours).unwrap_err().to_string();
        assert!(e.starts_with(&format!("connect to host 127.0.0.1 port {port}: ")), "{e}");
        assert!(matches!(classify(&e), SshFailure::Unreachable(ref l) if l == &e), "{e}");
        let e = connect_and_pass("no-such-host.invalid", 22, "reno", Duration::from_secs(5), &ours)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Could not resolve hostname"), "{e}");
        assert!(matches!(classify(&e), SshFailure::Unreachable(_)), "{e}");
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
        // The ProxyCommand's failures are the connection's, not the key's.
        let proxy = "/bin/sh: 1: exec: /proc/1/exe: Permission denied\nmm_receive_fd: recvmsg: expected received 1 got 0\nproxy dialer did not pass back a connection\n";
        assert_eq!(classify(proxy), SshFailure::Unreachable("proxy dialer did not pass back a connection".into()));
        let refused = "zoffsite: connect to host 10.77.0.2 port 22: Connection refused (os error 111)\nmm_receive_fd: recvmsg: expected received 1 got 0\nproxy dialer did not pass back a connection\n";
        assert_eq!(
            classify(refused),
            SshFailure::Unreachable(
                "zoffsite: connect to host 10.77.0.2 port 22: Connection refused (os error 111)".into()
            )
        );
    }
}
