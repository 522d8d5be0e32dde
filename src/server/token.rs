//! The device's JWT, shared between the daemon loop (which authenticates)
//! and the D-Bus thread (`GetJwtToken`, `FetchJwtToken`, the
//! `JwtTokenStateChange` signal; see `crate::daemon::dbus`). It lives with
//! the server client, which owns the token; the daemon and its D-Bus thread
//! use it from above, so the server never imports from the daemon.
//!
//! [`ServerClient`] publishes every change of its token here: a new token
//! after an authentication (announced even when it is the same string, and
//! as empty strings when the authentication failed: the signal is the
//! answer to `FetchJwtToken`), and the loss of the token (dropped before a
//! commit, or refused by the server). The D-Bus thread sleeps in `poll` on
//! the cell's pipe and on its bus connection, so a change is announced at
//! once and an idle daemon costs no wake-ups.
//!
//! The add-on forwarder (`crate::daemon::forwarder`) follows the token too,
//! to know where requests go: it has a pipe of its own
//! ([`TokenCell::subscribe`]).
//!
//! `FetchJwtToken` sets a request flag and the D-Bus thread wakes the
//! daemon's wait (`crate::daemon::signals::wake`); the daemon serves it with
//! [`serve_fetch_request`] when it is idle or paused by an update control
//! map (a running download or install finishes its step first).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use super::ServerClient;

/// A token and the URL of the server that issued it.
pub type Token = (String, String);

#[derive(Default)]
struct State {
    token: Option<Token>,
    /// Bumped at every announcement.
    generation: u64,
    /// `FetchJwtToken` asked for an authentication.
    fetch: bool,
}

struct Inner {
    state: Mutex<State>,
    wake_read: File,
    wake_write: File,
    /// The write ends of the [`TokenWatch`]es handed out.
    watchers: Mutex<Vec<File>>,
}

/// The shared token (cheap to clone: one allocation behind an `Arc`).
#[derive(Clone)]
pub struct TokenCell {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the token.
        f.write_str("TokenCell")
    }
}

impl TokenCell {
    /// An empty cell with its wake-up pipe.
    pub fn new() -> io::Result<TokenCell> {
        let (wake_read, wake_write) = crate::sys::pipe_nonblocking()?;
        Ok(TokenCell {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                wake_read,
                wake_write,
                watchers: Mutex::new(Vec::new()),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves a usable state (plain data).
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_watcher(&self) {
        // A full pipe means a wake-up is pending already.
        let _ = (&self.inner.wake_write).write(&[1]);
        let watchers = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for w in watchers.iter() {
            let _ = (&*w).write(&[1]);
        }
    }

    /// A wake-up pipe of its own for another thread that follows the
    /// token (the add-on forwarder, `crate::daemon::forwarder`): readable
    /// after every change.
    pub fn subscribe(&self) -> io::Result<TokenWatch> {
        let (read, write) = crate::sys::pipe_nonblocking()?;
        self.inner
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(write);
        Ok(TokenWatch { read })
    }

    /// The current token and its server.
    pub fn get(&self) -> Option<Token> {
        self.lock().token.clone()
    }

    /// Sets the token. `announce`: announce it even when it did not
    /// change (the result of an authentication); otherwise only a change
    /// is announced.
    pub fn publish(&self, token: Option<(&str, &str)>, announce: bool) {
        let token = token.map(|(jwt, url)| (jwt.to_string(), url.to_string()));
        let mut state = self.lock();
        if !announce && state.token == token {
            return;
        }
        state.token = token;
        state.generation += 1;
        drop(state);
        self.wake_watcher();
    }

    /// The token when it was announced since `seen` (which is updated).
    pub fn announced_since(&self, seen: &mut u64) -> Option<Option<Token>> {
        let state = self.lock();
        if state.generation == *seen {
            return None;
        }
        *seen = state.generation;
        Some(state.token.clone())
    }

    /// `FetchJwtToken`: asks the daemon to authenticate (requests made
    /// before it gets to it merge into one). The caller then wakes the
    /// daemon's wait.
    pub fn request_fetch(&self) {
        self.lock().fetch = true;
    }

    /// Takes the pending fetch request, if any.
    pub fn take_fetch_request(&self) -> bool {
        std::mem::take(&mut self.lock().fetch)
    }

    /// The descriptor that becomes readable when something was announced.
    pub fn watch_fd(&self) -> RawFd {
        self.inner.wake_read.as_raw_fd()
    }

    /// Empties the wake-up pipe (before looking at the cell).
    pub fn drain(&self) {
        drain(&self.inner.wake_read);
    }
}

fn drain(mut pipe: &File) {
    let mut buf = [0u8; 64];
    while matches!(pipe.read(&mut buf), Ok(n) if n > 0) {}
}

/// See [`TokenCell::subscribe`].
pub struct TokenWatch {
    read: File,
}

impl TokenWatch {
    /// The descriptor that becomes readable when the token changed.
    pub fn watch_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Empties the pipe (before looking at the cell).
    pub fn drain(&self) {
        drain(&self.read);
    }
}

/// Serves a pending `FetchJwtToken`: authenticates again (the client
/// announces the outcome). Called by the daemon when it is idle or paused.
pub fn serve_fetch_request(client: &mut ServerClient) {
    if !client
        .token_cell()
        .is_some_and(TokenCell::take_fetch_request)
    {
        return;
    }
    log::info!("authentication requested over D-Bus");
    if let Err(e) = client.authenticate() {
        log::warn!("authentication requested over D-Bus: {e}");
        // The caller waits for an answer: one signal, with no token.
        if let Some(cell) = client.token_cell() {
            cell.publish(None, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_announced_once_and_fetches_merge() {
        let cell = TokenCell::new().unwrap();
        let mut seen = 0;
        assert_eq!(cell.announced_since(&mut seen), None);
        cell.publish(Some(("jwt", "https://s")), false);
        assert_eq!(
            cell.announced_since(&mut seen),
            Some(Some(("jwt".into(), "https://s".into())))
        );
        assert_eq!(cell.announced_since(&mut seen), None);
        // Unchanged: silent, unless it is an authentication's result.
        cell.publish(Some(("jwt", "https://s")), false);
        assert_eq!(cell.announced_since(&mut seen), None);
        cell.publish(Some(("jwt", "https://s")), true);
        assert!(cell.announced_since(&mut seen).is_some());
        cell.publish(None, false);
        assert_eq!(cell.announced_since(&mut seen), Some(None));
        assert_eq!(cell.get(), None);
        cell.drain();
        // A subscriber is woken by every announcement.
        let watch = cell.subscribe().unwrap();
        let readable = |fd| {
            let mut fds = [libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            crate::sys::poll(&mut fds, 0).unwrap() == 1
        };
        assert!(!readable(watch.watch_fd()));
        cell.publish(Some(("jwt2", "https://t")), false);
        assert!(readable(watch.watch_fd()) && readable(cell.watch_fd()));
        watch.drain();
        assert!(!readable(watch.watch_fd()));
        assert!(!cell.take_fetch_request());
        cell.request_fetch();
        cell.request_fetch();
        assert!(cell.take_fetch_request());
        assert!(!cell.take_fetch_request());
    }
}
