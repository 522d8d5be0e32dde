//! The server's shared state behind one mutex, and its bookkeeping of
//! requests and violations.

use super::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

pub(super) struct Deployment {
    pub(super) id: String,
    pub(super) artifact_id: String,
    pub(super) artifact_name: String,
    pub(super) device_types: Vec<String>,
    pub(super) artifact: Arc<[u8]>,
    pub(super) devices: Option<Vec<String>>,
    pub(super) forced: bool,
    pub(super) aborted: bool,
    pub(super) control_map: Option<Value>,
}

#[derive(Clone, Copy)]
pub(super) enum Cut {
    /// Close after this many body bytes of the response.
    After(u64),
    /// Close when this artifact offset is reached.
    At(u64),
}

#[derive(Default)]
pub(super) struct Faults {
    pub(super) fail_next: HashMap<Endpoint, VecDeque<u16>>,
    pub(super) fail_always: HashMap<Endpoint, u16>,
    pub(super) delay_all: Duration,
    pub(super) delay: HashMap<Endpoint, Duration>,
    pub(super) cuts: VecDeque<Cut>,
    pub(super) ignore_range: bool,
    pub(super) throttle: Option<u64>,
    /// Each download link takes this many requests, then answers 403.
    pub(super) link_uses: Option<u32>,
    pub(super) link_requests: HashMap<String, u32>,
    pub(super) inventory_put_405: bool,
    pub(super) next_v2: bool,
    pub(super) next_v1_post_404: bool,
    pub(super) replace_next: HashMap<Endpoint, VecDeque<HostileReply>>,
    pub(super) replace_always: HashMap<Endpoint, HostileReply>,
}

pub(super) struct State {
    pub(super) devices: BTreeMap<String, DeviceInfo>,
    pub(super) preset_auth: HashMap<String, AuthStatus>,
    pub(super) default_auth: AuthStatus,
    pub(super) tenant_token: Option<String>,
    pub(super) tokens: HashMap<String, String>,
    pub(super) deployments: Vec<Deployment>,
    pub(super) faults: Faults,
    pub(super) log: VecDeque<RequestRecord>,
    pub(super) log_limit: usize,
    pub(super) total_requests: u64,
    pub(super) per_endpoint: BTreeMap<Endpoint, u64>,
    pub(super) per_minute: Vec<u64>,
    pub(super) violations: Vec<Violation>,
    pub(super) downloads: Vec<DownloadRecord>,
    pub(super) seq: u64,
    pub(super) deviceconnect: DeviceConnectState,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) shutdown: AtomicBool,
    pub(super) started: Instant,
    pub(super) started_at: SystemTime,
    pub(super) url: String,
    pub(super) secret: String,
    pub(super) request_ids: AtomicU64,
    pub(super) conns: Mutex<Vec<(JoinHandle<()>, Option<TcpStream>)>>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Sleeps `d` (capped) in small steps; returns early on shutdown.
    pub(super) fn sleep(&self, d: Duration) {
        let end = Instant::now() + d.min(MAX_DELAY);
        while !self.stopping() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            thread::sleep((end - now).min(Duration::from_millis(20)));
        }
    }
}

impl State {
    pub(super) fn violation(
        &mut self,
        device: Option<&str>,
        method: &str,
        path: &str,
        problem: String,
    ) {
        self.violations.push(Violation {
            at: SystemTime::now(),
            device: device.map(str::to_owned),
            method: method.to_owned(),
            path: path.to_owned(),
            problem,
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record(
        &mut self,
        shared: &Shared,
        id: u64,
        device: Option<&str>,
        method: &str,
        path: &str,
        endpoint: Endpoint,
        status: u16,
        bytes_sent: u64,
    ) {
        let elapsed = shared.started.elapsed();
        self.total_requests += 1;
        *self.per_endpoint.entry(endpoint).or_insert(0) += 1;
        let minute = (elapsed.as_secs() / 60) as usize;
        if self.per_minute.len() <= minute {
            self.per_minute.resize(minute + 1, 0);
        }
        self.per_minute[minute] += 1;
        if let Some(d) = device.and_then(|d| self.devices.get_mut(d)) {
            d.requests += 1;
        }
        if self.log_limit > 0 {
            while self.log.len() >= self.log_limit {
                self.log.pop_front();
            }
            self.log.push_back(RequestRecord {
                id,
                at: SystemTime::now(),
                elapsed,
                device: device.map(str::to_owned),
                method: method.to_owned(),
                path: path.to_owned(),
                endpoint,
                status,
                bytes_sent,
            });
        }
    }
}
