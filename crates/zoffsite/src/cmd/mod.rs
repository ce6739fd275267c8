pub mod backup;
pub mod common;
pub mod serve;
pub mod status;
