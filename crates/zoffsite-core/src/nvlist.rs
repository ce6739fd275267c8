//! A strict reader for the packed nvlist in a raw send's BEGIN payload, and
//! the fingerprint of the dataset's wrapped key that `serve` pins.
//!
//! Why: a raw incremental stream carries the sending dataset's *wrapped*
//! master key (`crypt_keydata`). After `zfs change-key` on the source, the
//! next raw incremental replaces the wrapped key of the box's copy, so that
//! every snapshot of it, the oldest included, opens only with the new key
//! (verified on OpenZFS 2.3.2). A compromised source could so lock the whole
//! offsite history with a key only the attacker knows, or destroy it with a
//! garbage wrapped key, without destroying a snapshot. The kernel cannot
//! tell that from a legitimate key change, so `serve` compares the
//! [`KeyWrap`] of every substream with the one it recorded at the first
//! receive and refuses a change; the box owner accepts a real key change by
//! clearing the recorded value.
//!
//! The payload is `fnvlist_pack()`ed in libnvpair's *native* encoding
//! (checked on real OpenZFS 2.3.2 streams, `testdata/`): a 4-byte header
//! (encoding 0 = native, endian 1 = little / 0 = big, 2 reserved bytes),
//! then the list: `nvl_version` i32, `nvl_nvflag` u32, pairs, and an i32 0.
//! Each pair is the in-memory `nvpair_t`: `nvp_size` i32 (the whole pair,
//! 8-aligned), `nvp_name_sz` i16 (with the NUL), `nvp_reserve` i16,
//! `nvp_value_elem` i32, `nvp_type` i32, the name padded to 8, the value.
//! An `NVLIST` value is a 24-byte `nvlist_t` image (`nvl_version`,
//! `nvl_nvflag`, `nvl_priv`, `nvl_flag`, `nvl_pad`), and the embedded list's
//! pairs and its end marker follow the pair.
//!
//! What OpenZFS 2.3.2 writes and what its kernel reads (module/nvpair/
//! nvpair.c, fnvpair.c; module/zfs/dmu_send.c, dsl_crypt.c, dmu_recv.c):
//! - `dmu_send_impl` builds the payload with `fnvlist_alloc()`, which is
//!   `nvlist_alloc(NV_UNIQUE_NAME)`; `crypt_keydata` comes from
//!   `dsl_crypto_populate_key_nvlist`, also `fnvlist_alloc()`, and is added
//!   with `fnvlist_add_nvlist` (its copy keeps the flag). `fnvlist_pack`
//!   packs it `NV_ENCODE_NATIVE`. So every list, top and embedded, carries
//!   `nvl_version` 0 (`NV_VERSION`) and `nvl_nvflag` 1 (`NV_UNIQUE_NAME`);
//!   the header is `00 01 00 00` on a little-endian sender. The three real
//!   payloads in `testdata/` have exactly that (`00 01 00 00`, version 0,
//!   flag 1, embedded image `0, 1, 0, 0, 0`).
//! - The kernel unpacks it in `dmu_recv_begin` with `nvlist_unpack`
//!   (`nvlist_xunpack` -> `nvs_native` -> `nvs_operation`): the top list's
//!   version and flag are copied from the stream unchecked
//!   (`nvs_native_nvlist`); an embedded list must have version 0
//!   (`nvs_embedded`, else `ENOTSUP`) and keeps its image's flag.
//! - Duplicate names are NOT refused on unpack. `nvs_decode_pairs` calls
//!   `nvt_add_nvpair` for each pair, which, for a list with a unique-name
//!   flag, unlinks the earlier pair of that name from the lookup hash table
//!   (`nvt_remove_nvpair`) and inserts the new one at the head of its
//!   bucket; `nvp_buf_link` still appends both to the ordered list. Every
//!   `nvlist_lookup_*` (`nvlist_lookup_common` -> `nvt_lookup_name_type`)
//!   therefore finds the LAST pair of a name, while a walk in order sees
//!   the first one first. `dmu_recv_stream` looks up `crypt_keydata` that
//!   way, and `dsl_crypto_recv_raw_key_check`/`_sync` its fields.
//! - A list whose flag is 0 refuses every lookup (`ENOTSUP`), so such a
//!   payload never re-keys anything; a flag of `NV_UNIQUE_NAME_TYPE` keys the
//!   table by name and type.
//!
//! Invariants: every length is checked against what is left before it is
//! used; at most [`MAX_PAIRS`] pairs and [`MAX_DEPTH`] levels; no panic on any
//! input. Only the canonical encoding OpenZFS writes is accepted: native
//! encoding, reserved bytes 0, `nvl_version` 0 and `nvl_nvflag`
//! `NV_UNIQUE_NAME` at every level (embedded images otherwise all zero),
//! exact pair sizes and zero padding, and no name twice in one list — the
//! kernel would read the last of two pairs, and a reader that reads the
//! first (this one did) would pin one key while the kernel installs
//! another. So an accepted payload has exactly one reading, the kernel's,
//! and packs back to the same bytes. Types other than uint64, uint8 array
//! and nvlist are kept as opaque bytes (never interpreted); nvlist arrays
//! are refused (no raw send payload has one).

use std::fmt;

use sha2::{Digest, Sha256};

/// Most pairs in one payload, all levels together (real ones have ~25).
pub const MAX_PAIRS: usize = 1024;
/// Deepest nesting (real payloads have 2 levels).
pub const MAX_DEPTH: usize = 4;

/// `NV_VERSION`: the only `nvl_version` there is.
pub const NV_VERSION: i32 = 0;
/// `NV_UNIQUE_NAME`: the `nvl_nvflag` of every list `fnvlist_alloc()` makes.
pub const NV_UNIQUE_NAME: i32 = 1;

const TYPE_UINT64: i32 = 8;
const TYPE_NVLIST: i32 = 19;
const TYPE_NVLIST_ARRAY: i32 = 20;
const TYPE_UINT8_ARRAY: i32 = 26;
/// `sizeof (nvlist_t)`: the image an embedded list's pair carries.
const NVLIST_IMAGE: usize = 24;
const PAIR_HEADER: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvError {
    #[error("nvlist byte {at}: {what}")]
    Malformed { at: usize, what: String },
    #[error("nvlist encoding {0} is not the native encoding raw sends use")]
    Encoding(u8),
    #[error("nvlist byte {at}: {what}, which OpenZFS never writes in a send stream")]
    NotCanonical { at: usize, what: String },
    #[error(
        "nvlist byte {at}: the name \"{name}\" appears twice in one list: zfs receive would use the last one, \
         not the first; refusing a list that can be read two ways"
    )]
    Duplicate { at: usize, name: String },
    #[error("nvlist has more than {MAX_PAIRS} pairs or {MAX_DEPTH} levels")]
    TooBig,
    #[error("the stream's key data lacks {0}")]
    Missing(&'static str),
}

/// One value, as far as zoffsite needs to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    U64(u64),
    Bytes(Vec<u8>),
    List(NvList),
    /// Any other type: its number, element count and raw value bytes (the
    /// whole 8-aligned value area), not interpreted.
    Other {
        vtype: i32,
        nelem: i32,
        bytes: Vec<u8>,
    },
}

/// A decoded nvlist: its pairs in order. [`unpack`] never returns two pairs
/// of one name in one list (at any level).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NvList {
    pub pairs: Vec<(String, Value)>,
}

impl NvList {
    /// The value of the pair called `name`; `None` if there is none, or
    /// (only in a list built by hand: [`unpack`] refuses them) more than one.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let mut found = self.pairs.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
        match (found.next(), found.next()) {
            (Some(v), None) => Some(v),
            _ => None,
        }
    }

    fn u64(&self, name: &'static str) -> Result<u64, NvError> {
        match self.get(name) {
            Some(Value::U64(v)) => Ok(*v),
            _ => Err(NvError::Missing(name)),
        }
    }

    fn bytes(&self, name: &'static str) -> Result<&[u8], NvError> {
        match self.get(name) {
            Some(Value::Bytes(b)) if !b.is_empty() => Ok(b),
            _ => Err(NvError::Missing(name)),
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    big_endian: bool,
    pairs: usize,
}

impl<'a> Reader<'a> {
    fn bad(&self, at: usize, what: impl Into<String>) -> NvError {
        NvError::Malformed { at, what: what.into() }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], NvError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        match end {
            Some(end) => {
                let b: &'a [u8] = self.b;
                let s = &b[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(self.bad(self.at, format!("{what} runs past the end"))),
        }
    }

    fn i32_at(&self, s: &[u8]) -> i32 {
        let a: [u8; 4] = s[..4].try_into().expect("4 bytes");
        if self.big_endian {
            i32::from_be_bytes(a)
        } else {
            i32::from_le_bytes(a)
        }
    }

    fn i16_at(&self, s: &[u8]) -> i16 {
        let a: [u8; 2] = s[..2].try_into().expect("2 bytes");
        if self.big_endian {
            i16::from_be_bytes(a)
        } else {
            i16::from_le_bytes(a)
        }
    }

    fn u64_at(&self, s: &[u8]) -> u64 {
        let a: [u8; 8] = s[..8].try_into().expect("8 bytes");
        if self.big_endian {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }

    /// `nvl_version` and `nvl_nvflag` at the start of `s` (the top list's
    /// 8 bytes, or an embedded list's image) must be what OpenZFS writes.
    fn version_and_flag(&self, at: usize, s: &[u8]) -> Result<(), NvError> {
        let version = self.i32_at(s);
        if version != NV_VERSION {
            return Err(NvError::NotCanonical { at, what: format!("nvl_version {version}") });
        }
        let flag = self.i32_at(&s[4..]);
        if flag != NV_UNIQUE_NAME {
            return Err(NvError::NotCanonical {
                at: at + 4,
                what: format!("nvl_nvflag {flag:#x} (send streams' lists are NV_UNIQUE_NAME, 0x1)"),
            });
        }
        Ok(())
    }

    /// The pairs of one list, up to and including its end marker.
    fn pairs(&mut self, depth: usize) -> Result<NvList, NvError> {
        if depth > MAX_DEPTH {
            return Err(NvError::TooBig);
        }
        let mut list = NvList::default();
        let mut names = std::collections::HashSet::new();
        loop {
            let start = self.at;
            let size = self.take(4, "a pair's size")?;
            let size = self.i32_at(size);
            if size == 0 {
                return Ok(list);
            }
            self.pairs += 1;
            if self.pairs > MAX_PAIRS {
                return Err(NvError::TooBig);
            }
            let size = usize::try_from(size).map_err(|_| self.bad(start, format!("pair size {size}")))?;
            if size % 8 != 0 || size < PAIR_HEADER {
                return Err(self.bad(start, format!("pair size {size} is not a multiple of 8 of at least 16")));
            }
            self.at = start;
            let pair = self.take(size, "a pair")?;
            let name_sz = self.i16_at(&pair[4..]);
            let reserve = self.i16_at(&pair[6..]);
            let nelem = self.i32_at(&pair[8..]);
            let vtype = self.i32_at(&pair[12..]);
            let name_sz = usize::try_from(name_sz)
                .ok()
                .filter(|&n| n >= 1 && PAIR_HEADER + n.next_multiple_of(8) <= size)
                .ok_or_else(|| self.bad(start, format!("name size {name_sz} in a {size}-byte pair")))?;
            let name_area = &pair[PAIR_HEADER..PAIR_HEADER + name_sz.next_multiple_of(8)];
            let name = match name_area[..name_sz].split_last() {
                Some((0, n)) if !n.contains(&0) => {
                    std::str::from_utf8(n).map_err(|_| self.bad(start, "a name that is not UTF-8"))?.to_owned()
                }
                _ => return Err(self.bad(start, "a name without its terminating NUL")),
            };
            let not_canonical = |what: String| NvError::NotCanonical { at: start, what };
            if reserve != 0 {
                return Err(not_canonical(format!("{}: nvp_reserve {reserve}", shown(&name))));
            }
            if name_area[name_sz..].iter().any(|&b| b != 0) {
                return Err(not_canonical(format!("{}: bytes after the name's NUL", shown(&name))));
            }
            let value = &pair[PAIR_HEADER + name_sz.next_multiple_of(8)..];
            let value = match vtype {
                TYPE_UINT64 if nelem == 1 && value.len() == 8 => Value::U64(self.u64_at(value)),
                TYPE_UINT64 => {
                    return Err(self.bad(start, format!("{}: a uint64 of {} bytes", shown(&name), value.len())))
                }
                TYPE_UINT8_ARRAY => {
                    let n = usize::try_from(nelem).ok().filter(|&n| n.next_multiple_of(8) == value.len()).ok_or_else(
                        || self.bad(start, format!("{}: {nelem} bytes in a {}-byte value", shown(&name), value.len())),
                    )?;
                    if value[n..].iter().any(|&b| b != 0) {
                        return Err(not_canonical(format!("{}: bytes after a byte array's end", shown(&name))));
                    }
                    Value::Bytes(value[..n].to_vec())
                }
                TYPE_NVLIST if nelem == 1 && value.len() == NVLIST_IMAGE => {
                    let image_at = start + size - NVLIST_IMAGE;
                    self.version_and_flag(image_at, value)?;
                    if value[8..].iter().any(|&b| b != 0) {
                        return Err(NvError::NotCanonical {
                            at: image_at + 8,
                            what: format!(
                                "{}: an embedded list image with nvl_priv, nvl_flag or nvl_pad set",
                                shown(&name)
                            ),
                        });
                    }
                    Value::List(self.pairs(depth + 1)?)
                }
                TYPE_NVLIST => return Err(self.bad(start, format!("{}: an nvlist pair of {size} bytes", shown(&name)))),
                TYPE_NVLIST_ARRAY => {
                    return Err(self.bad(start, format!("{}: nvlist arrays are not expected here", shown(&name))))
                }
                t => Value::Other { vtype: t, nelem, bytes: value.to_vec() },
            };
            // libnvpair keeps both and looks up the last: refuse, whatever
            // the types (NV_UNIQUE_NAME makes a name unique across types).
            if !names.insert(name.clone()) {
                return Err(NvError::Duplicate { at: start, name: shown(&name) });
            }
            list.pairs.push((name, value));
        }
    }
}

/// A pair's name as error text: it comes from the other side, so control
/// characters are escaped and the length is bounded.
fn shown(name: &str) -> String {
    let mut s: String = name.chars().take(64).flat_map(char::escape_debug).collect();
    if name.chars().count() > 64 {
        s.push('…');
    }
    s
}

/// Decodes a packed native-encoded nvlist; the whole buffer must be used.
/// Refuses anything but the canonical encoding OpenZFS writes (see the
/// module docs), duplicate names included.
pub fn unpack(b: &[u8]) -> Result<NvList, NvError> {
    if b.len() < 12 {
        return Err(NvError::Malformed { at: 0, what: format!("{} bytes is too short for an nvlist", b.len()) });
    }
    if b[0] != 0 {
        return Err(NvError::Encoding(b[0]));
    }
    let big_endian = match b[1] {
        1 => false,
        0 => true,
        e => return Err(NvError::Malformed { at: 1, what: format!("endianness byte {e}") }),
    };
    if b[2] != 0 || b[3] != 0 {
        return Err(NvError::NotCanonical { at: 2, what: format!("reserved header bytes {:02x} {:02x}", b[2], b[3]) });
    }
    let mut r = Reader { b, at: 12, big_endian, pairs: 0 };
    r.version_and_flag(4, &b[4..12])?;
    let list = r.pairs(0)?;
    if r.at != b.len() {
        return Err(r.bad(r.at, format!("{} bytes after the end of the list", b.len() - r.at)));
    }
    Ok(list)
}

/// Packs `list` the way `fnvlist_pack` does (native encoding, version 0,
/// `NV_UNIQUE_NAME` at every level), pairs in the order given, duplicates
/// included: for tests and the fuzzer, which craft hostile payloads. For
/// every `b` that [`unpack`] accepts, `pack(&unpack(b)?, b[1] == 0) == b`.
#[cfg(any(test, feature = "test-util"))]
pub fn pack(list: &NvList, big_endian: bool) -> Vec<u8> {
    fn pairs(out: &mut Vec<u8>, list: &NvList, i32b: &dyn Fn(i32) -> [u8; 4], big_endian: bool) {
        for (name, value) in &list.pairs {
            let padded = |b: &[u8]| {
                let mut v = b.to_vec();
                v.resize(b.len().next_multiple_of(8), 0);
                v
            };
            let (vtype, nelem, bytes) = match value {
                Value::U64(v) => {
                    (TYPE_UINT64, 1, (if big_endian { v.to_be_bytes() } else { v.to_le_bytes() }).to_vec())
                }
                Value::Bytes(b) => {
                    (TYPE_UINT8_ARRAY, i32::try_from(b.len()).expect("a test payload fits an nvlist"), padded(b))
                }
                Value::List(_) => {
                    let mut image = vec![0u8; NVLIST_IMAGE];
                    image[..4].copy_from_slice(&i32b(NV_VERSION));
                    image[4..8].copy_from_slice(&i32b(NV_UNIQUE_NAME));
                    (TYPE_NVLIST, 1, image)
                }
                Value::Other { vtype, nelem, bytes } => (*vtype, *nelem, bytes.clone()),
            };
            let mut name_area = name.as_bytes().to_vec();
            name_area.push(0);
            let name_sz = name_area.len();
            let name_area = padded(&name_area);
            let size = PAIR_HEADER + name_area.len() + bytes.len();
            out.extend_from_slice(&i32b(i32::try_from(size).expect("a test pair fits an nvlist")));
            let i16b = |v: i16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
            out.extend_from_slice(&i16b(i16::try_from(name_sz).expect("a test name fits an nvlist")));
            out.extend_from_slice(&i16b(0));
            out.extend_from_slice(&i32b(nelem));
            out.extend_from_slice(&i32b(vtype));
            out.extend_from_slice(&name_area);
            out.extend_from_slice(&bytes);
            if let Value::List(inner) = value {
                pairs(out, inner, i32b, big_endian);
            }
        }
        out.extend_from_slice(&i32b(0));
    }
    let i32b = |v: i32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut out = vec![0, u8::from(!big_endian), 0, 0];
    out.extend_from_slice(&i32b(NV_VERSION));
    out.extend_from_slice(&i32b(NV_UNIQUE_NAME));
    pairs(&mut out, list, &i32b, big_endian);
    out
}

/// The fingerprint of a dataset's wrapped master key as a raw send carries
/// it: SHA-256 over every field a key change (`zfs change-key`) rewrites or
/// that decides how the key is unwrapped (suite, key GUID and version, the
/// wrapped master and HMAC keys, the wrapping IV and MAC, the key format and
/// PBKDF2 parameters). Stable across snapshots of one dataset; a key change
/// draws a new IV, so it always changes the fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyWrap([u8; 32]);

/// Text form, as stored in the box's [`crate::boxside::KEYWRAP_PROPERTY`].
const KEYWRAP_PREFIX: &str = "sha256:";

impl KeyWrap {
    /// Reads the fingerprint from a substream BEGIN payload.
    pub fn from_begin_payload(payload: &[u8]) -> Result<KeyWrap, NvError> {
        let top = unpack(payload)?;
        let Some(Value::List(k)) = top.get("crypt_keydata") else {
            return Err(NvError::Missing("crypt_keydata"));
        };
        let mut h = Sha256::new();
        for name in
            ["DSL_CRYPTO_SUITE", "DSL_CRYPTO_GUID", "DSL_CRYPTO_VERSION", "keyformat", "pbkdf2iters", "pbkdf2salt"]
        {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(k.u64(name)?.to_be_bytes());
        }
        for name in ["DSL_CRYPTO_MASTER_KEY_1", "DSL_CRYPTO_HMAC_KEY_1", "DSL_CRYPTO_IV", "DSL_CRYPTO_MAC"] {
            let b = k.bytes(name)?;
            h.update(name.as_bytes());
            h.update([0]);
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
        Ok(KeyWrap(h.finalize().into()))
    }

    /// Parses the stored text form (`sha256:` and 64 lowercase hex digits).
    pub fn parse(s: &str) -> Option<KeyWrap> {
        let hex = s.strip_prefix(KEYWRAP_PREFIX)?;
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(KeyWrap(out))
    }
}

impl fmt::Display for KeyWrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(KEYWRAP_PREFIX)?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RAW_FULL: &[u8] = include_bytes!("../testdata/raw-full.zstream");
    const RESUMED_INCR: &[u8] = include_bytes!("../testdata/raw-resumed-incr.zstream");
    const RAW_I: &[u8] = include_bytes!("../testdata/raw-I.zstream");

    /// The BEGIN payload of the substream BEGIN record at `at`.
    fn payload(stream: &[u8], at: usize) -> &[u8] {
        let len = u32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
        &stream[at + crate::records::RECORD_LEN..at + crate::records::RECORD_LEN + len]
    }

    #[test]
    fn real_payloads_decode_to_what_zstreamdump_shows() {
        let top = unpack(payload(RAW_FULL, 0)).unwrap();
        let Some(Value::List(k)) = top.get("crypt_keydata") else { panic!("{top:?}") };
        assert_eq!(k.get("DSL_CRYPTO_SUITE"), Some(&Value::U64(8)));
        assert_eq!(k.get("DSL_CRYPTO_VERSION"), Some(&Value::U64(1)));
        assert_eq!(k.get("keyformat"), Some(&Value::U64(2)));
        assert_eq!(k.get("mdn_blksz"), Some(&Value::U64(16384)));
        assert!(matches!(k.get("DSL_CRYPTO_MASTER_KEY_1"), Some(Value::Bytes(b)) if b.len() == 32));
        assert!(matches!(k.get("DSL_CRYPTO_HMAC_KEY_1"), Some(Value::Bytes(b)) if b.len() == 64));
        assert!(matches!(k.get("DSL_CRYPTO_IV"), Some(Value::Bytes(b)) if b.len() == 12));
        assert!(matches!(k.get("DSL_CRYPTO_MAC"), Some(Value::Bytes(b)) if b.len() == 16));
        // A resumed stream's payload also names where it resumes.
        let top = unpack(payload(RESUMED_INCR, 0)).unwrap();
        assert_eq!(top.get("resume_object"), Some(&Value::U64(33)));
        assert!(matches!(top.get("crypt_keydata"), Some(Value::List(_))));
    }

    #[test]
    fn the_fingerprint_is_stable_within_a_dataset_and_differs_between_keys() {
        // raw-I.zstream: a compound header (312) and its END (312), then
        // three substreams of t/src, the same dataset as raw-full.
        let full = KeyWrap::from_begin_payload(payload(RAW_FULL, 0)).unwrap();
        let first_sub = KeyWrap::from_begin_payload(payload(RAW_I, 624)).unwrap();
        assert_eq!(full, first_sub, "same dataset, same wrapped key");
        let other = KeyWrap::from_begin_payload(payload(RESUMED_INCR, 0)).unwrap();
        assert_ne!(full, other, "t/big has a key of its own");
        let text = full.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 64);
        assert_eq!(KeyWrap::parse(&text), Some(full));
        for bad in ["", "sha256:", "sha256:XYZ", &text.to_uppercase(), &text[..70], &format!("{text}0")] {
            assert_eq!(KeyWrap::parse(bad), None, "{bad}");
        }
    }

    /// Flips one byte of the wrapped key data: the fingerprint must change
    /// for every byte of the fields a key change rewrites.
    #[test]
    fn every_byte_of_the_wrapping_changes_the_fingerprint() {
        let p = payload(RAW_FULL, 0).to_vec();
        let base = KeyWrap::from_begin_payload(&p).unwrap();
        let Value::List(k) = unpack(&p).unwrap().get("crypt_keydata").cloned().unwrap() else { unreachable!() };
        for field in ["DSL_CRYPTO_MASTER_KEY_1", "DSL_CRYPTO_HMAC_KEY_1", "DSL_CRYPTO_IV", "DSL_CRYPTO_MAC"] {
            let Some(Value::Bytes(val)) = k.get(field) else { unreachable!() };
            let at = p.windows(val.len()).position(|w| w == val.as_slice()).unwrap();
            for i in 0..val.len() {
                let mut q = p.clone();
                q[at + i] ^= 0x01;
                assert_ne!(KeyWrap::from_begin_payload(&q).unwrap(), base, "{field} byte {i}");
            }
        }
    }

    #[test]
    fn missing_or_malformed_key_data_is_refused() {
        let p = payload(RAW_FULL, 0);
        // Renaming crypt_keydata hides it.
        let mut q = p.to_vec();
        let at = q.windows(13).position(|w| w == b"crypt_keydata").unwrap();
        q[at] = b'k';
        assert_eq!(KeyWrap::from_begin_payload(&q), Err(NvError::Missing("crypt_keydata")));
        // Every truncation is an error, never a panic.
        for n in 0..p.len() {
            assert!(unpack(&p[..n]).is_err(), "cut at {n}");
        }
        // Trailing bytes, another encoding, a bad endianness byte.
        let mut q = p.to_vec();
        q.extend_from_slice(&[0; 8]);
        assert!(unpack(&q).is_err());
        let mut q = p.to_vec();
        q[0] = 1;
        assert_eq!(unpack(&q), Err(NvError::Encoding(1)));
        let mut q = p.to_vec();
        q[1] = 7;
        assert!(unpack(&q).is_err());
    }

    #[test]
    fn nesting_and_pair_counts_are_bounded() {
        // A list nested MAX_DEPTH + 2 deep: each level is one nvlist pair.
        let mut deep = NvList::default();
        for _ in 0..MAX_DEPTH + 2 {
            deep = NvList { pairs: vec![("n".into(), Value::List(deep))] };
        }
        assert_eq!(unpack(&pack(&deep, false)), Err(NvError::TooBig));
        // MAX_DEPTH + 1 levels (the top and MAX_DEPTH nested) are fine.
        let mut ok = NvList::default();
        for _ in 0..MAX_DEPTH {
            ok = NvList { pairs: vec![("n".into(), Value::List(ok))] };
        }
        assert_eq!(unpack(&pack(&ok, false)), Ok(ok));
        // MAX_PAIRS + 1 uint64 pairs in one list.
        let many = NvList { pairs: (0..=MAX_PAIRS).map(|i| (format!("n{i}"), Value::U64(7))).collect() };
        assert_eq!(unpack(&pack(&many, false)), Err(NvError::TooBig));
        let mut fewer = many.clone();
        fewer.pairs.pop();
        assert_eq!(unpack(&pack(&fewer, false)), Ok(fewer));
    }

    /// Every list OpenZFS 2.3.2 wrote into the real streams: header
    /// `00 01 00 00`, `nvl_version` 0, `nvl_nvflag` NV_UNIQUE_NAME, and the
    /// embedded crypt_keydata image version 0, flag 1, the rest zero.
    #[test]
    fn real_payloads_carry_version_0_and_nv_unique_name_and_pack_back_to_themselves() {
        let payloads = [payload(RAW_FULL, 0), payload(RESUMED_INCR, 0), payload(RAW_I, 624)];
        for p in payloads {
            assert_eq!(&p[..12], &[0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
            let at = p.windows(14).position(|w| w == b"crypt_keydata\0").unwrap();
            assert_eq!(&p[at + 16..at + 40], &[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            let list = unpack(p).unwrap();
            assert_eq!(pack(&list, false), p, "the reader accepts the canonical form only");
            // The same list from a big-endian sender reads the same.
            let be = pack(&list, true);
            assert_eq!(&be[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            assert_eq!(unpack(&be), Ok(list.clone()));
            assert_eq!(KeyWrap::from_begin_payload(&be), KeyWrap::from_begin_payload(p));
        }
    }

    fn key_data(p: &[u8]) -> NvList {
        match unpack(p).unwrap().get("crypt_keydata") {
            Some(Value::List(k)) => k.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// The payload of the finding: the pinned crypt_keydata first, another
    /// after it. libnvpair's lookup (what zfs receive uses) returns the
    /// last; this reader must not return the first.
    #[test]
    fn a_second_crypt_keydata_after_the_pinned_one_is_refused() {
        let pinned_payload = payload(RAW_FULL, 0);
        let pinned = KeyWrap::from_begin_payload(pinned_payload).unwrap();
        let other = key_data(payload(RESUMED_INCR, 0));
        let mut top = unpack(pinned_payload).unwrap();
        top.pairs.push(("crypt_keydata".into(), Value::List(other.clone())));
        let crafted = pack(&top, false);
        let r = KeyWrap::from_begin_payload(&crafted);
        assert!(matches!(&r, Err(NvError::Duplicate { name, .. }) if name == "crypt_keydata"), "{r:?}");
        assert_ne!(r, Ok(pinned));
        let text = r.unwrap_err().to_string();
        assert!(text.contains("twice") && text.contains("crypt_keydata") && text.contains("last"), "{text}");
        // The other order, and a hand-built list's lookup.
        top.pairs.swap(0, 1);
        assert!(matches!(unpack(&pack(&top, false)), Err(NvError::Duplicate { .. })));
        assert_eq!(top.get("crypt_keydata"), None, "get never picks one of two");
    }

    /// The same inside crypt_keydata: each field the fingerprint reads, and
    /// one it does not, planted twice, the pinned value first.
    #[test]
    fn a_duplicate_field_inside_the_key_data_is_refused() {
        let p = payload(RAW_FULL, 0);
        let mut top = unpack(p).unwrap();
        let other = key_data(payload(RESUMED_INCR, 0));
        let Some((_, Value::List(k))) = top.pairs.iter().find(|(n, _)| n == "crypt_keydata").cloned() else {
            unreachable!()
        };
        for (field, _) in &k.pairs {
            let theirs = other.get(field).cloned().unwrap();
            for second in [theirs, Value::U64(1), Value::Bytes(vec![1; 8])] {
                let mut k2 = k.clone();
                k2.pairs.push((field.clone(), second));
                let mut t2 = top.clone();
                t2.pairs[0].1 = Value::List(k2);
                let r = KeyWrap::from_begin_payload(&pack(&t2, false));
                assert!(matches!(&r, Err(NvError::Duplicate { name, .. }) if name == field), "{field}: {r:?}");
            }
        }
        // A duplicate at the top level that is not the key data.
        top.pairs.push(("resume_object".into(), Value::U64(1)));
        top.pairs.push(("resume_object".into(), Value::U64(2)));
        assert!(matches!(unpack(&pack(&top, false)), Err(NvError::Duplicate { .. })));
    }

    /// `nvl_version`, `nvl_nvflag` (top and embedded), the reserved header
    /// bytes, the image's other fields, `nvp_reserve` and every padding:
    /// anything OpenZFS would not have written is refused.
    #[test]
    fn anything_but_the_canonical_encoding_is_refused() {
        let p = payload(RAW_FULL, 0);
        let image = p.windows(14).position(|w| w == b"crypt_keydata\0").unwrap() + 16;
        let canon = |q: &[u8]| matches!(unpack(q), Err(NvError::NotCanonical { .. }));
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        let mut set = |what: &str, at: usize, v: &[u8]| {
            let mut q = p.to_vec();
            q[at..at + v.len()].copy_from_slice(v);
            cases.push((what.into(), q));
        };
        for (i, v) in [1i32, -1].iter().enumerate() {
            set(&format!("top version {i}"), 4, &v.to_le_bytes());
            set(&format!("embedded version {i}"), image, &v.to_le_bytes());
        }
        for flag in [0u32, 2, 3, 0x8000_0001] {
            set(&format!("top flag {flag}"), 8, &flag.to_le_bytes());
            set(&format!("embedded flag {flag}"), image + 4, &flag.to_le_bytes());
        }
        set("reserved byte 2", 2, &[1]);
        set("reserved byte 3", 3, &[0x80]);
        for off in [8, 16, 20] {
            set(&format!("image byte {off}"), image + off, &[1]);
        }
        // crypt_keydata's pair: nvp_reserve, then the NUL padding after
        // "crypt_keydata\0" (14 bytes padded to 16).
        set("nvp_reserve", image - 16 - 16 + 6, &[1]);
        set("name padding", image - 1, b"x");
        // DSL_CRYPTO_IV is 12 bytes padded to 16.
        let iv = p.windows(14).position(|w| w == b"DSL_CRYPTO_IV\0").unwrap() + 16 + 12;
        set("array padding", iv, &[1]);
        for (what, q) in &cases {
            assert!(canon(q), "{what}: {:?}", unpack(q));
            assert!(KeyWrap::from_begin_payload(q).is_err(), "{what}");
        }
        // A byte array whose pair is 8 bytes longer than its elements need.
        let mut top = unpack(p).unwrap();
        top.pairs.push(("x".into(), Value::Bytes(vec![9; 3])));
        let mut q = pack(&top, false);
        let at = q.len() - 4 - 8 - 8 - 16;
        assert_eq!(&q[at + 16..at + 18], b"x\0");
        q[at..at + 4].copy_from_slice(&40i32.to_le_bytes());
        q.splice(q.len() - 4..q.len() - 4, [0u8; 8]);
        assert!(matches!(unpack(&q), Err(NvError::Malformed { .. })), "{:?}", unpack(&q));
        // The message names what is wrong and says why it is refused.
        let flag0 = &cases.iter().find(|(what, _)| what == "top flag 0").unwrap().1;
        let text = unpack(flag0).unwrap_err().to_string();
        assert!(text.contains("nvl_nvflag 0x0") && text.contains("OpenZFS never writes"), "{text}");
    }

    proptest! {
        #[test]
        fn never_panics_on_corrupted_real_payloads(flips in proptest::collection::vec((0usize..1108, any::<u8>()), 1..8)) {
            for base in [payload(RAW_FULL, 0), payload(RESUMED_INCR, 0)] {
                let mut q = base.to_vec();
                for (at, x) in &flips {
                    let i = at % q.len();
                    q[i] ^= x;
                }
                let _ = KeyWrap::from_begin_payload(&q);
            }
        }

        /// A copy of any pair planted anywhere in the same list, at the
        /// top or inside crypt_keydata, its value kept or changed: refused
        /// as a duplicate, and no fingerprint is read.
        #[test]
        fn a_planted_duplicate_is_always_refused(
            inner in any::<bool>(),
            pick in any::<usize>(),
            place in any::<usize>(),
            change in proptest::option::of(any::<u64>()),
            resumed in any::<bool>(),
        ) {
            let p = if resumed { payload(RESUMED_INCR, 0) } else { payload(RAW_FULL, 0) };
            let mut top = unpack(p).unwrap();
            let k = top.pairs.iter().position(|(n, _)| n == "crypt_keydata").unwrap();
            let mut keys = key_data(p);
            let list = if inner { &mut keys } else { &mut top };
            let (name, mut value) = list.pairs[pick % list.pairs.len()].clone();
            if let Some(x) = change {
                value = match value {
                    Value::U64(v) => Value::U64(v ^ x.max(1)),
                    Value::Bytes(mut b) => { b[0] ^= x.to_le_bytes()[0].max(1); Value::Bytes(b) }
                    _ => Value::U64(x),
                };
            }
            let at = place % (list.pairs.len() + 1);
            list.pairs.insert(at, (name.clone(), value));
            if inner {
                top.pairs[k].1 = Value::List(keys);
            }
            let crafted = pack(&top, false);
            let r = unpack(&crafted);
            prop_assert!(matches!(&r, Err(NvError::Duplicate { name: n, .. }) if *n == name), "{:?}", r);
            prop_assert!(KeyWrap::from_begin_payload(&crafted).is_err());
        }

        /// Lists of unique names pack and unpack to themselves, in both
        /// byte orders; once a name repeats, they no longer unpack.
        #[test]
        fn unique_lists_round_trip_and_duplicates_do_not(
            names in proptest::collection::vec("[a-z_]{0,12}", 0..12),
            vals in proptest::collection::vec(any::<u64>(), 12),
            be in any::<bool>(),
        ) {
            let pairs: Vec<(String, Value)> = names.iter().enumerate().map(|(i, n)| {
                let v = match vals[i] % 3 {
                    0 => Value::U64(vals[i]),
                    1 => Value::Bytes(vals[i].to_le_bytes()[..(vals[i] % 9) as usize].to_vec()),
                    _ => Value::List(NvList { pairs: vec![(n.clone(), Value::U64(vals[i]))] }),
                };
                (n.clone(), v)
            }).collect();
            let list = NvList { pairs };
            let unique = names.iter().collect::<std::collections::HashSet<_>>().len() == names.len();
            let r = unpack(&pack(&list, be));
            if unique {
                prop_assert_eq!(r, Ok(list));
            } else {
                prop_assert!(matches!(r, Err(NvError::Duplicate { .. })), "{:?}", r);
            }
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = unpack(&b);
        }
    }
}
