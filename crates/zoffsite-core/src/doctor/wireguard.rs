//! The tunnel, from three `wg show IFACE ...` listings: on the box, the
//! peer (the source) has an endpoint and a persistent keepalive and
//! handshook recently; on the source, each peer (a box) handshook recently.
//!
//! The listings are `wg show IFACE latest-handshakes`, `... endpoints` and
//! `... persistent-keepalive`: one line per peer, its public key, a tab,
//! and the value (Unix seconds or 0; `ADDRESS:PORT` or `(none)`; seconds
//! or `off`), as wg(8) prints them for one interface. Not `wg show IFACE
//! dump`: its first line carries the interface's private key, and no
//! secret should pass through doctor at all, not even to be skipped.
//!
//! Strict: each listing must name the same peers, each once, with a valid
//! public key and a value of its kind; anything else is unknown (a peer
//! added between the three calls too: run doctor again).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{quote, Check, CheckId, Side, Status};

/// With traffic flowing (the box's keepalive sees to it), WireGuard makes a
/// new handshake every 2 minutes (REKEY_AFTER_TIME) and drops a session 3
/// minutes old (REJECT_AFTER_TIME); a handshake older than this means the
/// tunnel is down.
pub const HANDSHAKE_MAX_AGE_SECS: i64 = 300;
/// A handshake this far in the future means the clock is wrong.
const CLOCK_SLACK_SECS: i64 = 60;
/// Most peers read.
const MAX_PEERS: usize = 1024;

/// The `wg show IFACE WHAT` listings, in [`Show::WHAT`]'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Show<'a> {
    pub latest_handshakes: &'a str,
    pub endpoints: &'a str,
    pub persistent_keepalive: &'a str,
}

impl Show<'_> {
    /// The `wg show IFACE` subcommands whose output [`Show`] holds, in
    /// order; nothing else is ever asked (never `dump`, which prints the
    /// private key).
    pub const WHAT: [&'static str; 3] = ["latest-handshakes", "endpoints", "persistent-keepalive"];
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
    /// Unix seconds; `None`: never.
    pub latest_handshake: Option<i64>,
    /// Seconds; `None`: off.
    pub keepalive: Option<u16>,
}

/// A WireGuard public key: 32 bytes in base64 (44 characters, one `=`).
fn is_key(s: &str) -> bool {
    s.len() == 44 && crate::boxinit::base64_decode(s).is_some_and(|b| b.len() == 32)
}

/// One listing: each peer's key with its value, in order.
fn listing<'a>(what: &str, text: &'a str) -> Result<Vec<(&'a str, &'a str)>, String> {
    if text.len() > super::MAX_INPUT {
        return Err(format!("{what}: {} bytes, more than the {} doctor reads", text.len(), super::MAX_INPUT));
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let f: Vec<&str> = line.split('\t').collect();
        let [key, value] = f.as_slice() else {
            return Err(format!("{what}: line {n} has {} fields, not a key and a value", f.len()));
        };
        if !is_key(key) {
            return Err(format!("{what}: line {n} does not start with a WireGuard public key"));
        }
        if out.len() == MAX_PEERS {
            return Err(format!("{what}: more than {MAX_PEERS} peers"));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(format!("{what}: peer {} is listed twice", short(key)));
        }
        out.push((*key, *value));
    }
    Ok(out)
}

fn num(what: &str, key: &str, s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{what} of {} is {}, not a number", short(key), quote(s)))
}

/// Parses the three listings into their peers (in the handshakes' order).
pub fn parse(show: &Show<'_>) -> Result<Vec<Peer>, String> {
    let handshakes = listing(Show::WHAT[0], show.latest_handshakes)?;
    let endpoints: BTreeMap<&str, &str> = listing(Show::WHAT[1], show.endpoints)?.into_iter().collect();
    let keepalives: BTreeMap<&str, &str> = listing(Show::WHAT[2], show.persistent_keepalive)?.into_iter().collect();
    if endpoints.len() != handshakes.len() || keepalives.len() != handshakes.len() {
        return Err("the three listings name different peers (did one change meanwhile?)".into());
    }
    let mut peers = Vec::new();
    for (key, hs) in handshakes {
        let (Some(endpoint), Some(keepalive)) = (endpoints.get(key), keepalives.get(key)) else {
            return Err("the three listings name different peers (did one change meanwhile?)".into());
        };
        let latest_handshake = match num("the latest handshake", key, hs)? {
            0 => None,
            t => Some(i64::try_from(t).map_err(|_| format!("the latest handshake of {} is out of range", short(key)))?),
        };
        let endpoint = match *endpoint {
            "(none)" => None,
            e => Some(
                e.parse::<SocketAddr>()
                    .map_err(|_| format!("the endpoint of {} is {}, not ADDRESS:PORT", short(key), quote(e)))?,
            ),
        };
        let keepalive = match *keepalive {
            "off" => None,
            k => Some(
                u16::try_from(num("the persistent keepalive", key, k)?)
                    .ok()
                    .filter(|k| *k > 0)
                    .ok_or_else(|| format!("the persistent keepalive of {} is out of range", short(key)))?,
            ),
        };
        peers.push(Peer { public_key: key.to_owned(), endpoint, latest_handshake, keepalive });
    }
    Ok(peers)
}

fn short(key: &str) -> String {
    format!("peer {}…", &key[..8])
}

fn handshake(p: &Peer, now: i64) -> (Status, String) {
    let who = short(&p.public_key);
    match p.latest_handshake {
        None => (Status::Fail, format!("{who} never completed a handshake")),
        Some(t) if t > now + CLOCK_SLACK_SECS => {
            (Status::Unknown, format!("{who}'s last handshake is {} s in the future: is the clock right?", t - now))
        }
        Some(t) if now - t > HANDSHAKE_MAX_AGE_SECS => (
            Status::Fail,
            format!(
                "{who}'s last handshake was {} ago (more than {}): the tunnel is down",
                crate::human::secs(now - t),
                crate::human::secs(HANDSHAKE_MAX_AGE_SECS)
            ),
        ),
        Some(t) => (Status::Ok, format!("{who} handshook {} ago", crate::human::secs(now - t))),
    }
}

/// The worst of per-peer verdicts as one check.
fn worst(id: CheckId, verdicts: &[(Status, String)], fix: &str) -> Check {
    let status = verdicts.iter().map(|v| v.0).max().unwrap_or(Status::Unknown);
    let summary = verdicts.iter().filter(|v| v.0 == status).map(|v| v.1.as_str()).collect::<Vec<_>>().join("; ");
    Check::with_status(id, status, summary, fix)
}

/// The WireGuard checks for `side` from the `wg show IFACE ...` listings
/// at `now` (Unix seconds).
pub fn check(side: Side, show: &Show<'_>, now: i64) -> Vec<Check> {
    let ids: &[CheckId] = match side {
        Side::Box => &[CheckId::WgKeepalive, CheckId::WgHandshake, CheckId::WgEndpoint],
        Side::Source => &[CheckId::SourceWgHandshake],
    };
    let peers = match parse(show) {
        Ok(p) if p.is_empty() => {
            return ids
                .iter()
                .map(|id| Check::fail(*id, "the WireGuard interface has no peer", "apply the WireGuard configuration zoffsite generated (`zoffsite box apply` on the box, the server file on the source)"))
                .collect()
        }
        Ok(p) => p,
        Err(e) => {
            return ids
                .iter()
                .map(|id| Check::unknown(*id, format!("cannot read `wg show`: {e}"), "look at `wg show` by hand"))
                .collect()
        }
    };
    let hs_fix = match side {
        Side::Box => "check that the source's name resolves to its current address and its WireGuard port is forwarded to it; `zoffsite box keepalive` re-resolves the name",
        Side::Source => "check that the box is powered and online (its owner), and that this machine's WireGuard port is reachable from the internet",
    };
    let hs_id = match side {
        Side::Box => CheckId::WgHandshake,
        Side::Source => CheckId::SourceWgHandshake,
    };
    let handshakes = worst(hs_id, &peers.iter().map(|p| handshake(p, now)).collect::<Vec<_>>(), hs_fix);
    match side {
        Side::Source => vec![handshakes],
        Side::Box => {
            let keepalive: Vec<(Status, String)> = peers
                .iter()
                .map(|p| match p.keepalive {
                    Some(k) => (Status::Ok, format!("{} keeps the tunnel alive every {k} s", short(&p.public_key))),
                    None => (
                        Status::Fail,
                        format!(
                            "{} has no persistent keepalive: the source cannot reach the box once the NAT forgets it",
                            short(&p.public_key)
                        ),
                    ),
                })
                .collect();
            let endpoint: Vec<(Status, String)> = peers
                .iter()
                .map(|p| match p.endpoint {
                    Some(e) => (Status::Ok, format!("{} is at {e}", short(&p.public_key))),
                    None => (
                        Status::Fail,
                        format!("{} has no endpoint: the box does not know where the source is", short(&p.public_key)),
                    ),
                })
                .collect();
            vec![
                worst(
                    CheckId::WgKeepalive,
                    &keepalive,
                    "set `PersistentKeepalive = 25` for the source's peer (`zoffsite box apply` does)",
                ),
                handshakes,
                worst(
                    CheckId::WgEndpoint,
                    &endpoint,
                    "set the source's `Endpoint = NAME:PORT` (`zoffsite box apply` does)",
                ),
            ]
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::doctor::testutil::fixture;
    use proptest::prelude::*;

    // The fixtures are hand-written from wg(8) (this machine's kernel has no
    // WireGuard); their keys are made up. `now` in them: 1796000000.
    const NOW: i64 = 1_796_000_000;

    /// The three listings of fixture `name` (`wg-box`, `wg-source`, ...).
    pub(crate) fn listings(name: &str) -> [String; 3] {
        Show::WHAT.map(|w| fixture(&format!("{name}.{w}.txt")))
    }

    pub(crate) fn show(l: &[String; 3]) -> Show<'_> {
        Show { latest_handshakes: &l[0], endpoints: &l[1], persistent_keepalive: &l[2] }
    }

    fn statuses(side: Side, l: &[String; 3], now: i64) -> Vec<Status> {
        check(side, &show(l), now).iter().map(Check::status).collect()
    }

    #[test]
    fn a_healthy_box_tunnel_passes() {
        let c = check(Side::Box, &show(&listings("wg-box")), NOW);
        assert!(c.iter().all(|c| c.status() == Status::Ok), "{c:#?}");
        assert!(c[0].summary().contains("every 1 s") && c[2].summary().contains("192.0.2.1:51820"), "{c:#?}");
        assert_eq!(statuses(Side::Source, &listings("wg-source"), NOW), [Status::Ok]);
    }

    #[test]
    fn no_keepalive_no_endpoint_or_an_old_handshake_fail() {
        let c = check(Side::Box, &show(&listings("wg-box-broken")), NOW);
        assert_eq!(c.iter().map(Check::status).collect::<Vec<_>>(), [Status::Fail; 3], "{c:#?}");
        assert!(c[1].summary().contains("never"), "{c:#?}");
        let ok = listings("wg-box");
        assert_eq!(statuses(Side::Box, &ok, NOW + HANDSHAKE_MAX_AGE_SECS + 60)[1], Status::Fail);
        assert_eq!(statuses(Side::Box, &ok, NOW - 3600)[1], Status::Unknown, "handshake in the future");
        // Each of the box's three checks fails on its own.
        let mut no_keepalive = ok.clone();
        no_keepalive[2] = no_keepalive[2].replace("\t1\n", "\toff\n");
        assert_eq!(statuses(Side::Box, &no_keepalive, NOW), [Status::Fail, Status::Ok, Status::Ok]);
        // The source's view of two boxes: one down.
        assert_eq!(statuses(Side::Source, &listings("wg-source"), NOW + 200), [Status::Fail]);
    }

    #[test]
    fn no_peer_fails_and_strange_listings_are_unknown() {
        let none = [String::new(), String::new(), String::new()];
        assert_eq!(statuses(Side::Box, &none, NOW), [Status::Fail; 3]);
        let ok = listings("wg-box");
        let edit = |i: usize, f: &dyn Fn(&str) -> String| {
            let mut l = ok.clone();
            l[i] = f(&l[i]);
            l
        };
        let two = listings("wg-source");
        for bad in [
            edit(0, &|s| s.replace("1795999970", "-5")),
            edit(0, &|s| s.replace("1795999970", "+5")),
            edit(0, &|s| format!("{s}{s}")),
            edit(0, &|s| s.replacen('\t', "x\t", 1)),
            edit(0, &|s| s.replace('\n', "\textra\n")),
            edit(1, &|s| s.replace("192.0.2.1:51820", "source.example:51820")),
            edit(1, &|_| String::new()),
            edit(1, &|_| two[1].clone()),
            edit(2, &|s| s.replace("\t1\n", "\t70000\n")),
            edit(2, &|s| s.replace("\t1\n", "\t0\n")),
            // A dump's interface line (4 fields) is not a listing.
            edit(0, &|s| format!("aaaa\t{s}\t51821\toff\n")),
        ] {
            assert_eq!(statuses(Side::Box, &bad, NOW), [Status::Unknown; 3], "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn random_input_never_panics_and_is_never_ok(a in "\\PC{0,200}", b in "\\PC{0,100}", c in "\\PC{0,100}") {
            for c in check(Side::Box, &Show { latest_handshakes: &a, endpoints: &b, persistent_keepalive: &c }, NOW) {
                prop_assert_ne!(c.status(), Status::Ok);
            }
        }

        #[test]
        fn random_values_never_panic(values in prop::collection::vec("[ -~]{0,24}", 3)) {
            let key = "uD/VrD2KiUhDz2wi8Sq7AQh61AncKoYbPIY8geEV3ww=";
            let l = values.iter().map(|v| format!("{key}\t{v}\n")).collect::<Vec<_>>();
            let _ = check(Side::Box, &Show { latest_handshakes: &l[0], endpoints: &l[1], persistent_keepalive: &l[2] }, NOW);
        }
    }
}
