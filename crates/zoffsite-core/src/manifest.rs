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
//! Version 2 also lists every dataset of the tree that run backed up
//! (`tree`). The list is written inside the root's data before the
//! snapshot is taken, so no later compromise can change what a snapshot's
//! own manifest says: `restore` brings back only the children it lists
//! (a compromised source can still create a child on the box under an old
//! run's snapshot name, but not make an old manifest list it).
//! A version 1 manifest has no list; `restore` then treats the children as
//! unverified (docs/restore.md).
//!
//! The manifest is trusted only as far as it can be: a restore sets the
//! data properties of [`DATA_PROPERTIES`] and user properties by default,
//! and the rest (mountpoint, sharing, setuid, quotas...) only when asked
//! (`restore --apply-properties all`).
//!
//! Pure: building, rendering, parsing and deciding what to set.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::names::Dataset;

/// Where the manifest lives, relative to the root dataset's mountpoint.
pub const MANIFEST_PATH: &str = ".zoffsite/properties.json";
/// Its directory and file name (`MANIFEST_PATH` split, for `openat`).
pub const MANIFEST_DIR: &str = ".zoffsite";
pub const MANIFEST_FILE: &str = "properties.json";
/// Largest manifest read back.
pub const MAX_MANIFEST_LEN: usize = 4 << 20;
/// The version `build` writes. `parse` reads this one and 1.
pub const VERSION: u32 = 2;

/// Properties that only shape how the data is stored and accessed, set
/// again by every restore. Anything else a manifest lists (mountpoint,
/// canmount, sharenfs, sharesmb, setuid, exec, devices, readonly, quotas and
/// reservations, dedup, copies, snapdir, zoned, SELinux contexts, ...)
/// decides where the data appears, who may reach it, or what it costs the
/// pool: a manifest written by a compromised source must not get those by
/// default. One list, here: restore and its docs follow it.
pub const DATA_PROPERTIES: &[&str] = &[
    "aclinherit",
    "aclmode",
    "acltype",
    "atime",
    "checksum",
    "compression",
    "dnodesize",
    "logbias",
    "primarycache",
    "recordsize",
    "redundant_metadata",
    "relatime",
    "secondarycache",
    "special_small_blocks",
    "sync",
    "xattr",
];

/// User-property namespaces that other tools act on at boot or mount time
/// (systemd's mount generator, boot menus): not data, so not set by
/// default even though they are user properties.
const ACTIVE_USER_NAMESPACES: &[&str] = &["org.openzfs.systemd:", "org.zfsbootmenu:", "com.ubuntu.zsys:"];

/// Whether a restore sets `prop` without `--apply-properties all`: a data
/// property, or a user property (`module:name`) outside the namespaces
/// other tools act on.
pub fn is_data_property(prop: &str) -> bool {
    if prop.contains(':') {
        return !ACTIVE_USER_NAMESPACES.iter().any(|ns| prop.starts_with(ns));
    }
    DATA_PROPERTIES.contains(&prop)
}

/// Which recorded properties a restore sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// [`is_data_property`] ones; the rest are reported, not set.
    Data,
    /// Everything recorded (still never the mountpoint beside live data).
    All,
}

/// What a restore does with the recorded properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToSet {
    /// Set on each dataset.
    pub set: Vec<(Dataset, Vec<(String, String)>)>,
    /// Recorded, but not data properties: left unset (named to the user,
    /// with `--apply-properties all`).
    pub held_back: Vec<(Dataset, Vec<(String, String)>)>,
}

/// Properties that are not set again: the key's (a restore sets the key
/// itself), and zoffsite's own bookkeeping on the box.
const NOT_RESTORED: &[&str] = &[
    "encryption",
    "keylocation",
    "keyformat",
    "pbkdf2iters",
    "pbkdf2salt",
    crate::boxside::KEYWRAP_PROPERTY,
    crate::boxside::RECEIVED_PROPERTY,
];

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    /// Version 2: every dataset of the tree the run backed up, relative to
    /// the root (`""` the root itself), sorted, each once. `None` only in
    /// a version 1 manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Vec<String>>,
    /// By dataset path relative to the root (`""` for the root itself),
    /// the locally set properties.
    pub datasets: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the properties manifest is not valid: {0}")]
    Invalid(String),
}

/// The manifest comes back from the box inside a restored snapshot, written
/// by a source that may have been compromised since: what an error quotes
/// of it is escaped and bounded (`protocol::sanitize`), so it can neither
/// forge lines in the output nor flood it.
fn invalid(why: impl AsRef<str>) -> ManifestError {
    ManifestError::Invalid(crate::protocol::sanitize(why.as_ref(), 300))
}

/// Builds the manifest of `root` from the datasets of its tree this run
/// backs up (`tree`; those outside `root` are ignored, `root` is always
/// in) and `(dataset, property, value)` rows of locally set properties
/// (rows outside `root` are ignored).
pub fn build(root: &Dataset, tree: &[Dataset], rows: &[(Dataset, String, String)]) -> Manifest {
    let rel = |ds: &Dataset| ds.strip_root(root).map_or_else(String::new, |d| d.to_string());
    let listed: BTreeSet<String> =
        std::iter::once(String::new()).chain(tree.iter().filter(|d| d.is_within(root)).map(rel)).collect();
    let mut m = Manifest { version: VERSION, tree: Some(listed.into_iter().collect()), datasets: BTreeMap::new() };
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
        let m: Manifest = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let rel_ok = |rel: &str| rel.is_empty() || Dataset::new(rel).is_ok();
        match (m.version, &m.tree) {
            (1, None) => {}
            (1, Some(_)) => return Err(invalid("a version 1 manifest with a tree")),
            (2, None) => return Err(invalid("a version 2 manifest without its tree")),
            (2, Some(tree)) => {
                // Sorted and each once: what `build` writes, and no
                // duplicate that one reader could count and another not.
                if tree.first().map(String::as_str) != Some("") || tree.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(invalid("its tree is not sorted, unique and rooted at \"\""));
                }
                if let Some(bad) = tree.iter().find(|r| !rel_ok(r)) {
                    return Err(invalid(format!("dataset path {bad:?} in its tree")));
                }
                if let Some(rel) = m.datasets.keys().find(|k| tree.binary_search(k).is_err()) {
                    return Err(invalid(format!("properties of {rel:?}, which its tree does not list")));
                }
            }
            (v, _) => {
                return Err(invalid(format!("version {v} (this zoffsite reads 1 and {VERSION})")));
            }
        }
        for (rel, props) in &m.datasets {
            if !rel_ok(rel) {
                return Err(invalid(format!("dataset path {rel:?}")));
            }
            for (k, v) in props {
                let name_ok = !k.is_empty()
                    && k.len() <= 256
                    && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":_.-".contains(&b));
                if !name_ok || v.len() > 8192 || v.contains(['\n', '\0']) {
                    return Err(invalid(format!("property {k:?} of {rel:?}")));
                }
            }
        }
        Ok(m)
    }

    /// The datasets of the tree when the manifest was written, relative to
    /// the root (`""` the root); `None` for a version 1 manifest.
    pub fn tree(&self) -> Option<BTreeSet<String>> {
        self.tree.as_ref().map(|t| t.iter().cloned().collect())
    }

    /// What to set on each restored dataset: `restored` maps each path
    /// relative to the restored root to where it now is. `mountpoint` is
    /// set only when the tree is restored in place (elsewhere it would
    /// mount over the live data it was copied from). With [`Apply::Data`],
    /// only [`is_data_property`] ones are set; the others are `held_back`.
    pub fn to_set(&self, restored: &[(String, Dataset)], in_place: bool, apply: Apply) -> ToSet {
        let mut out = ToSet::default();
        for (rel, dest) in restored {
            let Some(props) = self.datasets.get(rel) else { continue };
            let (mut set, mut held) = (Vec::new(), Vec::new());
            for (k, v) in props {
                if !in_place && k == "mountpoint" {
                    continue;
                }
                let pair = (k.clone(), v.clone());
                if apply == Apply::All || is_data_property(k) {
                    set.push(pair);
                } else {
                    held.push(pair);
                }
            }
            if !set.is_empty() {
                out.set.push((dest.clone(), set));
            }
            if !held.is_empty() {
                out.held_back.push((dest.clone(), held));
            }
        }
        out
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
                    let ds = Dataset::new(n).map_err(|e| invalid(format!("{n:?}: {e}")))?;
                    Ok((ds, p.to_owned(), v.to_owned()))
                }
                _ => Err(invalid(format!("line {line:?}"))),
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
    fn errors_quote_a_hostile_manifest_escaped_and_bounded() {
        // Found by the `manifest` fuzz target: serde's message quoted the
        // unknown field raw, and a long name whole.
        let e = Manifest::parse("{\"v\\rsion\":2}").unwrap_err().to_string();
        assert!(!e.contains('\r') && e.contains("\\r"), "{e:?}");
        let long = format!("{{\"version\":1,\"datasets\":{{\"\":{{\"user:{}\":\"x\"}}}}}}", ":".repeat(30_000));
        let e = Manifest::parse(&long).unwrap_err().to_string();
        assert!(e.len() < 1000, "{} bytes", e.len());
    }

    #[test]
    fn records_what_was_set_and_leaves_the_key_out() {
        let text =
            "tank/data\tmountpoint\t/srv/data\ntank/data\tkeylocation\tfile:///k\ntank/data\tcompression\tzstd\n\
                    tank/data/docs\trecordsize\t65536\ntank/data/docs\tzoffsite:backup\ton\ntank/other\tquota\t1\n\
                    tank/data\tuser:note\ta\tb\n";
        let rows = parse_local_properties(text).unwrap();
        let tree = [ds("tank/data"), ds("tank/data/docs"), ds("tank/data/docs/old"), ds("tank/other")];
        let m = build(&ds("tank/data"), &tree, &rows);
        assert_eq!(m.version, 2);
        assert_eq!(m.datasets[""].get("mountpoint").map(String::as_str), Some("/srv/data"));
        assert_eq!(m.datasets[""].get("user:note").map(String::as_str), Some("a\tb"), "tabs in values survive");
        assert!(!m.datasets[""].contains_key("keylocation"));
        assert_eq!(m.datasets["docs"].len(), 2);
        assert!(!m.datasets.contains_key("../other") && m.datasets.len() == 2);
        // Every dataset of the tree, with or without properties of its own.
        assert_eq!(m.tree.as_deref(), Some(&[String::new(), "docs".into(), "docs/old".into()][..]));
        let again = Manifest::parse(&m.render()).unwrap();
        assert_eq!(again, m);
        assert_eq!(again.render(), m.render(), "stable text: an unchanged manifest rewrites nothing");
        // The root is listed even when the tree given is empty.
        assert_eq!(build(&ds("tank/data"), &[], &[]).tree, Some(vec![String::new()]));
    }

    #[test]
    fn what_is_set_where_and_mountpoint_only_in_place() {
        let rows = parse_local_properties("tank/data\tmountpoint\t/srv/data\ntank/data\tcompression\tzstd\n").unwrap();
        let m = build(&ds("tank/data"), &[], &rows);
        let restored = vec![(String::new(), ds("tank/data")), ("docs".to_owned(), ds("tank/data/docs"))];
        let in_place = m.to_set(&restored, true, Apply::All);
        assert_eq!(in_place.set.len(), 1);
        assert_eq!(in_place.set[0].1.len(), 2);
        assert!(in_place.held_back.is_empty());
        let beside = m.to_set(&[(String::new(), ds("tank/old"))], false, Apply::All);
        assert_eq!(beside.set, vec![(ds("tank/old"), vec![("compression".to_owned(), "zstd".to_owned())])]);
    }

    #[test]
    fn by_default_only_data_properties_are_set_and_the_rest_is_named() {
        let rows = parse_local_properties(
            "tank/data\tmountpoint\t/etc/cron.d\ntank/data\tcompression\tzstd\ntank/data\tsharenfs\trw=*\n\
             tank/data\tsetuid\ton\ntank/data\tuser:note\tkept\ntank/data\torg.zfsbootmenu:commandline\tinit=/bin/sh\n\
             tank/data/docs\tquota\t1\ntank/data/docs\trecordsize\t65536\n",
        )
        .unwrap();
        let m = build(&ds("tank/data"), &[ds("tank/data/docs")], &rows);
        let restored = vec![(String::new(), ds("tank/data")), ("docs".to_owned(), ds("tank/data/docs"))];
        let got = m.to_set(&restored, true, Apply::Data);
        let names = |v: &[(Dataset, Vec<(String, String)>)]| -> Vec<(String, Vec<String>)> {
            v.iter().map(|(d, p)| (d.to_string(), p.iter().map(|(k, _)| k.clone()).collect())).collect()
        };
        assert_eq!(
            names(&got.set),
            [
                ("tank/data".to_owned(), vec!["compression".to_owned(), "user:note".into()]),
                ("tank/data/docs".to_owned(), vec!["recordsize".to_owned()]),
            ]
        );
        assert_eq!(
            names(&got.held_back),
            [
                (
                    "tank/data".to_owned(),
                    vec![
                        "mountpoint".to_owned(),
                        "org.zfsbootmenu:commandline".into(),
                        "setuid".into(),
                        "sharenfs".into()
                    ]
                ),
                ("tank/data/docs".to_owned(), vec!["quota".to_owned()]),
            ]
        );
        let all = m.to_set(&restored, true, Apply::All);
        assert!(all.held_back.is_empty() && all.set[0].1.len() == 6, "{all:?}");
        for p in ["compression", "recordsize", "atime", "xattr", "acltype", "user:x", "com.sun:auto-snapshot"] {
            assert!(is_data_property(p), "{p}");
        }
        for p in ["mountpoint", "canmount", "sharenfs", "sharesmb", "setuid", "exec", "devices", "quota", "dedup"] {
            assert!(!is_data_property(p), "{p}");
        }
        assert!(!is_data_property("org.openzfs.systemd:wanted-by"));
    }

    #[test]
    fn the_path_is_its_parts() {
        assert_eq!(MANIFEST_PATH, format!("{MANIFEST_DIR}/{MANIFEST_FILE}"));
    }

    #[test]
    fn a_version_1_manifest_is_read_without_a_tree() {
        let m = Manifest::parse(r#"{"version":1,"datasets":{"":{"compression":"zstd"},"docs":{}}}"#).unwrap();
        assert_eq!(m.tree(), None);
        let m = Manifest::parse(r#"{"version":2,"tree":["","docs"],"datasets":{"docs":{}}}"#).unwrap();
        assert_eq!(m.tree(), Some([String::new(), "docs".to_owned()].into_iter().collect()));
    }

    #[test]
    fn a_malformed_manifest_is_refused() {
        for bad in [
            "{}",
            r#"{"version":3,"tree":[""],"datasets":{}}"#,
            r#"{"version":0,"datasets":{}}"#,
            r#"{"version":1,"datasets":{"../x":{}}}"#,
            r#"{"version":1,"datasets":{"":{"Bad Name":"x"}}}"#,
            r#"{"version":1,"datasets":{"":{"a":"x\ny"}}}"#,
            r#"{"version":1,"datasets":{},"extra":1}"#,
            // Version 1 has no tree; version 2 must have one, sorted,
            // unique, rooted, with valid names, covering every dataset
            // with properties.
            r#"{"version":1,"tree":[""],"datasets":{}}"#,
            r#"{"version":2,"datasets":{}}"#,
            r#"{"version":2,"tree":[],"datasets":{}}"#,
            r#"{"version":2,"tree":["docs"],"datasets":{}}"#,
            r#"{"version":2,"tree":["","docs","docs"],"datasets":{}}"#,
            r#"{"version":2,"tree":["","photos","docs"],"datasets":{}}"#,
            r#"{"version":2,"tree":["","../x"],"datasets":{}}"#,
            r#"{"version":2,"tree":[""],"datasets":{"docs":{}}}"#,
            r#"{"version":2,"tree":[""],"tree":[""],"datasets":{}}"#,
        ] {
            assert!(Manifest::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_local_properties("tank/data\tonly-two\n").is_err());
    }
}
