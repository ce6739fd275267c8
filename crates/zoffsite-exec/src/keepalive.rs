//! `box keepalive`'s shell: reads the peer from the installed WireGuard
//! file, asks `wg show` about the tunnel, resolves the source's name (only
//! when the tunnel is stale) and sets the peer's endpoint with `wg set`.
//! The decisions are [`zoffsite_core::provision::keepalive`]'s.
//!
//! The name is resolved by `getaddrinfo` (std's `ToSocketAddrs`: it reads
//! /etc/hosts and asks the system's resolver, as wg-quick itself does), in
//! a thread given [`RESOLVE_DEADLINE`]: a hung resolver cannot hold the
//! timer's run (the thread is left to finish on its own).

use std::ffi::OsString;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zoffsite_core::provision::keepalive::{self, Decision, Peer, Tunnel};
use zoffsite_core::provision::values::Host;

use crate::process::{self, Cmd};

/// How long resolving the source's name may take.
pub const RESOLVE_DEADLINE: Duration = Duration::from_secs(10);
/// How long one `wg` may take.
pub const WG_DEADLINE: Duration = Duration::from_secs(30);

/// Where the installed WireGuard files are, relative to the root.
const WG_QUICK_DIR: &str = "etc/wireguard";
const NETWORKD_DIR: &str = "etc/systemd/network";
/// The prefix of zoffsite's interfaces (`zo-NAME`).
const PREFIX: &str = "zo-";
/// Where the kernel lists the network interfaces, relative to the root.
const SYS_NET: &str = "sys/class/net";

#[derive(Debug, thiserror::Error)]
pub enum KeepaliveError {
    /// No (or no single) interface to look at, or a bad `--interface`.
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Config { path: String, source: keepalive::ParseError },
    #[error(transparent)]
    Wg(keepalive::ParseError),
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
}

/// `wg`, or a stand-in for tests.
#[derive(Debug, Clone)]
pub struct Wg(OsString);

impl Wg {
    pub fn new() -> Wg {
        Wg(process::find_program("wg"))
    }

    pub fn at(program: impl Into<OsString>) -> Wg {
        Wg(program.into())
    }

    fn cmd(&self) -> Cmd {
        Cmd::new(&self.0)
    }

    /// `wg show IF FIELD`.
    pub fn show_cmd(&self, interface: &str, field: &str) -> Cmd {
        self.cmd().args(["show", interface, field])
    }

    /// `wg set IF peer KEY endpoint ADDR:PORT`.
    pub fn set_endpoint_cmd(&self, interface: &str, peer: &Peer, to: SocketAddr) -> Cmd {
        self.cmd().args(["set", interface, "peer", peer.key.as_str(), "endpoint"]).arg(to.to_string())
    }

    fn run(&self, cmd: &Cmd) -> Result<String, KeepaliveError> {
        let out = process::run_by(cmd, keepalive::MAX_BYTES, Some(WG_DEADLINE))
            .map_err(|e| KeepaliveError::Command { cmd: cmd.to_string(), stderr: e.to_string() })?;
        if !out.success() {
            return Err(KeepaliveError::Command { cmd: cmd.to_string(), stderr: out.stderr.trim().to_owned() });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Default for Wg {
    fn default() -> Self {
        Wg::new()
    }
}

/// An interface name as Linux takes it (and safe in a path).
fn check_interface(s: &str) -> Result<(), KeepaliveError> {
    let ok = (1..=15).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !s.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(KeepaliveError::Usage(format!(
            "--interface {:?} is not an interface name",
            zoffsite_core::protocol::sanitize(s, 40)
        )))
    }
}

/// The installed file for `interface`: the wg-quick one, else the
/// networkd one.
fn config_file(root: &Path, interface: &str) -> Option<PathBuf> {
    [
        root.join(WG_QUICK_DIR).join(format!("{interface}.conf")),
        root.join(NETWORKD_DIR).join(format!("{interface}.netdev")),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The one zoffsite interface installed here, when none is named.
pub fn find_interface(root: &Path) -> Result<String, KeepaliveError> {
    let mut found = Vec::new();
    for (dir, ext) in [(WG_QUICK_DIR, ".conf"), (NETWORKD_DIR, ".netdev")] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(i) = name.strip_suffix(ext).filter(|i| i.starts_with(PREFIX)) {
                if !found.contains(&i.to_owned()) {
                    found.push(i.to_owned());
                }
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(KeepaliveError::Usage(
            "no zoffsite WireGuard interface is installed here (/etc/wireguard/zo-*.conf or /etc/systemd/network/zo-*.netdev): run `zoffsite box apply` first, or name one with --interface".into(),
        )),
        _ => Err(KeepaliveError::Usage(format!("several zoffsite interfaces are installed ({}): name one with --interface", found.join(", ")))),
    }
}

/// The peer the installed file of `interface` dials.
pub fn read_peer(root: &Path, interface: &str) -> Result<(PathBuf, Peer), KeepaliveError> {
    check_interface(interface)?;
    let path = config_file(root, interface).ok_or_else(|| {
        KeepaliveError::Usage(format!(
            "no WireGuard file for {interface} (/etc/wireguard/{interface}.conf or /etc/systemd/network/{interface}.netdev)"
        ))
    })?;
    let shown = path.display().to_string();
    let io = |source| KeepaliveError::Io { path: shown.clone(), source };
    let mut text = String::new();
    std::fs::File::open(&path)
        .map_err(io)?
        .take(keepalive::MAX_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    let peer =
        if shown.ends_with(".netdev") { keepalive::parse_netdev(&text) } else { keepalive::parse_wg_quick(&text) };
    let peer = peer.map_err(|source| KeepaliveError::Config { path: shown.clone(), source })?;
    Ok((path, peer))
}

/// What `host` resolves to now (`Err`: why not), within `deadline`.
pub fn resolve(host: &str, port: u16, deadline: Duration) -> Result<Vec<IpAddr>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = host.to_owned();
    std::thread::spawn(move || {
        let r = (h.as_str(), port).to_socket_addrs().map(|a| a.map(|s| s.ip()).collect::<Vec<_>>());
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let mut addrs = match rx.recv_timeout(deadline) {
        Ok(r) => r?,
        Err(_) => return Err(format!("no answer within {deadline:?}")),
    };
    // Keep the resolver's order, once each.
    let mut seen = std::collections::HashSet::new();
    addrs.retain(|a| seen.insert(*a));
    Ok(addrs)
}

/// What one run found and did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub interface: String,
    pub config: PathBuf,
    pub peer: Peer,
    pub tunnel: Tunnel,
    /// `None` while fresh (the name is not resolved).
    pub resolved: Option<Result<Vec<IpAddr>, String>>,
    pub decision: Decision,
    /// The `wg set` run (or, with `dry_run`, that would run).
    pub command: Option<Cmd>,
}

/// One run (see the module docs): `root` is `/` but in tests, `now` Unix
/// seconds.
pub fn run(root: &Path, interface: &str, wg: &Wg, now: u64, dry_run: bool) -> Result<Outcome, KeepaliveError> {
    let (config, peer) = read_peer(root, interface)?;
    let tunnel = match wg.run(&wg.show_cmd(interface, "latest-handshakes")) {
        // No such interface (yet): not up, which the timer's next run
        // looks at again. `wg`'s message is not parsed: the kernel's list
        // says it.
        Err(_) if !root.join(SYS_NET).join(interface).exists() => Tunnel::Absent,
        shown => {
            let handshakes = keepalive::parse_handshakes(&shown?).map_err(KeepaliveError::Wg)?;
            let endpoints = keepalive::parse_endpoints(&wg.run(&wg.show_cmd(interface, "endpoints"))?)
                .map_err(KeepaliveError::Wg)?;
            keepalive::tunnel(&peer, &handshakes, &endpoints, now).map_err(KeepaliveError::Wg)?
        }
    };
    let resolved = match tunnel {
        Tunnel::Fresh { .. } | Tunnel::Configuring | Tunnel::Absent => None,
        Tunnel::Stale { .. } => Some(match &peer.endpoint.host {
            Host::Ip(ip) => Ok(vec![*ip]),
            Host::Name(n) => resolve(n, peer.endpoint.port.get(), RESOLVE_DEADLINE),
        }),
    };
    let decision = keepalive::decide(&peer, tunnel, resolved.clone().unwrap_or_else(|| Ok(Vec::new())));
    let command = match decision {
        Decision::Update { to, .. } => Some(wg.set_endpoint_cmd(interface, &peer, to)),
        _ => None,
    };
    if let (Some(c), false) = (&command, dry_run) {
        wg.run(c)?;
    }
    Ok(Outcome { interface: interface.to_owned(), config, peer, tunnel, resolved, decision, command })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const KEY: &str = "dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=";

    fn world(endpoint: &str, handshake: u64, current: &str) -> (tempfile::TempDir, Wg, PathBuf) {
        world_with(
            endpoint,
            &format!("printf '%s\\t%s\\n' '{KEY}' '{handshake}'"),
            &format!("printf '%s\\t%s\\n' '{KEY}' '{current}'"),
        )
    }

    /// A root with the interface's wg-quick file, and a fake `wg` whose
    /// `show IF latest-handshakes` and `show IF endpoints` run the given
    /// shell commands.
    fn world_with(endpoint: &str, handshakes: &str, endpoints: &str) -> (tempfile::TempDir, Wg, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(WG_QUICK_DIR)).unwrap();
        std::fs::write(
            d.path().join(WG_QUICK_DIR).join("zo-friend.conf"),
            format!("[Interface]\nAddress = 10.77.0.2/24\n\n[Peer]\nPublicKey = {KEY}\nEndpoint = {endpoint}\nPersistentKeepalive = 25\n"),
        )
        .unwrap();
        let log = d.path().join("wg.log");
        let fake = d.path().join("wg");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$@\" >> '{log}'\ncase \"$3\" in\n  latest-handshakes) {handshakes} ;;\n  endpoints) {endpoints} ;;\nesac\n",
                log = log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        (d, Wg::at(fake), log)
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_stale_tunnel_gets_the_new_address_by_wg_set() {
        let (d, wg, log) = world("192.0.2.9:51820", NOW - 300, "192.0.2.1:51820");
        assert_eq!(find_interface(d.path()).unwrap(), "zo-friend");
        let o = run(d.path(), "zo-friend", &wg, NOW, false).unwrap();
        assert!(matches!(o.decision, Decision::Update { .. }), "{:?}", o.decision);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!(
                "show zo-friend latest-handshakes\nshow zo-friend endpoints\nset zo-friend peer {KEY} endpoint 192.0.2.9:51820\n"
            )
        );
    }

    #[test]
    fn a_fresh_tunnel_or_a_dry_run_sets_nothing() {
        let (d, wg, log) = world("192.0.2.9:51820", NOW - 30, "192.0.2.1:51820");
        let o = run(d.path(), "zo-friend", &wg, NOW, false).unwrap();
        assert_eq!(o.decision, Decision::Fresh { age: 30 });
        assert!(o.resolved.is_none(), "a fresh tunnel's name is not resolved");
        let (d2, wg2, log2) = world("192.0.2.9:51820", 0, "(none)");
        let o = run(d2.path(), "zo-friend", &wg2, NOW, true).unwrap();
        assert!(o.command.is_some());
        for l in [log, log2] {
            assert!(!std::fs::read_to_string(l).unwrap().contains("set "), "nothing set");
        }
        drop(d);
    }

    #[test]
    fn bad_interfaces_and_missing_files_are_usage_errors() {
        let (d, wg, _) = world("192.0.2.9:51820", 0, "(none)");
        for bad in ["../x", "", "a/b", "abcdefghijklmnop"] {
            assert!(matches!(run(d.path(), bad, &wg, NOW, true), Err(KeepaliveError::Usage(_))), "{bad}");
        }
        assert!(matches!(run(d.path(), "zo-other", &wg, NOW, true), Err(KeepaliveError::Usage(_))));
    }

    #[test]
    fn an_interface_still_being_configured_or_not_there_is_not_an_error() {
        // wg-quick at boot: the interface exists, the peer not yet.
        let (d, wg, log) = world_with("home.example.org:51820", "true", "true");
        let o = run(d.path(), "zo-friend", &wg, NOW, false).unwrap();
        assert_eq!((o.tunnel, &o.decision), (Tunnel::Configuring, &Decision::Configuring));
        assert!(o.decision.is_warning() && o.resolved.is_none() && o.command.is_none());
        assert!(!std::fs::read_to_string(&log).unwrap().contains("set "), "nothing set");
        // No such interface: `wg show` fails, and the kernel lists none.
        let fail = "echo 'Unable to access interface: No such device' >&2; exit 1";
        let (d, wg, log) = world_with("home.example.org:51820", fail, fail);
        let o = run(d.path(), "zo-friend", &wg, NOW, false).unwrap();
        assert_eq!((o.tunnel, &o.decision), (Tunnel::Absent, &Decision::Absent));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "show zo-friend latest-handshakes\n");
        // The interface is there and `wg show` fails anyway: an error.
        std::fs::create_dir_all(d.path().join(SYS_NET).join("zo-friend")).unwrap();
        let e = run(d.path(), "zo-friend", &wg, NOW, false).unwrap_err();
        assert!(matches!(e, KeepaliveError::Command { .. }), "{e:?}");
        // Another peer than the file's: an error too.
        let other = "printf '%s\\t%s\\n' 'Hz64cXtZeK1304qYfOILdM5dNHCFy3q7C2DJM+rRU04=' 0";
        let (d, wg, _) = world_with("home.example.org:51820", other, other);
        assert!(matches!(run(d.path(), "zo-friend", &wg, NOW, false), Err(KeepaliveError::Wg(_))));
    }

    #[test]
    fn names_resolve_through_the_system_resolver_and_a_bad_one_does_not() {
        let a = resolve("localhost", 51820, RESOLVE_DEADLINE).unwrap();
        assert!(a.iter().all(IpAddr::is_loopback) && !a.is_empty(), "{a:?}");
        assert!(resolve("no-such-host.invalid", 51820, RESOLVE_DEADLINE).is_err());
    }
}
