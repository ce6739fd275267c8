//! `zoffsite serve` as a target. `Server` is private to the binary (its
//! test helpers live inside `serve.rs`), so this drives the real binary
//! instead: `zoffsite serve --root offsite/home` with the input as its stdin
//! and a fake `zfs` first in its PATH that logs every argv, answers the
//! listings, and stores what `zfs receive` is fed. Each execution checks:
//!
//! - no panic, no crash, no hang (killed after [`TIMEOUT`]), exit 0 or 1;
//! - it runs under `RLIMIT_DATA` = the memory bound: running out is a
//!   finding;
//! - stdout is a clean sequence of `Response` frames, starting with a hello
//!   or an error;
//! - no zfs command it ran destroys, rolls back, renames, mounts, forces
//!   or touches a key; receives are `-u -s` (or `-A`), creates `-u`; every
//!   name it passes is the root or under it;
//! - every stream `zfs receive` saw begins with a raw substream.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use zoffsite_core::protocol::{self, Response};
use zoffsite_core::stream::{parse_begin, StreamError};

use crate::corpus;
use crate::mutate::Shape;
use crate::targets::{Ctx, Target};

const ROOT: &str = "offsite/home";
pub const TIMEOUT: Duration = Duration::from_secs(20);

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
  # One process, like the real zfs receive (serve kills only its child, not
  # the child's children: a sh waiting on cat would hold stderr open).
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

pub fn target(bin: PathBuf) -> std::io::Result<Target> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("zoffsite-fuzz-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin"))?;
    let zfs = dir.join("bin/zfs");
    std::fs::write(&zfs, FAKE_ZFS.replace("@DIR@", &dir.display().to_string()))?;
    std::fs::set_permissions(&zfs, std::fs::Permissions::from_mode(0o755))?;
    let dir = Dir(dir);
    let mut seeds = corpus::sessions();
    seeds.push(b"zfs destroy -r offsite; touch /tmp/x\n".to_vec());
    Ok(Target {
        name: "serve",
        shape: Shape::Frames { prefix: 0 },
        dict: corpus::JSON_DICT,
        seeds,
        max_len: 2 << 20,
        mem_base: 0,
        mem_per_byte: 0,
        // Its answers go back to the source, which sanitizes them.
        hostile: false,
        weight: 4,
        external: true,
        run: Box::new(move |ctx, input| run(ctx, input, &bin, &dir.0)),
    })
}

fn run(ctx: &mut Ctx, input: &[u8], bin: &Path, dir: &Path) -> bool {
    let _ = std::fs::write(dir.join("log"), b"");
    let path = format!("{}:/usr/bin:/bin", dir.join("bin").display());
    let mut cmd = Command::new(bin);
    // Bounded memory, enforced: an allocation past the limit aborts serve,
    // which shows here as a crash with "memory allocation ... failed". (The
    // child's ru_maxrss cannot measure it: it starts as a copy of this
    // process, and Linux counts that into the child's peak.)
    let limit = crate::max_rss() as libc::rlim_t;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the hook.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            if libc::setrlimit(libc::RLIMIT_DATA, &r) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = cmd
        .args(["serve", "--root", ROOT])
        .env_clear()
        .env("PATH", path)
        .env("RUST_BACKTRACE", "1")
        .env("SSH_ORIGINAL_COMMAND", "zfs destroy -r offsite\x1b[2J")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            ctx.violations.push(format!("cannot run {}: {e}", bin.display()));
            return false;
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let data = input.to_vec();
    // serve may stop reading early: a broken pipe here is fine.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = (&mut stdout).take(256 << 20).read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = (&mut stderr).take(16 << 20).read_to_end(&mut v);
        v
    });
    let (status, timed_out) = wait(pid);
    let _ = writer.join();
    let out = out_reader.join().unwrap_or_default();
    let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();

    if timed_out {
        ctx.violations.push(format!("serve did not finish within {TIMEOUT:?} (killed); stderr: {}", tail(&err)));
    }
    if err.contains("panicked at") {
        ctx.violations.push(format!("serve panicked:\n{}", tail(&err)));
    }
    match status {
        Status::Exited(0 | 1) => {}
        s => ctx.violations.push(format!("serve ended with {s:?}; stderr: {}", tail(&err))),
    }
    if err.contains("memory allocation of") {
        ctx.violations.push(format!("serve ran out of its {} MiB of memory: {}", crate::max_rss() >> 20, tail(&err)));
    }

    let mut ok = status == Status::Exited(0);
    let mut r = std::io::Cursor::new(&out[..]);
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
    if let Some(line) = err.lines().rev().find_map(|l| l.strip_prefix("zoffsite serve: ")) {
        ctx.refused(line);
    }
    check_zfs_log(ctx, dir);
    check_received(ctx, dir);
    ok
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Exited(i32),
    Signaled(i32),
    Unknown,
}

/// Waits for `pid` with a deadline; returns its status and whether it had
/// to be killed.
fn wait(pid: libc::pid_t) -> (Status, bool) {
    let timed_out = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<()>();
    let flag = Arc::clone(&timed_out);
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(TIMEOUT) {
            flag.store(true, Relaxed);
            // The child is not reaped yet (WNOWAIT below), so `pid` is still
            // ours: this cannot hit another process.
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    // Wait for the exit without reaping, so the watchdog's kill stays safe.
    loop {
        // SAFETY: plain syscall with a zeroed out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    let _ = tx.send(());
    let _ = watchdog.join();
    let mut status = 0;
    // SAFETY: plain syscall.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    let st = if r != pid {
        Status::Unknown
    } else if libc::WIFEXITED(status) {
        Status::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Status::Signaled(libc::WTERMSIG(status))
    } else {
        Status::Unknown
    };
    (st, timed_out.load(Relaxed))
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
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
