//! Strict parsers for `zfs ... -H -p` output.
//!
//! `-H` gives one row per line with tab-separated columns and `-p` gives
//! exact numbers. We parse that output strictly, as if it were hostile:
//! the same parsers read what the box's `serve` reports about the box, and a
//! silently mis-parsed GUID could break the incremental chain. A row is
//! refused when it has the wrong number of columns, a NUL byte, an over-long
//! line, a name that is not a legal ZFS name, or a number that is not a
//! plain decimal. Each query's column list lives next to its parser (the
//! `*_COLUMNS` constants) so the argv and the parser cannot drift apart.

use std::collections::BTreeSet;

use crate::names::{Bookmark, Dataset, Guid, NameError, Snapshot};

/// Longest line we accept from `zfs list`. Names are at most 255 bytes and
/// the properties we ask for are short; resume tokens are the longest
/// values (usually under 1 KiB).
pub const MAX_LINE_LEN: usize = 16 * 1024;

/// Longest resume token we accept.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: expected {expected} tab-separated columns, found {found}")]
    Columns { line: usize, expected: usize, found: usize },
    #[error("line {line}: contains a NUL byte")]
    Nul { line: usize },
    #[error("line {line}: longer than {MAX_LINE_LEN} bytes")]
    LineTooLong { line: usize },
    #[error("line {line}: {what}: {source}")]
    Name { line: usize, what: &'static str, source: NameError },
    #[error("line {line}: {what} {value:?} is not a plain decimal number")]
    Number { line: usize, what: &'static str, value: String },
    #[error("line {line}: {what} {value:?} is not a valid value")]
    Value { line: usize, what: &'static str, value: String },
    #[error("expected exactly one row, found {0}")]
    RowCount(usize),
}

/// Splits `-H` output into rows of exactly `ncols` columns.
pub fn rows(text: &str, ncols: usize) -> Result<Vec<Vec<&str>>, ParseError> {
    let mut out = Vec::new();
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.is_empty() {
        return Ok(out);
    }
    for (i, line) in body.split('\n').enumerate() {
        let line_no = i + 1;
        if line.len() > MAX_LINE_LEN {
            return Err(ParseError::LineTooLong { line: line_no });
        }
        if line.contains('\0') {
            return Err(ParseError::Nul { line: line_no });
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != ncols {
            return Err(ParseError::Columns { line: line_no, expected: ncols, found: cols.len() });
        }
        out.push(cols);
    }
    Ok(out)
}

fn num(line: usize, what: &'static str, v: &str) -> Result<u64, ParseError> {
    let err = || ParseError::Number { line, what, value: v.chars().take(64).collect() };
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    v.parse().map_err(|_| err())
}

fn guid(line: usize, v: &str) -> Result<Guid, ParseError> {
    v.parse().map_err(|source| match source {
        NameError::BadGuid => ParseError::Number { line, what: "guid", value: v.chars().take(64).collect() },
        source => ParseError::Name { line, what: "guid", source },
    })
}

fn dataset(line: usize, v: &str) -> Result<Dataset, ParseError> {
    Dataset::new(v).map_err(|source| ParseError::Name { line, what: "dataset name", source })
}

/// A snapshot as listed with [`SNAPSHOT_COLUMNS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub snapshot: Snapshot,
    pub guid: Guid,
    /// Transaction group of creation: orders snapshots within one pool.
    /// Unlike `creation` (seconds) it never ties.
    pub createtxg: u64,
    /// Creation time, Unix seconds. Trusted on the source only: a received
    /// snapshot's `creation` is copied from the stream, so the sender
    /// controls it.
    pub creation: i64,
}

/// A snapshot's own columns.
pub const SNAPSHOT_COLUMNS: &str = "name,guid,createtxg,creation";

/// Rows of [`SNAPSHOT_COLUMNS`].
pub fn snapshots(text: &str) -> Result<Vec<SnapshotRow>, ParseError> {
    rows(text, 4)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let line = i + 1;
            let snapshot =
                Snapshot::new(c[0]).map_err(|source| ParseError::Name { line, what: "snapshot name", source })?;
            Ok(SnapshotRow {
                snapshot,
                guid: guid(line, c[1])?,
                createtxg: num(line, "createtxg", c[2])?,
                creation: time(line, c[3])?,
            })
        })
        .collect()
}

/// A column that does not apply to the row's kind: ZFS prints `-` there,
/// and anything else means the row is not what it claims to be.
fn dash(line: usize, what: &'static str, v: &str) -> Result<(), ParseError> {
    if v == "-" {
        Ok(())
    } else {
        Err(ParseError::Value { line, what, value: v.chars().take(64).collect() })
    }
}

fn time(line: usize, v: &str) -> Result<i64, ParseError> {
    let n = num(line, "creation", v)?;
    i64::try_from(n).map_err(|_| ParseError::Number { line, what: "creation", value: v.into() })
}

/// A bookmark, as listed in a [`SourceListing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookmarkRow {
    pub bookmark: Bookmark,
    pub guid: Guid,
    pub createtxg: u64,
    pub creation: i64,
}

/// Columns of the source's own snapshot (and bookmark) listings:
/// [`SNAPSHOT_COLUMNS`] and `userrefs`, the number of user holds on a
/// snapshot (`-` for a bookmark). It comes with the listing at no extra
/// cost, and tells which few snapshots `zfs holds` needs to be asked about.
pub const SOURCE_COLUMNS: &str = "name,guid,createtxg,creation,userrefs";

/// One listing of the source's snapshots and bookmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceListing {
    pub snapshots: Vec<SnapshotRow>,
    pub bookmarks: Vec<BookmarkRow>,
    /// The snapshots that carried at least one user hold when listed.
    pub held: BTreeSet<Snapshot>,
}

/// Rows of [`SOURCE_COLUMNS`], from `zfs list -t snapshot` or, in one
/// traversal of the datasets instead of two (visiting a dataset is what a
/// listing costs), `-t snapshot,bookmark`. A name with `#` is a bookmark,
/// with `@` a snapshot; each is checked as strictly as on its own.
pub fn source_listing(text: &str) -> Result<SourceListing, ParseError> {
    let mut out = SourceListing::default();
    for (i, c) in rows(text, 5)?.into_iter().enumerate() {
        let line = i + 1;
        let (g, txg, creation) = (guid(line, c[1])?, num(line, "createtxg", c[2])?, time(line, c[3])?);
        if c[0].contains('#') {
            let bookmark =
                Bookmark::new(c[0]).map_err(|source| ParseError::Name { line, what: "bookmark name", source })?;
            dash(line, "a bookmark's userrefs", c[4])?;
            out.bookmarks.push(BookmarkRow { bookmark, guid: g, createtxg: txg, creation });
        } else {
            let snapshot =
                Snapshot::new(c[0]).map_err(|source| ParseError::Name { line, what: "snapshot name", source })?;
            if num(line, "userrefs", c[4])? > 0 {
                out.held.insert(snapshot.clone());
            }
            out.snapshots.push(SnapshotRow { snapshot, guid: g, createtxg: txg, creation });
        }
    }
    Ok(out)
}

/// A user hold as listed by `zfs holds -H -p`: snapshot, tag, time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRow {
    pub snapshot: Snapshot,
    pub tag: String,
}

pub fn holds(text: &str) -> Result<Vec<HoldRow>, ParseError> {
    rows(text, 3)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let line = i + 1;
            if c[1].is_empty() || c[1].len() > 255 || c[1].chars().any(char::is_control) {
                return Err(ParseError::Value { line, what: "hold tag", value: c[1].chars().take(64).collect() });
            }
            Ok(HoldRow {
                snapshot: Snapshot::new(c[0]).map_err(|source| ParseError::Name {
                    line,
                    what: "snapshot name",
                    source,
                })?,
                tag: c[1].to_owned(),
            })
        })
        .collect()
}

/// The `encryption` property: `off`, or the cipher suite.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    Off,
    On(String),
}

impl Encryption {
    pub fn is_on(&self) -> bool {
        matches!(self, Encryption::On(_))
    }
}

/// The user property that excludes (`off`) or re-includes (`on`) a
/// dataset and, by ZFS inheritance, its children.
pub const BACKUP_PROPERTY: &str = "zoffsite:backup";

/// A filesystem or volume as listed with [`DATASET_COLUMNS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRow {
    pub dataset: Dataset,
    pub guid: Guid,
    pub encryption: Encryption,
    /// Bytes written since the dataset's most recent snapshot.
    pub written: u64,
    /// The effective `zoffsite:backup` value (set here or inherited);
    /// `None` when unset anywhere above.
    pub backup: Option<String>,
}

pub const DATASET_COLUMNS: &str = "name,guid,encryption,written,zoffsite:backup";

pub fn datasets(text: &str) -> Result<Vec<DatasetRow>, ParseError> {
    rows(text, 5)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let line = i + 1;
            let encryption = match c[2] {
                "off" => Encryption::Off,
                v if !v.is_empty()
                    && v.len() <= 32
                    && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
                {
                    Encryption::On(v.to_owned())
                }
                v => return Err(ParseError::Value { line, what: "encryption", value: v.chars().take(64).collect() }),
            };
            Ok(DatasetRow {
                dataset: dataset(line, c[0])?,
                guid: guid(line, c[1])?,
                encryption,
                written: num(line, "written", c[3])?,
                backup: (c[4] != "-").then(|| c[4].to_owned()),
            })
        })
        .collect()
}

/// A dataset on the receiving side, with its partial-receive state, as
/// listed with [`RECEIVER_COLUMNS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverRow {
    pub dataset: Dataset,
    pub resume_token: Option<String>,
}

pub const RECEIVER_COLUMNS: &str = "name,receive_resume_token";

pub fn receiver_datasets(text: &str) -> Result<Vec<ReceiverRow>, ParseError> {
    rows(text, 2)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let line = i + 1;
            Ok(ReceiverRow { dataset: dataset(line, c[0])?, resume_token: resume_token(line, c[1])? })
        })
        .collect()
}

/// Columns of the box's whole inventory in one listing: filesystems and
/// volumes with their partial-receive token, and snapshots, in a single
/// traversal of the root (each dataset visited once costs what two
/// listings cost twice: on a box of many datasets the listing is most of a
/// no-op run).
pub const BOX_COLUMNS: &str = "name,guid,createtxg,creation,receive_resume_token";

/// Rows of [`BOX_COLUMNS`] from `zfs list -r -t filesystem,volume,snapshot`:
/// the datasets (with tokens) and the snapshots. A snapshot row must have no
/// token (`-`).
pub fn box_inventory(text: &str) -> Result<(Vec<ReceiverRow>, Vec<SnapshotRow>), ParseError> {
    let (mut datasets, mut snaps) = (Vec::new(), Vec::new());
    for (i, c) in rows(text, 5)?.into_iter().enumerate() {
        let line = i + 1;
        if c[0].contains('@') {
            let snapshot =
                Snapshot::new(c[0]).map_err(|source| ParseError::Name { line, what: "snapshot name", source })?;
            dash(line, "a snapshot's receive_resume_token", c[4])?;
            snaps.push(SnapshotRow {
                snapshot,
                guid: guid(line, c[1])?,
                createtxg: num(line, "createtxg", c[2])?,
                creation: time(line, c[3])?,
            });
        } else {
            datasets.push(ReceiverRow { dataset: dataset(line, c[0])?, resume_token: resume_token(line, c[4])? });
        }
    }
    Ok((datasets, snaps))
}

/// When `pool`'s last scrub finished (Unix seconds), from `zpool status -j
/// --json-int POOL` (OpenZFS 2.3+): `scan_stats` with function `SCRUB` and
/// state `FINISHED`; `None` when no scrub has finished (never run, running,
/// canceled, or the last scan was a resilver).
pub fn last_scrub(json: &str, pool: &str) -> Result<Option<i64>, ParseError> {
    let bad = |what: &'static str| ParseError::Value { line: 1, what, value: json.chars().take(64).collect() };
    let v: serde_json::Value = serde_json::from_str(json).map_err(|_| bad("zpool status -j output"))?;
    let p = v.get("pools").and_then(|p| p.get(pool)).ok_or_else(|| bad("zpool status -j without the pool"))?;
    let Some(scan) = p.get("scan_stats") else { return Ok(None) };
    let field = |k: &str| scan.get(k).and_then(serde_json::Value::as_str);
    if field("function") != Some("SCRUB") || field("state") != Some("FINISHED") {
        return Ok(None);
    }
    let end = scan.get("end_time").and_then(serde_json::Value::as_i64).ok_or_else(|| bad("scan_stats.end_time"))?;
    Ok(Some(end))
}

/// `-` means "no partial receive". A token is `VERSION-HEX-HEX-HEX`; we
/// only check its alphabet and size here: a token is hostile input whose
/// meaning the source checks by decoding it with ZFS before use.
fn resume_token(line: usize, v: &str) -> Result<Option<String>, ParseError> {
    if v == "-" {
        return Ok(None);
    }
    if v.is_empty() || v.len() > MAX_TOKEN_LEN || !v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(ParseError::Value { line, what: "receive_resume_token", value: v.chars().take(64).collect() });
    }
    Ok(Some(v.to_owned()))
}

/// Output of `zfs get -H -p -o name,value PROP DATASET...` for a numeric
/// property; `-` (not applicable) rows are left out.
pub fn dataset_numbers(text: &str) -> Result<Vec<(Dataset, u64)>, ParseError> {
    let mut out = Vec::new();
    for (i, c) in rows(text, 2)?.into_iter().enumerate() {
        if c[1] != "-" {
            out.push((dataset(i + 1, c[0])?, num(i + 1, "value", c[1])?));
        }
    }
    Ok(out)
}

/// `zfs get -H -p -o name,value PROP NAME...`: each name once, with its
/// value as text (a value is one line of at most [`MAX_TOKEN_LEN`] bytes,
/// which [`rows`] checks). Names are not interpreted beyond that: the caller
/// asked for them, and matches them against what it asked.
pub fn name_values(text: &str) -> Result<Vec<(String, String)>, ParseError> {
    let rows = rows(text, 2)?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for (i, c) in rows.into_iter().enumerate() {
        if !seen.insert(c[0]) {
            return Err(ParseError::Value {
                line: i + 1,
                what: "name listed twice",
                value: c[0].chars().take(64).collect(),
            });
        }
        out.push((c[0].to_owned(), c[1].to_owned()));
    }
    Ok(out)
}

/// The estimated stream size from `zfs send -n -v -P` (its `size` line).
pub fn send_size(text: &str) -> Result<u64, ParseError> {
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        if line.len() > MAX_LINE_LEN {
            return Err(ParseError::LineTooLong { line: i + 1 });
        }
        if let Some(v) = line.strip_prefix("size\t") {
            found = Some(num(i + 1, "size", v.trim())?);
        }
    }
    found.ok_or(ParseError::RowCount(0))
}

/// Output of `zfs get -H -p -o value guid SNAPSHOT`.
pub fn single_guid(text: &str) -> Result<Guid, ParseError> {
    let r = rows(text, 1)?;
    if r.len() != 1 {
        return Err(ParseError::RowCount(r.len()));
    }
    guid(1, r[0][0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_real_snapshot_rows() {
        let out = "tank/data@zoffsite-20261126T073000Z\t7265012223453401451\t57\t1795678200\n\
                   tank/data/my docs:x@a b\t1\t60\t1795678201\n";
        let r = snapshots(out).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].snapshot.to_string(), "tank/data@zoffsite-20261126T073000Z");
        assert_eq!(r[0].guid.get(), 7265012223453401451);
        assert_eq!(r[1].snapshot.dataset.as_str(), "tank/data/my docs:x");
        assert_eq!((r[1].createtxg, r[1].creation), (60, 1795678201));
        assert_eq!(snapshots("").unwrap(), vec![]);
        assert_eq!(snapshots("\n").unwrap(), vec![]);
    }

    #[test]
    fn refuses_hostile_rows() {
        let cases = [
            ("tank@a\t1\t2\n", "Columns"),
            ("tank@a\t1\t2\t3\t4\n", "Columns"),
            ("tank@a\t1\t2\t-1\n", "Number"),
            ("tank@a\t1\t2\t18446744073709551615\n", "Number"),
            ("tank@a\tdeadbeef\t2\t1\n", "Number"),
            ("tank@a\t-5\t2\t1\n", "Number"),
            ("tank@a\t0\t2\t1\n", "Number"),
            ("tank@a\t+5\t2\t1\n", "Number"),
            ("tank@a\t99999999999999999999999\t2\t1\n", "Number"),
            ("tank@a\t5\t\t1\n", "Number"),
            ("tank@a\t5\t1.5\t1\n", "Number"),
            ("tank@a\0\t5\t2\t1\n", "Nul"),
            ("tank/../x@a\t5\t2\t1\n", "Name"),
            ("tank\t5\t2\t1\n", "Name"),
            ("tank@a\t5\t2\t1\n\n", "Columns"),
        ];
        for (input, kind) in cases {
            let err = snapshots(input).unwrap_err();
            assert!(format!("{err:?}").starts_with(kind), "{input:?}: {err:?}");
        }
        let huge = format!("tank@{}\t5\t2\t1\n", "a".repeat(MAX_LINE_LEN));
        assert!(matches!(snapshots(&huge), Err(ParseError::LineTooLong { line: 1 })));
    }

    #[test]
    fn parses_datasets_and_encryption() {
        let r = datasets("tank/data\t42\taes-256-gcm\t0\t-\ntank/plain\t43\toff\t8192\toff\n").unwrap();
        assert!(r[0].encryption.is_on());
        assert_eq!((r[0].written, r[0].backup.as_deref()), (0, None));
        assert_eq!(r[1].encryption, Encryption::Off);
        assert_eq!((r[1].written, r[1].backup.as_deref()), (8192, Some("off")));
        assert!(datasets("tank/x\t42\t\t0\t-\n").is_err());
        assert!(datasets("tank/x\t42\tAES;rm\t0\t-\n").is_err());
        assert!(datasets("tank/x\t42\toff\t-\t-\n").is_err(), "written must be a number");
        assert!(datasets("tank/x\t42\toff\t0\n").is_err(), "five columns");
    }

    #[test]
    fn parses_receiver_rows_and_tokens() {
        let r = receiver_datasets("off/h/tank\t-\noff/h/tank/d\t1-e0a3c8d21-f0-789c63\n").unwrap();
        assert_eq!(r[0].resume_token, None);
        assert_eq!(r[1].resume_token.as_deref(), Some("1-e0a3c8d21-f0-789c63"));
        assert!(receiver_datasets("off/h\t1-zz\n").is_err());
        assert!(receiver_datasets(&format!("off/h\t{}\n", "a".repeat(MAX_TOKEN_LEN + 1))).is_err());
    }

    #[test]
    fn parses_the_box_inventory_in_one_listing() {
        // `zfs list -H -p -r -t filesystem,volume,snapshot -o BOX_COLUMNS`,
        // as OpenZFS 2.3.2 prints it: parents first, each one's snapshots
        // after it.
        let text = "off/h\t123\t5\t1764140000\t-\noff/h/tank\t456\t9\t1764140001\t-\n\
                    off/h/tank/d\t789\t12\t1764140002\t1-e0a3c8d21-f0-789c63\n\
                    off/h/tank/d@zoffsite-1\t10546291128629098134\t13\t1764140003\t-\n";
        let (datasets, snaps) = box_inventory(text).unwrap();
        assert_eq!(datasets.len(), 3);
        assert_eq!(datasets[2].resume_token.as_deref(), Some("1-e0a3c8d21-f0-789c63"));
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].snapshot.to_string(), "off/h/tank/d@zoffsite-1");
        assert_eq!((snaps[0].guid.get(), snaps[0].createtxg), (10546291128629098134, 13));
        // A token on a snapshot, a bad GUID, a bad name: refused.
        assert!(box_inventory("off/h@a\t1\t1\t1\t1-ab-cd\n").is_err());
        assert!(box_inventory("off/h@a\t0\t1\t1\t-\n").is_err());
        assert!(box_inventory("off/../h\t1\t1\t1\t-\n").is_err());
        assert!(box_inventory("off/h\t1\t1\t1\n").is_err());
        assert_eq!(box_inventory("").unwrap(), (vec![], vec![]));
    }

    #[test]
    fn reads_the_last_scrub_from_zpool_status_json() {
        // OpenZFS 2.3.2, `zpool status -j --json-int zzp`, shortened.
        let done = r#"{"output_version":{"command":"zpool status","vers_major":0,"vers_minor":1},"pools":{"zzp":{"name":"zzp","state":"ONLINE","scan_stats":{"function":"SCRUB","state":"FINISHED","start_time":1795698112,"end_time":1795698112,"errors":0}}}}"#;
        assert_eq!(last_scrub(done, "zzp").unwrap(), Some(1795698112));
        let never = r#"{"pools":{"zzp":{"name":"zzp","state":"ONLINE","vdevs":{}}}}"#;
        assert_eq!(last_scrub(never, "zzp").unwrap(), None);
        let resilver = done.replace("\"SCRUB\"", "\"RESILVER\"");
        assert_eq!(last_scrub(&resilver, "zzp").unwrap(), None);
        let running = done.replace("FINISHED", "SCANNING");
        assert_eq!(last_scrub(&running, "zzp").unwrap(), None);
        assert!(last_scrub(done, "other").is_err());
        assert!(last_scrub("not json", "zzp").is_err());
    }

    #[test]
    fn one_listing_gives_snapshots_bookmarks_and_which_are_held() {
        let text = "tank/a@zoffsite-1\t77\t12\t1795678200\t1\ntank/a#zoffsite-1\t77\t12\t1795678200\t-\ntank/a/b c@x\t78\t13\t1795678201\t0\n";
        let l = source_listing(text).unwrap();
        let names: Vec<String> = l.snapshots.iter().map(|r| r.snapshot.to_string()).collect();
        assert_eq!(names, ["tank/a@zoffsite-1", "tank/a/b c@x"]);
        let b = &l.bookmarks;
        assert_eq!((b[0].bookmark.to_string(), b[0].guid.get(), b[0].createtxg), ("tank/a#zoffsite-1".into(), 77, 12));
        assert_eq!(b.len(), 1);
        let held: Vec<String> = l.held.iter().map(ToString::to_string).collect();
        assert_eq!(held, ["tank/a@zoffsite-1"]);
        assert_eq!(source_listing("").unwrap(), SourceListing::default());
        // Neither kind, both kinds, a bad field, a held bookmark, a snapshot
        // without a count, the old four columns: refused, not guessed.
        for bad in [
            "tank/a\t77\t12\t1\t0\n",
            "tank/a@x#y\t77\t12\t1\t0\n",
            "tank/a#x\t0\t12\t1\t-\n",
            "tank/a@x\t77\t-\t1\t0\n",
            "tank/a#x\t77\t12\t1\t1\n",
            "tank/a@x\t77\t12\t1\t-\n",
            "tank/a@x\t77\t12\t1\n",
        ] {
            assert!(source_listing(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_holds() {
        let h = holds("tank/a@zoffsite-1\tzoffsite-friend\t1764142200\n").unwrap();
        assert_eq!((h[0].snapshot.to_string(), h[0].tag.as_str()), ("tank/a@zoffsite-1".into(), "zoffsite-friend"));
        assert!(holds("tank/a@s\t\t1\n").is_err());
        assert!(holds("tank/a@s\tt\x1b[2J\t1\n").is_err());
    }

    #[test]
    fn dataset_numbers_skip_dashes() {
        let r = dataset_numbers("tank/a\t4096\ntank/b\t-\n").unwrap();
        assert_eq!(r, vec![(Dataset::new("tank/a").unwrap(), 4096)]);
        assert!(dataset_numbers("tank/a\tlots\n").is_err());
    }

    #[test]
    fn send_sizes() {
        // As printed by OpenZFS 2.3 for `zfs send -n -v -P -w -i a b`.
        let out = "incremental\ttank/a@z1\ttank/a@z2\t57344\nsize\t57344\n";
        assert_eq!(send_size(out).unwrap(), 57344);
        assert_eq!(send_size("full\ttank/a@z1\t1024\nsize\t1024\n").unwrap(), 1024);
        assert!(send_size("nothing useful\n").is_err());
        assert!(send_size("size\tmany\n").is_err());
    }

    #[test]
    fn single_guid_wants_one_row() {
        assert_eq!(single_guid("123\n").unwrap().get(), 123);
        assert_eq!(single_guid("1\n2\n"), Err(ParseError::RowCount(2)));
        assert_eq!(single_guid(""), Err(ParseError::RowCount(0)));
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(s in any::<String>()) {
            let _ = snapshots(&s);
            let _ = datasets(&s);
            let _ = receiver_datasets(&s);
            let _ = box_inventory(&s);
            let _ = single_guid(&s);
            let _ = source_listing(&s);
            let _ = holds(&s);
        }

        #[test]
        fn wrong_column_counts_are_refused(n in 0usize..8) {
            prop_assume!(n != 4);
            let line = vec!["1"; n.max(1)].join("\t");
            let text = format!("{line}\n");
            prop_assert!(snapshots(&text).is_err());
        }
    }
}
