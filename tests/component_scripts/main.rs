//! Component tier, state scripts: `scripts` runs the state script runner
//! and the deployment log through `mender_rs::scripts`. A binary of its own
//! because it installs the crate's own process-wide logger
//! (`mender_rs::logging`), which the deployment log cases need (see
//! `tests/component/main.rs`).

mod scripts;
