//! SHA-256 of payload files on a second thread, so that hashing overlaps
//! with decompressing and writing on the reader's thread. Chunks travel in a
//! small ring of reused buffers, which bounds memory.

use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use super::manifest::Digest;

/// Buffers in flight: one being filled, one being hashed, one spare.
const BUFFERS: usize = 3;

pub struct BackgroundHasher {
    chunk: usize,
    work: Option<SyncSender<(Vec<u8>, usize)>>,
    returned: Option<Receiver<Vec<u8>>>,
    thread: Option<JoinHandle<Digest>>,
    /// Used when no thread could be started.
    inline: Option<Sha256>,
    spare: Vec<Vec<u8>>,
    allocated: usize,
}

impl BackgroundHasher {
    pub fn new(chunk: usize) -> Self {
        let (work_tx, work_rx) = sync_channel::<(Vec<u8>, usize)>(BUFFERS);
        let (back_tx, back_rx) = channel::<Vec<u8>>();
        let spawned = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for (buf, len) in work_rx {
                    hasher.update(&buf[..len]);
                    // The reader may be gone (error path): nothing to do then.
                    let _ = back_tx.send(buf);
                }
                hasher.finalize().into()
            });
        match spawned {
            Ok(thread) => BackgroundHasher {
                chunk,
                work: Some(work_tx),
                returned: Some(back_rx),
                thread: Some(thread),
                inline: None,
                spare: Vec::new(),
                allocated: 0,
            },
            Err(e) => {
                log::debug!("hashing inline: no thread ({e})");
                BackgroundHasher {
                    chunk,
                    work: None,
                    returned: None,
                    thread: None,
                    inline: Some(Sha256::new()),
                    spare: Vec::new(),
                    allocated: 0,
                }
            }
        }
    }

    /// A buffer of `chunk` bytes to read into.
    pub fn buffer(&mut self) -> Vec<u8> {
        if let Some(buf) = self.spare.pop() {
            return buf;
        }
        if let Some(returned) = &self.returned {
            if let Ok(buf) = returned.try_recv() {
                return buf;
            }
            if self.allocated >= BUFFERS
                && let Ok(buf) = returned.recv()
            {
                return buf;
            }
        }
        self.allocated += 1;
        vec![0u8; self.chunk]
    }

    /// Hands `buf[..len]` to the hash; the buffer comes back for reuse.
    pub fn submit(&mut self, buf: Vec<u8>, len: usize) {
        if let Some(hasher) = &mut self.inline {
            hasher.update(&buf[..len]);
            self.spare.push(buf);
            return;
        }
        if let Some(work) = &self.work
            && let Err(e) = work.send((buf, len))
        {
            // The thread is gone (it cannot fail on its own; be safe):
            // finish() will notice and report no digest.
            self.spare.push(e.0.0);
        }
    }

    /// Returns a buffer that was not used.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.spare.push(buf);
    }

    /// The digest of everything submitted; None if the hashing thread died.
    pub fn finish(mut self) -> Option<Digest> {
        if let Some(hasher) = self.inline.take() {
            return Some(hasher.finalize().into());
        }
        self.work = None;
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for BackgroundHasher {
    fn drop(&mut self) {
        // Closing the channel ends the thread; wait for it so no thread
        // outlives the read.
        self.work = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_hash_across_buffer_reuse() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = BackgroundHasher::new(4096);
        for chunk in data.chunks(4000) {
            let mut buf = h.buffer();
            buf[..chunk.len()].copy_from_slice(chunk);
            h.submit(buf, chunk.len());
        }
        let expected: Digest = Sha256::digest(&data).into();
        assert_eq!(h.finish(), Some(expected));
    }

    #[test]
    fn dropping_midway_ends_the_thread() {
        let mut h = BackgroundHasher::new(16);
        let buf = h.buffer();
        h.submit(buf, 16);
        drop(h);
    }
}
