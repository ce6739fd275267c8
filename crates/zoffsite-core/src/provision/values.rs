//! The validated values that the provisioning renderers interpolate.
//!
//! Every type here is built only by its constructor, and every constructor
//! accepts a closed set of characters that needs no quoting in any format a
//! value reaches: wg-quick's INI (and the bash that runs its `PostUp`),
//! systemd units and .netdev files, sshd_config, nftables, TOML. That set
//! never holds whitespace (but the single spaces of a [`Schedule`]), quotes,
//! backslashes, `%` (a systemd specifier), `#` or `;` (comments), `$` or a
//! backtick (shell), braces (nftables), `=` outside base64 padding, or any
//! control character. So a name with a newline or a quote can never reach a
//! file: it is refused here, with a message that shows it escaped.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use crate::boxinit::{InputError, PublicKey};
use crate::names::Dataset;
use crate::protocol::sanitize;

fn bad(msg: impl Into<String>) -> InputError {
    InputError(msg.into())
}

fn shown(s: &str) -> String {
    sanitize(s, 80)
}

/// The box's name, as in `zoffsite box new NAME`: 1 to [`BoxName::MAX_LEN`]
/// of `[a-z0-9-]`, starting with a letter, not ending with `-`.
///
/// It names the WireGuard interface on both ends ([`BoxName::interface`])
/// and the source's nftables table ([`BoxName::nft_table`]); it is also a
/// valid `[[target]]` name of the source's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxName(String);

impl BoxName {
    /// The interface name is `zo-NAME`, and Linux allows 15 bytes
    /// (`IFNAMSIZ` less the NUL).
    pub const MAX_LEN: usize = 12;

    pub fn new(s: &str) -> Result<Self, InputError> {
        let ok = (1..=Self::MAX_LEN).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(bad(format!(
                "box name {:?}: 1-{} of [a-z0-9-], starting with a letter and not ending with '-' (it names the WireGuard interface zo-NAME, at most 15 bytes)",
                shown(s),
                Self::MAX_LEN
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The WireGuard interface of this box's tunnel, the same name on both
    /// ends (one interface per box on the source: each has its own port,
    /// key pair and tunnel network).
    pub fn interface(&self) -> String {
        format!("zo-{}", self.0)
    }

    /// The source's nftables table for this box's tunnel. nftables
    /// identifiers take `_` but not `-`; names hold no `_`, so the mapping
    /// is one to one.
    pub fn nft_table(&self) -> String {
        format!("zoffsite_{}", self.0.replace('-', "_"))
    }
}

impl fmt::Display for BoxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the box finds the source: a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name by RFC 1123 labels; its last label is not all digits
    /// (RFC 3696), so it can never be mistaken for an address.
    Name(String),
    Ip(IpAddr),
}

impl Host {
    pub fn parse(s: &str) -> Result<Self, InputError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
                return Err(bad(format!("{ip} cannot be the source's address")));
            }
            return Ok(Host::Ip(ip));
        }
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let labels: Vec<&str> = s.split('.').collect();
        let ok = (1..=253).contains(&s.len())
            && labels.iter().all(|l| label_ok(l))
            && !labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
        if ok {
            Ok(Host::Name(s.to_owned()))
        } else {
            Err(bad(format!(
                "{:?} is neither an IP address nor a host name (labels of letters, digits and '-', dot-separated, no trailing dot)",
                shown(s)
            )))
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// `--endpoint HOST:PORT`: the source's WireGuard server as the box dials
/// it (`[ADDRESS]:PORT` for IPv6). The port is also the source's
/// `ListenPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: Host,
    pub port: Port,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Self, InputError> {
        let usage = || {
            bad(format!(
                "--endpoint {:?}: give HOST:PORT, e.g. home.example.org:51820 or [2001:db8::1]:51820",
                shown(s)
            ))
        };
        let (host, port) = match s.strip_prefix('[') {
            Some(rest) => {
                let (h, p) = rest.split_once("]:").ok_or_else(usage)?;
                if !h.contains(':') {
                    return Err(usage());
                }
                (h, p)
            }
            None => {
                let (h, p) = s.rsplit_once(':').ok_or_else(usage)?;
                if h.contains(':') {
                    // An IPv6 address without brackets: its port is ambiguous.
                    return Err(usage());
                }
                (h, p)
            }
        };
        Ok(Endpoint { host: Host::parse(host)?, port: Port::parse(port)? })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// A TCP or UDP port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port(u16);

impl Port {
    pub fn new(n: u16) -> Result<Self, InputError> {
        if n == 0 {
            Err(bad("port 0 is not a port; give 1-65535"))
        } else {
            Ok(Self(n))
        }
    }

    /// Decimal digits only, as written: no sign, no leading zeros.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        match s.parse::<u16>() {
            Ok(n) if s == n.to_string() => Self::new(n),
            _ => Err(bad(format!("{:?} is not a port (1-65535)", shown(s)))),
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The tunnel's IPv4 network (`--tunnel`, default [`Tunnel::DEFAULT`]): the
/// source is its first address, the box its second.
///
/// Refused: host bits set (`10.77.0.5/24`: which network was meant?),
/// prefixes longer than /30 (no room for both ends and the network and
/// broadcast addresses), and networks not wholly inside one RFC 1918 block
/// (a public range would shadow real hosts on both machines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    network: Ipv4Addr,
    prefix: u8,
}

const PRIVATE_BLOCKS: [(Ipv4Addr, u8); 3] =
    [(Ipv4Addr::new(10, 0, 0, 0), 8), (Ipv4Addr::new(172, 16, 0, 0), 12), (Ipv4Addr::new(192, 168, 0, 0), 16)];

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl Tunnel {
    pub const DEFAULT: &'static str = "10.77.0.0/24";

    pub fn parse(s: &str) -> Result<Self, InputError> {
        let usage = || bad(format!("--tunnel {:?}: give an IPv4 network like {}", shown(s), Self::DEFAULT));
        let (a, p) = s.split_once('/').ok_or_else(usage)?;
        let network: Ipv4Addr = a.parse().map_err(|_| usage())?;
        let prefix = match p.parse::<u8>() {
            Ok(n) if p == n.to_string() && n <= 32 => n,
            _ => return Err(usage()),
        };
        if prefix > 30 {
            return Err(bad(format!("--tunnel {s}: /{prefix} has no room for the source's and the box's addresses; use /30 or shorter, e.g. /24")));
        }
        let net = u32::from(network);
        if net & !mask(prefix) != 0 {
            let fixed = Ipv4Addr::from(net & mask(prefix));
            return Err(bad(format!("--tunnel {s}: host bits are set; the network is {fixed}/{prefix}")));
        }
        let inside = PRIVATE_BLOCKS.iter().any(|&(block, bits)| prefix >= bits && net & mask(bits) == u32::from(block));
        if !inside {
            return Err(bad(format!(
                "--tunnel {s}: use a private network inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 (RFC 1918), e.g. {}",
                Self::DEFAULT
            )));
        }
        Ok(Tunnel { network, prefix })
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// The source's address in the tunnel: the network's first.
    pub fn source(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The box's address in the tunnel: the network's second.
    pub fn box_addr(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 2)
    }
}

impl Default for Tunnel {
    fn default() -> Self {
        Tunnel { network: Ipv4Addr::new(10, 77, 0, 0), prefix: 24 }
    }
}

impl fmt::Display for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A WireGuard public key: the canonical base64 of 32 bytes (44
/// characters, one `=`), not all zero. Only public keys have this type:
/// private keys never reach a renderer (see the module docs of
/// [`crate::provision`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgKey(String);

impl WgKey {
    pub fn new(s: &str) -> Result<Self, InputError> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        };
        let b = s.as_bytes();
        let digits: Option<Vec<u8>> = b.get(..43).and_then(|d| d.iter().map(|&c| value(c)).collect());
        // 32 bytes are 256 bits: 42 digits of 6 bits and 4 bits of the
        // 43rd, whose last 2 bits must be 0 for the text to be canonical.
        let ok = b.len() == 44
            && b[43] == b'='
            && digits.as_ref().is_some_and(|d| d[42] & 0b11 == 0 && d.iter().any(|&v| v != 0));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(bad(format!(
                "{:?} is not a WireGuard public key (44 characters of base64, as `wg pubkey` prints)",
                shown(s)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The box's SSH host public key, which the source pins from the start.
/// Rendered without its comment (`TYPE BASE64`), as known_hosts wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey(PublicKey);

impl HostKey {
    pub fn new(key: PublicKey) -> Result<Self, InputError> {
        if key.kind.starts_with("sk-") {
            return Err(bad(format!("{} is a security-key type; a host key cannot be one", key.kind)));
        }
        Ok(Self(key))
    }

    pub fn key(&self) -> &PublicKey {
        &self.0
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.kind, self.0.body)
    }
}

/// An absolute path of plain characters (`[A-Za-z0-9_.+-]` components,
/// none empty, `.` or `..`), so it sits unquoted in a unit's `ExecStart`,
/// an sshd keyword, nftables or the bash of wg-quick's `PostUp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsPath(String);

impl AbsPath {
    pub fn new(s: &str) -> Result<Self, InputError> {
        let ok = s.len() <= 1024
            && s.strip_prefix('/').is_some_and(|rest| {
                rest.split('/').all(|c| {
                    !c.is_empty()
                        && c != "."
                        && c != ".."
                        && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
                })
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(bad(format!(
                "{:?} must be an absolute path to a file, of letters, digits and _.+- between single slashes",
                shown(s)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A systemd calendar expression for a timer's `OnCalendar=` (`daily`,
/// `*-*-* 03:30`, `Mon..Fri 22:00`): its characters only; whether systemd
/// understands it, `systemd-analyze calendar` says (the tests ask it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(String);

impl Schedule {
    pub fn new(s: &str) -> Result<Self, InputError> {
        let ok = (1..=64).contains(&s.len())
            && !s.starts_with(' ')
            && !s.ends_with(' ')
            && !s.contains("  ")
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b" *:,./~-".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(bad(format!(
                "schedule {:?}: a systemd calendar expression such as \"daily\" or \"*-*-* 03:30\" (letters, digits, single spaces and *:,./~-)",
                shown(s)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The box's WireGuard `PersistentKeepalive`, in seconds (1-65535, as
/// WireGuard takes it; 0, "off", is refused: behind the friend's NAT the
/// box must keep its mapping open or the source can never reach it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive(u16);

impl Keepalive {
    /// 25 s, not the seed's 1 s: NAT and stateful firewall mappings of UDP
    /// live 30 s or more (RFC 4787 asks for at least 2 min; common routers
    /// keep 30-180 s), so a packet every 25 s keeps them open, as
    /// WireGuard's own documentation suggests; one a second is 40 times
    /// the traffic (and wake-ups, and metadata for an observer) for
    /// nothing.
    pub const DEFAULT: Keepalive = Keepalive(25);

    pub fn new(secs: u16) -> Result<Self, InputError> {
        if secs == 0 {
            Err(bad("a keepalive of 0 turns it off, and the source could not reach a box behind NAT; give 1-65535 seconds (default 25)"))
        } else {
            Ok(Self(secs))
        }
    }

    pub fn secs(self) -> u16 {
        self.0
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Keepalive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The box's root dataset (`--root`): below a pool (as `box.toml` and
/// `serve --root` require) and of plain characters (no spaces, which ZFS
/// allows but the forced command of `box init` cannot carry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxRoot(Dataset);

impl BoxRoot {
    pub fn new(root: Dataset) -> Result<Self, InputError> {
        if root.depth() < 2 {
            return Err(bad(format!("--root {root} is a whole pool; use a dataset below it, e.g. {root}/home")));
        }
        if root.as_str().contains(' ') {
            return Err(bad(format!(
                "--root {:?}: no spaces, please (the forced command cannot carry them)",
                shown(root.as_str())
            )));
        }
        Ok(Self(root))
    }

    pub fn dataset(&self) -> &Dataset {
        &self.0
    }
}

impl fmt::Display for BoxRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
