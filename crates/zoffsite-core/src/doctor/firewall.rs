//! The box's firewall, from `nft -j list ruleset`: can ssh be reached from
//! outside the tunnel?
//!
//! The evaluator is conservative: it says ok only when it *proves*, for
//! IPv4 and for IPv6 each, that some base chain on the `input` hook (type
//! `filter`, family `inet`, or `ip`/`ip6`) with policy `drop` accepts no
//! TCP packet to the ssh port that arrives on another interface than the
//! tunnel. A drop in any base chain is final for the packet, so one such
//! chain suffices, whatever the other chains accept. Within that chain, every
//! rule (and every chain it jumps or goes to) that could accept is judged by
//! its matches, which are ANDed, so one match that excludes such packets
//! clears the rule:
//!
//! - excluded: `iifname`/`iif` equal to the tunnel interface or `lo`;
//!   a destination port (`tcp dport`, `th dport`) or protocol (`meta
//!   l4proto`, `ip protocol`, `ip6 nexthdr`, a `udp ...`/`icmp ...` match)
//!   that is not ssh's; `ct state` without `new` and `untracked` (e.g.
//!   `established,related`: what is proven is that no *new connection*
//!   from outside gets in; this relies on conntrack, as every stateful rule
//!   set does); a match on the other address family;
//! - weak (a warning): restricted only by the source address, to addresses
//!   inside the tunnel network: a packet from the LAN with a forged source
//!   address still matches (sshd listening on the tunnel address only does
//!   not stop that either: Linux accepts packets for any local address on
//!   any interface);
//! - unclear (unknown): anything else the evaluator does not model (named
//!   sets `@name`, wildcards, `fib`, marks, verdict maps, `xt` matches,
//!   statements that rewrite the packet, jumps deeper than 16 or to a chain
//!   not listed);
//! - admits (a failure): a rule all of whose matches are understood and
//!   none excludes such packets (e.g. `tcp dport 22 accept`), unless an
//!   earlier rule on the way may have dropped some of them (then unclear:
//!   the evaluator does not intersect conditions).
//!
//! No input chain with policy drop for a family is a failure (a flushed
//! rule set is one). What it does NOT prove: that the rules are loaded at
//! boot (the service being enabled is another check), anything about
//! `prerouting`/`ingress` hooks (they can only drop more, or NAT: the input
//! hook sees the translated port), or the output direction.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

use super::{quote, Check, CheckId, Status};

/// What "inside the tunnel" is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The tunnel's interface on the box (`wg0`).
    pub tunnel_if: String,
    /// The port sshd listens on.
    pub ssh_port: u16,
    /// The source's tunnel address(es) or the tunnel network(s): a rule
    /// restricted to these sources but not to the interface is weak.
    pub tunnel_nets: Vec<Net>,
}

/// An address with a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub len: u8,
}

impl Net {
    /// `ADDR` or `ADDR/LEN`.
    pub fn parse(s: &str) -> Option<Net> {
        let (a, l) = s.split_once('/').map_or((s, None), |(a, l)| (a, Some(l)));
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l.parse::<u8>().ok().filter(|n| *n <= max && l == n.to_string())?,
        };
        Some(Net { addr, len })
    }

    /// Whether every address of `inner` is in `self`.
    pub fn contains(&self, inner: &Net) -> bool {
        if inner.len < self.len {
            return false;
        }
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                IpAddr::V6(v) => u128::from(v),
            }
        };
        if self.addr.is_ipv4() != inner.addr.is_ipv4() {
            return false;
        }
        // IPv4 addresses sit in the top 32 bits, so the same mask works.
        let len = u32::from(self.len);
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
        bits(self.addr) & mask == bits(inner.addr) & mask
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    fn name(self) -> &'static str {
        match self {
            Fam::V4 => "IPv4",
            Fam::V6 => "IPv6",
        }
    }

    fn covered_by(self, family: &str) -> bool {
        matches!((self, family), (_, "inet") | (Fam::V4, "ip") | (Fam::V6, "ip6"))
    }
}

/// How far a rule (or chain) may let an outside ssh packet in; ordered from
/// best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Excluded,
    Weak,
    Unclear,
    Admits,
}

type ChainKey = (String, String, String); // family, table, name

#[derive(Debug, Default)]
struct Chain {
    hook: Option<String>,
    kind: Option<String>,
    policy: Option<String>,
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    handle: Option<u64>,
    expr: Vec<Value>,
}

#[derive(Debug, Default)]
struct Ruleset {
    chains: BTreeMap<ChainKey, Chain>,
}

fn field<'a>(o: &'a serde_json::Map<String, Value>, k: &str, what: &str) -> Result<&'a str, String> {
    o.get(k).and_then(Value::as_str).ok_or_else(|| format!("a {what} without {k:?}"))
}

fn parse(text: &str) -> Result<Ruleset, String> {
    let v = super::json::parse(text)?;
    let items = v.get("nftables").and_then(Value::as_array).ok_or("no \"nftables\" list: not `nft -j` output")?;
    let mut rs = Ruleset::default();
    for item in items {
        let o = item.as_object().filter(|o| o.len() == 1).ok_or("an entry that is not an object with one key")?;
        let (kind, body) = o.iter().next().ok_or("an empty entry")?;
        let key = |b: &serde_json::Map<String, Value>, name_key: &str, what: &str| -> Result<ChainKey, String> {
            Ok((
                field(b, "family", what)?.to_owned(),
                field(b, "table", what)?.to_owned(),
                field(b, name_key, what)?.to_owned(),
            ))
        };
        match kind.as_str() {
            "metainfo" if body.get("json_schema_version").and_then(Value::as_u64) != Some(1) => {
                return Err("json_schema_version is not 1".into());
            }
            "chain" => {
                let b = body.as_object().ok_or("a chain that is not an object")?;
                let k = key(b, "name", "chain")?;
                let opt = |f: &str| -> Result<Option<String>, String> {
                    match b.get(f) {
                        None => Ok(None),
                        Some(Value::String(s)) => Ok(Some(s.clone())),
                        Some(_) => Err(format!("a chain whose {f} is not a string")),
                    }
                };
                let c = Chain { hook: opt("hook")?, kind: opt("type")?, policy: opt("policy")?, rules: Vec::new() };
                if rs.chains.insert(k.clone(), c).is_some() {
                    return Err(format!("chain {} listed twice", show(&k)));
                }
            }
            "rule" => {
                let b = body.as_object().ok_or("a rule that is not an object")?;
                let k = key(b, "chain", "rule")?;
                let expr = b.get("expr").and_then(Value::as_array).ok_or("a rule without \"expr\"")?;
                let handle = b.get("handle").and_then(Value::as_u64);
                rs.chains
                    .get_mut(&k)
                    .ok_or_else(|| format!("a rule of chain {} that is not listed", show(&k)))?
                    .rules
                    .push(Rule { handle, expr: expr.clone() });
            }
            // Tables, sets, maps, elements, counters, flowtables...: they
            // accept nothing by themselves; a rule that uses a set by name
            // is judged unclear.
            _ => {}
        }
    }
    Ok(rs)
}

fn show(k: &ChainKey) -> String {
    format!("{} {} {}", super::one_line(&k.0), super::one_line(&k.1), super::one_line(&k.2))
}

/// Walks the chains reachable from one base chain for one family.
struct Walk<'a> {
    rs: &'a Ruleset,
    want: &'a Expect,
    fam: Fam,
    seen_drop: bool,
    tainted: Option<String>,
    worst: (Level, String),
}

const MAX_DEPTH: usize = 16;

enum Verdict {
    Accept,
    Drop,
    Jump(String),
    Return,
    /// Might accept (a verdict map, an unknown statement).
    Maybe(String),
}

impl Walk<'_> {
    fn note(&mut self, level: Level, why: impl FnOnce() -> String) {
        if level > self.worst.0 {
            self.worst = (level, why());
        }
    }

    fn walk(&mut self, key: &ChainKey, cap: Level, depth: usize, base: bool) {
        let Some(chain) = self.rs.chains.get(key) else {
            self.note(cap.min(Level::Unclear), || format!("a jump to chain {}, which is not listed", show(key)));
            return;
        };
        if depth > MAX_DEPTH {
            self.note(cap.min(Level::Unclear), || format!("jumps nest deeper than {MAX_DEPTH} at {}", show(key)));
            return;
        }
        for rule in &chain.rules {
            let at = || format!("rule {} of {}", rule.handle.map_or("?".to_owned(), |h| h.to_string()), show(key));
            let mut m = Level::Admits;
            let mut unclear: Option<String> = None;
            let mut verdict = None;
            for st in &rule.expr {
                let Some((kind, body)) = st.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next()) else {
                    verdict = Some(Verdict::Maybe("a statement that is not an object with one key".into()));
                    break;
                };
                match kind.as_str() {
                    "match" => {
                        let (l, why) = self.classify(body);
                        if l == Level::Unclear && unclear.is_none() {
                            unclear = why;
                        }
                        m = m.min(l);
                    }
                    "counter" | "log" | "limit" | "quota" | "notrack" => {}
                    "mangle" => {
                        let harmless = body
                            .get("key")
                            .and_then(|k| k.get("meta").or_else(|| k.get("ct")))
                            .and_then(|k| k.get("key"))
                            .and_then(Value::as_str)
                            .is_some_and(|k| k == "mark");
                        if !harmless && self.tainted.is_none() {
                            self.tainted = Some(format!("{} rewrites packets", at()));
                        }
                    }
                    "accept" | "queue" => verdict = Some(Verdict::Accept),
                    "drop" | "reject" => verdict = Some(Verdict::Drop),
                    "jump" | "goto" => {
                        verdict = Some(match body.get("target").and_then(Value::as_str) {
                            Some(t) => Verdict::Jump(t.to_owned()),
                            None => Verdict::Maybe(format!("a {kind} without a target")),
                        });
                    }
                    "return" | "continue" => verdict = Some(Verdict::Return),
                    other => verdict = Some(Verdict::Maybe(format!("a {} statement", quote(other)))),
                }
                if verdict.is_some() {
                    break;
                }
            }
            let lvl = m.min(cap);
            match verdict {
                None => {}
                Some(Verdict::Accept) => {
                    let lvl = if lvl == Level::Admits && self.seen_drop { Level::Unclear } else { lvl };
                    self.note(lvl, || match lvl {
                        Level::Admits => format!("{} accepts ssh from outside the tunnel", at()),
                        Level::Weak => format!(
                            "{} accepts ssh by source address only, on any interface (a forged source from the LAN matches)",
                            at()
                        ),
                        _ => format!(
                            "{} may accept ssh from outside the tunnel ({})",
                            at(),
                            unclear.clone().unwrap_or_else(|| "after an earlier drop the evaluator does not intersect".into())
                        ),
                    });
                }
                Some(Verdict::Drop) => self.seen_drop |= m > Level::Excluded,
                Some(Verdict::Return) => self.seen_drop |= base && m > Level::Excluded,
                Some(Verdict::Jump(t)) if lvl > Level::Excluded => {
                    let target = (key.0.clone(), key.1.clone(), t);
                    self.walk(&target, lvl, depth + 1, false);
                }
                Some(Verdict::Jump(_)) => {}
                Some(Verdict::Maybe(what)) => {
                    self.seen_drop |= m > Level::Excluded;
                    self.note(lvl.min(Level::Unclear), || format!("{} may accept ({what})", at()));
                }
            }
        }
    }

    /// One `match` expression: how far it lets an outside ssh packet of
    /// this family through, and for unclear ones, why.
    fn classify(&self, body: &Value) -> (Level, Option<String>) {
        let unclear = |why: String| (Level::Unclear, Some(why));
        let (Some(op), Some(left), Some(right)) =
            (body.get("op").and_then(Value::as_str), body.get("left"), body.get("right"))
        else {
            return unclear("a match without op, left or right".into());
        };
        let neg = match op {
            "==" | "in" => false,
            "!=" => true,
            "<" | ">" | "<=" | ">=" => return self.compare_port(left, op, right),
            other => return unclear(format!("the operator {}", quote(other))),
        };
        if refs_named_set(right) {
            return unclear("a named set".into());
        }
        let values = elements(right);
        let yes_no = |hit: bool| if hit { Level::Admits } else { Level::Excluded };
        if let Some(key) = left.get("meta").and_then(|m| m.get("key")).and_then(Value::as_str) {
            return match key {
                "iifname" | "iif" => {
                    let names: Option<Vec<&str>> = values.iter().map(|v| v.as_str()).collect();
                    let Some(names) = names else { return unclear(format!("{key} compared with a non-name")) };
                    if names.iter().any(|n| n.contains(['*', '\\'])) {
                        return unclear(format!("an interface wildcard in {key}"));
                    }
                    let inside = |n: &&str| *n == self.want.tunnel_if || *n == "lo";
                    match (neg, names.iter().all(inside)) {
                        (false, true) => (Level::Excluded, None),
                        (false, false) => (Level::Admits, None),
                        (true, _) if names.iter().any(|n| *n == self.want.tunnel_if) => (Level::Admits, None),
                        (true, _) => unclear(format!("{key} != an interface other than the tunnel's")),
                    }
                }
                "l4proto" => self.protocol(&values, neg),
                "nfproto" | "protocol" => {
                    let mine = match self.fam {
                        Fam::V4 => ["ipv4", "ip"],
                        Fam::V6 => ["ipv6", "ip6"],
                    };
                    let hit = values.iter().any(|v| v.as_str().is_some_and(|s| mine.contains(&s)));
                    (yes_no(hit != neg), None)
                }
                other => unclear(format!("meta {}", quote(other))),
            };
        }
        if let Some(ct) = left.get("ct").and_then(|c| c.get("key")).and_then(Value::as_str) {
            if ct != "state" {
                return unclear(format!("ct {}", quote(ct)));
            }
            let states: Option<Vec<&str>> = values.iter().map(|v| v.as_str()).collect();
            let Some(states) = states else { return unclear("ct state compared with a non-name".into()) };
            // A new connection's first packet is `new` (`untracked` under
            // notrack); the other states cannot open one.
            if !states.iter().all(|s| ["new", "untracked", "established", "related", "invalid"].contains(s)) {
                return unclear("an unknown ct state".into());
            }
            let opens = states.iter().any(|s| matches!(*s, "new" | "untracked"));
            return (if opens != neg { Level::Admits } else { Level::Excluded }, None);
        }
        if let Some(p) = left.get("payload") {
            let (Some(proto), Some(f)) =
                (p.get("protocol").and_then(Value::as_str), p.get("field").and_then(Value::as_str))
            else {
                return unclear("a raw payload match".into());
            };
            return match (proto, f) {
                ("ip", _) if self.fam == Fam::V6 => (Level::Excluded, None),
                ("ip6", _) if self.fam == Fam::V4 => (Level::Excluded, None),
                ("ip", "protocol") | ("ip6", "nexthdr") => self.protocol(&values, neg),
                ("ip" | "ip6", "saddr") => self.source(&values, neg),
                ("ip" | "ip6", "daddr") => (Level::Admits, None),
                ("tcp" | "th", "dport") => self.port(&values, neg),
                ("tcp", _) => (Level::Admits, None),
                (
                    "udp" | "udplite" | "sctp" | "dccp" | "icmp" | "icmpv6" | "igmp" | "esp" | "ah" | "comp" | "gre"
                    | "vlan" | "arp",
                    _,
                ) => (Level::Excluded, None),
                _ => unclear(format!("a match on {} {}", quote(proto), quote(f))),
            };
        }
        unclear("a match the evaluator does not model".into())
    }

    fn protocol(&self, values: &[&Value], neg: bool) -> (Level, Option<String>) {
        let mut tcp = false;
        for v in values {
            match v {
                Value::String(s) if s == "tcp" => tcp = true,
                Value::String(s) if s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') => {}
                Value::Number(n) if n.as_u64() == Some(6) => tcp = true,
                Value::Number(n) if n.as_u64().is_some_and(|n| n < 256) => {}
                _ => return (Level::Unclear, Some("a protocol match on an unexpected value".into())),
            }
        }
        (if tcp != neg { Level::Admits } else { Level::Excluded }, None)
    }

    fn port(&self, values: &[&Value], neg: bool) -> (Level, Option<String>) {
        let p = u64::from(self.want.ssh_port);
        let mut hit = false;
        for v in values {
            if let Some(n) = v.as_u64() {
                hit |= n == p;
            } else if let Some([lo, hi]) = v.get("range").and_then(Value::as_array).map(Vec::as_slice) {
                match (lo.as_u64(), hi.as_u64()) {
                    (Some(lo), Some(hi)) => hit |= lo <= p && p <= hi,
                    _ => return (Level::Unclear, Some("a port range of non-numbers".into())),
                }
            } else {
                return (Level::Unclear, Some("a port match on a non-number".into()));
            }
        }
        (if hit != neg { Level::Admits } else { Level::Excluded }, None)
    }

    fn compare_port(&self, left: &Value, op: &str, right: &Value) -> (Level, Option<String>) {
        let p = left.get("payload");
        let proto = p.and_then(|p| p.get("protocol")).and_then(Value::as_str);
        let f = p.and_then(|p| p.get("field")).and_then(Value::as_str);
        let (Some("tcp" | "th"), Some("dport"), Some(n)) = (proto, f, right.as_u64()) else {
            return (Level::Unclear, Some(format!("a {} comparison the evaluator does not model", quote(op))));
        };
        let p = u64::from(self.want.ssh_port);
        let hit = match op {
            "<" => p < n,
            ">" => p > n,
            "<=" => p <= n,
            _ => p >= n,
        };
        (if hit { Level::Admits } else { Level::Excluded }, None)
    }

    fn source(&self, values: &[&Value], neg: bool) -> (Level, Option<String>) {
        if neg {
            return (Level::Admits, None);
        }
        let net = |v: &Value| -> Option<Vec<Net>> {
            if let Some(s) = v.as_str() {
                return Some(vec![Net::parse(s)?]);
            }
            if let Some(p) = v.get("prefix") {
                let addr: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
                let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
                return Net::parse(&format!("{addr}/{len}")).map(|n| vec![n]);
            }
            if let Some([lo, hi]) = v.get("range").and_then(Value::as_array).map(Vec::as_slice) {
                return Some(vec![Net::parse(lo.as_str()?)?, Net::parse(hi.as_str()?)?]);
            }
            None
        };
        let mut inside = true;
        for v in values {
            let Some(nets) = net(v) else {
                return (Level::Unclear, Some("a source address match on an unexpected value".into()));
            };
            // A range is inside when both ends are in the same tunnel net.
            inside &= self.want.tunnel_nets.iter().any(|t| nets.iter().all(|n| t.contains(n)));
        }
        (if inside { Level::Weak } else { Level::Admits }, None)
    }
}

/// Whether a match's right side names a set (`@name`).
fn refs_named_set(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with('@'),
        Value::Array(a) => a.iter().any(refs_named_set),
        Value::Object(o) => o.values().any(refs_named_set),
        _ => false,
    }
}

/// The values a match's right side stands for: a set's elements, a flag
/// list's items, or the one value.
fn elements(v: &Value) -> Vec<&Value> {
    match v {
        Value::Object(o) if o.len() == 1 && o.contains_key("set") => match &o["set"] {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        },
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    }
}

/// One family's verdict and why.
fn family(rs: &Ruleset, want: &Expect, fam: Fam) -> (Status, String) {
    let inputs: Vec<(&ChainKey, &Chain)> = rs
        .chains
        .iter()
        .filter(|(k, c)| {
            fam.covered_by(&k.0) && c.hook.as_deref() == Some("input") && c.kind.as_deref() == Some("filter")
        })
        .collect();
    let mut best: Option<(Level, String, &ChainKey)> = None;
    for (k, _) in inputs.iter().filter(|(_, c)| c.policy.as_deref() == Some("drop")) {
        let mut w = Walk { rs, want, fam, seen_drop: false, tainted: None, worst: (Level::Excluded, String::new()) };
        w.walk(k, Level::Admits, 0, true);
        let (mut level, mut why) = w.worst;
        if let Some(t) = w.tainted.filter(|_| level < Level::Unclear) {
            (level, why) = (Level::Unclear, t);
        }
        if best.as_ref().is_none_or(|b| level < b.0) {
            best = Some((level, why, k));
        }
    }
    let port = want.ssh_port;
    let Some((level, why, k)) = best else {
        return (
            Status::Fail,
            if inputs.is_empty() {
                format!("no input filter chain at all: ssh (tcp/{port}) is reachable on every interface")
            } else {
                "no input filter chain has policy drop".to_owned()
            },
        );
    };
    let status = match level {
        Level::Excluded => Status::Ok,
        Level::Weak => Status::Warn,
        Level::Unclear => Status::Unknown,
        Level::Admits => Status::Fail,
    };
    let text = match level {
        Level::Excluded => format!(
            "input chain {} (policy drop) lets ssh (tcp/{port}) in only on {}",
            show(k),
            super::one_line(&want.tunnel_if)
        ),
        _ => why,
    };
    (status, text)
}

/// Whether ssh is reachable from outside the tunnel, from `nft -j list
/// ruleset` output.
pub fn check(text: &str, want: &Expect) -> Check {
    const ID: CheckId = CheckId::Firewall;
    let fix = format!(
        "load zoffsite's rule set (`zoffsite box apply`): input policy drop, ssh (tcp/{}) accepted only with `iifname \"{}\"` and the source's tunnel address",
        want.ssh_port,
        super::one_line(&want.tunnel_if)
    );
    let rs = match parse(text) {
        Ok(rs) => rs,
        Err(e) => {
            return Check::unknown(
                ID,
                format!("cannot read `nft -j list ruleset`: {e}"),
                "look at `nft list ruleset` by hand",
            )
        }
    };
    let (v4, v6) = (family(&rs, want, Fam::V4), family(&rs, want, Fam::V6));
    let status = v4.0.max(v6.0);
    let summary = if v4 == v6 {
        format!("IPv4 and IPv6: {}", v4.1)
    } else {
        [(Fam::V4, v4), (Fam::V6, v6)]
            .iter()
            .filter(|(_, r)| r.0 == status)
            .map(|(f, r)| format!("{}: {}", f.name(), r.1))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let fix = match status {
        Status::Unknown => format!("simplify the input chain so it can be checked, or check it by hand; or {fix}"),
        _ => fix,
    };
    Check::with_status(ID, status, summary, fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testutil::fixture;
    use proptest::prelude::*;
    use serde_json::json;

    fn want() -> Expect {
        Expect { tunnel_if: "wg0".into(), ssh_port: 22, tunnel_nets: vec![Net::parse("10.77.0.0/24").unwrap()] }
    }

    fn of(text: &str) -> Check {
        check(text, &want())
    }

    #[test]
    fn the_box_rule_set_proves_ssh_only_through_the_tunnel() {
        // Real `nft -j` output (testdata/doctor/capture.sh), the rule set
        // e2e/topology.sh loads.
        let c = of(&fixture("nft-box.json"));
        assert_eq!(c.status(), Status::Ok, "{c:?}");
        assert_eq!(
            c.summary(),
            "IPv4 and IPv6: input chain inet zoffsite_box input (policy drop) lets ssh (tcp/22) in only on wg0"
        );
    }

    #[test]
    fn flushed_open_or_accepting_rule_sets_fail() {
        let flushed = of(&fixture("nft-flushed.json"));
        assert_eq!(flushed.status(), Status::Fail);
        assert!(flushed.summary().contains("no input filter chain at all"), "{flushed:?}");
        let open = of(&fixture("nft-open.json"));
        assert_eq!(open.status(), Status::Fail, "{open:?}");
        assert!(open.summary().contains("accepts ssh from outside the tunnel"), "{open:?}");
        let accept = of(&fixture("nft-accept.json"));
        assert_eq!(accept.status(), Status::Fail);
        assert!(accept.summary().contains("policy drop"), "{accept:?}");
    }

    #[test]
    fn a_source_address_without_the_interface_warns_and_a_named_set_is_unknown() {
        let saddr = of(&fixture("nft-saddr.json"));
        assert_eq!(saddr.status(), Status::Warn, "{saddr:?}");
        assert!(saddr.summary().starts_with("IPv4:"), "IPv6 is excluded by the ip match: {saddr:?}");
        let set = of(&fixture("nft-set.json"));
        assert_eq!(set.status(), Status::Unknown, "{set:?}");
        assert!(set.summary().contains("a named set"), "{set:?}");
    }

    /// A rule set with one input chain (policy drop) holding `rules`, in
    /// the JSON form nft prints.
    fn ruleset(rules: &[Value], extra_chains: &[(&str, &[Value])]) -> String {
        let mut items = vec![
            serde_json::json!({"metainfo": {"json_schema_version": 1}}),
            serde_json::json!({"chain": {"family": "inet", "table": "t", "name": "input", "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}),
        ];
        for (name, _) in extra_chains {
            items.push(serde_json::json!({"chain": {"family": "inet", "table": "t", "name": name}}));
        }
        for (i, r) in rules.iter().enumerate() {
            items.push(
                serde_json::json!({"rule": {"family": "inet", "table": "t", "chain": "input", "handle": i, "expr": r}}),
            );
        }
        for (name, rules) in extra_chains {
            for r in *rules {
                items.push(serde_json::json!({"rule": {"family": "inet", "table": "t", "chain": name, "expr": r}}));
            }
        }
        serde_json::json!({ "nftables": items }).to_string()
    }

    fn m(left: Value, op: &str, right: Value) -> Value {
        let mut inner = serde_json::Map::new();
        inner.insert("op".into(), Value::from(op));
        inner.insert("left".into(), left);
        inner.insert("right".into(), right);
        serde_json::json!({ "match": Value::Object(inner) })
    }

    fn iifname(n: &str) -> Value {
        m(serde_json::json!({"meta": {"key": "iifname"}}), "==", Value::String(n.into()))
    }

    fn dport(v: Value) -> Value {
        m(serde_json::json!({"payload": {"protocol": "tcp", "field": "dport"}}), "==", v)
    }

    fn accept() -> Value {
        serde_json::json!({"accept": null})
    }

    fn status(rules: &[Value]) -> Status {
        of(&ruleset(rules, &[])).status()
    }

    #[test]
    fn rules_are_judged_by_their_strongest_match() {
        assert_eq!(status(&[json!([iifname("wg0"), dport(json!(22)), accept()])]), Status::Ok);
        assert_eq!(status(&[json!([dport(json!(22)), accept()])]), Status::Fail);
        assert_eq!(
            status(&[json!([dport(json!({"set": [80, {"range": [20, 30]}]})), accept()])]),
            Status::Fail,
            "22 in 20-30"
        );
        assert_eq!(status(&[json!([dport(json!({"set": [80, 443]})), accept()])]), Status::Ok, "other ports only");
        assert_eq!(status(&[json!([iifname("eth0"), dport(json!(22)), accept()])]), Status::Fail);
        assert_eq!(status(&[json!([iifname("wg*"), dport(json!(22)), accept()])]), Status::Unknown, "wildcard");
        assert_eq!(status(&[json!([iifname("lo"), accept()])]), Status::Ok);
        let udp = m(json!({"payload": {"protocol": "udp", "field": "dport"}}), "==", json!(51820));
        assert_eq!(status(&[json!([udp, accept()])]), Status::Ok, "udp is not ssh");
        let l4 = m(json!({"meta": {"key": "l4proto"}}), "==", json!("tcp"));
        assert_eq!(status(&[json!([l4.clone(), accept()])]), Status::Fail, "all of tcp");
        let est = m(json!({"ct": {"key": "state"}}), "in", json!(["established", "related"]));
        assert_eq!(status(&[json!([est, accept()])]), Status::Ok);
        let new = m(json!({"ct": {"key": "state"}}), "==", json!("new"));
        assert_eq!(status(&[json!([new, dport(json!(22)), accept()])]), Status::Fail);
        let ge = m(json!({"payload": {"protocol": "tcp", "field": "dport"}}), ">=", json!(1024));
        assert_eq!(status(&[json!([ge, accept()])]), Status::Ok, "22 < 1024");
        let mark = m(json!({"meta": {"key": "mark"}}), "==", json!(1));
        assert_eq!(status(&[json!([mark, dport(json!(22)), accept()])]), Status::Unknown);
        let daddr = m(json!({"payload": {"protocol": "ip", "field": "daddr"}}), "==", json!("10.77.0.2"));
        assert_eq!(
            of(&ruleset(&[json!([daddr, dport(json!(22)), accept()])], &[])).summary().split("; ").count(),
            1,
            "IPv4 fails (any interface reaches a local address), IPv6 is excluded"
        );
        let lan = m(
            json!({"payload": {"protocol": "ip", "field": "saddr"}}),
            "==",
            json!({"prefix": {"addr": "192.168.1.0", "len": 24}}),
        );
        assert_eq!(status(&[json!([lan, dport(json!(22)), accept()])]), Status::Fail, "the LAN is outside the tunnel");
    }

    #[test]
    fn jumps_are_followed_and_earlier_drops_make_accepts_unclear() {
        let jump = json!({"jump": {"target": "ssh"}});
        let inner: &[Value] = &[json!([dport(json!(22)), accept()])];
        assert_eq!(of(&ruleset(&[json!([jump.clone()])], &[("ssh", inner)])).status(), Status::Fail);
        assert_eq!(of(&ruleset(&[json!([iifname("wg0"), jump.clone()])], &[("ssh", inner)])).status(), Status::Ok);
        assert_eq!(of(&ruleset(&[json!([jump])], &[])).status(), Status::Unknown, "a missing chain");
        let loop_: &[Value] = &[json!([json!({"jump": {"target": "ssh"}})])];
        // nft refuses loops when loading; here they end at the depth limit.
        assert_eq!(
            of(&ruleset(&[json!([json!({"goto": {"target": "ssh"}})])], &[("ssh", loop_)])).status(),
            Status::Unknown
        );
        let drop_eth0 = json!([iifname("eth0"), dport(json!(22)), json!({"drop": null})]);
        assert_eq!(status(&[drop_eth0, json!([dport(json!(22)), accept()])]), Status::Unknown, "maybe dropped before");
        let vmap = json!({"vmap": {"key": {"meta": {"key": "iifname"}}, "data": {"set": [["lo", {"accept": null}]]}}});
        assert_eq!(status(&[json!([vmap])]), Status::Unknown);
        let mangle = json!({"mangle": {"key": {"payload": {"protocol": "tcp", "field": "dport"}}, "value": 22}});
        assert_eq!(status(&[json!([mangle, json!({"counter": null})])]), Status::Unknown, "rewrites packets");
    }

    #[test]
    fn one_proving_chain_is_enough_and_each_family_needs_one() {
        let v4_only = serde_json::json!({"nftables": [
            {"chain": {"family": "ip", "table": "t", "name": "in", "type": "filter", "hook": "input", "policy": "drop"}},
            {"rule": {"family": "ip", "table": "t", "chain": "in", "expr": [iifname("wg0"), dport(json!(22)), accept()]}},
            {"chain": {"family": "inet", "table": "u", "name": "in", "type": "filter", "hook": "input", "policy": "accept"}},
            {"rule": {"family": "inet", "table": "u", "chain": "in", "expr": [dport(json!(22)), accept()]}}
        ]})
        .to_string();
        let c = of(&v4_only);
        assert_eq!(c.status(), Status::Fail, "{c:?}");
        assert!(c.summary().starts_with("IPv6: no input filter chain has policy drop"), "{c:?}");
    }

    #[test]
    fn strange_json_is_unknown() {
        for bad in [
            "",
            "{}",
            r#"{"nftables": {}}"#,
            r#"{"nftables": [{"metainfo": {"json_schema_version": 2}}]}"#,
            r#"{"nftables": [{"rule": {"family": "inet", "table": "t", "chain": "x", "expr": []}}]}"#,
            r#"{"nftables": [{"chain": {"family": "inet"}}]}"#,
            r#"{"nftables": [{"a": 1, "b": 2}]}"#,
            r#"{"nftables": [], "nftables": []}"#,
        ] {
            assert_eq!(of(bad).status(), Status::Unknown, "{bad}");
        }
    }

    #[test]
    fn nets_contain_what_they_should() {
        let n = |s| Net::parse(s).unwrap();
        assert!(n("10.77.0.0/24").contains(&n("10.77.0.1")));
        assert!(!n("10.77.0.0/24").contains(&n("10.77.1.1")));
        assert!(!n("10.77.0.0/24").contains(&n("10.0.0.0/8")));
        assert!(n("0.0.0.0/0").contains(&n("1.2.3.4")));
        assert!(n("fd00::/64").contains(&n("fd00::2")) && !n("fd00::/64").contains(&n("10.0.0.1")));
        assert!(Net::parse("10.0.0.0/33").is_none() && Net::parse("10.0.0.0/08").is_none());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0u64..70000).prop_map(Value::from),
            prop::sample::select(vec![
                "wg0",
                "eth0",
                "lo",
                "tcp",
                "udp",
                "input",
                "filter",
                "drop",
                "accept",
                "inet",
                "ip",
                "ip6",
                "t",
                "established",
                "new",
                "iifname",
                "dport",
                "saddr",
                "payload",
                "@s",
                "10.77.0.1",
                "==",
                "!=",
                "in",
            ])
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "nftables", "chain", "rule", "family", "table", "name", "chain", "hook", "type", "policy",
                        "expr", "match", "op", "left", "right", "meta", "key", "accept", "jump", "target", "set",
                        "range", "prefix", "ct", "protocol", "field"
                    ])
                    .prop_map(str::to_owned),
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn random_text_never_panics_and_is_never_ok(s in "\\PC{0,300}") {
            prop_assert_ne!(of(&s).status(), Status::Ok);
        }

        #[test]
        fn random_rules_in_a_drop_chain_never_panic(rules in prop::collection::vec(prop::collection::vec(arb_json(), 0..4), 0..6)) {
            let rules: Vec<Value> = rules.into_iter().map(Value::Array).collect();
            let _ = of(&ruleset(&rules, &[]));
        }

        #[test]
        fn random_structures_never_panic(v in arb_json()) {
            let _ = of(&serde_json::json!({"nftables": v}).to_string());
            let _ = of(&v.to_string());
        }
    }
}
