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
//! An `NVLIST` value is a 24-byte `nvlist_t` image, and the embedded list's
//! pairs and its end marker follow the pair.
//!
//! Invariants: every length is checked against what is left before it is
//! used; at most [`MAX_PAIRS`] pairs and [`MAX_DEPTH`] levels; no panic on any
//! input. Types other than uint64, uint8 array and nvlist are kept as
//! opaque bytes (never interpreted); nvlist arrays are refused (no raw send
//! payload has one).

use std::fmt;

use sha2::{Digest, Sha256};

/// Most pairs in one payload, all levels together (real ones have ~25).
pub const MAX_PAIRS: usize = 1024;
/// Deepest nesting (real payloads have 2 levels).
pub const MAX_DEPTH: usize = 4;

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
    /// Any other type: its number and raw value bytes, not interpreted.
    Other(i32, Vec<u8>),
}

/// A decoded nvlist: its pairs in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NvList {
    pub pairs: Vec<(String, Value)>,
}

impl NvList {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
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

    /// The pairs of one list, up to and including its end marker.
    fn pairs(&mut self, depth: usize) -> Result<NvList, NvError> {
        if depth > MAX_DEPTH {
            return Err(NvError::TooBig);
        }
        let mut list = NvList::default();
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
            let nelem = self.i32_at(&pair[8..]);
            let vtype = self.i32_at(&pair[12..]);
            let name_sz = usize::try_from(name_sz)
                .ok()
                .filter(|&n| n >= 1 && PAIR_HEADER + n.next_multiple_of(8) <= size)
                .ok_or_else(|| self.bad(start, format!("name size {name_sz} in a {size}-byte pair")))?;
            let name = &pair[PAIR_HEADER..PAIR_HEADER + name_sz];
            let name = match name.split_last() {
                Some((0, n)) if !n.contains(&0) => {
                    std::str::from_utf8(n).map_err(|_| self.bad(start, "a name that is not UTF-8"))?.to_owned()
                }
                _ => return Err(self.bad(start, "a name without its terminating NUL")),
            };
            let value = &pair[PAIR_HEADER + name_sz.next_multiple_of(8)..];
            let value = match vtype {
                TYPE_UINT64 if nelem == 1 && value.len() == 8 => Value::U64(self.u64_at(value)),
                TYPE_UINT64 => {
                    return Err(self.bad(start, format!("{}: a uint64 of {} bytes", shown(&name), value.len())))
                }
                TYPE_UINT8_ARRAY => {
                    let n = usize::try_from(nelem).ok().filter(|&n| n <= value.len()).ok_or_else(|| {
                        self.bad(start, format!("{}: {nelem} bytes in a {}-byte value", shown(&name), value.len()))
                    })?;
                    Value::Bytes(value[..n].to_vec())
                }
                TYPE_NVLIST if nelem == 1 && value.len() == NVLIST_IMAGE => Value::List(self.pairs(depth + 1)?),
                TYPE_NVLIST => return Err(self.bad(start, format!("{}: an nvlist pair of {size} bytes", shown(&name)))),
                TYPE_NVLIST_ARRAY => {
                    return Err(self.bad(start, format!("{}: nvlist arrays are not expected here", shown(&name))))
                }
                t => Value::Other(t, value.to_vec()),
            };
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
    let mut r = Reader { b, at: 12, big_endian, pairs: 0 };
    let list = r.pairs(0)?;
    if r.at != b.len() {
        return Err(r.bad(r.at, format!("{} bytes after the end of the list", b.len() - r.at)));
    }
    Ok(list)
}

/// The fingerprint of a dataset's wrapped master key as a raw send carries
/// it: SHA-256 over every field a key change (`zfs change-key`) rewrites or
/// that decides how the key is unwrapped (suite, key GUID and version, the
/// wrapped master and HMAC keys, the wrapping IV and MAC, the key format and
/// PBKDF2 parameters). Stable across snapshots of one dataset; a key change
/// draws a new IV, so it always changes the fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyWrap([u8; 32]);

/// Text form, as stored in the box's `zoffsite:keywrap` property.
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
        &stream[at + 312..at + 312 + len]
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
        let mut b = vec![0u8, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        let pair = |b: &mut Vec<u8>| {
            b.extend_from_slice(&48i32.to_le_bytes()); // 16 + 8 (name "n\0" padded) + 24
            b.extend_from_slice(&2i16.to_le_bytes());
            b.extend_from_slice(&0i16.to_le_bytes());
            b.extend_from_slice(&1i32.to_le_bytes());
            b.extend_from_slice(&TYPE_NVLIST.to_le_bytes());
            b.extend_from_slice(b"n\0\0\0\0\0\0\0");
            b.extend_from_slice(&[0; NVLIST_IMAGE]);
        };
        for _ in 0..MAX_DEPTH + 2 {
            pair(&mut b);
        }
        for _ in 0..MAX_DEPTH + 3 {
            b.extend_from_slice(&[0; 4]);
        }
        assert_eq!(unpack(&b), Err(NvError::TooBig));
        // MAX_PAIRS + 1 uint64 pairs in one list.
        let mut b = vec![0u8, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        for _ in 0..=MAX_PAIRS {
            b.extend_from_slice(&32i32.to_le_bytes());
            b.extend_from_slice(&2i16.to_le_bytes());
            b.extend_from_slice(&0i16.to_le_bytes());
            b.extend_from_slice(&1i32.to_le_bytes());
            b.extend_from_slice(&TYPE_UINT64.to_le_bytes());
            b.extend_from_slice(b"n\0\0\0\0\0\0\0");
            b.extend_from_slice(&7u64.to_le_bytes());
        }
        b.extend_from_slice(&[0; 4]);
        assert_eq!(unpack(&b), Err(NvError::TooBig));
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

        #[test]
        fn never_panics_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = unpack(&b);
        }
    }
}
