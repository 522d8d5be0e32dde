//! Download progress on stderr: a live line on a terminal (bytes, rate,
//! time left), plain periodic lines otherwise.

use std::io::{self, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

pub struct ProgressReader<R> {
    inner: R,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_print: Instant,
    terminal: bool,
    last_percent: u64,
}

impl<R: Read> ProgressReader<R> {
    pub fn new(inner: R, total: Option<u64>) -> Self {
        let now = Instant::now();
        ProgressReader {
            inner,
            total,
            done: 0,
            started: now,
            last_print: now,
            terminal: io::stderr().is_terminal(),
            last_percent: 0,
        }
    }

    fn report(&mut self, finished: bool) {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / elapsed;
        let mib = |b: f64| b / (1024.0 * 1024.0);
        let mut line = format!("{:.1} MiB", mib(self.done as f64));
        if let Some(total) = self.total {
            line.push_str(&format!(" of {:.1} MiB", mib(total as f64)));
        }
        line.push_str(&format!(", {:.1} MiB/s", mib(rate)));
        if let Some(total) = self.total
            && !finished
            && rate > 0.0
        {
            let left = total.saturating_sub(self.done) as f64 / rate;
            line.push_str(&format!(", {:.0} s left", left));
        }
        let mut err = io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[K{line}");
            if finished {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "progress: {line}");
        }
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        let now = Instant::now();
        if n == 0 {
            if self.done > 0 && self.last_percent != 100 {
                self.last_percent = 100;
                self.report(true);
            }
            return Ok(0);
        }
        if self.terminal {
            if now.duration_since(self.last_print) >= Duration::from_millis(200) {
                self.last_print = now;
                self.report(false);
            }
        } else {
            // A line per 10 % (or per 10 s when the size is unknown).
            let due = match self.total {
                Some(t) if t > 0 => {
                    let pct = self.done * 100 / t;
                    let step = pct / 10 * 10;
                    if step > self.last_percent && step < 100 {
                        self.last_percent = step;
                        true
                    } else {
                        false
                    }
                }
                _ => now.duration_since(self.last_print) >= Duration::from_secs(10),
            };
            if due {
                self.last_print = now;
                self.report(false);
            }
        }
        Ok(n)
    }
}
