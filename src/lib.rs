//! mender-rs: an over-the-air update client for embedded Linux that is a
//! drop-in replacement for the Mender client.
//!
//! One module per concern; the binary in `main.rs` is a thin wrapper around
//! [`cli::main`].
//!
//! `unsafe` lives in [`sys`] (the system calls) and [`process`] (fork,
//! exec and reaping) only; everywhere else it is refused.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod artifact;
pub mod bootenv;
pub mod cli;
pub mod config;
pub mod control_map;
pub mod crash;
pub mod daemon;
pub mod deployment_log;
pub mod device_key;
pub mod engine;
pub mod fsutil;
pub mod http;
pub mod http_proxy;
pub mod identity;
pub mod installer;
pub mod logging;
#[cfg(feature = "mender-store")]
pub mod mender_store;
pub mod persist;
#[allow(unsafe_code)]
pub mod process;
pub mod scripts;
pub mod server;
pub mod states;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;

/// The Update Module protocol's old path, kept for the tests and other
/// callers; it lives in [`installer::module`].
pub use installer::module as modules;
