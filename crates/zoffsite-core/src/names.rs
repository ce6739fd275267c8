//! Typed ZFS names.
//!
//! A [`Dataset`], [`SnapName`], [`Snapshot`] or [`Guid`] can only be built
//! through validation, so holding one is proof that the text is a legal ZFS
//! name. The rules follow OpenZFS's `zfs_namecheck.c`:
//!
//! - a component is one or more of `[A-Za-z0-9_.: -]`, and is neither `.`
//!   nor `..`;
//! - a dataset is components joined by `/`, the first (the pool) starting
//!   with a letter and not a reserved vdev word;
//! - a whole name (`pool/a/b@snap`) is at most 255 bytes
//!   (`ZFS_MAX_DATASET_NAME_LEN` is 256 with the NUL).
//!
//! Everything else is refused, including `%` (internal names such as
//! `%recv`), `@`/`#` inside components, leading or trailing `/`, empty
//! components, control characters and anything non-ASCII. This is what keeps
//! a hostile box from naming something outside the box root: with `..` and
//! empty components impossible, [`Dataset::join`] cannot escape its base.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest full name ZFS accepts, in bytes (without the trailing NUL).
pub const MAX_NAME_LEN: usize = 255;

/// Pool names ZFS reserves for vdev types.
const RESERVED_POOL_NAMES: &[&str] = &["mirror", "raidz", "draid", "spare", "log"];

/// Why a name is not a legal ZFS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {len} bytes long; ZFS allows at most {MAX_NAME_LEN}")]
    TooLong { len: usize },
    #[error("name has an empty component (leading, trailing or doubled '/')")]
    EmptyComponent,
    #[error("name has a '.' or '..' component")]
    DotComponent,
    #[error("name contains {0:?}, which ZFS does not allow (allowed: letters, digits, '_', '-', '.', ':', space)")]
    BadChar(char),
    #[error("pool name must start with a letter")]
    PoolStart,
    #[error("pool name {0:?} is reserved by ZFS")]
    ReservedPool(String),
    #[error("snapshot name must look like DATASET@NAME")]
    NotSnapshot,
    #[error("GUID must be a non-zero decimal 64-bit number")]
    BadGuid,
}

fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | ' ')
}

fn check_component(c: &str) -> Result<(), NameError> {
    if c.is_empty() {
        return Err(NameError::EmptyComponent);
    }
    if c == "." || c == ".." {
        return Err(NameError::DotComponent);
    }
    if let Some(bad) = c.chars().find(|&ch| !valid_char(ch)) {
        return Err(NameError::BadChar(bad));
    }
    Ok(())
}

fn check_len(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: s.len() });
    }
    Ok(())
}

/// A filesystem or volume name, such as `tank/data/docs`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Dataset(String);

impl Dataset {
    /// Validates `s` as a dataset name.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        check_len(&s)?;
        let mut parts = s.split('/');
        let pool = parts.next().unwrap_or_default();
        check_component(pool)?;
        if !pool.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(NameError::PoolStart);
        }
        if RESERVED_POOL_NAMES.contains(&pool) {
            return Err(NameError::ReservedPool(pool.to_owned()));
        }
        for part in parts {
            check_component(part)?;
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool this dataset lives in.
    pub fn pool(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// The parent dataset, or `None` for a pool's root dataset.
    pub fn parent(&self) -> Option<Dataset> {
        self.0.rfind('/').map(|i| Dataset(self.0[..i].to_owned()))
    }

    /// Number of `/`-separated components (`tank` is 1, `tank/a` is 2).
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// True when `self` is `other` or lies below it (`tank/a/b` is under
    /// `tank/a`, `tank/ab` is not).
    pub fn is_within(&self, other: &Dataset) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.starts_with(&other.0)
                && self.0.as_bytes()[other.0.len()] == b'/')
    }

    /// `self/rel`: where the box stores source dataset `rel` under its root.
    /// Cannot escape `self`, because `rel` has no `..` or empty components.
    pub fn join(&self, rel: &Dataset) -> Result<Dataset, NameError> {
        let joined = format!("{}/{}", self.0, rel.0);
        check_len(&joined)?;
        Ok(Dataset(joined))
    }

    /// The inverse of [`join`](Self::join): `tank/data` for
    /// `offsite/home/tank/data` under `offsite/home`.
    pub fn strip_root(&self, root: &Dataset) -> Option<Dataset> {
        if !self.is_within(root) || self.0.len() == root.0.len() {
            return None;
        }
        Some(Dataset(self.0[root.0.len() + 1..].to_owned()))
    }

    /// `self@name`, checked against the total length limit.
    pub fn snapshot(&self, name: &SnapName) -> Result<Snapshot, NameError> {
        Snapshot::from_parts(self.clone(), name.clone())
    }

    /// Ancestors of `self` strictly below `root`, outermost first:
    /// for `r/a/b/c` under `r` that is `r/a`, `r/a/b`.
    pub fn ancestors_below(&self, root: &Dataset) -> Vec<Dataset> {
        let mut out = Vec::new();
        let mut cur = self.parent();
        while let Some(p) = cur {
            if p == *root || !p.is_within(root) {
                break;
            }
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }
}

/// The part of a snapshot name after `@`, such as `zoffsite-20261126T073000Z`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapName(String);

impl SnapName {
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        check_len(&s)?;
        check_component(&s)?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A full snapshot name, `dataset@name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Snapshot {
    pub dataset: Dataset,
    pub name: SnapName,
}

impl Snapshot {
    pub fn new(s: &str) -> Result<Self, NameError> {
        let (ds, name) = s.split_once('@').ok_or(NameError::NotSnapshot)?;
        Self::from_parts(Dataset::new(ds)?, SnapName::new(name)?)
    }

    pub fn from_parts(dataset: Dataset, name: SnapName) -> Result<Self, NameError> {
        let len = dataset.0.len() + 1 + name.0.len();
        if len > MAX_NAME_LEN {
            return Err(NameError::TooLong { len });
        }
        Ok(Self { dataset, name })
    }
}

/// A bookmark, `dataset#name`: a snapshot's GUID and birth time without its
/// data, enough to be the base of an incremental send after the snapshot
/// itself is gone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bookmark {
    pub dataset: Dataset,
    pub name: SnapName,
}

impl Bookmark {
    pub fn new(s: &str) -> Result<Self, NameError> {
        let (ds, name) = s.split_once('#').ok_or(NameError::NotSnapshot)?;
        let b = Bookmark { dataset: Dataset::new(ds)?, name: SnapName::new(name)? };
        let len = s.len();
        if len > MAX_NAME_LEN {
            return Err(NameError::TooLong { len });
        }
        Ok(b)
    }
}

impl fmt::Display for Bookmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.dataset, self.name)
    }
}

/// A ZFS GUID: the identity of a snapshot across pools. Zero is never a
/// valid GUID (ZFS uses 0 for "no from-snapshot" in stream headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Guid(u64);

impl Guid {
    pub fn new(v: u64) -> Result<Self, NameError> {
        if v == 0 {
            Err(NameError::BadGuid)
        } else {
            Ok(Self(v))
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for Guid {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // u64::from_str accepts a leading '+'; ZFS never prints one, so a
        // '+' is a sign of forged input.
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NameError::BadGuid);
        }
        Guid::new(s.parse().map_err(|_| NameError::BadGuid)?)
    }
}

macro_rules! string_name_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
string_name_impls!(Dataset);
string_name_impls!(SnapName);

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.dataset, self.name)
    }
}

impl FromStr for Snapshot {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// As its full name, `dataset@name` (the JSON reports' form).
impl Serialize for Snapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<u64> for Guid {
    type Error = NameError;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        Guid::new(v)
    }
}

impl From<Guid> for u64 {
    fn from(g: Guid) -> u64 {
        g.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.: ";

    #[test]
    fn accepts_the_whole_legal_alphabet() {
        let name = format!("tank/{ALPHABET}");
        assert_eq!(Dataset::new(name.clone()).unwrap().as_str(), name);
        let snap = SnapName::new(ALPHABET).unwrap();
        assert_eq!(snap.as_str(), ALPHABET);
        let s = Snapshot::new("tank/my data:2024/a.b-c_d@zoffsite-20261126T073000Z").unwrap();
        assert_eq!(s.dataset.as_str(), "tank/my data:2024/a.b-c_d");
        assert_eq!(s.name.as_str(), "zoffsite-20261126T073000Z");
    }

    #[test]
    fn length_limit_is_255_bytes_in_total() {
        let ds = format!("t/{}", "a".repeat(253));
        assert_eq!(ds.len(), 255);
        assert!(Dataset::new(ds.clone()).is_ok());
        assert_eq!(Dataset::new(format!("{ds}b")), Err(NameError::TooLong { len: 256 }));
        // The snapshot part counts too.
        let base = Dataset::new(format!("t/{}", "a".repeat(250))).unwrap(); // 252
        assert!(base.snapshot(&SnapName::new("xy").unwrap()).is_ok()); // 255
        assert!(base.snapshot(&SnapName::new("xyz").unwrap()).is_err()); // 256
                                                                         // And joining under a root.
        let root = Dataset::new("offsite/home").unwrap();
        assert!(root.join(&Dataset::new(ds).unwrap()).is_err());
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "/tank",
            "tank/",
            "tank//a",
            "tank/./a",
            "tank/../etc",
            "..",
            "tank/a@b",
            "tank/a#b",
            "tank/%recv",
            "tank/a\0b",
            "tank/a\nb",
            "tank/a\tb",
            "tank/é",
            "tank/a/b\\c",
            "tank/$(reboot)",
            "tank/a;b",
            "tank/'",
            "tank/\"",
            "1tank/a",
            "-tank",
            " tank",
            "mirror",
            "log/a",
            "tank/a*",
            "tank/a|b",
        ] {
            assert!(Dataset::new(bad).is_err(), "{bad:?} must be refused");
        }
        for bad in ["", ".", "..", "a/b", "a@b", "a#b", "%x", "a\0", "ä", "a\r"] {
            assert!(SnapName::new(bad).is_err(), "snap {bad:?} must be refused");
        }
        assert_eq!(Bookmark::new("tank/a b#zoffsite-1").unwrap().to_string(), "tank/a b#zoffsite-1");
        for bad in ["tank@x", "tank#", "#x", "tank#a#b", "tank/..#x"] {
            assert!(Bookmark::new(bad).is_err(), "bookmark {bad:?} must be refused");
        }
        for bad in ["tank", "tank@", "@x", "tank@a@b", "tank/a@b/c"] {
            assert!(Snapshot::new(bad).is_err(), "snapshot {bad:?} must be refused");
        }
    }

    #[test]
    fn guids_are_strict_decimal() {
        assert_eq!("18446744073709551615".parse::<Guid>().unwrap().get(), u64::MAX);
        for bad in ["0", "", "+1", "-1", "1 ", " 1", "0x10", "18446744073709551616", "1e5", "١"] {
            assert!(bad.parse::<Guid>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn containment_and_roots() {
        let a = Dataset::new("tank/a").unwrap();
        assert!(Dataset::new("tank/a/b").unwrap().is_within(&a));
        assert!(a.is_within(&a));
        assert!(!Dataset::new("tank/ab").unwrap().is_within(&a));
        assert!(!Dataset::new("tank").unwrap().is_within(&a));
        let root = Dataset::new("offsite/home").unwrap();
        let j = root.join(&Dataset::new("tank/data/docs").unwrap()).unwrap();
        assert_eq!(j.as_str(), "offsite/home/tank/data/docs");
        assert_eq!(j.strip_root(&root).unwrap().as_str(), "tank/data/docs");
        assert_eq!(root.strip_root(&root), None);
        assert_eq!(
            j.ancestors_below(&root).iter().map(super::Dataset::as_str).collect::<Vec<_>>(),
            ["offsite/home/tank", "offsite/home/tank/data"]
        );
        assert_eq!(j.parent().unwrap().as_str(), "offsite/home/tank/data");
        assert_eq!(j.pool(), "offsite");
        assert_eq!(j.depth(), 5);
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let d: Result<Dataset, _> = serde_json::from_str("\"tank/../x\"");
        assert!(d.is_err());
        let g: Result<Guid, _> = serde_json::from_str("0");
        assert!(g.is_err());
        let d: Dataset = serde_json::from_str("\"tank/a b\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"tank/a b\"");
    }

    fn legal_component() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[A-Za-z0-9_.: -]{1,40}")
            .unwrap()
            .prop_filter("not . or ..", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn legal_names_round_trip(pool in "[A-Za-z][A-Za-z0-9_.: -]{0,20}",
                                  comps in proptest::collection::vec(legal_component(), 0..5),
                                  snap in legal_component()) {
            prop_assume!(!RESERVED_POOL_NAMES.contains(&pool.as_str()));
            let mut name = pool.clone();
            for c in &comps { name.push('/'); name.push_str(c); }
            let full = format!("{name}@{snap}");
            if full.len() <= MAX_NAME_LEN {
                let s = Snapshot::new(&full).unwrap();
                prop_assert_eq!(s.to_string(), full);
                prop_assert_eq!(s.dataset.pool(), pool.as_str());
            } else {
                prop_assert!(Snapshot::new(&full).is_err());
            }
        }

        #[test]
        fn any_illegal_char_is_refused(prefix in "[a-z]{1,5}", c in any::<char>()) {
            prop_assume!(!valid_char(c) && c != '/');
            let name = format!("tank/{prefix}{c}x");
            prop_assert!(Dataset::new(name.clone()).is_err());
            let snap = format!("{prefix}{c}");
            prop_assert!(SnapName::new(snap).is_err());
        }

        #[test]
        fn join_never_escapes(rel in "[ -~]{1,60}") {
            let root = Dataset::new("offsite/home").unwrap();
            if let Ok(rel) = Dataset::new(rel) {
                if let Ok(j) = root.join(&rel) {
                    prop_assert!(j.is_within(&root));
                    prop_assert_eq!(j.strip_root(&root), Some(rel));
                }
            }
        }
    }
}
