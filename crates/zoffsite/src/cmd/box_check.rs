//! `zoffsite box check` (in progress).

use crate::cli::BoxCheckArgs;
use crate::exit::Exit;

pub fn run(_args: BoxCheckArgs) -> Exit {
    eprintln!("zoffsite: box check is not available in this version yet");
    Exit::Usage
}
