//! The `slipway` binary's library seam: configuration, start-up and the embedded database.
//! `main.rs` only parses the command line and calls in here, so tests can boot the real
//! server the same way.

pub mod config;
pub mod demo;
pub mod embedded_pg;
pub mod startup;
