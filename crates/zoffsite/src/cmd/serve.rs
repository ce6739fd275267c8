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

/// The most of box.toml `serve` reads.
const MAX_BOX_CONFIG: u64 = 1 << 20;

/// How old a recorded heartbeat may be before this session writes it
/// again: from box.toml's `max_age` when it judges `root`
/// ([`zoffsite_core::boxside::BoxConfig::heartbeat_refresh`]); `box check`
/// must read the same file (both take /etc/zoffsite/box.toml by default).
/// Without a readable, valid box.toml, zero: every heartbeat is written,
/// as exact as it can be, and the backup is never refused for the box's
/// own config. Only a regular file of at most [`MAX_BOX_CONFIG`] is read,
/// and what is logged names the file, never its text: serve's stderr
/// reaches the source.
pub(crate) fn heartbeat_refresh(config: &Path, root: &Dataset) -> Duration {
    use std::io::Read as _;
    let fallback = "until it is fixed, every heartbeat is written";
    let text = match std::fs::metadata(config) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(config = %config.display(), "no box config: every heartbeat is written");
            return Duration::ZERO;
        }
        Err(e) => Err(e.kind().to_string()),
        Ok(m) if !m.is_file() || m.len() > MAX_BOX_CONFIG => Err("not a regular file of at most 1 MiB".to_owned()),
        Ok(_) => std::fs::File::open(config)
            .and_then(|f| {
                let mut text = String::new();
                f.take(MAX_BOX_CONFIG).read_to_string(&mut text).map(|_| text)
            })
            .map_err(|e| e.kind().to_string()),
    };
    let parsed = text.and_then(|t| {
        zoffsite_core::boxside::BoxConfig::parse(&t)
            .map_err(|_| "not valid: on the box, `zoffsite config check --box` says why".to_owned())
    });
    match parsed {
        Ok(cfg) => cfg.heartbeat_refresh(root),
        Err(why) => {
            tracing::warn!("box config {}: {why}; {fallback}", config.display());
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
        // Not a regular file (a FIFO would hang a reader): not read.
        let fifo = dir.path().join("fifo.toml");
        zoffsite_testkit::mkfifo(&fifo);
        assert_eq!(heartbeat_refresh(&fifo, &root), Duration::ZERO);
        assert_eq!(heartbeat_refresh(dir.path(), &root), Duration::ZERO, "a directory");
    }
}
