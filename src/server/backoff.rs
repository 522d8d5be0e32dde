//! The retry back-off of the Mender clients (`docs/managed-mode.md`): a base of one
//! minute, each interval used for three attempts and then doubled, capped at
//! the configured maximum.
//!
//! Where Mender 3.x raises a maximum below one minute to one minute, we
//! follow the 4.x client and use such a maximum as a fixed interval: a
//! device (or a test) that asks for quick retries gets them.

use std::time::Duration;

const BASE: Duration = Duration::from_secs(60);
const ATTEMPTS_PER_INTERVAL: u32 = 3;

/// The wait before retry number `attempt` (0 for the first retry), or
/// `None` when the retries are exhausted.
///
/// `max_count` > 0 bounds the number of retries (staying at `max_interval`
/// as long as needed); 0 means automatic: retries stop after the third at
/// `max_interval`.
pub fn backoff(attempt: u32, max_interval: Duration, max_count: u32) -> Option<Duration> {
    if max_count > 0 && attempt >= max_count {
        return None;
    }
    if max_interval < BASE {
        // Fixed interval; automatic count: three tries.
        if max_count == 0 && attempt >= ATTEMPTS_PER_INTERVAL {
            return None;
        }
        return Some(max_interval);
    }
    let doublings = attempt / ATTEMPTS_PER_INTERVAL;
    let mut interval = BASE;
    for _ in 0..doublings {
        if interval >= max_interval {
            break;
        }
        interval = interval.saturating_mul(2);
    }
    if interval >= max_interval {
        interval = max_interval;
        if max_count == 0 {
            // Attempts already made at the maximum interval.
            let first_at_max = first_attempt_at(max_interval);
            if attempt >= first_at_max + ATTEMPTS_PER_INTERVAL {
                return None;
            }
        }
    }
    Some(interval)
}

/// The first attempt whose interval is the maximum.
fn first_attempt_at(max_interval: Duration) -> u32 {
    let mut interval = BASE;
    let mut attempt = 0;
    while interval < max_interval {
        interval = interval.saturating_mul(2);
        attempt += ATTEMPTS_PER_INTERVAL;
    }
    attempt
}

/// How many times a final status report is tried (`docs/managed-mode.md`): `1 + m`
/// with `n = floor(update_poll / retry_poll)`, `m = 3` when `n <= 3` (or no
/// retry interval), else `min(2n, 10)`.
pub fn status_report_tries(update_poll: Duration, retry_poll: Duration) -> u32 {
    let retry = retry_poll.as_secs();
    if retry == 0 {
        return 4;
    }
    let n = update_poll.as_secs() / retry;
    let m = if n <= 3 { 3 } else { (2 * n).min(10) as u32 };
    1 + m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn series(max: u64, count: u32) -> Vec<u64> {
        (0..100)
            .map_while(|a| backoff(a, secs(max), count))
            .map(|d| d.as_secs())
            .collect()
    }

    #[test]
    fn doubles_every_three_attempts_up_to_the_maximum() {
        assert_eq!(
            series(300, 0),
            vec![60, 60, 60, 120, 120, 120, 240, 240, 240, 300, 300, 300]
        );
        assert_eq!(series(60, 0), vec![60, 60, 60]);
        assert_eq!(series(120, 0), vec![60, 60, 60, 120, 120, 120]);
    }

    #[test]
    fn a_count_bounds_the_attempts_and_stays_at_the_maximum() {
        assert_eq!(series(120, 8), vec![60, 60, 60, 120, 120, 120, 120, 120]);
        assert_eq!(series(300, 2), vec![60, 60]);
    }

    #[test]
    fn a_maximum_below_a_minute_is_a_fixed_interval() {
        assert_eq!(series(1, 0), vec![1, 1, 1]);
        assert_eq!(series(2, 5), vec![2, 2, 2, 2, 2]);
    }

    #[test]
    fn status_report_tries_follow_the_reference() {
        assert_eq!(status_report_tries(secs(1800), secs(300)), 11);
        assert_eq!(status_report_tries(secs(5), secs(5)), 4);
        assert_eq!(status_report_tries(secs(20), secs(5)), 9);
        assert_eq!(status_report_tries(secs(5), secs(0)), 4);
    }
}
