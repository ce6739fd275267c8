//! A minimal reader and writer of a stream's BEGIN record, for tests and
//! the fuzzer only (feature `test-util`): they build BEGIN records, and
//! the fuzzer's `serve` target uses [`parse_begin`] as an oracle written
//! independently of the validator.
//!
//! Production code never uses this module: every stream is checked record
//! by record by [`crate::records::StreamValidator`], which owns the record
//! layout and its constants.
//!
//! Layout (OpenZFS `zfs_ioctl.h`, `dmu_replay_record_t`), in the sender's
//! native byte order, which the magic number reveals:
//!
//! | offset | field                         |
//! |-------:|-------------------------------|
//! |      0 | `drr_type` u32 (0 = BEGIN)    |
//! |      4 | `drr_payloadlen` u32          |
//! |      8 | `drr_magic` u64 = 0x2F5bacbac |
//! |     16 | `drr_versioninfo` u64         |
//! |     24 | `drr_creation_time` u64       |
//! |     32 | `drr_type` (objset) u32       |
//! |     36 | `drr_flags` u32               |
//! |     40 | `drr_toguid` u64              |
//! |     48 | `drr_fromguid` u64            |
//! |     56 | `drr_toname` char[256]        |
//!
//! `drr_versioninfo` holds the header type in bits 0-1 (1 = substream,
//! 2 = compound) and the feature flags in bits 2-31; RAW is feature 1<<24.

use crate::names::{Guid, NameError, Snapshot};

pub use crate::records::{DMU_BACKUP_MAGIC, FEATURE_RAW, FEATURE_RESUMING, RECORD_LEN as BEGIN_RECORD_LEN};

const DRR_BEGIN: u32 = 0;
const DMU_SUBSTREAM: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("stream is shorter than its {BEGIN_RECORD_LEN}-byte BEGIN record")]
    Short,
    #[error("stream does not start with a BEGIN record")]
    NotBegin,
    #[error("stream has a bad magic number: not a ZFS send stream")]
    BadMagic,
    #[error("stream is a compound (-R) stream; only single-dataset streams are accepted")]
    Compound,
    #[error("stream is not raw (zfs send -w): refusing it, the box must never receive plaintext")]
    NotRaw,
    #[error("stream's snapshot name is not valid: {0}")]
    BadName(NameError),
}

/// What the BEGIN record says about a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginRecord {
    pub features: u64,
    pub to_guid: u64,
    /// 0 for a full stream.
    pub from_guid: u64,
    /// `dataset@snapshot` on the sending side.
    pub to_name: Snapshot,
}

impl BeginRecord {
    pub fn is_raw(&self) -> bool {
        self.features & FEATURE_RAW != 0
    }

    pub fn is_resuming(&self) -> bool {
        self.features & FEATURE_RESUMING != 0
    }

    pub fn to_guid(&self) -> Option<Guid> {
        Guid::new(self.to_guid).ok()
    }

    pub fn from_guid(&self) -> Option<Guid> {
        Guid::new(self.from_guid).ok()
    }
}

/// Parses and checks the first record of a stream. Refuses anything that is
/// not a raw single-dataset stream.
pub fn parse_begin(buf: &[u8]) -> Result<BeginRecord, StreamError> {
    let rec = buf.get(..BEGIN_RECORD_LEN).ok_or(StreamError::Short)?;
    let le = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
    let big_endian = if le == DMU_BACKUP_MAGIC {
        false
    } else if le.swap_bytes() == DMU_BACKUP_MAGIC {
        true
    } else {
        return Err(StreamError::BadMagic);
    };
    let u32_at = |o: usize| {
        let b: [u8; 4] = rec[o..o + 4].try_into().expect("4 bytes");
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let u64_at = |o: usize| {
        let b: [u8; 8] = rec[o..o + 8].try_into().expect("8 bytes");
        if big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        }
    };
    if u32_at(0) != DRR_BEGIN {
        return Err(StreamError::NotBegin);
    }
    let versioninfo = u64_at(16);
    if versioninfo & 0b11 != DMU_SUBSTREAM {
        return Err(StreamError::Compound);
    }
    let features = (versioninfo >> 2) & ((1 << 30) - 1);
    if features & FEATURE_RAW == 0 {
        return Err(StreamError::NotRaw);
    }
    let name_bytes = &rec[56..56 + 256];
    let end = name_bytes.iter().position(|&b| b == 0).ok_or(StreamError::BadName(NameError::TooLong { len: 256 }))?;
    let name =
        std::str::from_utf8(&name_bytes[..end]).map_err(|_| StreamError::BadName(NameError::BadChar('\u{FFFD}')))?;
    let to_name = Snapshot::new(name).map_err(StreamError::BadName)?;
    Ok(BeginRecord { features, to_guid: u64_at(40), from_guid: u64_at(48), to_name })
}

/// Builds a BEGIN record (for tests of the parser and of `serve`).
pub fn encode_begin(
    features: u64,
    hdrtype: u64,
    to_guid: u64,
    from_guid: u64,
    to_name: &str,
    big_endian: bool,
) -> Vec<u8> {
    let mut rec = vec![0u8; BEGIN_RECORD_LEN];
    let put32 = |rec: &mut Vec<u8>, o: usize, v: u32| {
        let b = if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        rec[o..o + 4].copy_from_slice(&b);
    };
    let put64 = |rec: &mut Vec<u8>, o: usize, v: u64| {
        let b = if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        rec[o..o + 8].copy_from_slice(&b);
    };
    put32(&mut rec, 0, DRR_BEGIN);
    put64(&mut rec, 8, DMU_BACKUP_MAGIC);
    put64(&mut rec, 16, (features << 2) | hdrtype);
    put32(&mut rec, 32, 2); // DMU_OST_ZFS
    put64(&mut rec, 40, to_guid);
    put64(&mut rec, 48, from_guid);
    let n = to_name.as_bytes();
    let n = &n[..n.len().min(255)];
    rec[56..56 + n.len()].copy_from_slice(n);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Feature flags a real `zfs send -w` of an encrypted dataset sets on
    // OpenZFS 2.3 (EMBED_DATA | LZ4 | LARGE_BLOCKS | COMPRESSED |
    // LARGE_DNODE | RAW).
    const REAL_RAW: u64 = (1 << 16) | (1 << 17) | (1 << 19) | (1 << 22) | (1 << 23) | FEATURE_RAW;

    #[test]
    fn accepts_raw_substreams_in_both_byte_orders() {
        for be in [false, true] {
            let rec = encode_begin(REAL_RAW, 1, 77, 66, "tank/data@zoffsite-1", be);
            let b = parse_begin(&rec).unwrap();
            assert!(b.is_raw());
            assert_eq!((b.to_guid, b.from_guid), (77, 66));
            assert_eq!(b.to_name.to_string(), "tank/data@zoffsite-1");
            assert_eq!(b.from_guid().unwrap().get(), 66);
        }
        let full = parse_begin(&encode_begin(REAL_RAW, 1, 77, 0, "t@s", false)).unwrap();
        assert_eq!(full.from_guid(), None);
    }

    #[test]
    fn refuses_everything_that_is_not_a_raw_substream() {
        let plain = REAL_RAW & !FEATURE_RAW;
        let cases: Vec<(Vec<u8>, StreamError)> = vec![
            (encode_begin(plain, 1, 1, 0, "t@s", false), StreamError::NotRaw),
            (encode_begin(REAL_RAW, 2, 1, 0, "t@s", false), StreamError::Compound),
            (vec![0u8; BEGIN_RECORD_LEN], StreamError::BadMagic),
            (encode_begin(REAL_RAW, 1, 1, 0, "t@s", false)[..100].to_vec(), StreamError::Short),
            (encode_begin(REAL_RAW, 1, 1, 0, "t/../x@s", false), StreamError::BadName(NameError::DotComponent)),
        ];
        for (rec, want) in cases {
            assert_eq!(parse_begin(&rec), Err(want));
        }
        let mut not_begin = encode_begin(REAL_RAW, 1, 1, 0, "t@s", false);
        not_begin[0] = 5; // DRR_END
        assert_eq!(parse_begin(&not_begin), Err(StreamError::NotBegin));
        let mut unterminated = encode_begin(REAL_RAW, 1, 1, 0, "t@s", false);
        unterminated[56..312].fill(b'a');
        assert!(matches!(parse_begin(&unterminated), Err(StreamError::BadName(_))));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_begin(&bytes);
        }

        #[test]
        fn raw_flag_decides(features in 0u64..(1 << 30)) {
            let r = parse_begin(&encode_begin(features, 1, 9, 0, "t@s", false));
            prop_assert_eq!(r.is_ok(), features & FEATURE_RAW != 0);
        }
    }
}
