//! The fake's commands: the argv `zoffsite_exec::zfs` builds, answered in
//! the formats and with the error texts real OpenZFS 2.3.2 prints (those
//! the callers classify: "dataset does not exist", "out of space", ...).
//!
//! What is modelled: `list`, `get`, `set`, `inherit`, `create`,
//! `snapshot`, `destroy`, `bookmark`, `hold`, `release`, `holds`, `send`
//! (`-w`, `-i`, `-I`, `-t`, `-n -v [-P]`), `receive` (`-u`, `-s`, `-A`),
//! `change-key`, `version`; `zpool sync`, `get`, `list -o health`, `status
//! -j`. Anything else exits 2 with "fake-zfs: not modelled", so a test
//! notices a command the fake does not know instead of passing by luck.
//! Listings always print as with `-H` (the only way zoffsite asks).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;

use super::receive;
use super::stream::{self, Sub, Token};
use super::world::{not_found, parent, FaultAction, Obj, World, LOG_FILE};

/// What one call prints and returns.
#[derive(Default)]
pub struct Out {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub code: i32,
    /// A send's stream, written after the lock is released.
    pub stream: Option<Vec<u8>>,
}

impl Out {
    fn ok(stdout: impl Into<Vec<u8>>) -> Out {
        Out { stdout: stdout.into(), ..Out::default() }
    }

    fn err(code: i32, stderr: impl Into<String>) -> Out {
        Out { stderr: stderr.into(), code, ..Out::default() }
    }
}

impl From<Result<Out, String>> for Out {
    fn from(r: Result<Out, String>) -> Out {
        r.unwrap_or_else(|e| Out::err(1, e))
    }
}

/// Runs one call of the fake in `dir` (`zpool` when `zpool`), printing
/// and returning the exit status.
pub fn run(dir: &Path, zpool: bool, args: &[String]) -> i32 {
    let joined = args.join(" ");
    let sub = args.first().map(String::as_str).unwrap_or("");
    let command = if zpool { format!("zpool {sub}") } else { sub.to_owned() };
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(LOG_FILE)) {
        let _ = writeln!(f, "{}{joined}", if zpool { "zpool " } else { "" });
    }
    if !zpool && sub == "receive" && !args.iter().any(|a| a == "-A") {
        return receive::run(dir, &args[1..], &command, &joined);
    }
    let mut locked = match World::load_locked(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-zfs: cannot load its state in {}: {e}", dir.display());
            return 2;
        }
    };
    let mut truncate = None;
    let mut then = None;
    let mut reply = None;
    match locked.world.fault_for(&command, &joined) {
        Some(FaultAction::Fail { code, stderr }) => {
            let _ = locked.save();
            eprint!("{stderr}");
            return code;
        }
        Some(FaultAction::Stderr { stderr }) => eprint!("{stderr}"),
        Some(FaultAction::Sleep { ms }) => {
            let _ = locked.save();
            std::thread::sleep(std::time::Duration::from_millis(ms));
            locked = match World::load_locked(dir) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("fake-zfs: {e}");
                    return 2;
                }
            };
        }
        Some(FaultAction::Truncate { bytes }) => truncate = Some(bytes),
        Some(FaultAction::Then { args }) => then = Some(args),
        Some(FaultAction::Reply { stdout, stderr, code }) => {
            reply = Some(Out { stdout: stdout.into_bytes(), stderr, code, stream: None });
        }
        None => {}
    }
    let mut out = if zpool { zpool_cmd(&mut locked.world, args) } else { zfs_cmd(&mut locked.world, args) };
    if let (Some(then), 0) = (then, out.code) {
        let after = zfs_cmd(&mut locked.world, &then);
        if after.code != 0 {
            eprintln!("fake-zfs: the planted command {then:?} failed: {}", after.stderr);
        }
    }
    if let Some(r) = reply {
        out = r;
    }
    if let Err(e) = locked.save() {
        eprintln!("fake-zfs: cannot save its state: {e}");
        return 2;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&out.stdout);
    eprint!("{}", out.stderr);
    if let Some(s) = out.stream {
        let cut = truncate.map_or(s.len(), |n| usize::try_from(n).unwrap_or(usize::MAX).min(s.len()));
        // In pieces, as a real send writes: a reader sees a stream, not
        // one block.
        for piece in s[..cut].chunks(64 << 10) {
            if stdout.write_all(piece).and_then(|()| stdout.flush()).is_err() {
                eprintln!("warning: cannot send: Broken pipe");
                return 1;
            }
        }
        if cut < s.len() {
            let _ = stdout.flush();
            eprintln!("warning: cannot send '{}': signal received", args.last().map_or("", String::as_str));
            return 1;
        }
    }
    let _ = stdout.flush();
    out.code
}

/// Options and operands of one command line: flags without values, the
/// values of flags that take one (repeatable), and the rest.
struct Opts {
    flags: BTreeSet<char>,
    values: Vec<(char, String)>,
    rest: Vec<String>,
}

impl Opts {
    fn parse(args: &[String], with_value: &str) -> Result<Opts, String> {
        let mut o = Opts { flags: BTreeSet::new(), values: Vec::new(), rest: Vec::new() };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a.starts_with("--") && o.rest.is_empty() {
                // A long option (`--json-int`): a flag, never a value.
                continue;
            }
            if let Some(f) = a.strip_prefix('-').filter(|f| !f.is_empty() && o.rest.is_empty()) {
                for (i, c) in f.char_indices() {
                    if with_value.contains(c) {
                        let v = if i + 1 < f.len() {
                            f[i + 1..].to_owned()
                        } else {
                            it.next().cloned().ok_or(format!("missing argument for '-{c}'"))?
                        };
                        o.values.push((c, v));
                        break;
                    }
                    o.flags.insert(c);
                }
            } else {
                o.rest.push(a.clone());
            }
        }
        Ok(o)
    }

    fn has(&self, c: char) -> bool {
        self.flags.contains(&c)
    }

    fn value(&self, c: char) -> Option<&str> {
        self.values.iter().rev().find(|(k, _)| *k == c).map(|(_, v)| v.as_str())
    }
}

fn not_modelled(args: &[String]) -> Out {
    Out::err(2, format!("fake-zfs: not modelled: {}\n", args.join(" ")))
}

/// Runs one zfs command line on `w` (without its faults).
pub fn zfs_cmd(w: &mut World, args: &[String]) -> Out {
    let rest = &args[1.min(args.len())..];
    let r = match args.first().map(String::as_str) {
        Some("list") => list(w, rest),
        Some("get") => get(w, rest),
        Some("set") => set(w, rest),
        Some("inherit") => inherit(w, rest),
        Some("create") => create(w, rest),
        Some("snapshot" | "snap") => snapshot(w, rest),
        Some("destroy") => destroy(w, rest),
        Some("bookmark") => bookmark(w, rest),
        Some("hold") => hold(w, rest, true),
        Some("release") => hold(w, rest, false),
        Some("holds") => holds(w, rest),
        Some("send") => send(w, rest),
        Some("receive" | "recv") => abort(w, rest),
        Some("change-key") => {
            rest.last().ok_or("missing dataset".to_owned()).and_then(|d| w.rewrap(d)).map(|()| Out::ok(""))
        }
        Some("version") => Ok(Out::ok("zfs-2.3.2-fake\nzfs-kmod-2.3.2-fake\n")),
        _ => return not_modelled(args),
    };
    match r {
        Ok(o) => o,
        Err(e) if e.starts_with("fake-zfs: not modelled") => Out::err(2, format!("{e}\n")),
        Err(e) => Out::err(1, format!("{e}\n")),
    }
}

fn zpool_cmd(w: &mut World, args: &[String]) -> Out {
    let o = match Opts::parse(&args[1.min(args.len())..], "o") {
        Ok(o) => o,
        Err(e) => return Out::err(2, e),
    };
    let pool = |name: Option<&String>| -> Result<&super::world::Pool, Out> {
        let n = name.map_or("", String::as_str);
        w.pools.get(n).ok_or_else(|| Out::err(1, format!("cannot open '{n}': no such pool\n")))
    };
    match (args.first().map(String::as_str), o.value('o')) {
        (Some("sync"), _) => match o.rest.iter().find(|p| !w.pools.contains_key(*p)) {
            Some(p) => Out::err(1, format!("cannot open '{p}': no such pool\n")),
            None => Out::ok(""),
        },
        (Some("get"), Some("value")) if o.rest.first().map(String::as_str) == Some("guid") => {
            match pool(o.rest.get(1)) {
                Ok(p) => Out::ok(format!("{}\n", p.guid)),
                Err(e) => e,
            }
        }
        (Some("get"), Some("property,value")) => match pool(o.rest.get(1)) {
            Ok(_) => {
                let props = o.rest.first().map_or("", String::as_str);
                let mut s = String::new();
                for p in props.split(',') {
                    let v = match p {
                        "readonly" => "off",
                        "altroot" => "-",
                        _ => return not_modelled(args),
                    };
                    s.push_str(&format!("{p}\t{v}\n"));
                }
                Out::ok(s)
            }
            Err(e) => e,
        },
        (Some("list"), Some("health")) => match pool(o.rest.first()) {
            Ok(p) => Out::ok(format!("{}\n", p.health)),
            Err(e) => e,
        },
        (Some("status"), _) if o.has('j') => {
            let name = o.rest.first().cloned().unwrap_or_default();
            match pool(Some(&name)) {
                Ok(p) => {
                    let scan = p.last_scrub.map_or(String::new(), |t| {
                        format!(r#","scan_stats":{{"function":"SCRUB","state":"FINISHED","start_time":{t},"end_time":{t},"errors":0}}"#)
                    });
                    Out::ok(
                        format!(
                            r#"{{"output_version":{{"command":"zpool status","vers_major":0,"vers_minor":1}},"pools":{{"{name}":{{"name":"{name}","state":"{}"{scan}}}}}}}"#,
                            p.health
                        ) + "\n",
                    )
                }
                Err(e) => e,
            }
        }
        _ => not_modelled(args),
    }
}

fn types(o: &Opts, default: &[&str]) -> BTreeSet<String> {
    match o.value('t') {
        Some(t) => t
            .split(',')
            .flat_map(|t| match t {
                "all" => vec!["filesystem", "volume", "snapshot", "bookmark"],
                "snap" => vec!["snapshot"],
                "fs" => vec!["filesystem"],
                t => vec![t],
            })
            .map(str::to_owned)
            .collect(),
        None => default.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Every object `names` select: each name itself, and with `depth` levels
/// below it (`None`: all), its snapshots, bookmarks and children; only
/// those of `types`. Errors for names that do not exist.
fn select(w: &World, names: &[String], depth: Option<usize>, types: &BTreeSet<String>) -> (Vec<Obj>, Vec<String>) {
    fn walk(w: &World, ds: &str, left: Option<usize>, types: &BTreeSet<String>, out: &mut Vec<Obj>) {
        if types.contains("filesystem") {
            out.push(Obj::Ds(ds.to_owned()));
        }
        if left == Some(0) {
            return;
        }
        let d = &w.datasets[ds];
        if types.contains("snapshot") {
            out.extend(d.snapshots.iter().map(|s| Obj::Snap(ds.to_owned(), s.name.clone())));
        }
        if types.contains("bookmark") {
            out.extend(d.bookmarks.iter().map(|b| Obj::Mark(ds.to_owned(), b.name.clone())));
        }
        for c in w.children(ds) {
            walk(w, &c, left.map(|l| l - 1), types, out);
        }
    }
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let names: Vec<String> = if names.is_empty() { w.pools.keys().cloned().collect() } else { names.to_vec() };
    for n in names {
        if !w.exists(&n) {
            errors.push(not_found(&n));
            continue;
        }
        match Obj::parse(&n) {
            Obj::Ds(d) => walk(w, &d, depth, types, &mut out),
            obj => out.push(obj),
        }
    }
    (out, errors)
}

fn depth(o: &Opts) -> Result<Option<usize>, String> {
    match (o.has('r'), o.value('d')) {
        (_, Some(d)) => d.parse().map(Some).map_err(|_| format!("invalid depth '{d}'")),
        (true, None) => Ok(None),
        (false, None) => Ok(Some(0)),
    }
}

fn list(w: &mut World, args: &[String]) -> Result<Out, String> {
    let o = Opts::parse(args, "dtosS")?;
    let types = types(&o, &["filesystem", "volume"]);
    let cols: Vec<&str> = o.value('o').unwrap_or("name").split(',').collect();
    let (objs, errors) = select(w, &o.rest, depth(&o)?, &types);
    let mut s = String::new();
    for obj in &objs {
        let row: Result<Vec<String>, String> = cols.iter().map(|c| value(w, obj, c).map(|(v, _)| v)).collect();
        s.push_str(&row.map_err(|e| format!("fake-zfs: not modelled: {e}"))?.join("\t"));
        s.push('\n');
    }
    let code = i32::from(!errors.is_empty());
    Ok(Out { stdout: s.into_bytes(), stderr: errors.iter().map(|e| format!("{e}\n")).collect(), code, stream: None })
}

fn get(w: &mut World, args: &[String]) -> Result<Out, String> {
    let o = Opts::parse(args, "dtsoS")?;
    let (props, names) = o.rest.split_first().ok_or("missing property argument")?;
    let types = types(&o, &["filesystem", "volume", "snapshot", "bookmark"]);
    let fields: Vec<&str> = o.value('o').unwrap_or("name,property,value,source").split(',').collect();
    let sources: Option<Vec<&str>> = o.value('s').map(|s| s.split(',').collect());
    let (objs, errors) = select(w, names, depth(&o)?, &types);
    let mut s = String::new();
    for obj in &objs {
        let props: Vec<String> =
            if props == "all" { all_props(w, obj) } else { props.split(',').map(str::to_owned).collect() };
        for p in &props {
            let (v, source) = value(w, obj, p).map_err(|e| format!("fake-zfs: not modelled: {e}"))?;
            let kind = source.split(' ').next().unwrap_or("-");
            if sources.as_ref().is_some_and(|ss| !ss.contains(&kind)) {
                continue;
            }
            let row: Vec<String> = fields
                .iter()
                .map(|f| match *f {
                    "name" => obj.name(),
                    "property" => p.clone(),
                    "value" => v.clone(),
                    "source" => source.clone(),
                    other => other.to_owned(),
                })
                .collect();
            s.push_str(&row.join("\t"));
            s.push('\n');
        }
    }
    let code = i32::from(!errors.is_empty());
    Ok(Out { stdout: s.into_bytes(), stderr: errors.iter().map(|e| format!("{e}\n")).collect(), code, stream: None })
}

/// The properties `zfs get all` shows of `obj`: what is set on it, and a
/// few native ones (which `-s local` leaves out).
fn all_props(w: &World, obj: &Obj) -> Vec<String> {
    let mut v: Vec<String> = vec!["type".into(), "creation".into(), "guid".into()];
    match obj {
        Obj::Ds(d) => v.extend(w.datasets[d].props.keys().cloned()),
        Obj::Snap(d, s) => {
            v.extend(w.snap(d, s).map(|x| x.props.keys().cloned().collect::<Vec<_>>()).unwrap_or_default());
        }
        Obj::Mark(..) => {}
    }
    v
}

const NONE: &str = "18446744073709551615";

// What only a filesystem has: `-` on a snapshot or a bookmark.
const DATASET_ONLY: &[&str] = &[
    "receive_resume_token",
    "mounted",
    "mountpoint",
    "keystatus",
    "snapshot_count",
    "snapshot_limit",
    "filesystem_limit",
    "quota",
    "refquota",
    "canmount",
    "readonly",
    "keylocation",
];

/// One property of `obj`: its value as `-p` prints it, and its source
/// (`local`, `inherited from X`, `default`, or `-`).
fn value(w: &World, obj: &Obj, prop: &str) -> Result<(String, String), String> {
    let dash = || Ok(("-".to_owned(), "-".to_owned()));
    let stat = |v: String| Ok((v, "-".to_owned()));
    let d = &w.datasets[obj.dataset()];
    let snap = match obj {
        Obj::Snap(_, s) => d.snapshots.iter().find(|x| &x.name == s),
        _ => None,
    };
    let mark = match obj {
        Obj::Mark(_, b) => d.bookmarks.iter().find(|x| &x.name == b),
        _ => None,
    };
    let is_ds = matches!(obj, Obj::Ds(_));
    if !is_ds && DATASET_ONLY.contains(&prop) {
        return dash();
    }
    if prop.contains(':') {
        return Ok(w.user_prop(obj, prop).unwrap_or(("-".into(), "-".into())));
    }
    if let Some(name) = prop.strip_prefix("written@") {
        return match (is_ds, d.snapshots.iter().find(|s| s.name == name)) {
            (true, Some(s)) => stat(w.bytes_after(d, s.chunks).to_string()),
            _ => dash(),
        };
    }
    let local = |default: &str| -> Result<(String, String), String> {
        match d.props.get(prop) {
            Some(v) if is_ds => {
                Ok((if v == "none" && prop.ends_with("_limit") { NONE.into() } else { v.clone() }, "local".into()))
            }
            _ if is_ds => Ok((default.to_owned(), "default".into())),
            _ => dash(),
        }
    };
    match prop {
        "name" => stat(obj.name()),
        "type" => stat(
            match obj {
                Obj::Ds(_) => "filesystem",
                Obj::Snap(..) => "snapshot",
                Obj::Mark(..) => "bookmark",
            }
            .into(),
        ),
        "guid" => stat(snap.map(|s| s.guid).or(mark.map(|m| m.guid)).unwrap_or(d.guid).to_string()),
        "createtxg" => stat(snap.map(|s| s.createtxg).or(mark.map(|m| m.createtxg)).unwrap_or(d.createtxg).to_string()),
        "creation" => stat(snap.map(|s| s.creation).or(mark.map(|m| m.creation)).unwrap_or(d.creation).to_string()),
        "userrefs" => match snap {
            Some(s) => stat(s.holds.len().to_string()),
            None => dash(),
        },
        "encryption" if mark.is_none() => stat(if d.key.is_some() { "aes-256-gcm" } else { "off" }.into()),
        "keystatus" if is_ds => stat(
            match (&d.key, d.key_loaded) {
                (None, _) => "-",
                (Some(_), true) => "available",
                (Some(_), false) => "unavailable",
            }
            .into(),
        ),
        "written" if is_ds => stat(w.bytes_after(d, d.snapshots.last().map_or(0, |s| s.chunks)).to_string()),
        "written" => match snap {
            Some(s) => {
                let i = d.snapshots.iter().position(|x| x.name == s.name).unwrap_or(0);
                let before = i.checked_sub(1).map_or(0, |p| d.snapshots[p].chunks);
                stat(d.content[before..s.chunks].iter().map(|c| u64::from(c.len)).sum::<u64>().to_string())
            }
            None => dash(),
        },
        "used" | "referenced" | "logicalreferenced" => {
            let n = snap.map_or(d.content.len(), |s| s.chunks);
            stat(d.content[..n].iter().map(|c| u64::from(c.len)).sum::<u64>().to_string())
        }
        "receive_resume_token" if is_ds => {
            stat(d.partial.as_ref().map_or_else(|| "-".into(), super::world::Partial::token))
        }
        "mounted" if is_ds => stat("no".into()),
        "mountpoint" if is_ds => {
            let mut cur = Some(obj.dataset());
            while let Some(c) = cur {
                if let Some(v) = w.datasets.get(c).and_then(|x| x.props.get("mountpoint")) {
                    let source = if c == obj.dataset() { "local".to_owned() } else { format!("inherited from {c}") };
                    let v = if v == "none" || c == obj.dataset() {
                        v.clone()
                    } else {
                        format!("{v}{}", &obj.dataset()[c.len()..])
                    };
                    return Ok((v, source));
                }
                cur = parent(c);
            }
            Ok((format!("/{}", obj.dataset()), "default".into()))
        }
        "snapshot_count" if is_ds => {
            let prefix = format!("{}/", obj.dataset());
            let n: usize = w
                .datasets
                .iter()
                .filter(|(k, _)| *k == obj.dataset() || k.starts_with(&prefix))
                .map(|(_, x)| x.snapshots.len())
                .sum();
            stat(n.to_string())
        }
        "snapshot_limit" | "filesystem_limit" => local(NONE),
        "quota" | "refquota" => local("0"),
        "canmount" => local("on"),
        "readonly" => local("off"),
        "compression" => local("off"),
        "keylocation" => match d.key {
            Some(_) => local("none"),
            None => dash(),
        },
        "keyformat" => match d.key {
            Some(_) => stat("raw".into()),
            None => dash(),
        },
        "encryptionroot" | "origin" => dash(),
        _ if d.props.contains_key(prop) => local("-"),
        other => Err(format!("property '{other}'")),
    }
}

fn set(w: &mut World, args: &[String]) -> Result<Out, String> {
    let split = args.iter().position(|a| !a.contains('=')).unwrap_or(args.len());
    let (props, names) = args.split_at(split);
    if props.is_empty() || names.is_empty() {
        return Err("missing property=value or dataset argument".into());
    }
    let mut errors = String::new();
    for n in names {
        if !w.exists(n) {
            errors.push_str(&format!("{}\n", not_found(n)));
            continue;
        }
        for p in props {
            let (k, v) = p.split_once('=').expect("split on '='");
            match Obj::parse(n) {
                Obj::Ds(d) => {
                    w.ds_mut(&d)?.props.insert(k.to_owned(), v.to_owned());
                }
                Obj::Snap(d, s) if k.contains(':') => {
                    w.snap_mut(&d, &s)?.props.insert(k.to_owned(), v.to_owned());
                }
                _ => errors.push_str(&format!(
                    "cannot set property for '{n}': this property can not be modified for snapshots\n"
                )),
            }
        }
    }
    Ok(Out { code: i32::from(!errors.is_empty()), stderr: errors, ..Out::default() })
}

fn inherit(w: &mut World, args: &[String]) -> Result<Out, String> {
    let o = Opts::parse(args, "")?;
    let (prop, names) = o.rest.split_first().ok_or("missing property argument")?;
    for n in names {
        let targets: Vec<String> = if o.has('r') {
            let prefix = format!("{n}/");
            w.datasets.keys().filter(|k| *k == n || k.starts_with(&prefix)).cloned().collect()
        } else {
            vec![n.clone()]
        };
        match Obj::parse(n) {
            Obj::Ds(_) => {
                for t in targets {
                    w.ds_mut(&t)?.props.remove(prop);
                }
            }
            Obj::Snap(d, s) => {
                w.snap_mut(&d, &s)?.props.remove(prop);
            }
            Obj::Mark(..) => return Err(not_found(n)),
        }
    }
    Ok(Out::ok(""))
}

fn create(w: &mut World, args: &[String]) -> Result<Out, String> {
    let o = Opts::parse(args, "oV")?;
    let name = o.rest.first().ok_or("missing dataset name")?;
    let props: Vec<(String, String)> = o
        .values
        .iter()
        .filter(|(c, _)| *c == 'o')
        .filter_map(|(_, kv)| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    if o.has('p') {
        let mut missing = Vec::new();
        let mut cur = parent(name);
        while let Some(p) = cur.filter(|p| !w.datasets.contains_key(*p)) {
            missing.push(p.to_owned());
            cur = parent(p);
        }
        for m in missing.into_iter().rev() {
            w.create(&m, &[])?;
        }
    }
    w.create(name, &props)?;
    Ok(Out::ok(""))
}

fn snapshot(w: &mut World, args: &[String]) -> Result<Out, String> {
    let o = Opts::parse(args, "o")?;
    let mut names = Vec::new();
    for n in &o.rest {
        match Obj::parse(n) {
            Obj::Snap(d, s) => names.push((d, s)),
            _ => return Err(format!("cannot create snapshot '{n}': not a snapshot name")),
        }
    }
    w.snapshot(&names)?;
    Ok(Out::ok(""))
}

fn destroy(w: &mut World, args: &[String]) -> Result<Out, String> {
    let o = Opts::parse(args, "")?;
    let name = o.rest.first().ok_or("missing dataset argument")?;
    match Obj::parse(name) {
        Obj::Snap(d, list) => {
            let names: Vec<&str> = list.split(',').collect();
            let ds = w.ds(&d)?;
            let found: Vec<&str> =
                names.iter().copied().filter(|n| ds.snapshots.iter().any(|s| s.name == *n)).collect();
            if found.is_empty() {
                return Err("could not find any snapshots to destroy; check snapshot names.".into());
            }
            // All or none, as one sync task: a held one keeps them all.
            if let Some(busy) = ds.snapshots.iter().find(|s| found.contains(&s.name.as_str()) && !s.holds.is_empty()) {
                return Err(format!("cannot destroy snapshot {d}@{}: dataset is busy", busy.name));
            }
            w.ds_mut(&d)?.snapshots.retain(|s| !found.contains(&s.name.as_str()));
            Ok(Out::ok(""))
        }
        Obj::Mark(d, b) => {
            let ds = w.ds_mut(&d)?;
            let before = ds.bookmarks.len();
            ds.bookmarks.retain(|m| m.name != b);
            if ds.bookmarks.len() == before {
                return Err(not_found(name));
            }
            Ok(Out::ok(""))
        }
        Obj::Ds(d) => {
            w.ds(&d)?;
            let prefix = format!("{d}/");
            let doomed: Vec<String> =
                w.datasets.keys().filter(|k| **k == d || k.starts_with(&prefix)).cloned().collect();
            if !o.has('r') && (doomed.len() > 1 || !w.datasets[&d].snapshots.is_empty()) {
                return Err(format!(
                    "cannot destroy '{d}': filesystem has children\nuse '-r' to destroy the following datasets:"
                ));
            }
            if let Some((k, s)) =
                doomed.iter().find_map(|k| w.datasets[k].snapshots.iter().find(|s| !s.holds.is_empty()).map(|s| (k, s)))
            {
                return Err(format!("cannot destroy snapshot {k}@{}: dataset is busy", s.name));
            }
            for k in doomed {
                w.datasets.remove(&k);
            }
            Ok(Out::ok(""))
        }
    }
}

fn bookmark(w: &mut World, args: &[String]) -> Result<Out, String> {
    let [snap, mark] = args else { return Err("usage: bookmark SNAPSHOT BOOKMARK".into()) };
    let (Obj::Snap(d, s), Obj::Mark(bd, b)) = (Obj::parse(snap), Obj::parse(mark)) else {
        return Err(format!("cannot create bookmark '{mark}': invalid name"));
    };
    if d != bd {
        return Err(format!("cannot create bookmark '{mark}': source and bookmark must be in the same dataset"));
    }
    let src = w.snap(&d, &s)?.clone();
    let ds = w.ds_mut(&d)?;
    if ds.bookmarks.iter().any(|m| m.name == b) {
        return Err(format!("cannot create bookmark '{mark}': bookmark exists"));
    }
    ds.bookmarks.push(super::world::Mark {
        name: b,
        guid: src.guid,
        createtxg: src.createtxg,
        creation: src.creation,
        chunks: src.chunks,
    });
    Ok(Out::ok(""))
}

/// `hold TAG SNAP...` (`add`) or `release TAG SNAP...`: all or none.
fn hold(w: &mut World, args: &[String], add: bool) -> Result<Out, String> {
    let o = Opts::parse(args, "")?;
    let (tag, names) = o.rest.split_first().ok_or("missing tag argument")?;
    let now = w.now();
    for n in names {
        let Obj::Snap(d, s) = Obj::parse(n) else { return Err(format!("'{n}' is not a snapshot")) };
        let snap = w.snap(&d, &s)?;
        match (add, snap.holds.contains_key(tag)) {
            (true, true) => return Err(format!("cannot hold snapshot '{n}': tag already exists on this dataset")),
            (false, false) => {
                return Err(format!("cannot release hold from snapshot '{n}': no such tag on this dataset"))
            }
            _ => {}
        }
    }
    for n in names {
        let Obj::Snap(d, s) = Obj::parse(n) else { unreachable!("checked above") };
        let snap = w.snap_mut(&d, &s)?;
        if add {
            snap.holds.insert(tag.clone(), now);
        } else {
            snap.holds.remove(tag);
        }
    }
    Ok(Out::ok(""))
}

fn holds(w: &mut World, args: &[String]) -> Result<Out, String> {
    let o = Opts::parse(args, "")?;
    let mut s = String::new();
    let mut errors = String::new();
    for n in &o.rest {
        let Obj::Snap(d, sn) = Obj::parse(n) else { return Err(format!("'{n}' is not a snapshot")) };
        match w.snap(&d, &sn) {
            Ok(snap) => {
                for (tag, at) in &snap.holds {
                    s.push_str(&format!("{n}\t{tag}\t{at}\n"));
                }
            }
            Err(e) => errors.push_str(&format!("{e}\n")),
        }
    }
    Ok(Out { stdout: s.into_bytes(), code: i32::from(!errors.is_empty()), stderr: errors, stream: None })
}

fn abort(w: &mut World, args: &[String]) -> Result<Out, String> {
    let o = Opts::parse(args, "")?;
    let target = o.rest.first().ok_or("missing dataset")?;
    let d = w.ds(target)?;
    if d.partial.is_none() {
        return Err(format!("cannot abort: '{target}' does not have any resumable receive state"));
    }
    if d.inconsistent {
        w.datasets.remove(target);
    } else {
        w.ds_mut(target)?.partial = None;
    }
    Ok(Out::ok(""))
}

/// What `zfs send -n -v` prints for a size (`zfs_nicenum`).
fn nice(n: u64) -> String {
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < 6 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", ["B", "K", "M", "G", "T", "P", "E"][unit])
}

fn send(w: &mut World, args: &[String]) -> Result<Out, String> {
    let o = Opts::parse(args, "iIt")?;
    if let Some(token) = o.value('t') {
        return send_resume(w, &o, token);
    }
    let raw = o.has('w');
    let name = o.rest.first().ok_or("missing snapshot argument")?;
    let Obj::Snap(d, s) = Obj::parse(name) else { return Err(format!("'{name}' is not a snapshot")) };
    let ds = w.ds(&d)?;
    let to = w.snap(&d, &s)?;
    let key = if raw { ds.key.as_ref() } else { None };
    let (from, all) = match (o.value('i'), o.value('I')) {
        (Some(f), None) => (Some(f), false),
        (None, Some(f)) => (Some(f), true),
        (None, None) => (None, false),
        _ => return Err("-i and -I are exclusive".into()),
    };
    // The base: a snapshot (`DS@x` or `@x`) or a bookmark (`DS#x`) of the
    // same dataset; its GUID and how much data it holds.
    let base = match from {
        None => None,
        Some(f) => {
            let full = if f.starts_with('@') || f.starts_with('#') { format!("{d}{f}") } else { f.to_owned() };
            match Obj::parse(&full) {
                Obj::Snap(bd, bs) if bd == d => {
                    let b = w.snap(&bd, &bs)?;
                    Some((full, b.guid, b.chunks, b.createtxg))
                }
                Obj::Mark(bd, bb) if bd == d && !all => {
                    let m = ds.bookmarks.iter().find(|m| m.name == bb).ok_or_else(|| not_found(&full))?;
                    Some((full, m.guid, m.chunks, m.createtxg))
                }
                _ => {
                    return Err(format!(
                        "cannot send '{name}': incremental source ({f}) is not a snapshot of the same dataset"
                    ))
                }
            }
        }
    };
    if let Some((b, _, _, txg)) = &base {
        if *txg >= to.createtxg {
            return Err(format!("cannot send '{name}': incremental source ({b}) is not earlier than it"));
        }
    }
    // The substreams: one, or with -I one per snapshot after the base.
    let steps: Vec<&super::world::Snap> = match &base {
        Some((_, _, _, txg)) if all => d_snaps(ds, *txg, to.createtxg),
        _ => vec![to],
    };
    let names: Vec<String> = steps.iter().map(|s| format!("{d}@{}", s.name)).collect();
    let mut prev = base.as_ref().map_or((0, 0), |(_, g, c, _)| (*g, *c));
    let mut subs = Vec::new();
    for (s, n) in steps.iter().zip(&names) {
        subs.push(Sub {
            toname: n,
            toguid: s.guid,
            fromguid: prev.0,
            creation: s.creation,
            key,
            chunks: (prev.1..s.chunks).map(|i| (i, ds.content[i])).collect(),
            resume: None,
        });
        prev = (s.guid, s.chunks);
    }
    let stream = if all { stream::compound(&subs) } else { stream::single(&subs[0]) };
    if o.has('n') {
        let size = stream.len() as u64;
        let text = match (&base, o.has('P')) {
            (None, true) => format!("full\t{name}\t{size}\nsize\t{size}\n"),
            (Some((b, ..)), true) => format!("incremental\t{b}\t{name}\t{size}\nsize\t{size}\n"),
            (None, false) => format!(
                "full send of {name} estimated size is {}\ntotal estimated size is {}\n",
                nice(size),
                nice(size)
            ),
            (Some((b, ..)), false) => {
                format!(
                    "send from {b} to {name} estimated size is {}\ntotal estimated size is {}\n",
                    nice(size),
                    nice(size)
                )
            }
        };
        return Ok(Out::ok(text));
    }
    Ok(Out { stream: Some(stream), ..Out::default() })
}

/// The snapshots of `ds` after txg `after`, up to txg `to`, oldest first.
fn d_snaps(ds: &super::world::Ds, after: u64, to: u64) -> Vec<&super::world::Snap> {
    ds.snapshots.iter().filter(|s| s.createtxg > after && s.createtxg <= to).collect()
}

/// `zfs send -t TOKEN` (`-n -v`: describe it as 2.3.2 does).
fn send_resume(w: &mut World, o: &Opts, token: &str) -> Result<Out, String> {
    let t = Token::decode(token).ok_or("cannot resume send: invalid resume token")?;
    let (d, _) = t.toname.split_once('@').ok_or("cannot resume send: invalid resume token")?;
    let gone = || format!("cannot resume send: '{}' used in the initial send no longer exists", t.toname);
    let ds = w.datasets.get(d).ok_or_else(gone)?;
    let to = ds.snapshots.iter().find(|x| x.guid == t.toguid).ok_or_else(gone)?;
    let base = if t.fromguid == 0 {
        None
    } else {
        let snap = ds.snapshots.iter().find(|x| x.guid == t.fromguid).map(|x| (format!("{d}@{}", x.name), x.chunks));
        let mark = ds.bookmarks.iter().find(|x| x.guid == t.fromguid).map(|x| (format!("{d}#{}", x.name), x.chunks));
        Some(
            snap.or(mark)
                .ok_or_else(|| format!("cannot resume send: incremental source {:#x} no longer exists", t.fromguid))?,
        )
    };
    let start = base.as_ref().map_or(0, |b| b.1) + usize::try_from(t.got).expect("a token offset in memory");
    let name = format!("{d}@{}", to.name);
    let key = if o.has('w') && t.raw { ds.key.as_ref() } else { None };
    let sub = Sub {
        toname: &name,
        toguid: to.guid,
        fromguid: t.fromguid,
        creation: to.creation,
        key,
        chunks: (start.min(to.chunks)..to.chunks).map(|i| (i, ds.content[i])).collect(),
        resume: Some((2, (start * super::world::CHUNK_MAX) as u64)),
    };
    let stream = stream::single(&sub);
    if o.has('n') {
        let size = nice(stream.len() as u64);
        let mut text = String::from("resume token contents:\nnvlist version: 0\n");
        if t.fromguid != 0 {
            text.push_str(&format!("\tfromguid = {:#x}\n", t.fromguid));
        }
        text.push_str(&format!(
            "\tobject = 0x2\n\toffset = {:#x}\n\tbytes = {:#x}\n\ttoguid = {:#x}\n\ttoname = {}\n\tcompressok = 1\n",
            start * super::world::CHUNK_MAX,
            t.bytes,
            t.toguid,
            t.toname
        ));
        if t.raw {
            text.push_str("\trawok = 1\n");
        }
        match &base {
            None => text.push_str(&format!("full send of {name} estimated size is {size}\n")),
            Some((b, _)) => text.push_str(&format!("send from {b} to {name} estimated size is {size}\n")),
        }
        text.push_str(&format!("total estimated size is {size}\n"));
        return Ok(Out::ok(text));
    }
    Ok(Out { stream: Some(stream), ..Out::default() })
}
