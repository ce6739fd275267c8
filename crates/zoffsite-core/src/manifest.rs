//! The properties manifest: the ZFS properties you set on your datasets
//! (mountpoint, compression, recordsize, quotas, your own user properties),
//! recorded where they travel encrypted and come back with a restore.
//!
//! Raw sends carry no properties unless `-p`/`-R`, which would put them on
//! the box in the clear, so zoffsite never uses those. Instead, before each
//! backup, `backup` writes `.zoffsite/properties.json` at the top of each
//! configured root dataset (when it is mounted, and only when the content
//! changed, so that a run with nothing new still takes no snapshot). It is
//! then in the snapshot, encrypted like every other file; `restore` reads
//! it from the restored snapshot and sets the properties again.
//!
//! Pure: building, rendering, parsing and deciding what to set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::Dataset;

/// Where the manifest lives, relative to the root dataset's mountpoint.
pub const MANIFEST_PATH: &str = ".zoffsite/properties.json";
/// Largest manifest read back.
pub const MAX_MANIFEST_LEN: usize = 4 << 20;

/// Properties that are not set again: the key's (a restore sets the key
/// itself), and zoffsite's own bookkeeping on the box.
const NOT_RESTORED: &[&str] =
    &["encryption", "keylocation", "keyformat", "pbkdf2iters", "pbkdf2salt", "zoffsite:keywrap", "zoffsite:received"];

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    /// By dataset path relative to the root (`""` for the root itself),
    /// the locally set properties.
    pub datasets: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the properties manifest is not valid: {0}")]
    Invalid(String),
}

/// Builds the manifest of `root` from `(dataset, property, value)` rows of
/// locally set properties (rows outside `root` are ignored).
pub fn build(root: &Dataset, rows: &[(Dataset, String, String)]) -> Manifest {
    let mut m = Manifest { version: 1, datasets: BTreeMap::new() };
    for (ds, prop, value) in rows {
        if !ds.is_within(root) || NOT_RESTORED.contains(&prop.as_str()) {
            continue;
        }
        let rel = ds.strip_root(root).map_or_else(String::new, |d| d.to_string());
        m.datasets.entry(rel).or_default().insert(prop.clone(), value.clone());
    }
    m
}

impl Manifest {
    /// The file's text: stable (sorted), so an unchanged manifest is
    /// byte-identical and rewrites nothing.
    pub fn render(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("serializes");
        s.push('\n');
        s
    }

    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        if m.version != 1 {
            return Err(ManifestError::Invalid(format!("version {} (this zoffsite reads 1)", m.version)));
        }
        for (rel, props) in &m.datasets {
            if !rel.is_empty() && Dataset::new(rel.as_str()).is_err() {
                return Err(ManifestError::Invalid(format!("dataset path {rel:?}")));
            }
            for (k, v) in props {
                let name_ok = !k.is_empty()
                    && k.len() <= 256
                    && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":_.-".contains(&b));
                if !name_ok || v.len() > 8192 || v.contains(['\n', '\0']) {
                    return Err(ManifestError::Invalid(format!("property {k:?} of {rel:?}")));
                }
            }
        }
        Ok(m)
    }

    /// What to set on each restored dataset: `restored` maps each path
    /// relative to the restored root to where it now is. `mountpoint` is
    /// set only when the tree is restored in place (elsewhere it would
    /// mount over the live data it was copied from).
    pub fn to_set(&self, restored: &[(String, Dataset)], in_place: bool) -> Vec<(Dataset, Vec<(String, String)>)> {
        restored
            .iter()
            .filter_map(|(rel, dest)| {
                let props: Vec<(String, String)> = self
                    .datasets
                    .get(rel)?
                    .iter()
                    .filter(|(k, _)| in_place || k.as_str() != "mountpoint")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (!props.is_empty()).then(|| (dest.clone(), props))
            })
            .collect()
    }
}

/// Rows of `zfs get -H -p -s local -o name,property,value all DS...`. A
/// value may contain tabs (user properties), so each line splits in three.
pub fn parse_local_properties(text: &str) -> Result<Vec<(Dataset, String, String)>, ManifestError> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    body.split('\n')
        .map(|line| {
            let mut it = line.splitn(3, '\t');
            match (it.next(), it.next(), it.next()) {
                (Some(n), Some(p), Some(v)) => {
                    let ds = Dataset::new(n).map_err(|e| ManifestError::Invalid(format!("{n:?}: {e}")))?;
                    Ok((ds, p.to_owned(), v.to_owned()))
                }
                _ => Err(ManifestError::Invalid(format!("line {line:?}"))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(s: &str) -> Dataset {
        Dataset::new(s).unwrap()
    }

    #[test]
    fn records_what_was_set_and_leaves_the_key_out() {
        let text =
            "tank/data\tmountpoint\t/srv/data\ntank/data\tkeylocation\tfile:///k\ntank/data\tcompression\tzstd\n\
                    tank/data/docs\trecordsize\t65536\ntank/data/docs\tzoffsite:backup\ton\ntank/other\tquota\t1\n\
                    tank/data\tuser:note\ta\tb\n";
        let rows = parse_local_properties(text).unwrap();
        let m = build(&ds("tank/data"), &rows);
        assert_eq!(m.datasets[""].get("mountpoint").map(String::as_str), Some("/srv/data"));
        assert_eq!(m.datasets[""].get("user:note").map(String::as_str), Some("a\tb"), "tabs in values survive");
        assert!(!m.datasets[""].contains_key("keylocation"));
        assert_eq!(m.datasets["docs"].len(), 2);
        assert!(!m.datasets.contains_key("../other") && m.datasets.len() == 2);
        let again = Manifest::parse(&m.render()).unwrap();
        assert_eq!(again, m);
        assert_eq!(again.render(), m.render(), "stable text: an unchanged manifest rewrites nothing");
    }

    #[test]
    fn what_is_set_where_and_mountpoint_only_in_place() {
        let rows = parse_local_properties("tank/data\tmountpoint\t/srv/data\ntank/data\tcompression\tzstd\n").unwrap();
        let m = build(&ds("tank/data"), &rows);
        let restored = vec![("".to_owned(), ds("tank/data")), ("docs".to_owned(), ds("tank/data/docs"))];
        let in_place = m.to_set(&restored, true);
        assert_eq!(in_place.len(), 1);
        assert_eq!(in_place[0].1.len(), 2);
        let beside = m.to_set(&[("".to_owned(), ds("tank/old"))], false);
        assert_eq!(beside, vec![(ds("tank/old"), vec![("compression".to_owned(), "zstd".to_owned())])]);
    }

    #[test]
    fn a_malformed_manifest_is_refused() {
        for bad in [
            "{}",
            r#"{"version":2,"datasets":{}}"#,
            r#"{"version":1,"datasets":{"../x":{}}}"#,
            r#"{"version":1,"datasets":{"":{"Bad Name":"x"}}}"#,
            r#"{"version":1,"datasets":{"":{"a":"x\ny"}}}"#,
            r#"{"version":1,"datasets":{},"extra":1}"#,
        ] {
            assert!(Manifest::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_local_properties("tank/data\tonly-two\n").is_err());
    }
}
