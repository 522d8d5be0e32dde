//! System tier: `mender-rs daemon` against the test server
//! (`tests/support/mender_server/`), with simulated reboots, fleets of
//! daemons and the D-Bus API: the client as a whole, in managed mode.
//!
//! * `addon_proxy` (feature `dbus`): Debian's `mender-connect` beside the
//!   daemon: remote shell, late accept, token renewal, private CA, mutual TLS.
//! * `daemon`: script orders, status reports, authentication, inventory,
//!   resumable download, restarts at every persisted step.
//! * `dbus` (feature `dbus`): the D-Bus API on a private bus.
//! * `fleet`: many daemons against one server (`fleet_100` is ignored and
//!   run by `scripts/bench-daemon fleet`).
//! * `mender_server_selftest`: the test server itself, so the other
//!   modules can trust it.
//! * `takeover_managed`: a deployment the Mender client left in flight,
//!   finished by our daemon; ours handed back before its reboot.

#[path = "../support/mod.rs"]
#[allow(dead_code)] // each tier uses part of the shared helpers
mod support;

mod addon_proxy;
mod daemon;
mod dbus;
mod fleet;
mod mender_server_selftest;
mod takeover_managed;
