//! The box's root filesystem on LUKS2, unlocked by the TPM: the
//! `systemd-tpm2` tokens of `cryptsetup luksDump --dump-json-metadata`.
//!
//! What a token binds decides what an attacker with the box in hand must
//! fake to get the key: PCR 7 holds the Secure Boot state and keys, so a key
//! bound to it is released only when the same firmware keys booted the
//! machine. A token bound to nothing (an empty PCR list, whose policy hash
//! is all zeros) hands the key to any operating system booted from a USB
//! stick: a failure.
//!
//! Fields read (systemd's token format, `systemd-cryptenroll(1)`; the names
//! mix `-` and `_` as systemd writes them): `tpm2-pcrs` (required), optional
//! `tpm2_pubkey_pcrs` (a signed PCR policy, typically 11), `tpm2_pcrlock`
//! (a systemd-pcrlock policy, whose PCRs live in a TPM NV index, not in the
//! header), `tpm2-pin`, `tpm2-pcr-bank`, and `tpm2-policy-hash` and
//! `tpm2-blob` (a string each, or arrays of them in newer systemd). Every
//! blob's sealed object carries its own policy digest (`authPolicy` of its
//! TPMT_PUBLIC); where it can be read it is compared with the header's
//! hash, so an all-zero policy is caught even if the header says otherwise.
//!
//! Duplicate keys are refused ([`super::json`]): a header where a key
//! appears twice is not what cryptsetup printed, and the check is unknown.

use serde_json::Value;

use super::{quote, Check, CheckId, Status};

/// Most tokens a LUKS2 header holds (cryptsetup's `LUKS2_TOKENS_MAX`).
const MAX_TOKENS: usize = 32;
/// PCR indexes are 0-23 on a PC TPM.
const MAX_PCR: u64 = 23;

/// What backs the box's root filesystem, as the shell found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootDevice<'a> {
    /// Not on dm-crypt/LUKS at all.
    NotEncrypted,
    /// A LUKS1 header: no tokens, so no TPM unlocking by systemd.
    Luks1,
    /// A LUKS2 header; the text is `cryptsetup luksDump
    /// --dump-json-metadata DEVICE`.
    Luks2(&'a str),
}

/// A `systemd-tpm2` token, as far as doctor reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tpm2Token {
    /// The token's number in the header.
    pub id: String,
    /// PCRs whose current values the key is sealed to (sorted, distinct).
    pub pcrs: Vec<u8>,
    /// PCRs bound through a signed policy (`tpm2_pubkey_pcrs`).
    pub pubkey_pcrs: Vec<u8>,
    /// Bound through a systemd-pcrlock policy.
    pub pcrlock: bool,
    pub pin: bool,
    /// `tpm2-pcr-bank` (absent when no PCR is bound).
    pub pcr_bank: Option<String>,
    /// `tpm2-policy-hash`, lower-case hex, one per blob.
    pub policy_hashes: Vec<String>,
    /// Each blob's own `authPolicy` (of its sealed object), hex.
    pub blob_policies: Vec<String>,
}

/// The tokens of a LUKS2 header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub tpm2: Vec<Tpm2Token>,
    /// The types of the other tokens (`systemd-fido2`, `clevis`, ...).
    pub other_tokens: Vec<String>,
}

/// Parses `cryptsetup luksDump --dump-json-metadata` output strictly: the
/// five top-level sections must be objects, token ids numbers below
/// [`MAX_TOKENS`], every `systemd-tpm2` token complete and in range.
pub fn parse_dump(text: &str) -> Result<Header, String> {
    let v = super::json::parse(text)?;
    let top = v.as_object().ok_or("not a JSON object")?;
    for section in ["keyslots", "tokens", "segments", "digests", "config"] {
        if !top.get(section).is_some_and(Value::is_object) {
            return Err(format!("no {section:?} object: not a LUKS2 header's metadata"));
        }
    }
    let tokens = top["tokens"].as_object().ok_or("tokens is not an object")?;
    if tokens.len() > MAX_TOKENS {
        return Err(format!("{} tokens, more than LUKS2's {MAX_TOKENS}", tokens.len()));
    }
    let mut h = Header::default();
    for (id, tok) in tokens {
        if !id.parse::<usize>().is_ok_and(|n| n < MAX_TOKENS && *id == n.to_string()) {
            return Err(format!("token id {} is not a number below {MAX_TOKENS}", quote(id)));
        }
        let tok = tok.as_object().ok_or_else(|| format!("token {id} is not an object"))?;
        let kind = tok.get("type").and_then(Value::as_str).ok_or_else(|| format!("token {id} has no type"))?;
        if kind != "systemd-tpm2" {
            h.other_tokens.push(kind.to_owned());
            continue;
        }
        h.tpm2.push(tpm2_token(id, tok).map_err(|e| format!("systemd-tpm2 token {id}: {e}"))?);
    }
    Ok(h)
}

fn tpm2_token(id: &str, tok: &serde_json::Map<String, Value>) -> Result<Tpm2Token, String> {
    let pcr_list = |key: &str, required: bool| -> Result<Vec<u8>, String> {
        let Some(v) = tok.get(key) else {
            return if required { Err(format!("no {key}")) } else { Ok(Vec::new()) };
        };
        let items = v.as_array().ok_or_else(|| format!("{key} is not a list"))?;
        let mut out = Vec::new();
        for p in items {
            match p.as_u64().filter(|n| *n <= MAX_PCR).map(u8::try_from) {
                Some(Ok(n)) => out.push(n),
                _ => return Err(format!("{key} holds {}, not a PCR number 0-{MAX_PCR}", quote(&p.to_string()))),
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    };
    let flag = |key: &str| -> Result<bool, String> {
        match tok.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("{key} is not true or false")),
        }
    };
    // A string, or (newer systemd) a list of strings.
    let strings = |key: &str| -> Result<Vec<&str>, String> {
        match tok.get(key) {
            Some(Value::String(s)) => Ok(vec![s.as_str()]),
            Some(Value::Array(a)) if !a.is_empty() => {
                a.iter().map(|s| s.as_str().ok_or_else(|| format!("{key} holds a non-string"))).collect()
            }
            Some(_) => Err(format!("{key} is neither a string nor a list of strings")),
            None => Err(format!("no {key}")),
        }
    };
    let policy_hashes = strings("tpm2-policy-hash")?
        .into_iter()
        .map(|h| {
            if h.len() <= 128 && h.len().is_multiple_of(2) && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(format!("tpm2-policy-hash {} is not hex", quote(h)))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let blob_policies = strings("tpm2-blob")?
        .into_iter()
        .map(|b| {
            blob_policy(b).ok_or("tpm2-blob is not a sealed object as systemd writes it (TPM2B_PRIVATE, TPM2B_PUBLIC)")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pcr_bank = match tok.get("tpm2-pcr-bank") {
        None => None,
        Some(Value::String(s)) if s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric()) => Some(s.clone()),
        Some(_) => return Err("tpm2-pcr-bank is not a bank name".into()),
    };
    Ok(Tpm2Token {
        id: id.to_owned(),
        pcrs: pcr_list("tpm2-pcrs", true)?,
        pubkey_pcrs: pcr_list("tpm2_pubkey_pcrs", false)?,
        pcrlock: flag("tpm2_pcrlock")?,
        pin: flag("tpm2-pin")?,
        pcr_bank,
        policy_hashes,
        blob_policies,
    })
}

/// The `authPolicy` of a sealed object, from systemd's `tpm2-blob`: the
/// marshalled TPM2B_PRIVATE, then TPM2B_PUBLIC (u16 size, then TPMT_PUBLIC:
/// type u16, nameAlg u16, objectAttributes u32, authPolicy as a TPM2B_DIGEST,
/// ...), all big-endian, and nothing after. `None` for any other layout:
/// the check is then unknown, as the header alone cannot be trusted to
/// describe what the TPM enforces.
fn blob_policy(b64: &str) -> Option<String> {
    let blob = crate::boxinit::base64_decode(b64)?;
    let tpm2b = |b: &[u8]| -> Option<(usize, usize)> {
        let n = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
        (b.len() >= 2 + n).then_some((2, 2 + n))
    };
    let (_, private_end) = tpm2b(&blob)?;
    let rest = &blob[private_end..];
    let (start, end) = tpm2b(rest)?;
    if end != rest.len() {
        return None;
    }
    let public = &rest[start..end];
    let (ps, pe) = tpm2b(public.get(8..)?)?;
    let policy = &public[8 + ps..8 + pe];
    Some(policy.iter().map(|b| format!("{b:02x}")).collect())
}

fn pcr_set(p: &[u8]) -> String {
    p.iter().map(u8::to_string).collect::<Vec<_>>().join("+")
}

fn all_zero(hex: &str) -> bool {
    hex.bytes().all(|b| b == b'0')
}

/// PCR 7 never extended: nothing measured the Secure Boot state.
const UNMEASURED: &str = "PCR 7 is all zeros: the firmware measured no Secure Boot state";

/// One token's verdict and what it binds.
fn judge(t: &Tpm2Token, pcr7_sha256: Option<&str>) -> (Status, String) {
    let id = &t.id;
    let zero_policy = t.policy_hashes.iter().any(|h| all_zero(h)) || t.blob_policies.iter().any(|h| all_zero(h));
    if zero_policy {
        return (
            Status::Fail,
            format!("token {id} has an all-zero policy: the TPM releases the key to any system booted on this box"),
        );
    }
    if t.blob_policies.len() != t.policy_hashes.len()
        || t.blob_policies.iter().zip(&t.policy_hashes).any(|(b, h)| b != h)
    {
        return (
            Status::Unknown,
            format!(
                "token {id}: the header's policy hash is not the sealed key's own policy (a damaged or edited token)"
            ),
        );
    }
    let mut bound = Vec::new();
    if !t.pcrs.is_empty() {
        bound.push(format!("PCR{} {}", if t.pcrs.len() == 1 { "" } else { "s" }, pcr_set(&t.pcrs)));
    }
    if !t.pubkey_pcrs.is_empty() {
        bound.push(format!("signed PCR policy on {}", pcr_set(&t.pubkey_pcrs)));
    }
    if t.pcrlock {
        bound.push("a pcrlock policy".to_owned());
    }
    if t.pin {
        bound.push("a PIN".to_owned());
    }
    let what = format!("token {id} binds {}", if bound.is_empty() { "nothing".to_owned() } else { bound.join(", ") });
    if t.pcrs.contains(&7) {
        // Bound to PCR 7 whose value is all zeros: nothing ever measured the
        // Secure Boot state, so the binding proves nothing.
        let sha256_bank = t.pcr_bank.as_deref().is_none_or(|b| b == "sha256");
        if let Some(v) = pcr7_sha256.filter(|_| sha256_bank) {
            let v = v.trim_end();
            if v.len() == 64 && all_zero(v) {
                return (Status::Fail, format!("{what}, but {UNMEASURED}"));
            }
        }
        return (Status::Ok, what);
    }
    if t.pcrs.is_empty() && t.pubkey_pcrs.is_empty() && !t.pcrlock {
        return (Status::Fail, format!("{what}: the TPM releases the key to any system booted on this box"));
    }
    let why = if t.pcrlock && t.pcrs.is_empty() {
        "(which PCRs a pcrlock policy binds is in the TPM, not in the header: check with `systemd-pcrlock`)"
    } else {
        "but not PCR 7 (the Secure Boot state)"
    };
    (Status::Warn, format!("{what} {why}"))
}

/// The root filesystem's encryption and TPM binding. `pcr7_sha256` is the
/// current value of PCR 7 in the SHA-256 bank
/// (`/sys/class/tpm/tpm0/pcr-sha256/7`), where readable: an all-zero PCR 7
/// means nothing was measured, and a binding to it is worthless.
pub fn check_luks_tpm(root: RootDevice<'_>, pcr7_sha256: Option<&str>) -> Check {
    const ID: CheckId = CheckId::LuksTpm;
    const ENROLL: &str =
        "enroll the TPM bound to PCR 7: `systemd-cryptenroll --wipe-slot=tpm2 --tpm2-device=auto --tpm2-pcrs=7 DEVICE` (docs/box.md)";
    let dump = match root {
        RootDevice::NotEncrypted => return Check::fail(
            ID,
            "the root filesystem is not on LUKS: anyone holding the disk reads the box's WireGuard and SSH host keys",
            "reinstall the box with the root filesystem on LUKS2 (docs/box.md)",
        ),
        RootDevice::Luks1 => return Check::fail(
            ID,
            "the root filesystem is on LUKS1, which has no tokens: it cannot be unlocked by the TPM through systemd",
            "convert it to LUKS2 (`cryptsetup convert --type luks2 DEVICE`, from a rescue system), then enroll the TPM",
        ),
        RootDevice::Luks2(dump) => dump,
    };
    if dump.len() > super::MAX_INPUT {
        return super::too_large(ID, "cryptsetup luksDump", dump.len());
    }
    let header = match parse_dump(dump) {
        Ok(h) => h,
        Err(e) => {
            return Check::unknown(
                ID,
                format!("cannot read `cryptsetup luksDump --dump-json-metadata`: {e}"),
                "look at `cryptsetup luksDump DEVICE` by hand",
            )
        }
    };
    if header.tpm2.is_empty() {
        if header.other_tokens.iter().any(|t| t == "clevis") {
            return Check::unknown(
                ID,
                "the root's LUKS2 header has a clevis token and no systemd-tpm2 token: doctor judges only systemd-tpm2 tokens",
                "check the clevis binding by hand (`clevis luks list -d DEVICE`), or use systemd-cryptenroll",
            );
        }
        return Check::fail(
            ID,
            "the root's LUKS2 header has no systemd-tpm2 token: the TPM does not unlock it",
            ENROLL,
        );
    }
    // Any token unlocks the disk, so the weakest decides.
    let verdicts: Vec<(Status, String)> = header.tpm2.iter().map(|t| judge(t, pcr7_sha256)).collect();
    let worst = verdicts.iter().map(|(s, _)| *s).max().unwrap_or(Status::Unknown);
    let summary = verdicts.iter().filter(|(s, _)| *s == worst).map(|(_, w)| w.as_str()).collect::<Vec<_>>().join("; ");
    let fix = match worst {
        Status::Unknown => {
            "look at `cryptsetup luksDump DEVICE`, and re-enroll the TPM if in doubt: ".to_owned() + ENROLL
        }
        _ if summary.contains(UNMEASURED) => {
            "turn Secure Boot on in the firmware setup (it measures into PCR 7), reboot, then ".to_owned() + ENROLL
        }
        _ => "remove the weaker token and ".to_owned() + ENROLL,
    };
    Check::with_status(ID, worst, format!("root on LUKS2 with the TPM: {summary}"), fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testutil::fixture;
    use proptest::prelude::*;

    /// The real fixtures (testdata/doctor/capture.sh: systemd-cryptenroll
    /// against swtpm).
    #[test]
    fn real_headers_from_systemd_cryptenroll_against_swtpm() {
        let c = |f: &str| check_luks_tpm(RootDevice::Luks2(&fixture(f)), None);
        let ok = c("luks2-tpm2-pcr7.json");
        assert_eq!(ok.status(), Status::Ok, "{ok:?}");
        assert!(ok.summary().contains("token 0 binds PCR 7"), "{ok:?}");
        let empty = c("luks2-tpm2-empty-policy.json");
        assert_eq!(empty.status(), Status::Fail, "{empty:?}");
        assert!(empty.summary().contains("all-zero policy"), "{empty:?}");
        let other = c("luks2-tpm2-pcr0+2.json");
        assert_eq!(other.status(), Status::Warn, "{other:?}");
        assert!(other.summary().contains("PCRs 0+2") && other.summary().contains("not PCR 7"), "{other:?}");
        let none = c("luks2-no-token.json");
        assert_eq!(none.status(), Status::Fail);
        assert!(none.summary().contains("no systemd-tpm2 token"), "{none:?}");
    }

    #[test]
    fn the_sealed_keys_own_policy_is_read_from_the_blob() {
        let h = parse_dump(&fixture("luks2-tpm2-pcr7.json")).unwrap();
        let t = &h.tpm2[0];
        assert_eq!(
            (t.pcrs.as_slice(), t.pcr_bank.as_deref(), t.pin, t.pcrlock),
            (&[7u8][..], Some("sha256"), false, false)
        );
        assert_eq!(t.blob_policies, t.policy_hashes);
        let e = parse_dump(&fixture("luks2-tpm2-empty-policy.json")).unwrap();
        assert_eq!(e.tpm2[0].blob_policies, ["0".repeat(64)]);
    }

    fn edit(f: &str, change: impl FnOnce(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(&fixture(f)).unwrap();
        change(&mut v["tokens"]["0"]);
        v.to_string()
    }

    #[test]
    fn a_header_that_lies_about_its_pcrs_is_caught_by_the_blob() {
        // The empty-policy token, edited to claim PCR 7 and a non-zero hash:
        // the blob's own policy is still all zeros.
        let lie = edit("luks2-tpm2-empty-policy.json", |t| {
            t["tpm2-pcrs"] = serde_json::json!([7]);
            t["tpm2-policy-hash"] = Value::String("ab".repeat(32));
        });
        let c = check_luks_tpm(RootDevice::Luks2(&lie), None);
        assert_eq!(c.status(), Status::Fail, "{c:?}");
        // A mismatch with a non-zero blob policy cannot be judged.
        let other = edit("luks2-tpm2-pcr7.json", |t| t["tpm2-policy-hash"] = Value::String("ab".repeat(32)));
        assert_eq!(check_luks_tpm(RootDevice::Luks2(&other), None).status(), Status::Unknown);
    }

    #[test]
    fn signed_and_pcrlock_policies_warn_and_newer_list_forms_parse() {
        let signed = edit("luks2-tpm2-pcr0+2.json", |t| {
            t["tpm2-pcrs"] = serde_json::json!([]);
            t["tpm2_pubkey_pcrs"] = serde_json::json!([11]);
        });
        let c = check_luks_tpm(RootDevice::Luks2(&signed), None);
        assert_eq!(c.status(), Status::Warn, "{c:?}");
        assert!(c.summary().contains("signed PCR policy on 11"), "{c:?}");
        let pcrlock = edit("luks2-tpm2-pcr0+2.json", |t| {
            t["tpm2-pcrs"] = serde_json::json!([]);
            t["tpm2_pcrlock"] = Value::Bool(true);
        });
        assert!(check_luks_tpm(RootDevice::Luks2(&pcrlock), None).summary().contains("systemd-pcrlock"));
        let lists = edit("luks2-tpm2-pcr7.json", |t| {
            t["tpm2-blob"] = serde_json::json!([t["tpm2-blob"].clone()]);
            t["tpm2-policy-hash"] = serde_json::json!([t["tpm2-policy-hash"].clone()]);
        });
        assert_eq!(check_luks_tpm(RootDevice::Luks2(&lists), None).status(), Status::Ok);
    }

    #[test]
    fn the_weakest_token_decides() {
        let two = {
            let mut v: Value = serde_json::from_str(&fixture("luks2-tpm2-pcr7.json")).unwrap();
            let e: Value = serde_json::from_str(&fixture("luks2-tpm2-empty-policy.json")).unwrap();
            v["tokens"]["1"] = e["tokens"]["0"].clone();
            v.to_string()
        };
        let c = check_luks_tpm(RootDevice::Luks2(&two), None);
        assert_eq!(c.status(), Status::Fail, "{c:?}");
        assert!(c.summary().contains("token 1 has an all-zero policy"), "{c:?}");
    }

    #[test]
    fn an_unmeasured_pcr_7_fails_a_pcr_7_binding() {
        let f = fixture("luks2-tpm2-pcr7.json");
        let zero = "0".repeat(64) + "\n";
        let c = check_luks_tpm(RootDevice::Luks2(&f), Some(&zero));
        assert_eq!(c.status(), Status::Fail);
        assert!(c.fix().unwrap().starts_with("turn Secure Boot on"), "{c:?}");
        assert_eq!(check_luks_tpm(RootDevice::Luks2(&f), Some(&"1a".repeat(32))).status(), Status::Ok);
    }

    #[test]
    fn no_luks_or_luks1_fails_and_strange_headers_are_unknown() {
        assert_eq!(check_luks_tpm(RootDevice::NotEncrypted, None).status(), Status::Fail);
        assert_eq!(check_luks_tpm(RootDevice::Luks1, None).status(), Status::Fail);
        let f = fixture("luks2-tpm2-pcr7.json");
        // A duplicate key: the second tpm2-pcrs is not what cryptsetup printed.
        let dup = f.replacen("\"tpm2-pcrs\":[", "\"tpm2-pcrs\":[],\"tpm2-pcrs\":[", 1);
        assert_ne!(dup, f);
        let c = check_luks_tpm(RootDevice::Luks2(&dup), None);
        assert_eq!(c.status(), Status::Unknown, "{c:?}");
        assert!(c.summary().contains("appears twice"), "{c:?}");
        for bad in [
            edit("luks2-tpm2-pcr7.json", |t| t["tpm2-pcrs"] = serde_json::json!([24])),
            edit("luks2-tpm2-pcr7.json", |t| t["tpm2-pcrs"] = serde_json::json!(["7"])),
            edit("luks2-tpm2-pcr7.json", |t| {
                t.as_object_mut().unwrap().remove("tpm2-pcrs");
            }),
            edit("luks2-tpm2-pcr7.json", |t| {
                t.as_object_mut().unwrap().remove("tpm2-policy-hash");
            }),
            edit("luks2-tpm2-pcr7.json", |t| t["tpm2-pin"] = Value::String("no".into())),
            edit("luks2-tpm2-pcr7.json", |t| t["tpm2-blob"] = Value::String("aGk=".into())),
            "{}".to_owned(),
            "[]".to_owned(),
            String::new(),
        ] {
            assert_eq!(check_luks_tpm(RootDevice::Luks2(&bad), None).status(), Status::Unknown, "{bad}");
        }
        let clevis = edit("luks2-no-token.json", |t| *t = serde_json::json!({"type": "clevis", "keyslots": ["1"]}));
        assert_eq!(check_luks_tpm(RootDevice::Luks2(&clevis), None).status(), Status::Unknown);
    }

    proptest! {
        #[test]
        fn random_input_never_panics_and_is_never_ok(s in "\\PC{0,400}") {
            prop_assert_ne!(check_luks_tpm(RootDevice::Luks2(&s), None).status(), Status::Ok);
        }

        #[test]
        fn random_tokens_never_panic(pcrs in proptest::collection::vec(0u64..40, 0..5),
                                     blob in "[A-Za-z0-9+/]{0,64}={0,2}",
                                     hash in "[0-9a-f]{0,64}") {
            let t = edit("luks2-tpm2-pcr7.json", |t| {
                t["tpm2-pcrs"] = serde_json::json!(pcrs);
                t["tpm2-blob"] = Value::String(blob);
                t["tpm2-policy-hash"] = Value::String(hash);
            });
            // Random blobs are not sealed objects: never judged ok.
            prop_assert_ne!(check_luks_tpm(RootDevice::Luks2(&t), None).status(), Status::Ok);
        }
    }
}
