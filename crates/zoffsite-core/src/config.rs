//! The source's configuration file (`/etc/zoffsite/zoffsite.toml`).
//!
//! Parsing is strict: unknown keys are errors (a typo such as `exlude`
//! must not silently back up what the user meant to leave out), and every
//! value is validated into a typed form here, so the rest of the program
//! never sees an unchecked host name or dataset. Errors name the key and
//! what to do.
//!
//! A target's bandwidth is a [`Schedule`]: `bandwidth_limit` (the default;
//! unlimited without it) and any `[[target.bandwidth_window]]` tables, each
//! `from`, `to` (`"HH:MM"`, the source's local time) and `limit`, that
//! replace it for part of the day. Its rules (no overlap, across midnight,
//! daylight saving time, the units) are [`crate::bandwidth`]'s.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::bandwidth::{self, Schedule, TimeOfDay, Window};
use crate::names::Dataset;

pub const DEFAULT_PATH: &str = "/etc/zoffsite/zoffsite.toml";
/// The environment variable that names the config file (below `-c`,
/// above the default).
pub const ENV: &str = "ZOFFSITE_CONFIG";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source: Source,
    pub targets: Vec<Target>,
    /// Who hears about runs (`[notify]`; [`crate::notify`]).
    pub notify: crate::notify::Notify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Roots of the selection: each is backed up with all its children.
    pub datasets: Vec<Dataset>,
    /// Left out, with all their children.
    pub exclude: Vec<Dataset>,
    /// Retention of zoffsite's own snapshots on the source (`[source.keep]`);
    /// without it, nothing is ever pruned.
    pub keep: Option<crate::retention::KeepPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_file: PathBuf,
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    /// `status` fails when the newest snapshot on this target is older.
    pub max_age: Duration,
    /// The most bytes per second streams to this target may take, by time
    /// of day (a friend's upload line): `bandwidth_limit` and the
    /// `bandwidth_window`s.
    pub bandwidth: Schedule,
    /// The TCP congestion control of the source's connection to this box.
    pub congestion_control: CongestionControl,
}

/// Which TCP congestion control the source's connection to a box uses
/// (`congestion_control` in a target; the sending side's choice is the one
/// that counts, and the source sends).
///
/// Why not the system's default: Linux's default, CUBIC, takes every lost
/// packet for congestion, so on a home line that drops a few packets in a
/// thousand a backup moves at a fraction of the line's rate whatever runs
/// above TCP (docs/benchmarks.md: about a fifth of a 20 Mbit/s line at 0.5%
/// loss). BBR paces by the measured bottleneck rate and round trip instead.
/// Set on zoffsite's own socket only (docs/box.md, "A line that loses
/// packets"), never system-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CongestionControl {
    /// Whatever the source's kernel uses by default (`"system"`).
    System,
    /// An algorithm by its kernel name (`net.ipv4.tcp_available_congestion_control`):
    /// 1-15 of `a-z`, `0-9`, `_`. One the kernel cannot provide leaves the
    /// connection on the system's default.
    Named(String),
}

impl CongestionControl {
    /// The default: BBR.
    pub const DEFAULT: &'static str = "bbr";

    /// A kernel algorithm's name as the config takes it: 1-15 of `a-z`,
    /// `0-9`, `_` (the kernel's TCP_CA_NAME_MAX is 16 bytes with the NUL).
    pub fn valid_name(s: &str) -> bool {
        (1..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }

    fn parse(key: &str, s: &str) -> Result<Self, ConfigError> {
        if s == "system" {
            return Ok(Self::System);
        }
        if Self::valid_name(s) {
            return Ok(Self::Named(s.to_owned()));
        }
        Err(invalid(
            key,
            format!(
                "{s:?} is not a TCP congestion control name: use \"bbr\" (the default), another name the kernel lists in /proc/sys/net/ipv4/tcp_available_congestion_control such as \"cubic\", or \"system\" for the source's default"
            ),
        ))
    }
}

impl Default for CongestionControl {
    fn default() -> Self {
        Self::Named(Self::DEFAULT.to_owned())
    }
}

impl std::fmt::Display for CongestionControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::System => f.write_str("system"),
            Self::Named(n) => f.write_str(n),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Toml(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: RawSource,
    #[serde(default)]
    target: Vec<RawTarget>,
    #[serde(default)]
    notify: Option<crate::notify::RawNotify>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    datasets: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    keep: Option<crate::retention::KeepPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    user: String,
    identity_file: PathBuf,
    known_hosts: PathBuf,
    #[serde(default)]
    connect_timeout: Option<String>,
    #[serde(default)]
    max_age: Option<String>,
    #[serde(default)]
    bandwidth_limit: Option<String>,
    #[serde(default)]
    bandwidth_window: Vec<RawWindow>,
    #[serde(default)]
    congestion_control: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    from: String,
    to: String,
    limit: String,
}

fn default_port() -> u16 {
    22
}

/// Parses a rate such as `"2MiB/s"`, `"20Mbit/s"` or `"unlimited"` for
/// `key` ([`bandwidth::parse_limit`] says which forms).
pub fn parse_rate(key: &str, s: &str) -> Result<bandwidth::Limit, ConfigError> {
    bandwidth::parse_limit(s).map_err(|e| invalid(key, e.to_string()))
}

/// The schedule of a target from its `bandwidth_limit` and
/// `bandwidth_window`s; errors name the key at fault (`key` is `target[i]`).
fn parse_bandwidth(key: &str, limit: Option<&str>, windows: &[RawWindow]) -> Result<Schedule, ConfigError> {
    let default = match limit {
        Some(s) => parse_rate(&format!("{key}.bandwidth_limit"), s)?,
        None => bandwidth::Limit::Unlimited,
    };
    let mut parsed = Vec::new();
    for (j, w) in windows.iter().enumerate() {
        let k = |f: &str| format!("{key}.bandwidth_window[{j}].{f}");
        let time = |f: &str, v: &str, end: bool| TimeOfDay::parse(v, end).map_err(|e| invalid(k(f), e.to_string()));
        parsed.push(Window {
            from: time("from", &w.from, false)?,
            to: time("to", &w.to, true)?,
            limit: parse_rate(&k("limit"), &w.limit)?,
        });
    }
    Schedule::new(default, parsed).map_err(|e| invalid(format!("{key}.bandwidth_window[{}]", e.index()), e.to_string()))
}

/// Parses a duration such as `"15s"`, `"26h"` or `"1d 2h"`.
pub fn parse_duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    let bad =
        |e: String| invalid(key, format!("{s:?} is not a duration ({e}); write it like \"15s\", \"26h\" or \"1d 2h\""));
    let span: jiff::Span = s.parse().map_err(|e: jiff::Error| bad(e.to_string()))?;
    // Months and years have no fixed length (jiff would need a date to
    // count from, and its error names its API): ours says what to write.
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(invalid(
            key,
            format!("{s:?}: months and years have no fixed length; write days or weeks, e.g. \"30d\" or \"52w\""),
        ));
    }
    // Days and weeks are exact multiples of 24 h here: these are ages and
    // timeouts, not calendar dates.
    let d = span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).map_err(|e| bad(e.to_string()))?;
    Duration::try_from(d).map_err(|_| invalid(key, format!("{s:?} must not be negative")))
}

/// What to do about a config file that could not be read, by why (the
/// `io::ErrorKind` of the read): "create it" only when it does not exist.
/// `keys` says where its format is described.
pub fn read_hint(kind: std::io::ErrorKind, keys: &str) -> String {
    use std::io::ErrorKind;
    match kind {
        ErrorKind::NotFound => format!("create it ({keys}) or name another with -c FILE or {ENV}"),
        ErrorKind::IsADirectory => format!("that is a directory: name the file itself with -c FILE or {ENV}"),
        ErrorKind::PermissionDenied => {
            "this user may not read it: run as root (the services do), or name another with -c FILE".into()
        }
        ErrorKind::InvalidData => format!("it is not UTF-8 text: is it the config file? ({keys})"),
        _ => format!("name a readable file with -c FILE or {ENV}"),
    }
}

impl Config {
    /// Parses and validates the text of a config file.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        let parse_ds = |key: &str, v: &str| {
            Dataset::new(v).map_err(|e| invalid(key, format!("{v:?} is not a valid dataset name: {e}")))
        };
        let mut datasets = Vec::new();
        for d in &raw.source.datasets {
            let d = parse_ds("source.datasets", d)?;
            if !datasets.contains(&d) {
                datasets.push(d);
            }
        }
        if datasets.is_empty() {
            return Err(invalid(
                "source.datasets",
                "is empty: list at least one dataset to back up, e.g. [\"tank/data\"]",
            ));
        }
        let mut exclude = Vec::new();
        for e in &raw.source.exclude {
            let e = parse_ds("source.exclude", e)?;
            if !datasets.iter().any(|d| e.is_within(d) || d.is_within(&e)) {
                return Err(invalid(
                    "source.exclude",
                    format!("{e} is not inside any of source.datasets, so excluding it does nothing; fix the name or remove it"),
                ));
            }
            exclude.push(e);
        }
        if let Some(k) = &raw.source.keep {
            k.validate().map_err(|e| invalid("source.keep", e.to_string()))?;
        }
        if raw.target.is_empty() {
            return Err(invalid(
                "target",
                "no [[target]] is configured: add one for the box (name, host, user, identity_file, known_hosts)",
            ));
        }
        let mut targets: Vec<Target> = Vec::new();
        for (i, t) in raw.target.into_iter().enumerate() {
            let key = |k: &str| format!("target[{i}].{k}");
            if !valid_target_name(&t.name) {
                return Err(invalid(key("name"), format!("{:?} must be 1-64 letters, digits, '-' or '_'", t.name)));
            }
            if targets.iter().any(|o| o.name == t.name) {
                return Err(invalid(key("name"), format!("{:?} is used by two targets; names must be unique", t.name)));
            }
            if !valid_host(&t.host) {
                return Err(invalid(key("host"), format!("{:?} is not a host name or IP address", t.host)));
            }
            if !valid_user(&t.user) {
                return Err(invalid(key("user"), format!("{:?} is not a valid user name", t.user)));
            }
            if t.port == 0 {
                return Err(invalid(key("port"), "must be 1-65535"));
            }
            for (k, p) in [("identity_file", &t.identity_file), ("known_hosts", &t.known_hosts)] {
                if !p.is_absolute() {
                    return Err(invalid(key(k), format!("{} must be an absolute path", p.display())));
                }
            }
            let connect_timeout = match &t.connect_timeout {
                Some(s) => parse_duration(&key("connect_timeout"), s)?,
                None => Duration::from_secs(15),
            };
            if connect_timeout.as_secs() == 0 {
                return Err(invalid(key("connect_timeout"), "must be at least 1s"));
            }
            let max_age = match &t.max_age {
                Some(s) => parse_duration(&key("max_age"), s)?,
                None => Duration::from_secs(26 * 3600),
            };
            let bandwidth =
                parse_bandwidth(&format!("target[{i}]"), t.bandwidth_limit.as_deref(), &t.bandwidth_window)?;
            let congestion_control = match &t.congestion_control {
                Some(s) => CongestionControl::parse(&key("congestion_control"), s)?,
                None => CongestionControl::default(),
            };
            targets.push(Target {
                name: t.name,
                host: t.host,
                port: t.port,
                user: t.user,
                identity_file: t.identity_file,
                known_hosts: t.known_hosts,
                connect_timeout,
                max_age,
                bandwidth,
                congestion_control,
            });
        }
        let notify = raw.notify.map(crate::notify::Notify::from_raw).transpose()?.unwrap_or_default();
        Ok(Config { source: Source { datasets, exclude, keep: raw.source.keep }, targets, notify })
    }
}

fn valid_target_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Host names and IP literals only. A leading `-` would be read by ssh as an
/// option, so it is refused here as well as cut off by `--` in the argv.
pub fn valid_host(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && !s.starts_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
}

fn valid_user(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.as_bytes()[0].is_ascii_lowercase() | (s.as_bytes()[0] == b'_')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bandwidth::Limit;

    /// The exact file from the README / issue #2.
    pub(super) const EXAMPLE: &str = r#"
[source]
datasets = ["tank/data"]          # each is backed up with all its children...
exclude = ["tank/data/games"]     # ...except these, with their children

[[target]]
name = "friend"
host = "10.77.0.2"                # the box's address inside the VPN
user = "root"
identity_file = "/etc/zoffsite/boxes/friend/id_ed25519"
known_hosts = "/etc/zoffsite/boxes/friend/known_hosts"   # pinned host key; unknown or changed key = refuse
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.source.datasets, [Dataset::new("tank/data").unwrap()]);
        assert_eq!(c.source.exclude, [Dataset::new("tank/data/games").unwrap()]);
        let t = &c.targets[0];
        assert_eq!((t.name.as_str(), t.host.as_str(), t.port, t.user.as_str()), ("friend", "10.77.0.2", 22, "root"));
        assert_eq!(t.known_hosts, PathBuf::from("/etc/zoffsite/boxes/friend/known_hosts"));
        assert_eq!(t.connect_timeout, Duration::from_secs(15));
        assert_eq!(t.max_age, Duration::from_secs(26 * 3600));
        assert_eq!(t.bandwidth, Schedule::default());
        assert_eq!(t.congestion_control, CongestionControl::Named("bbr".into()));
    }

    #[test]
    fn congestion_control_takes_a_kernel_name_or_system_and_names_the_fix_otherwise() {
        let with = |v: &str| Config::parse(&format!("{EXAMPLE}congestion_control = {v:?}\n"));
        assert_eq!(with("cubic").unwrap().targets[0].congestion_control, CongestionControl::Named("cubic".into()));
        assert_eq!(with("system").unwrap().targets[0].congestion_control, CongestionControl::System);
        for bad in ["", "BBR", "bbr;true", "a_name_too_long_x", "bbr cubic", "-bbr"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.starts_with("target[0].congestion_control: "), "{bad:?}: {e}");
            assert!(e.contains("\"system\""), "the fix is named: {e}");
        }
    }

    #[test]
    fn target_limits() {
        let c = Config::parse(&format!("{EXAMPLE}max_age = \"2d\"\nbandwidth_limit = \"2MiB/s\"\n")).unwrap();
        assert_eq!(c.targets[0].max_age, Duration::from_secs(2 * 86400));
        assert_eq!(c.targets[0].bandwidth, Schedule::constant(Limit::BytesPerSec(2 * 1024 * 1024)));
        assert_eq!(parse_rate("k", "10MB/s").unwrap(), Limit::BytesPerSec(10_000_000));
        assert_eq!(parse_rate("k", "1.5 KiB/s").unwrap(), Limit::BytesPerSec(1536));
        assert_eq!(parse_rate("k", "20 Mbit/s").unwrap(), Limit::BytesPerSec(2_500_000));
        for bad in ["2MiB", "fast", "-1MiB/s", "2 mib/s", "10B/s", "NaNMiB/s", "1e400MiB/s"] {
            assert!(parse_rate("target[0].bandwidth_limit", bad).is_err(), "{bad}");
        }
        let e = Config::parse(&format!("{EXAMPLE}bandwidth_limit = \"lots\"\n")).unwrap_err().to_string();
        assert!(e.contains("target[0].bandwidth_limit") && e.contains("2MiB/s") && e.contains("\"lots\""), "{e}");
    }

    /// The friend's line: 1 MiB/s by day, full speed at night.
    const WINDOWS: &str = r#"bandwidth_limit = "1MiB/s"

[[target.bandwidth_window]]
from = "01:00"
to = "06:00"
limit = "unlimited"

[[target.bandwidth_window]]
from = "22:00"
to = "01:00"          # across midnight, up to the next window
limit = "20Mbit/s"
"#;

    #[test]
    fn bandwidth_windows() {
        let c = Config::parse(&format!("{EXAMPLE}{WINDOWS}")).unwrap();
        let b = &c.targets[0].bandwidth;
        assert_eq!(b.default_limit(), Limit::BytesPerSec(1 << 20));
        let at = |h, m| b.limit_at_time(TimeOfDay::new(h, m).unwrap());
        assert_eq!(
            (at(0, 59), at(1, 0), at(5, 59), at(6, 0)),
            (Limit::BytesPerSec(2_500_000), Limit::Unlimited, Limit::Unlimited, Limit::BytesPerSec(1 << 20))
        );
        assert_eq!(
            b.describe(),
            "1 MiB/s, except unlimited from 01:00 to 06:00, and 2.4 MiB/s from 22:00 to 01:00 the next day (the source's local time)"
        );
        // The inline form of the same array is the same.
        let inline = format!(
            "{EXAMPLE}bandwidth_limit = \"1MiB/s\"\nbandwidth_window = [{{ from = \"01:00\", to = \"06:00\", limit = \"unlimited\" }}, {{ from = \"22:00\", to = \"01:00\", limit = \"20Mbit/s\" }}]\n"
        );
        assert_eq!(&Config::parse(&inline).unwrap().targets[0].bandwidth, b);
        // Windows without a default: unlimited outside them.
        let night = WINDOWS.replace("bandwidth_limit = \"1MiB/s\"\n", "");
        let c = Config::parse(&format!("{EXAMPLE}{night}")).unwrap();
        assert_eq!(c.targets[0].bandwidth.default_limit(), Limit::Unlimited);
    }

    #[test]
    fn bad_bandwidth_windows_name_the_key_and_the_fix() {
        let with = |from: &str, to: &str, limit: &str| {
            err(&format!("{EXAMPLE}{WINDOWS}\n[[target.bandwidth_window]]\nfrom = \"{from}\"\nto = \"{to}\"\nlimit = \"{limit}\"\n"))
        };
        let cases = [
            (
                with("05:00", "07:00", "2MiB/s"),
                "target[0].bandwidth_window[2]: 05:00-07:00 overlaps bandwidth_window[0] (01:00-06:00)",
            ),
            (with("23:00", "23:30", "2MiB/s"), "overlaps bandwidth_window[1] (22:00-01:00)"),
            (with("07:00", "07:00", "2MiB/s"), "target[0].bandwidth_window[2]: 07:00-07:00 is empty"),
            (with("7:00", "08:00", "2MiB/s"), "target[0].bandwidth_window[2].from: \"7:00\" is not a time of day"),
            (with("07:00", "24:30", "2MiB/s"), "target[0].bandwidth_window[2].to: \"24:30\""),
            (with("24:00", "02:00", "2MiB/s"), "target[0].bandwidth_window[2].from"),
            (with("07:00", "08:00", "2 Mb/s"), "target[0].bandwidth_window[2].limit: \"2 Mb/s\" is not a rate"),
            (with("07:00", "08:00", "1kB/s"), "below 1KiB/s"),
        ];
        for (e, want) in cases {
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
        // A window that ends where another begins is fine.
        assert!(Config::parse(&format!(
            "{EXAMPLE}{WINDOWS}\n[[target.bandwidth_window]]\nfrom = \"06:00\"\nto = \"08:00\"\nlimit = \"2MiB/s\"\n"
        ))
        .is_ok());
        // Strict tables: a typo, a missing key, a number for a time.
        for (bad, want) in [
            (WINDOWS.replace("limit = \"unlimited\"", "limt = \"unlimited\""), "unknown field `limt`"),
            (WINDOWS.replace("limit = \"unlimited\"", ""), "missing field `limit`"),
            (WINDOWS.replace("from = \"01:00\"", "from = 1"), "from"),
            (WINDOWS.replace("to = \"06:00\"", "to = \"06:00\"\ndays = \"weekends\""), "unknown field `days`"),
        ] {
            let e = err(&format!("{EXAMPLE}{bad}"));
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = err(&EXAMPLE.replace("exclude =", "exlude ="));
        assert!(e.contains("unknown field `exlude`"), "{e}");
        let e = err(&format!("{EXAMPLE}\ncompression = true\n"));
        assert!(e.contains("compression"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let cases = [
            (EXAMPLE.replace("\"tank/data\"]", "\"tank/../etc\"]"), "source.datasets"),
            (EXAMPLE.replace("\"tank/data/games\"", "\"other/games\""), "not inside any of source.datasets"),
            (EXAMPLE.replace("10.77.0.2", "-oProxyCommand=sh"), "target[0].host"),
            (EXAMPLE.replace("\"root\"", "\"root; rm\""), "target[0].user"),
            (EXAMPLE.replace("\"friend\"", "\"a b\""), "target[0].name"),
            (EXAMPLE.replace("/etc/zoffsite/boxes/friend/id_ed25519", "id_ed25519"), "absolute path"),
            (EXAMPLE.replace("datasets = [\"tank/data\"]", "datasets = []"), "is empty"),
            (EXAMPLE.split("[[target]]").next().unwrap().to_owned(), "no [[target]]"),
            (format!("{EXAMPLE}connect_timeout = \"soon\"\n"), "connect_timeout"),
            (format!("{EXAMPLE}[[target]]\nname = \"friend\"\nhost = \"b\"\nuser = \"u\"\nidentity_file = \"/i\"\nknown_hosts = \"/k\"\n"), "unique"),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    #[test]
    fn keep_policy() {
        let text = EXAMPLE.replace("[[target]]", "[source.keep]\nlast = 24\ndaily = 7\n\n[[target]]");
        let k = Config::parse(&text).unwrap().source.keep.unwrap();
        assert_eq!((k.last, k.daily, k.weekly), (24, 7, 0));
        let e = err(&EXAMPLE.replace("[[target]]", "[source.keep]\nlast = 0\n\n[[target]]"));
        assert!(e.contains("source.keep") && e.contains("destroy every snapshot"), "{e}");
        let e = err(&EXAMPLE.replace("[[target]]", "[source.keep]\nlats = 3\n\n[[target]]"));
        assert!(e.contains("lats"), "{e}");
        assert_eq!(Config::parse(EXAMPLE).unwrap().source.keep, None);
    }

    #[test]
    fn notify_section() {
        let text = format!(
            "{EXAMPLE}\n[notify]\non_failure = [\"/usr/local/bin/alert\", \"--to\", \"me\"]\non_success = [\"/bin/true\"]\non_start = [\"/bin/true\"]\nping_url = \"https://hc-ping.com/5ec2e5c1-0b0a-4a11-9d1e-5b2d1c0a9e11\"\ntimeout = \"20s\"\n"
        );
        let n = Config::parse(&text).unwrap().notify;
        assert_eq!(n.on_failure.unwrap().as_slice(), ["/usr/local/bin/alert", "--to", "me"]);
        assert!(n.on_success.is_some() && n.on_start.is_some());
        assert_eq!(n.ping_url.unwrap().redacted(), "https://hc-ping.com");
        assert_eq!(n.timeout, Duration::from_secs(20));
        // Without the section, or with an empty one: nobody is told.
        assert!(Config::parse(EXAMPLE).unwrap().notify.is_empty());
        let empty = Config::parse(&format!("{EXAMPLE}\n[notify]\n")).unwrap().notify;
        assert_eq!(empty, crate::notify::Notify::default());
    }

    #[test]
    fn bad_notify_values_name_the_key_and_never_repeat_the_url() {
        let with = |body: &str| format!("{EXAMPLE}\n[notify]\n{body}\n");
        for (body, want) in [
            ("on_faillure = [\"/bin/true\"]", "unknown field `on_faillure`"),
            ("on_failure = [\"mail\", \"-s\", \"backup\"]", "notify.on_failure: \"mail\" must be an absolute path"),
            ("on_success = [\"./tell\"]", "notify.on_success"),
            ("on_start = []", "notify.on_start: is empty"),
            ("on_failure = \"/bin/sh -c 'mail me'\"", "invalid type"),
            ("ping_url = \"ftp://hc.example.org/s3cr3t-uuid\"", "notify.ping_url"),
            ("ping_url = \"hc.example.org/s3cr3t-uuid\"", "notify.ping_url"),
            ("timeout = \"0s\"", "notify.timeout: must be from 1s"),
            ("timeout = \"1h\"", "notify.timeout"),
            ("timeout = \"soon\"", "notify.timeout"),
        ] {
            let e = err(&with(body));
            assert!(e.contains(want), "want {want:?} in {e:?}");
            assert!(!e.contains("s3cr3t"), "the URL is a secret: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("k", "26h").unwrap(), Duration::from_secs(26 * 3600));
        assert_eq!(parse_duration("k", "5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("k", "7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_duration("k", "1w 1d").unwrap(), Duration::from_secs(8 * 86400));
        assert!(parse_duration("k", "-5s").is_err());
        assert!(parse_duration("k", "five").is_err());
        // Our words, not jiff's API: no `SpanRelativeTo` in front of a user.
        for calendar in ["1month", "1y", "1mo 2d"] {
            let e = parse_duration("max_age", calendar).unwrap_err().to_string();
            assert!(e.starts_with("max_age: ") && e.contains("no fixed length") && e.contains("\"30d\""), "{e}");
            assert!(!e.contains("Span") && !e.contains("relative"), "{e}");
        }
    }

    #[test]
    fn a_config_that_cannot_be_read_gets_the_fix_for_why() {
        use std::io::ErrorKind;
        let keys = "examples/zoffsite.toml";
        assert!(read_hint(ErrorKind::NotFound, keys).starts_with("create it (examples/zoffsite.toml)"));
        for other in [ErrorKind::IsADirectory, ErrorKind::PermissionDenied, ErrorKind::InvalidData, ErrorKind::Other] {
            let h = read_hint(other, keys);
            assert!(!h.contains("create"), "{other:?}: {h}");
        }
        assert!(read_hint(ErrorKind::IsADirectory, keys).contains("directory"));
        assert!(read_hint(ErrorKind::PermissionDenied, keys).contains("may not read"));
    }
}
