//! `zoffsite serve --root DATASET`: the box's side of the protocol, the
//! forced command of the source's key in the box's `authorized_keys`.
//!
//! This is the command only: it ignores what the client asked SSH to run,
//! hands stdin and stdout to [`Server`] and maps its end to an exit code.
//! The server, its invariants and its tests are in
//! `zoffsite_exec::proto::server`.
//!
//! sshd runs it with pipes (the forced-command line has `restrict`, so no
//! terminal is ever allocated). On a terminal, someone typed it: it says
//! what it is instead of speaking binary at them, and exits 2.

use std::io::{self, BufWriter, IsTerminal as _};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use zoffsite_core::names::Dataset;

use zoffsite_core::protocol;
use zoffsite_exec::proto::server::Server;
use zoffsite_exec::zfs::Zfs;

use crate::cli::ServeArgs;
use crate::exit::Exit;

/// What `serve` says to a person who ran it by hand.
pub(crate) const BY_HAND: &str = "zoffsite serve: this speaks zoffsite's binary protocol on stdin and stdout, for the source, and is not run by hand. \
It is the forced command of the source's SSH key in the box user's authorized_keys (`zoffsite box init` or `zoffsite box apply` writes that line): \
the source's backup, status, verify and restore reach it through ssh. To look at the box, run `zoffsite status` on the source, or `zoffsite box check` and `zoffsite doctor --box` here as root. \
See docs/design.md, \"The protocol\", and docs/box.md.";

/// How old a recorded heartbeat may be before this session writes it
/// again: from box.toml's `max_age` when it judges `root`
/// ([`zoffsite_core::boxside::BoxConfig::heartbeat_refresh`]). Without a
/// readable, valid box.toml, zero: every heartbeat is written, as exact as
/// it can be, and the backup is never refused for the box's own config.
pub(crate) fn heartbeat_refresh(config: &Path, root: &Dataset) -> Duration {
    match zoffsite_exec::boxstate::load_config(config) {
        Ok(cfg) => cfg.heartbeat_refresh(root),
        Err(zoffsite_exec::boxstate::BoxConfigError::Read { source, .. })
            if source.kind() == io::ErrorKind::NotFound =>
        {
            tracing::debug!(config = %config.display(), "no box config: every heartbeat is written");
            Duration::ZERO
        }
        Err(e) => {
            tracing::warn!("{e}; until it is fixed, every heartbeat is written");
            Duration::ZERO
        }
    }
}

/// Whether a person, not sshd, started it: stdin or stdout is a terminal.
pub(crate) fn by_hand(stdin_terminal: bool, stdout_terminal: bool) -> bool {
    stdin_terminal || stdout_terminal
}

pub(crate) fn run(args: ServeArgs) -> Exit {
    if by_hand(io::stdin().is_terminal(), io::stdout().is_terminal()) {
        eprintln!("{BY_HAND}");
        return Exit::Usage;
    }
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
    let refresh = heartbeat_refresh(&args.config, &args.root);
    let mut server = Server::new(Zfs::new(), args.root, input, BufWriter::new(stdout)).with_heartbeat_refresh(refresh);
    match server.serve() {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("zoffsite serve: {e}");
            Exit::Error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_on_either_end_means_a_person() {
        assert!(!by_hand(false, false), "sshd: pipes both ways");
        assert!(by_hand(true, true));
        assert!(by_hand(true, false), "typed, output piped to less");
        assert!(by_hand(false, true), "input from a file, output on the screen");
        assert!(BY_HAND.contains("forced command") && BY_HAND.contains("docs/"));
    }

    #[test]
    fn heartbeats_are_refreshed_by_box_toml_when_it_is_there_and_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box.toml");
        let root = Dataset::new("offsite/home").unwrap();
        assert_eq!(heartbeat_refresh(&path, &root), Duration::ZERO, "no box.toml");
        std::fs::write(&path, "root = \"offsite/home\"\nmax_age = \"16h\"\n").unwrap();
        assert_eq!(heartbeat_refresh(&path, &root), Duration::from_secs(2 * 3600));
        std::fs::write(&path, "root = \"offsite/home\"\nmax_age = \"soon\"\n").unwrap();
        assert_eq!(heartbeat_refresh(&path, &root), Duration::ZERO, "invalid: exact, and serve goes on");
    }
}
