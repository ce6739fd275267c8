//! `zoffsite box keepalive`: the box follows the source's address when it
//! changes. WireGuard resolves a peer's `Endpoint` name once, when the
//! interface is configured (systemd-networkd too: systemd#9911); when the
//! source's home address changes, the box would dial the old one forever.
//! A timer runs this every minute; it decides from:
//!
//! - the peer and its configured endpoint, from the WireGuard file the
//!   bundle installed ([`parse_wg_quick`], [`parse_netdev`]: only
//!   `PublicKey` and `Endpoint` of the one peer are read, strictly);
//! - `wg show IF latest-handshakes` and `wg show IF endpoints`
//!   ([`parse_handshakes`], [`parse_endpoints`]; never `wg show dump`,
//!   whose first line is the interface's private key);
//! - what the name resolves to now, and the time.
//!
//! # Decisions
//!
//! - **Stale after [`STALE_AFTER`] (135 s) without a handshake, or never
//!   one.** WireGuard re-handshakes every 2 minutes while packets flow,
//!   and `PersistentKeepalive` keeps them flowing, so a working tunnel's
//!   last handshake is never much older than 120 s; the 15 s margin covers
//!   a handshake that needed a retry. A fresh tunnel is left alone, and
//!   the name is not even resolved.
//! - **Only a stale tunnel whose name now resolves elsewhere is changed**
//!   ([`Decision::Update`]). When the current endpoint is among the
//!   answers, the tunnel is down for another reason (the source is off,
//!   its router), and setting the same address again would change nothing
//!   ([`Decision::StaleSame`]). With several answers (round-robin, both
//!   families), keeping one that is still listed avoids flapping between
//!   them.
//! - **The same address family as the current endpoint, IPv4 when there
//!   is none.** `getaddrinfo` sorts IPv6 first on a machine with an IPv6
//!   route (RFC 6724), yet a home router often forwards WireGuard's port
//!   on IPv4 only; a tunnel that worked over IPv4 stays on IPv4, and one
//!   that never worked starts with IPv4, the family nearly every home
//!   connection forwards. The other family is used only when the name
//!   has no address of the preferred one.
//! - **An unresolvable name is a warning, not a failure**
//!   ([`Decision::Unresolvable`]): the DNS may be down for a while, and the
//!   timer tries again a minute later.
//! - **Answers no tunnel can use are ignored**: unspecified, multicast,
//!   loopback and (IPv4) broadcast addresses ([`usable`]; IPv4-mapped IPv6
//!   addresses as their IPv4 selves). A hostile resolver must not point
//!   the box's WireGuard at the box itself; a name that resolves to
//!   nothing else is [`Decision::Unresolvable`].
//! - **A tunnel still being set up is a warning, not a failure**: at boot
//!   wg-quick creates the interface and then resolves the source's name
//!   before it adds the peer, retrying for as long as it takes
//!   (`WG_ENDPOINT_RESOLUTION_RETRIES=infinity`); meanwhile the interface
//!   has no peer at all ([`Tunnel::Configuring`]), and before that there is
//!   no interface ([`Tunnel::Absent`], found by the shell). Neither is
//!   anything `box keepalive` can fix, nor wrong: the next run looks again.
//!   An interface with peers of which none is the file's stays an error:
//!   no setup in progress ends there (wg-quick and networkd set a file's
//!   peers at once), it is another interface than the file describes, or a
//!   hand-made change, and the box would never reach the source.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::values::{Endpoint, Host, WgKey};

/// A handshake older than this (seconds) is stale.
pub const STALE_AFTER: u64 = 135;
/// Most bytes of a WireGuard file or a `wg show` output read.
pub const MAX_BYTES: usize = 256 * 1024;

/// The peer this interface dials, from its WireGuard file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub key: WgKey,
    pub endpoint: Endpoint,
}

/// Why a file or an output was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn bad(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

/// The one peer section's `PublicKey` and `Endpoint` (`section` is its
/// name: `Peer`, `WireGuardPeer`). Comments (`#`, `;`) and other keys
/// are skipped; a second peer, a key twice, a missing key or a line that
/// is neither a section, a comment nor `KEY = VALUE` is refused.
fn parse_peer(text: &str, section: &str) -> Result<Peer, ParseError> {
    let (key, endpoint) = peer_fields(text, section)?;
    let endpoint = endpoint.ok_or_else(|| bad(format!("no Endpoint in the [{section}] section")))?;
    Ok(Peer { key, endpoint: Endpoint::parse(&endpoint).map_err(|e| bad(format!("Endpoint: {e}")))? })
}

/// The one peer section's `PublicKey`, checked, and its `Endpoint` text
/// if it has one (see [`parse_peer`] for what is refused).
fn peer_fields(text: &str, section: &str) -> Result<(WgKey, Option<String>), ParseError> {
    if text.len() > MAX_BYTES {
        return Err(bad(format!("longer than {MAX_BYTES} bytes")));
    }
    let mut peers = 0;
    let mut in_peer = false;
    let (mut key, mut endpoint) = (None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_peer = name.trim() == section;
            peers += usize::from(in_peer);
            if peers > 1 {
                return Err(bad(format!("line {}: more than one [{section}]: which one is the source?", n + 1)));
            }
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| bad(format!("line {}: not KEY = VALUE", n + 1)))?;
        if !in_peer {
            continue;
        }
        let slot = match k.trim() {
            "PublicKey" => &mut key,
            "Endpoint" => &mut endpoint,
            _ => continue,
        };
        if slot.replace(v.trim().to_owned()).is_some() {
            return Err(bad(format!("line {}: {} twice", n + 1, k.trim())));
        }
    }
    let key = key.ok_or_else(|| bad(format!("no PublicKey in a [{section}] section")))?;
    Ok((WgKey::new(&key).map_err(|e| bad(format!("PublicKey: {e}")))?, endpoint))
}

/// The box's wg-quick file (`/etc/wireguard/IF.conf`).
pub fn parse_wg_quick(text: &str) -> Result<Peer, ParseError> {
    parse_peer(text, "Peer")
}

/// The box's systemd-networkd file (`/etc/systemd/network/IF.netdev`).
pub fn parse_netdev(text: &str) -> Result<Peer, ParseError> {
    parse_peer(text, "WireGuardPeer")
}

/// The box's key, from the source's own WireGuard file of its tunnel
/// (`/etc/wireguard/zo-NAME.conf` or `zo-NAME.netdev`, as `backend`
/// writes it): the file's one peer, which has no `Endpoint` on the source
/// (the box dials). For `box wait`, which watches that peer's handshakes.
pub fn parse_source_peer_key(text: &str, backend: super::Backend) -> Result<WgKey, ParseError> {
    let section = match backend {
        super::Backend::WgQuick => "Peer",
        super::Backend::Networkd => "WireGuardPeer",
    };
    peer_fields(text, section).map(|(key, _)| key)
}

/// `wg show IF FIELD`: one `KEY<TAB>VALUE` line per peer, no key twice.
fn per_peer<T>(text: &str, what: &str, value: impl Fn(&str) -> Option<T>) -> Result<BTreeMap<String, T>, ParseError> {
    if text.len() > MAX_BYTES {
        return Err(bad(format!("`wg show {what}` printed more than {MAX_BYTES} bytes")));
    }
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let shown = || crate::protocol::sanitize(line, 120);
        let (k, v) =
            line.split_once('\t').ok_or_else(|| bad(format!("`wg show {what}` line {}: {:?}", n + 1, shown())))?;
        let key = WgKey::new(k).map_err(|e| bad(format!("`wg show {what}` line {}: {e}", n + 1)))?;
        let v = value(v).ok_or_else(|| bad(format!("`wg show {what}` line {}: {:?}", n + 1, shown())))?;
        if out.insert(key.as_str().to_owned(), v).is_some() {
            return Err(bad(format!("`wg show {what}` lists peer {key} twice")));
        }
    }
    Ok(out)
}

/// `wg show IF latest-handshakes`: each peer's last handshake, Unix
/// seconds, `0` for never.
pub fn parse_handshakes(text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    per_peer(text, "latest-handshakes", |v| {
        (!v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.parse().ok()).flatten()
    })
}

/// `wg show IF endpoints`: each peer's current endpoint (`(none)` before
/// any).
pub fn parse_endpoints(text: &str) -> Result<BTreeMap<String, Option<SocketAddr>>, ParseError> {
    per_peer(text, "endpoints", |v| if v == "(none)" { Some(None) } else { v.parse().ok().map(Some) })
}

/// The tunnel as `wg show` has it, for the configured peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    /// A handshake `age` seconds ago: nothing to do.
    Fresh { age: u64 },
    /// No handshake for `age` seconds (`None`: never).
    Stale { age: Option<u64>, current: Option<SocketAddr> },
    /// The interface has no peer yet: it is still being configured (the
    /// source's name is being resolved).
    Configuring,
    /// There is no such interface: the tunnel is not up.
    Absent,
}

/// Whether the tunnel to `peer` is stale, from `wg show`'s two outputs
/// and the time (Unix seconds). [`Tunnel::Configuring`] when the
/// interface has no peer at all; `Err` when it has others but not this
/// one: it is not the one the file describes.
pub fn tunnel(
    peer: &Peer,
    handshakes: &BTreeMap<String, u64>,
    endpoints: &BTreeMap<String, Option<SocketAddr>>,
    now: u64,
) -> Result<Tunnel, ParseError> {
    let k = peer.key.as_str();
    let (Some(&last), Some(&current)) = (handshakes.get(k), endpoints.get(k)) else {
        // Only this peer, or none, in either output (the two `wg show`
        // runs may straddle the moment it is added): not there yet.
        if handshakes.keys().chain(endpoints.keys()).all(|other| other == k) {
            return Ok(Tunnel::Configuring);
        }
        return Err(bad(format!(
            "the interface has no peer {k}: is it up (`wg show`), and is it the one its file describes?"
        )));
    };
    // A handshake "in the future" (the clock went back) is as good as now.
    let age = (last != 0).then(|| now.saturating_sub(last));
    Ok(match age {
        Some(age) if age <= STALE_AFTER => Tunnel::Fresh { age },
        age => Tunnel::Stale { age, current },
    })
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Fresh {
        age: u64,
    },
    /// Stale, but the name still resolves to the current endpoint: the
    /// tunnel is down for another reason.
    StaleSame {
        age: Option<u64>,
        endpoint: SocketAddr,
    },
    /// Stale, and the name resolves elsewhere now: `wg set IF peer KEY
    /// endpoint TO`.
    Update {
        age: Option<u64>,
        from: Option<SocketAddr>,
        to: SocketAddr,
    },
    /// Stale, and the name does not resolve (or to nothing usable).
    Unresolvable {
        age: Option<u64>,
        why: String,
    },
    /// [`Tunnel::Configuring`]: nothing to do yet.
    Configuring,
    /// [`Tunnel::Absent`]: nothing to do.
    Absent,
}

impl Decision {
    /// Whether this run is worth a warning (it still exits 0): the tunnel
    /// cannot be helped now, and the next run looks again.
    pub fn is_warning(&self) -> bool {
        matches!(self, Decision::Unresolvable { .. } | Decision::Configuring | Decision::Absent)
    }
}

/// Seconds for people ([`crate::human`]).
fn human(secs: u64) -> String {
    crate::human::secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ago = |age: &Option<u64>| age.map_or("never".to_owned(), |a| format!("{} ago", human(a)));
        match self {
            Decision::Fresh { age } => write!(f, "the tunnel is up: last handshake {} ago", human(*age)),
            Decision::StaleSame { age, endpoint } => write!(
                f,
                "no handshake within {} (last: {}), but the source's name still resolves to {endpoint}: nothing to change (is the source up, and its port forwarded?)",
                human(STALE_AFTER),
                ago(age)
            ),
            Decision::Update { age, from, to } => write!(
                f,
                "no handshake within {} (last: {}) and the source's name now resolves to {to} (was {}): setting the peer's endpoint",
                human(STALE_AFTER),
                ago(age),
                from.map_or("none".to_owned(), |a| a.to_string())
            ),
            Decision::Unresolvable { age, why } => write!(
                f,
                "no handshake within {} (last: {}) and the source's name does not resolve ({why}); trying again at the next run",
                human(STALE_AFTER),
                ago(age)
            ),
            Decision::Configuring => f.write_str(
                "the interface has no peer yet: the tunnel is still being configured (wg-quick or networkd may still be resolving the source's name); nothing to do",
            ),
            Decision::Absent => f.write_str("no such interface: the tunnel is not up (yet); nothing to do"),
        }
    }
}

/// The decision for a stale (or fresh) tunnel, given what the endpoint's
/// host resolves to now (`Err`: why it did not; the caller resolves only
/// a stale tunnel). The port is always the configured one.
pub fn decide(peer: &Peer, t: Tunnel, resolved: Result<Vec<IpAddr>, String>) -> Decision {
    let (age, current) = match t {
        Tunnel::Fresh { age } => return Decision::Fresh { age },
        Tunnel::Configuring => return Decision::Configuring,
        Tunnel::Absent => return Decision::Absent,
        Tunnel::Stale { age, current } => (age, current),
    };
    let port = peer.endpoint.port.get();
    let addrs = match resolved {
        Ok(a) if a.is_empty() => return Decision::Unresolvable { age, why: "no address".into() },
        Ok(a) => a,
        Err(why) => return Decision::Unresolvable { age, why },
    };
    let (addrs, ignored): (Vec<IpAddr>, Vec<IpAddr>) = addrs.into_iter().partition(|a| usable(*a));
    if addrs.is_empty() {
        let ignored: Vec<String> = ignored.iter().map(ToString::to_string).collect();
        return Decision::Unresolvable {
            age,
            why: format!("only to addresses no tunnel can use: {}", ignored.join(", ")),
        };
    }
    if let Some(cur) = current {
        if cur.port() == port && addrs.contains(&cur.ip()) {
            return Decision::StaleSame { age, endpoint: cur };
        }
    }
    let want_v6 = current.is_some_and(|c| c.is_ipv6());
    let ip = addrs.iter().find(|a| a.is_ipv6() == want_v6).unwrap_or(&addrs[0]);
    Decision::Update { age, from: current, to: SocketAddr::new(*ip, port) }
}

/// Whether a resolved address can be the source's: not unspecified,
/// multicast, loopback or the IPv4 broadcast address (an IPv4-mapped IPv6
/// address is judged as its IPv4 self).
pub fn usable(a: IpAddr) -> bool {
    match a.to_canonical() {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_loopback() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast() || v6.is_loopback()),
    }
}

/// The addresses a configured IP endpoint "resolves" to: itself (no DNS).
pub fn literal(peer: &Peer) -> Option<IpAddr> {
    match peer.endpoint.host {
        Host::Ip(ip) => Some(ip),
        Host::Name(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::tests::{example, SOURCE_WG};
    use crate::provision::{wireguard, Backend};

    fn peer() -> Peer {
        parse_wg_quick(&wireguard::box_wg_quick(&example())).unwrap()
    }

    fn wg(handshake: u64, endpoint: &str) -> (BTreeMap<String, u64>, BTreeMap<String, Option<SocketAddr>>) {
        (
            parse_handshakes(&format!("{SOURCE_WG}\t{handshake}\n")).unwrap(),
            parse_endpoints(&format!("{SOURCE_WG}\t{endpoint}\n")).unwrap(),
        )
    }

    const NOW: u64 = 1_800_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_rendered_files_give_the_source_peer_for_both_backends() {
        let i = example();
        let want = Peer { key: i.keys.source_wg.clone(), endpoint: i.endpoint.clone() };
        assert_eq!(peer(), want);
        let mut n = example();
        n.box_backend = Backend::Networkd;
        assert_eq!(parse_netdev(&wireguard::box_netdev(&n)).unwrap(), want);
    }

    #[test]
    fn a_fresh_tunnel_is_left_alone() {
        let (h, e) = wg(NOW - 100, "203.0.113.7:51820");
        let t = tunnel(&peer(), &h, &e, NOW).unwrap();
        assert_eq!(t, Tunnel::Fresh { age: 100 });
        assert_eq!(decide(&peer(), t, Err("not asked".into())), Decision::Fresh { age: 100 });
        let (h, e) = wg(NOW + 5, "203.0.113.7:51820");
        assert_eq!(tunnel(&peer(), &h, &e, NOW).unwrap(), Tunnel::Fresh { age: 0 }, "the clock went back");
    }

    #[test]
    fn stale_with_the_same_address_changes_nothing() {
        let (h, e) = wg(NOW - 136, "203.0.113.7:51820");
        let t = tunnel(&peer(), &h, &e, NOW).unwrap();
        let d = decide(&peer(), t, Ok(vec![ip("2001:db8::7"), ip("203.0.113.7")]));
        assert_eq!(d, Decision::StaleSame { age: Some(136), endpoint: "203.0.113.7:51820".parse().unwrap() });
    }

    #[test]
    fn stale_with_a_new_address_updates_in_the_same_family() {
        let (h, e) = wg(NOW - 600, "203.0.113.7:51820");
        let t = tunnel(&peer(), &h, &e, NOW).unwrap();
        let d = decide(&peer(), t, Ok(vec![ip("2001:db8::9"), ip("198.51.100.9"), ip("198.51.100.10")]));
        assert_eq!(
            d,
            Decision::Update {
                age: Some(600),
                from: Some("203.0.113.7:51820".parse().unwrap()),
                to: "198.51.100.9:51820".parse().unwrap()
            }
        );
        // Only IPv6 now: the other family rather than nothing.
        let d = decide(&peer(), t, Ok(vec![ip("2001:db8::9")]));
        assert!(matches!(d, Decision::Update { to, .. } if to == "[2001:db8::9]:51820".parse().unwrap()), "{d:?}");
    }

    #[test]
    fn never_handshaked_takes_the_first_ipv4_answer() {
        let (h, e) = wg(0, "(none)");
        let t = tunnel(&peer(), &h, &e, NOW).unwrap();
        assert_eq!(t, Tunnel::Stale { age: None, current: None });
        let d = decide(&peer(), t, Ok(vec![ip("2001:db8::9"), ip("198.51.100.9")]));
        assert_eq!(d, Decision::Update { age: None, from: None, to: "198.51.100.9:51820".parse().unwrap() });
        assert!(d.to_string().contains("last: never"), "{d}");
    }

    #[test]
    fn an_unresolvable_name_is_a_warning() {
        let (h, e) = wg(0, "203.0.113.7:51820");
        let t = tunnel(&peer(), &h, &e, NOW).unwrap();
        assert!(matches!(decide(&peer(), t, Err("timed out".into())), Decision::Unresolvable { .. }));
        assert!(matches!(decide(&peer(), t, Ok(vec![])), Decision::Unresolvable { .. }));
    }

    #[test]
    fn a_peer_not_on_the_interface_is_an_error() {
        let other = "Hz64cXtZeK1304qYfOILdM5dNHCFy3q7C2DJM+rRU04=";
        let h = parse_handshakes(&format!("{other}\t5\n")).unwrap();
        let e = parse_endpoints(&format!("{other}\t(none)\n")).unwrap();
        assert!(tunnel(&peer(), &h, &e, NOW).unwrap_err().0.contains("no peer"));
        // Ours and another: still not the interface the file describes.
        let (mut h, mut e) = wg(5, "(none)");
        h.insert(other.to_owned(), 5);
        e.insert(other.to_owned(), None);
        h.remove(SOURCE_WG);
        assert!(tunnel(&peer(), &h, &e, NOW).is_err());
    }

    #[test]
    fn an_interface_without_a_peer_yet_or_no_interface_is_a_warning() {
        // wg-quick at boot: the interface is there, its peer not yet
        // (the name is still being resolved).
        let none = BTreeMap::new();
        let t = tunnel(&peer(), &none, &BTreeMap::new(), NOW).unwrap();
        assert_eq!(t, Tunnel::Configuring);
        let d = decide(&peer(), t, Ok(vec![]));
        assert_eq!(d, Decision::Configuring);
        assert!(d.is_warning() && d.to_string().contains("still being configured"), "{d}");
        // The peer appeared between the two `wg show` runs.
        let (h, _) = wg(0, "(none)");
        assert_eq!(tunnel(&peer(), &h, &BTreeMap::new(), NOW).unwrap(), Tunnel::Configuring);
        let d = decide(&peer(), Tunnel::Absent, Ok(vec![]));
        assert!(d.is_warning() && d.to_string().contains("not up"), "{d}");
        assert!(!Decision::Fresh { age: 1 }.is_warning());
    }

    #[test]
    fn answers_no_tunnel_can_use_are_ignored() {
        let (h, e) = wg(0, "203.0.113.7:51820");
        let t = tunnel(&peer(), &h, &e, NOW).unwrap();
        let hostile = [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "ff02::1",
            "::ffff:127.0.0.1",
        ];
        let d = decide(&peer(), t, Ok(hostile.iter().map(|a| ip(a)).collect()));
        assert!(matches!(&d, Decision::Unresolvable { why, .. } if why.contains("127.0.0.1")), "{d:?}");
        // Listed first, yet the usable answer is the one taken.
        let d = decide(&peer(), t, Ok(vec![ip("127.0.0.1"), ip("0.0.0.0"), ip("198.51.100.9")]));
        assert!(matches!(d, Decision::Update { to, .. } if to == "198.51.100.9:51820".parse().unwrap()), "{d:?}");
        for a in hostile {
            assert!(!usable(ip(a)), "{a}");
        }
        for a in ["198.51.100.9", "10.0.0.1", "2001:db8::9", "::ffff:198.51.100.9"] {
            assert!(usable(ip(a)), "{a}");
        }
    }

    #[test]
    fn hostile_wg_output_is_refused() {
        let k = SOURCE_WG;
        for bad in [
            format!("{k}\t1\n{k}\t2\n"),
            format!("{k}\t-1\n"),
            format!("{k}\t+1\n"),
            format!("{k}\t1.5\n"),
            format!("{k}\t99999999999999999999999\n"),
            format!("{k}\t\n"),
            format!("{k} 1\n"),
            format!("{k}\t1\textra\n"),
            "notakey\t1\n".to_owned(),
        ] {
            assert!(parse_handshakes(&bad).is_err(), "{bad:?}");
        }
        for bad in [format!("{k}\t1.2.3.4:5\n{k}\t(none)\n"), format!("{k}\thost:1\n"), format!("{k}\t1.2.3.4\n")] {
            assert!(parse_endpoints(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_endpoints(&format!("{k}\t[2001:db8::1]:51820\n")).unwrap().len(), 1);
        assert!(parse_handshakes("").unwrap().is_empty());
    }

    #[test]
    fn hostile_wireguard_files_are_refused() {
        let good = wireguard::box_wg_quick(&example());
        let cases = [
            (good.replace("[Interface]", "[Peer]\nPublicKey = x\n[Interface]"), "more than one"),
            (format!("{good}[Peer]\n"), "more than one"),
            (good.replace("AllowedIPs", "Endpoint = a.example:1\nAllowedIPs"), "twice"),
            (good.replace("Endpoint = home.example.org:51820\n", ""), "no Endpoint"),
            (good.replace("Endpoint = home.example.org:51820", "Endpoint = home example:1"), "Endpoint"),
            (good.replace("PublicKey = ", "PublicKey = x"), "PublicKey"),
            (format!("{good}garbage\n"), "not KEY = VALUE"),
        ];
        for (text, want) in cases {
            let e = parse_wg_quick(&text).expect_err(want).0;
            assert!(e.contains(want), "{want:?} in {e:?}");
        }
    }

    #[test]
    fn the_source_files_give_the_boxs_key_for_both_backends() {
        let i = example();
        let from_conf = parse_source_peer_key(&wireguard::source_wg_quick(&i), Backend::WgQuick).unwrap();
        let from_netdev = parse_source_peer_key(&wireguard::source_netdev(&i), Backend::Networkd).unwrap();
        assert_eq!(from_conf, i.keys.box_wg);
        assert_eq!(from_netdev, i.keys.box_wg);
        // The box's file is not the source's: its peer is the source.
        assert_ne!(parse_source_peer_key(&wireguard::box_wg_quick(&i), Backend::WgQuick).unwrap(), i.keys.box_wg);
        // The other backend's section is not read.
        assert!(parse_source_peer_key(&wireguard::source_netdev(&i), Backend::WgQuick).is_err());
        let two = format!("{}[Peer]\nPublicKey = {}\n", wireguard::source_wg_quick(&i), i.keys.box_wg);
        assert!(parse_source_peer_key(&two, Backend::WgQuick).unwrap_err().0.contains("more than one"));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,300}") {
            let _ = parse_wg_quick(&s);
            let _ = parse_netdev(&s);
            let _ = parse_source_peer_key(&s, Backend::WgQuick);
            let _ = parse_handshakes(&s);
            let _ = parse_endpoints(&s);
        }
    }
}
