//! A bundle: everything `zoffsite box apply` installs on one machine, in one
//! file that `zoffsite box new` writes on the source.
//!
//! `box new` writes two: `box.bundle`, carried to the box (USB stick, scp,
//! an image build), and `source.bundle`, applied on the source itself. Each
//! holds the rendered files ([`super::source_files`], [`super::box_files`])
//! verbatim, the private keys that machine needs, the units to enable and,
//! for the box, what `box init` does. What `box new -n` shows is exactly
//! what `box apply` installs: the box never renders anything itself, so a
//! box running another zoffsite version installs the same bytes.
//!
//! # Format
//!
//! TOML, one table per file (the text as it will be installed):
//!
//! ```toml
//! format = "zoffsite-bundle"
//! version = 1
//! side = "box"                 # or "source"
//! name = "friend"
//! enable = ["zoffsite-firewall.service", "wg-quick@zo-friend.service"]
//!
//! [init]                       # box only: what `box init` does
//! root = "offsite/home"
//! user = "zoffsite"
//! key = "ssh-ed25519 AAAA... zoffsite@source"
//! from = "10.77.0.1"
//! exe = "/usr/local/bin/zoffsite"
//!
//! [[file]]
//! path = "/etc/wireguard/zo-friend.conf"
//! mode = "0600"
//! text = "..."
//!
//! [[secret]]                   # a private key: never shown by -n
//! path = "/etc/wireguard/zo-friend.key"
//! mode = "0600"
//! group = "systemd-network"    # optional: the group that may read it
//! text = "..."
//! ```
//!
//! # Invariants
//!
//! - **Strict.** [`parse`] refuses what it does not fully understand: an
//!   unknown key, another `format` or `version`, a path that is not a plain
//!   absolute path ([`AbsPath`]), a path twice, a mode that lets others
//!   write (or, for a secret, read), a unit name that is not one, more than
//!   [`MAX_BYTES`]. A bundle comes from the owner's own source, but it
//!   travels on sticks and networks and is applied by root: a damaged or
//!   tampered one is refused whole, before anything is installed.
//! - **Only what `box new` makes, for this box's name.** A path outside
//!   [`super::allowed_paths`] (the renderers' own paths for either side
//!   and backend: `/etc/sudoers.d/x` or `/usr/local/bin/zoffsite` are
//!   refused), a private key anywhere but a key file, a group other than
//!   systemd-network on networkd's key, an execute bit, a unit to enable
//!   other than the ones [`for_box`] or [`for_source`] enable, and a sysctl
//!   file setting anything but [`super::sshd::NONLOCAL_BIND`] are refused.
//!   What remains (the units' and the rule sets' text) can still do
//!   anything root can: the bundle must be kept from others, and `box new`
//!   and `box apply` print its SHA-256 so the owner can compare them.
//! - **Secrets only in `[[secret]]`.** A [`Secret`] is neither `Display`
//!   nor `Debug`-printed, so it cannot reach a log, `-n` output or an error
//!   message; `box apply -n` names the secret files, never their text.
//! - **The box's bundle never holds a secret of the source.** [`for_box`]
//!   takes only the box's own keys; the source's WireGuard key and SSH key
//!   exist only in [`for_source`]'s input and on the source (tested by
//!   `box new` on the bytes it writes).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::values::AbsPath;
use super::{units, Backend, BoxName, File, Inputs};
use crate::boxinit::{self, FromList, PublicKey, UserName};
use crate::names::Dataset;

/// The `format` line: what this file is, for a person who finds it.
pub const FORMAT: &str = "zoffsite-bundle";
/// The only version this zoffsite writes and reads.
pub const VERSION: u32 = 1;
/// Most bytes of a bundle [`parse`] reads (a real one is about 20 KiB).
pub const MAX_BYTES: usize = 1 << 20;
/// The group that may read the WireGuard key under systemd-networkd.
pub const NETWORKD_GROUP: &str = "systemd-network";

/// The file names `box new` writes in its directory.
pub const BOX_FILE: &str = "box.bundle";
pub const SOURCE_FILE: &str = "source.bundle";

/// Which machine a bundle is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Source,
    Box,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Box => "box",
        })
    }
}

/// A private key's text. Deliberately without `Display`, and its `Debug`
/// hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The text, for the one place that writes it to its file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A private key file to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub path: AbsPath,
    /// 0600, or 0640 with a `group`.
    pub mode: u32,
    /// The group that may read it (owner is root).
    pub group: Option<UserName>,
    pub text: Secret,
}

/// What `box init` does on the box, from the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    pub root: Dataset,
    pub user: UserName,
    pub key: PublicKey,
    pub from: FromList,
    pub exe: AbsPath,
}

impl Init {
    /// `box init`'s inputs (limits at their defaults, as `box init` has them).
    pub fn inputs(&self) -> boxinit::Inputs {
        boxinit::Inputs {
            root: self.root.clone(),
            user: self.user.clone(),
            key: self.key.clone(),
            from: Some(self.from.clone()),
            exe: self.exe.to_string(),
            authorized_keys: None,
            snapshot_limit: boxinit::Limit::Default,
            filesystem_limit: boxinit::Limit::Default,
            quota: boxinit::Limit::Default,
        }
    }
}

/// One machine's bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub side: Side,
    pub name: BoxName,
    /// Public files: shown by `-n`, each at most once (with the secrets).
    pub files: Vec<File>,
    pub secrets: Vec<SecretFile>,
    /// Units to enable (and start), in this order.
    pub enable: Vec<String>,
    /// `Some` exactly for the box.
    pub init: Option<Init>,
}

/// The box's private keys, made by `box new`.
#[derive(Debug, Clone)]
pub struct BoxSecrets {
    /// `wg genkey`'s output for the box.
    pub wg: Secret,
    /// The box's SSH host key, OpenSSH private key format.
    pub host_key: Secret,
}

/// The source's WireGuard private key for this tunnel.
#[derive(Debug, Clone)]
pub struct SourceSecrets {
    pub wg: Secret,
}

fn abs(s: &str) -> AbsPath {
    AbsPath::new(s).unwrap_or_else(|e| unreachable!("a rendered path is valid: {e}"))
}

fn wg_secret(backend: Backend, interface: &str, key: &Secret) -> SecretFile {
    let (mode, group) = match backend {
        Backend::WgQuick => (0o600, None),
        Backend::Networkd => {
            (0o640, Some(UserName::new(NETWORKD_GROUP).unwrap_or_else(|e| unreachable!("a constant group: {e}"))))
        }
    };
    SecretFile { path: abs(&backend.key_file(interface)), mode, group, text: key.clone() }
}

/// The box's bundle.
pub fn for_box(i: &Inputs, secrets: &BoxSecrets) -> Bundle {
    let interface = i.interface();
    let init = super::sshd::box_init_inputs(i);
    Bundle {
        side: Side::Box,
        name: i.name.clone(),
        files: super::box_files(i),
        secrets: vec![
            wg_secret(i.box_backend, &interface, &secrets.wg),
            SecretFile { path: i.host_key_file.clone(), mode: 0o600, group: None, text: secrets.host_key.clone() },
        ],
        enable: vec![
            units::firewall_unit_name(None),
            i.box_backend.unit(&interface),
            units::BOX_PRUNE_TIMER.to_owned(),
            units::BOX_CHECK_TIMER.to_owned(),
            units::KEEPALIVE_TIMER.to_owned(),
            units::BOX_DOCTOR_TIMER.to_owned(),
        ],
        init: Some(Init {
            root: init.root,
            user: init.user,
            key: init.key,
            from: init.from.unwrap_or_else(|| unreachable!("box_init_inputs names the source")),
            exe: i.box_exe.clone(),
        }),
    }
}

/// The source's bundle (its end of this box's tunnel, firewall and timers).
pub fn for_source(i: &Inputs, secrets: &SourceSecrets) -> Bundle {
    let interface = i.interface();
    Bundle {
        side: Side::Source,
        name: i.name.clone(),
        files: super::source_files(i),
        secrets: vec![wg_secret(i.source_backend, &interface, &secrets.wg)],
        enable: vec![
            units::firewall_unit_name(Some(&i.name)),
            i.source_backend.unit(&interface),
            units::BACKUP_TIMER.to_owned(),
            units::DRILL_TIMER.to_owned(),
        ],
        init: None,
    }
}

// ---------------------------------------------------------------------------
// The file format

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundle {
    format: String,
    version: u32,
    side: Side,
    name: String,
    enable: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    init: Option<RawInit>,
    #[serde(default, rename = "file")]
    files: Vec<RawFile>,
    #[serde(default, rename = "secret")]
    secrets: Vec<RawFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInit {
    root: String,
    user: String,
    key: String,
    from: String,
    exe: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    text: String,
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a zoffsite bundle: {0}")]
    Syntax(String),
    #[error("this bundle is version {0}; this zoffsite reads version {VERSION} only: apply it with the zoffsite that made it, or make it again with `zoffsite box new`")]
    Version(u32),
    #[error("{0}")]
    Invalid(String),
    #[error("the bundle is larger than {MAX_BYTES} bytes: not one `zoffsite box new` wrote")]
    TooLarge,
}

fn invalid(msg: impl Into<String>) -> BundleError {
    BundleError::Invalid(msg.into())
}

fn mode_text(mode: u32) -> String {
    format!("{mode:04o}")
}

fn parse_mode(s: &str) -> Option<u32> {
    (s.len() == 4 && s.starts_with('0') && s.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        .then(|| u32::from_str_radix(s, 8).ok())
        .flatten()
}

/// A systemd unit name a bundle may enable: `[A-Za-z0-9@._-]`, with a
/// known suffix.
fn is_unit(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"@._-".contains(&b))
        && !s.starts_with(['.', '-'])
        && [".service", ".timer", ".socket", ".path"].iter().any(|suf| s.len() > suf.len() && s.ends_with(suf))
}

/// The units a bundle for box `name` may enable, for either side and
/// either backend (what [`for_box`] and [`for_source`] enable).
fn allowed_units(name: &BoxName) -> Vec<String> {
    let interface = name.interface();
    let mut u = vec![
        units::firewall_unit_name(None),
        units::firewall_unit_name(Some(name)),
        Backend::WgQuick.unit(&interface),
        Backend::Networkd.unit(&interface),
    ];
    u.extend(units::ALL.iter().map(|s| (*s).to_owned()));
    u
}

fn not_allowed(path: &str, name: &BoxName, what: &str, allowed: &[String]) -> BundleError {
    invalid(format!("{path} is not a {what} a bundle for box {name} installs: only {}", allowed.join(", ")))
}

/// The sysctl file sets [`super::sshd::NONLOCAL_BIND`] and nothing else
/// (comments and blank lines aside, as `sysctl` reads them).
fn sysctl_ok(text: &str) -> bool {
    text.lines().map(str::trim).all(|l| l.is_empty() || l.starts_with(['#', ';']) || l == super::sshd::NONLOCAL_BIND)
}

/// The bundle's text. Not secret-free: it is written 0600.
pub fn render(b: &Bundle) -> String {
    let raw = RawBundle {
        format: FORMAT.to_owned(),
        version: VERSION,
        side: b.side,
        name: b.name.to_string(),
        enable: b.enable.clone(),
        init: b.init.as_ref().map(|i| RawInit {
            root: i.root.to_string(),
            user: i.user.to_string(),
            key: i.key.to_string(),
            from: i.from.as_str().to_owned(),
            exe: i.exe.to_string(),
        }),
        files: b
            .files
            .iter()
            .map(|f| RawFile { path: f.path.clone(), mode: mode_text(f.mode), group: None, text: f.text.clone() })
            .collect(),
        secrets: b
            .secrets
            .iter()
            .map(|s| RawFile {
                path: s.path.to_string(),
                mode: mode_text(s.mode),
                group: s.group.as_ref().map(ToString::to_string),
                text: s.text.expose().to_owned(),
            })
            .collect(),
    };
    let body = toml::to_string_pretty(&raw).unwrap_or_else(|e| unreachable!("a bundle always serializes: {e}"));
    format!(
        "# zoffsite {side} bundle for box {name}, made by `zoffsite box new`. SECRET: it holds\n\
         # private keys. Install it with `zoffsite box apply` (as root, on the {side}), then delete it.\n{body}",
        side = b.side,
        name = b.name,
    )
}

/// The SHA-256 of a bundle's bytes, lowercase hex (as `sha256sum` prints
/// it): `box new` prints it for each bundle it writes and `box apply` for
/// the one it read, so the owner can see that what arrived is what was
/// made.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a bundle, refusing anything [`render`] would not have written
/// (see the module docs).
pub fn parse(text: &str) -> Result<Bundle, BundleError> {
    if text.len() > MAX_BYTES {
        return Err(BundleError::TooLarge);
    }
    // toml's message quotes the input (an unknown key or variant): escaped
    // and bounded, as everything a bundle says.
    let raw: RawBundle =
        toml::from_str(text).map_err(|e| BundleError::Syntax(crate::protocol::sanitize(e.message(), 300)))?;
    if raw.format != FORMAT {
        return Err(BundleError::Syntax(format!(
            "format is {:?}, not {FORMAT:?}",
            crate::protocol::sanitize(&raw.format, 80)
        )));
    }
    if raw.version != VERSION {
        return Err(BundleError::Version(raw.version));
    }
    let name = BoxName::new(&raw.name).map_err(|e| invalid(format!("name: {e}")))?;
    // What a bundle for this box may install and enable: exactly what the
    // renderers make for it (see the module docs). Whoever carries the
    // bundle must not get root by adding a file.
    let (secret_paths, file_paths) = super::allowed_paths(&name);
    let allowed_units = allowed_units(&name);
    let mut seen = BTreeSet::new();
    // A unit's drop-in directory has an `@` (`wg-quick@zo-friend.service.d`),
    // which AbsPath does not allow; the check is otherwise AbsPath's.
    let mut path = |p: &str, what: &str| -> Result<String, BundleError> {
        AbsPath::new(&p.replace('@', "_")).map_err(|e| invalid(format!("{what} path: {e}")))?;
        if !seen.insert(p.to_owned()) {
            return Err(invalid(format!("{p} is in the bundle twice")));
        }
        Ok(p.to_owned())
    };
    let mut files = Vec::with_capacity(raw.files.len());
    for f in &raw.files {
        let p = path(&f.path, "file")?;
        if !file_paths.contains(&p) {
            return Err(not_allowed(&p, &name, "file", &file_paths));
        }
        let mode = parse_mode(&f.mode).filter(|m| m & 0o7133 == 0).ok_or_else(|| {
            invalid(format!(
                "{p}: mode {:?} must be four octal digits, with no execute bit, that let only root write (such as 0644)",
                crate::protocol::sanitize(&f.mode, 16)
            ))
        })?;
        if f.group.is_some() {
            return Err(invalid(format!("{p}: only a secret has a group")));
        }
        if p == super::sshd::SYSCTL_PATH && !sysctl_ok(&f.text) {
            return Err(invalid(format!(
                "{p}: a bundle's sysctl file sets `{}` only (and comments)",
                super::sshd::NONLOCAL_BIND
            )));
        }
        files.push(File { path: p, mode, text: f.text.clone() });
    }
    let mut secrets = Vec::with_capacity(raw.secrets.len());
    for s in &raw.secrets {
        let p = path(&s.path, "secret")?;
        if !secret_paths.contains(&p) {
            return Err(not_allowed(&p, &name, "private key", &secret_paths));
        }
        let p = AbsPath::new(&p).map_err(|e| invalid(format!("secret path: {e}")))?;
        let networkd_key = Backend::Networkd.key_file(&name.interface());
        let group = match s.group.as_deref() {
            None => None,
            Some(NETWORKD_GROUP) if p.as_str() == networkd_key => {
                Some(UserName::new(NETWORKD_GROUP).unwrap_or_else(|e| unreachable!("a constant group: {e}")))
            }
            Some(g) => {
                return Err(invalid(format!(
                    "{p}: group {:?}: only {networkd_key} is given to a group, {NETWORKD_GROUP}",
                    crate::protocol::sanitize(g, 40)
                )))
            }
        };
        let allowed = if group.is_some() { 0o640 } else { 0o600 };
        let mode = parse_mode(&s.mode).filter(|m| m & !allowed == 0 && m & 0o600 == 0o600).ok_or_else(|| {
            invalid(format!(
                "{p}: a secret's mode is 0600 (or 0640 with a group), not {:?}",
                crate::protocol::sanitize(&s.mode, 16)
            ))
        })?;
        secrets.push(SecretFile { path: p, mode, group, text: Secret::new(s.text.clone()) });
    }
    let mut units = BTreeSet::new();
    for u in &raw.enable {
        if !is_unit(u) {
            return Err(invalid(format!("enable: {:?} is not a systemd unit name", crate::protocol::sanitize(u, 80))));
        }
        if !allowed_units.contains(u) {
            return Err(invalid(format!(
                "enable: {u} is not a unit a bundle for box {name} enables: only {}",
                allowed_units.join(", ")
            )));
        }
        if !units.insert(u.as_str()) {
            return Err(invalid(format!("enable: {u} is listed twice")));
        }
    }
    let init = match (raw.side, raw.init) {
        (Side::Source, None) => None,
        (Side::Source, Some(_)) => return Err(invalid("a source bundle has no [init]")),
        (Side::Box, None) => return Err(invalid("a box bundle needs [init] (what `box init` does)")),
        (Side::Box, Some(i)) => Some(Init {
            root: Dataset::new(&i.root).map_err(|e| invalid(format!("init.root: {e}")))?,
            user: UserName::new(&i.user).map_err(|e| invalid(format!("init.user: {e}")))?,
            key: PublicKey::parse(&i.key).map_err(|e| invalid(format!("init.key: {e}")))?,
            from: FromList::new(&i.from).map_err(|e| invalid(format!("init.from: {e}")))?,
            exe: AbsPath::new(&i.exe).map_err(|e| invalid(format!("init.exe: {e}")))?,
        }),
    };
    Ok(Bundle { side: raw.side, name, files, secrets, enable: raw.enable, init })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::tests::example as inputs;

    fn secrets() -> (BoxSecrets, SourceSecrets) {
        (
            BoxSecrets {
                wg: Secret::new("eBoxWgPrivateKeyBase64xxxxxxxxxxxxxxxxxxxxx=\n"),
                host_key: Secret::new(
                    "-----BEGIN OPENSSH PRIVATE KEY-----\nboxhostkey\n-----END OPENSSH PRIVATE KEY-----\n",
                ),
            },
            SourceSecrets { wg: Secret::new("sSourceWgPrivateKeyBase64xxxxxxxxxxxxxxxxxx=\n") },
        )
    }

    #[test]
    fn both_bundles_round_trip_exactly() {
        let i = inputs();
        let (b, s) = secrets();
        for bundle in [for_box(&i, &b), for_source(&i, &s)] {
            let text = render(&bundle);
            assert_eq!(parse(&text).unwrap(), bundle, "{text}");
        }
    }

    #[test]
    fn the_box_bundle_holds_no_secret_of_the_source_and_the_source_bundle_none_of_the_box() {
        let i = inputs();
        let (b, s) = secrets();
        let boxb = render(&for_box(&i, &b));
        let srcb = render(&for_source(&i, &s));
        assert!(!boxb.contains(s.wg.expose().trim()), "{boxb}");
        assert!(boxb.contains(b.wg.expose().trim()) && boxb.contains("boxhostkey"));
        assert!(!srcb.contains(b.wg.expose().trim()) && !srcb.contains("boxhostkey"), "{srcb}");
    }

    #[test]
    fn a_secret_never_shows_in_debug() {
        let (b, _) = secrets();
        let i = inputs();
        let shown = format!("{:?}", for_box(&i, &b));
        assert!(!shown.contains("boxhostkey") && !shown.contains("eBoxWg"), "{shown}");
    }

    #[test]
    fn the_box_enables_its_firewall_tunnel_and_timers_and_carries_box_init() {
        let i = inputs();
        let b = for_box(&i, &secrets().0);
        assert_eq!(
            b.enable,
            [
                "zoffsite-firewall.service",
                &format!("wg-quick@{}.service", i.interface()),
                units::BOX_PRUNE_TIMER,
                units::BOX_CHECK_TIMER,
                units::KEEPALIVE_TIMER,
                units::BOX_DOCTOR_TIMER
            ]
        );
        let init = b.init.unwrap();
        assert_eq!(init.from.as_str(), i.tunnel.source().to_string());
        assert_eq!(init.inputs().forced_command(), super::super::sshd::box_init_inputs(&i).forced_command());
        assert!(b.secrets.iter().any(|s| s.path == i.host_key_file && s.mode == 0o600));
    }

    #[test]
    fn networkd_keys_are_group_readable_by_systemd_network_and_that_round_trips() {
        let mut i = inputs();
        i.box_backend = Backend::Networkd;
        let b = for_box(&i, &secrets().0);
        let wg = &b.secrets[0];
        assert_eq!((wg.mode, wg.group.as_ref().map(ToString::to_string).as_deref()), (0o640, Some(NETWORKD_GROUP)));
        assert!(b.enable.contains(&"systemd-networkd.service".to_owned()));
        assert_eq!(parse(&render(&b)).unwrap(), b);
    }

    fn tampered(from: &str, to: &str) -> String {
        let text = render(&for_box(&inputs(), &secrets().0));
        assert!(text.contains(from), "{from} not in {text}");
        text.replacen(from, to, 1)
    }

    #[test]
    fn anything_not_written_by_render_is_refused() {
        let cases: Vec<(String, &str)> = vec![
            (tampered("version = 1", "version = 2"), "version 2"),
            (tampered("format = \"zoffsite-bundle\"", "format = \"other\""), "format"),
            (tampered("version = 1", "version = 1\nextra = true"), "unknown field"),
            (tampered("mode = \"0644\"", "mode = \"0666\""), "mode"),
            (tampered("mode = \"0644\"", "mode = \"644\""), "mode"),
            (tampered("mode = \"0644\"", "mode = \"4755\""), "mode"),
            (
                tampered("mode = \"0600\"\ntext = \"\"\"\n-----BEGIN", "mode = \"0644\"\ntext = \"\"\"\n-----BEGIN"),
                "secret's mode",
            ),
            (tampered("path = \"/etc/ssh/sshd_config.d/zoffsite.conf\"", "path = \"/etc/../etc/passwd\""), "path"),
            (tampered("path = \"/etc/ssh/sshd_config.d/zoffsite.conf\"", "path = \"etc/passwd\""), "path"),
            (
                tampered(
                    "path = \"/etc/sysctl.d/60-zoffsite.conf\"",
                    "path = \"/etc/ssh/sshd_config.d/zoffsite.conf\"",
                ),
                "twice",
            ),
            (tampered("\"zoffsite-box-check.timer\"", "\"../../x.timer\""), "unit"),
            (tampered("\"zoffsite-box-check.timer\"", "\"zoffsite-box-prune.timer\""), "twice"),
            (tampered("side = \"box\"", "side = \"source\""), "[init]"),
            (tampered("user = \"zoffsite\"", "user = \"root\\nx\""), "init.user"),
        ];
        for (text, want) in cases {
            let err = parse(&text).expect_err(want).to_string();
            assert!(err.contains(want), "wanted {want:?} in {err:?}");
        }
        let err = parse(&tampered("side = \"box\"", &format!("side = \"b\\r{}\"", "x".repeat(10_000))))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 400 && !err.contains('\r'), "escaped and bounded: {err}");
        let mut big = render(&for_box(&inputs(), &secrets().0));
        big.push_str(&"#".repeat(MAX_BYTES));
        assert!(matches!(parse(&big), Err(BundleError::TooLarge)));
    }

    #[test]
    fn both_backends_and_both_sides_parse() {
        let (b, s) = secrets();
        for backend in [Backend::WgQuick, Backend::Networkd] {
            let mut i = inputs();
            i.box_backend = backend;
            i.source_backend = backend;
            for bundle in [for_box(&i, &b), for_source(&i, &s)] {
                assert_eq!(parse(&render(&bundle)).unwrap(), bundle, "{backend:?} {}", bundle.side);
            }
        }
    }

    #[test]
    fn a_bundle_installs_and_enables_only_what_box_new_makes() {
        let networkd = || {
            let mut i = inputs();
            i.box_backend = Backend::Networkd;
            render(&for_box(&i, &secrets().0))
        };
        let dropin = "path = \"/etc/ssh/sshd_config.d/zoffsite.conf\"";
        let cases: Vec<(String, &str)> = vec![
            (tampered(dropin, "path = \"/etc/sudoers.d/x\""), "is not a file a bundle for box friend installs: only"),
            (tampered(dropin, "path = \"/usr/local/bin/zoffsite\""), "/etc/ssh/sshd_config.d/zoffsite.conf"),
            (tampered(dropin, "path = \"/etc/wireguard/zo-other.conf\""), "not a file"),
            (
                tampered(dropin, "path = \"/etc/ssh/ssh_host_zoffsite_ed25519_key\""),
                "ssh_host_zoffsite_ed25519_key is not a file",
            ),
            (
                tampered("path = \"/etc/ssh/ssh_host_zoffsite_ed25519_key\"", "path = \"/root/.ssh/authorized_keys\""),
                "is not a private key a bundle for box friend installs: only /etc/wireguard/zo-friend.key",
            ),
            (tampered("mode = \"0644\"", "mode = \"0755\""), "no execute bit"),
            (tampered("mode = \"0644\"", "mode = \"0744\""), "no execute bit"),
            (tampered("\"zoffsite-box-check.timer\"", "\"debug-shell.service\""), "only zoffsite-firewall.service"),
            (tampered("\"zoffsite-box-check.timer\"", "\"wg-quick@zo-other.service\""), "not a unit"),
            (
                tampered("net.ipv4.ip_nonlocal_bind = 1", "kernel.core_pattern = |/tmp/x"),
                "sets `net.ipv4.ip_nonlocal_bind = 1` only",
            ),
            (
                tampered("net.ipv4.ip_nonlocal_bind = 1", "net.ipv4.ip_nonlocal_bind = 1\nnet.ipv4.ip_forward = 1"),
                "sysctl file",
            ),
            (
                networkd().replacen("group = \"systemd-network\"", "group = \"zoffsite\"", 1),
                "only /etc/systemd/network/zo-friend.key is given to a group",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).expect_err(want).to_string();
            assert!(err.contains(want), "wanted {want:?} in {err:?}");
        }
        // Comments and blank lines in the sysctl file are fine.
        let ok = tampered("net.ipv4.ip_nonlocal_bind = 1", "\n; a comment\n  net.ipv4.ip_nonlocal_bind = 1");
        parse(&ok).unwrap();
    }

    #[test]
    fn sha256_is_sha256sums_hex() {
        assert_eq!(sha256(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,400}") {
            let _ = parse(&s);
        }
    }
}
