//! Helpers shared by the test tiers (`tests/component`, `tests/cli`,
//! `tests/system`, `tests/hardening`) and by `benches/bench_daemon.rs`: each
//! tier root includes this module once, with
//! `#[path = "../support/mod.rs"] mod support;`.
//!
//! * `device`: a simulated A/B device and the binary under test.
//! * `managed`: a daemon run for a simulated device, and its supervisor.
//! * `mender_server`: a Mender-compatible device-API server with faults.
//! * `connect_proxy`: a loopback CONNECT proxy that counts its tunnels.
//! * `range_server`: a loopback file server with ranges, counts and faults.
//! * `canonical_scripts`: the state-script inventory the update tests expect.
//!
//! Each tier uses only part of these, so the unused rest is allowed where a
//! tier root declares this module, not file by file.
//!
//! Why a `#[path]` include and not a crate of its own (a `tests/support`
//! workspace member used as a dev-dependency): `BIN` is
//! `env!("CARGO_BIN_EXE_mender-rs")`, which Cargo defines only for the
//! package's own integration tests and benchmarks, never for another
//! crate, so every helper that runs the binary would have to be handed its
//! path at run time. With one include per tier root these files are
//! compiled once per binary that includes them (the four tiers and the
//! benchmark), not once per test file.

pub mod canonical_scripts;
pub mod connect_proxy;
pub mod device;
pub mod managed;
pub mod mender_server;
pub mod range_server;
