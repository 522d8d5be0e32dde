//! Hostile input, family by family: what a misconfigured device, a hostile
//! server or a hostile artifact can throw at the client, and that each is
//! refused with a clear error and nothing half-applied (issue #13;
//! docs: README "Limits"). One module per family; each module owns its
//! cases.
//!
//! A tier of its own beside `tests/component`, `tests/cli` and
//! `tests/system`: a family mixes library, CLI and daemon cases, and is
//! reviewed as one list of threats, not layer by layer.
//!
//! What the families share lives beside them: `refusal` (what a refused
//! install must leave as it was), `artifact_edit` (an artifact taken apart
//! and repacked with one member changed) and `special_files` (FIFOs, links
//! to /dev/zero, huge sparse files).

#[path = "../support/mod.rs"]
#[allow(dead_code)] // each tier uses part of the shared helpers
mod support;

mod artifact_metadata;
mod compression;
mod config;
mod local_files;
mod processes;
mod server_replies;

// Helpers shared by the families above.
mod artifact_edit;
mod refusal;
mod special_files;
