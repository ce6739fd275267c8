//! Exit codes (documented in docs/exit-codes.md; keep the two in step).

/// The outcome of a command, from best to worst for precedence: when
/// several apply, the numerically largest severity wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Everything asked for was done and verified.
    Ok,
    /// `status`: some dataset's newest snapshot on a target is older than
    /// the target's `max_age`, or the target holds none of it.
    Stale,
    /// Some datasets were not backed up (refused, diverged, failed); the
    /// others were.
    Partial,
    /// A target could not be reached or verified (network, host key, auth,
    /// protocol); other targets were still served.
    Target,
    /// Something unexpected failed locally (e.g. `zfs list` itself).
    Error,
    /// Another run holds this config's lock; nothing was done.
    Busy,
    /// Bad command line or configuration; nothing was done.
    Usage,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::Partial => 3,
            Exit::Target => 4,
            Exit::Busy => 5,
            Exit::Stale => 6,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_precedence_match_the_docs() {
        let doc = include_str!("../../../docs/exit-codes.md");
        for (e, code) in [
            (Exit::Ok, 0),
            (Exit::Error, 1),
            (Exit::Usage, 2),
            (Exit::Partial, 3),
            (Exit::Target, 4),
            (Exit::Busy, 5),
            (Exit::Stale, 6),
        ] {
            assert_eq!(e.code(), code);
            assert!(doc.contains(&format!("| {code} |")), "docs/exit-codes.md lacks code {code}");
        }
        assert!(Exit::Usage > Exit::Busy && Exit::Busy > Exit::Error && Exit::Error > Exit::Target);
        assert!(Exit::Target > Exit::Partial && Exit::Partial > Exit::Stale && Exit::Stale > Exit::Ok);
    }
}
