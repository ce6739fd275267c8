//! The box's audit as the source reads it: root's `zoffsite doctor --box
//! --output` report ([`super::AUDIT_PATH`]), handed over by `serve`
//! (`Request::Audit`) and judged here into the box's posture for
//! `zoffsite status` and `doctor --source`.
//!
//! The report comes from the box, so it is hostile input like everything
//! else the box says (threat-model.md): whoever controls the box user
//! controls `serve`'s answer and can make it say anything. It is a
//! *posture*: what the box's root last saw, never something the source
//! acts on.
//!
//! Invariants:
//! - [`parse`] accepts only what `doctor --output` writes ([`super::Report`]'s
//!   JSON): bounded ([`MAX_AUDIT_LEN`], [`MAX_CHECKS`], every string), strict
//!   JSON (a duplicate key refuses the whole text: [`super::json`]), no
//!   field it does not know, every text already one safe line (the box's
//!   doctor sanitized it; one that is not is refused, never re-escaped and
//!   believed), a fix exactly when not ok, and `status` and `counts` equal
//!   to what the checks say: a report that disagrees with itself is refused
//!   as a whole.
//! - A check id this version does not know is kept, not refused: a box may
//!   run a newer zoffsite with more checks, and refusing the whole report
//!   over one new check would hide every finding the source does
//!   understand. It is kept opaque ([`BoxCheckId::Other`]), only if it has
//!   the shape of a box id (`box.` then at most [`MAX_ID_LEN`] bytes of
//!   kebab-case), and its status counts like any other: an unknown check
//!   that fails still fails the posture. A `source.` id is refused: the box
//!   cannot speak for the source.
//! - Nothing here reads a clock: `now` (the source's) is an argument; the
//!   report's `generated_at` is the box's clock, so an age is only as good
//!   as the two clocks agree (a report dated in the future is flagged).

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Check, CheckId, Counts, Status};
use crate::protocol::must_escape;

/// Most bytes of the audit file `serve` hands over and the source parses.
/// A whole box report is a few KiB; this leaves room for many more checks.
pub const MAX_AUDIT_LEN: usize = 256 << 10;

/// Most checks in one box report (a box has 19 today).
pub const MAX_CHECKS: usize = 128;

/// Longest check id kept (`box.` included).
pub const MAX_ID_LEN: usize = 64;

/// Longest summary or fix accepted: the box's doctor cuts its lines at
/// [`super::MAX_LINE`] and may end them with `…`.
pub const MAX_TEXT: usize = super::MAX_LINE + '…'.len_utf8();

/// Most `errors` lines kept from a box report.
pub const MAX_ERRORS: usize = 16;

/// A box audit older than this is stale: the box's doctor timer runs
/// hourly, so two days means the audits stopped (the timer disabled, the
/// box off or its clock wrong), not that one was late.
pub const STALE_AFTER_SECS: i64 = 2 * 86_400;

/// How far the box's clock may run ahead of the source's before a report
/// dated in the future is flagged.
pub const FUTURE_SLACK_SECS: i64 = 600;

/// A check id as the box wrote it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BoxCheckId {
    /// One of this version's box checks.
    Known(CheckId),
    /// A box check this version does not know (a newer box): its id, of
    /// the shape `box.` + kebab-case, at most [`MAX_ID_LEN`] bytes.
    Other(String),
}

impl BoxCheckId {
    pub fn as_str(&self) -> &str {
        match self {
            BoxCheckId::Known(id) => id.as_str(),
            BoxCheckId::Other(s) => s,
        }
    }
}

impl fmt::Display for BoxCheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for BoxCheckId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One check of the box's report, as checked by [`parse`]: its texts are
/// single safe lines of at most [`MAX_TEXT`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoxCheck {
    pub id: BoxCheckId,
    pub status: Status,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// A box's report, parsed and found consistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxAudit {
    generated_at: Option<i64>,
    checks: Vec<BoxCheck>,
    errors: Vec<String>,
}

impl BoxAudit {
    /// When the box's doctor wrote it (Unix seconds, box clock), if it says.
    pub fn generated_at(&self) -> Option<i64> {
        self.generated_at
    }

    pub fn checks(&self) -> &[BoxCheck] {
        &self.checks
    }

    /// What stopped the box's doctor early, if anything (sanitized lines).
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// The worst check's status (`Unknown` when there is none, as
    /// [`super::Report::status`]).
    pub fn status(&self) -> Status {
        self.checks.iter().map(|c| c.status).max().unwrap_or(Status::Unknown)
    }

    pub fn counts(&self) -> Counts {
        count(self.checks.iter().map(|c| c.status))
    }

    /// The box's report as people read it: the same renderer as the
    /// source's own doctor ([`super::render_text`]). Its texts were checked
    /// to be safe single lines by [`parse`].
    pub fn text(&self) -> String {
        super::render_text(self.checks.iter().map(super::Line::from))
    }
}

fn count(statuses: impl Iterator<Item = Status>) -> Counts {
    let mut c = Counts::default();
    for s in statuses {
        match s {
            Status::Ok => c.ok += 1,
            Status::Warn => c.warn += 1,
            Status::Unknown => c.unknown += 1,
            Status::Fail => c.fail += 1,
        }
    }
    c
}

/// Why a box's report was refused: one line, safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuditError(String);

fn bad(why: impl Into<String>) -> AuditError {
    AuditError(why.into())
}

/// Parses and checks a box's report (see the module's invariants).
pub fn parse(text: &str) -> Result<BoxAudit, AuditError> {
    if text.len() > MAX_AUDIT_LEN {
        return Err(bad(format!("{} bytes, more than the {MAX_AUDIT_LEN} the source reads", text.len())));
    }
    let value = super::json::parse(text).map_err(|e| bad(format!("not strict JSON: {e}")))?;
    let Value::Object(top) = value else { return Err(bad("not a JSON object")) };
    only_keys(&top, "the report", &["status", "counts", "checks", "generated_at", "side", "exit_code", "errors"])?;
    // `doctor` says which side it audited; a source's report handed over
    // as the box's is not the box's posture.
    if let Some(side) = top.get("side") {
        if side.as_str() != Some("box") {
            return Err(bad("its side is not \"box\": not a box's audit"));
        }
    }
    let Some(Value::Array(raw_checks)) = top.get("checks") else { return Err(bad("no \"checks\" list")) };
    if raw_checks.len() > MAX_CHECKS {
        return Err(bad(format!("{} checks, more than the {MAX_CHECKS} the source reads", raw_checks.len())));
    }
    let checks = raw_checks.iter().enumerate().map(|(n, c)| check(n, c)).collect::<Result<Vec<_>, _>>()?;
    let generated_at = match top.get("generated_at") {
        None => None,
        Some(v) => Some(v.as_i64().filter(|t| *t >= 0).ok_or_else(|| bad("\"generated_at\" is not a time"))?),
    };
    if let Some(v) = top.get("exit_code") {
        v.as_u64().filter(|c| *c <= 255).ok_or_else(|| bad("\"exit_code\" is not an exit code"))?;
    }
    let errors = match top.get("errors") {
        None => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_ERRORS => list
            .iter()
            .map(|e| e.as_str().map(|s| crate::protocol::sanitize(s, super::MAX_LINE)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("\"errors\" holds something other than text"))?,
        Some(_) => return Err(bad(format!("\"errors\" is not a list of at most {MAX_ERRORS} lines"))),
    };
    let audit = BoxAudit { generated_at, checks, errors };
    // What the report says of itself must be what its checks say.
    let said_status = top.get("status").and_then(Value::as_str).ok_or_else(|| bad("no \"status\""))?;
    let status = audit.status();
    if said_status != status.as_str() {
        return Err(bad(format!(
            "it says its status is {}, but its checks make it {status}",
            crate::protocol::sanitize(said_status, 20)
        )));
    }
    let Some(Value::Object(said)) = top.get("counts") else { return Err(bad("no \"counts\" object")) };
    only_keys(said, "\"counts\"", &["ok", "warn", "unknown", "fail"])?;
    let counts = audit.counts();
    for (name, n) in [("ok", counts.ok), ("warn", counts.warn), ("unknown", counts.unknown), ("fail", counts.fail)] {
        let got = said.get(name).and_then(Value::as_u64);
        if got != Some(n as u64) {
            return Err(bad(format!(
                "its counts say {} {name}, but it lists {n}",
                got.map_or_else(|| "no number for".to_owned(), |g| g.to_string())
            )));
        }
    }
    Ok(audit)
}

fn only_keys(obj: &Map<String, Value>, what: &str, allowed: &[&str]) -> Result<(), AuditError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => {
            Err(bad(format!("{what} has a field {:?} this version does not know", crate::protocol::sanitize(k, 40))))
        }
        None => Ok(()),
    }
}

fn check(n: usize, v: &Value) -> Result<BoxCheck, AuditError> {
    let Value::Object(o) = v else { return Err(bad(format!("check {n} is not an object"))) };
    only_keys(o, &format!("check {n}"), &["id", "status", "summary", "fix"])?;
    let id = o.get("id").and_then(Value::as_str).ok_or_else(|| bad(format!("check {n} has no id")))?;
    let id = check_id(id).ok_or_else(|| {
        bad(format!("check {n} has the id {:?}, which is not a box check's", crate::protocol::sanitize(id, 40)))
    })?;
    let status = match o.get("status").and_then(Value::as_str) {
        Some("ok") => Status::Ok,
        Some("warn") => Status::Warn,
        Some("unknown") => Status::Unknown,
        Some("fail") => Status::Fail,
        _ => return Err(bad(format!("check {id} has no status ok, warn, unknown or fail"))),
    };
    let summary = text(o.get("summary"), &id, "summary")?.ok_or_else(|| bad(format!("check {id} has no summary")))?;
    let fix = text(o.get("fix"), &id, "fix")?;
    if (status == Status::Ok) != fix.is_none() {
        return Err(bad(format!("check {id} is {status} {} a fix", if fix.is_some() { "with" } else { "without" })));
    }
    Ok(BoxCheck { id, status, summary, fix })
}

/// A known box id, or an unknown one of a box id's shape.
fn check_id(s: &str) -> Option<BoxCheckId> {
    if let Some(id) = CheckId::ALL.into_iter().find(|id| id.as_str() == s) {
        return s.starts_with("box.").then_some(BoxCheckId::Known(id));
    }
    let name = s.strip_prefix("box.")?;
    let kebab = !name.is_empty()
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (kebab && s.len() <= MAX_ID_LEN).then(|| BoxCheckId::Other(s.to_owned()))
}

/// A summary or fix: absent, or one safe line the box's doctor would
/// write. Text that is not (a newline, an escape, a bidi control, too long)
/// refuses the report: the real writer never produces it.
fn text(v: Option<&Value>, id: &BoxCheckId, field: &str) -> Result<Option<String>, AuditError> {
    let Some(v) = v else { return Ok(None) };
    let s = v.as_str().ok_or_else(|| bad(format!("check {id}: its {field} is not text")))?;
    if s.len() > MAX_TEXT {
        return Err(bad(format!("check {id}: its {field} is {} bytes, more than {MAX_TEXT}", s.len())));
    }
    if s.chars().any(must_escape) {
        return Err(bad(format!("check {id}: its {field} holds control or format characters")));
    }
    Ok(Some(s.to_owned()))
}

/// What the source got when it asked a box for its audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The report's text, not parsed yet (at most [`MAX_AUDIT_LEN`] bytes).
    Report(String),
    /// The box has no audit file: its doctor timer has not run yet, or
    /// is not installed.
    Missing,
    /// The box's zoffsite does not know the request (older than this one).
    Unsupported,
    /// The box could not hand it over (a symlink, a file root does not
    /// own, too large, ...): its answer, sanitized.
    Unreadable(String),
    /// No answer: the box could not be reached or broke the session.
    Unreachable(String),
}

/// Where a box's posture comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PostureState {
    /// A report was read and is consistent.
    Audited,
    Missing,
    Unsupported,
    Unreadable,
    /// The box handed over a report that was refused ([`parse`]).
    Invalid,
    Unreachable,
}

/// A box's security posture as the source shows it (`status`, `doctor
/// --source`). JSON: see docs/json.md (`box_posture`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Posture {
    pub state: PostureState,
    /// The box's report's status when audited; `unknown` otherwise.
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// When the box's doctor wrote its report (box clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<i64>,
    /// Seconds from `generated_at` to the source's now (never negative).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<i64>,
    /// Older than [`STALE_AFTER_SECS`], undated, or dated in the future.
    pub stale: bool,
    /// The ids of the checks that are not ok, worst first.
    pub not_ok: Vec<BoxCheckId>,
    /// Why there is no (usable) report, or what stopped the box's doctor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Posture {
    /// Judges what the box handed over, at the source's `now`.
    pub fn judge(fetched: &Fetched, now: i64) -> Posture {
        let without = |state, detail: &str| Posture {
            state,
            status: Status::Unknown,
            counts: None,
            generated_at: None,
            age: None,
            stale: false,
            not_ok: Vec::new(),
            // Parts of it come from the box (its refusal, ssh's words).
            detail: Some(crate::protocol::sanitize(detail, super::MAX_LINE)),
        };
        let text = match fetched {
            Fetched::Report(t) => t,
            Fetched::Missing => return without(PostureState::Missing, "the box has not written an audit yet"),
            Fetched::Unsupported => {
                return without(PostureState::Unsupported, "the box's zoffsite is too old to report its posture")
            }
            Fetched::Unreadable(why) => {
                return without(PostureState::Unreadable, &format!("the box could not hand over its audit: {why}"))
            }
            Fetched::Unreachable(why) => {
                return without(PostureState::Unreachable, &format!("the box did not answer: {why}"))
            }
        };
        let audit = match parse(text) {
            Ok(a) => a,
            Err(e) => return without(PostureState::Invalid, &format!("the box's audit was refused: {e}")),
        };
        let age = audit.generated_at.map(|t| now.saturating_sub(t));
        let future = age.is_some_and(|a| a < -FUTURE_SLACK_SECS);
        let stale = age.is_none_or(|a| a > STALE_AFTER_SECS) || future;
        let mut not_ok: Vec<&BoxCheck> = audit.checks.iter().filter(|c| c.status != Status::Ok).collect();
        not_ok.sort_by_key(|c| std::cmp::Reverse(c.status));
        let detail = match (audit.errors.first(), future) {
            (Some(e), _) => Some(format!("the box's doctor stopped early: {e}")),
            (None, true) => Some("the box's audit is dated in the future (is the box's clock right?)".to_owned()),
            (None, false) => None,
        };
        // A run that stopped early proved less than its checks say.
        let status = if audit.errors.is_empty() { audit.status() } else { audit.status().max(Status::Unknown) };
        Posture {
            state: PostureState::Audited,
            status,
            counts: Some(audit.counts()),
            generated_at: audit.generated_at,
            age: age.map(|a| a.max(0)),
            stale,
            not_ok: not_ok.into_iter().map(|c| c.id.clone()).collect(),
            detail,
        }
    }

    /// Whether `status` should exit 6 over it: a failed check, an audit
    /// the timer stopped renewing, or a report the box made up. Not a warn
    /// or unknown (most boxes cannot show a BIOS password, so a well set up
    /// box is `unknown` for good), and not a box without an audit (set up
    /// by hand, or older), which `doctor` reports instead.
    pub fn is_finding(&self) -> bool {
        match self.state {
            PostureState::Audited => self.status == Status::Fail || self.stale,
            PostureState::Invalid => true,
            _ => false,
        }
    }

    /// One line: "fail (1 fail, 1 unknown), audited 3h ago".
    pub fn line(&self) -> String {
        let Some(c) = self.counts.filter(|_| self.state == PostureState::Audited) else {
            return format!("{} ({})", self.status, self.detail.as_deref().unwrap_or("no audit"));
        };
        let parts: Vec<String> = [(c.fail, "fail"), (c.unknown, "unknown"), (c.warn, "warn")]
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, s)| format!("{n} {s}"))
            .collect();
        let parts = if parts.is_empty() { format!("{} ok", c.ok) } else { parts.join(", ") };
        let when = match self.age {
            None => "undated (age unknown)".to_owned(),
            Some(a) => format!("audited {} ago", crate::human::secs(a)),
        };
        let stale = if self.stale && self.age.is_some() { ", STALE" } else { "" };
        let detail = self.detail.as_deref().map(|d| format!("; {d}")).unwrap_or_default();
        format!("{} ({parts}), {when}{stale}{detail}", self.status)
    }

    /// The source's check for one target's box (`source.box-posture`):
    /// the box's status, raised to warn when its audit is stale, unknown
    /// without a usable report.
    pub fn check(&self, target: &str) -> Check {
        const ID: CheckId = CheckId::SourceBoxPosture;
        let target = super::one_line(target);
        let summary = format!("target {target}: box posture {}", self.line());
        let named = |ids: &[BoxCheckId]| {
            let mut s: Vec<String> = ids.iter().take(5).map(ToString::to_string).collect();
            if ids.len() > 5 {
                s.push(format!("{} more", ids.len() - 5));
            }
            s.join(", ")
        };
        match self.state {
            PostureState::Audited => {
                let status = if self.stale { self.status.max(Status::Warn) } else { self.status };
                let fix = if !self.not_ok.is_empty() {
                    format!("on the box, as root, run `zoffsite doctor --box` and fix: {}", named(&self.not_ok))
                } else {
                    "on the box, as root: systemctl enable --now zoffsite-box-doctor.timer (the audit is renewed hourly)"
                        .to_owned()
                };
                Check::with_status(ID, status, summary, fix)
            }
            PostureState::Missing => Check::unknown(
                ID,
                summary,
                "on the box, as root: systemctl enable --now zoffsite-box-doctor.timer (`zoffsite box apply` installs it)",
            ),
            PostureState::Unsupported => {
                Check::unknown(ID, summary, "install the same zoffsite version on the box as on the source")
            }
            PostureState::Unreadable | PostureState::Invalid => Check::unknown(
                ID,
                summary,
                format!("on the box, as root, run `zoffsite doctor --box --output {}` and look at it", super::AUDIT_PATH),
            ),
            PostureState::Unreachable => {
                Check::unknown(ID, summary, "bring the tunnel up and check with `zoffsite status`")
            }
        }
    }
}

#[cfg(test)]
mod tests;
