//! mender-rs: an over-the-air update client for embedded Linux that is a
//! drop-in replacement for the Mender client.
//!
//! One module per concern; the binary in `main.rs` is a thin wrapper around
//! [`cli::main`].

pub mod artifact;
pub mod cli;
pub mod fsutil;
pub mod logging;
