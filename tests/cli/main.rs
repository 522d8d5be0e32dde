//! CLI tier: the `mender-rs` binary run as a separate process on a simulated
//! A/B device, its commands checked by their exit codes, output and the
//! files they leave, beside the reference tools where they exist
//! (`mender-artifact`, the Mender client 3.4, `fw_setenv`).
//!
//! * `standalone`: `install`, `commit`, `rollback`, `show-artifact`,
//!   `show-provides`.
//! * `adaptive`: adaptive installs of chunked artifacts by range, with faults.
//! * `bootstrap`: the bootstrap artifact of a freshly flashed device.
//! * `conformance`: `mender-rs artifact` against `mender-artifact`.
//! * `reference_client`: the same scenarios with the Mender client 3.4.
//! * `orderings_34`: 3.4's exact orderings (module calls, error paths,
//!   retries), side by side with the Mender client 3.4.
//! * `crash_injection` (feature `crash-injection`): power loss at every
//!   persisted step.
//! * `mender_update`: the 4.x/5.x command line by the `mender-update` link
//!   (`resume`, `--stop-before`, global options, environment).
//! * `proxy`: `http_proxy`, `https_proxy`, `no_proxy` (4.x rules).
//! * `control_map`: `mender-rs control set|show|clear`.
//! * `takeover`: take-over from the Mender client and hand back, on
//!   hand-made stores and with the Mender client 3.4.
//! * `mender_auth`: `mender-auth bootstrap|daemon`, device keys (encrypted
//!   too) and `DeviceTier`, against the test server.
//! * `uboot_default_env`: the layer's default U-Boot environment through a
//!   whole update.

#[path = "../support/mod.rs"]
#[allow(dead_code)] // each tier uses part of the shared helpers
mod support;

#[cfg(feature = "writer")]
mod adaptive;
mod bootstrap;
#[cfg(feature = "writer")]
mod chunked;
mod conformance;
mod control_map;
mod crash_injection;
mod mender_auth;
mod mender_update;
mod orderings_34;
mod proxy;
mod reference_client;
mod standalone;
#[cfg(feature = "mender-store")]
mod takeover;
mod uboot_default_env;
