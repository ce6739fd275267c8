pub mod backup;
pub mod common;
pub mod prune;
pub mod serve;
pub mod status;
