//! Starting inputs: the real streams and `zfs send -nvt` outputs captured
//! on OpenZFS 2.3.2 (zoffsite-core's `testdata/`), realistic `zfs list -H
//! -p` rows, protocol frames and JSON messages built with the crate's own
//! types, and valid configs. Plus the dictionaries the mutator draws on.

use zoffsite_core::names::{Dataset, Guid, SnapName};
use zoffsite_core::protocol::{self, ErrorCode, HeartbeatDataset, RemoteDataset, RemoteSnapshot, Request, Response};
use zoffsite_core::stream::{encode_begin, FEATURE_RAW, FEATURE_RESUMING};

macro_rules! testdata {
    ($f:literal) => {
        include_bytes!(concat!("../../crates/zoffsite-core/testdata/", $f))
    };
}

/// `zfs send -w t/src@s1`.
pub const RAW_FULL: &[u8] = testdata!("raw-full.zstream");
/// `zfs send -w -I @s1 t/src@s4`: compound, three substreams.
pub const RAW_I: &[u8] = testdata!("raw-I.zstream");
/// The head of `zfs send -w -R t/src@s2` (compound BEGIN with an nvlist).
pub const RAW_R_HEAD: &[u8] = testdata!("raw-R-head.bin");
/// `zfs send -w -i @p1 t/plain@p2` of an unencrypted dataset: not raw.
pub const PLAIN_INCR: &[u8] = testdata!("plain-incr.zstream");
/// `zfs send -w -t TOKEN`, resuming `-i @b1 t/big@b2`.
pub const RESUMED_INCR: &[u8] = testdata!("raw-resumed-incr.zstream");
const GUIDS: &str = include_str!("../../crates/zoffsite-core/testdata/guids.txt");

pub const NVT: &[&[u8]] = &[
    testdata!("nvt-full.txt"),
    testdata!("nvt-incr.txt"),
    testdata!("nvt-I.txt"),
    testdata!("nvt-nonraw.txt"),
    testdata!("nvt-renamed-snap.txt"),
    testdata!("nvt-moved-dataset.txt"),
    testdata!("nvt-gone.txt"),
];
pub const TOKENS: &[&[u8]] = &[testdata!("token-full.txt"), testdata!("token-incr.txt")];

/// The GUID of a fixture snapshot, by name (`t/src@s1`).
pub fn guid(name: &str) -> u64 {
    GUIDS
        .lines()
        .find_map(|l| {
            let mut cols = l.split('\t');
            (cols.next() == Some(name)).then(|| cols.next()?.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("{name} is not in guids.txt"))
}

/// Every GUID of the fixtures, plus limits and edge values: what integer
/// mutations write.
pub fn ints() -> Vec<u64> {
    let mut v: Vec<u64> = GUIDS.lines().filter_map(|l| l.split('\t').nth(1)?.parse().ok()).collect();
    v.extend([
        0,
        1,
        2,
        3,
        5,
        8,
        0x7f,
        0x80,
        0xff,
        0x100,
        311,
        312,
        313,
        624,
        0xffff,
        0x1_0000,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0000,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        1 << 24,
        (1 << 24) + 1,
        64 << 20,
        (64 << 20) + 1,
        10_000,
        10_001,
        0x2F5B_ACBAC,
        FEATURE_RAW << 2 | 1,
        (FEATURE_RAW | FEATURE_RESUMING) << 2 | 1,
        i64::MAX as u64,
        u64::MAX,
    ]);
    v
}

pub const RAW: u64 = (1 << 2) | (1 << 17) | (1 << 22) | FEATURE_RAW;

/// A minimal valid stream: BEGIN and END of one empty substream, in either
/// byte order (the fixtures are all little-endian).
pub fn tiny_stream(features: u64, to: u64, from: u64, name: &str, big_endian: bool) -> Vec<u8> {
    let mut s = encode_begin(features, 1, to, from, name, big_endian);
    if features & FEATURE_RAW != 0 {
        // A raw substream carries its wrapped key: RAW_FULL's key data.
        let len = u32::from_le_bytes(RAW_FULL[4..8].try_into().expect("4"));
        s[4..8].copy_from_slice(&if big_endian { len.to_be_bytes() } else { len.to_le_bytes() });
        s.extend_from_slice(&RAW_FULL[312..312 + len as usize]);
    }
    let mut end = vec![0u8; 312];
    let put = |b: &mut [u8], v: u64| {
        b.copy_from_slice(&if big_endian { v.to_be_bytes() } else { v.to_le_bytes() });
    };
    if big_endian {
        end[..4].copy_from_slice(&5u32.to_be_bytes());
    } else {
        end[..4].copy_from_slice(&5u32.to_le_bytes());
    }
    put(&mut end[40..48], to);
    s.extend_from_slice(&end);
    s
}

/// The `-i @s1 @s2` stream: the first substream of the `-I` fixture.
pub fn raw_incr() -> Vec<u8> {
    // Compound BEGIN and END are 624 bytes; the substream ends at its END,
    // the second END record after that.
    let mut at = 624;
    let mut ends = 0;
    while at + 312 <= RAW_I.len() {
        let h = &RAW_I[at..at + 312];
        let t = u32::from_le_bytes(h[..4].try_into().expect("4"));
        let u32at = |o: usize| u64::from(u32::from_le_bytes(h[o..o + 4].try_into().expect("4")));
        let u64at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8"));
        let payload = match t {
            0 => u32at(4),
            1 if u32at(36) != 0 => u32at(36),
            1 => u32at(28).div_ceil(8) * 8,
            3 if h[50] != 0 => u64at(96),
            3 => u64at(32),
            7 if u64at(40) != 0 => u64at(40),
            7 => u64at(16),
            8 => u32at(52).div_ceil(8) * 8,
            _ => 0,
        };
        at += 312 + payload as usize;
        if t == 5 {
            ends += 1;
            if ends == 1 {
                return RAW_I[624..at].to_vec();
            }
        }
    }
    RAW_I.to_vec()
}

/// The stream inputs, with what each must be (the validator target's
/// expectations are indexed by the first byte of its input).
pub struct StreamSeed {
    pub bytes: Vec<u8>,
    pub from: Option<&'static str>,
    pub to: &'static str,
    pub resuming: bool,
}

pub fn streams() -> Vec<StreamSeed> {
    let seed = |bytes: Vec<u8>, from, to, resuming| StreamSeed { bytes, from, to, resuming };
    let mut raw_r = RAW_R_HEAD.to_vec();
    raw_r.extend_from_slice(RAW_FULL);
    raw_r.extend_from_slice(&raw_incr());
    raw_r.extend_from_slice(&tiny_end());
    vec![
        seed(RAW_FULL.to_vec(), None, "t/src@s1", false),
        seed(raw_incr(), Some("t/src@s1"), "t/src@s2", false),
        seed(RAW_I.to_vec(), Some("t/src@s1"), "t/src@s4", false),
        seed(RESUMED_INCR.to_vec(), Some("t/big@b1"), "t/big@b2", true),
        seed(PLAIN_INCR.to_vec(), Some("t/plain@p1"), "t/plain@p2", false),
        seed(raw_r, None, "t/src@s2", false),
        seed(tiny_stream(RAW, guid("t/src@s1"), 0, "t/src@s1", true), None, "t/src@s1", false),
        seed(
            tiny_stream(RAW | FEATURE_RESUMING, guid("t/big@b2"), guid("t/big@b1"), "t/big@b2", true),
            Some("t/big@b1"),
            "t/big@b2",
            true,
        ),
    ]
}

fn tiny_end() -> Vec<u8> {
    let mut end = vec![0u8; 312];
    end[0] = 5;
    end
}

fn ds(s: &str) -> Dataset {
    Dataset::new(s).expect("valid dataset")
}

fn g(v: u64) -> Guid {
    Guid::new(v).expect("non-zero")
}

fn sn(s: &str) -> SnapName {
    SnapName::new(s).expect("valid snapshot name")
}

/// Every request type, as the source sends them.
pub fn requests() -> Vec<Request> {
    vec![
        Request::Hello { protocol: "zoffsite".into(), version: 1, client: "zoffsite 0.1.0".into() },
        Request::List { datasets: vec![ds("tank/data"), ds("tank/data/docs"), ds("t/src")] },
        Request::Receive {
            dataset: ds("t/src"),
            snapshot: sn("s1"),
            guid: g(guid("t/src@s1")),
            from: None,
            resume: false,
        },
        Request::Receive {
            dataset: ds("t/src"),
            snapshot: sn("s4"),
            guid: g(guid("t/src@s4")),
            from: Some(g(guid("t/src@s1"))),
            resume: false,
        },
        Request::Receive {
            dataset: ds("t/big"),
            snapshot: sn("b2"),
            guid: g(guid("t/big@b2")),
            from: Some(g(guid("t/big@b1"))),
            resume: true,
        },
        Request::Abort { dataset: ds("tank/data") },
        Request::Bye,
        Request::Audit,
        Request::Heartbeat {
            datasets: vec![
                HeartbeatDataset { name: ds("tank/data"), guid: g(guid("t/src@s1")) },
                HeartbeatDataset { name: ds("tank/data/docs"), guid: g(guid("t/src@s4")) },
            ],
        },
    ]
}

/// Every response type, as a box sends them.
pub fn responses() -> Vec<Response> {
    let snap = |n: &str, guid: u64, createtxg| RemoteSnapshot { name: sn(n), guid: g(guid), createtxg };
    let token = String::from_utf8_lossy(TOKENS[0]).trim().to_owned();
    vec![
        Response::Hello {
            protocol: "zoffsite".into(),
            version: 1,
            server: "zoffsite 0.1.0".into(),
            root: ds("offsite/home"),
        },
        Response::Listing {
            datasets: vec![
                RemoteDataset {
                    name: ds("tank/data"),
                    exists: true,
                    snapshots: vec![
                        snap("zoffsite-20261126T073000Z", guid("t/src@s1"), 57),
                        snap("zoffsite-20261126T083000Z", guid("t/src@s2"), 60),
                    ],
                    resume_token: Some(token),
                },
                RemoteDataset { name: ds("tank/data/docs"), exists: false, snapshots: vec![], resume_token: None },
            ],
        },
        Response::Received { dataset: ds("tank/data"), snapshot: sn("s1"), guid: g(guid("t/src@s1")) },
        Response::Aborted { dataset: ds("tank/data") },
        Response::Error {
            code: ErrorCode::Refused,
            message: "refused stream for offsite/home/tank/data: not raw".into(),
        },
        Response::Error { code: ErrorCode::NoSpace, message: "out of space".into() },
        Response::Audit { report: Some(String::from_utf8(box_audits().remove(0)).expect("utf-8")) },
        Response::Audit { report: None },
        Response::Heartbeat { recorded: 1 },
    ]
}

pub fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializable")
}

/// One session from the source: hello, list, a receive with its stream,
/// abort, bye.
pub fn session(receives: &[(Request, &[u8])], with_list: bool) -> Vec<u8> {
    let reqs = requests();
    let mut v = Vec::new();
    protocol::write_msg(&mut v, &reqs[0]).expect("vec");
    if with_list {
        protocol::write_msg(&mut v, &reqs[1]).expect("vec");
    }
    for (req, stream) in receives {
        protocol::write_msg(&mut v, req).expect("vec");
        // Uneven chunks, as a pipe delivers them.
        for chunk in stream.chunks(7919) {
            protocol::write_data(&mut v, chunk).expect("vec");
        }
        protocol::write_end(&mut v).expect("vec");
    }
    protocol::write_msg(&mut v, &reqs[5]).expect("vec");
    protocol::write_msg(&mut v, &reqs[6]).expect("vec");
    v
}

/// Sessions for `serve` and the request-frames target.
pub fn sessions() -> Vec<Vec<u8>> {
    let reqs = requests();
    vec![
        session(&[(reqs[2].clone(), RAW_FULL)], true),
        session(&[(reqs[3].clone(), RAW_I)], false),
        session(&[(reqs[4].clone(), RESUMED_INCR)], false),
        session(&[(reqs[2].clone(), PLAIN_INCR)], false),
        session(&[(reqs[2].clone(), &tiny_stream(RAW, guid("t/src@s1"), 0, "t/src@s1", true))], true),
        session(&[], true),
        audit_session(),
        heartbeat_session(),
    ]
}

/// Hello, a listing, the heartbeat, bye: a backup run that found nothing
/// to send.
pub fn heartbeat_session() -> Vec<u8> {
    let reqs = requests();
    let mut v = Vec::new();
    for r in [&reqs[0], &reqs[1], &reqs[8], &reqs[6]] {
        protocol::write_msg(&mut v, r).expect("vec");
    }
    v
}

/// Hello, the box's audit, a listing, bye: `status`'s session.
pub fn audit_session() -> Vec<u8> {
    let reqs = requests();
    let mut v = Vec::new();
    for r in [&reqs[0], &reqs[7], &reqs[1], &reqs[6]] {
        protocol::write_msg(&mut v, r).expect("vec");
    }
    v
}

/// Box audits as `doctor --box --output` writes them (core's `Report`):
/// a whole box's, one with every status, an empty one, and one with
/// `exit_code` and `errors` as the binary's `--json` adds them.
pub fn box_audits() -> Vec<Vec<u8>> {
    use zoffsite_core::doctor::{Check, CheckId, Report};
    let mut whole = Report::new();
    for (n, id) in CheckId::ALL.iter().filter(|i| i.as_str().starts_with("box.")).enumerate() {
        whole.push(match n % 4 {
            0 => Check::ok(*id, format!("{id} is as wanted")),
            1 => Check::warn(*id, format!("{id}: weaker than wanted \u{1b}[2J\n"), "make it stronger"),
            2 => Check::unknown(*id, "not exposed here", "look by hand"),
            _ => Check::fail(*id, "sshd listens on 0.0.0.0:22 (wanted only 10.77.0.2:22)", "listen on the tunnel only"),
        });
    }
    whole.set_generated_at(1_796_000_000);
    let mut ok = Report::new();
    ok.push(Check::ok(CheckId::Firewall, "ssh is reachable from the tunnel only"));
    let mut doc = serde_json::to_value(&whole).expect("serializable");
    doc["exit_code"] = serde_json::json!(3);
    doc["errors"] = serde_json::json!(["cannot run nft: no such file"]);
    vec![
        serde_json::to_vec_pretty(&whole).expect("serializable"),
        serde_json::to_vec(&ok).expect("serializable"),
        serde_json::to_vec(&Report::new()).expect("serializable"),
        serde_json::to_vec(&doc).expect("serializable"),
    ]
}

/// Everything a box says in one session, framed.
pub fn response_frames() -> Vec<u8> {
    let mut v = Vec::new();
    for r in responses() {
        protocol::write_msg(&mut v, &r).expect("vec");
    }
    v
}

// ---- text ----

pub const SNAPSHOT_ROWS: &[&str] = &[
    "tank/data@zoffsite-20261126T073000Z\t7265012223453401451\t57\t1795678200\n\
     tank/data/my docs:x@a b\t1\t60\t1795678201\n",
    "offsite/home/tank/data@zoffsite-20261126T073000Z\t10546291128629098134\t1234\t1795678200\n",
    "t/src@s1\t10546291128629098134\t12\t1764142200\nt/src@s2\t16838371782063219762\t13\t1764142260\n",
    "",
];
pub const SOURCE_ROWS: &[&str] = &[
    "tank/a#zoffsite-1\t77\t12\t1795678200\t-\n",
    "tank/data#zoffsite-20261126T073000Z\t7265012223453401451\t57\t1795678200\t-\ntank/data/x#b\t5\t58\t1795678201\t-\n",
    "tank/data@zoffsite-20261126T073000Z\t7265012223453401451\t57\t1795678200\t2\n\
     tank/data#zoffsite-20261126T073000Z\t7265012223453401451\t57\t1795678200\t-\n\
     tank/data/my docs:x@a b\t1\t60\t1795678201\t0\n",
];
pub const DATASET_ROWS: &[&str] = &[
    "tank/data\t42\taes-256-gcm\t0\t-\ntank/plain\t43\toff\t8192\toff\n",
    "tank\t394898184108646144\toff\t0\t-\ntank/data\t8924085848284512559\taes-256-gcm\t4096\ton\ntank/data/vm\t12141539873107790877\taes-256-gcm\t0\toff\n",
];
pub const RECEIVER_ROWS: &[&str] = &[
    "off/h/tank\t-\noff/h/tank/d\t1-e0a3c8d21-f0-789c63\n",
    "offsite/home\t-\noffsite/home/t\t-\noffsite/home/t/big\t1-c1796e07f-f0-789c636064000310a500c4ec\n",
];
pub const BOX_ROWS: &[&str] = &[
    "off/h\t123\t5\t1764140000\t-\noff/h/tank/d\t789\t12\t1764140002\t1-e0a3c8d21-f0-789c63\noff/h/tank/d@zoffsite-1\t10546291128629098134\t13\t1764140003\t-\n",
];
pub const HOLD_ROWS: &[&str] = &[
    "tank/a@zoffsite-1\tzoffsite-friend\t1764142200\n",
    "tank/data@zoffsite-20261126T073000Z\tzoffsite-friend\t1764142200\ntank/data@zoffsite-20261126T073000Z\tzoffsite-mum\t1764142201\n",
];
pub const NUMBER_ROWS: &[&str] = &["tank/a\t4096\ntank/b\t-\n", "tank/data\t0\ntank/data/docs\t123456789\n"];
pub const SEND_SIZES: &[&str] = &[
    "incremental\ttank/a@z1\ttank/a@z2\t57344\nsize\t57344\n",
    "full\ttank/a@z1\t1024\nsize\t1024\n",
    "incremental\tz1\ttank/a@z2\t57344\nincremental\tz2\ttank/a@z3\t1024\nsize\t58368\n",
];
pub const SINGLE_GUIDS: &[&str] = &["123\n", "10546291128629098134\n", "18446744073709551615\n"];

pub const NAMES: &[&str] = &[
    "tank",
    "tank/data",
    "tank/data/my docs:x",
    "offsite/home/tank/data",
    "tank/data@zoffsite-20261126T073000Z",
    "tank/data#zoffsite-20261126T073000Z",
    "zoffsite-20261126T073000Z",
    "10546291128629098134",
    "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z",
];

pub const CONFIGS: &[&str] = &[
    r#"
[source]
datasets = ["tank/data"]          # each is backed up with all its children...
exclude = ["tank/data/games"]     # ...except these, with their children

[[target]]
name = "friend"
host = "10.77.0.2"                # the box's address inside the VPN
user = "root"
identity_file = "/tmp/box/id_ed25519"
known_hosts = "/tmp/box/known_hosts"   # pinned host key; unknown or changed key = refuse
"#,
    r#"[source]
datasets = ["tank/data", "tank/home", "other/x"]
exclude = ["tank/data/games", "tank/home/cache"]

[source.keep]
last = 24
hourly = 48
daily = 7
weekly = 4
monthly = 12
yearly = 3

[[target]]
name = "friend"
host = "box.example"
port = 2222
user = "backup"
identity_file = "/etc/zoffsite/id_ed25519"
known_hosts = "/etc/zoffsite/known_hosts"
connect_timeout = "15s"
max_age = "1d 2h"
bandwidth_limit = "2MiB/s"

[[target]]
name = "mum_2"
host = "fd00::2"
user = "_zoff"
identity_file = "/i"
known_hosts = "/k"
max_age = "26h"
bandwidth_limit = "1.5 KiB/s"

[[target.bandwidth_window]]
from = "01:00"
to = "06:00"
limit = "unlimited"

[[target.bandwidth_window]]
from = "22:30"
to = "01:00"
limit = "20 Mbit/s"
"#,
];

// ---- dictionaries ----

/// Pieces of native-encoded nvlists: pair sizes, types (uint64 8, nvlist
/// 19, nvlist array 20, uint8 array 26), the end marker, key field names.
pub const NVLIST_DICT: &[&[u8]] = &[
    &[0, 0, 0, 0],
    &[8, 0, 0, 0],
    &[19, 0, 0, 0],
    &[20, 0, 0, 0],
    &[26, 0, 0, 0],
    &[0xff, 0xff, 0xff, 0x7f],
    &[0, 0x80],
    b"crypt_keydata\0",
    b"DSL_CRYPTO_IV\0",
    b"DSL_CRYPTO_MAC\0",
    b"DSL_CRYPTO_MASTER_KEY_1\0",
];

pub const TEXT_DICT: &[&[u8]] = &[
    b"\t",
    b"\n",
    b"@",
    b"#",
    b"/",
    b"-",
    b"..",
    b".",
    b"%recv",
    b"tank",
    b"tank/data",
    b"offsite/home/",
    b"zoffsite-20261126T073000Z",
    b"18446744073709551615",
    b"18446744073709551616",
    b"9223372036854775807",
    b"9223372036854775808",
    b"99999999999999999999",
    b"0",
    b"+1",
    b"-1",
    b"off",
    b"on",
    b"aes-256-gcm",
    b"size\t",
    b"full\t",
    b"incremental\t",
    b"\0",
    b"\r",
    b"\x1b[2J",
    "é".as_bytes(),
    "\u{FFFD}".as_bytes(),
    b"\xff\xfe",
    b"1-",
    b"0x",
    b"mirror",
    b" ",
    b"1-c1796e07f-f0-789c63",
];

pub const NVT_DICT: &[&[u8]] = &[
    b"resume token contents:\n",
    b"nvlist version: 0\n",
    b"\tfromguid = 0x",
    b"\tobject = 0x",
    b"\toffset = 0x",
    b"\tbytes = 0x",
    b"\ttoguid = 0x",
    b"\ttoname = ",
    b"\tcompressok = 1\n",
    b"\trawok = 1\n",
    b"\trawok = 0\n",
    b"\tembedok = 1\n",
    b"\tlargeblockok = 1\n",
    b"\tsavedok = 1\n",
    b"full send of ",
    b"send from ",
    b" to ",
    b" estimated size is ",
    b"total estimated size is ",
    b"56.2K",
    b"16.0E",
    b"512",
    b"t/big@b1",
    b"t/big#b1",
    b"t/big@b2",
    b"t/dstfull@b1",
    b"3f5d117e22f85fa6",
    b"64669f068569ea08",
    b"ffffffffffffffff",
    b"10000000000000000",
    b"0",
    b"\n",
    b"\t",
    b" = ",
    b"\x1b",
    b"1-",
    b"-f0-",
    b"-10001-",
    b"789c",
];

pub const JSON_DICT: &[&[u8]] = &[
    br#""type""#,
    br#""hello""#,
    br#""list""#,
    br#""receive""#,
    br#""abort""#,
    br#""bye""#,
    br#""listing""#,
    br#""received""#,
    br#""aborted""#,
    br#""error""#,
    br#""protocol""#,
    br#""version""#,
    br#""client""#,
    br#""server""#,
    br#""root""#,
    br#""datasets""#,
    br#""dataset""#,
    br#""snapshot""#,
    br#""guid""#,
    br#""from""#,
    br#""resume""#,
    br#""code""#,
    br#""message""#,
    br#""name""#,
    br#""exists""#,
    br#""snapshots""#,
    br#""resume_token""#,
    br#""createtxg""#,
    br#""audit""#,
    br#""report""#,
    br#""checks""#,
    br#""counts""#,
    br#""status""#,
    br#""summary""#,
    br#""fix""#,
    br#""id""#,
    br#""generated_at""#,
    br#""ok""#,
    br#""warn""#,
    br#""unknown""#,
    br#""fail""#,
    br#""box.firewall""#,
    br#""box.new-check""#,
    br#""source.timers""#,
    br#""refused""#,
    br#""no_space""#,
    br#""zoffsite""#,
    br#""tank/data""#,
    br#""tank/../x""#,
    br#""1-abc-10-00""#,
    br#""\u0000""#,
    br#""\u001b[2J""#,
    br#""\ud800""#,
    br#""\uDBFF\uDFFF""#,
    b"null",
    b"true",
    b"false",
    b"0",
    b"-1",
    b"1e999",
    b"1.5",
    b"18446744073709551615",
    b"18446744073709551616",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b":",
    b"\"",
    b"\\",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    br#"{"type":"bye"}"#,
    br#"{"name":"s","guid":1,"createtxg":1},"#,
    br#""tank/a","#,
];

pub const CONFIG_DICT: &[&[u8]] = &[
    b"[source]\n",
    b"[[target]]\n",
    b"[source.keep]\n",
    b"datasets = ",
    b"exclude = ",
    b"name = ",
    b"host = ",
    b"port = ",
    b"user = ",
    b"identity_file = ",
    b"known_hosts = ",
    b"connect_timeout = ",
    b"max_age = ",
    b"bandwidth_limit = ",
    b"[[target.bandwidth_window]]",
    b"bandwidth_window = [{ from = \"01:00\", to = \"06:00\", limit = \"unlimited\" }]",
    b"from = ",
    b"to = ",
    b"limit = ",
    b"\"00:00\"",
    b"\"23:59\"",
    b"\"24:00\"",
    b"\"unlimited\"",
    b"\"20Mbit/s\"",
    b"\"2.5 MiB/s\"",
    b"last = ",
    b"hourly = ",
    b"daily = ",
    b"yearly = ",
    b"\"2MiB/s\"",
    b"\"1e400MiB/s\"",
    b"\"NaNMiB/s\"",
    b"\"0.0000001GiB/s\"",
    b"\"18446744073709551616GiB/s\"",
    b"\"15s\"",
    b"\"26h\"",
    b"\"1d 2h\"",
    b"\"-5s\"",
    b"\"9999999999999999999h\"",
    b"\"P1Y\"",
    b"\"19998y\"",
    b"\"PT9223372036854775807S\"",
    b"65536",
    b"0",
    b"-1",
    b"4294967296",
    b"18446744073709551616",
    b"\"/a\"",
    b"\"a\"",
    b"{ }",
    b"[",
    b"]",
    b"=",
    b"\n",
    b"#",
    b"'''",
    b"\"\"\"",
    b"\"tank/data\", ",
];

/// Properties manifests as backup writes them (version 2, with the tree),
/// and one of version 1.
pub fn manifests() -> Vec<Vec<u8>> {
    use zoffsite_core::manifest::build;
    use zoffsite_core::names::Dataset;
    let ds = |s: &str| Dataset::new(s).expect("valid");
    let rows = vec![
        (ds("tank/data"), "compression".to_owned(), "zstd".to_owned()),
        (ds("tank/data"), "mountpoint".to_owned(), "/srv/data".to_owned()),
        (ds("tank/data/docs"), "user:note".to_owned(), "a\tb".to_owned()),
        (ds("tank/data/docs"), "recordsize".to_owned(), "1048576".to_owned()),
    ];
    let full = build(&ds("tank/data"), &[ds("tank/data/docs"), ds("tank/data/docs/old")], &rows).render();
    let bare = build(&ds("tank/data"), &[], &[]).render();
    vec![full.into_bytes(), bare.into_bytes(), br#"{"version":1,"datasets":{"":{"atime":"off"}}}"#.to_vec()]
}

pub const MANIFEST_DICT: &[&[u8]] = &[
    b"\"version\"",
    b"\"datasets\"",
    b"\"tree\"",
    b"\"\"",
    b"\"docs\"",
    b"\"../x\"",
    b"\"mountpoint\"",
    b"\"setuid\"",
    b"2",
    b"3",
    b"null",
    b"{}",
    b"[]",
];

/// Txg journals as box prune writes them.
pub fn journals() -> Vec<Vec<u8>> {
    use zoffsite_core::journal::{Entry, Journal};
    let mut j = Journal::new(u64::MAX, zoffsite_core::names::Dataset::new("offsite/home").expect("valid"));
    let empty = j.render().into_bytes();
    for (i, t) in [(100u64, 1_764_979_200i64), (250, 1_765_065_600), (251, 1_765_152_000)] {
        j.record(Entry { txg: i, start: t - 3, end: t });
    }
    vec![empty, j.render().into_bytes()]
}

macro_rules! doctor {
    ($f:literal) => {
        include_str!(concat!("../../crates/zoffsite-core/testdata/doctor/", $f))
    };
}

/// `cryptsetup luksDump --dump-json-metadata` and `nft -j list ruleset`
/// as captured by testdata/doctor/capture.sh.
pub const DOCTOR_JSON: &[&str] = &[
    doctor!("luks2-tpm2-pcr7.json"),
    doctor!("luks2-tpm2-empty-policy.json"),
    doctor!("luks2-no-token.json"),
    doctor!("nft-box.json"),
    doctor!("nft-set.json"),
];

/// `/proc/net/tcp` and `/proc/net/tcp6` of a good and of a
/// socket-activated box.
pub const DOCTOR_SOCKETS: &[&str] = &[
    doctor!("proc-net-tcp-box.txt"),
    doctor!("proc-net-tcp6-box.txt"),
    doctor!("proc-net-tcp-socket.txt"),
    doctor!("proc-net-tcp6-socket.txt"),
];

/// `sshd -T`, the three `wg show IF ...` listings (joined by form feeds),
/// `zfs version`, `zfs allow`.
pub const DOCTOR_TEXT: &[&str] = &[
    doctor!("sshd-T-box.txt"),
    concat!(
        doctor!("wg-box.latest-handshakes.txt"),
        "\x0c",
        doctor!("wg-box.endpoints.txt"),
        "\x0c",
        doctor!("wg-box.persistent-keepalive.txt")
    ),
    concat!(
        doctor!("wg-source.latest-handshakes.txt"),
        "\x0c",
        doctor!("wg-source.endpoints.txt"),
        "\x0c",
        doctor!("wg-source.persistent-keepalive.txt")
    ),
    "zfs-2.3.4-1\nzfs-kmod-2.3.4-1\n",
    "---- Permissions on offsite/home ----\nLocal+Descendent permissions:\n\tuser zoffsite create,mount,receive:append,send,userprop\n",
];

macro_rules! install {
    ($f:literal) => {
        include_str!(concat!("../../crates/zoffsite-core/testdata/install/", $f))
    };
}

/// `lsblk --json --bytes --output ... --tree` (util-linux 2.38): the VM's
/// real output, and a mini PC with the installer stick (an ESP and the
/// root mounted), a blank NVMe disk, a blank SATA disk and a used one.
pub const LSBLK: &[&str] = &[
    install!("lsblk-vm.json"),
    r#"{"blockdevices": [
  {"name": "sda", "path": "/dev/sda", "type": "disk", "size": 32000000000, "rm": true, "ro": false, "pttype": "gpt",
   "parttype": null, "fstype": null, "mountpoints": [null], "tran": "usb", "model": "Cruzer Blade", "serial": "4C53",
   "children": [
    {"name": "sda1", "path": "/dev/sda1", "type": "part", "size": 536870912, "rm": true, "ro": false, "pttype": "gpt",
     "parttype": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "fstype": "vfat", "mountpoints": ["/efi"], "tran": null,
     "model": null, "serial": null},
    {"name": "sda2", "path": "/dev/sda2", "type": "part", "size": 3221225472, "rm": true, "ro": false, "pttype": "gpt",
     "parttype": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "fstype": "ext4", "mountpoints": ["/"], "tran": null,
     "model": null, "serial": null}]},
  {"name": "nvme0n1", "path": "/dev/nvme0n1", "type": "disk", "size": 256060514304, "rm": false, "ro": false,
   "pttype": null, "parttype": null, "fstype": null, "mountpoints": [null], "tran": "nvme",
   "model": "Samsung SSD 980 250GB", "serial": "S64BNJ0R123456"},
  {"name": "sdb", "path": "/dev/sdb", "type": "disk", "size": 2000398934016, "rm": false, "ro": false,
   "pttype": null, "parttype": null, "fstype": null, "mountpoints": [null], "tran": "sata",
   "model": "WDC WD20EFRX-68EUZN0", "serial": "WD-WCC4M1234567"},
  {"name": "sdc", "path": "/dev/sdc", "type": "disk", "size": 1000204886016, "rm": false, "ro": false,
   "pttype": "dos", "parttype": null, "fstype": null, "mountpoints": [null], "tran": "sata", "model": "ST1000",
   "serial": "Z1D",
   "children": [
    {"name": "sdc1", "path": "/dev/sdc1", "type": "part", "size": 1000203837440, "rm": false, "ro": false,
     "pttype": "dos", "parttype": "0x83", "fstype": "crypto_LUKS", "mountpoints": [null], "tran": null,
     "model": null, "serial": null,
     "children": [
      {"name": "data", "path": "/dev/mapper/data", "type": "crypt", "size": 1000186994688, "rm": false, "ro": false,
       "pttype": null, "parttype": null, "fstype": "ext4", "mountpoints": ["/mnt/data", "/srv"], "tran": null,
       "model": null, "serial": null}]}]}
]}
"#,
];

/// The LUKS2 headers of the installer's root before and after the key
/// file's slot is wiped (testdata/install/capture.sh).
pub const INSTALL_LUKS: &[&str] = &[install!("luks2-keyfile-tpm2-recovery.json"), install!("luks2-tpm2-recovery.json")];

pub const LSBLK_DICT: &[&[u8]] = &[
    b"\"blockdevices\"",
    b"\"children\"",
    b"\"mountpoints\"",
    b"\"type\"",
    b"\"disk\"",
    b"\"part\"",
    b"\"crypt\"",
    b"\"/\"",
    b"\"/dev/sdb\"",
    b"\"/dev/../sdb\"",
    b"\"gpt\"",
    b"\"c12a7328-f81f-11d2-ba4b-00a0c93ec93b\"",
    b"null",
    b"true",
    b"false",
    b"[null]",
    b"18446744073709551615",
    b"\"\\u0000\"",
    b"\"\\u202e\"",
];
