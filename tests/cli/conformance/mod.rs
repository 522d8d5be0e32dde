//! Conformance of `mender-rs artifact` with mender-artifact 3.9, in both
//! directions: artifacts written by `mender-artifact` must read the same with
//! `mender-rs artifact read --json`, and artifacts written by
//! `mender-rs artifact write` must pass `mender-artifact validate` and read the
//! same with `mender-artifact read`. zstd artifacts (which mender-artifact 3.9
//! cannot read) are taken apart with `tar`, `zstd` and `sha256sum` instead.
//!
//! Every input (payload files, state scripts, meta-data, keys) is generated at
//! test time. These tests fail (rather than skip) when `mender-artifact`,
//! `openssl`, `tar`, `zstd` or `sha256sum` are not installed.
//!
//! Cases: `reference_to_ours`, `ours_to_reference`, `default_provides`,
//! `failed_writes`, `decoder_limits`. Helpers: `programs` (running the
//! tools), `inputs` (files and keys), `cases` (the artifact a test asks
//! for), `report` (what an artifact says, from either tool).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod decoder_limits;
mod default_provides;
mod failed_writes;
mod ours_to_reference;
mod reference_to_ours;

// Helpers the cases share.
mod cases;
mod inputs;
mod programs;
mod report;

use cases::*;
use inputs::*;
use programs::*;
use report::*;

const OURS: &str = env!("CARGO_BIN_EXE_mender-rs");
const REFERENCE: &str = "mender-artifact";
