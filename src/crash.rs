//! Crash injection for the power-loss tests (cargo feature `crash-injection`).
//!
//! `MENDER_RS_CRASH_AT=step:K` aborts the process right after the K-th
//! persisted step of this process; `chunk:K` right after the K-th payload
//! chunk written to an installer; `envwrite:pause` stops in the middle of
//! the next boot-environment write (part of it on disk), says so on
//! stderr and waits, for a test that cuts the power there (the QEMU
//! end-to-end test). Without the feature all are no-ops.

#[derive(Clone, Copy)]
pub enum Point {
    Step,
    Chunk,
    MenderStore,
    Rollback,
}

#[cfg(feature = "crash-injection")]
pub fn point(kind: Point) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STEPS: AtomicU64 = AtomicU64::new(0);
    static CHUNKS: AtomicU64 = AtomicU64::new(0);
    static MENDER_STORE: AtomicU64 = AtomicU64::new(0);
    static ROLLBACKS: AtomicU64 = AtomicU64::new(0);
    let Ok(spec) = std::env::var("MENDER_RS_CRASH_AT") else {
        return;
    };
    let (want_kind, k) = match spec.split_once(':') {
        Some((kind, k)) => (kind.to_string(), k.parse::<u64>().unwrap_or(0)),
        None => return,
    };
    let (name, counter) = match kind {
        Point::Step => ("step", &STEPS),
        Point::Chunk => ("chunk", &CHUNKS),
        Point::MenderStore => ("mender-store", &MENDER_STORE),
        Point::Rollback => ("rollback", &ROLLBACKS),
    };
    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
    if want_kind == name && n == k {
        eprintln!("crash injection: aborting at {name} {k}");
        std::process::abort();
    }
}

#[cfg(not(feature = "crash-injection"))]
#[inline(always)]
pub fn point(_kind: Point) {}

/// Whether the next boot-environment write should stop half-way.
#[cfg(feature = "crash-injection")]
pub fn pause_env_write() -> bool {
    std::env::var("MENDER_RS_CRASH_AT").is_ok_and(|v| v == "envwrite:pause")
}

#[cfg(not(feature = "crash-injection"))]
#[inline(always)]
pub fn pause_env_write() -> bool {
    false
}

/// Announces the half-written environment and waits for the power cut.
pub fn env_write_paused(what: &str) {
    eprintln!("crash injection: environment write paused half-way ({what})");
    std::thread::sleep(std::time::Duration::from_secs(600));
}
