use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::doctor::Report;

const NOW: i64 = 1_796_000_000;

/// A box report as `doctor --box --output` writes it.
fn report(checks: &[Check], at: Option<i64>) -> String {
    let mut r = Report::new();
    r.extend(checks.iter().cloned());
    if let Some(t) = at {
        r.set_generated_at(t);
    }
    serde_json::to_string_pretty(&r).unwrap()
}

fn a_box() -> Vec<Check> {
    vec![
        Check::ok(CheckId::SecureBoot, "Secure Boot is enabled (user mode)"),
        Check::unknown(CheckId::BiosPassword, "not exposed by this firmware", "check it in the firmware setup"),
        Check::fail(CheckId::SshdListen, "sshd listens on 0.0.0.0:22\nforged", "listen on the tunnel only"),
        Check::warn(CheckId::ZfsVersion, "zfs 2.3.2 \u{202e}", "upgrade OpenZFS to 2.3.3 or later"),
    ]
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn core_reports_json_round_trips_through_the_strict_parser() {
    let checks = a_box();
    let a = parse(&report(&checks, Some(NOW - 3 * 3600))).unwrap();
    assert_eq!(a.generated_at(), Some(NOW - 3 * 3600));
    assert_eq!(a.checks().len(), checks.len());
    for (got, want) in a.checks().iter().zip(&checks) {
        assert_eq!(got.id, BoxCheckId::Known(want.id()));
        assert_eq!((got.status, got.summary.as_str(), got.fix.as_deref()), (want.status(), want.summary(), want.fix()));
    }
    assert_eq!(a.status(), Status::Fail);
    assert_eq!(a.counts(), Counts { ok: 1, warn: 1, unknown: 1, fail: 1 });
    // The texts the box's doctor escaped stay escaped, not re-escaped.
    assert_eq!(a.checks()[2].summary, "sshd listens on 0.0.0.0:22\\nforged");
    // Undated, and the binary's `--json` document (exit_code, errors) too.
    assert_eq!(parse(&report(&checks, None)).unwrap().generated_at(), None);
    let mut doc: serde_json::Value = serde_json::from_str(&report(&checks, Some(NOW))).unwrap();
    doc["exit_code"] = json!(3);
    doc["errors"] = json!(["cannot run nft: \u{1b}[2J"]);
    let a = parse(&doc.to_string()).unwrap();
    assert_eq!(a.errors(), ["cannot run nft: \\u{1b}[2J"], "errors are sanitized");
    // An empty report is unknown, as core says.
    assert_eq!(parse(&report(&[], Some(NOW))).unwrap().status(), Status::Unknown);
}

#[test]
fn duplicate_keys_anywhere_refuse_the_report() {
    let dup_top = r#"{"status":"ok","status":"fail","counts":{"ok":0,"warn":0,"unknown":0,"fail":0},"checks":[]}"#;
    assert!(err(dup_top).contains("appears twice"), "{}", err(dup_top));
    let dup_check = r#"{"status":"ok","counts":{"ok":1,"warn":0,"unknown":0,"fail":0},
        "checks":[{"id":"box.firewall","status":"ok","status":"fail","summary":"x"}]}"#;
    assert!(err(dup_check).contains("appears twice"));
}

#[test]
fn a_report_that_disagrees_with_itself_is_refused() {
    let mut v: serde_json::Value = serde_json::from_str(&report(&a_box(), Some(NOW))).unwrap();
    let honest = v.clone();
    v["counts"]["fail"] = json!(0);
    assert!(err(&v.to_string()).contains("counts say 0 fail, but it lists 1"), "{}", err(&v.to_string()));
    let mut v = honest.clone();
    v["status"] = json!("ok");
    assert!(err(&v.to_string()).contains("its checks make it fail"));
    let mut v = honest.clone();
    v["counts"]["ok"] = json!(-1);
    assert!(parse(&v.to_string()).is_err());
    let mut v = honest.clone();
    v["counts"]["extra"] = json!(0);
    assert!(err(&v.to_string()).contains("field \"extra\""));
    // A fix exactly when not ok, as core writes it.
    let mut v = honest.clone();
    v["checks"][0]["fix"] = json!("nothing to fix");
    assert!(err(&v.to_string()).contains("ok with a fix"));
    let mut v = honest;
    v["checks"][2].as_object_mut().unwrap().remove("fix");
    assert!(err(&v.to_string()).contains("fail without a fix"));
}

#[test]
fn sizes_are_bounded_before_and_while_parsing() {
    let big = format!("{}{}", report(&[], None), " ".repeat(MAX_AUDIT_LEN));
    assert!(err(&big).contains("more than the"));
    let many: Vec<Check> = (0..=MAX_CHECKS).map(|_| Check::ok(CheckId::Firewall, "x")).collect();
    assert!(err(&report(&many, None)).contains("checks, more than"));
    let mut v: serde_json::Value = serde_json::from_str(&report(&a_box(), None)).unwrap();
    v["checks"][0]["summary"] = json!("x".repeat(MAX_TEXT + 1));
    assert!(err(&v.to_string()).contains("more than"));
    // What the box's doctor never writes: a raw newline, an escape, bidi.
    for hostile in ["two\nlines", "\u{1b}[2J", "a\u{202e}b", "zero\u{200b}width"] {
        v["checks"][0]["summary"] = json!(hostile);
        assert!(err(&v.to_string()).contains("control or format"), "{hostile:?}");
    }
    let mut v: serde_json::Value = serde_json::from_str(&report(&a_box(), None)).unwrap();
    v["errors"] = json!(vec!["e"; MAX_ERRORS + 1]);
    assert!(parse(&v.to_string()).is_err());
    assert!(parse(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))).is_err());
}

#[test]
fn unknown_box_ids_are_kept_opaque_and_counted_and_other_ids_are_refused() {
    let text = |id: &str, status: &str| {
        let fix = if status == "ok" { json!(null) } else { json!("do something") };
        let mut c = json!({"id": id, "status": status, "summary": "a check from a newer zoffsite"});
        if !fix.is_null() {
            c["fix"] = fix;
        }
        let counts =
            json!({"ok": u8::from(status == "ok"), "warn": 0, "unknown": 0, "fail": u8::from(status == "fail")});
        json!({"status": status, "counts": counts, "checks": [c]}).to_string()
    };
    let a = parse(&text("box.hsm-seal", "fail")).unwrap();
    assert_eq!(a.checks()[0].id, BoxCheckId::Other("box.hsm-seal".into()));
    assert_eq!(a.status(), Status::Fail, "an unknown failing check still fails the posture");
    let p = Posture::judge(&Fetched::Report(text("box.hsm-seal", "fail")), NOW);
    assert_eq!(p.not_ok, [BoxCheckId::Other("box.hsm-seal".into())]);
    for refused in [
        "source.encryption",
        "source.anything",
        "box.",
        "box.-x",
        "box.a--b",
        "box.UPPER",
        "box.a b",
        "box.\u{202e}x",
        "firewall",
        &format!("box.{}", "a".repeat(MAX_ID_LEN)),
    ] {
        assert!(err(&text(refused, "ok")).contains("not a box check's"), "{refused:?}");
    }
    assert!(parse(&text(&format!("box.{}", "a".repeat(MAX_ID_LEN - 4)), "ok")).is_ok());
}

#[test]
fn not_a_report_is_refused_with_a_reason() {
    for (text, why) in [
        ("", "not strict JSON"),
        ("[]", "not a JSON object"),
        (r#"{"status":"ok","counts":{}}"#, "no \"checks\""),
        (r#"{"counts":{"ok":0,"warn":0,"unknown":0,"fail":0},"checks":[]}"#, "no \"status\""),
        (r#"{"status":"unknown","checks":[]}"#, "no \"counts\""),
        (
            r#"{"status":"unknown","counts":{"ok":0,"warn":0,"unknown":0,"fail":0},"checks":[],"new":1}"#,
            "field \"new\"",
        ),
        (
            r#"{"status":"unknown","counts":{"ok":0,"warn":0,"unknown":0,"fail":0},"checks":[],"generated_at":-5}"#,
            "not a time",
        ),
        (
            r#"{"status":"unknown","counts":{"ok":0,"warn":0,"unknown":0,"fail":0},"checks":[],"exit_code":300}"#,
            "exit code",
        ),
        (r#"{"status":"unknown","counts":{"ok":0,"warn":0,"unknown":0,"fail":0},"checks":[1]}"#, "not an object"),
    ] {
        let e = err(text);
        assert!(e.contains(why), "{text}: {e}");
    }
}

#[test]
fn the_posture_says_status_counts_and_age_and_when_it_is_stale() {
    let p = Posture::judge(&Fetched::Report(report(&a_box(), Some(NOW - 3 * 3600))), NOW);
    assert_eq!((p.state, p.status, p.age, p.stale), (PostureState::Audited, Status::Fail, Some(3 * 3600), false));
    assert_eq!(p.line(), "fail (1 fail, 1 unknown, 1 warn), audited 3h ago");
    assert_eq!(
        p.not_ok,
        [
            BoxCheckId::Known(CheckId::SshdListen),
            BoxCheckId::Known(CheckId::BiosPassword),
            BoxCheckId::Known(CheckId::ZfsVersion)
        ],
        "worst first"
    );
    assert!(p.is_finding(), "a failed box check raises status");
    let c = p.check("friend");
    assert_eq!((c.id(), c.status()), (CheckId::SourceBoxPosture, Status::Fail));
    assert!(c.summary().starts_with("target friend: box posture fail (1 fail"), "{}", c.summary());
    assert!(c.fix().unwrap().contains("box.sshd-listen, box.bios-password, box.zfs-version"));

    // A well set up box: unknown (BIOS password) for good, never a finding.
    let good = [Check::ok(CheckId::Firewall, "fine"), Check::unknown(CheckId::BiosPassword, "not exposed", "look")];
    let p = Posture::judge(&Fetched::Report(report(&good, Some(NOW - 60))), NOW);
    assert_eq!((p.status, p.stale, p.is_finding()), (Status::Unknown, false, false));
    assert_eq!(p.line(), "unknown (1 unknown), audited 1m ago");
    let all_ok = [Check::ok(CheckId::Firewall, "fine")];
    let p = Posture::judge(&Fetched::Report(report(&all_ok, Some(NOW - 60))), NOW);
    assert_eq!((p.line(), p.check("t").status()), ("ok (1 ok), audited 1m ago".to_owned(), Status::Ok));

    // Stale: the timer stopped. An ok posture becomes a warn and a finding.
    let p = Posture::judge(&Fetched::Report(report(&all_ok, Some(NOW - STALE_AFTER_SECS - 1))), NOW);
    assert!(p.stale && p.is_finding());
    assert_eq!(p.line(), "ok (1 ok), audited 2d ago, STALE");
    assert_eq!(p.check("t").status(), Status::Warn);
    // Undated, or dated in the future: its age cannot be trusted.
    let p = Posture::judge(&Fetched::Report(report(&all_ok, None)), NOW);
    assert!(p.stale && p.age.is_none());
    assert_eq!(p.line(), "ok (1 ok), undated (age unknown)");
    let p = Posture::judge(&Fetched::Report(report(&all_ok, Some(NOW + 3600))), NOW);
    assert!(p.stale && p.age == Some(0) && p.detail.as_deref().unwrap().contains("future"));
    let p = Posture::judge(&Fetched::Report(report(&all_ok, Some(NOW + 60))), NOW);
    assert!(!p.stale, "a minute of clock skew is not stale");

    // A run that stopped early proved less.
    let mut v: serde_json::Value = serde_json::from_str(&report(&all_ok, Some(NOW))).unwrap();
    v["errors"] = json!(["cannot run sshd -T"]);
    let p = Posture::judge(&Fetched::Report(v.to_string()), NOW);
    assert_eq!(p.status, Status::Unknown);
    assert!(p.line().ends_with("; the box's doctor stopped early: cannot run sshd -T"), "{}", p.line());
}

#[test]
fn without_a_usable_report_the_posture_is_unknown_and_says_why() {
    for (fetched, state, line, finding) in [
        (Fetched::Missing, PostureState::Missing, "unknown (the box has not written an audit yet)", false),
        (
            Fetched::Unsupported,
            PostureState::Unsupported,
            "unknown (the box's zoffsite is too old to report its posture)",
            false,
        ),
        (
            Fetched::Unreadable("a symlink".into()),
            PostureState::Unreadable,
            "unknown (the box could not hand over its audit: a symlink)",
            false,
        ),
        (
            Fetched::Report("{}".into()),
            PostureState::Invalid,
            "unknown (the box's audit was refused: no \"checks\" list)",
            true,
        ),
        (
            Fetched::Unreachable("timeout".into()),
            PostureState::Unreachable,
            "unknown (the box did not answer: timeout)",
            false,
        ),
    ] {
        let p = Posture::judge(&fetched, NOW);
        assert_eq!((p.state, p.status, p.line().as_str(), p.is_finding()), (state, Status::Unknown, line, finding));
        let c = p.check("friend");
        assert_eq!(c.status(), Status::Unknown, "{state:?}");
        assert!(c.fix().is_some());
    }
    let v = serde_json::to_value(Posture::judge(&Fetched::Missing, NOW)).unwrap();
    assert_eq!(
        v,
        json!({"state": "missing", "status": "unknown", "stale": false, "not_ok": [], "detail": "the box has not written an audit yet"})
    );
    let v = serde_json::to_value(Posture::judge(&Fetched::Report(report(&a_box(), Some(NOW - 10))), NOW)).unwrap();
    assert_eq!(v["counts"], json!({"ok": 1, "warn": 1, "unknown": 1, "fail": 1}));
    assert_eq!((v["generated_at"].as_i64(), v["age"].as_i64()), (Some(NOW - 10), Some(10)));
    assert_eq!(v["not_ok"][0], "box.sshd-listen");
}

fn any_check() -> impl Strategy<Value = Check> {
    (
        proptest::sample::select(CheckId::ALL[..19].to_vec()),
        prop_oneof![Just(Status::Ok), Just(Status::Warn), Just(Status::Unknown), Just(Status::Fail)],
        any::<String>(),
        any::<String>(),
    )
        .prop_map(|(id, status, summary, fix)| Check::with_status(id, status, summary, fix))
}

proptest! {
    /// Whatever core's doctor can write, the source reads back as written.
    #[test]
    fn every_report_core_writes_is_read_back_exactly(
        checks in proptest::collection::vec(any_check(), 0..40),
        at in proptest::option::of(0i64..4_000_000_000),
    ) {
        let a = parse(&report(&checks, at)).unwrap();
        prop_assert_eq!(a.generated_at(), at);
        prop_assert_eq!(a.checks().len(), checks.len());
        for (got, want) in a.checks().iter().zip(&checks) {
            prop_assert_eq!(&got.id, &BoxCheckId::Known(want.id()));
            prop_assert_eq!(got.status, want.status());
            prop_assert_eq!(got.summary.as_str(), want.summary());
            prop_assert_eq!(got.fix.as_deref(), want.fix());
        }
    }

    /// A changed count or status is always caught.
    #[test]
    fn any_lie_about_the_counts_or_status_is_refused(
        checks in proptest::collection::vec(any_check(), 0..20),
        which in 0usize..5,
        delta in 1u64..3,
    ) {
        let mut v: serde_json::Value = serde_json::from_str(&report(&checks, None)).unwrap();
        if which == 4 {
            let st = v["status"].as_str().unwrap().to_owned();
            let other = ["ok", "warn", "unknown", "fail"].into_iter().find(|s| *s != st).unwrap();
            v["status"] = json!(other);
        } else {
            let key = ["ok", "warn", "unknown", "fail"][which];
            let n = v["counts"][key].as_u64().unwrap();
            v["counts"][key] = json!(n + delta);
        }
        prop_assert!(parse(&v.to_string()).is_err());
    }

    /// Garbage, or a real report cut or spliced, never panics; whatever is
    /// accepted is consistent and every text a safe bounded line.
    #[test]
    fn hostile_text_is_refused_or_consistent(
        checks in proptest::collection::vec(any_check(), 0..8),
        cut in any::<prop::sample::Index>(),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let text = report(&checks, Some(NOW));
        let at = cut.index(text.len() + 1);
        let mut bytes = text.as_bytes()[..at].to_vec();
        bytes.extend_from_slice(&noise);
        bytes.extend_from_slice(&text.as_bytes()[at..]);
        let mutated = String::from_utf8_lossy(&bytes);
        for t in [mutated.as_ref(), &String::from_utf8_lossy(&noise)] {
            if let Ok(a) = parse(t) {
                let c = a.counts();
                prop_assert_eq!(c.ok + c.warn + c.unknown + c.fail, a.checks().len());
                for k in a.checks() {
                    prop_assert!(!k.summary.chars().any(must_escape) && k.summary.len() <= MAX_TEXT);
                    prop_assert_eq!(k.status == Status::Ok, k.fix.is_none());
                }
                let p = Posture::judge(&Fetched::Report(t.to_owned()), NOW);
                prop_assert_eq!(p.state, PostureState::Audited);
                prop_assert!(!p.line().chars().any(must_escape));
            }
        }
    }
}

/// A box's audit is shown by the source's own doctor renderer: the same
/// text the box's doctor would print for those checks, its escapes kept.
#[test]
fn a_boxs_audit_renders_as_doctor_renders_its_report() {
    let mut r = Report::new();
    r.extend(a_box());
    let audit = parse(&report(&a_box(), Some(NOW))).unwrap();
    assert_eq!(audit.text(), r.text());
    let text = audit.text();
    assert!(text.starts_with("ok       box.secure-boot"), "{text}");
    assert!(text.contains("fail     box.sshd-listen             sshd listens on 0.0.0.0:22\\nforged\n         fix: listen on the tunnel only\n"), "{text}");
    assert!(text.ends_with("fail: 1 ok, 1 warn, 1 unknown, 1 fail\n"), "{text}");
    assert_eq!(text.lines().count(), 4 + 3 + 1, "one line per check, a fix under each not ok, the summary");
    assert_eq!(parse(&report(&[], Some(NOW))).unwrap().text(), "unknown: 0 ok, 0 warn, 0 unknown, 0 fail\n");
}
