//! Bounded-time fuzzing of zoffsite's parsers of hostile input, on a stable
//! toolchain (no libFuzzer, no coverage): a seeded mutator over a corpus of
//! real inputs, each target run under `catch_unwind` with its allocations
//! counted. See `fuzz/README.md`.
//!
//! ```text
//! zoffsite-fuzz [--seconds N] [--seed N] [--iterations N] [--targets a,b]
//! zoffsite-fuzz replay TARGET FILE     # one input, verbosely
//! zoffsite-fuzz list
//! ```
//! Environment: `FUZZ_SECONDS` (default 60, the whole run), `FUZZ_SEED`
//! (default: from the clock; printed), `FUZZ_ITERATIONS` (per target,
//! instead of time: fully deterministic), `FUZZ_TARGETS`, `FUZZ_MAX_RSS_MIB`
//! (default 256).

mod alloc;
mod corpus;
mod mutate;
mod rng;
mod serve;
mod targets;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mutate::Material;
use rng::{hash, Rng};
use targets::{Ctx, Target};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// Longest an in-process execution may take before it counts as a hang.
const SLOW: Duration = Duration::from_secs(5);
/// The watchdog's hard limit: past it, the input is printed and the run ends.
const HUNG: Duration = Duration::from_secs(60);
/// Longest error message from hostile input that still reads as a message.
const MAX_ERROR_LEN: usize = 8 * 1024;
/// Inputs kept for further mutation: at most this many, this many bytes.
const POOL_CAP: usize = 2000;
const POOL_BYTES: usize = 24 << 20;
const POOL_ENTRY_MAX: usize = 256 * 1024;

static MAX_RSS_MIB: AtomicU64 = AtomicU64::new(256);

pub fn max_rss() -> u64 {
    MAX_RSS_MIB.load(Relaxed) << 20
}

/// What the watchdog needs to report a hang.
struct Current {
    target: &'static str,
    input: Vec<u8>,
    started: Option<Instant>,
}

static CURRENT: Mutex<Current> = Mutex::new(Current { target: "", input: Vec::new(), started: None });
static LAST_PANIC: Mutex<Option<(String, String)>> = Mutex::new(None);
/// Set while a target runs: its panics are findings, reported later; any
/// other panic is the harness's own and is printed at once.
static IN_TARGET: AtomicBool = AtomicBool::new(false);

struct Options {
    seconds: f64,
    seed: u64,
    iterations: Option<u64>,
    targets: Option<Vec<String>>,
}

fn env_or<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map(Some).map_err(|_| format!("{name}={v:?} is not valid")),
        _ => Ok(None),
    }
}

fn options(args: &[String]) -> Result<Options, String> {
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut o = Options {
        seconds: env_or("FUZZ_SECONDS")?.unwrap_or(60.0),
        seed: env_or("FUZZ_SEED")?.unwrap_or(hash(&clock.to_le_bytes()) % 1_000_000_000),
        iterations: env_or("FUZZ_ITERATIONS")?,
        targets: env_or::<String>("FUZZ_TARGETS")?.map(|s| s.split(',').map(str::to_owned).collect()),
    };
    if let Some(m) = env_or("FUZZ_MAX_RSS_MIB")? {
        MAX_RSS_MIB.store(m, Relaxed);
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--seconds" => o.seconds = val()?.parse().map_err(|_| "bad --seconds")?,
            "--seed" => o.seed = val()?.parse().map_err(|_| "bad --seed")?,
            "--iterations" => o.iterations = Some(val()?.parse().map_err(|_| "bad --iterations")?),
            "--targets" => o.targets = Some(val()?.split(',').map(str::to_owned).collect()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

/// Every target; the `serve` target needs a directory for its fake `zfs`,
/// and is left out (the summary says why, and the run fails) without one.
fn all_targets() -> (Vec<Target>, Option<String>) {
    let mut v = targets::all();
    match serve::target() {
        Ok(t) => v.push(t),
        Err(e) => return (v, Some(format!("serve: cannot set up its fake zfs: {e}"))),
    }
    (v, None)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    install_panic_hook();
    match args.first().map(String::as_str) {
        Some("list") => {
            for t in all_targets().0 {
                println!("{}", t.name);
            }
            ExitCode::SUCCESS
        }
        Some("replay") => replay(&args[1..]),
        _ => match options(&args) {
            Ok(o) => fuzz(o),
            Err(e) => {
                eprintln!("zoffsite-fuzz: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let loc = info.location().map_or_else(|| "unknown".to_owned(), |l| format!("{}:{}", l.file(), l.line()));
        let bt = std::backtrace::Backtrace::force_capture();
        if !IN_TARGET.load(Relaxed) || std::thread::current().name() != Some("main") {
            eprintln!("zoffsite-fuzz itself panicked: {info}\n{bt}");
            return;
        }
        if let Ok(mut p) = LAST_PANIC.lock() {
            *p = Some((loc, format!("{info}\n{bt}")));
        }
    }));
}

static SEED: AtomicU64 = AtomicU64::new(0);

/// Called by the allocator before it tries an allocation over 1 GiB: prints
/// the finding and ends the run (a failed allocation would abort it).
pub fn huge_allocation(size: usize) {
    let (target, input) = match CURRENT.try_lock() {
        Ok(c) => (c.target, c.input.clone()),
        Err(_) => ("?", Vec::new()),
    };
    eprintln!(
        "\nFAILURE in {target} (memory): one allocation of {size} bytes (seed {})\n{}\n{}",
        SEED.load(Relaxed),
        std::backtrace::Backtrace::force_capture(),
        show_input(&input, target, "as found")
    );
    std::process::exit(1);
}

/// Prints the input of a hung execution and ends the run.
fn start_watchdog() {
    std::thread::spawn(|| loop {
        std::thread::sleep(Duration::from_secs(1));
        let Ok(c) = CURRENT.lock() else { continue };
        if c.started.is_some_and(|s| s.elapsed() > HUNG) {
            eprintln!("\nFAILURE in {}: one execution has run for over {HUNG:?} (a hang)", c.target);
            eprintln!("{}", show_input(&c.input, c.target, "hang"));
            std::process::exit(1);
        }
    });
}

/// One execution's results.
struct Exec {
    accepted: bool,
    ctx: Ctx,
    panic: Option<(String, String)>,
    peak: usize,
    elapsed: Duration,
}

fn execute(t: &mut Target, input: &[u8]) -> Exec {
    if let Ok(mut c) = CURRENT.lock() {
        c.target = t.name;
        c.input.clear();
        c.input.extend_from_slice(input);
        c.started = Some(Instant::now());
    }
    let start = Instant::now();
    let base = alloc::start();
    let mut ctx = Ctx::default();
    IN_TARGET.store(true, Relaxed);
    let r = catch_unwind(AssertUnwindSafe(|| (t.run)(&mut ctx, input)));
    IN_TARGET.store(false, Relaxed);
    let peak = alloc::peak_since(base);
    let elapsed = start.elapsed();
    if let Ok(mut c) = CURRENT.lock() {
        c.started = None;
    }
    let panic = match r {
        Ok(_) => None,
        Err(_) => Some(LAST_PANIC.lock().ok().and_then(|mut p| p.take()).unwrap_or_else(|| ("?".into(), "?".into()))),
    };
    Exec { accepted: matches!(r, Ok(true)), ctx, panic, peak, elapsed }
}

/// A finding: `key` identifies it (for minimizing and de-duplicating).
struct Finding {
    kind: &'static str,
    key: String,
    detail: String,
}

fn judge(t: &Target, input: &[u8], e: &Exec) -> Option<Finding> {
    if let Some((loc, msg)) = &e.panic {
        return Some(Finding { kind: "panic", key: format!("panic at {loc}"), detail: msg.clone() });
    }
    if let Some(v) = e.ctx.violations.first() {
        return Some(Finding { kind: "property", key: signature(v, 30), detail: v.clone() });
    }
    let bound = t.mem_base + t.mem_per_byte * input.len();
    if e.peak > bound {
        return Some(Finding {
            kind: "memory",
            key: "memory".into(),
            detail: format!(
                "one execution allocated {} bytes at its peak for a {}-byte input; the bound is {bound}",
                e.peak,
                input.len()
            ),
        });
    }
    if e.elapsed > SLOW {
        return Some(Finding {
            kind: "slow",
            key: "slow".into(),
            detail: format!("one execution took {:?}", e.elapsed),
        });
    }
    let text = String::from_utf8_lossy(input);
    for msg in &e.ctx.errors {
        if let Some(why) = unclear(msg, &text, t.hostile) {
            return Some(Finding {
                kind: "error text",
                key: format!("error text: {why}"),
                detail: format!("{why}: {}", escape(msg, 600)),
            });
        }
    }
    None
}

/// Why an error message does not read as a clear error, if it does not.
/// Kept light: non-empty, no Rust debug dump (`Name { field: ...`) that the
/// input did not itself contain, and for hostile input no control
/// characters (terminal escapes) and a bounded length.
fn unclear(msg: &str, input: &str, hostile: bool) -> Option<&'static str> {
    if msg.trim().is_empty() {
        return Some("empty message");
    }
    if let Some(dump) = debug_dump(msg) {
        if !input.contains(dump) {
            return Some("a Debug dump");
        }
    }
    if hostile {
        if msg.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Some("control characters from the input");
        }
        if msg.len() > MAX_ERROR_LEN {
            return Some("longer than 8 KiB");
        }
    }
    None
}

/// `Ident { field: ` as `{:?}` prints a struct.
fn debug_dump(msg: &str) -> Option<&str> {
    for (at, _) in msg.match_indices(" { ") {
        let before = &msg[..at];
        let word_start = before
            .char_indices()
            .rev()
            .find(|&(_, c)| !c.is_ascii_alphanumeric() && c != '_')
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &before[word_start..];
        let after = &msg[at + 3..];
        let field_len = after.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(after.len());
        if word.starts_with(|c: char| c.is_ascii_uppercase()) && field_len > 0 && after[field_len..].starts_with(": ") {
            return Some(&msg[word_start..at + 3 + field_len + 2]);
        }
    }
    None
}

/// A message with its numbers and quoted parts blurred: errors of one kind
/// share it.
fn signature(msg: &str, max: usize) -> String {
    let mut out = String::new();
    let mut last = ' ';
    for c in msg.chars() {
        let c = if c.is_ascii_digit() { '#' } else { c };
        if !(c == '#' && last == '#') {
            out.push(c);
        }
        last = c;
        if out.len() >= max || matches!(c, '`' | '"' | '\'' | '\n') {
            break;
        }
    }
    out
}

fn escape(s: &str, max: usize) -> String {
    let e = format!("{s:?}");
    if e.len() > max {
        let cut = (0..=max).rev().find(|&i| e.is_char_boundary(i)).unwrap_or(0);
        format!("{}… ({} bytes)", &e[..cut], s.len())
    } else {
        e
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, line) in b.chunks(48).enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str("    ");
        for x in line {
            let _ = write!(s, "{x:02x}");
        }
    }
    s
}

fn artifact_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/artifacts"))
}

/// The input in hex (all of it up to 8 KiB), as text if it is text-like,
/// and saved under `fuzz/artifacts/` for `replay`.
fn show_input(input: &[u8], target: &str, tag: &str) -> String {
    show(input, target, tag, 8192)
}

/// [`show_input`] with at most `max_hex` bytes in hex.
fn show(input: &[u8], target: &str, tag: &str, max_hex: usize) -> String {
    let mut s = String::new();
    let dir = artifact_dir();
    let path = dir.join(format!("{target}-{:016x}.bin", hash(input)));
    let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
    let _ = writeln!(s, "  input ({} bytes, {tag}):", input.len());
    if input.len() <= max_hex {
        let _ = writeln!(s, "{}", hex(input));
    } else if max_hex == 0 {
        let _ = writeln!(s, "    (in the file below)");
    } else {
        let shown = max_hex.min(1024);
        let _ = writeln!(s, "{}\n    ... ({} more bytes in the file below)", hex(&input[..shown]), input.len() - shown);
    }
    let text = String::from_utf8_lossy(input);
    if input.len() <= max_hex.min(4096)
        && text.chars().filter(|c| c.is_control() && *c != '\n' && *c != '\t').count() * 4 < input.len()
    {
        let _ = writeln!(s, "  as text: {}", escape(&text, 8192));
    }
    match saved {
        Ok(()) => {
            let _ = writeln!(
                s,
                "  saved as {}\n  replay: cargo run --release --manifest-path fuzz/Cargo.toml -- replay {target} {}",
                path.display(),
                path.display()
            );
        }
        Err(e) => {
            let _ = writeln!(s, "  (could not save it under {}: {e})", dir.display());
        }
    }
    s
}

/// Shrinks `input` while it still gives the finding `key` (chunk removal,
/// halving sizes; a few seconds at most).
fn minimize(t: &mut Target, input: &[u8], key: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut best = input.to_vec();
    let mut chunk = best.len() / 2;
    while chunk >= 1 && Instant::now() < deadline {
        let mut at = 0;
        while at < best.len() && Instant::now() < deadline {
            let mut cand = best.clone();
            cand.drain(at..(at + chunk).min(best.len()));
            let e = execute(t, &cand);
            if judge(t, &cand, &e).is_some_and(|f| f.key == key) {
                best = cand;
            } else {
                at += chunk;
            }
        }
        chunk /= 2;
    }
    best
}

#[derive(Default)]
struct Stats {
    execs: u64,
    accepted: u64,
    refused: u64,
    kinds: HashSet<String>,
    max_peak: usize,
    elapsed: Duration,
    findings: Vec<String>,
}

fn fuzz(o: Options) -> ExitCode {
    let (mut targets, skipped) = all_targets();
    if let Some(want) = &o.targets {
        targets.retain(|t| want.iter().any(|w| w == t.name));
        if targets.is_empty() {
            eprintln!("zoffsite-fuzz: no target named {want:?}; `list` shows them");
            return ExitCode::from(2);
        }
    }
    let total_weight: u32 = targets.iter().map(|t| t.weight).sum();
    match o.iterations {
        Some(n) => println!(
            "zoffsite-fuzz: seed {} (FUZZ_SEED={} repeats this run), {n} executions per target",
            o.seed, o.seed
        ),
        None => println!(
            "zoffsite-fuzz: seed {} (FUZZ_SEED={} repeats this run), {:.0} s over {} targets",
            o.seed,
            o.seed,
            o.seconds,
            targets.len()
        ),
    }
    start_watchdog();
    SEED.store(o.seed, Relaxed);
    let ints = corpus::ints();
    let mut all_stats = Vec::new();
    for t in &mut targets {
        let budget = Duration::from_secs_f64(o.seconds * f64::from(t.weight) / f64::from(total_weight));
        let s = fuzz_one(t, o.seed, budget, o.iterations, &ints);
        all_stats.push((t.name, s));
    }
    drop(targets);

    println!(
        "\n{:<18} {:>9} {:>9} {:>9} {:>7} {:>8} {:>11}",
        "target", "execs", "accepted", "refused", "kinds", "execs/s", "peak alloc"
    );
    let mut failed = false;
    for (name, s) in &all_stats {
        let rate = s.execs as f64 / s.elapsed.as_secs_f64().max(1e-9);
        let peak = format!("{} KiB", s.max_peak >> 10);
        println!(
            "{name:<18} {:>9} {:>9} {:>9} {:>7} {rate:>8.0} {peak:>11}{}",
            s.execs,
            s.accepted,
            s.refused,
            s.kinds.len(),
            if s.findings.is_empty() { "" } else { "  FAILED" }
        );
        failed |= !s.findings.is_empty();
        if s.accepted == 0 || s.refused == 0 {
            println!("    note: {name} never {} an input", if s.accepted == 0 { "accepted" } else { "refused" });
        }
    }
    if let Some(why) = &skipped {
        println!("{why}");
        failed = true;
    }
    match alloc::vm_hwm() {
        Some(hwm) => {
            println!("peak RSS of the fuzzer (VmHWM) {} MiB; the bound is {} MiB", hwm >> 20, max_rss() >> 20);
            if hwm > max_rss() {
                println!("FAILURE: memory: the fuzzer's peak RSS is over the bound");
                failed = true;
            }
        }
        None => println!("peak RSS: /proc/self/status has no VmHWM here"),
    }
    if failed {
        println!(
            "\nFAILED (seed {}): findings are printed above, inputs saved under {}",
            o.seed,
            artifact_dir().display()
        );
        for (name, s) in &all_stats {
            for f in &s.findings {
                println!("  {name}: {f}");
            }
        }
        ExitCode::FAILURE
    } else {
        println!("\nok: no panic, no property broken, memory bounded, every error readable (seed {})", o.seed);
        ExitCode::SUCCESS
    }
}

fn fuzz_one(t: &mut Target, seed: u64, budget: Duration, iterations: Option<u64>, ints: &[u64]) -> Stats {
    let mut rng = Rng::new(seed ^ hash(t.name.as_bytes()));
    let mut pool: Vec<Vec<u8>> = t.seeds.iter().map(|s| s[..s.len().min(t.max_len)].to_vec()).collect();
    let nseeds = pool.len();
    let mut pool_bytes: usize = pool.iter().map(Vec::len).sum();
    let mut stats = Stats::default();
    let mut seen: HashSet<String> = HashSet::new();
    let start = Instant::now();
    let mut i: u64 = 0;
    loop {
        match iterations {
            Some(n) if i >= n => break,
            None if start.elapsed() >= budget => break,
            _ => {}
        }
        let input = if (i as usize) < nseeds {
            pool[i as usize].clone()
        } else if rng.one_in(100) {
            let n = rng.small_len(4096);
            (0..n).map(|_| rng.byte()).collect()
        } else {
            // A quarter of the time a seed: mutants of valid inputs go deep.
            let base = if rng.one_in(4) { rng.below(nseeds) } else { rng.below(pool.len()) };
            let m = Material { dict: t.dict, ints, pool: &pool, max_len: t.max_len };
            mutate::mutate(&mut rng, &pool[base], t.shape, &m)
        };
        let e = execute(t, &input);
        stats.execs += 1;
        stats.max_peak = stats.max_peak.max(e.peak);
        if e.accepted {
            stats.accepted += 1;
        } else {
            stats.refused += 1;
        }
        if let Some(f) = judge(t, &input, &e) {
            let known = stats.findings.contains(&f.key);
            if !known && stats.findings.len() < 3 {
                report(t, seed, i, &input, &f);
                stats.findings.push(f.key);
            }
        }
        // Keep inputs that showed something new (an error of a new kind),
        // and some accepted ones, to mutate further.
        let mut fresh = false;
        for msg in &e.ctx.errors {
            fresh |= seen.insert(signature(msg, 48));
        }
        if e.accepted && rng.one_in(4) {
            fresh = true;
        }
        if fresh && (i as usize) >= nseeds && input.len() <= POOL_ENTRY_MAX {
            pool_bytes += input.len();
            if pool.len() < POOL_CAP && pool_bytes <= POOL_BYTES || pool.len() == nseeds {
                pool.push(input);
            } else {
                let at = nseeds + rng.below(pool.len() - nseeds);
                pool_bytes -= pool[at].len();
                pool[at] = input;
            }
        }
        i += 1;
    }
    stats.kinds = seen;
    stats.elapsed = start.elapsed();
    stats
}

fn report(t: &mut Target, seed: u64, iteration: u64, input: &[u8], f: &Finding) {
    let small = minimize(t, input, &f.key);
    let mut s = String::new();
    let _ = writeln!(s, "\nFAILURE in {} ({}): {}", t.name, f.kind, f.key);
    let _ = writeln!(s, "  seed {seed}, execution {iteration}");
    let _ = writeln!(s, "{}", f.detail.lines().take(60).map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n"));
    if small.len() < input.len() {
        let _ = write!(s, "{}", show_input(&small, t.name, &format!("minimized from {} bytes", input.len())));
        // The original too, as a file only.
        let _ = write!(s, "{}", show(input, t.name, "as found", 0));
    } else {
        let _ = write!(s, "{}", show_input(input, t.name, "as found"));
    }
    eprint!("{s}");
}

fn replay(args: &[String]) -> ExitCode {
    let [name, file] = args else {
        eprintln!("usage: zoffsite-fuzz replay TARGET FILE");
        return ExitCode::from(2);
    };
    let input = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("zoffsite-fuzz: {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(mut t) = all_targets().0.into_iter().find(|t| t.name == name) else {
        eprintln!("zoffsite-fuzz: no target {name:?}; `list` shows them");
        return ExitCode::from(2);
    };
    let e = execute(&mut t, &input);
    println!(
        "{}: {} ({} bytes, {:?}, peak allocation {} bytes)",
        t.name,
        if e.accepted { "accepted" } else { "refused" },
        input.len(),
        e.elapsed,
        e.peak
    );
    for m in &e.ctx.errors {
        println!("  error: {}", escape(m, 2000));
    }
    for v in &e.ctx.violations {
        println!("  PROPERTY BROKEN: {v}");
    }
    if let Some((_, msg)) = &e.panic {
        println!("  PANIC: {msg}");
    }
    match judge(&t, &input, &e) {
        Some(f) => {
            println!("FAILURE ({}): {}", f.kind, f.detail);
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}
