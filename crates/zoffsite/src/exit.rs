//! Exit codes (documented in docs/exit-codes.md; keep the two in step).
//!
//! The outcomes and their order are core's [`Severity`]; this file owns
//! only the numbers a process exits with.

pub(crate) use zoffsite_core::report::Severity as Exit;

/// The process exit code of an outcome.
pub(crate) trait Code {
    fn code(self) -> u8;
}

impl Code for Exit {
    fn code(self) -> u8 {
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
        // The precedence line of the docs, worst first, is core's order.
        let order: Vec<u8> = [Exit::Usage, Exit::Busy, Exit::Error, Exit::Target, Exit::Partial, Exit::Stale]
            .iter()
            .map(|e| e.code())
            .collect();
        let line = order.iter().map(u8::to_string).collect::<Vec<_>>().join(", then ");
        assert!(doc.contains(&line), "docs/exit-codes.md's precedence line is not {line}");
        assert!(order.windows(2).all(|w| w[0] != w[1]));
        assert!(Exit::Usage > Exit::Busy && Exit::Busy > Exit::Error && Exit::Error > Exit::Target);
        assert!(Exit::Target > Exit::Partial && Exit::Partial > Exit::Stale && Exit::Stale > Exit::Ok);
    }
}
