//! A loopback HTTP proxy for the tests of `http_proxy`/`https_proxy`
//! (`tests/cli/proxy.rs`, `tests/component/addon_forwarder.rs`): it
//! understands CONNECT only, to 127.0.0.1 targets only, and records each
//! tunnel; or it refuses every CONNECT with a given answer (a proxy that
//! wants credentials, or forbids the target).

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Connections a test proxy serves at most (a runaway client fails the
/// test instead of spinning).
const MAX_CONNECTIONS: usize = 200;

/// The tunnels a proxy opened: target and `Proxy-Authorization` header.
type Tunnels = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A loopback CONNECT proxy (see the module comment).
pub struct ConnectProxy {
    port: u16,
    tunnels: Tunnels,
    refused: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ConnectProxy {
    /// A proxy that opens tunnels to 127.0.0.1.
    pub fn start() -> ConnectProxy {
        Self::serve(None)
    }

    /// A proxy that answers every request with `answer` (a status line,
    /// e.g. `407 Proxy Authentication Required`) and records its request
    /// line as refused.
    pub fn refusing(answer: &'static str) -> ConnectProxy {
        Self::serve(Some(answer))
    }

    fn serve(refusal: Option<&'static str>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, r, s) = (tunnels.clone(), refused.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming().take(MAX_CONNECTIONS) {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (t, r) = (t.clone(), r.clone());
                thread::spawn(move || tunnel(conn, &t, &r, refusal));
            }
        });
        ConnectProxy {
            port,
            tunnels,
            refused,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The tunnels opened so far: (target, `Proxy-Authorization`).
    pub fn tunnels(&self) -> Vec<(String, Option<String>)> {
        self.tunnels.lock().unwrap().clone()
    }

    /// The request lines refused so far.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads a request head (bounded to 16 KiB); returns its lines.
pub fn read_head(reader: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).ok()?;
        total += n;
        if n == 0 || total > 16 << 10 {
            return None;
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            return Some(lines);
        }
        lines.push(line);
    }
}

fn tunnel(conn: TcpStream, tunnels: &Tunnels, refused: &Mutex<Vec<String>>, refusal: Option<&str>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let Some(head) = read_head(&mut reader) else {
        return;
    };
    let mut client = conn;
    let mut words = head[0].split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if let Some(answer) = refusal {
        refused.lock().unwrap().push(head[0].clone());
        let _ =
            client.write_all(format!("HTTP/1.1 {answer}\r\nContent-Length: 0\r\n\r\n").as_bytes());
        return;
    }
    if method != "CONNECT" || !target.starts_with("127.0.0.1:") {
        refused.lock().unwrap().push(head[0].clone());
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let auth = head
        .iter()
        .find_map(|l| l.strip_prefix("Proxy-Authorization: ").map(str::to_string));
    tunnels.lock().unwrap().push((target.to_string(), auth));
    let Ok(upstream) = TcpStream::connect(target) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    // Bytes the client sent after the head are in the reader's buffer.
    let buffered = reader.buffer().to_vec();
    let mut to_upstream = upstream.try_clone().unwrap();
    let mut from_upstream = upstream;
    let up = thread::spawn(move || {
        let _ = to_upstream.write_all(&buffered);
        let _ = std::io::copy(&mut reader, &mut to_upstream);
        let _ = to_upstream.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut from_upstream, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = up.join();
}
