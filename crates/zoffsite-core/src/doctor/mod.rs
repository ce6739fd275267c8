//! `zoffsite doctor`: the security posture of the box and of the source, as
//! typed findings decided from what the tools print.
//!
//! The shell reads files (`/sys/firmware/efi/efivars/...`,
//! `/sys/class/tpm/...`, `/sys/class/firmware-attributes/...`) and runs
//! tools (`cryptsetup luksDump --dump-json-metadata`, `sshd -T`,
//! `nft -j list ruleset`, `wg show IF latest-handshakes` (and `endpoints`,
//! `persistent-keepalive`), `zfs version`, `zfs allow`, `/proc/net/tcp`,
//! `systemctl is-enabled`); the functions here parse that text and decide
//! one [`Check`] each. Nothing here runs anything or reads a clock: `now`
//! is an argument.
//!
//! Invariants:
//! - Every check ends in exactly one [`Status`]. [`Status::Ok`] is said only
//!   when the input proves it; input a parser does not fully understand
//!   (an unknown format, a duplicate key, a value out of range, a field
//!   missing) gives [`Status::Unknown`] with why, never a guess and never
//!   `Ok`. The property tests feed random input to every parser and assert
//!   exactly that.
//! - The tools' output is treated as hostile-ish input: it is bounded
//!   ([`MAX_INPUT`]), parsed strictly (JSON with duplicate keys is refused:
//!   [`json`]), and any of its text that reaches a summary is sanitized and
//!   cut ([`Check`] keeps every summary and fix on one bounded line).
//! - No secret is read: WireGuard is judged from listings that carry only
//!   public keys and peer state ([`wireguard::Show`]), never `wg show
//!   dump`, whose first line is the interface's private key.
//!
//! The JSON form of a [`Report`] (for `--json`) is documented on
//! [`Report`].

pub mod boxaudit;
pub mod expect;
pub mod firewall;
pub mod firmware;
pub mod json;
pub mod luks;
pub mod sockets;
pub mod source;
pub mod sshd;
pub mod timers;
pub mod wireguard;
pub mod zfs;

use std::fmt;

use serde::Serialize;

use crate::report::Severity;

/// Most bytes of one tool's output a parser looks at; more is refused
/// (unknown), never truncated and then judged.
pub const MAX_INPUT: usize = 4 << 20;

/// Where the box's root keeps its last audit (`zoffsite doctor --box
/// --output`, from `zoffsite-box-doctor.timer`), which `serve` hands to the
/// source (`Request::Audit`) and the source judges ([`boxaudit`]).
///
/// Its own directory, not the txg journal's (`/var/lib/zoffsite-box`, 0700):
/// systemd makes it (`StateDirectory=`) root's, mode 0755, and doctor writes
/// the file 0644, so the box user that runs `serve` can read both but write
/// neither. Nothing in it is secret (doctor keeps no key; the WireGuard
/// private key is skipped unread), and it is meant for the source anyway.
/// Not the box user's home (`/var/lib/zoffsite`): that user could rewrite
/// it there. (Whoever controls the box user controls `serve`'s answer
/// anyway: the source treats the report as hostile.) `doctor --output`
/// makes a missing directory the same way when run by hand.
pub const AUDIT_PATH: &str = "/var/lib/zoffsite-doctor/box.json";

/// Most bytes of a summary or a fix (escaped); longer text is cut with `…`.
pub const MAX_LINE: usize = 400;

/// How one check ended, from best to worst (`Ord`; a report's status is the
/// greatest of its checks').
///
/// `Unknown` ranks above `Warn` and below `Fail` (as in common monitoring
/// systems): a check that could not decide might hide a failure, so it is
/// worse than a known, minor deviation, but it is not a proven failure.
/// It is never a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Proven as wanted.
    Ok,
    /// Works, but weaker than wanted (the summary says how).
    Warn,
    /// Could not be decided: the fact is not exposed here, or the tool's
    /// output was not understood.
    Unknown,
    /// Proven wrong.
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Unknown => "unknown",
            Status::Fail => "fail",
        }
    }

    /// The run's outcome for this status (docs/exit-codes.md):
    ///
    /// - `Ok` → [`Severity::Ok`] (exit 0);
    /// - `Warn` and `Unknown` → [`Severity::Stale`] (exit 6, "look at the
    ///   output"; as `status` and `box check` use it: doctor only reads, and
    ///   an unknown is not a pass, so it must not exit 0; but most machines
    ///   cannot show a BIOS password, so an unknown must not look like a
    ///   failure either);
    /// - `Fail` → [`Severity::Partial`] (exit 3: some checks failed, the
    ///   others were made). Not [`Severity::Error`]: 1 means zoffsite itself
    ///   hit something unexpected, and its precedence over 4 would hide an
    ///   unreachable box on the source. A failed check is a finding, like a
    ///   refused dataset.
    pub fn severity(self) -> Severity {
        match self {
            Status::Ok => Severity::Ok,
            Status::Warn | Status::Unknown => Severity::Stale,
            Status::Fail => Severity::Partial,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which end runs doctor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The box: a WireGuard client dialing out to the source, sshd inside
    /// the tunnel, `serve` for the source's key.
    Box,
    /// The source: the WireGuard server the boxes dial, and the data.
    Source,
}

/// The stable identity of a check: `box.` or `source.`, then kebab-case.
/// Monitoring and the docs refer to these; a rename is a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckId {
    SecureBoot,
    LuksTpm,
    TpmVersion,
    BiosPassword,
    SshdListen,
    SshdPasswordAuth,
    SshdKbdInteractive,
    SshdRootLogin,
    SshdAllowUsers,
    Firewall,
    WgKeepalive,
    WgHandshake,
    WgEndpoint,
    ZfsVersion,
    ZfsDelegation,
    ZfsLimits,
    PoolHealth,
    PoolScrub,
    Timers,
    SourceWgHandshake,
    SourceBoxSsh,
    SourceEncryption,
    SourceKeyFiles,
    SourceLastRun,
    SourceZfsVersion,
    SourceTimers,
    SourceBoxPosture,
}

impl CheckId {
    /// Every id, in the order a report lists them.
    pub const ALL: [CheckId; 27] = [
        CheckId::SecureBoot,
        CheckId::LuksTpm,
        CheckId::TpmVersion,
        CheckId::BiosPassword,
        CheckId::SshdListen,
        CheckId::SshdPasswordAuth,
        CheckId::SshdKbdInteractive,
        CheckId::SshdRootLogin,
        CheckId::SshdAllowUsers,
        CheckId::Firewall,
        CheckId::WgKeepalive,
        CheckId::WgHandshake,
        CheckId::WgEndpoint,
        CheckId::ZfsVersion,
        CheckId::ZfsDelegation,
        CheckId::ZfsLimits,
        CheckId::PoolHealth,
        CheckId::PoolScrub,
        CheckId::Timers,
        CheckId::SourceWgHandshake,
        CheckId::SourceBoxSsh,
        CheckId::SourceBoxPosture,
        CheckId::SourceEncryption,
        CheckId::SourceKeyFiles,
        CheckId::SourceLastRun,
        CheckId::SourceZfsVersion,
        CheckId::SourceTimers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::SecureBoot => "box.secure-boot",
            CheckId::LuksTpm => "box.luks-tpm",
            CheckId::TpmVersion => "box.tpm-version",
            CheckId::BiosPassword => "box.bios-password",
            CheckId::SshdListen => "box.sshd-listen",
            CheckId::SshdPasswordAuth => "box.sshd-password-auth",
            CheckId::SshdKbdInteractive => "box.sshd-kbd-interactive",
            CheckId::SshdRootLogin => "box.sshd-root-login",
            CheckId::SshdAllowUsers => "box.sshd-allow-users",
            CheckId::Firewall => "box.firewall",
            CheckId::WgKeepalive => "box.wg-keepalive",
            CheckId::WgHandshake => "box.wg-handshake",
            CheckId::WgEndpoint => "box.wg-endpoint",
            CheckId::ZfsVersion => "box.zfs-version",
            CheckId::ZfsDelegation => "box.zfs-delegation",
            CheckId::ZfsLimits => "box.zfs-limits",
            CheckId::PoolHealth => "box.pool-health",
            CheckId::PoolScrub => "box.pool-scrub",
            CheckId::Timers => "box.timers",
            CheckId::SourceWgHandshake => "source.wg-handshake",
            CheckId::SourceBoxSsh => "source.box-ssh",
            CheckId::SourceEncryption => "source.encryption",
            CheckId::SourceKeyFiles => "source.key-files",
            CheckId::SourceLastRun => "source.last-run",
            CheckId::SourceZfsVersion => "source.zfs-version",
            CheckId::SourceTimers => "source.timers",
            CheckId::SourceBoxPosture => "source.box-posture",
        }
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CheckId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One check's finding: a status, a one-line summary of what was found, and
/// (unless ok) a one-line fix. Both lines are sanitized and bounded when
/// made, so tool output quoted in them cannot add lines or escapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    id: CheckId,
    status: Status,
    summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Check {
    pub fn ok(id: CheckId, summary: impl AsRef<str>) -> Check {
        Check { id, status: Status::Ok, summary: one_line(summary.as_ref()), fix: None }
    }

    pub fn warn(id: CheckId, summary: impl AsRef<str>, fix: impl AsRef<str>) -> Check {
        Check::not_ok(id, Status::Warn, summary.as_ref(), fix.as_ref())
    }

    pub fn fail(id: CheckId, summary: impl AsRef<str>, fix: impl AsRef<str>) -> Check {
        Check::not_ok(id, Status::Fail, summary.as_ref(), fix.as_ref())
    }

    pub fn unknown(id: CheckId, summary: impl AsRef<str>, fix: impl AsRef<str>) -> Check {
        Check::not_ok(id, Status::Unknown, summary.as_ref(), fix.as_ref())
    }

    /// A check with `status` (an `Ok` keeps no fix).
    pub fn with_status(id: CheckId, status: Status, summary: impl AsRef<str>, fix: impl AsRef<str>) -> Check {
        match status {
            Status::Ok => Check::ok(id, summary),
            s => Check::not_ok(id, s, summary.as_ref(), fix.as_ref()),
        }
    }

    fn not_ok(id: CheckId, status: Status, summary: &str, fix: &str) -> Check {
        Check { id, status, summary: one_line(summary), fix: Some(one_line(fix)) }
    }

    pub fn id(&self) -> CheckId {
        self.id
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// What to do; `None` exactly when ok.
    pub fn fix(&self) -> Option<&str> {
        self.fix.as_deref()
    }
}

/// Text on one bounded line: control, format and bidi characters escaped
/// (by the protocol's sanitizer, so box text and tool text look the same).
fn one_line(s: &str) -> String {
    crate::protocol::sanitize(s, MAX_LINE)
}

/// Quotes tool text for a summary: sanitized and cut short.
pub(crate) fn quote(s: &str) -> String {
    format!("{:?}", crate::protocol::sanitize(s, 80))
}

/// A doctor run's findings.
///
/// JSON (`--json`; the binary adds `exit_code`, and `errors` where a run
/// stops early, as every command does):
///
/// ```json
/// {
///   "status": "fail",                // the worst check's: ok | warn | unknown | fail
///   "counts": {"ok": 17, "warn": 1, "unknown": 1, "fail": 1},
///   "checks": [
///     {"id": "box.secure-boot", "status": "ok", "summary": "Secure Boot is enabled (user mode)"},
///     {"id": "box.sshd-listen", "status": "fail",
///      "summary": "sshd listens on 0.0.0.0:22, [::]:22 (wanted only 10.77.0.2:22)",
///      "fix": "..."}          // one line; absent exactly when status is ok
///   ]
/// }
/// ```
///
/// `id`s are stable ([`CheckId::as_str`]); `summary` and `fix` are for
/// people and may change wording. An empty report's status is `unknown`:
/// nothing checked is nothing proven.
///
/// A report given a time ([`Report::set_generated_at`], as `doctor
/// --output` does) has `"generated_at": UNIX_SECONDS` first: the source
/// tells from it how old the box's audit is ([`boxaudit`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    checks: Vec<Check>,
    generated_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub warn: usize,
    pub unknown: usize,
    pub fail: usize,
}

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    pub fn extend(&mut self, checks: impl IntoIterator<Item = Check>) {
        self.checks.extend(checks);
    }

    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// Dates the report (Unix seconds): when its facts were gathered. The
    /// caller reads the clock; core never does.
    pub fn set_generated_at(&mut self, unix_seconds: i64) {
        self.generated_at = Some(unix_seconds);
    }

    pub fn generated_at(&self) -> Option<i64> {
        self.generated_at
    }

    /// The worst status; `Unknown` when nothing was checked.
    pub fn status(&self) -> Status {
        self.checks.iter().map(Check::status).max().unwrap_or(Status::Unknown)
    }

    /// The run's outcome (see [`Status::severity`]).
    pub fn severity(&self) -> Severity {
        self.status().severity()
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for k in &self.checks {
            match k.status {
                Status::Ok => c.ok += 1,
                Status::Warn => c.warn += 1,
                Status::Unknown => c.unknown += 1,
                Status::Fail => c.fail += 1,
            }
        }
        c
    }
}

impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Report", 4)?;
        if let Some(t) = self.generated_at {
            st.serialize_field("generated_at", &t)?;
        }
        st.serialize_field("status", &self.status())?;
        st.serialize_field("counts", &self.counts())?;
        st.serialize_field("checks", &self.checks)?;
        st.end()
    }
}

/// One check as the text report shows it: one of this machine's
/// [`Check`]s, or one of a box's as the source read it
/// ([`boxaudit::BoxCheck`]). Both are one safe line each already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub status: Status,
    pub id: &'a str,
    pub summary: &'a str,
    pub fix: Option<&'a str>,
}

impl<'a> From<&'a Check> for Line<'a> {
    fn from(c: &'a Check) -> Self {
        Line { status: c.status, id: c.id.as_str(), summary: &c.summary, fix: c.fix.as_deref() }
    }
}

impl<'a> From<&'a boxaudit::BoxCheck> for Line<'a> {
    fn from(c: &'a boxaudit::BoxCheck) -> Self {
        Line { status: c.status, id: c.id.as_str(), summary: &c.summary, fix: c.fix.as_deref() }
    }
}

/// The text form of a doctor report, the one renderer of every report
/// people read (`doctor`, and a box's audit in `box wait`): one line per
/// check, `STATUS  ID  SUMMARY`, the fix indented below when not ok, then
/// the status (the worst; `unknown` when there is no check) and the counts.
pub fn render_text<'a>(checks: impl IntoIterator<Item = Line<'a>>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let (mut worst, mut n) = (None, Counts::default());
    for c in checks {
        let _ = writeln!(s, "{:<7}  {:<26}  {}", c.status.as_str(), c.id, c.summary);
        if let Some(fix) = c.fix {
            let _ = writeln!(s, "         fix: {fix}");
        }
        worst = worst.max(Some(c.status));
        match c.status {
            Status::Ok => n.ok += 1,
            Status::Warn => n.warn += 1,
            Status::Unknown => n.unknown += 1,
            Status::Fail => n.fail += 1,
        }
    }
    let status = worst.unwrap_or(Status::Unknown);
    let _ = writeln!(s, "{status}: {} ok, {} warn, {} unknown, {} fail", n.ok, n.warn, n.unknown, n.fail);
    s
}

impl Report {
    /// This report as people read it ([`render_text`]).
    pub fn text(&self) -> String {
        render_text(self.checks.iter().map(Line::from))
    }
}

/// One check from several of the same id (one per target, or `sshd -T`
/// with and without a connection's `Match`): the worst status decides,
/// and the summaries of the checks with that status are joined, each after
/// its label (`label: summary`; an empty label adds nothing). The fix is
/// the first worst one's. `None` when there is nothing to merge.
pub fn merge(id: CheckId, checks: Vec<(String, Check)>) -> Option<Check> {
    let worst = checks.iter().map(|(_, c)| c.status).max()?;
    let mut fix = None;
    let mut parts = Vec::new();
    for (label, c) in checks.into_iter().filter(|(_, c)| c.status == worst) {
        fix = fix.or(c.fix);
        parts.push(if label.is_empty() { c.summary } else { format!("{label}: {}", c.summary) });
    }
    Some(Check::with_status(id, worst, parts.join("; "), fix.unwrap_or_default()))
}

/// The input was too large to be judged.
pub(crate) fn too_large(id: CheckId, what: &str, len: usize) -> Check {
    Check::unknown(
        id,
        format!("{what} printed {len} bytes, more than the {MAX_INPUT} doctor reads"),
        format!("look at {what} by hand"),
    )
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;

    /// A fixture from `crates/zoffsite-core/testdata/doctor/`.
    pub(crate) fn fixture(name: &str) -> String {
        let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "testdata", "doctor", name].iter().collect();
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_order_and_map_to_exit_severities() {
        assert!(Status::Ok < Status::Warn && Status::Warn < Status::Unknown && Status::Unknown < Status::Fail);
        assert_eq!(Status::Ok.severity(), Severity::Ok);
        assert_eq!(Status::Warn.severity(), Severity::Stale);
        assert_eq!(Status::Unknown.severity(), Severity::Stale, "unknown is never a pass");
        assert_eq!(Status::Fail.severity(), Severity::Partial);
        let v = serde_json::to_value([Status::Ok, Status::Warn, Status::Unknown, Status::Fail]).unwrap();
        assert_eq!(v, serde_json::json!(["ok", "warn", "unknown", "fail"]));
    }

    #[test]
    fn check_ids_are_unique_kebab_case_under_box_or_source() {
        let mut seen = std::collections::BTreeSet::new();
        for id in CheckId::ALL {
            let s = id.as_str();
            assert!(seen.insert(s), "{s} twice");
            let (side, name) = s.split_once('.').unwrap();
            assert!(side == "box" || side == "source", "{s}");
            assert!(!name.is_empty() && !name.starts_with('-') && !name.ends_with('-') && !name.contains("--"), "{s}");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{s}");
        }
    }

    #[test]
    fn summaries_and_fixes_stay_on_one_bounded_line() {
        let c = Check::fail(CheckId::Firewall, "a\nb\u{202e}c".repeat(200), "x\r\ny");
        assert!(!c.summary().contains(['\n', '\u{202e}']) && c.summary().len() <= MAX_LINE + '…'.len_utf8());
        assert_eq!(c.fix(), Some("x\\r\\ny"));
        assert_eq!(Check::with_status(CheckId::Firewall, Status::Ok, "fine", "ignored").fix(), None);
    }

    #[test]
    fn a_report_is_as_bad_as_its_worst_check_and_serializes_as_documented() {
        let mut r = Report::new();
        assert_eq!(r.status(), Status::Unknown, "nothing checked proves nothing");
        r.push(Check::ok(CheckId::SecureBoot, "Secure Boot is enabled"));
        assert_eq!((r.status(), r.severity()), (Status::Ok, Severity::Ok));
        r.push(Check::unknown(CheckId::BiosPassword, "not exposed", "check in the firmware setup"));
        r.push(Check::warn(CheckId::TpmVersion, "TPM 1.2", "use TPM 2.0"));
        assert_eq!(r.status(), Status::Unknown);
        r.push(Check::fail(CheckId::Firewall, "ssh open", "load the rule set"));
        assert_eq!((r.status(), r.severity()), (Status::Fail, Severity::Partial));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "fail");
        assert_eq!(v["counts"], serde_json::json!({"ok": 1, "warn": 1, "unknown": 1, "fail": 1}));
        assert_eq!(
            v["checks"][0],
            serde_json::json!({"id": "box.secure-boot", "status": "ok", "summary": "Secure Boot is enabled"})
        );
        assert_eq!(v["checks"][3]["fix"], "load the rule set");
    }

    /// Every box check from the fixtures of a well set up box: all ok but
    /// the BIOS password, which this (and most) firmware does not expose.
    #[test]
    fn a_whole_box_report_from_the_fixtures() {
        use crate::boxinit::UserName;
        use crate::names::Dataset;
        use testutil::fixture;
        let now = 1_796_000_000;
        let on: &[u8] = &[6, 0, 0, 0, 1];
        let off: &[u8] = &[6, 0, 0, 0, 0];
        let mut r = Report::new();
        r.push(firmware::check_secure_boot(Some(on), Some(off)));
        r.push(luks::check_luks_tpm(luks::RootDevice::Luks2(&fixture("luks2-tpm2-pcr7.json")), None));
        r.push(firmware::check_tpm_version(Some("2\n")));
        r.push(firmware::check_bios_password(&[]));
        let want = sshd::Expect { listen: vec!["10.77.0.2:22".parse().unwrap()], user: "zoffsite".into() };
        r.extend(sshd::check(&fixture("sshd-T-box.txt"), &want));
        let fw = firewall::Expect {
            tunnel_if: "wg0".into(),
            ssh_port: 22,
            tunnel_nets: vec![firewall::Net::parse("10.77.0.1").unwrap()],
        };
        r.push(firewall::check(&fixture("nft-box.json"), &fw));
        r.extend(wireguard::check(Side::Box, &wireguard::tests::show(&wireguard::tests::listings("wg-box")), now));
        r.push(zfs::check_version(Side::Box, "zfs-2.3.4-1\nzfs-kmod-2.3.4-1\n"));
        let (user, root) = (UserName::new("zoffsite").unwrap(), Dataset::new("offsite/home").unwrap());
        let allow = "---- Permissions on offsite/home ----\nLocal+Descendent permissions:\n\tuser zoffsite create,mount,receive:append,send,userprop\n";
        r.push(zfs::check_delegation(&user, &root, true, allow));
        r.push(zfs::check_limits(&root, "1000", "100000"));
        r.push(zfs::check_pool_health("offsite", "ONLINE"));
        r.push(zfs::check_pool_scrub("offsite", Some(now - 86_400), now));
        r.push(timers::check(Side::Box, &[("zoffsite-box-prune.timer".into(), Some("enabled\n".into()))]));
        for c in r.checks() {
            println!("{:8} {:26} {}", c.status().as_str(), c.id().as_str(), c.summary());
        }
        let not_ok: Vec<CheckId> = r.checks().iter().filter(|c| c.status() != Status::Ok).map(Check::id).collect();
        assert_eq!(not_ok, [CheckId::BiosPassword]);
        assert_eq!((r.status(), r.severity()), (Status::Unknown, Severity::Stale));
        let ids: Vec<CheckId> = r.checks().iter().map(Check::id).collect();
        assert_eq!(ids, CheckId::ALL[..19], "one check per box id, in the documented order");
    }

    #[test]
    fn merging_keeps_the_worst_and_says_whose() {
        let id = CheckId::SourceWgHandshake;
        assert_eq!(merge(id, vec![]), None);
        let m = merge(
            id,
            vec![
                ("a".into(), Check::ok(id, "fine")),
                ("b".into(), Check::fail(id, "down", "bring it up")),
                ("c".into(), Check::fail(id, "down too", "other fix")),
            ],
        )
        .unwrap();
        assert_eq!((m.status(), m.summary(), m.fix()), (Status::Fail, "b: down; c: down too", Some("bring it up")));
        let ok = merge(id, vec![(String::new(), Check::ok(id, "fine")), ("x".into(), Check::ok(id, "also"))]).unwrap();
        assert_eq!((ok.status(), ok.summary(), ok.fix()), (Status::Ok, "fine; x: also", None));
    }
}
