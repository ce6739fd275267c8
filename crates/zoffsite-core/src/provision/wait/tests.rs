use super::*;
use crate::doctor::{Check, CheckId, Report};

const T0: i64 = 1_800_000_000;
const IF: &str = "zo-friend";

fn wait(timeout: u64) -> Wait {
    Wait::new("friend", Some(IF), T0, timeout, POLL_SECS)
}

fn peer(at: Option<i64>) -> TunnelSeen {
    TunnelSeen::Peer { latest_handshake: at }
}

fn audit(checks: &[Check], at: i64) -> Fetched {
    let mut r = Report::new();
    r.extend(checks.iter().cloned());
    r.set_generated_at(at);
    Fetched::Report(serde_json::to_string(&r).unwrap())
}

fn all_ok() -> Fetched {
    audit(&[Check::ok(CheckId::SecureBoot, "on"), Check::ok(CheckId::Firewall, "fine")], T0)
}

/// Runs the machine against scripted observations: each look at the
/// tunnel takes the next of `tunnels` (the last one repeats), each
/// session attempt the next of `logins`; a sleep advances the clock by
/// its length, an attempt by 2 s. Returns the verdict, the clock, the
/// narrative lines and the status lines.
fn drive(w: &mut Wait, tunnels: &[TunnelSeen], logins: &[Login]) -> (Verdict, i64, Vec<String>, Vec<String>) {
    let (mut now, mut said, mut statuses) = (T0, Vec::new(), Vec::new());
    let (mut ti, mut li) = (0, 0);
    let mut action = w.start();
    for _ in 0..10_000 {
        action = match action {
            Action::ObserveTunnel => {
                let seen = tunnels[ti.min(tunnels.len() - 1)].clone();
                ti += 1;
                w.tunnel(seen, now)
            }
            Action::Connect { say } => {
                said.extend(say);
                now += 2;
                let l = logins[li.min(logins.len() - 1)].clone();
                li += 1;
                w.login(l, now)
            }
            Action::Sleep { secs, status } => {
                assert!((1..=POLL_SECS).contains(&secs), "{secs}");
                statuses.push(status);
                now += i64::try_from(secs).unwrap();
                w.woke(now)
            }
            Action::Done(v) => return (v, now, said, statuses),
        };
    }
    panic!("the wait did not end");
}

#[test]
fn a_fresh_handshake_ends_the_tunnel_phase_and_connects() {
    let mut w = wait(600);
    assert_eq!(w.start(), Action::ObserveTunnel);
    let a = w.tunnel(peer(Some(T0 - 12)), T0);
    let Action::Connect { say: Some(say) } = a else { panic!("{a:?}") };
    assert!(say.contains("zo-friend 12s ago") && say.contains("pinned host key"), "{say}");
    assert_eq!((w.phase(), w.handshake_age, w.phases.clone()), (Phase::Session, Some(12), vec![Phase::Tunnel]));
    // Exactly STALE_AFTER old is still fresh; a handshake dated ahead of
    // the clock is as good as now.
    let mut w = wait(600);
    assert!(matches!(w.tunnel(peer(Some(T0 - 135)), T0), Action::Connect { .. }));
    let mut w = wait(600);
    assert!(matches!(w.tunnel(peer(Some(T0 + 30)), T0), Action::Connect { .. }));
    assert_eq!(w.handshake_age, Some(0));
}

#[test]
fn an_old_or_no_handshake_waits_and_polls() {
    let mut w = wait(600);
    let Action::Sleep { secs, status } = w.tunnel(peer(Some(T0 - 136)), T0) else { panic!() };
    assert_eq!(secs, POLL_SECS);
    assert!(
        status.contains("waiting for box friend to dial in on zo-friend: last handshake 2m 16s ago (10m left)"),
        "{status}"
    );
    assert_eq!(w.phase(), Phase::Tunnel);
    let Action::Sleep { status, .. } = w.tunnel(peer(None), T0) else { panic!() };
    assert!(status.contains("no handshake yet"), "{status}");
    // After the sleep, the tunnel is looked at again.
    assert_eq!(w.woke(T0 + 5), Action::ObserveTunnel);
    assert!(w.phases.is_empty());
}

#[test]
fn the_wait_times_out_without_a_handshake_and_names_the_tpm_recovery_prompt() {
    let mut w = wait(60);
    let (v, now, said, statuses) = drive(&mut w, &[peer(Some(T0 - 7200))], &[]);
    assert_eq!(now, T0 + 60, "never past the timeout");
    assert!(said.is_empty());
    assert_eq!(statuses.len(), 12, "a look every 5 s");
    let Verdict::TimedOut { phase: Phase::Tunnel, message } = &v else { panic!("{v:?}") };
    assert!(message.contains("did not come up within 1m"), "{message}");
    assert!(message.contains("its last handshake was 2h 1m ago"), "{message}");
    assert!(message.contains(UNREACHABLE_HINT), "{message}");
    assert!(UNREACHABLE_HINT.contains("docs/box.md#when-the-box-does-not-come-back"));
    assert!(!UNREACHABLE_HINT.contains('\n'), "one line");
    assert_eq!(v.severity(), Severity::Target);
    assert_eq!(w.attempts, 0);
}

#[test]
fn a_timeout_of_zero_looks_once() {
    let mut w = wait(0);
    assert!(matches!(w.tunnel(peer(None), T0), Action::Done(Verdict::TimedOut { phase: Phase::Tunnel, .. })));
    // ... and tries the session once when the tunnel is up.
    let mut w = wait(0);
    let (v, _, _, statuses) = drive(&mut w, &[peer(Some(T0))], &[Login::Unreachable("Connection refused".into())]);
    assert!(matches!(v, Verdict::TimedOut { phase: Phase::Session, .. }), "{v:?}");
    assert!(statuses.is_empty());
    assert_eq!(w.attempts, 1);
}

#[test]
fn handshake_seen_but_ssh_refused_is_tried_again_until_it_answers() {
    let mut w = wait(600);
    let refused = Login::Unreachable("cannot reach the box at 10.77.0.2: Connection refused".into());
    let (v, now, said, statuses) = drive(
        &mut w,
        &[peer(None), peer(Some(T0 + 5))],
        &[refused.clone(), Login::NotYet("the box refused the key".into()), Login::Reached(all_ok())],
    );
    assert_eq!(v, Verdict::Reached(all_ok()));
    assert_eq!(w.attempts, 3);
    assert_eq!(w.phases, [Phase::Tunnel, Phase::Session]);
    assert_eq!(said.len(), 1, "the tunnel phase is announced once: {said:?}");
    // One sleep for the tunnel, two between the attempts; each says why.
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    assert!(statuses[1].contains("the tunnel is up, but no session yet (attempt 1): cannot reach"), "{}", statuses[1]);
    assert!(statuses[2].contains("(attempt 2): the box refused the key"), "{}", statuses[2]);
    assert_eq!(now, T0 + 5 + 3 * 2 + 2 * 5);
    assert_eq!(v.severity(), Severity::Ok);
    assert_eq!(v.message(), None);
}

#[test]
fn handshake_seen_but_ssh_refused_until_the_timeout_names_the_last_failure() {
    let mut w = wait(30);
    let (v, now, _, _) = drive(&mut w, &[peer(Some(T0))], &[Login::Unreachable("Connection refused".into())]);
    let Verdict::TimedOut { phase: Phase::Session, message } = &v else { panic!("{v:?}") };
    assert!(message.contains("no session with box friend within 30s"), "{message}");
    assert!(message.ends_with("the last: Connection refused"), "the tunnel was up: no TPM hint: {message}");
    assert!(now <= T0 + 30 + 2, "{now}");
    assert!(w.attempts >= 4, "{}", w.attempts);
}

#[test]
fn a_host_key_mismatch_fails_at_once_with_the_fix() {
    let mut w = wait(600);
    let msg =
        "the box's SSH host key is not the one pinned in /etc/zoffsite/boxes/friend/known_hosts ... replace its line";
    let (v, now, _, _) = drive(&mut w, &[peer(Some(T0))], &[Login::HostKey(msg.into())]);
    assert_eq!(now, T0 + 2, "no retry");
    assert_eq!(w.attempts, 1);
    let Verdict::HostKey(m) = &v else { panic!("{v:?}") };
    assert!(m.starts_with("box friend: ") && m.contains("known_hosts") && m.contains("replace its line"), "{m}");
    assert_eq!(v.severity(), Severity::Target);
    assert_eq!(w.phases, [Phase::Tunnel], "the session was not reached");
}

#[test]
fn ssh_that_cannot_start_fails_at_once() {
    let mut w = wait(600);
    let (v, _, _, _) = drive(&mut w, &[peer(Some(T0))], &[Login::Local("cannot run ssh: not found".into())]);
    assert_eq!(v, Verdict::Local("cannot run ssh: not found".into()));
    assert_eq!(v.severity(), Severity::Error);
}

#[test]
fn a_missing_source_interface_is_waited_out_for_a_grace_then_fails_with_the_fix() {
    let down = TunnelSeen::Down("no such interface".into());
    let mut w = wait(600);
    let (v, now, _, statuses) = drive(&mut w, std::slice::from_ref(&down), &[]);
    assert_eq!(now, T0 + i64::try_from(SOURCE_TUNNEL_GRACE_SECS).unwrap());
    assert!(statuses[0].contains("waiting for this machine's zo-friend to come up"), "{}", statuses[0]);
    let Verdict::SourceTunnel(m) = &v else { panic!("{v:?}") };
    assert!(m.contains("systemctl start wg-quick@zo-friend") && m.contains("source.bundle"), "{m}");
    assert_eq!(v.severity(), Severity::Error);
    // Back before the grace ran out: the wait goes on, and a later absence
    // gets a grace of its own.
    let mut w = wait(600);
    assert!(matches!(w.tunnel(down.clone(), T0), Action::Sleep { .. }));
    assert!(matches!(w.tunnel(peer(None), T0 + 50), Action::Sleep { .. }));
    assert!(matches!(w.tunnel(down.clone(), T0 + 100), Action::Sleep { .. }));
    assert!(matches!(w.tunnel(down, T0 + 159), Action::Sleep { .. }));
    assert!(matches!(w.tunnel(peer(Some(T0 + 160)), T0 + 161), Action::Connect { .. }));
}

#[test]
fn an_interface_without_the_boxs_peer_fails_at_once() {
    let mut w = wait(600);
    let v = w.tunnel(TunnelSeen::OtherPeers("its peers are Hz64cXtZ…".into()), T0);
    let Action::Done(Verdict::SourceTunnel(m)) = &v else { panic!("{v:?}") };
    assert!(m.contains("zo-friend is not the tunnel to box friend") && m.contains("box apply"), "{m}");
}

#[test]
fn an_unreadable_tunnel_goes_straight_to_the_session() {
    let mut w = wait(600);
    let a = w.tunnel(TunnelSeen::Unreadable("`wg show` needs root".into()), T0);
    let Action::Connect { say: Some(say) } = a else { panic!("{a:?}") };
    assert!(say.contains("cannot watch box friend's tunnel (`wg show` needs root); trying the box directly"), "{say}");
    assert_eq!(w.phase(), Phase::Session);
    assert!(w.phases.is_empty(), "no handshake was seen");
    // Unreachable then: the timeout names the TPM prompt, as no handshake
    // showed the box booted.
    let mut w = Wait::new("friend", None, T0, 10, POLL_SECS);
    let (v, _, _, statuses) = drive(
        &mut w,
        &[TunnelSeen::Unreadable("not made by box new".into())],
        &[Login::Unreachable("Connection timed out".into())],
    );
    assert!(statuses.iter().all(|s| !s.contains("the tunnel is up")), "{statuses:?}");
    assert!(v.message().unwrap().contains(UNREACHABLE_HINT), "{v:?}");
}

#[test]
fn sleeps_never_pass_the_timeout() {
    let mut w = Wait::new("friend", Some(IF), T0, 7, 5);
    let Action::Sleep { secs: 5, .. } = w.tunnel(peer(None), T0) else { panic!() };
    let Action::Sleep { secs: 2, .. } = w.tunnel(peer(None), T0 + 5) else { panic!() };
    assert!(matches!(w.woke(T0 + 7), Action::Done(Verdict::TimedOut { .. })));
    assert_eq!(w.waited(T0 + 7), 7);
    // A poll of 0 is 1.
    let mut w = Wait::new("friend", Some(IF), T0, 7, 0);
    assert!(matches!(w.tunnel(peer(None), T0), Action::Sleep { secs: 1, .. }));
}

fn posture(f: &Fetched) -> Posture {
    Posture::judge(f, T0 + 60)
}

#[test]
fn a_failed_audit_stops_the_run_unless_forced() {
    let f = audit(
        &[
            Check::ok(CheckId::Firewall, "fine"),
            Check::unknown(CheckId::BiosPassword, "not exposed", "look"),
            Check::fail(CheckId::SshdListen, "on every address", "the tunnel only"),
        ],
        T0,
    );
    let g = gate("friend", &posture(&f), false);
    let Gate::Stop(m) = &g else { panic!("{g:?}") };
    assert!(m.contains("has a failed check (box.sshd-listen)") && m.contains("nothing was enabled or sent"), "{m}");
    assert!(m.contains("zoffsite doctor --box") && m.contains("--force"), "{m}");
    assert_eq!(g.severity(), Severity::Partial, "doctor's exit 3");
    let g = gate("friend", &posture(&f), true);
    let Gate::Forced(m) = &g else { panic!("{g:?}") };
    assert!(m.contains("backing up anyway (--force)"), "{m}");
    assert_eq!(g.severity(), Severity::Partial, "forced still shows the finding");
}

#[test]
fn an_audit_the_box_made_up_stops_the_run() {
    let made_up =
        Fetched::Report(r#"{"status":"ok","counts":{"ok":5,"warn":0,"unknown":0,"fail":0},"checks":[]}"#.into());
    let g = gate("friend", &posture(&made_up), false);
    let Gate::Stop(m) = &g else { panic!("{g:?}") };
    assert!(m.contains("refused as inconsistent"), "{m}");
}

#[test]
fn warnings_unknowns_a_missing_or_stale_audit_go_on_with_a_note() {
    let unknown = audit(
        &[Check::ok(CheckId::Firewall, "fine"), Check::unknown(CheckId::BiosPassword, "not exposed", "look")],
        T0,
    );
    let Gate::Go(Some(n)) = gate("friend", &posture(&unknown), false) else { panic!() };
    assert!(n.contains("posture unknown (1 unknown)") && n.contains("box.bios-password"), "{n}");
    let Gate::Go(Some(n)) = gate("friend", &posture(&Fetched::Missing), false) else { panic!() };
    assert!(n.contains("zoffsite-box-doctor.timer") && n.contains("after boot"), "{n}");
    let old = audit(&[Check::ok(CheckId::Firewall, "fine")], T0 - 5 * 86_400);
    let Gate::Go(Some(n)) = gate("friend", &posture(&old), false) else { panic!() };
    assert!(n.contains("STALE"), "{n}");
    for f in [Fetched::Unsupported, Fetched::Unreadable("a symlink".into())] {
        assert!(matches!(gate("friend", &posture(&f), false), Gate::Go(Some(_))), "{f:?}");
    }
    let g = gate("friend", &posture(&all_ok()), false);
    assert_eq!(g, Gate::Go(None), "all ok: nothing to say");
    assert_eq!(g.severity(), Severity::Ok);
}

#[test]
fn the_timer_is_enabled_once_and_skipped_where_nothing_can_be_enabled() {
    let f = |root, systemd, enabled, active| timer_step(&TimerFacts { root, systemd, enabled, active });
    let TimerStep::Skip(m) = f(false, true, false, false) else { panic!() };
    assert!(m.contains("not root") && m.contains("systemctl enable --now zoffsite-backup.timer"), "{m}");
    let TimerStep::Skip(m) = f(true, false, false, false) else { panic!() };
    assert!(m.contains("systemd is not running"), "{m}");
    assert_eq!(f(true, true, true, true), TimerStep::Ready);
    assert_eq!(f(true, true, true, false), TimerStep::Enable);
    assert_eq!(f(true, true, false, true), TimerStep::Enable);
    assert_eq!(enable_timer_argv(), ["systemctl", "enable", "--now", "--", units::BACKUP_TIMER]);
}

#[test]
fn the_report_is_the_json_docs_json_shows() {
    let r = WaitReport {
        target: "friend".into(),
        phases: vec![Phase::Tunnel, Phase::Session, Phase::Posture, Phase::Timer],
        interface: Some(IF.into()),
        handshake_age: Some(4),
        attempts: 2,
        waited: 95,
        box_posture: Some(posture(&all_ok())),
        timer: Some(TimerReport { unit: units::BACKUP_TIMER, action: TimerAction::Already, detail: None }),
        ..WaitReport::default()
    };
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["phases"], serde_json::json!(["tunnel", "session", "posture", "timer"]));
    assert_eq!(v["box_posture"]["status"], "ok");
    assert_eq!(v["timer"], serde_json::json!({"unit": "zoffsite-backup.timer", "action": "already"}));
    assert_eq!(v["backup"], serde_json::Value::Null);
    assert_eq!(
        (v["handshake_age"].as_i64(), v["attempts"].as_u64(), v["waited"].as_u64()),
        (Some(4), Some(2), Some(95))
    );
    for p in [Phase::Tunnel, Phase::Session, Phase::Posture, Phase::Timer, Phase::Backup] {
        assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
    }
}
