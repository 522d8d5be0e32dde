//! Robustness of the artifact reader against malformed input.
//!
//! Good artifacts are written at test time with `write_artifact` (every
//! compression, rootfs-image and module-image payloads, signed and unsigned,
//! with state scripts); bad ones are derived from them in memory: truncated,
//! with flipped bytes, with members reordered, duplicated, missing or added,
//! with wrong JSON, unsafe payload names, non-regular tar entries, broken
//! manifests and signatures, oversized members.
//!
//! Every bad input must be refused without a panic, with a non-empty one-line
//! message, with exactly one `abort` call on the handler, and without a
//! payload byte reaching the handler before the header was verified. Each
//! test gathers all violations and reports them together; set
//! `MALFORMED_VERBOSE=1` to print every message.
//!
//! Cases, one module per part of the artifact: `good_artifacts` (the
//! positive control), `truncation`, `outer_tar`, `version_manifest`,
//! `header`, `payload_tar`, `signatures`, `size_caps`, `control_characters`,
//! `command_line`. Helpers: `keys`, `fixtures` (the good artifacts),
//! `surgery` (taking them apart), `harness` (running the reader).

use std::fmt::Display;
use std::io::{Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use mender_rs::artifact::ArtifactError;
use mender_rs::artifact::compression::Compression;
use mender_rs::artifact::header::ArtifactHeader;
use mender_rs::artifact::reader::{
    ArtifactHandler, ReadOptions, ReadReport, SignaturePolicy, SignatureState, read_artifact,
};
use mender_rs::artifact::signature::{SigningKey, VerifyKey};
use mender_rs::artifact::writer::{ArtifactSpec, write_artifact};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

mod command_line;
mod control_characters;
mod good_artifacts;
mod header;
mod outer_tar;
mod payload_tar;
mod signatures;
mod size_caps;
mod truncation;
mod version_manifest;

// Helpers the cases share.
mod fixtures;
mod harness;
mod keys;
mod surgery;

use fixtures::*;
use harness::*;
use keys::*;
use surgery::*;
