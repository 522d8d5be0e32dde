//! Power-loss tests: the process is aborted at every persisted store write
//! (`MENDER_RS_CRASH_AT=step:K`) and after every payload block written to
//! the partition (`chunk:K`) of each command of three scenarios on a
//! simulated A/B device; after each crash the power cut is simulated (the
//! bootloader's A/B rule is applied), the next user command resumes the
//! interrupted update, and the device is brought to rest. Each of those
//! resumes is also crashed at each of its own store writes (a second power
//! cut while recovering). At rest the device must boot a partition holding
//! the image its provides name, name release-1 or release-2, have run no
//! script more often than the power-loss rules allow (spec §3.8, §3.9.5),
//! and have nothing pending. Two more tests drive an update into the loop
//! limit (30 persisted transitions).
//!
//! Needs the `crash-injection` feature:
//! `cargo test --features crash-injection --test cli crash_injection -- --nocapture`
//! (`CRASH_INJECTION_TRACE=1` prints every injection point's outcome).
//!
//! Cases: `every_injection_point`, `loop_limit`. Helpers: `child` (child
//! processes), `device` (the simulated device), `lab` (scenarios and their
//! workspace).

#![cfg(feature = "crash-injection")]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

mod every_injection_point;
mod loop_limit;

// Helpers the cases share.
mod child;
mod device;
mod lab;

use child::*;
use device::*;
use lab::*;

const BIN: &str = env!("CARGO_BIN_EXE_mender-rs");
const CRASH_VAR: &str = "MENDER_RS_CRASH_AT";
const MIB: usize = 1 << 20;
/// 3.25 MiB: a few payload blocks, the last one partial.
const PAYLOAD_LEN: usize = 3 * MIB + MIB / 4;
const PARTITION_LEN: u64 = 8 << 20;
const DEVICE_TYPE: &str = "qemux86-64";
/// No single command of the simulated device takes more than a fraction of
/// a second; this only stops a hung child from hanging the suite.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of the `K` loops: far beyond the writes/blocks of any command.
const MAX_K: u32 = 256;

const ROOTFS_SCRIPTS: [&str; 3] = [
    "Download_Enter_01",
    "Download_Leave_01",
    "Download_Error_01",
];
const ACTIONS: [&str; 3] = ["Enter", "Leave", "Error"];

use crate::support::canonical_scripts::ARTIFACT_STATES;
