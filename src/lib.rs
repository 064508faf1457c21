//! The `slipway` binary's library seam: configuration, start-up, the embedded database, and
//! the API client behind the pipeline commands (`client`, `cli`).
//! `main.rs` only parses the command line and calls in here, so tests can boot the real
//! server the same way.

pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod embedded_pg;
pub mod startup;
