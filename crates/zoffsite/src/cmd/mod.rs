pub mod backup;
pub mod box_check;
pub mod box_init;
pub mod box_prune;
pub mod common;
pub mod prune;
pub mod serve;
pub mod status;
