//! What a run works on: every filesystem and volume under the configured
//! roots (only there: nothing outside them is ever listed), with the
//! selection core makes of them ([`plan::select`]).

use std::path::Path;

use zoffsite_core::config::Config;
use zoffsite_core::plan::{self, Selection};

use crate::zfs::{Zfs, ZfsError};

/// Lists under each configured root and applies the selection. Roots that
/// do not exist are returned as messages naming the fix in `config_path`;
/// any other failure to list is an error.
pub fn list(cfg: &Config, zfs: &Zfs, config_path: &Path) -> Result<(Selection, Vec<String>), ZfsError> {
    let mut listed = Vec::new();
    let mut missing = Vec::new();
    for root in &cfg.source.datasets {
        match zfs.list_datasets(root) {
            Ok(rows) => listed.extend(rows),
            Err(ZfsError::NotFound { .. }) => missing.push(format!(
                "source.datasets: {root} does not exist on this machine; fix the name in {} or create it",
                config_path.display()
            )),
            Err(e) => return Err(e),
        }
    }
    Ok((plan::select(&cfg.source, &listed), missing))
}
