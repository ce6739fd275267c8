//! The fake `zfs` (and `zpool`) program: see `zoffsite_testkit::fake`.
//!
//! It is run through a link in its machine's directory (`DIR/zfs`,
//! `DIR/zpool`): that directory, from `argv[0]`, holds the machine's state;
//! the link's name says which program it is. `$FAKE_ZFS_DIR` names the
//! directory instead, for a run through another path.

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args_os();
    let argv0 = PathBuf::from(args.next().unwrap_or_default());
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let dir = match std::env::var_os("FAKE_ZFS_DIR") {
        Some(d) => PathBuf::from(d),
        None => argv0.parent().map(PathBuf::from).unwrap_or_default(),
    };
    let zpool = argv0.file_name().is_some_and(|n| n == "zpool");
    std::process::exit(zoffsite_testkit::fake::cli::run(&dir, zpool, &args));
}
