//! OpenZFS on either end: the version (`zfs version`), and on the box the
//! root's delegation (`zfs allow ROOT`), its limits, and the pool's health
//! and last scrub.
//!
//! The rules are owned elsewhere and only reused here: the versions and the
//! version parser by [`crate::boxinit`] (what `box init` requires), the
//! delegated set and its comparison by [`crate::boxinit::check_delegation`],
//! pool health and scrub age by [`crate::verify::check_pool`] (what
//! `verify` reports to the source).

use crate::boxinit::{self, LimitProp, UserName, Version, MIN_VERSION, PERMISSIONS, SAFE_VERSION};
use crate::names::Dataset;
use crate::verify;

use super::{quote, Check, CheckId, Side, Status};

/// The OpenZFS version from `zfs version` output (stdout and stderr). The
/// older of the tools and the kernel module counts. On the box, older than
/// [`MIN_VERSION`] fails (`serve` needs `receive:append`); on both ends older
/// than [`SAFE_VERSION`] warns (raw receive bugs, which a restore on the
/// source meets too).
pub fn check_version(side: Side, zfs_version: &str) -> Check {
    let id = match side {
        Side::Box => CheckId::ZfsVersion,
        Side::Source => CheckId::SourceZfsVersion,
    };
    let v = boxinit::parse_zfs_version(zfs_version);
    let (Some(tools), Some(kmod)) = (v.userland, v.kmod) else {
        let show = |x: Option<Version>| x.map_or("unknown".to_owned(), |v| v.to_string());
        return Check::unknown(
            id,
            format!("`zfs version` shows tools {}, kernel module {}", show(v.userland), show(v.kmod)),
            "run `zfs version`; if the module line is missing, load it (`modprobe zfs`)",
        );
    };
    let oldest = tools.min(kmod);
    let found = format!("OpenZFS {tools} (kernel module {kmod})");
    let upgrade = "upgrade the zfs tools and kernel module (Debian: bookworm-backports; Arch: the zfs-dkms package)";
    if side == Side::Box && oldest < MIN_VERSION {
        return Check::fail(id, format!("{found}: {MIN_VERSION} or newer is needed for `receive:append`"), upgrade);
    }
    if oldest < SAFE_VERSION {
        return Check::warn(
            id,
            format!("{found}: raw receives have bugs fixed in {SAFE_VERSION} (openzfs#12014, PR #17340)"),
            upgrade,
        );
    }
    Check::ok(id, found)
}

/// The box root's delegation, from `zfs allow ROOT` (of its parent when the
/// root does not exist): exactly [`PERMISSIONS`] for the box user, and
/// nothing else reaching the user there.
pub fn check_delegation(user: &UserName, root: &Dataset, root_exists: bool, zfs_allow: &str) -> Check {
    const ID: CheckId = CheckId::ZfsDelegation;
    let fix = format!(
        "run `zoffsite box init --user {user} --root {root} ...` again: it grants exactly {} and removes the rest",
        PERMISSIONS.join(",")
    );
    if zfs_allow.len() > super::MAX_INPUT {
        return super::too_large(ID, "zfs allow", zfs_allow.len());
    }
    let grants = match boxinit::parse_allow(zfs_allow) {
        Ok(g) => g,
        Err(e) => {
            return Check::unknown(
                ID,
                format!("cannot read `zfs allow {root}`: {}", super::one_line(&e)),
                format!("look at `zfs allow {root}` by hand"),
            )
        }
    };
    let d = boxinit::check_delegation(user, root, root_exists, &grants);
    if d.is_exact() {
        return Check::ok(ID, format!("{user} holds exactly {} on {root}", PERMISSIONS.join(",")));
    }
    if !d.extra.is_empty() {
        return Check::fail(
            ID,
            format!("{user} also holds {} on {root}: the box is no longer append-only", d.extra.join(",")),
            format!("`zfs unallow -u {user} {} {root}`, or {fix}", d.extra.join(",")),
        );
    }
    if let Some(p) = d.problems.first() {
        // Each problem names its own fix.
        return Check::fail(ID, p, fix);
    }
    if !d.missing.is_empty() {
        return Check::fail(
            ID,
            format!("{user} lacks {} on {root}: backups to this box fail", d.missing.join(",")),
            fix,
        );
    }
    Check::warn(
        ID,
        d.warnings.join("; "),
        "remove the group's permissions, or make sure the box user is not in the group",
    )
}

/// `filesystem_limit` and `snapshot_limit` on the root, as `zfs get -Hp -o
/// value` prints them: a number, or `none`.
pub fn check_limits(root: &Dataset, filesystem_limit: &str, snapshot_limit: &str) -> Check {
    const ID: CheckId = CheckId::ZfsLimits;
    let mut unset = Vec::new();
    let mut set = Vec::new();
    for (prop, value) in [(LimitProp::FilesystemLimit, filesystem_limit), (LimitProp::SnapshotLimit, snapshot_limit)] {
        let value = value.strip_suffix('\n').unwrap_or(value);
        match value.parse::<u64>() {
            // u64::MAX is how ZFS stores "none".
            Ok(u64::MAX) => unset.push(prop.name()),
            Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => set.push(format!("{}={n}", prop.name())),
            _ if value == "none" => unset.push(prop.name()),
            _ => {
                return Check::unknown(
                    ID,
                    format!("{} on {root} is {}, neither a number nor none", prop.name(), quote(value)),
                    format!("look at `zfs get {} {root}`", prop.name()),
                )
            }
        }
    }
    if unset.is_empty() {
        Check::ok(ID, format!("{} on {root}", set.join(", ")))
    } else {
        Check::fail(
            ID,
            format!(
                "no {} on {root}: a compromised source can flood the box with datasets or snapshots",
                unset.join(" or ")
            ),
            format!("run `zoffsite box init` again (it sets both), or `zfs set {}=N {root}`", unset[0]),
        )
    }
}

/// The box's pool health (`zpool list -Ho health POOL`).
pub fn check_pool_health(pool: &str, health: &str) -> Check {
    const ID: CheckId = CheckId::PoolHealth;
    let health = health.strip_suffix('\n').unwrap_or(health);
    let pool_q = super::one_line(pool);
    if health.is_empty() || !health.bytes().all(|b| b.is_ascii_uppercase()) {
        return Check::unknown(
            ID,
            format!("pool {pool_q} reports health {}", quote(health)),
            format!("look at `zpool status {pool_q}`"),
        );
    }
    if verify::check_pool(pool, health, None, 0).problems.is_empty() {
        Check::ok(ID, format!("pool {pool_q} is {health}"))
    } else {
        Check::fail(
            ID,
            format!("pool {pool_q} is {health}"),
            format!("look at `zpool status -x {pool_q}` and replace or reattach the failed disk"),
        )
    }
}

/// The box's last finished scrub (Unix seconds, from
/// [`crate::parse::last_scrub`]) at `now`.
pub fn check_pool_scrub(pool: &str, last_scrub: Option<i64>, now: i64) -> Check {
    const ID: CheckId = CheckId::PoolScrub;
    let pool_q = super::one_line(pool);
    let fix = format!("scrub it (`zpool scrub {pool_q}`) and schedule one monthly (`systemctl enable --now zfs-scrub-monthly@{pool_q}.timer`)");
    match last_scrub {
        Some(t) if t > now + 86_400 => Check::unknown(
            ID,
            format!("pool {pool_q}'s last scrub is dated in the future: is the clock right?"),
            "check the box's clock (`timedatectl`)",
        ),
        _ if !verify::check_pool(pool, "ONLINE", last_scrub, now).warnings.is_empty() => Check::warn(
            ID,
            match last_scrub {
                None => format!("pool {pool_q} has never finished a scrub"),
                Some(t) => format!(
                    "pool {pool_q} was last scrubbed {} ago (more than {} days)",
                    crate::human::secs(now - t),
                    verify::SCRUB_MAX_AGE_DAYS
                ),
            },
            fix,
        ),
        Some(t) => Check::ok(ID, format!("pool {pool_q} was scrubbed {} ago", crate::human::secs(now - t))),
        None => Check::with_status(ID, Status::Unknown, "no scrub date", fix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> String {
        format!("zfs-{s}-1\nzfs-kmod-{s}-1\n")
    }

    #[test]
    fn versions_warn_below_2_3_3_and_the_box_fails_below_2_3_2() {
        assert_eq!(check_version(Side::Box, &v("2.3.3")).status(), Status::Ok);
        assert_eq!(check_version(Side::Box, &v("2.4.0")).status(), Status::Ok);
        assert_eq!(check_version(Side::Box, &v("2.3.2")).status(), Status::Warn);
        assert_eq!(check_version(Side::Box, &v("2.2.7")).status(), Status::Fail);
        assert_eq!(check_version(Side::Source, &v("2.2.7")).status(), Status::Warn);
        assert_eq!(check_version(Side::Source, &v("2.3.3")).id(), CheckId::SourceZfsVersion);
        let mixed = "zfs-2.3.4-1\nzfs-kmod-2.3.2-1\n";
        assert_eq!(check_version(Side::Box, mixed).status(), Status::Warn, "the older of the two counts");
        assert_eq!(check_version(Side::Box, "zfs-2.3.4-1\n").status(), Status::Unknown, "module not loaded");
        assert_eq!(check_version(Side::Box, "").status(), Status::Unknown);
    }

    fn allow(user_perms: &str) -> String {
        format!("---- Permissions on offsite/home -----------------------------------\nLocal+Descendent permissions:\n\tuser zoffsite {user_perms}\n")
    }

    #[test]
    fn the_delegation_must_be_exactly_the_set() {
        let user = UserName::new("zoffsite").unwrap();
        let root = Dataset::new("offsite/home").unwrap();
        let c = |text: &str| check_delegation(&user, &root, true, text);
        assert_eq!(c(&allow("create,mount,receive:append,send,userprop")).status(), Status::Ok);
        let wide = c(&allow("create,destroy,mount,receive:append,send,userprop"));
        assert_eq!(wide.status(), Status::Fail);
        assert!(wide.summary().contains("also holds destroy"), "{wide:?}");
        let narrow = c(&allow("create,mount,send,userprop"));
        assert_eq!(narrow.status(), Status::Fail);
        assert!(narrow.summary().contains("lacks receive:append"), "{narrow:?}");
        let everyone = allow("create,mount,receive:append,send,userprop") + "\teveryone destroy\n";
        assert!(c(&everyone).summary().contains("everyone holds destroy"));
        let group = allow("create,mount,receive:append,send,userprop") + "\tgroup staff snapshot\n";
        assert_eq!(c(&group).status(), Status::Warn);
        assert_eq!(c("").status(), Status::Fail, "nothing delegated");
        assert_eq!(c("garbage\n").status(), Status::Unknown);
    }

    #[test]
    fn both_limits_must_be_set() {
        let root = Dataset::new("offsite/home").unwrap();
        assert_eq!(check_limits(&root, "1000\n", "100000\n").status(), Status::Ok);
        let none = check_limits(&root, "none", "100000");
        assert_eq!(none.status(), Status::Fail);
        assert!(none.summary().contains("no filesystem_limit"), "{none:?}");
        assert_eq!(check_limits(&root, "1000", &u64::MAX.to_string()).status(), Status::Fail);
        for bad in ["", "-", "1k", "+5", " 5"] {
            assert_eq!(check_limits(&root, bad, "5").status(), Status::Unknown, "{bad:?}");
        }
    }

    #[test]
    fn pool_health_and_scrub_age() {
        assert_eq!(check_pool_health("off", "ONLINE\n").status(), Status::Ok);
        assert_eq!(check_pool_health("off", "DEGRADED").status(), Status::Fail);
        assert_eq!(check_pool_health("off", "online").status(), Status::Unknown);
        assert_eq!(check_pool_health("off", "").status(), Status::Unknown);
        let now = 100 * 86_400;
        assert_eq!(check_pool_scrub("off", Some(now - 86_400), now).status(), Status::Ok);
        let old = check_pool_scrub("off", Some(now - 40 * 86_400), now);
        assert_eq!(old.status(), Status::Warn);
        assert!(old.summary().contains("scrubbed 40d ago"), "{old:?}");
        assert_eq!(check_pool_scrub("off", None, now).status(), Status::Warn);
        assert_eq!(check_pool_scrub("off", Some(now + 10 * 86_400), now).status(), Status::Unknown);
    }

    proptest! {
        #[test]
        fn random_input_never_panics_and_is_never_ok(s in "\\PC{0,200}", t in "\\PC{0,20}") {
            let user = UserName::new("zoffsite").unwrap();
            let root = Dataset::new("offsite/home").unwrap();
            prop_assert_ne!(check_version(Side::Box, &s).status(), Status::Ok);
            prop_assert_ne!(check_delegation(&user, &root, true, &s).status(), Status::Ok);
            let _ = check_limits(&root, &s, &t);
            let _ = check_pool_health(&s, &t);
        }
    }
}
