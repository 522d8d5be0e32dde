//! Gives memory back before the daemon sleeps between polls.
//!
//! An idle daemon touches little code per poll, but the kernel's fault-around
//! maps every cached page in a 64 KiB window around each page touched: after
//! start-up (key handling, authentication, inventory) most of the binary's
//! and libc's code stays mapped, several MiB of resident set for code that
//! the next poll will not run. Dropping the mappings of code pages before
//! sleeping leaves only what a poll needs to fault back in (from the page
//! cache, no I/O). The pages stay in the page cache and shared with other
//! processes; only our page tables let go of them. The system calls live in
//! `crate::sys::code_pages`.

use crate::sys;

/// Unmaps the pages of file-backed code (the binary's and its libraries',
/// those without private copies: see [`sys::code_pages`]) and returns free
/// heap memory to the kernel. Returns the bytes of mappings released.
pub fn release_idle_pages() -> usize {
    let released = sys::code_pages::release_clean_code_pages();
    sys::malloc_trim();
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_still_runs_after_its_pages_are_released() {
        // The test binary's own code, libc and the test harness lose their
        // mappings; everything after this line runs from refaulted pages.
        let released = release_idle_pages();
        assert!(released > 0, "nothing released");
        let v: Vec<u64> = (0..1000).map(|i| i * i).collect();
        assert_eq!(v.iter().sum::<u64>(), 332_833_500);
        assert!(release_idle_pages() > 0);
    }
}
