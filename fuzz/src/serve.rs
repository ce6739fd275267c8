//! `zoffsite serve` as a target, in-process: the real
//! [`zoffsite_exec::proto::server::Server`] reads the input from a
//! `Cursor` and answers into a `Vec`, with a fake `zfs`
//! ([`Zfs::with_binary`]) that logs every argv, answers the listings, and
//! stores what `zfs receive` is fed. Each execution checks:
//!
//! - no panic (the harness's `catch_unwind`), no hang (the harness's
//!   time limits);
//! - bounded memory: the harness's counting allocator measures the
//!   server's peak (its threads included) against this target's bound, and
//!   the fuzzer's own peak RSS bound covers the server too;
//! - the output is a clean sequence of `Response` frames, starting with a
//!   hello or an error;
//! - no zfs command it ran destroys, rolls back, renames, mounts, forces
//!   or touches a key; receives are `-u -s` (or `-A`), creates `-u`; every
//!   name it passes is the root or under it;
//! - every stream `zfs receive` saw begins with a raw substream.
//!
//! What the command around it does (ignoring `SSH_ORIGINAL_COMMAND`,
//! stdin/stdout, the exit code) is not run here: `zoffsite serve` is a
//! thin wrapper, tested end to end in the VM.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use zoffsite_core::names::Dataset;
use zoffsite_core::protocol::{self, Response, MAX_DATA_LEN, MAX_REQUEST_LEN};
use zoffsite_core::stream::{parse_begin, StreamError};
use zoffsite_exec::proto::server::Server;
use zoffsite_exec::zfs::Zfs;

use crate::corpus;
use crate::mutate::Shape;
use crate::targets::{Ctx, Target};

const ROOT: &str = "offsite/home";
const MIB: usize = 1 << 20;

const FAKE_ZFS: &str = r#"#!/bin/sh
d='@DIR@'
printf '%s\037' "$@" >> "$d/log"; echo >> "$d/log"
case "$1" in
list)
  case "$*" in
    # A dataset's own snapshots before a receive: none, so that mutated
    # streams reach `zfs receive` (the refusal of held ones is unit-tested).
    *"-d 1 -t snapshot"*) ;;
    *receive_resume_token*) printf 'offsite/home\t-\noffsite/home/tank\t-\noffsite/home/tank/data\t1-c1796e07f-f0-789c63\noffsite/home/t\t-\noffsite/home/t/src\t-\n' ;;
    *createtxg*) printf 'offsite/home/tank/data@zoffsite-20261126T073000Z\t10546291128629098134\t57\t1795678200\noffsite/home/t/src@s1\t10546291128629098134\t12\t1764142200\n' ;;
  esac
  exit 0 ;;
receive)
  [ "$2" = "-A" ] && exit 0
  case "$*" in *nospace*) echo "cannot receive: out of space" >&2; exit 1 ;; esac
  # One process, like the real zfs receive (the server kills only its child,
  # not the child's children: a sh waiting on cat would hold stderr open).
  exec cat > "$d/recv.$$" ;;
get) case "$*" in *mountpoint*) echo none ;; *"-s local -o name,value"*) ;; *) echo 10546291128629098134 ;; esac; exit 0 ;;
create|set) exit 0 ;;
esac
exit 1
"#;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn target() -> std::io::Result<Target> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("zoffsite-fuzz-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin"))?;
    let zfs = dir.join("bin/zfs");
    std::fs::write(&zfs, FAKE_ZFS.replace("@DIR@", &dir.display().to_string()))?;
    std::fs::set_permissions(&zfs, std::fs::Permissions::from_mode(0o755))?;
    // The box's audit, as root's doctor leaves it (here: the fuzzer's).
    std::fs::create_dir_all(dir.join("audit"))?;
    std::fs::set_permissions(dir.join("audit"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(dir.join("audit/box.json"), corpus::box_audits().remove(0))?;
    std::fs::set_permissions(dir.join("audit/box.json"), std::fs::Permissions::from_mode(0o644))?;
    let dir = Dir(dir);
    let mut seeds = corpus::sessions();
    seeds.push(b"zfs destroy -r offsite; touch /tmp/x\n".to_vec());
    Ok(Target {
        name: "serve",
        shape: Shape::Frames { prefix: 0 },
        dict: corpus::JSON_DICT,
        seeds,
        max_len: 2 << 20,
        // One request or data frame, the stream head held back from `zfs
        // receive` (1 MiB), the copy buffer (256 KiB), a send's buffer, the
        // child processes' bookkeeping; per input byte: its copy as the
        // server's input and what the answers echo of it.
        mem_base: MAX_REQUEST_LEN.max(MAX_DATA_LEN) + 8 * MIB,
        mem_per_byte: 64,
        // Its answers go back to the source, which sanitizes them.
        hostile: false,
        weight: 4,
        run: Box::new(move |ctx, input| run(ctx, input, &dir.0)),
    })
}

fn run(ctx: &mut Ctx, input: &[u8], dir: &Path) -> bool {
    let _ = std::fs::write(dir.join("log"), b"");
    let mut out = Vec::new();
    let root = Dataset::new(ROOT).expect("a valid root");
    // Its own lock scope: a real box's sessions on this machine (or a
    // fuzzer run beside this one) never hold up this one, nor it them.
    let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.join("audit")).expect("made at setup"));
    let served = Server::new(Zfs::with_binary(dir.join("bin/zfs")), root, Cursor::new(input.to_vec()), &mut out)
        .with_lock_scope(dir.display().to_string())
        .with_audit(dir.join("audit/box.json"), me)
        .serve();

    let mut ok = served.is_ok();
    let mut r = Cursor::new(&out[..]);
    let mut first = true;
    while (r.position() as usize) < out.len() {
        match protocol::read_msg::<Response>(&mut r, usize::MAX) {
            Ok(Response::Error { message, .. }) => {
                ctx.refused(message);
                ok = false;
            }
            Ok(Response::Hello { .. }) if first => {}
            Ok(m) if first => ctx.violations.push(format!("serve's first answer is {m:?}")),
            Ok(_) => {}
            Err(e) => {
                ctx.violations.push(format!("serve wrote something that is not a response: {e}"));
                break;
            }
        }
        first = false;
    }
    // What the command would print before exiting 1.
    if let Err(e) = served {
        ctx.refused(e.to_string());
    }
    check_zfs_log(ctx, dir);
    check_received(ctx, dir);
    ok
}

/// Every zfs command serve ran keeps its promises: nothing destroyed,
/// rolled back, renamed, mounted, forced or keyed; receives are `-u -s`
/// (or `-A`), created parents `-u`, no mountpoint set; every name it
/// touches is the root or under it. (A deny-list, so that serve may learn
/// new harmless commands without this check going stale.)
fn check_zfs_log(ctx: &mut Ctx, dir: &Path) {
    const NEVER: &[&str] =
        &["destroy", "rollback", "rename", "mount", "load-key", "unload-key", "change-key", "promote", "clone", "send"];
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let within = |d: &str| {
        let d = d.split(['@', '#']).next().unwrap_or(d);
        d == ROOT || (d.len() > ROOT.len() && d.starts_with(ROOT) && d.as_bytes()[ROOT.len()] == b'/')
    };
    for line in log.lines() {
        let args: Vec<&str> = line.split('\x1f').filter(|a| !a.is_empty()).collect();
        let sub = args.first().copied().unwrap_or("");
        let has = |a: &str| args.contains(&a);
        let broken = if NEVER.contains(&sub) {
            Some("a command serve must never run")
        } else if has("-F") {
            Some("a forced operation")
        } else if sub == "receive" && !has("-A") && !(has("-u") && has("-s")) {
            Some("a receive without -u -s")
        } else if sub == "create" && !has("-u") {
            Some("a create that mounts")
        } else if args.iter().any(|a| a.starts_with("mountpoint=") && *a != "mountpoint=none" || *a == "canmount=on") {
            Some("a mountpoint set")
        } else if args.iter().skip(1).any(|a| !a.starts_with('-') && a.contains(['/', '@', '#']) && !within(a)) {
            Some("a name outside the root")
        } else {
            None
        };
        if let Some(why) = broken {
            ctx.violations.push(format!("serve ran `zfs {}`: {why}", args.join(" ")));
        }
    }
}

/// Every stream zfs receive saw starts with a raw substream.
fn check_received(ctx: &mut Ctx, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("recv.") {
            continue;
        }
        let data = std::fs::read(e.path()).unwrap_or_default();
        let _ = std::fs::remove_file(e.path());
        let first = match parse_begin(&data) {
            // A -I stream: compound BEGIN, its END, then the first substream.
            Err(StreamError::Compound) => parse_begin(data.get(624..).unwrap_or_default()),
            r => r,
        };
        // Short: serve killed zfs receive (here: cat) before it wrote out
        // all it was given; what did arrive must not contradict raw.
        ctx.check(matches!(first, Ok(_) | Err(StreamError::Short)), || {
            format!("zfs receive was fed a stream whose first substream is refused: {first:?}")
        });
    }
}
