//! Tests of the Mender device-API test server (`tests/support/mender_server/`)
//! with plain HTTP requests, so the daemon tests can trust it. Device keys
//! are made and requests are signed with the `openssl` command.
//!
//! Endpoints, one module each: `authentication`, `inventory`, `next`,
//! `status_and_log`, `download`; `faults` for injected faults and HTTP
//! details. Helpers: `keys` (openssl), `http` (plain requests).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::mender_server::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

mod authentication;
mod download;
mod faults;
mod inventory;
mod next;
mod status_and_log;

// Helpers the cases share.
mod http;
mod keys;

use http::*;
use keys::*;
