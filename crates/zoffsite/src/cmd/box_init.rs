//! `zoffsite box init` (in progress).

use crate::cli::BoxInitArgs;
use crate::exit::Exit;

pub fn run(_args: BoxInitArgs) -> Exit {
    eprintln!("zoffsite: box init is not available in this version yet");
    Exit::Usage
}
