//! Units that must start at boot (timers, the tunnel, sshd), from
//! `systemctl is-enabled UNIT` run once per unit: a box or source that
//! loses power must come back doing its job by itself.

use super::{quote, Check, CheckId, Side, Status};

/// What `systemctl is-enabled` printed for one unit.
fn judge(state: Option<&str>) -> (Status, String) {
    let Some(state) = state.map(|s| s.strip_suffix('\n').unwrap_or(s)) else {
        return (Status::Unknown, "systemctl printed nothing".into());
    };
    match state {
        "enabled" => (Status::Ok, "enabled".into()),
        "enabled-runtime" | "linked" | "linked-runtime" | "static" | "indirect" | "generated" | "transient"
        | "alias" => (Status::Warn, format!("{state}: not started at boot by its own [Install] section")),
        "disabled" | "masked" | "masked-runtime" | "not-found" | "bad" => (Status::Fail, state.to_owned()),
        other => (Status::Unknown, format!("systemctl said {}", quote(other))),
    }
}

/// Each unit with what `systemctl is-enabled UNIT` printed (`None`:
/// nothing on stdout). The worst unit decides.
pub fn check(side: Side, units: &[(String, Option<String>)]) -> Check {
    let id = match side {
        Side::Box => CheckId::Timers,
        Side::Source => CheckId::SourceTimers,
    };
    let verdicts: Vec<(Status, String, &str)> = units
        .iter()
        .map(|(unit, state)| {
            let (s, why) = judge(state.as_deref());
            (s, why, unit.as_str())
        })
        .collect();
    let Some(status) = verdicts.iter().map(|v| v.0).max() else {
        return Check::unknown(id, "no units to check", "name the units zoffsite installed");
    };
    let list = |s: Status| -> Vec<String> {
        verdicts.iter().filter(|v| v.0 == s).map(|v| format!("{} {}", super::one_line(v.2), v.1)).collect()
    };
    if status == Status::Ok {
        let names: Vec<&str> = verdicts.iter().map(|v| v.2).collect();
        return Check::ok(id, format!("enabled: {}", names.join(", ")));
    }
    let bad: Vec<&str> = verdicts.iter().filter(|v| v.0 == status).map(|v| v.2).collect();
    Check::with_status(
        id,
        status,
        list(status).join("; "),
        format!(
            "`systemctl enable --now {}`{}",
            bad.join(" "),
            if side == Side::Box { " (`zoffsite box apply` enables them)" } else { "" }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn units(states: &[Option<&str>]) -> Vec<(String, Option<String>)> {
        states.iter().enumerate().map(|(i, s)| (format!("u{i}.timer"), s.map(str::to_owned))).collect()
    }

    #[test]
    fn every_unit_must_be_enabled() {
        // `systemctl is-enabled` lines as systemd 254 prints them.
        let s = |st: &[Option<&str>]| check(Side::Box, &units(st)).status();
        assert_eq!(s(&[Some("enabled\n"), Some("enabled\n")]), Status::Ok);
        assert_eq!(s(&[Some("enabled\n"), Some("disabled\n")]), Status::Fail);
        assert_eq!(s(&[Some("not-found\n")]), Status::Fail);
        assert_eq!(s(&[Some("masked\n")]), Status::Fail);
        assert_eq!(s(&[Some("enabled-runtime\n")]), Status::Warn, "lost at reboot");
        assert_eq!(s(&[Some("static\n")]), Status::Warn);
        assert_eq!(s(&[None]), Status::Unknown);
        assert_eq!(s(&[Some("enabled\nenabled\n")]), Status::Unknown, "two lines for one unit");
        assert_eq!(s(&[]), Status::Unknown);
        let c = check(Side::Source, &units(&[Some("enabled\n"), Some("disabled\n")]));
        assert_eq!((c.id(), c.summary()), (CheckId::SourceTimers, "u1.timer disabled"));
        assert!(c.fix().unwrap().contains("systemctl enable --now u1.timer"));
    }

    proptest! {
        #[test]
        fn random_states_never_panic_and_only_enabled_is_ok(s in "\\PC{0,40}") {
            let c = check(Side::Box, &units(&[Some(&s)]));
            prop_assert_eq!(c.status() == Status::Ok, s == "enabled" || s == "enabled\n");
        }
    }
}
