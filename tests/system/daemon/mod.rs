//! The daemon against the test server (tests/support/mender_server/): the
//! canonical script orders and status reports of the Mender client (spec
//! §3.9), authentication, inventory, the resumable download, and restarts
//! at every persisted step of a deployment.
//!
//! Reboots are simulated: `RebootCommand` (and the test Update Module's
//! `ArtifactReboot`) kill the daemon with SIGKILL; the test's supervisor
//! then runs the simulated bootloader ([`SimDevice::reboot`]) and starts
//! the daemon again, as systemd would after a real reboot.
//!
//! One module per concern: `script_order`, `rootfs_updates`, `adaptive`,
//! `auth_inventory`, `restarts`, `servers_tls`, `server_answers`,
//! `control_maps_local`, `control_maps_server`; the device they share is
//! here.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::canonical_scripts::{ARTIFACT_SCRIPTS, ROOTFS_SCRIPTS};
use crate::support::device::*;
use crate::support::managed::{ManagedDevice, final_status_of};
use crate::support::mender_server::*;
use serde_json::Value;

mod adaptive;
mod auth_inventory;
mod control_maps_local;
mod control_maps_server;
mod restarts;
mod rootfs_updates;
mod script_order;
mod server_answers;
mod servers_tls;

const MODULE: &str = "module-state-scripts-test";
/// The id of the update control maps the tests set.
const MAP_ID: &str = "01234567-89ab-4def-8123-456789abcdef";

/// A device of this module: 8 MiB partitions, an inventory script, up to
/// 30 restarts (one per persisted step in the power-loss tests).
fn managed(server: &MenderServer) -> ManagedDevice {
    ManagedDevice::options(server)
        .partition_size(8 << 20)
        .inventory_script(
            "mender-inventory-test",
            "test_attr=one\ntest_attr=two\nhostname=simulated",
        )
        .inventory_poll(60)
        .max_restarts(30)
        .build()
}

/// The final statuses the server accepted for a deployment.
fn accepted_finals(server: &MenderServer, dev: &str, dep: &str) -> Vec<String> {
    server
        .status_reports(dev, dep)
        .into_iter()
        .filter(|r| r.response == 204 && (r.status == "success" || r.status == "failure"))
        .map(|r| r.status)
        .collect()
}
