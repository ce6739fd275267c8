//! The tunnel, from `wg show IFACE dump`: on the box, the peer (the source)
//! has an endpoint and a persistent keepalive and handshook recently; on
//! the source, each peer (a box) handshook recently.
//!
//! The dump is tab-separated: a first line for the interface (private key,
//! public key, listen port, fwmark), then one line per peer (public key,
//! preshared key, endpoint, allowed IPs, latest handshake in Unix seconds
//! or 0, bytes received, bytes sent, persistent keepalive in seconds or
//! `off`), as wg(8) documents. The first line holds the interface's
//! private key and each peer line a preshared key: the parser checks only
//! the field counts there and keeps neither, and no error message quotes
//! those lines.

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

/// One peer, without its preshared key.
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

/// Parses `wg show IFACE dump` into its peers.
pub fn parse_dump(text: &str) -> Result<Vec<Peer>, String> {
    if text.len() > super::MAX_INPUT {
        return Err(format!("{} bytes, more than the {} doctor reads", text.len(), super::MAX_INPUT));
    }
    let mut lines = text.lines();
    let first = lines.next().ok_or("empty output")?;
    // The interface line: private key, public key, port, fwmark. Never quoted.
    if first.split('\t').count() != 4 {
        return Err("the first line is not the interface's (4 fields)".into());
    }
    let mut peers = Vec::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let f: Vec<&str> = line.split('\t').collect();
        let [key, _psk, endpoint, _allowed, handshake, rx, tx, keepalive] = f.as_slice() else {
            return Err(format!("line {n} has {} fields, not a peer's 8", f.len()));
        };
        if peers.len() == MAX_PEERS {
            return Err(format!("more than {MAX_PEERS} peers"));
        }
        if !is_key(key) {
            return Err(format!("line {n}: the peer's public key is not a WireGuard key"));
        }
        let endpoint = match *endpoint {
            "(none)" => None,
            e => Some(
                e.parse::<SocketAddr>().map_err(|_| format!("line {n}: endpoint {} is not ADDRESS:PORT", quote(e)))?,
            ),
        };
        let num = |what: &str, s: &str| -> Result<u64, String> {
            s.parse::<u64>()
                .ok()
                .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("line {n}: {what} {} is not a number", quote(s)))
        };
        let hs = num("latest handshake", handshake)?;
        let latest_handshake = match hs {
            0 => None,
            t => Some(i64::try_from(t).map_err(|_| format!("line {n}: latest handshake out of range"))?),
        };
        num("bytes received", rx)?;
        num("bytes sent", tx)?;
        let keepalive = match *keepalive {
            "off" => None,
            k => Some(
                u16::try_from(num("persistent keepalive", k)?)
                    .ok()
                    .filter(|k| *k > 0)
                    .ok_or_else(|| format!("line {n}: persistent keepalive {} out of range", quote(k)))?,
            ),
        };
        peers.push(Peer { public_key: (*key).to_owned(), endpoint, latest_handshake, keepalive });
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
                "{who}'s last handshake was {} s ago (more than {HANDSHAKE_MAX_AGE_SECS}): the tunnel is down",
                now - t
            ),
        ),
        Some(t) => (Status::Ok, format!("{who} handshook {} s ago", (now - t).max(0))),
    }
}

/// The worst of per-peer verdicts as one check.
fn worst(id: CheckId, verdicts: &[(Status, String)], fix: &str) -> Check {
    let status = verdicts.iter().map(|v| v.0).max().unwrap_or(Status::Unknown);
    let summary = verdicts.iter().filter(|v| v.0 == status).map(|v| v.1.as_str()).collect::<Vec<_>>().join("; ");
    Check::with_status(id, status, summary, fix)
}

/// The WireGuard checks for `side` from `wg show IFACE dump` at `now`
/// (Unix seconds).
pub fn check(side: Side, dump: &str, now: i64) -> Vec<Check> {
    let ids: &[CheckId] = match side {
        Side::Box => &[CheckId::WgKeepalive, CheckId::WgHandshake, CheckId::WgEndpoint],
        Side::Source => &[CheckId::SourceWgHandshake],
    };
    let peers = match parse_dump(dump) {
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
                .map(|id| Check::unknown(*id, format!("cannot read `wg show dump`: {e}"), "look at `wg show` by hand"))
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
mod tests {
    use super::*;
    use crate::doctor::testutil::fixture;
    use proptest::prelude::*;

    // The fixtures are hand-written from wg(8) (this machine's kernel has no
    // WireGuard); their keys are made up. `now` in them: 1796000000.
    const NOW: i64 = 1_796_000_000;

    fn statuses(side: Side, text: &str, now: i64) -> Vec<Status> {
        check(side, text, now).iter().map(Check::status).collect()
    }

    #[test]
    fn a_healthy_box_tunnel_passes() {
        let c = check(Side::Box, &fixture("wg-box.txt"), NOW);
        assert!(c.iter().all(|c| c.status() == Status::Ok), "{c:#?}");
        assert!(c[0].summary().contains("every 1 s") && c[2].summary().contains("192.0.2.1:51820"), "{c:#?}");
        assert_eq!(statuses(Side::Source, &fixture("wg-source.txt"), NOW), [Status::Ok]);
    }

    #[test]
    fn no_keepalive_no_endpoint_or_an_old_handshake_fail() {
        let c = check(Side::Box, &fixture("wg-box-broken.txt"), NOW);
        assert_eq!(c.iter().map(Check::status).collect::<Vec<_>>(), [Status::Fail; 3], "{c:#?}");
        assert!(c[1].summary().contains("never"), "{c:#?}");
        let ok = fixture("wg-box.txt");
        assert_eq!(statuses(Side::Box, &ok, NOW + HANDSHAKE_MAX_AGE_SECS + 60)[1], Status::Fail);
        assert_eq!(statuses(Side::Box, &ok, NOW - 3600)[1], Status::Unknown, "handshake in the future");
        // The source's view of two boxes: one down.
        assert_eq!(statuses(Side::Source, &fixture("wg-source.txt"), NOW + 200), [Status::Fail]);
    }

    #[test]
    fn no_peer_fails_and_strange_dumps_are_unknown() {
        let iface_only = fixture("wg-box.txt").lines().next().unwrap().to_owned() + "\n";
        assert_eq!(statuses(Side::Box, &iface_only, NOW), [Status::Fail; 3]);
        let peer = fixture("wg-box.txt").lines().nth(1).unwrap().to_owned();
        let iface = fixture("wg-box.txt").lines().next().unwrap().to_owned();
        for bad in [
            String::new(),
            peer.clone(),
            format!("wg0\t{iface}\n"),
            format!("{iface}\n{}\t70000", peer.rsplit_once('\t').unwrap().0),
            format!("{iface}\n{}", peer.replace("192.0.2.1:51820", "source.example:51820")),
            format!("{iface}\n{}", peer.replacen('\t', "x\t", 1)),
            format!("{iface}\n{peer}\textra"),
        ] {
            assert_eq!(statuses(Side::Box, &bad, NOW), [Status::Unknown; 3], "{bad:?}");
        }
    }

    #[test]
    fn no_secret_reaches_a_summary() {
        let text = fixture("wg-box.txt");
        let private = text.split('\t').next().unwrap();
        for side in [Side::Box, Side::Source] {
            for c in check(side, &text, NOW).iter().chain(&check(side, &format!("{text}garbage"), NOW)) {
                assert!(!c.summary().contains(private) && !c.fix().unwrap_or("").contains(private));
            }
        }
    }

    proptest! {
        #[test]
        fn random_input_never_panics_and_is_never_ok(s in "\\PC{0,300}") {
            for c in check(Side::Box, &s, NOW) {
                prop_assert_ne!(c.status(), Status::Ok);
            }
        }

        #[test]
        fn random_peer_fields_never_panic(fields in prop::collection::vec("[ -~]{0,12}", 8)) {
            let iface = fixture("wg-box.txt").lines().next().unwrap().to_owned();
            let _ = check(Side::Box, &format!("{iface}\n{}\n", fields.join("\t")), NOW);
        }
    }
}
