//! A loopback HTTP file server for adaptive installs: it serves one file,
//! honours single `Range: bytes=a-b` / `bytes=a-` requests (206 with
//! `Content-Range`), counts the body bytes it sends, and can misbehave on
//! purpose: ignore ranges from the start or from the n-th request on,
//! expire its link after n requests (403), or cut the connection of one
//! request part-way.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Served {
    pub range: Option<String>,
    pub status: u16,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer 200 with the whole file to every request.
    pub no_ranges: bool,
    /// From this request on (0-based), ignore `Range` (200, whole file).
    pub ranges_until: Option<usize>,
    /// From this request on, answer 403 (an expired link) unless the path
    /// is `fresh_path`.
    pub expire_after: Option<usize>,
    /// Cut the connection of this request after this many body bytes.
    pub cut: Option<(usize, u64)>,
}

struct State {
    data: Arc<Vec<u8>>,
    faults: Faults,
    served: Vec<Served>,
}

pub struct RangeServer {
    pub url: String,
    /// A second path to the same file that never expires (the "renewed"
    /// link).
    pub fresh_url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

const PATH: &str = "/artifact.mender";
const FRESH_PATH: &str = "/fresh/artifact.mender";

impl RangeServer {
    pub fn start(data: Vec<u8>, faults: Faults) -> RangeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State {
            data: Arc::new(data),
            faults,
            served: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let st = st.clone();
                thread::spawn(move || serve(stream, &st));
            }
        });
        RangeServer {
            url: format!("http://{addr}{PATH}"),
            fresh_url: format!("http://{addr}{FRESH_PATH}"),
            state,
            stop,
            addr,
        }
    }

    pub fn served(&self) -> Vec<Served> {
        self.state.lock().unwrap().served.clone()
    }

    /// Body bytes sent over every request.
    pub fn bytes_sent(&self) -> u64 {
        self.served().iter().map(|s| s.bytes).sum()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }
}

impl Drop for RangeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 << 10 {
            return;
        }
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .to_string();
    let range = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("range")
            .then(|| v.trim().to_string())
    });
    let (data, n, faults) = {
        let st = state.lock().unwrap();
        (st.data.clone(), st.served.len(), st.faults.clone())
    };
    let total = data.len() as u64;
    let expired = path != FRESH_PATH && faults.expire_after.is_some_and(|k| n >= k);
    let ranges = !faults.no_ranges && faults.ranges_until.is_none_or(|k| n < k);
    let (status, start, end) = if path != PATH && path != FRESH_PATH {
        (404, 0, 0)
    } else if expired {
        (403, 0, 0)
    } else {
        match range
            .as_deref()
            .and_then(|r| parse(r, total))
            .filter(|_| ranges)
        {
            Some((s, e)) => (206, s, e),
            None => (200, 0, total),
        }
    };
    let mut reply = match status {
        206 => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{total}\r\n",
            end - 1
        ),
        200 => "HTTP/1.1 200 OK\r\nAccept-Ranges: bytes\r\n".to_string(),
        403 => "HTTP/1.1 403 Forbidden\r\n".to_string(),
        _ => "HTTP/1.1 404 Not Found\r\n".to_string(),
    };
    reply.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        end - start
    ));
    let cut = faults.cut.filter(|(k, _)| *k == n).map(|(_, at)| at);
    let body_end = cut.map_or(end, |at| (start + at).min(end));
    let mut sent = 0u64;
    if stream.write_all(reply.as_bytes()).is_ok() {
        let body = &data[start as usize..body_end as usize];
        for piece in body.chunks(64 << 10) {
            if stream.write_all(piece).is_err() {
                break;
            }
            sent += piece.len() as u64;
        }
    }
    state.lock().unwrap().served.push(Served {
        range,
        status,
        bytes: sent,
    });
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// `bytes=a-b` or `bytes=a-` within `total`: (start, end exclusive).
fn parse(header: &str, total: u64) -> Option<(u64, u64)> {
    let spec = header.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        total
    } else {
        (b.parse::<u64>().ok()? + 1).min(total)
    };
    (start < end).then_some((start, end))
}
