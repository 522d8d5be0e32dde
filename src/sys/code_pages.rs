//! Drops the page-table entries of clean file-backed code, so an idle
//! daemon's resident set shrinks (see `crate::daemon::memory`, the caller,
//! for why).
//!
//! Separate from the other system calls, and reading `/proc/self/smaps`
//! itself, because `MADV_DONTNEED` is only sound on mappings that hold no
//! private pages: on anything else (the heap, a stack) it zeroes memory
//! under the program. The only addresses given to it here are those the
//! kernel itself lists as such mappings, so no caller can pass others.

/// Largest `/proc/self/smaps` read: about 1 KiB per mapping, and the
/// daemon has some hundred mappings; a larger list is left alone (nothing
/// is released) rather than held in memory to save memory.
const MAX_SMAPS_BYTES: u64 = 1 << 20;

/// Unmaps the pages of file-backed code (`r-xp` mappings of the binary and
/// its libraries). Returns the bytes of mappings released.
///
/// Only private, read-only, executable mappings of files that hold no
/// private copies of pages (`Anonymous: 0 kB` in smaps; a library with text
/// relocations would have some) are touched: `MADV_DONTNEED` on those loses
/// nothing, the next access maps the same file page again.
pub fn release_clean_code_pages() -> usize {
    let smaps = match read_smaps() {
        Ok(text) => text,
        Err(e) => {
            log::debug!("not releasing idle pages: /proc/self/smaps: {e}");
            return 0;
        }
    };
    let mut released = 0;
    for (start, end) in clean_code_ranges(&smaps) {
        let len = end - start;
        // SAFETY: the range is a whole mapping the kernel just listed, clean
        // and private: MADV_DONTNEED only drops page-table entries.
        let done = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if done == 0 {
            released += len;
        }
    }
    released
}

/// `/proc/self/smaps`, at most [`MAX_SMAPS_BYTES`]. Read here with std
/// rather than through `crate::fsutil` so that `sys` stays a leaf module
/// (fsutil uses sys); the kernel's file needs no file-type check.
fn read_smaps() -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open("/proc/self/smaps")?
        .take(MAX_SMAPS_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SMAPS_BYTES {
        return Err(std::io::Error::other(format!(
            "more than {MAX_SMAPS_BYTES} bytes"
        )));
    }
    Ok(text)
}

/// The file code mappings of an smaps text that have no private pages.
fn clean_code_ranges(smaps: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut candidate = None;
    for line in smaps.lines() {
        if let Some(value) = line.strip_prefix("Anonymous:") {
            if let Some(range) = candidate.take()
                && value.trim() == "0 kB"
            {
                ranges.push(range);
            }
        } else if is_mapping_line(line) {
            candidate = file_code_range(line);
        }
    }
    ranges
}

/// Whether an smaps line starts a mapping (`start-end perms ...`) rather
/// than being one of its `Key: value` fields.
fn is_mapping_line(line: &str) -> bool {
    line.split_ascii_whitespace()
        .next()
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(a, b)| {
            !a.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_hexdigit())
        })
}

/// The address range of a mapping line if it maps a file's code:
/// `start-end r-xp offset dev inode /path`.
fn file_code_range(line: &str) -> Option<(usize, usize)> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let inode = fields.nth(2)?;
    let path = fields.next()?;
    if perms != "r-xp" || inode == "0" || !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_code_of_files_is_picked() {
        let code = "7f00a000-7f00c000 r-xp 00002000 fe:01 1234 /usr/lib/libc.so.6";
        assert_eq!(file_code_range(code), Some((0x7f00a000, 0x7f00c000)));
        for other in [
            "7f00c000-7f00d000 r--p 00004000 fe:01 1234 /usr/lib/libc.so.6",
            "7f00d000-7f00e000 rw-p 00005000 fe:01 1234 /usr/lib/libc.so.6",
            "7f00e000-7f00f000 r-xs 00000000 fe:01 99 /dev/shm/x",
            "7ffd000-7ffe000 r-xp 00000000 00:00 0 [vdso]",
            "55d000-55e000 rw-p 00000000 00:00 0 [heap]",
            "7f00a000-7f00c000 r-xp 00002000 fe:01 0 ",
            "garbage",
        ] {
            assert_eq!(file_code_range(other), None, "{other}");
        }
    }

    #[test]
    fn mappings_with_private_copies_are_left_alone() {
        let smaps = "\
5600a000-5600c000 r-xp 00002000 fe:01 77 /usr/bin/mender-rs
Size:                  8 kB
Anonymous:             0 kB
7f00a000-7f00c000 r-xp 00002000 fe:01 1234 /usr/lib/libtextrel.so
Size:                  8 kB
Anonymous:             4 kB
7f00c000-7f00d000 r--p 00004000 fe:01 1234 /usr/lib/libtextrel.so
Anonymous:             0 kB
";
        assert_eq!(clean_code_ranges(smaps), vec![(0x5600a000, 0x5600c000)]);
    }
}
