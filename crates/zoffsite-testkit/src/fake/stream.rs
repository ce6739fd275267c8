//! The fake's send streams: built record by record in the layout real
//! OpenZFS 2.3.2 writes (see `zoffsite_core::records`), with real
//! fletcher-4 checksums, so that the box's strict validator accepts them
//! as it accepts real ones; and read back, record by record, by the fake's
//! `zfs receive`.
//!
//! A substream is a BEGIN (raw: its payload is a packed nvlist with the
//! dataset's `crypt_keydata`, as `nvlist::pack` writes it), one WRITE per
//! [`Chunk`] (offset = the chunk's index times [`CHUNK_MAX`], the chunk's
//! seed in the `drr_key` area, the payload made from it), and an END. A
//! `-I` stream is a compound stream of such substreams. The key data also
//! carries a `fake_zfs` pair: the fake's `zfs receive` then checks every
//! WRITE payload against its seed (a stream from elsewhere, like the real
//! captures in core's testdata, has no such pair, and its WRITEs are kept as
//! opaque chunks).

use zoffsite_core::nvlist::{self, NvList, Value};
use zoffsite_core::records::{craft, RECORD_LEN};
use zoffsite_core::stream::{encode_begin, FEATURE_RAW, FEATURE_RESUMING};

use super::world::{mix, payload, Chunk, Key, CHUNK_MAX};

const FEATURE_SA_SPILL: u64 = 1 << 2;
const FEATURE_LZ4: u64 = 1 << 17;
const FEATURE_COMPRESSED: u64 = 1 << 22;
const SUBSTREAM: u64 = 1;
const COMPOUND: u64 = 2;
const DRR_WRITE: u32 = 3;
const DRR_END: u32 = 5;
/// `ZIO_COMPRESS_OFF`: a raw block of a `compression=off` dataset.
const COMPRESS_OFF: u8 = 2;
/// The object the fake's data lives in.
const OBJECT: u64 = 2;
/// The pair that marks a stream as the fake's own.
pub const MARKER: &str = "fake_zfs";

/// One substream to build.
pub struct Sub<'a> {
    /// `dataset@snapshot` on the sending side.
    pub toname: &'a str,
    pub toguid: u64,
    /// 0 for a full stream.
    pub fromguid: u64,
    pub creation: i64,
    /// `Some`: a raw send of an encrypted dataset. `None`: what `zfs send
    /// -w` sends for an unencrypted one, plaintext.
    pub key: Option<&'a Key>,
    /// The chunks, each with its index in the dataset's content.
    pub chunks: Vec<(usize, Chunk)>,
    /// A resumed send (`zfs send -t`): where it resumes.
    pub resume: Option<(u64, u64)>,
}

fn put32(r: &mut [u8], at: usize, v: u32) {
    r[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(r: &mut [u8], at: usize, v: u64) {
    r[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get32(r: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(r[at..at + 4].try_into().expect("4 bytes"))
}

fn get64(r: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(r[at..at + 8].try_into().expect("8 bytes"))
}

/// `crypt_keydata` as `dsl_crypto_populate_key_nvlist` fills it (the
/// fields `KeyWrap` reads, and the portable MAC beside them).
pub fn keydata(k: &Key) -> NvList {
    NvList {
        pairs: vec![
            ("DSL_CRYPTO_SUITE".into(), Value::U64(k.suite)),
            ("DSL_CRYPTO_GUID".into(), Value::U64(k.guid)),
            ("DSL_CRYPTO_VERSION".into(), Value::U64(k.version)),
            ("DSL_CRYPTO_MASTER_KEY_1".into(), Value::Bytes(k.master.clone())),
            ("DSL_CRYPTO_HMAC_KEY_1".into(), Value::Bytes(k.hmac.clone())),
            ("DSL_CRYPTO_IV".into(), Value::Bytes(k.iv.clone())),
            ("DSL_CRYPTO_MAC".into(), Value::Bytes(k.mac.clone())),
            ("portable_mac".into(), Value::Bytes(k.mac.iter().chain(&k.iv).copied().collect())),
            ("keyformat".into(), Value::U64(k.keyformat)),
            ("pbkdf2iters".into(), Value::U64(k.pbkdf2iters)),
            ("pbkdf2salt".into(), Value::U64(k.pbkdf2salt)),
        ],
    }
}

/// The key in a `crypt_keydata` list.
pub fn key_of(list: &NvList) -> Option<Key> {
    let u = |n: &str| match list.get(n) {
        Some(Value::U64(v)) => Some(*v),
        _ => None,
    };
    let b = |n: &str| match list.get(n) {
        Some(Value::Bytes(v)) => Some(v.clone()),
        _ => None,
    };
    Some(Key {
        suite: u("DSL_CRYPTO_SUITE")?,
        guid: u("DSL_CRYPTO_GUID")?,
        version: u("DSL_CRYPTO_VERSION")?,
        keyformat: u("keyformat")?,
        pbkdf2iters: u("pbkdf2iters")?,
        pbkdf2salt: u("pbkdf2salt")?,
        master: b("DSL_CRYPTO_MASTER_KEY_1")?,
        hmac: b("DSL_CRYPTO_HMAC_KEY_1")?,
        iv: b("DSL_CRYPTO_IV")?,
        mac: b("DSL_CRYPTO_MAC")?,
    })
}

/// The fingerprint `serve` pins for a key (core's `KeyWrap`), as text.
pub fn fingerprint(k: &Key) -> String {
    let top = NvList { pairs: vec![("crypt_keydata".into(), Value::List(keydata(k)))] };
    nvlist::KeyWrap::from_begin_payload(&nvlist::pack(&top, false)).expect("a complete key").to_string()
}

fn substream(out: &mut Vec<u8>, s: &Sub<'_>) {
    let mut features = FEATURE_SA_SPILL | FEATURE_LZ4 | FEATURE_COMPRESSED;
    let mut pairs = Vec::new();
    if let Some(k) = s.key {
        features |= FEATURE_RAW;
        pairs.push(("crypt_keydata".to_owned(), Value::List(keydata(k))));
    }
    if let Some((object, offset)) = s.resume {
        features |= FEATURE_RESUMING;
        pairs.push(("resume_object".into(), Value::U64(object)));
        pairs.push(("resume_offset".into(), Value::U64(offset)));
    }
    let body = if pairs.is_empty() {
        Vec::new()
    } else {
        pairs.push((MARKER.into(), Value::U64(1)));
        nvlist::pack(&NvList { pairs }, false)
    };
    let mut begin = encode_begin(features, SUBSTREAM, s.toguid, s.fromguid, s.toname, false);
    put32(&mut begin, 4, u32::try_from(body.len()).expect("a BEGIN payload fits"));
    put64(&mut begin, 24, s.creation.max(0).unsigned_abs());
    out.extend_from_slice(&begin);
    out.extend_from_slice(&body);
    for &(index, c) in &s.chunks {
        let mut w = [0u8; RECORD_LEN];
        put32(&mut w, 0, DRR_WRITE);
        put64(&mut w, 8, OBJECT);
        put32(&mut w, 16, 19); // DMU_OT_PLAIN_FILE_CONTENTS
        put64(&mut w, 24, (index * CHUNK_MAX) as u64);
        put64(&mut w, 32, u64::from(c.len));
        put64(&mut w, 40, s.toguid);
        w[50] = COMPRESS_OFF;
        put64(&mut w, 56, c.seed);
        put64(&mut w, 96, u64::from(c.len));
        out.extend_from_slice(&w);
        out.extend_from_slice(&payload(c));
    }
    let mut end = [0u8; RECORD_LEN];
    put32(&mut end, 0, DRR_END);
    put64(&mut end, 40, s.toguid);
    out.extend_from_slice(&end);
}

/// `zfs send -w [-i]` or `-t`: one substream.
pub fn single(s: &Sub<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    substream(&mut out, s);
    craft::fix_checksums(&mut out);
    out
}

/// `zfs send -w -I`: a compound stream named after its last snapshot.
pub fn compound(subs: &[Sub<'_>]) -> Vec<u8> {
    let last = subs.last().map_or("", |s| s.toname);
    let mut out = encode_begin(0, COMPOUND, 0, 0, last, false);
    let mut end = [0u8; RECORD_LEN];
    put32(&mut end, 0, DRR_END);
    out.extend_from_slice(&end);
    for s in subs {
        substream(&mut out, s);
    }
    out.extend_from_slice(&end);
    craft::fix_checksums(&mut out);
    out
}

/// A substream's BEGIN, as the fake's receive reads it.
#[derive(Debug, Clone)]
pub struct Begin {
    pub toname: String,
    pub toguid: u64,
    pub fromguid: u64,
    pub creation: i64,
    pub raw: bool,
    pub resuming: bool,
    /// The key data, or why it cannot be read.
    pub key: Result<Option<Key>, String>,
    pub resume_offset: u64,
    /// The stream is the fake's own: its WRITE payloads can be checked.
    pub ours: bool,
}

/// What one record header is, for the fake's receive.
pub enum Record {
    /// A compound stream's header.
    Compound,
    Begin(Begin),
    /// A WRITE: the chunk's index in the dataset's content (`None` in a
    /// stream the fake did not make) and the chunk.
    Write {
        index: Option<usize>,
        chunk: Chunk,
    },
    End {
        toguid: u64,
    },
    /// Any other record: not modelled, passed over.
    Other,
}

/// Reads the record at the start of `rec` (its header and payload, as
/// `craft::records` delimited them).
pub fn read(rec: &[u8], ours: bool) -> Result<Record, String> {
    let rtype = get32(rec, 0);
    let body = &rec[RECORD_LEN..];
    match rtype {
        0 => {
            if get64(rec, 8) != zoffsite_core::stream::DMU_BACKUP_MAGIC {
                return Err("invalid stream (bad magic number)".into());
            }
            let versioninfo = get64(rec, 16);
            if versioninfo & 0b11 == COMPOUND {
                return Ok(Record::Compound);
            }
            let features = versioninfo >> 2;
            let name = &rec[56..RECORD_LEN];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let mut b = Begin {
                toname: String::from_utf8_lossy(&name[..end]).into_owned(),
                toguid: get64(rec, 40),
                fromguid: get64(rec, 48),
                creation: i64::try_from(get64(rec, 24)).unwrap_or(i64::MAX),
                raw: features & FEATURE_RAW != 0,
                resuming: features & FEATURE_RESUMING != 0,
                key: Ok(None),
                resume_offset: 0,
                ours: false,
            };
            if !body.is_empty() {
                match nvlist::unpack(body) {
                    Ok(top) => {
                        b.ours = top.get(MARKER).is_some();
                        if let Some(Value::U64(o)) = top.get("resume_offset") {
                            b.resume_offset = *o;
                        }
                        b.key = match top.get("crypt_keydata") {
                            Some(Value::List(k)) => key_of(k).map(Some).ok_or_else(|| "incomplete key data".into()),
                            _ => Ok(None),
                        };
                    }
                    // The real kernel would read such a list its own way
                    // (a duplicate name: the last one); the fake does not
                    // model that and refuses it.
                    Err(e) => b.key = Err(format!("key data the fake cannot read: {e}")),
                }
            }
            Ok(Record::Begin(b))
        }
        DRR_WRITE if !ours => Ok(Record::Write { index: None, chunk: opaque(body) }),
        DRR_WRITE => {
            let offset = get64(rec, 24);
            if get64(rec, 8) != OBJECT || !offset.is_multiple_of(CHUNK_MAX as u64) || rec[50] != COMPRESS_OFF {
                return Err("invalid stream (a WRITE record the fake did not write)".into());
            }
            let chunk = Chunk { seed: get64(rec, 56), len: u32::try_from(body.len()).expect("a WRITE fits") };
            if payload(chunk) != body {
                return Err("checksum mismatch or incomplete stream (a WRITE payload is not what was sent)".into());
            }
            Ok(Record::Write {
                index: Some(usize::try_from(offset / CHUNK_MAX as u64).expect("an index in memory")),
                chunk,
            })
        }
        DRR_END => Ok(Record::End { toguid: get64(rec, 40) }),
        _ => Ok(Record::Other),
    }
}

/// A chunk for a WRITE the fake did not make: its seed is a digest of the
/// bytes, so two copies still compare equal iff their bytes were (a cheap
/// one: the fake must read its input about as fast as a real receive).
fn opaque(b: &[u8]) -> Chunk {
    let mut h = b.len() as u64;
    for w in b.chunks(8) {
        let mut x = [0u8; 8];
        x[..w.len()].copy_from_slice(w);
        h = mix(h ^ u64::from_le_bytes(x));
    }
    Chunk { seed: h, len: u32::try_from(b.len()).expect("a chunk fits") }
}

/// Whether the checksums of `sub` (one substream, BEGIN to END) are the
/// ones its sender computed.
pub fn checksums_ok(sub: &[u8]) -> bool {
    let mut copy = sub.to_vec();
    craft::fix_checksums(&mut copy);
    copy == sub
}

/// The resume token of a partial receive: libzfs's shape
/// (`1-<checksum>-<packed length>-<hex>`, which core's alphabet check
/// accepts), with the fake's own fields inside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    pub toguid: u64,
    pub fromguid: u64,
    pub toname: String,
    /// Chunks already received after the base.
    pub got: u64,
    pub bytes: u64,
    pub raw: bool,
}

impl Token {
    pub fn encode(&self) -> String {
        let body = serde_json::to_vec(self).expect("serializes");
        let sum = body.iter().fold(0u64, |a, &b| mix(a ^ u64::from(b)));
        let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
        format!("1-{:x}-{:x}-{hex}", sum & 0xffff_ffff, body.len())
    }

    pub fn decode(token: &str) -> Option<Token> {
        let hex = token.splitn(4, '-').nth(3)?;
        let bytes: Option<Vec<u8>> =
            (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
        serde_json::from_slice(&bytes?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoffsite_core::names::Guid;
    use zoffsite_core::records::{Expect, StreamValidator};

    fn key() -> Key {
        crate::fake::world::World::new(7).new_key()
    }

    #[test]
    fn the_validator_takes_the_fakes_streams() {
        let k = key();
        let chunks = vec![(0, Chunk { seed: 1, len: 4096 }), (1, Chunk { seed: 2, len: 8 })];
        let full = single(&Sub {
            toname: "tank/a@s1",
            toguid: 11,
            fromguid: 0,
            creation: 5,
            key: Some(&k),
            chunks,
            resume: None,
        });
        let mut v = StreamValidator::new(Expect::new(None, Guid::new(11).unwrap()));
        v.feed(&full).unwrap();
        let summary = v.finish().unwrap();
        assert_eq!(summary.snapshots.len(), 1);
        assert_eq!(summary.key.unwrap().to_string(), fingerprint(&k));
        let subs = [
            Sub {
                toname: "tank/a@s2",
                toguid: 12,
                fromguid: 11,
                creation: 6,
                key: Some(&k),
                chunks: vec![],
                resume: None,
            },
            Sub {
                toname: "tank/a@s3",
                toguid: 13,
                fromguid: 12,
                creation: 7,
                key: Some(&k),
                chunks: vec![(2, Chunk { seed: 3, len: 16 })],
                resume: None,
            },
        ];
        let incr = compound(&subs);
        let mut v = StreamValidator::new(Expect::new(Some(Guid::new(11).unwrap()), Guid::new(13).unwrap()));
        v.feed(&incr).unwrap();
        assert!(v.finish().unwrap().compound);
        assert!(checksums_ok(&full));
    }

    #[test]
    fn tokens_pass_cores_alphabet_check_and_decode() {
        let t = Token { toguid: 1, fromguid: 2, toname: "tank/my data@s".into(), got: 3, bytes: 4, raw: true };
        let s = t.encode();
        zoffsite_core::resume::check_token_alphabet(&s).unwrap();
        assert_eq!(Token::decode(&s), Some(t));
    }
}
