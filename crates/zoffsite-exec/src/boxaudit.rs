//! The box's posture on the source: one session per target that asks
//! `serve` for the box root's last audit ([`Session::audit`]) and judges it
//! ([`Posture::judge`]). For `doctor --source` ([`check`]); `status` asks
//! in the session it already has.

use zoffsite_core::config::Target;
use zoffsite_core::doctor::boxaudit::{Fetched, Posture};
use zoffsite_core::doctor::Check;

use crate::proto::client::Session;

/// What `target`'s box hands over; an unreachable box, or one that broke
/// the session, is [`Fetched::Unreachable`] with why.
pub fn fetch(target: &Target) -> Fetched {
    match Session::connect(target).and_then(Session::audit) {
        Ok(f) => f,
        Err(e) => Fetched::Unreachable(e.to_string()),
    }
}

/// `target`'s box posture at the source's `now` (Unix seconds).
pub fn posture(target: &Target, now: i64) -> Posture {
    Posture::judge(&fetch(target), now)
}

/// The `source.box-posture` check of `target`, for `doctor --source`.
pub fn check(target: &Target, now: i64) -> Check {
    posture(target, now).check(&target.name)
}
