//! `zoffsite serve --root DATASET`: the box's side of the protocol, the
//! forced command of the source's key in the box's `authorized_keys`.
//!
//! This is the command only: it ignores what the client asked SSH to run,
//! hands stdin and stdout to [`Server`] and maps its end to an exit code.
//! The server, its invariants and its tests are in
//! `zoffsite_exec::proto::server`.

use std::io::{self, BufWriter};
use std::os::fd::AsFd;

use zoffsite_core::protocol;
use zoffsite_exec::proto::server::Server;
use zoffsite_exec::zfs::Zfs;

use crate::cli::ServeArgs;
use crate::exit::Exit;

pub(crate) fn run(args: ServeArgs) -> Exit {
    if let Ok(asked) = std::env::var("SSH_ORIGINAL_COMMAND") {
        // The client may ask for anything; the forced command decides.
        tracing::info!(asked = %protocol::sanitize(&asked, 200), "ignoring the command the client asked for");
    }
    // The stream arrives on stdin (a pipe from sshd): a wider pipe means
    // fewer turns between sshd and us.
    zoffsite_exec::process::widen_pipe(&io::stdin());
    // Unbuffered, by its own descriptor: stream payloads are spliced from
    // it, so no byte may wait in a buffer in front of it (see `Input`).
    let input = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            eprintln!("zoffsite serve: cannot use stdin: {e}");
            return Exit::Error;
        }
    };
    let stdout = io::stdout().lock();
    let mut server = Server::new(Zfs::new(), args.root, input, BufWriter::new(stdout));
    match server.serve() {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("zoffsite serve: {e}");
            Exit::Error
        }
    }
}
