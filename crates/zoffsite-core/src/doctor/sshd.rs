//! The box's sshd, from its effective configuration (`sshd -T`): reachable
//! only inside the tunnel, keys only, no root, only the zoffsite user.
//!
//! `sshd -T` prints one lower-case `keyword value` line per setting (and
//! one line per entry of the list settings `listenaddress` and
//! `allowusers`). What it prints is the configuration for a connection that
//! no `Match` block selects; a `Match` block can still turn passwords on for
//! some addresses or users. The shell should therefore also run
//! `sshd -T -C user=USER,addr=ADDR,host=ADDR` for the connection that
//! matters (the source's tunnel address and the box user) and check that
//! output too: the same functions judge it.
//!
//! Strict: a line that is not `keyword value` with a lower-case keyword, a
//! setting read here that appears twice (sshd -T never repeats a single-valued
//! one), or a listen address that is not `ADDR:PORT` makes the checks
//! unknown.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{quote, Check, CheckId};

/// What the box's sshd should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The box's tunnel address(es) with the ssh port.
    pub listen: Vec<SocketAddr>,
    /// The one `AllowUsers` entry wanted: the box user (`box init --user`),
    /// or `USER@ADDRESS` as zoffsite's drop-in writes it (the user, from
    /// the source's tunnel address only).
    pub user: String,
}

/// `sshd -T` output: every keyword with its values, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effective(BTreeMap<String, Vec<String>>);

/// Keywords printed once per entry.
const LISTS: &[&str] = &["listenaddress", "allowusers", "denyusers", "allowgroups", "denygroups"];

impl Effective {
    /// Parses `sshd -T` output.
    pub fn parse(text: &str) -> Result<Effective, String> {
        if text.len() > super::MAX_INPUT {
            return Err(format!("{} bytes, more than the {} doctor reads", text.len(), super::MAX_INPUT));
        }
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                return Err(format!("line {} is not `keyword value`: {}", i + 1, quote(line)));
            }
            let values = m.entry(k.to_owned()).or_default();
            if !values.is_empty() && !LISTS.contains(&k) && is_read(k) {
                return Err(format!("{k} appears twice"));
            }
            values.push(v.to_owned());
        }
        if m.is_empty() {
            return Err("no settings at all".into());
        }
        Ok(Effective(m))
    }

    /// The one value of a single-valued keyword.
    fn one(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.first()).map(String::as_str)
    }

    fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map_or(&[], Vec::as_slice)
    }
}

/// Whether a single-valued keyword is one these checks read (others may
/// repeat without harm, e.g. `subsystem`, `setenv`).
fn is_read(k: &str) -> bool {
    matches!(
        k,
        "passwordauthentication"
            | "kbdinteractiveauthentication"
            | "challengeresponseauthentication"
            | "permitrootlogin"
    )
}

const DROP_IN: &str = "install zoffsite's sshd drop-in (`zoffsite box apply`) or set it in /etc/ssh/sshd_config.d/, then `systemctl reload ssh`";

/// The sshd checks, in the order [`check`] returns them.
pub const IDS: [CheckId; 5] = [
    CheckId::SshdListen,
    CheckId::SshdPasswordAuth,
    CheckId::SshdKbdInteractive,
    CheckId::SshdRootLogin,
    CheckId::SshdAllowUsers,
];

/// All five sshd checks ([`IDS`]) from `sshd -T` output.
pub fn check(text: &str, want: &Expect) -> Vec<Check> {
    let eff = match Effective::parse(text) {
        Ok(e) => e,
        Err(e) => {
            return IDS
                .iter()
                .map(|id| {
                    Check::unknown(*id, format!("cannot read `sshd -T`: {e}"), "run `sshd -T` by hand and look at it")
                })
                .collect()
        }
    };
    vec![
        listen(&eff, want),
        must_be_no(&eff, CheckId::SshdPasswordAuth, &["passwordauthentication"], "passwords"),
        must_be_no(
            &eff,
            CheckId::SshdKbdInteractive,
            &["kbdinteractiveauthentication", "challengeresponseauthentication"],
            "keyboard-interactive logins (passwords through PAM)",
        ),
        must_be_no(&eff, CheckId::SshdRootLogin, &["permitrootlogin"], "root logins"),
        allow_users(&eff, want),
    ]
}

/// The sshd checks from `sshd -T` (what applies where no `Match` block
/// does) and, where it could be run, `sshd -T -C user=...,addr=...` (what
/// applies to the source's connection): for each check the worse of the
/// two, so a `Match` block that turns passwords back on for the source's
/// address is caught.
pub fn check_both(plain: &str, matched: Option<&str>, want: &Expect) -> Vec<Check> {
    let a = check(plain, want);
    let Some(matched) = matched else { return a };
    a.into_iter()
        .zip(check(matched, want))
        .map(|(a, b)| {
            if b.status() > a.status() {
                let summary = format!("for the source's connection: {}", b.summary());
                Check::with_status(b.id(), b.status(), summary, b.fix().unwrap_or_default())
            } else {
                a
            }
        })
        .collect()
}

fn listen(eff: &Effective, want: &Expect) -> Check {
    const ID: CheckId = CheckId::SshdListen;
    let wanted = want.listen.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let mut got = Vec::new();
    for v in eff.all("listenaddress") {
        match v.parse::<SocketAddr>() {
            Ok(a) => got.push(a),
            Err(_) => {
                return Check::unknown(
                    ID,
                    format!("sshd -T lists listenaddress {}, not ADDRESS:PORT", quote(v)),
                    "look at `sshd -T | grep listenaddress`",
                )
            }
        }
    }
    if got.is_empty() {
        return Check::unknown(ID, "sshd -T lists no listenaddress", "look at `sshd -T`");
    }
    let extra: Vec<String> = got.iter().filter(|a| !want.listen.contains(a)).map(ToString::to_string).collect();
    let fix = format!("set `ListenAddress` to the tunnel address only ({wanted}): {DROP_IN}");
    if !extra.is_empty() {
        return Check::fail(ID, format!("sshd listens on {} (wanted only {wanted})", extra.join(", ")), fix);
    }
    let missing: Vec<String> = want.listen.iter().filter(|a| !got.contains(a)).map(ToString::to_string).collect();
    if !missing.is_empty() {
        return Check::warn(
            ID,
            format!(
                "sshd listens only inside the tunnel, but not on {}: the source cannot reach it there",
                missing.join(", ")
            ),
            fix,
        );
    }
    Check::ok(ID, format!("sshd listens only on {wanted}"))
}

/// `box.sshd-listen` once the sockets that really listen are known
/// ([`super::sockets`], `None`: they could not be looked at, e.g. no
/// `/proc`): whatever `sshd -T` says, anything listening on the ssh port
/// at another address than the wanted ones fails it. Socket activation
/// (Ubuntu's `ssh.socket`) listens on every address while `sshd -T` shows
/// only the tunnel's; the firewall still drops the rest, but the check
/// must not say ok.
pub fn with_sockets(from_sshd: Check, listening: Option<Result<Vec<SocketAddr>, String>>, want: &Expect) -> Check {
    const ID: CheckId = CheckId::SshdListen;
    let listening = match listening {
        None => return from_sshd,
        Some(Ok(l)) => l,
        Some(Err(_)) if from_sshd.status() == super::Status::Fail => return from_sshd,
        Some(Err(e)) => {
            return Check::unknown(ID, format!("cannot read the listening TCP sockets: {e}"), "look at `ss -ltn`")
        }
    };
    // An IPv4-mapped address on an IPv6 socket is its IPv4 self.
    let canonical = |a: &SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let wanted: Vec<SocketAddr> = want.listen.iter().map(canonical).collect();
    let mut extra: Vec<String> = Vec::new();
    for a in listening.iter().map(canonical) {
        if wanted.iter().any(|w| w.port() == a.port()) && !wanted.contains(&a) && !extra.contains(&a.to_string()) {
            extra.push(a.to_string());
        }
    }
    if extra.is_empty() {
        return from_sshd;
    }
    let only = want.listen.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    Check::fail(
        ID,
        format!(
            "a socket listens on the ssh port at {} (wanted only {only}), whatever sshd -T says: sshd started from a socket unit (ssh.socket)?",
            extra.join(", ")
        ),
        "if `systemctl is-enabled ssh.socket` says enabled, the socket unit, not sshd, chooses the addresses: `systemctl disable --now ssh.socket && systemctl enable --now ssh.service` (sshd then binds its ListenAddress); otherwise find what listens there with `ss -ltnp`",
    )
}

/// A setting that must be `no`; the first of `keys` that sshd prints is
/// read (older OpenSSH names kbdinteractive `challengeresponse`).
fn must_be_no(eff: &Effective, id: CheckId, keys: &[&str], what: &str) -> Check {
    let Some((key, value)) = keys.iter().find_map(|k| eff.one(k).map(|v| (*k, v))) else {
        return Check::unknown(id, format!("sshd -T does not print {}", keys[0]), "look at `sshd -T`");
    };
    if value == "no" {
        Check::ok(id, format!("sshd refuses {what} ({key} no)"))
    } else {
        Check::fail(id, format!("sshd allows {what}: {key} is {}", quote(value)), format!("set `{key} no`: {DROP_IN}"))
    }
}

fn allow_users(eff: &Effective, want: &Expect) -> Check {
    const ID: CheckId = CheckId::SshdAllowUsers;
    let got = eff.all("allowusers");
    let fix = format!("set `AllowUsers {}` and nothing else: {DROP_IN}", want.user);
    match got {
        [only] if *only == want.user => Check::ok(ID, format!("sshd lets only {} log in", want.user)),
        [] => Check::fail(ID, "sshd lets every user log in (no AllowUsers)", fix),
        _ => Check::fail(
            ID,
            format!(
                "sshd's AllowUsers is {}, not exactly {}",
                got.iter().map(|u| quote(u)).collect::<Vec<_>>().join(" "),
                want.user
            ),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testutil::fixture;
    use crate::doctor::Status;
    use proptest::prelude::*;

    fn want() -> Expect {
        Expect { listen: vec!["10.77.0.2:22".parse().unwrap()], user: "zoffsite".into() }
    }

    fn statuses(text: &str) -> Vec<Status> {
        check(text, &want()).iter().map(Check::status).collect()
    }

    #[test]
    fn the_box_drop_in_passes_every_check() {
        // Real `sshd -T` output (testdata/doctor/capture.sh).
        let c = check(&fixture("sshd-T-box.txt"), &want());
        assert!(c.iter().all(|c| c.status() == Status::Ok), "{c:#?}");
        assert_eq!(c[0].summary(), "sshd listens only on 10.77.0.2:22");
    }

    #[test]
    fn debians_defaults_fail_every_check() {
        let c = check(&fixture("sshd-T-default.txt"), &want());
        assert!(c.iter().all(|c| c.status() == Status::Fail), "{c:#?}");
        assert!(c[0].summary().contains("[::]:22, 0.0.0.0:22"), "{:?}", c[0]);
        assert!(c[3].summary().contains("\"without-password\""), "{:?}", c[3]);
        assert!(c[4].summary().contains("no AllowUsers"), "{:?}", c[4]);
        assert!(c.iter().all(|c| c.fix().is_some_and(|f| f.contains("box apply"))));
    }

    fn edited(from: &str, to: &str) -> String {
        let f = fixture("sshd-T-box.txt");
        assert!(f.contains(from), "{from}");
        f.replacen(from, to, 1)
    }

    #[test]
    fn each_setting_fails_on_its_own() {
        let s = |from, to| statuses(&edited(from, to));
        let ok = Status::Ok;
        let fail = Status::Fail;
        assert_eq!(s("passwordauthentication no", "passwordauthentication yes"), [ok, fail, ok, ok, ok]);
        assert_eq!(s("kbdinteractiveauthentication no", "kbdinteractiveauthentication yes"), [ok, ok, fail, ok, ok]);
        assert_eq!(s("permitrootlogin no", "permitrootlogin forced-commands-only"), [ok, ok, ok, fail, ok]);
        assert_eq!(s("allowusers zoffsite", "allowusers zoffsite\nallowusers eve"), [ok, ok, ok, ok, fail]);
        assert_eq!(s("allowusers zoffsite", "allowusers zoffsite@10.77.0.1"), [ok, ok, ok, ok, fail]);
        assert_eq!(
            s("listenaddress 10.77.0.2:22", "listenaddress 10.77.0.2:22\nlistenaddress 192.0.2.2:22"),
            [fail, ok, ok, ok, ok]
        );
        assert_eq!(s("listenaddress 10.77.0.2:22", "listenaddress 10.77.0.2:2222")[0], fail, "another port");
        // Old OpenSSH: challengeresponseauthentication stands for kbdinteractive.
        assert_eq!(s("kbdinteractiveauthentication no", "challengeresponseauthentication no"), [ok, ok, ok, ok, ok]);
    }

    #[test]
    fn a_match_block_for_the_source_is_judged_too() {
        let plain = fixture("sshd-T-box.txt");
        let matched = edited("passwordauthentication no", "passwordauthentication yes");
        let c = check_both(&plain, Some(&matched), &want());
        assert_eq!(
            c.iter().map(Check::status).collect::<Vec<_>>(),
            [Status::Ok, Status::Fail, Status::Ok, Status::Ok, Status::Ok]
        );
        assert!(c[1].summary().starts_with("for the source's connection: "), "{:?}", c[1]);
        assert_eq!(check_both(&plain, None, &want()), check(&plain, &want()));
        assert_eq!(check_both(&matched, Some(&plain), &want())[1].status(), Status::Fail, "the worse of the two");
        // The drop-in's `AllowUsers USER@SOURCE`, wanted as such.
        let at = Expect { user: "zoffsite@10.77.0.1".into(), ..want() };
        let drop_in = edited("allowusers zoffsite", "allowusers zoffsite@10.77.0.1");
        assert_eq!(check(&drop_in, &at)[4].status(), Status::Ok);
        assert_eq!(check(&plain, &at)[4].status(), Status::Fail, "from any address is not what was installed");
    }

    #[test]
    fn a_missing_tunnel_address_warns() {
        let two = Expect {
            listen: vec!["10.77.0.2:22".parse().unwrap(), "[fd00::2]:22".parse().unwrap()],
            user: "zoffsite".into(),
        };
        let c = check(&fixture("sshd-T-box.txt"), &two);
        assert_eq!(c[0].status(), Status::Warn, "{:?}", c[0]);
    }

    #[test]
    fn strange_output_is_unknown() {
        let unknown = [Status::Unknown; 5];
        assert_eq!(statuses(""), unknown);
        assert_eq!(statuses("PasswordAuthentication no\n"), unknown, "not lower case: not sshd -T");
        assert_eq!(
            statuses(&edited("passwordauthentication no", "passwordauthentication no\npasswordauthentication yes")),
            unknown,
            "a setting read here twice"
        );
        assert_eq!(
            statuses(&edited("listenaddress 10.77.0.2:22", "listenaddress 10.77.0.2:22 rdomain x"))[0],
            Status::Unknown
        );
        assert_eq!(statuses(&edited("listenaddress 10.77.0.2:22\n", ""))[0], Status::Unknown);
        assert_eq!(statuses(&edited("permitrootlogin no\n", ""))[3], Status::Unknown);
    }

    // The fixtures are as a little-endian machine prints them.
    #[cfg(target_endian = "little")]
    #[test]
    fn a_socket_listening_on_every_address_fails_whatever_sshd_t_says() {
        use crate::doctor::sockets::parse_proc_net_tcp;
        let table = |v4: &str, v6: &str| {
            let mut l = parse_proc_net_tcp(&fixture(v4)).unwrap();
            l.extend(parse_proc_net_tcp(&fixture(v6)).unwrap());
            Some(Ok(l))
        };
        let from_sshd = check(&fixture("sshd-T-box.txt"), &want()).remove(0);
        assert_eq!(from_sshd.status(), Status::Ok);
        let good = with_sockets(from_sshd.clone(), table("proc-net-tcp-box.txt", "proc-net-tcp6-box.txt"), &want());
        assert_eq!(good, from_sshd, "only the tunnel address on port 22 (53 and 631 are other ports)");
        // Ubuntu's ssh.socket: sshd -T shows the tunnel address only.
        let c = with_sockets(from_sshd.clone(), table("proc-net-tcp-socket.txt", "proc-net-tcp6-socket.txt"), &want());
        assert_eq!(c.status(), Status::Fail, "{c:?}");
        assert!(c.summary().contains("0.0.0.0:22, [::]:22") && c.fix().unwrap().contains("ssh.socket"), "{c:?}");
        // An IPv4-mapped tunnel address is the tunnel address.
        let mapped = Some(Ok(vec!["[::ffff:10.77.0.2]:22".parse().unwrap()]));
        assert_eq!(with_sockets(from_sshd.clone(), mapped, &want()), from_sshd);
        // Not looked at: sshd -T's verdict; unreadable: unknown, unless
        // sshd -T already failed it.
        assert_eq!(with_sockets(from_sshd.clone(), None, &want()), from_sshd);
        assert_eq!(with_sockets(from_sshd, Some(Err("x".into())), &want()).status(), Status::Unknown);
        let failed = check(&fixture("sshd-T-default.txt"), &want()).remove(0);
        assert_eq!(with_sockets(failed.clone(), Some(Err("x".into())), &want()), failed);
    }

    proptest! {
        #[test]
        fn random_input_never_panics_and_never_passes_everything(s in "\\PC{0,300}") {
            let c = check(&s, &want());
            prop_assert_eq!(c.len(), 5);
            prop_assert!(c.iter().any(|c| c.status() != Status::Ok));
        }

        #[test]
        fn random_lines_never_panic(lines in proptest::collection::vec("[a-z]{1,12} [ -~]{0,20}", 0..30)) {
            let _ = check(&lines.join("\n"), &want());
        }
    }
}
