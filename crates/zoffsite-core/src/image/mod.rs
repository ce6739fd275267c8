//! The box's installer image: what `zoffsite box image` builds on the
//! source ([`build`]) and what `zoffsite box install` does on the stick.

pub mod build;

pub use build::STICK_BUNDLE;
