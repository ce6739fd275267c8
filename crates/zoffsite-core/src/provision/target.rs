//! The source's `[[target]]` for a box `zoffsite box new` made: appended
//! to the user's configuration text.
//!
//! # Invariants
//!
//! - **Every byte of the user's file is kept.** The new table is appended
//!   as text; the file is never parsed and serialized again, which would
//!   drop its comments, order and layout.
//! - **The result is a valid configuration** ([`Config::parse`] accepts
//!   it, and its last target is the new one), or nothing is returned. A
//!   file with only `[source]` is accepted as the text to append to: the
//!   first box is how most users get their first target.
//! - **A name is never taken twice.** A target of the same name already in
//!   the file is refused (the user's target is not replaced, and the new
//!   box's files are not pointed at by an old name).
//! - **Every value is quoted by the TOML encoder** (paths may hold any
//!   character); comments hold only validated names, so no input can add
//!   a line or a key to the file.

use super::Inputs;
use crate::config::{Config, ConfigError};

/// `connect_timeout` of a new target: the tunnel is the only way in, and
/// a box that does not answer within this is away.
pub const CONNECT_TIMEOUT: &str = "15s";
/// `max_age` of a new target: a day and two hours, for the default daily
/// backup (a late timer, `RandomizedDelaySec`, a slow transfer).
pub const MAX_AGE: &str = "26h";

/// The new target's table, appended to the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The whole new text: the old text, byte for byte, then the table.
    pub text: String,
    /// The text appended (what the diff shows, each line with `+`).
    pub added: String,
    /// The new text, parsed.
    pub config: Config,
}

impl Appended {
    /// The change as the lines of a diff: only additions, each `+LINE`.
    pub fn diff_lines(&self) -> Vec<String> {
        self.added.lines().map(|l| format!("+{l}")).collect()
    }
}

/// Why the target cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("the config already has a target named {0:?}: choose another box name, or remove that target first (and its box's files)")]
    Exists(String),
    #[error("the config is not valid TOML: {0}")]
    Syntax(String),
    #[error("with the new target, the config would not be valid ({0}): fix the config first")]
    Invalid(ConfigError),
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The `[[target]]` table for the box of `i`, whose key and pinned host key
/// are at `identity_file` and `known_hosts` (absolute paths).
pub fn table(i: &Inputs, identity_file: &str, known_hosts: &str) -> String {
    format!(
        "# Box {name}, added by `zoffsite box new` (its tunnel: {tunnel}).
[[target]]
name = {name_q}
host = {host_q}  # the box's address inside the tunnel
port = {port}
user = {user_q}
identity_file = {identity_q}
known_hosts = {known_q}  # the box's host key, pinned when it was made
connect_timeout = {timeout_q}
max_age = {max_age_q}  # `status` fails past this
",
        name = i.name,
        tunnel = i.tunnel,
        name_q = quoted(i.name.as_str()),
        host_q = quoted(&i.tunnel.box_addr().to_string()),
        port = i.ssh_port,
        user_q = quoted(i.user.as_str()),
        identity_q = quoted(identity_file),
        known_q = quoted(known_hosts),
        timeout_q = quoted(CONNECT_TIMEOUT),
        max_age_q = quoted(MAX_AGE),
    )
}

/// The names of the targets already in `text`, read loosely (the file may
/// not be a valid configuration yet: it may have no target at all).
fn target_names(text: &str) -> Result<Vec<String>, TargetError> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| TargetError::Syntax(e.message().to_owned()))?;
    let names = match doc.get("target") {
        Some(toml::Value::Array(ts)) => ts.iter().filter_map(|t| t.get("name")?.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    Ok(names)
}

/// The config `text` with the target for the box of `i` appended (see the
/// module docs), or why not.
pub fn append(text: &str, i: &Inputs, identity_file: &str, known_hosts: &str) -> Result<Appended, TargetError> {
    if target_names(text)?.iter().any(|n| n == i.name.as_str()) {
        return Err(TargetError::Exists(i.name.to_string()));
    }
    let mut added = String::new();
    if !text.is_empty() && !text.ends_with('\n') {
        added.push('\n');
    }
    if !text.is_empty() {
        added.push('\n');
    }
    added.push_str(&table(i, identity_file, known_hosts));
    let new = format!("{text}{added}");
    let config = Config::parse(&new).map_err(TargetError::Invalid)?;
    // Appended text can only add to the last `[[target]]` table; this
    // holds unless the file ends inside something the table joins.
    if config.targets.last().is_none_or(|t| t.name != i.name.as_str()) {
        return Err(TargetError::Syntax("the appended table did not become the config's last target".into()));
    }
    // The added text starts with the newline(s) that end the user's file;
    // the diff shows the table.
    let added = added.trim_start_matches('\n').to_owned();
    Ok(Appended { text: new, added, config })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::provision::tests::example;

    const SOURCE_ONLY: &str = "# my backups\n[source]\ndatasets = [\"tank/data\"]   # all of it\n\n# the end\n";

    fn appended(text: &str) -> Appended {
        append(text, &example(), "/etc/zoffsite/boxes/friend/id_ed25519", "/etc/zoffsite/boxes/friend/known_hosts")
            .unwrap()
    }

    #[test]
    fn every_byte_and_comment_of_the_file_is_kept_and_the_result_parses() {
        let a = appended(SOURCE_ONLY);
        assert!(a.text.starts_with(SOURCE_ONLY), "{}", a.text);
        assert_eq!(a.text, format!("{SOURCE_ONLY}\n{}", a.added));
        assert_eq!(Config::parse(&a.text).unwrap(), a.config);
        assert_eq!(a.config.source.datasets[0].as_str(), "tank/data");
        assert!(a.diff_lines().iter().all(|l| l.starts_with('+')));
        assert!(a.diff_lines().contains(&"+[[target]]".to_owned()), "{:?}", a.diff_lines());
        // No newline at the end of the user's file: one is added first.
        let a = appended(SOURCE_ONLY.trim_end());
        assert!(a.text.starts_with(SOURCE_ONLY.trim_end()) && a.text.contains("# the end\n\n# Box friend"));
    }

    #[test]
    fn the_target_points_at_the_boxs_tunnel_address_and_dirs_files() {
        let a = appended(SOURCE_ONLY);
        let t = &a.config.targets[0];
        assert_eq!(
            (t.name.as_str(), t.host.as_str(), t.port, t.user.as_str()),
            ("friend", "10.77.0.2", 22, "zoffsite")
        );
        assert_eq!(t.identity_file, Path::new("/etc/zoffsite/boxes/friend/id_ed25519"));
        assert_eq!(t.known_hosts, Path::new("/etc/zoffsite/boxes/friend/known_hosts"));
        assert_eq!((t.connect_timeout, t.max_age), (Duration::from_secs(15), Duration::from_secs(26 * 3600)));
        insta::assert_snapshot!("target_table", a.added);
    }

    #[test]
    fn a_second_box_is_appended_after_the_first() {
        let first = appended(SOURCE_ONLY);
        let mut i = example();
        i.name = crate::provision::values::BoxName::new("parents").unwrap();
        i.ssh_port = crate::provision::values::Port::new(2222).unwrap();
        let second = append(&first.text, &i, "/k/id", "/k/known_hosts").unwrap();
        assert!(second.text.starts_with(&first.text));
        let names: Vec<_> = second.config.targets.iter().map(|t| (t.name.as_str(), t.port)).collect();
        assert_eq!(names, [("friend", 22), ("parents", 2222)]);
    }

    #[test]
    fn a_notify_section_at_the_end_is_kept_and_the_table_still_becomes_a_target() {
        let with_notify = format!(
            "{SOURCE_ONLY}\n[notify]\non_failure = [\"/usr/local/bin/alert-owner\"]\nping_url = \"https://hc-ping.com/k\"\n"
        );
        let a = appended(&with_notify);
        assert!(a.text.starts_with(&with_notify));
        assert_eq!(a.config.targets.len(), 1);
        assert_eq!(a.config.notify.on_failure.as_ref().unwrap().as_slice(), ["/usr/local/bin/alert-owner"]);
        assert_eq!(a.config.notify.ping_url.as_ref().unwrap().redacted(), "https://hc-ping.com");
    }

    #[test]
    fn a_target_of_the_same_name_is_refused() {
        let a = appended(SOURCE_ONLY);
        let e = append(&a.text, &example(), "/x/id", "/x/kh").unwrap_err();
        assert!(matches!(&e, TargetError::Exists(n) if n == "friend"), "{e}");
        assert!(e.to_string().contains("already has a target named \"friend\""), "{e}");
    }

    #[test]
    fn paths_are_quoted_so_no_character_adds_a_line() {
        let odd = "/tmp/a \"b\"\n[[target]]\nname = \"evil\\";
        let a = append(SOURCE_ONLY, &example(), odd, "/k/known_hosts").unwrap();
        assert_eq!(a.config.targets.len(), 1);
        assert_eq!(a.config.targets[0].identity_file, Path::new(odd));
    }

    #[test]
    fn a_broken_or_incomplete_config_is_refused_with_the_reason() {
        let e = append("[source\n", &example(), "/i", "/k").unwrap_err();
        assert!(matches!(e, TargetError::Syntax(_)), "{e}");
        let e = append("[source]\ndatasets = []\n", &example(), "/i", "/k").unwrap_err();
        assert!(e.to_string().contains("source.datasets"), "{e}");
        let e = append("", &example(), "/i", "/k").unwrap_err();
        assert!(e.to_string().contains("source"), "{e}");
        let e = append(SOURCE_ONLY, &example(), "relative/id", "/k").unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        // `target` used as something else than a list of tables.
        let e = append(&format!("target = 1\n{SOURCE_ONLY}"), &example(), "/i", "/k").unwrap_err();
        assert!(matches!(e, TargetError::Invalid(_) | TargetError::Syntax(_)), "{e}");
    }
}
