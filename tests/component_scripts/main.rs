//! Component tier, state scripts: `scripts` (and `retry_window`, the
//! exit-code-21 window as Mender 3.4 has it) runs the state script runner
//! and the deployment log through `mender_rs::scripts`. A binary of its own
//! because it installs the crate's own process-wide logger
//! (`mender_rs::logging`), which the deployment log cases need (see
//! `tests/component/main.rs`).

mod retry_window;
mod scripts;
