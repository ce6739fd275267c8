//! `zoffsite box prune` (in progress).

use crate::cli::BoxPruneArgs;
use crate::exit::Exit;

pub fn run(_args: BoxPruneArgs) -> Exit {
    eprintln!("zoffsite: box prune is not available in this version yet");
    Exit::Usage
}
