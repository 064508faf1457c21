//! The `slipway` binary's library seam: configuration, start-up and the embedded database.

pub mod embedded_pg;
