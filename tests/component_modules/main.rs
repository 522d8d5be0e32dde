//! Component tier, Update Module runner: `modules` runs Debian's Update
//! Modules and small shell modules through `mender_rs::modules`,
//! `file_sizes` the protocol 4.0 download through the module installer. A
//! binary of its own because it installs the process-wide `log` logger
//! whose records its cases check (see `tests/component/main.rs`).

mod file_sizes;
mod modules;
