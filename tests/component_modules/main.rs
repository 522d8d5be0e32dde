//! Component tier, Update Module runner: `modules` runs Debian's Update
//! Modules and small shell modules through `mender_rs::modules`. A binary of
//! its own because it installs the process-wide `log` logger whose records
//! its cases check (see `tests/component/main.rs`).

mod modules;
