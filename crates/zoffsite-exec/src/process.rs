//! The one place external commands are started.
//!
//! - Commands are argv vectors ([`Cmd`]); there is no shell anywhere.
//! - stdout and stderr are captured with size bounds: a misbehaving (or
//!   hostile) program cannot make us allocate without limit.
//! - Success is decided by the exit status only; stderr is kept for
//!   classification and for the user.
//! - Children never inherit our stdout: in `serve`, stdout is the protocol
//!   channel, and one stray line from a child would corrupt it.
//! - A child can be given a deadline ([`run_by`], [`Running::deadline`]):
//!   a watchdog kills it when the deadline passes, and the caller gets
//!   [`ExecError::Deadline`], which names the command. The child is never
//!   reaped while its watchdog may still fire (`waitid(WNOWAIT)` first), so
//!   a kill can never reach a recycled pid.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most stderr we keep from one child.
pub const STDERR_LIMIT: usize = 64 * 1024;

/// An argv: program and arguments, never a shell string.
#[derive(Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Variables set for the child on top of the inherited environment.
    pub env: Vec<(OsString, OsString)>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self { program: program.as_ref().to_owned(), args: Vec::new(), env: Vec::new() }
    }

    /// Sets `key` to `value` in the child's environment.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(it.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The arguments as UTF-8 strings (lossy), for tests and logs.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(&self.program).chain(&self.args).map(|a| a.to_string_lossy().into_owned()).collect()
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }
}

/// Shell-style quoting for display only (dry runs and logs): the command is
/// never run through a shell.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.argv().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b)) {
                f.write_str(a)?;
            } else {
                write!(f, "'{}'", a.replace('\'', r"'\''"))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("{program} printed more than {limit} bytes")]
    TooMuchOutput { program: String, limit: usize },
    #[error("I/O with {program}: {source}")]
    Io { program: String, source: io::Error },
    #[error("`{cmd}` did not finish within {after:?} and was killed")]
    Deadline { cmd: String, after: Duration },
}

/// A finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Reads everything from `r`, keeping at most `limit` bytes and noting how
/// much was dropped. Reading on keeps the child from blocking on a full
/// pipe.
pub fn read_bounded(mut r: impl Read, limit: usize) -> io::Result<(Vec<u8>, u64)> {
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let room = limit.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&buf[..room]);
        dropped += (n - room) as u64;
    }
    Ok((kept, dropped))
}

/// Collects a child's stderr in the background, bounded.
pub struct StderrCollector(Option<JoinHandle<String>>);

impl StderrCollector {
    pub fn start(stderr: Option<ChildStderr>) -> Self {
        Self(stderr.map(|s| {
            std::thread::spawn(move || match read_bounded(s, STDERR_LIMIT) {
                Ok((kept, 0)) => String::from_utf8_lossy(&kept).into_owned(),
                Ok((kept, dropped)) => {
                    format!("{}\n[... {dropped} more bytes of stderr dropped]", String::from_utf8_lossy(&kept))
                }
                Err(e) => format!("[stderr unreadable: {e}]"),
            })
        }))
    }

    /// Waits for the child to close stderr and returns what it wrote.
    pub fn finish(&mut self) -> String {
        self.0.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    }
}

fn spawn(cmd: &Cmd, stdin: Stdio, stdout: Stdio) -> Result<Child, ExecError> {
    spawn_with(cmd, stdin, stdout, false)
}

fn spawn_with(cmd: &Cmd, stdin: Stdio, stdout: Stdio, own_group: bool) -> Result<Child, ExecError> {
    use std::os::unix::process::CommandExt as _;
    tracing::debug!(cmd = %cmd, "run");
    let mut c = cmd.command();
    c.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
    if own_group {
        c.process_group(0);
    }
    spawn_command(&mut c, cmd)
}

/// Spawns `c` (built from `cmd`).
fn spawn_command(c: &mut Command, cmd: &Cmd) -> Result<Child, ExecError> {
    // ETXTBSY: an executable that was just written can be briefly "busy"
    // while another thread's fork still holds its write descriptor (a
    // known Linux race); it clears within milliseconds.
    let mut tries = 0;
    loop {
        match c.spawn() {
            Err(e) if e.raw_os_error() == Some(26) && tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => {
                return r
                    .map_err(|source| ExecError::Spawn { program: cmd.program.to_string_lossy().into_owned(), source })
            }
        }
    }
}

/// Kills a child when its deadline passes, unless stopped first.
struct Watchdog {
    stop: mpsc::Sender<()>,
    fired: JoinHandle<bool>,
    after: Duration,
}

impl Watchdog {
    fn start(child: &Child, after: Duration) -> Self {
        let pid = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw);
        let (stop, rx) = mpsc::channel::<()>();
        let fired = std::thread::spawn(move || match rx.recv_timeout(after) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(p) = pid {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
                true
            }
            _ => false,
        });
        Self { stop, fired, after }
    }

    /// Disarms it; whether it killed the child. Called before the child is
    /// reaped, so the pid it kills is still the child's.
    fn stop(self) -> (bool, Duration) {
        let _ = self.stop.send(());
        (self.fired.join().unwrap_or(false), self.after)
    }
}

/// Waits until `child` has exited, without reaping it (its pid stays
/// reserved until [`Child::wait`]).
fn wait_exited(child: &Child) -> io::Result<()> {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        return Ok(());
    };
    loop {
        match waitid(WaitId::Pid(pid), WaitIdOptions::EXITED | WaitIdOptions::NOWAIT) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            // Already reaped (ECHILD): nothing to wait for.
            Err(rustix::io::Errno::CHILD) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reaps `child`; with a watchdog, disarms it first (after the child has
/// exited) and turns a kill by it into [`ExecError::Deadline`].
fn reap(child: &mut Child, cmd: &Cmd, watchdog: Option<Watchdog>) -> Result<ExitStatus, ExecError> {
    let io = |source| ExecError::Io { program: cmd.program.to_string_lossy().into_owned(), source };
    let fired = match watchdog {
        Some(w) => {
            wait_exited(child).map_err(io)?;
            Some(w.stop())
        }
        None => None,
    };
    let status = child.wait().map_err(io)?;
    match fired {
        Some((true, after)) if !status.success() => Err(ExecError::Deadline { cmd: cmd.to_string(), after }),
        _ => Ok(status),
    }
}

/// Runs `cmd` to completion with no input, capturing at most `stdout_limit`
/// bytes of stdout (more is an error: a listing that large is not trusted).
pub fn run(cmd: &Cmd, stdout_limit: usize) -> Result<Output, ExecError> {
    run_by(cmd, stdout_limit, None)
}

/// [`run`], killing the command if it has not finished within `deadline`
/// ([`ExecError::Deadline`]).
pub fn run_by(cmd: &Cmd, stdout_limit: usize, deadline: Option<Duration>) -> Result<Output, ExecError> {
    let mut child = spawn(cmd, Stdio::null(), Stdio::piped())?;
    let watchdog = deadline.map(|d| Watchdog::start(&child, d));
    let mut err = StderrCollector::start(child.stderr.take());
    let program = || cmd.program.to_string_lossy().into_owned();
    let out = child.stdout.take().map(|o| read_bounded(o, stdout_limit)).transpose();
    let status = reap(&mut child, cmd, watchdog)?;
    let stderr = err.finish();
    let (stdout, dropped) = out.map_err(|source| ExecError::Io { program: program(), source })?.unwrap_or_default();
    if dropped > 0 {
        return Err(ExecError::TooMuchOutput { program: program(), limit: stdout_limit });
    }
    Ok(Output { status, stdout, stderr })
}

/// Runs a long build step (mkosi) with its stdout and stderr appended to
/// `log` (unbounded in size on disk, never in memory), killed after
/// `deadline`. Success is the exit status; the caller points at the log.
pub fn run_logged(cmd: &Cmd, log: &std::fs::File, deadline: Option<Duration>) -> Result<ExitStatus, ExecError> {
    let io = |source| ExecError::Io { program: cmd.program.to_string_lossy().into_owned(), source };
    let out = log.try_clone().map_err(io)?;
    let err = log.try_clone().map_err(io)?;
    tracing::debug!(cmd = %cmd, "run (logged)");
    let mut c = cmd.command();
    c.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child =
        c.spawn().map_err(|source| ExecError::Spawn { program: cmd.program.to_string_lossy().into_owned(), source })?;
    let watchdog = deadline.map(|d| Watchdog::start(&child, d));
    reap(&mut child, cmd, watchdog)
}

/// [`run_by`] with `input` on the command's stdin: for a secret a tool
/// reads (`wg pubkey`), which in the argv every user could read in
/// `/proc`. A command that exits without reading all of it is judged by
/// its exit status like any other.
pub fn run_with_input(
    cmd: &Cmd,
    input: &[u8],
    stdout_limit: usize,
    deadline: Option<Duration>,
) -> Result<Output, ExecError> {
    use std::io::Write as _;
    let mut child = spawn(cmd, Stdio::piped(), Stdio::piped())?;
    let watchdog = deadline.map(|d| Watchdog::start(&child, d));
    let mut err = StderrCollector::start(child.stderr.take());
    let program = || cmd.program.to_string_lossy().into_owned();
    let mut stdin = child.stdin.take();
    let input = input.to_vec();
    // Written from a thread: a child that prints before it has read all its
    // input would otherwise block on a full stdout pipe, and we on its stdin.
    let writer = std::thread::spawn(move || stdin.take().map(|mut s| s.write_all(&input)).transpose());
    let out = child.stdout.take().map(|o| read_bounded(o, stdout_limit)).transpose();
    let written = writer.join().unwrap_or(Ok(None));
    let status = reap(&mut child, cmd, watchdog)?;
    let stderr = err.finish();
    let (stdout, dropped) = out.map_err(|source| ExecError::Io { program: program(), source })?.unwrap_or_default();
    if dropped > 0 {
        return Err(ExecError::TooMuchOutput { program: program(), limit: stdout_limit });
    }
    if let Err(source) = written {
        if status.success() {
            return Err(ExecError::Io { program: program(), source });
        }
    }
    Ok(Output { status, stdout, stderr })
}

/// How a program run by [`run_bounded`] ended.
#[derive(Debug)]
pub struct Bounded {
    pub status: ExitStatus,
    /// Its stdout and stderr, interleaved as written (one pipe), at most
    /// the limit asked for; what came after is dropped.
    pub output: String,
}

/// Runs a program that must never hold us up (a `[notify]` program): `cmd`
/// with `env` added to our environment and `input` on its stdin, in a
/// process group of its own, its stdout and stderr sharing one pipe of
/// which at most `output_limit` bytes are kept.
///
/// Returns within about `deadline` (plus [`BOUNDED_GRACE`]) whatever the
/// program does: when the deadline passes its whole process group is
/// killed (a shell script's `sleep` too, which a kill of the script alone
/// would leave holding the pipe), and output still held open by a process
/// that left the group is not waited for. A program that exits in time is
/// not cleaned up after: what it started in the background is its own.
pub fn run_bounded(
    cmd: &Cmd,
    env: &[(String, String)],
    input: &[u8],
    output_limit: usize,
    deadline: Duration,
) -> Result<Bounded, ExecError> {
    use rustix::process::{kill_process_group, waitid, Pid, Signal, WaitId, WaitIdOptions};
    use std::io::Write as _;
    use std::os::unix::process::CommandExt as _;
    let started = Instant::now();
    let program = || cmd.program.to_string_lossy().into_owned();
    let io_err = |source| ExecError::Io { program: program(), source };
    tracing::debug!(cmd = %cmd, "run (bounded)");
    let (reader, writer) = io::pipe().map_err(io_err)?;
    let mut c = cmd.command();
    c.envs(env.iter().map(|(k, v)| (k, v)));
    c.stdin(Stdio::piped()).stdout(writer.try_clone().map_err(io_err)?).stderr(writer).process_group(0);
    let mut child = spawn_command(&mut c, cmd)?;
    // Our copies of the pipe's write end: the reader sees EOF once the
    // program's are closed.
    drop(c);
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_vec();
        // A program that exits without reading gives EPIPE: its status decides.
        std::thread::spawn(move || drop(stdin.write_all(&input)));
    }
    let (tx, chunks) = mpsc::channel::<Option<Vec<u8>>>();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = [0u8; 8192];
        let mut room = output_limit;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let keep = n.min(room);
                    room -= keep;
                    if keep > 0 && tx.send(Some(buf[..keep].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    // Waits for the exit without reaping: while the child is a zombie its
    // pid, and so its process group's id, cannot be reused.
    let exited = loop {
        let Some(pid) = pid else { break true };
        match waitid(WaitId::Pid(pid), WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG) {
            Ok(Some(_)) | Err(rustix::io::Errno::CHILD) => break true,
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                let _ = kill_process_group(pid, Signal::KILL);
                let _ = child.wait();
                return Err(io_err(e.into()));
            }
        }
        if started.elapsed() >= deadline {
            let _ = kill_process_group(pid, Signal::KILL);
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let status = child.wait().map_err(io_err)?;
    let until = Instant::now() + BOUNDED_GRACE.min(deadline);
    let mut output = Vec::new();
    while let Ok(Some(chunk)) = chunks.recv_timeout(until.saturating_duration_since(Instant::now())) {
        output.extend_from_slice(&chunk);
    }
    if !exited {
        return Err(ExecError::Deadline { cmd: cmd.to_string(), after: deadline });
    }
    Ok(Bounded { status, output: String::from_utf8_lossy(&output).into_owned() })
}

/// How long [`run_bounded`] waits for the rest of a program's output once
/// it has exited (or been killed).
pub const BOUNDED_GRACE: Duration = Duration::from_secs(1);

/// A running child whose stdout (or stdin) the caller streams.
pub struct Running {
    pub child: Child,
    pub cmd: Cmd,
    stderr: StderrCollector,
    watchdog: Option<Watchdog>,
}

impl Running {
    /// Starts `cmd` with its stdout piped to the caller (e.g. `zfs send`).
    pub fn with_stdout(cmd: &Cmd) -> Result<Self, ExecError> {
        let mut child = spawn(cmd, Stdio::null(), Stdio::piped())?;
        if let Some(p) = &child.stdout {
            widen_pipe(p);
        }
        let stderr = StderrCollector::start(child.stderr.take());
        Ok(Self { child, cmd: cmd.clone(), stderr, watchdog: None })
    }

    /// Starts `cmd` with its stdin piped from the caller (e.g. `zfs
    /// receive`); its stdout is discarded, never inherited. It runs in its
    /// own process group, so a hangup sent to the caller's session (sshd
    /// tearing down a dropped connection) does not kill it while it saves
    /// resumable state; it ends when its input does.
    pub fn with_stdin(cmd: &Cmd) -> Result<Self, ExecError> {
        let mut child = spawn_with(cmd, Stdio::piped(), Stdio::null(), true)?;
        if let Some(p) = &child.stdin {
            widen_pipe(p);
        }
        let stderr = StderrCollector::start(child.stderr.take());
        Ok(Self { child, cmd: cmd.clone(), stderr, watchdog: None })
    }

    /// Kills the child at `at` if it is still running then: its input or
    /// output ends, and [`finish`](Self::finish) or [`kill`](Self::kill)
    /// return [`ExecError::Deadline`].
    pub fn deadline(mut self, at: Instant) -> Self {
        if self.watchdog.is_none() {
            // Whole milliseconds: the error message says how long it had.
            let ms = at.saturating_duration_since(Instant::now()).as_nanos().div_ceil(1_000_000);
            self.watchdog =
                Some(Watchdog::start(&self.child, Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))));
        }
        self
    }

    /// Closes our ends of the pipes, waits, and returns status and stderr.
    pub fn finish(mut self) -> Result<Output, ExecError> {
        drop(self.child.stdin.take());
        drop(self.child.stdout.take());
        let status = reap(&mut self.child, &self.cmd, self.watchdog.take())?;
        Ok(Output { status, stdout: Vec::new(), stderr: self.stderr.finish() })
    }

    /// Kills the child (used when the other side gave up) and reaps it.
    pub fn kill(mut self) -> Result<Output, ExecError> {
        let _ = self.child.kill();
        self.finish()
    }
}

/// A child both of whose ends the caller speaks through (ssh to a box: its
/// pipes are the session).
pub struct Piped {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: StderrCollector,
}

/// Starts `cmd` with stdin and stdout piped to the caller, stdin widened for
/// stream data ([`widen_pipe`]), and its stderr collected bounded.
pub fn spawn_piped(cmd: &Cmd) -> Result<Piped, ExecError> {
    let mut child = spawn(cmd, Stdio::piped(), Stdio::piped())?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    widen_pipe(&stdin);
    let stderr = StderrCollector::start(child.stderr.take());
    Ok(Piped { child, stdin, stdout, stderr })
}

/// Pipe capacity for stream data: the default 64 KiB makes the sender and
/// the receiver take turns every 64 KiB; 1 MiB lets each side move a whole
/// chunk per wake-up (context switches are what the data path costs).
pub const STREAM_PIPE_SIZE: usize = 1 << 20;

/// Asks for a [`STREAM_PIPE_SIZE`] pipe; a refusal (the system's
/// `pipe-max-size` is lower) only costs speed.
pub fn widen_pipe(fd: &impl std::os::fd::AsFd) {
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(fd, STREAM_PIPE_SIZE) {
        tracing::debug!("cannot widen a pipe to {STREAM_PIPE_SIZE} bytes: {e}");
    }
}

/// Finds `name` in `PATH` or, failing that, in the usual sbin directories
/// (sshd's PATH for forced commands may lack /usr/sbin, where zfs lives).
pub fn find_program(name: &str) -> OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].iter().map(Into::into));
    for d in dirs {
        let p = d.join(name);
        if is_executable(&p) {
            return p.into_os_string();
        }
    }
    name.into()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_for_humans() {
        let c = Cmd::new("zfs").args(["send", "-w", "tank/my data@x", "it's"]);
        assert_eq!(c.to_string(), r#"zfs send -w 'tank/my data@x' 'it'\''s'"#);
    }

    #[test]
    fn stdout_is_bounded() {
        let c = Cmd::new("sh").args(["-c", "yes | head -c 100000"]);
        assert!(matches!(run(&c, 1000), Err(ExecError::TooMuchOutput { .. })));
        let out = run(&c, 200_000).unwrap();
        assert_eq!(out.stdout.len(), 100_000);
    }

    #[test]
    fn stderr_is_bounded_and_status_decides() {
        let c = Cmd::new("sh").args(["-c", "head -c 200000 /dev/zero | tr '\\0' e >&2; exit 3"]);
        let out = run(&c, 10).unwrap();
        assert!(!out.success());
        assert_eq!(out.status.code(), Some(3));
        assert!(out.stderr.len() < STDERR_LIMIT + 100);
        assert!(out.stderr.contains("more bytes of stderr dropped"));
        // Noise on stderr does not make a success a failure.
        let out = run(&Cmd::new("sh").args(["-c", "echo warn >&2"]), 10).unwrap();
        assert!(out.success());
        assert_eq!(out.stderr, "warn\n");
    }

    #[test]
    fn arguments_are_not_interpreted() {
        let out = run(&Cmd::new("printf").args(["%s|", "$(touch /tmp/never)", "a;b", "*"]), 100).unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "$(touch /tmp/never)|a;b|*|");
    }

    #[test]
    fn a_deadline_kills_a_hung_command_and_names_it() {
        let started = Instant::now();
        let e = run_by(&Cmd::new("sleep").arg("30"), 10, Some(Duration::from_millis(300))).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10), "killed, not waited for");
        assert!(matches!(e, ExecError::Deadline { .. }), "{e}");
        assert!(e.to_string().contains("`sleep 30` did not finish within 300ms and was killed"), "{e}");
        // A command that finishes in time is untouched.
        let out = run_by(&Cmd::new("printf").arg("ok"), 10, Some(Duration::from_secs(30))).unwrap();
        assert!(out.success() && out.stdout == b"ok");
    }

    #[test]
    fn a_streaming_child_past_its_deadline_is_killed() {
        // Like a `zfs receive` whose input stalls: nobody writes, it waits.
        let r = Running::with_stdin(&Cmd::new("sh").args(["-c", "cat >/dev/null; sleep 30"]))
            .unwrap()
            .deadline(Instant::now() + Duration::from_millis(300));
        let started = Instant::now();
        let e = r.finish().unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(e, ExecError::Deadline { .. }), "{e}");
        // In time: the status is the child's.
        let r = Running::with_stdin(&Cmd::new("true")).unwrap().deadline(Instant::now() + Duration::from_secs(30));
        assert!(r.finish().unwrap().success());
    }

    #[test]
    fn input_goes_to_stdin_and_stdout_comes_back() {
        let out = run_with_input(&Cmd::new("tr").args(["a-z", "A-Z"]), b"secret\n", 100, None).unwrap();
        assert!(out.success() && out.stdout == b"SECRET\n");
        // Larger than a pipe both ways: neither side blocks the other.
        let big = vec![b'x'; 1 << 20];
        let out = run_with_input(&Cmd::new("cat"), &big, 2 << 20, Some(Duration::from_secs(30))).unwrap();
        assert_eq!(out.stdout.len(), big.len());
        // A command that reads nothing is judged by its status.
        let out = run_with_input(&Cmd::new("false"), &big, 10, None).unwrap();
        assert!(!out.success());
    }

    #[test]
    fn a_bounded_program_gets_its_env_and_input_and_its_output_is_kept_bounded() {
        let env = [("ZOFFSITE_EVENT".to_owned(), "failure".to_owned())];
        let c =
            Cmd::new("sh").args(["-c", "printf '%s|' \"$ZOFFSITE_EVENT\" \"$0\"; cat; echo err >&2; exit 3", "arg"]);
        let b = run_bounded(&c, &env, b"the report", 1000, Duration::from_secs(30)).unwrap();
        assert_eq!(b.status.code(), Some(3));
        assert_eq!(b.output, "failure|arg|the reporterr\n");
        let c = Cmd::new("sh").args(["-c", "head -c 100000 /dev/zero | tr '\\0' x"]);
        let b = run_bounded(&c, &[], b"", 100, Duration::from_secs(30)).unwrap();
        assert!(b.status.success());
        assert_eq!(b.output, "x".repeat(100));
    }

    #[test]
    fn a_bounded_program_past_its_deadline_is_killed_with_its_children() {
        // The script's `sleep` holds the output pipe: killing only the
        // script would leave us waiting 30 s for its EOF.
        let started = Instant::now();
        let c = Cmd::new("sh").args(["-c", "echo started; sleep 30; echo never"]);
        let e = run_bounded(&c, &[], b"", 1000, Duration::from_millis(500)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(matches!(e, ExecError::Deadline { .. }), "{e}");
        // One that left the group and holds the pipe is not waited for
        // beyond the grace period once the program itself has exited.
        let started = Instant::now();
        let c = Cmd::new("sh").args(["-c", "setsid sleep 30 & echo done"]);
        let b = run_bounded(&c, &[], b"", 1000, Duration::from_secs(10)).unwrap();
        assert!(b.status.success() && b.output.starts_with("done"), "{b:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        assert!(matches!(run(&Cmd::new("/nonexistent/zfs"), 10), Err(ExecError::Spawn { .. })));
    }
}
