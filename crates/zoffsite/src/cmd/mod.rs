pub mod backup;
pub mod serve;
