//! The mutator: byte-level mutations (bit flips, inserts, deletes, repeats,
//! splices, integer tweaks, dictionary tokens, truncation) plus
//! structure-aware ones for the two binary formats, so mutants get past the
//! first check often enough to reach the deep ones:
//!
//! - protocol frames (`kind u8, len u32 BE, payload`): a frame's body is
//!   mutated and its length fixed up, or the length itself is the target
//!   (off by one, huge, zero); frames are dropped, repeated, swapped, or
//!   taken from another input; the stream a session carries in its `D`
//!   frames is reassembled, mutated as a stream and re-chunked;
//! - send streams (312-byte records, payload lengths per record type):
//!   header fields get interesting values (lengths, GUIDs of the real
//!   fixtures, feature bits), records are dropped, repeated, swapped or
//!   spliced in from another stream; a substream BEGIN's key data gets a
//!   duplicate name planted in it (with `drr_payloadlen` fixed up);
//! - packed nvlists (a BEGIN payload): decoded, then a copy of a pair is
//!   planted in the same list (top level or inside `crypt_keydata`, its
//!   value kept or changed, before or after the original), pairs dropped
//!   or swapped, and re-packed; or `nvl_version`/`nvl_nvflag` set.

use crate::rng::Rng;

/// How a target's input is laid out, which decides the mutations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Text (`zfs` output, tokens, names, config).
    Text,
    /// One JSON document.
    Json,
    /// `prefix` control bytes, then protocol frames.
    Frames { prefix: usize },
    /// `prefix` control bytes, then a send stream.
    Stream { prefix: usize },
    /// A packed native nvlist (a substream BEGIN's payload).
    NvList,
}

/// What a mutation may draw on.
pub struct Material<'a> {
    /// Tokens to insert or overwrite with.
    pub dict: &'a [&'a [u8]],
    /// Interesting integers (limits, GUIDs of the fixtures).
    pub ints: &'a [u64],
    /// Other inputs, for splicing.
    pub pool: &'a [Vec<u8>],
    pub max_len: usize,
}

const INTERESTING_BYTES: &[u8] = b"\x00\x01\x02\x05\x7f\x80\xff\t\n\r \"\\-/@#.:{}[],0179afxz%\x1b";

/// Returns a mutant of `input`: 1 to 8 stacked mutations.
pub fn mutate(rng: &mut Rng, input: &[u8], shape: Shape, m: &Material<'_>) -> Vec<u8> {
    let mut out = input.to_vec();
    let n = rng.small_len(8);
    for _ in 0..n {
        match shape {
            Shape::Frames { prefix } if rng.below(3) != 0 && out.len() > prefix => frames(rng, &mut out, prefix, m),
            Shape::Stream { prefix } if rng.below(3) != 0 && out.len() > prefix => {
                let mut s = out.split_off(prefix);
                stream(rng, &mut s, m);
                out.extend_from_slice(&s);
            }
            Shape::NvList if rng.below(3) != 0 => nvlist(rng, &mut out, m),
            _ => bytes(rng, &mut out, m),
        }
        if out.len() > m.max_len {
            out.truncate(m.max_len);
        }
    }
    out
}

/// One byte-level mutation.
pub fn bytes(rng: &mut Rng, v: &mut Vec<u8>, m: &Material<'_>) {
    let len = v.len();
    match rng.below(19) {
        0 | 1 if len > 0 => {
            let i = rng.below(len);
            v[i] ^= 1 << rng.below(8);
        }
        2 if len > 0 => {
            let i = rng.below(len);
            v[i] = rng.byte();
        }
        3 if len > 0 => {
            let i = rng.below(len);
            v[i] = *rng.pick(INTERESTING_BYTES);
        }
        4 => {
            let at = rng.below(len + 1);
            let n = rng.small_len(16);
            let new: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            v.splice(at..at, new);
        }
        5 | 6 if !m.dict.is_empty() => {
            let at = rng.below(len + 1);
            let tok = *rng.pick(m.dict);
            v.splice(at..at, tok.iter().copied());
        }
        7 if !m.dict.is_empty() && len > 0 => {
            let at = rng.below(len);
            let tok = *rng.pick(m.dict);
            let end = (at + tok.len()).min(len);
            v.splice(at..end, tok.iter().copied());
        }
        8 if len > 0 => {
            let at = rng.below(len);
            let n = rng.small_len(len - at);
            v.drain(at..at + n);
        }
        9 if len > 0 => {
            // Repeat a chunk, sometimes many times (counts and sizes past
            // the limits need long inputs).
            let at = rng.below(len);
            let n = rng.small_len((len - at).min(4096));
            let room = m.max_len.saturating_sub(len) / n;
            if room > 0 {
                let cap = if rng.one_in(8) { 1 << 16 } else { 16 };
                let k = rng.small_len(room.min(cap));
                let chunk = v[at..at + n].to_vec();
                let rep: Vec<u8> = chunk.iter().copied().cycle().take(n * k).collect();
                v.splice(at + n..at + n, rep);
            }
        }
        10 if !m.pool.is_empty() => {
            // Splice: a prefix of this input, a suffix of another.
            let other = rng.pick(m.pool);
            let a = rng.below(len + 1);
            let b = rng.below(other.len() + 1);
            v.truncate(a);
            v.extend_from_slice(&other[b..]);
        }
        11 if !m.pool.is_empty() => {
            let other = rng.pick(m.pool);
            if !other.is_empty() {
                let b = rng.below(other.len());
                let n = rng.small_len(other.len() - b);
                let at = rng.below(len + 1);
                v.splice(at..at, other[b..b + n].iter().copied());
            }
        }
        12 if len > 0 => v.truncate(rng.below(len)),
        13 | 14 if len > 0 => {
            let width = rng_width(rng);
            int_tweak(rng, v, width, m)
        }
        15 if len > 1 => {
            // Copy a byte from elsewhere in the input.
            let (i, j) = (rng.below(len), rng.below(len));
            v[i] = v[j];
        }
        16 | 17 => number(rng, v, m),
        18 => quoted(rng, v, m),
        _ => {
            let at = rng.below(len + 1);
            v.insert(at, *rng.pick(INTERESTING_BYTES));
        }
    }
}

/// Replaces a whole number written in text (a run of digits, hex after
/// `0x`) with an interesting one: limits, off-by-ones, the fixtures' GUIDs.
fn number(rng: &mut Rng, v: &mut Vec<u8>, m: &Material<'_>) {
    let all = runs(v, |b| b.is_ascii_digit());
    // Whole numbers first: not part of a word or a hex string (but after 0x).
    let whole: Vec<(usize, usize)> = all
        .iter()
        .copied()
        .filter(|&(a, b)| {
            let word = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            (a >= 2 && &v[a - 2..a] == b"0x") || !(a > 0 && word(v.get(a - 1)) || word(v.get(b)))
        })
        .collect();
    let runs = if whole.is_empty() || rng.one_in(4) { all } else { whole };
    if runs.is_empty() {
        return;
    }
    let (a, b) = *rng.pick(&runs);
    let hex = a >= 2 && &v[a - 2..a] == b"0x";
    let (a, b) = if hex { (a, a + v[a..].iter().take_while(|c| c.is_ascii_hexdigit()).count()) } else { (a, b) };
    let x = match rng.below(5) {
        0 => *rng.pick(&[0, 1, u64::MAX, i64::MAX as u64, (i64::MAX as u64) + 1, u32::MAX as u64, 1 << 53]),
        1 => std::str::from_utf8(&v[a..b])
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
            .wrapping_add(rng.range(0, 2) as u64)
            .wrapping_sub(1),
        _ if !m.ints.is_empty() => *rng.pick(m.ints),
        _ => rng.next_u64(),
    };
    let text = match (hex, rng.below(8)) {
        (true, _) => format!("{x:x}"),
        (false, 0) => format!("{x}0"), // past u64
        (false, 1) => format!("-{x}"),
        (false, 2) => format!("0{x}"),
        _ => x.to_string(),
    };
    v.splice(a..b, text.into_bytes());
}

/// Replaces what is between a pair of double quotes with a token.
fn quoted(rng: &mut Rng, v: &mut Vec<u8>, m: &Material<'_>) {
    let quotes: Vec<usize> = v.iter().enumerate().filter(|&(_, &c)| c == b'"').map(|(i, _)| i).collect();
    if quotes.len() < 2 || m.dict.is_empty() {
        return;
    }
    let i = rng.below(quotes.len() - 1);
    let (a, b) = (quotes[i] + 1, quotes[i + 1]);
    let tok = *rng.pick(m.dict);
    let tok = tok.strip_prefix(b"\"").and_then(|t| t.strip_suffix(b"\"")).unwrap_or(tok);
    v.splice(a..b, tok.iter().copied());
}

/// Maximal runs of bytes matching `f`.
fn runs(v: &[u8], f: impl Fn(u8) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &b) in v.iter().enumerate() {
        match (f(b), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, v.len()));
    }
    out
}

fn rng_width(rng: &mut Rng) -> usize {
    *rng.pick(&[1, 2, 4, 8])
}

/// Overwrites an integer of `width` bytes at a random offset: a small
/// delta, an interesting value, either byte order.
fn int_tweak(rng: &mut Rng, v: &mut [u8], width: usize, m: &Material<'_>) {
    if v.len() < width {
        return;
    }
    let at = rng.below(v.len() - width + 1);
    set_int(rng, v, at, width, m);
}

fn set_int(rng: &mut Rng, v: &mut [u8], at: usize, width: usize, m: &Material<'_>) {
    let be = rng.one_in(2);
    let old = read_int(&v[at..at + width], be);
    let new = match rng.below(4) {
        0 => old.wrapping_add(rng.range(1, 16) as u64),
        1 => old.wrapping_sub(rng.range(1, 16) as u64),
        _ if !m.ints.is_empty() => *rng.pick(m.ints),
        _ => rng.next_u64(),
    };
    write_int(&mut v[at..at + width], new, be);
}

fn read_int(b: &[u8], be: bool) -> u64 {
    let mut x = 0u64;
    for i in 0..b.len() {
        let byte = if be { b[i] } else { b[b.len() - 1 - i] };
        x = (x << 8) | u64::from(byte);
    }
    x
}

fn write_int(b: &mut [u8], x: u64, be: bool) {
    let n = b.len();
    for i in 0..n {
        let byte = (x >> (8 * i)) as u8;
        if be {
            b[n - 1 - i] = byte;
        } else {
            b[i] = byte;
        }
    }
}

// ---- protocol frames ----

#[derive(Debug, Clone, Copy)]
struct FrameAt {
    at: usize,
    kind: u8,
    /// Body range, clamped to the input.
    body: (usize, usize),
}

fn walk_frames(v: &[u8], start: usize) -> Vec<FrameAt> {
    let mut out = Vec::new();
    let mut at = start;
    while at + 5 <= v.len() {
        let len = u32::from_be_bytes([v[at + 1], v[at + 2], v[at + 3], v[at + 4]]) as usize;
        let end = (at + 5).saturating_add(len).min(v.len());
        out.push(FrameAt { at, kind: v[at], body: (at + 5, end) });
        at = end;
    }
    out
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + 5);
    f.push(kind);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

const LENGTHS: &[u64] = &[
    0,
    1,
    2,
    4,
    5,
    311,
    312,
    313,
    0xffff,
    (1 << 20) - 1,
    1 << 20,
    (1 << 20) + 1,
    64 << 20,
    (64 << 20) + 1,
    u32::MAX as u64,
];

fn frames(rng: &mut Rng, v: &mut Vec<u8>, prefix: usize, m: &Material<'_>) {
    let fs = walk_frames(v, prefix);
    if fs.is_empty() {
        return bytes(rng, v, m);
    }
    let f = *rng.pick(&fs);
    match rng.below(10) {
        0..=2 if f.kind == b'M' || rng.one_in(4) => {
            // Mutate a body, keep the framing right.
            let mut body = v[f.body.0..f.body.1].to_vec();
            for _ in 0..rng.range(1, 4) {
                bytes(rng, &mut body, m);
            }
            body.truncate(m.max_len / 2);
            v.splice(f.at..f.body.1, frame(f.kind, &body));
        }
        0..=3 => {
            // The stream between a message and its E frame: reassemble,
            // mutate as a stream, re-chunk.
            let i = fs.iter().position(|g| g.at == f.at).unwrap_or(0);
            let data: Vec<FrameAt> =
                fs[i..].iter().skip_while(|g| g.kind != b'D').take_while(|g| g.kind == b'D').copied().collect();
            let (Some(first), Some(last)) = (data.first(), data.last()) else { return bytes(rng, v, m) };
            let mut s: Vec<u8> = data.iter().flat_map(|g| v[g.body.0..g.body.1].iter().copied()).collect();
            stream(rng, &mut s, m);
            let mut new = Vec::new();
            let mut rest = &s[..];
            let chunk = if rng.one_in(2) { 1 << 20 } else { rng.small_len(8192) };
            while !rest.is_empty() {
                let n = rng.range(1, chunk).min(rest.len());
                new.extend_from_slice(&frame(b'D', &rest[..n]));
                rest = &rest[n..];
            }
            v.splice(first.at..last.body.1, new);
        }
        4 => {
            let len =
                if rng.one_in(2) { (f.body.1 - f.body.0) as u64 + rng.range(0, 2) as u64 } else { *rng.pick(LENGTHS) };
            let len = len.saturating_sub(u64::from(rng.one_in(3))) as u32;
            v[f.at + 1..f.at + 5].copy_from_slice(&len.to_be_bytes());
        }
        5 => v[f.at] = *rng.pick(b"MDEMDEx\0"),
        6 => {
            v.drain(f.at..f.body.1);
        }
        7 => {
            let copy = v[f.at..f.body.1].to_vec();
            let g = *rng.pick(&fs);
            v.splice(g.at..g.at, copy);
        }
        8 if !m.pool.is_empty() => {
            // A frame (or run of frames) from another input.
            let other = rng.pick(m.pool);
            let ofs = walk_frames(other, prefix.min(other.len()));
            if ofs.is_empty() {
                return;
            }
            let a = rng.below(ofs.len());
            let n = rng.small_len(4);
            let b = rng.range(a, (a + n).min(ofs.len() - 1));
            let piece = other[ofs[a].at..ofs[b].body.1].to_vec();
            let at = if rng.one_in(2) { f.at } else { f.body.1 };
            v.splice(at..at, piece);
        }
        _ => {
            let g = *rng.pick(&fs);
            if g.at > f.at {
                let second = v[g.at..g.body.1].to_vec();
                let first = v[f.at..f.body.1].to_vec();
                v.splice(g.at..g.body.1, first);
                v.splice(f.at..f.body.1, second);
            }
        }
    }
}

// ---- send streams ----

const MAGIC: u64 = 0x2F5B_ACBAC;
const REC: usize = 312;

#[derive(Debug, Clone, Copy)]
struct RecAt {
    at: usize,
    end: usize,
}

/// Record boundaries by the payload rules of `records.rs`; what cannot be
/// walked is one last opaque piece.
fn walk_records(s: &[u8]) -> Vec<RecAt> {
    let be = s.len() >= 16 && read_int(&s[8..16], false) != MAGIC && read_int(&s[8..16], true) == MAGIC;
    let mut out = Vec::new();
    let mut at = 0;
    while at < s.len() {
        if at + REC > s.len() {
            out.push(RecAt { at, end: s.len() });
            break;
        }
        let h = &s[at..at + REC];
        let u32at = |o: usize| read_int(&h[o..o + 4], be);
        let u64at = |o: usize| read_int(&h[o..o + 8], be);
        let round8 = |n: u64| n.div_ceil(8) * 8;
        let payload = match u32at(0) {
            0 => u32at(4),
            1 if u32at(36) != 0 => u32at(36),
            1 => round8(u32at(28)),
            3 if h[50] != 0 => u64at(96),
            3 => u64at(32),
            7 if u64at(40) != 0 => u64at(40),
            7 => u64at(16),
            8 => round8(u32at(52)),
            2 | 4 | 5 | 6 | 9 | 10 => 0,
            _ => {
                out.push(RecAt { at, end: s.len() });
                break;
            }
        };
        let end = (at + REC).saturating_add(usize::try_from(payload).unwrap_or(usize::MAX)).min(s.len());
        out.push(RecAt { at, end });
        at = end;
    }
    out
}

/// Header fields worth hitting: type, payloadlen, magic, versioninfo,
/// sizes, GUIDs, compression type, psize, the name.
const FIELDS: &[usize] = &[0, 4, 8, 16, 20, 24, 28, 32, 36, 40, 48, 50, 52, 56, 96];

fn stream(rng: &mut Rng, s: &mut Vec<u8>, m: &Material<'_>) {
    let recs = walk_records(s);
    if recs.is_empty() {
        return bytes(rng, s, m);
    }
    // BEGIN and END records carry the structure: pick them half the time.
    let be = s.len() >= 16 && read_int(&s[8..16], true) == MAGIC;
    let rtype = |r: &RecAt| (r.at + REC <= s.len()).then(|| read_int(&s[r.at..r.at + 4], be));
    let marks: Vec<RecAt> = recs.iter().filter(|r| matches!(rtype(r), Some(0 | 5))).copied().collect();
    let r = if !marks.is_empty() && rng.one_in(2) { *rng.pick(&marks) } else { *rng.pick(&recs) };
    let full = r.at + REC <= s.len();
    match rng.below(11) {
        10 => {
            // A duplicate name in a substream BEGIN's key data.
            let Some(b) = recs.iter().find(|r| rtype(r) == Some(0) && r.end - r.at > REC) else {
                return bytes(rng, s, m);
            };
            let mut payload = s[b.at + REC..b.end].to_vec();
            if !plant_duplicate(rng, &mut payload) {
                return bytes(rng, s, m);
            }
            let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            write_int(&mut s[b.at + 4..b.at + 8], u64::from(len), be);
            s.splice(b.at + REC..b.end, payload);
        }
        0..=3 if full => {
            let off = if rng.one_in(4) { rng.below(REC / 4) * 4 } else { *rng.pick(FIELDS) };
            let width = match off {
                50 => 1,
                o if o % 8 == 0 && o + 8 <= REC => 8,
                _ => 4,
            };
            let h = &mut s[r.at..r.at + REC];
            if off == 16 && rng.one_in(2) {
                // A feature bit or the header type.
                let be = read_int(&h[8..16], true) == MAGIC;
                let vi = read_int(&h[16..24], be) ^ (1u64 << rng.below(34));
                write_int(&mut h[16..24], vi, be);
            } else if off == 56 && !m.dict.is_empty() {
                let tok = *rng.pick(m.dict);
                let at = 56 + rng.below(64);
                let n = tok.len().min(REC - at);
                h[at..at + n].copy_from_slice(&tok[..n]);
                if rng.one_in(2) && at + n < REC {
                    h[at + n] = 0;
                }
            } else if (off == 40 || off == 48) && rng.one_in(2) {
                // A GUID this stream already uses, or none.
                let guids: Vec<u64> = marks
                    .iter()
                    .flat_map(|g| [read_int(&s[g.at + 40..g.at + 48], be), read_int(&s[g.at + 48..g.at + 56], be)])
                    .collect();
                let x = if rng.one_in(3) || guids.is_empty() { 0 } else { *rng.pick(&guids) };
                write_int(&mut s[r.at + off..r.at + off + 8], x, be);
            } else if off + width <= REC {
                set_int(rng, h, off, width, m);
            }
        }
        4 => {
            s.drain(r.at..r.end);
        }
        5 => {
            let copy = s[r.at..r.end].to_vec();
            let at = rng.pick(&recs).at;
            s.splice(at..at, copy);
        }
        6 => {
            let g = *rng.pick(&recs);
            if g.at >= r.end {
                let second = s[g.at..g.end].to_vec();
                let first = s[r.at..r.end].to_vec();
                s.splice(g.at..g.end, first);
                s.splice(r.at..r.end, second);
            }
        }
        7 if !m.pool.is_empty() => {
            // Records from another stream (the pool holds whole inputs:
            // find a stream in it by its magic).
            let other = rng.pick(m.pool);
            let Some(start) = find_stream(other) else { return bytes(rng, s, m) };
            let ors = walk_records(&other[start..]);
            let a = rng.below(ors.len());
            let n = rng.small_len(8);
            let b = rng.range(a, (a + n).min(ors.len() - 1));
            let piece = other[start + ors[a].at..start + ors[b].end].to_vec();
            let at = if rng.one_in(2) { r.at } else { r.end };
            s.splice(at..at, piece);
        }
        8 => s.truncate(if rng.one_in(2) { r.at } else { r.at + rng.below(r.end - r.at + 1) }),
        _ => {
            // Inside one record: header or payload bytes.
            let mut piece = s[r.at..r.end].to_vec();
            bytes(rng, &mut piece, m);
            s.splice(r.at..r.end, piece);
        }
    }
}

/// Where a BEGIN record's magic shows a stream starts in `v`.
fn find_stream(v: &[u8]) -> Option<usize> {
    let le = MAGIC.to_le_bytes();
    let be = MAGIC.to_be_bytes();
    v.windows(8).position(|w| w == le || w == be).and_then(|p| p.checked_sub(8))
}

/// Structure-aware nvlist mutations; byte ones when the input does not
/// decode.
fn nvlist(rng: &mut Rng, v: &mut Vec<u8>, m: &Material<'_>) {
    match rng.below(4) {
        0 | 1 => {
            if !plant_duplicate(rng, v) {
                bytes(rng, v, m)
            }
        }
        2 => {
            // nvl_version or nvl_nvflag of the top list, or of an embedded
            // list's image (found by its canonical bytes 0, 1).
            let be = v.get(1) == Some(&0);
            let value = *rng.pick(&[0u64, 1, 2, 3, 0xffff_ffff, 0x8000_0001]);
            let images: Vec<usize> = (12..v.len().saturating_sub(24))
                .filter(|&i| {
                    let w = if be { [0, 0, 0, 0, 0, 0, 0, 1] } else { [0, 0, 0, 0, 1, 0, 0, 0] };
                    i % 8 == 4 && v[i..i + 8] == w && v[i + 8..i + 24].iter().all(|&b| b == 0)
                })
                .collect();
            let at = match (rng.below(3), images.is_empty()) {
                (0, false) => *rng.pick(&images) + 4 * rng.below(2),
                (1, _) if v.len() >= 8 => 4,
                _ if v.len() >= 12 => 8,
                _ => return bytes(rng, v, m),
            };
            write_int(&mut v[at..at + 4], value, be);
        }
        _ => {
            let Ok(mut list) = zoffsite_core::nvlist::unpack(v) else { return bytes(rng, v, m) };
            let be = v.get(1) == Some(&0);
            let target = pick_list(rng, &mut list);
            if target.pairs.len() >= 2 {
                let (i, j) = (rng.below(target.pairs.len()), rng.below(target.pairs.len()));
                if rng.one_in(2) {
                    target.pairs.swap(i, j);
                } else {
                    target.pairs.remove(i);
                }
            }
            *v = zoffsite_core::nvlist::pack(&list, be);
        }
    }
}

/// A list of `list` to mutate: itself, or (more often) a nested one such
/// as `crypt_keydata`.
fn pick_list<'l>(rng: &mut Rng, list: &'l mut zoffsite_core::nvlist::NvList) -> &'l mut zoffsite_core::nvlist::NvList {
    use zoffsite_core::nvlist::Value;
    let nested: Vec<usize> =
        list.pairs.iter().enumerate().filter(|(_, (_, v))| matches!(v, Value::List(_))).map(|(i, _)| i).collect();
    if nested.is_empty() || rng.one_in(3) {
        return list;
    }
    let i = *rng.pick(&nested);
    match &mut list.pairs[i].1 {
        Value::List(inner) => inner,
        _ => unreachable!("picked a nested list"),
    }
}

/// Decodes `v` and plants a copy of one of its pairs in the same list (at
/// the top or inside a nested list), its value kept or changed, anywhere
/// in that list; re-packs. False when `v` does not decode or has no pair.
fn plant_duplicate(rng: &mut Rng, v: &mut Vec<u8>) -> bool {
    use zoffsite_core::nvlist::{self, Value};
    let Ok(mut list) = nvlist::unpack(v) else { return false };
    let be = v.get(1) == Some(&0);
    let target = pick_list(rng, &mut list);
    if target.pairs.is_empty() {
        return false;
    }
    let (name, mut value) = target.pairs[rng.below(target.pairs.len())].clone();
    match (&mut value, rng.below(4)) {
        (Value::U64(x), 0) => *x ^= 1 << rng.below(64),
        (Value::Bytes(b), 0) if !b.is_empty() => {
            let i = rng.below(b.len());
            b[i] ^= 1 << rng.below(8);
        }
        (_, 1) => value = Value::U64(rng.below(1 << 16) as u64),
        _ => {}
    }
    let at = rng.below(target.pairs.len() + 1);
    target.pairs.insert(at, (name, value));
    *v = nvlist::pack(&list, be);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoffsite_core::nvlist::{self, NvError};

    /// The planting mutation always yields a list the reader refuses as a
    /// duplicate, at the top and inside crypt_keydata alike.
    #[test]
    fn planted_duplicates_are_what_the_reader_refuses() {
        let payloads: Vec<Vec<u8>> = crate::corpus::streams()
            .into_iter()
            .flat_map(|s| zoffsite_core::records::craft::begin_payloads(&s.bytes))
            .filter(|p| nvlist::unpack(p).is_ok())
            .collect();
        assert!(payloads.len() >= 3, "{}", payloads.len());
        let mut rng = Rng::new(7);
        let (mut inner, mut top) = (0, 0);
        for i in 0..2000 {
            let mut v = payloads[i % payloads.len()].clone();
            assert!(plant_duplicate(&mut rng, &mut v));
            match nvlist::unpack(&v) {
                Err(NvError::Duplicate { name, .. }) if name == "crypt_keydata" => top += 1,
                Err(NvError::Duplicate { name, .. }) if name.starts_with("DSL_") || name.starts_with("mdn_") => {
                    inner += 1
                }
                Err(NvError::Duplicate { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(inner > 100 && top > 100, "inner {inner}, top {top}");
    }
}
