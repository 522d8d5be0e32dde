//! Hostile input, family by family: what a misconfigured device, a hostile
//! server or a hostile artifact can throw at the client, and that each is
//! refused with a clear error and nothing half-applied (issue #13;
//! docs: README "Limits"). One module per family; each module owns its
//! cases.

#![allow(dead_code)]

#[path = "../common/device.rs"]
mod device;
#[path = "../common/managed.rs"]
mod managed;
#[path = "../common/mender_server.rs"]
mod mender_server;

mod artifact_metadata;
mod compression;
mod config;
mod local_files;
mod processes;
mod server_replies;
