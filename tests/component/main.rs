//! Component tier: the library (`mender_rs::…`) called directly, each
//! component against an outside oracle where one exists (`grub-editenv`,
//! libubootenv, `openssl`, Debian's Update Modules). No daemon, no Mender server;
//! at most one `mender-rs` run where a library error must reach the CLI.
//!
//! * `addon_forwarder` (feature `dbus`): the add-on forwarder against TLS
//!   and WebSocket servers on loopback.
//! * `bootenv_grub`, `bootenv_tools`, `bootenv_uboot`: the boot environment
//!   backends.
//! * `config`: `mender.conf` files, precedence, syntax and errors.
//! * `device_key`: the device key against OpenSSL.
//! * `device_key_encrypted`: passphrase-protected device keys made by OpenSSL.
//! * `identity`: identity and inventory scripts.
//! * `malformed`: the artifact reader against malformed input.
//! * `signature_openssl`: artifact signatures against OpenSSL.
//!
//! The Update Module runner (`tests/component_modules`) and the state script
//! runner (`tests/component_scripts`) are component tests too, in binaries of
//! their own: each installs the process-wide `log` logger its cases read
//! (as `config` does here), and a process has only one.

#[path = "../support/mod.rs"]
#[allow(dead_code)] // each tier uses part of the shared helpers
mod support;

mod addon_forwarder;
mod bootenv_grub;
mod bootenv_tools;
mod bootenv_uboot;
mod config;
mod device_key;
#[cfg(feature = "encrypted-keys")]
mod device_key_encrypted;
mod identity;
mod malformed;
mod signature_openssl;
