//! `zoffsite box keepalive [--interface IF] [-n] [--json]`: run by root
//! on the box from `zoffsite-box-keepalive.timer` every minute. When the
//! tunnel to the source has had no handshake for
//! [`zoffsite_core::provision::keepalive::STALE_AFTER`] seconds, the
//! source's name is resolved again and, when it now points elsewhere, the
//! peer's endpoint is set (`wg set`): WireGuard resolves it only once. The
//! decisions are core's ([`zoffsite_core::provision::keepalive`]); the
//! shell is [`zoffsite_exec::keepalive`].
//!
//! Exit codes: 0 when the tunnel is fresh, was pointed at the new address,
//! or nothing can be done yet (the name still resolves to the current
//! address, or does not resolve, or the interface has no peer yet or is
//! not there: a warning; the next run tries again); 2
//! for no or a bad interface; 1 when the WireGuard file, `wg show` or `wg
//! set` fails.

use std::path::Path;

use serde_json::json;
use zoffsite_core::provision::keepalive::{Decision, Tunnel};
use zoffsite_exec::keepalive::{self, KeepaliveError, Outcome, Wg};
use zoffsite_exec::system;

use crate::cli::BoxKeepaliveArgs;
use crate::exit::{Code as _, Exit};
use crate::ui::Ui;

pub(crate) fn run(args: &BoxKeepaliveArgs) -> Exit {
    let mut ui = Ui::new(args.json, args.dry_run);
    let root = Path::new("/");
    if !system::is_root() {
        ui.err(Exit::Usage, "box keepalive: run it as root (`wg` needs CAP_NET_ADMIN to read and set the tunnel)");
        return ui.bail();
    }
    let interface = match &args.interface {
        Some(i) => i.clone(),
        None => match keepalive::find_interface(root) {
            Ok(i) => i,
            Err(e) => {
                ui.err(Exit::Usage, format_args!("box keepalive: {e}"));
                return ui.bail();
            }
        },
    };
    let now = u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0);
    let outcome = match keepalive::run(root, &interface, &Wg::new(), now, args.dry_run) {
        Ok(o) => o,
        Err(e @ KeepaliveError::Usage(_)) => {
            ui.err(Exit::Usage, format_args!("box keepalive: {e}"));
            return ui.bail();
        }
        Err(e) => {
            ui.err(Exit::Error, format_args!("box keepalive: {interface}: {e}"));
            return ui.bail();
        }
    };
    let line = format!("{interface}: {}", outcome.decision);
    if outcome.decision.is_warning() {
        ui.warning(&line);
    } else {
        ui.say(&line);
    }
    if let Some(c) = &outcome.command {
        ui.say(if args.dry_run { format!("would run: {c}") } else { format!("ran: {c}") });
    }
    if args.json {
        print_json(args, &outcome, &ui);
    }
    ui.exit()
}

fn print_json(args: &BoxKeepaliveArgs, o: &Outcome, ui: &Ui) {
    let (age, current, stale) = match o.tunnel {
        Tunnel::Fresh { age } => (Some(age), None, Some(false)),
        Tunnel::Stale { age, current } => (age, current, Some(true)),
        Tunnel::Configuring | Tunnel::Absent => (None, None, None),
    };
    let (decision, to) = match &o.decision {
        Decision::Fresh { .. } => ("fresh", None),
        Decision::StaleSame { .. } => ("stale_same", None),
        Decision::Update { to, .. } => ("update", Some(to.to_string())),
        Decision::Unresolvable { .. } => ("unresolvable", None),
        Decision::Configuring => ("configuring", None),
        Decision::Absent => ("absent", None),
    };
    let (resolved, resolve_error) = match &o.resolved {
        None => (None, None),
        Some(Ok(a)) => (Some(a.iter().map(ToString::to_string).collect::<Vec<_>>()), None),
        Some(Err(e)) => (None, Some(e.clone())),
    };
    let doc = json!({
        "interface": o.interface,
        "config": o.config.display().to_string(),
        "peer": o.peer.key.as_str(),
        "endpoint": o.peer.endpoint.to_string(),
        "handshake_age": age,
        "stale": stale,
        "current_endpoint": current.map(|c| c.to_string()),
        "resolved": resolved,
        "resolve_error": resolve_error,
        "decision": decision,
        "new_endpoint": to,
        "message": o.decision.to_string(),
        "command": o.command.as_ref().map(zoffsite_exec::process::Cmd::argv),
        "dry_run": args.dry_run,
        "errors": ui.errors(),
        "exit_code": ui.exit().code(),
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
}
