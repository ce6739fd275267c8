//! The harness of the whole-session tests: a source and boxes, each its own
//! fake machine, and the real client (`Session::over`) talking to the real
//! `Server` on a thread over a pipe pair.
#![allow(dead_code)] // each test file uses its own part of it

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zoffsite_core::names::{Dataset, Guid, SnapName, Snapshot};
use zoffsite_core::protocol::Request;
use zoffsite_exec::process::{Cmd, Running};
use zoffsite_exec::proto::client::{Peer, Session};
use zoffsite_exec::proto::server::{Fatal, Server};
use zoffsite_exec::zfs::{SendFrom, Zfs};
use zoffsite_testkit::FakeZfs;

pub(crate) fn machine() -> FakeZfs {
    FakeZfs::with_program(Path::new(env!("CARGO_BIN_EXE_fake-zfs")))
}

pub(crate) fn ds(s: &str) -> Dataset {
    Dataset::new(s).unwrap()
}

pub(crate) fn snap(s: &str) -> Snapshot {
    Snapshot::new(s).unwrap()
}

pub(crate) fn name(s: &str) -> SnapName {
    SnapName::new(s).unwrap()
}

pub(crate) fn guid(g: u64) -> Guid {
    Guid::new(g).unwrap()
}

/// A box's dataset lock is an abstract socket, and a child another test
/// thread forks holds a copy of every descriptor until it execs: a session
/// that receives twice into one dataset could find its own lock, just
/// released, still bound. So the tests that serve run one at a time (as the
/// server's own tests do).
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A box: its machine, and the root `serve` is run with.
pub(crate) struct BoxSide {
    pub fake: FakeZfs,
    pub root: Dataset,
}

impl BoxSide {
    pub(crate) fn new(root: &str) -> BoxSide {
        let fake = machine();
        fake.box_root(root);
        BoxSide { fake, root: ds(root) }
    }

    /// Where the box keeps the source's `name` (a dataset or a snapshot).
    pub(crate) fn at(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }

    pub(crate) fn zfs(&self) -> Zfs {
        Zfs::with_binary(self.fake.path())
    }

    /// Opens a session: the box's `Server` on a thread, the client over a
    /// pipe pair to it.
    pub(crate) fn connect(&self) -> (Session, ServerEnd) {
        self.connect_with(|s| s)
    }

    /// [`connect`](Self::connect), with the server's settings changed by
    /// `setup` (its audit file, say).
    pub(crate) fn connect_with(
        &self,
        setup: impl FnOnce(Server<std::fs::File, std::io::PipeWriter>) -> Server<std::fs::File, std::io::PipeWriter>,
    ) -> (Session, ServerEnd) {
        let (to_box_r, to_box_w) = std::io::pipe().unwrap();
        let (from_box_r, from_box_w) = std::io::pipe().unwrap();
        let input = std::fs::File::from(std::os::fd::OwnedFd::from(to_box_r));
        let mut server = setup(
            Server::new(self.zfs(), self.root.clone(), input, from_box_w)
                .with_lock_scope(self.fake.dir().display().to_string()),
        );
        let end = ServerEnd(Arc::new(ServerThread {
            handle: Mutex::new(Some(std::thread::spawn(move || server.serve()))),
            outcome: Mutex::new(None),
        }));
        let session = Session::over(from_box_r, to_box_w, end.clone()).expect("the box greets");
        (session, end)
    }
}

struct ServerThread {
    handle: Mutex<Option<JoinHandle<Result<(), Fatal>>>>,
    outcome: Mutex<Option<Result<(), String>>>,
}

/// The box's end of a session: the thread its `Server` runs on. As the
/// session's [`Peer`], it waits for the server to end once the client's
/// writer is closed (the server then reads the end of its input). It cannot
/// cut a pipe from another thread, so the stall and timeout guards are not
/// exercised here (the client's own tests do that on a socket).
#[derive(Clone)]
pub(crate) struct ServerEnd(Arc<ServerThread>);

impl Peer for ServerEnd {
    fn kill(&self) {}

    fn end(&self, grace: Duration) {
        let Some(h) = self.0.handle.lock().unwrap_or_else(PoisonError::into_inner).take() else { return };
        let deadline = Instant::now() + grace.max(Duration::from_secs(30));
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let outcome = if h.is_finished() {
            match h.join() {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("the server panicked".into()),
            }
        } else {
            Err("the server did not end".into())
        };
        *self.0.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    }
}

impl ServerEnd {
    /// How the server's session ended (after the client closed or dropped
    /// the session).
    pub(crate) fn outcome(&self) -> Result<(), String> {
        self.end(Duration::ZERO);
        self.0.outcome.lock().unwrap_or_else(PoisonError::into_inner).clone().unwrap_or(Ok(()))
    }
}

/// A source: its machine, with an encrypted `tank/data` holding some data.
pub(crate) fn source() -> FakeZfs {
    let f = machine();
    f.create("tank/data", true).write("tank/data", 300_000);
    f
}

/// `zfs send -w [-i/-I/#FROM] SNAP` on the source, running.
pub(crate) fn send(src: &FakeZfs, to: &str, from: Option<(&str, SendFrom)>) -> Running {
    let z = Zfs::with_binary(src.path());
    let from = from.map(|(f, k)| (name(f), k));
    Running::with_stdout(&z.send_raw(&snap(to), from.as_ref().map(|(f, k)| (f, *k)))).unwrap()
}

/// A stream a compromised source crafted, sent as it is.
pub(crate) fn crafted(bytes: &[u8]) -> (tempfile::NamedTempFile, Running) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    let r = Running::with_stdout(&Cmd::new("cat").arg(f.path())).unwrap();
    (f, r)
}

/// The request to receive the source's `ds@name` (GUID `to`) from `from`.
pub(crate) fn receive(dataset: &str, snapshot: &str, to: u64, from: Option<u64>) -> Request {
    Request::Receive {
        dataset: ds(dataset),
        snapshot: name(snapshot),
        guid: guid(to),
        from: from.map(guid),
        resume: false,
    }
}
