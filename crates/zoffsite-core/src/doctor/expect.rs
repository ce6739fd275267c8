//! What the box should look like, from the files `zoffsite box apply`
//! installed: the tunnel (interface, the box's and the source's addresses)
//! from the WireGuard configuration, the ssh port and the box user from
//! zoffsite's sshd drop-in.
//!
//! Why these files: they are what `box new` rendered for this box (the
//! box.toml holds only the root). The checks then compare the running
//! state (`sshd -T`, `nft`, `wg show`, `zfs allow`) with them. The
//! security-relevant expectations are not taken from the file they judge:
//! sshd must listen on the *tunnel's* address (from the WireGuard file,
//! not from the drop-in's `ListenAddress`), and let in exactly
//! `USER@SOURCE`, the source's tunnel address again from the WireGuard
//! file. Only the port and the user's name come from the drop-in, and a
//! drop-in that names another user fails the delegation check (that user
//! holds nothing on the root) or the AllowUsers one.
//!
//! The parsers are strict: an Address or AllowedIPs that is not one
//! address with a prefix, a second peer, or a missing key is an error (the
//! dependent checks then say unknown), never a guess.

use std::net::{IpAddr, SocketAddr};

use super::firewall::{self, Net};
use super::sshd;
use crate::boxinit::{UserName, DEFAULT_USER};
use crate::provision::values::BoxName;

/// The box's end of the tunnel, as its WireGuard configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// `zo-NAME`.
    pub interface: String,
    /// The box's tunnel address and the tunnel's prefix (`Address =`).
    pub address: Net,
    /// The source's tunnel address (the one peer's `AllowedIPs`, a host).
    pub source: IpAddr,
}

impl Tunnel {
    /// The tunnel's network (the address with its host bits cleared is not
    /// needed: [`Net::contains`] masks).
    pub fn network(&self) -> Net {
        self.address
    }
}

/// The interface a configuration file is for, from its name (`zo-NAME.conf`,
/// `zo-NAME.netdev`): `None` unless it is one `box new` makes.
pub fn interface_of(file_name: &str, extension: &str) -> Option<String> {
    let stem = file_name.strip_suffix(extension)?.strip_suffix('.')?;
    let name = BoxName::new(stem.strip_prefix("zo-")?).ok()?;
    (name.interface() == stem).then(|| stem.to_owned())
}

/// `(section, key, value)` of an INI-style file (`[Section]`, `Key = Value`,
/// `#` and `;` comments), keys as written.
fn ini(text: &str) -> Result<Vec<(String, String, String)>, String> {
    if text.len() > super::MAX_INPUT {
        return Err(format!("{} bytes, more than the {} doctor reads", text.len(), super::MAX_INPUT));
    }
    let mut section = String::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_owned();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {} is neither a [section] nor KEY = VALUE", i + 1));
        };
        out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(out)
}

/// The one value of `key` in sections named `section` (one such section).
fn one<'a>(kv: &'a [(String, String, String)], section: &str, key: &str) -> Result<&'a str, String> {
    let found: Vec<&str> = kv
        .iter()
        .filter(|(s, k, _)| s.eq_ignore_ascii_case(section) && k.eq_ignore_ascii_case(key))
        .map(|(_, _, v)| v.as_str())
        .collect();
    match found.as_slice() {
        [v] => Ok(v),
        [] => Err(format!("no {key} in [{section}]")),
        _ => Err(format!("{key} appears {} times in [{section}]", found.len())),
    }
}

fn address(v: &str) -> Result<Net, String> {
    match Net::parse(v) {
        Some(n) if v.contains('/') => Ok(n),
        _ => Err(format!("Address {} is not one ADDRESS/PREFIX", super::quote(v))),
    }
}

fn source(v: &str) -> Result<IpAddr, String> {
    match Net::parse(v) {
        Some(n) if n.len == if n.addr.is_ipv4() { 32 } else { 128 } => Ok(n.addr),
        _ => Err(format!("the peer's AllowedIPs {} is not one host address", super::quote(v))),
    }
}

fn peers(kv: &[(String, String, String)], section: &str) -> usize {
    // Each peer section starts with its own header, which `ini` folds into
    // the name; count the PublicKey lines instead.
    kv.iter().filter(|(s, k, _)| s.eq_ignore_ascii_case(section) && k.eq_ignore_ascii_case("PublicKey")).count()
}

/// The box's `/etc/wireguard/zo-NAME.conf` (wg-quick).
pub fn parse_wg_quick(interface: &str, text: &str) -> Result<Tunnel, String> {
    let kv = ini(text)?;
    if peers(&kv, "Peer") != 1 {
        return Err(format!("{} peers, not the source alone", peers(&kv, "Peer")));
    }
    Ok(Tunnel {
        interface: interface.to_owned(),
        address: address(one(&kv, "Interface", "Address")?)?,
        source: source(one(&kv, "Peer", "AllowedIPs")?)?,
    })
}

/// The box's `/etc/systemd/network/zo-NAME.netdev` and `.network`
/// (systemd-networkd).
pub fn parse_networkd(interface: &str, netdev: &str, network: &str) -> Result<Tunnel, String> {
    let dev = ini(netdev)?;
    let net = ini(network)?;
    if peers(&dev, "WireGuardPeer") != 1 {
        return Err(format!("{} peers, not the source alone", peers(&dev, "WireGuardPeer")));
    }
    Ok(Tunnel {
        interface: interface.to_owned(),
        address: address(one(&net, "Network", "Address")?)?,
        source: source(one(&dev, "WireGuardPeer", "AllowedIPs")?)?,
    })
}

/// What zoffsite's sshd drop-in says (each `None` when it does not say).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DropIn {
    /// The port of its one `ListenAddress ADDRESS:PORT`.
    pub port: Option<u16>,
    /// The user of its one `AllowUsers USER[@ADDRESS]`.
    pub user: Option<UserName>,
}

impl DropIn {
    /// The user it names, or [`DEFAULT_USER`] (what `box new` uses by
    /// default; another user shows up as a failure, not a pass).
    pub fn user_or_default(&self) -> UserName {
        self.user
            .clone()
            .unwrap_or_else(|| UserName::new(DEFAULT_USER).unwrap_or_else(|e| unreachable!("the default user: {e}")))
    }
}

/// Parses zoffsite's drop-in (`/etc/ssh/sshd_config.d/zoffsite.conf`).
/// Keywords are case-insensitive, as sshd reads them.
pub fn parse_dropin(text: &str) -> DropIn {
    let mut listen = Vec::new();
    let mut users = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        let (Some(k), Some(v), None) = (words.next(), words.next(), words.next()) else { continue };
        if k.eq_ignore_ascii_case("ListenAddress") {
            listen.push(v);
        } else if k.eq_ignore_ascii_case("AllowUsers") {
            users.push(v);
        }
    }
    let port = match listen.as_slice() {
        [a] => a.parse::<SocketAddr>().ok().map(|a| a.port()),
        _ => None,
    };
    let user = match users.as_slice() {
        [u] => UserName::new(u.split_once('@').map_or(*u, |(u, _)| u)).ok(),
        _ => None,
    };
    DropIn { port, user }
}

/// Everything the box checks compare with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxExpect {
    pub tunnel: Tunnel,
    pub ssh_port: u16,
    pub user: UserName,
}

impl BoxExpect {
    /// From the tunnel and the drop-in; a drop-in that names no port or
    /// user stands for sshd's port 22 and [`DEFAULT_USER`] (what `box new`
    /// uses by default; anything else shows up as a failure, not a pass).
    pub fn new(tunnel: Tunnel, dropin: &DropIn) -> BoxExpect {
        BoxExpect { tunnel, ssh_port: dropin.port.unwrap_or(22), user: dropin.user_or_default() }
    }

    /// sshd: only on the box's tunnel address, only `USER@SOURCE`.
    pub fn sshd(&self) -> sshd::Expect {
        sshd::Expect {
            listen: vec![SocketAddr::new(self.tunnel.address.addr, self.ssh_port)],
            user: format!("{}@{}", self.user, self.tunnel.source),
        }
    }

    /// The firewall: ssh only through the tunnel's interface.
    pub fn firewall(&self) -> firewall::Expect {
        firewall::Expect {
            tunnel_if: self.tunnel.interface.clone(),
            ssh_port: self.ssh_port,
            tunnel_nets: vec![self.tunnel.network()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::values::{Port, Tunnel as TunnelNet};
    use crate::provision::{self, Inputs};

    fn inputs() -> Inputs {
        let mut i = provision::tests::example();
        i.tunnel = TunnelNet::parse("10.9.0.0/24").unwrap();
        i.ssh_port = Port::new(2222).unwrap();
        i
    }

    /// The expectations read back from what `box new` renders are the
    /// inputs it was given, for both backends.
    #[test]
    fn the_rendered_files_give_back_the_inputs() {
        let i = inputs();
        let want_net = Net::parse("10.9.0.2/24").unwrap();
        let source: IpAddr = "10.9.0.1".parse().unwrap();
        let wq = parse_wg_quick("zo-friend", &provision::wireguard::box_wg_quick(&i)).unwrap();
        assert_eq!(wq, Tunnel { interface: "zo-friend".into(), address: want_net, source });
        let nd =
            parse_networkd("zo-friend", &provision::wireguard::box_netdev(&i), &provision::wireguard::box_network(&i))
                .unwrap();
        assert_eq!(nd, wq);
        let d = parse_dropin(&provision::sshd::dropin(&i));
        assert_eq!(d, DropIn { port: Some(2222), user: Some(UserName::new("zoffsite").unwrap()) });
        let e = BoxExpect::new(wq, &d);
        assert_eq!(e.sshd().listen, ["10.9.0.2:2222".parse().unwrap()]);
        assert_eq!(e.sshd().user, "zoffsite@10.9.0.1");
        assert_eq!(e.firewall().tunnel_if, "zo-friend");
        assert_eq!(e.firewall().ssh_port, 2222);
        assert_eq!(interface_of("zo-friend.conf", "conf").as_deref(), Some("zo-friend"));
        assert_eq!(interface_of("zo-friend.netdev", "netdev").as_deref(), Some("zo-friend"));
        for other in ["wg0.conf", "zo-.conf", "zo-friend.conf.bak", "zo-a b.conf", "zo-friend.netdev"] {
            assert_eq!(interface_of(other, "conf"), None, "{other}");
        }
    }

    #[test]
    fn anything_unexpected_is_an_error_or_a_default() {
        let wg = provision::wireguard::box_wg_quick(&inputs());
        for bad in [
            wg.replace("Address = 10.9.0.2/24", "Address = 10.9.0.2/24, fd00::2/64"),
            wg.replace("Address = 10.9.0.2/24", "Address = 10.9.0.2"),
            wg.replace("AllowedIPs = 10.9.0.1/32", "AllowedIPs = 0.0.0.0/0"),
            wg.clone()
                + "\n[Peer]\nPublicKey = Tpdl/iHuwKVkvB8TKa+S9UeCBWn3fJCF9/YNHqgj5CA=\nAllowedIPs = 10.9.0.3/32\n",
            wg.replace("Address = 10.9.0.2/24\n", ""),
            wg.clone() + "garbage\n",
            String::new(),
        ] {
            assert!(parse_wg_quick("zo-friend", &bad).is_err(), "{bad}");
        }
        assert_eq!(parse_dropin(""), DropIn::default());
        let two = "ListenAddress 10.9.0.2:22\nListenAddress 0.0.0.0:22\nAllowUsers a b\n";
        assert_eq!(parse_dropin(two), DropIn::default());
        let e = BoxExpect::new(parse_wg_quick("zo-friend", &wg).unwrap(), &DropIn::default());
        assert_eq!((e.ssh_port, e.user.as_str()), (22, "zoffsite"));
    }
}
