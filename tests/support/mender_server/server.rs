//! [`MenderServer`]: start, the set-up and fault-injection calls tests make,
//! the observation calls, and the accept loop.

use super::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// The test server; stops (and joins its threads, bounded) when dropped.
pub struct MenderServer {
    pub(super) shared: Arc<Shared>,
    pub(super) addr: SocketAddr,
    pub(super) accept: Option<JoinHandle<()>>,
}

impl MenderServer {
    /// Binds `127.0.0.1:0` and starts accepting.
    pub fn start() -> MenderServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let mut secret = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .expect("random secret");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                devices: BTreeMap::new(),
                preset_auth: HashMap::new(),
                default_auth: AuthStatus::Accepted,
                tenant_token: None,
                tokens: HashMap::new(),
                deployments: Vec::new(),
                faults: Faults::default(),
                log: VecDeque::new(),
                log_limit: 200_000,
                total_requests: 0,
                per_endpoint: BTreeMap::new(),
                per_minute: Vec::new(),
                violations: Vec::new(),
                downloads: Vec::new(),
                seq: 0,
                deviceconnect: DeviceConnectState::default(),
            }),
            shutdown: AtomicBool::new(false),
            started: Instant::now(),
            started_at: SystemTime::now(),
            url: format!("http://{addr}"),
            secret: hex(&secret),
            request_ids: AtomicU64::new(1),
            conns: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        let accept = thread::Builder::new()
            .name("mender-server-accept".into())
            .spawn(move || accept_loop(accept_shared, listener))
            .expect("spawning the accept thread");
        MenderServer {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:<port>` (no trailing slash): the `ServerURL`.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    // -- authorisation ------------------------------------------------------

    /// Status given to devices on first contact (initially `Accepted`).
    pub fn set_default_auth(&self, status: AuthStatus) {
        self.lock().default_auth = status;
    }

    /// Sets a device's status; works before the device first appears.
    /// `Rejected` and `Pending` revoke its tokens.
    pub fn set_auth_status(&self, device: &str, status: AuthStatus) {
        let mut st = self.lock();
        st.preset_auth.insert(device.to_owned(), status);
        if let Some(d) = st.devices.get_mut(device) {
            d.auth_status = status;
        }
        if status != AuthStatus::Accepted {
            st.tokens.retain(|_, d| d != device);
        }
    }

    pub fn accept_device(&self, device: &str) {
        self.set_auth_status(device, AuthStatus::Accepted);
    }

    pub fn reject_device(&self, device: &str) {
        self.set_auth_status(device, AuthStatus::Rejected);
    }

    /// Auth requests must carry this `tenant_token` (else 401); None: any.
    pub fn require_tenant_token(&self, token: Option<&str>) {
        self.lock().tenant_token = token.map(str::to_owned);
    }

    /// Forgets every issued token: the next authenticated call gets 401.
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn expire_token_of(&self, device: &str) {
        self.lock().tokens.retain(|_, d| d != device);
    }

    /// Number of valid tokens.
    pub fn token_count(&self) -> usize {
        self.lock().tokens.len()
    }

    /// Whether the server currently accepts `token`.
    pub fn token_is_valid(&self, token: &str) -> bool {
        self.lock().tokens.contains_key(token)
    }

    /// A token the server currently accepts for `device` (any of them).
    pub fn token_of(&self, device: &str) -> Option<String> {
        let st = self.lock();
        st.tokens
            .iter()
            .find(|(_, d)| *d == device)
            .map(|(t, _)| t.clone())
    }

    // -- deployments --------------------------------------------------------

    /// A deployment of the artifact file for every device; returns its id.
    pub fn add_deployment(
        &self,
        artifact_path: impl AsRef<Path>,
        artifact_name: &str,
        device_types: &[&str],
    ) -> String {
        self.create_deployment(NewDeployment::from_file(
            artifact_path,
            artifact_name,
            device_types,
        ))
    }

    pub fn add_deployment_bytes(
        &self,
        artifact: impl Into<Vec<u8>>,
        artifact_name: &str,
        device_types: &[&str],
    ) -> String {
        self.create_deployment(NewDeployment::from_bytes(
            artifact,
            artifact_name,
            device_types,
        ))
    }

    pub fn create_deployment(&self, new: NewDeployment) -> String {
        let mut st = self.lock();
        st.seq += 1;
        let id = uuid_like(&self.shared.secret, "deployment", st.seq);
        let artifact_id = uuid_like(&self.shared.secret, "artifact", st.seq);
        st.deployments.push(Deployment {
            id: id.clone(),
            artifact_id,
            artifact_name: new.artifact_name,
            device_types: new.device_types,
            artifact: new.artifact,
            devices: new.devices,
            forced: new.forced,
            control_map: new.control_map,
            aborted: false,
        });
        id
    }

    /// Aborts for every device: unfinished device deployments become
    /// `aborted` (status reports get 409) and `next` no longer offers it.
    /// Sets (or with None removes) the update control map of a deployment;
    /// `{id}` in the map's `"id"` string is replaced by the deployment id.
    pub fn set_control_map(&self, deployment: &str, map: Option<Value>) {
        let mut st = self.lock();
        if let Some(dep) = st.deployments.iter_mut().find(|d| d.id == deployment) {
            dep.control_map = map.map(|mut m| {
                if m.get("id").and_then(Value::as_str) == Some("{id}") {
                    m["id"] = Value::String(deployment.to_owned());
                }
                m
            });
        }
    }

    pub fn abort_deployment(&self, deployment: &str) {
        let mut st = self.lock();
        let State {
            deployments,
            devices,
            ..
        } = &mut *st;
        if let Some(dep) = deployments.iter_mut().find(|d| d.id == deployment) {
            dep.aborted = true;
        }
        for dev in devices.values_mut() {
            for dd in &mut dev.deployments {
                if dd.deployment_id == deployment && !is_finished(&dd.status) {
                    dd.status = "aborted".into();
                }
            }
        }
    }

    /// Aborts the deployment for one device only.
    pub fn abort_deployment_for(&self, deployment: &str, device: &str) {
        let mut st = self.lock();
        if let Some(dev) = st.devices.get_mut(device) {
            match dev
                .deployments
                .iter_mut()
                .find(|d| d.deployment_id == deployment)
            {
                Some(dd) if !is_finished(&dd.status) => dd.status = "aborted".into(),
                Some(_) => {}
                None => dev
                    .deployments
                    .push(new_device_deployment(deployment, "aborted")),
            }
        }
    }

    pub fn deployment_ids(&self) -> Vec<String> {
        self.lock()
            .deployments
            .iter()
            .map(|d| d.id.clone())
            .collect()
    }

    /// Number of devices per device-deployment status.
    pub fn deployment_summary(&self, deployment: &str) -> BTreeMap<String, usize> {
        let st = self.lock();
        let mut out = BTreeMap::new();
        for dev in st.devices.values() {
            for dd in &dev.deployments {
                if dd.deployment_id == deployment {
                    *out.entry(dd.status.clone()).or_insert(0) += 1;
                }
            }
        }
        out
    }

    // -- faults -------------------------------------------------------------

    /// The next `count` requests to `endpoint` get `status` (error JSON body).
    pub fn fail_next(&self, endpoint: Endpoint, status: u16, count: usize) {
        let mut st = self.lock();
        let queue = st.faults.fail_next.entry(endpoint).or_default();
        queue.extend(std::iter::repeat_n(status, count));
    }

    /// Every request to `endpoint` gets `status` until set to None.
    pub fn fail_always(&self, endpoint: Endpoint, status: Option<u16>) {
        let mut st = self.lock();
        match status {
            Some(s) => st.faults.fail_always.insert(endpoint, s),
            None => st.faults.fail_always.remove(&endpoint),
        };
    }

    /// Sleep this long (capped at 30 s) before answering requests to
    /// `endpoint` (None: every endpoint). `Duration::ZERO` turns it off.
    pub fn set_delay(&self, endpoint: Option<Endpoint>, delay: Duration) {
        let mut st = self.lock();
        match endpoint {
            None => st.faults.delay_all = delay,
            Some(e) => {
                st.faults.delay.insert(e, delay);
            }
        }
    }

    /// The next `count` download responses stop after `bytes` body bytes and
    /// the connection is closed (the client sees a short body).
    pub fn cut_downloads_after(&self, bytes: u64, count: usize) {
        let mut st = self.lock();
        st.faults
            .cuts
            .extend(std::iter::repeat_n(Cut::After(bytes), count));
    }

    /// One absolute artifact offset per coming download request: the
    /// response is cut when that offset is reached (a request starting at or
    /// beyond it gets the headers and no body).
    pub fn cut_downloads_at(&self, offsets: &[u64]) {
        let mut st = self.lock();
        st.faults.cuts.extend(offsets.iter().map(|&o| Cut::At(o)));
    }

    /// Each download link (each `next` answer gives a new one) serves
    /// `uses` requests, then answers 403 as an expired link (None: never).
    pub fn expire_links_after(&self, uses: Option<u32>) {
        self.lock().faults.link_uses = uses;
    }

    /// Answer 200 with the whole artifact even to a Range request.
    pub fn ignore_range(&self, on: bool) {
        self.lock().faults.ignore_range = on;
    }

    /// Limit artifact bodies to this many bytes per second (None: no limit).
    pub fn throttle_downloads(&self, bytes_per_second: Option<u64>) {
        self.lock().faults.throttle = bytes_per_second.map(|b| b.max(1));
    }

    /// Answer 405 to `PUT .../inventory/device/attributes` (old servers).
    pub fn inventory_put_not_allowed(&self, on: bool) {
        self.lock().faults.inventory_put_405 = on;
    }

    /// Serve `POST /api/devices/v2/.../next` (default: 404 like OSS).
    pub fn enable_next_v2(&self, on: bool) {
        self.lock().faults.next_v2 = on;
    }

    /// Answer 404 to `POST /api/devices/v1/.../next` (to test the GET).
    pub fn disable_next_v1_post(&self, on: bool) {
        self.lock().faults.next_v1_post_404 = on;
    }

    /// The next `count` requests to `endpoint` are handled as usual but
    /// answered with `reply` (a hostile server).
    pub fn replace_next(&self, endpoint: Endpoint, reply: HostileReply, count: usize) {
        let mut st = self.lock();
        let queue = st.faults.replace_next.entry(endpoint).or_default();
        queue.extend(std::iter::repeat_n(reply, count));
    }

    /// Every request to `endpoint` is answered with `reply` until set to
    /// None ([`Self::replace_next`] replies go first).
    pub fn replace_always(&self, endpoint: Endpoint, reply: Option<HostileReply>) {
        let mut st = self.lock();
        match reply {
            Some(r) => st.faults.replace_always.insert(endpoint, r),
            None => st.faults.replace_always.remove(&endpoint),
        };
    }

    /// Removes every fault and switch (back to the defaults).
    pub fn clear_faults(&self) {
        self.lock().faults = Faults::default();
    }

    // -- observation --------------------------------------------------------

    pub fn device_ids(&self) -> Vec<String> {
        self.lock().devices.keys().cloned().collect()
    }

    pub fn device(&self, id: &str) -> Option<DeviceInfo> {
        self.lock().devices.get(id).cloned()
    }

    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.lock().devices.values().cloned().collect()
    }

    /// The device whose identity has `key` = `value` (or a list containing it).
    pub fn device_with_identity(&self, key: &str, value: &str) -> Option<String> {
        let st = self.lock();
        st.devices
            .values()
            .find(|d| match d.identity.get(key) {
                Some(Value::String(s)) => s == value,
                Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(value)),
                _ => false,
            })
            .map(|d| d.id.clone())
    }

    /// Waits for the first device to send an auth request.
    pub fn wait_for_device(&self, timeout: Duration) -> Option<String> {
        let mut found = None;
        self.wait_until(timeout, |s| {
            found = s.device_ids().into_iter().next();
            found.is_some()
        });
        found
    }

    pub fn auth_requests(&self, device: &str) -> u64 {
        self.device(device).map_or(0, |d| d.auth_requests)
    }

    pub(super) fn with_dd<T>(
        &self,
        device: &str,
        deployment: &str,
        f: impl FnOnce(&DeviceDeployment) -> T,
    ) -> Option<T> {
        let st = self.lock();
        st.devices
            .get(device)?
            .deployments
            .iter()
            .find(|d| d.deployment_id == deployment)
            .map(f)
    }

    /// The accepted (204) status reports, in order.
    pub fn statuses(&self, device: &str, deployment: &str) -> Vec<String> {
        self.with_dd(device, deployment, |dd| {
            dd.reports
                .iter()
                .filter(|r| r.response == 204)
                .map(|r| r.status.clone())
                .collect()
        })
        .unwrap_or_default()
    }

    /// Every status report, refused ones included.
    pub fn status_reports(&self, device: &str, deployment: &str) -> Vec<StatusReport> {
        self.with_dd(device, deployment, |dd| dd.reports.clone())
            .unwrap_or_default()
    }

    /// The device deployment's status (None: never offered).
    pub fn deployment_status(&self, device: &str, deployment: &str) -> Option<String> {
        self.with_dd(device, deployment, |dd| dd.status.clone())
    }

    /// All uploaded log records, in upload order.
    pub fn logs(&self, device: &str, deployment: &str) -> Vec<LogMessage> {
        self.with_dd(device, deployment, |dd| dd.logs.concat())
            .unwrap_or_default()
    }

    pub fn inventory(&self, device: &str) -> Vec<Attribute> {
        self.device(device).map(|d| d.inventory).unwrap_or_default()
    }

    pub fn inventory_value(&self, device: &str, name: &str) -> Option<Value> {
        let st = self.lock();
        st.devices
            .get(device)?
            .inventory
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.clone())
    }

    /// The request log (the latest [`Self::set_request_log_limit`] entries).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.iter().cloned().collect()
    }

    /// Requests to one endpoint in the (capped) log.
    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<RequestRecord> {
        let st = self.lock();
        st.log
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .cloned()
            .collect()
    }

    pub fn set_request_log_limit(&self, limit: usize) {
        let mut st = self.lock();
        st.log_limit = limit;
        while st.log.len() > limit {
            st.log.pop_front();
        }
    }

    /// All requests answered since the start (not capped).
    pub fn request_count(&self) -> u64 {
        self.lock().total_requests
    }

    /// Requests answered per endpoint since the start (not capped).
    pub fn requests_per_endpoint(&self) -> BTreeMap<Endpoint, u64> {
        self.lock().per_endpoint.clone()
    }

    pub fn requests_per_device(&self) -> BTreeMap<String, u64> {
        let st = self.lock();
        st.devices
            .values()
            .map(|d| (d.id.clone(), d.requests))
            .collect()
    }

    /// Index i: requests answered in minute i since the server started.
    pub fn requests_per_minute(&self) -> Vec<u64> {
        self.lock().per_minute.clone()
    }

    pub fn downloads(&self) -> Vec<DownloadRecord> {
        self.lock().downloads.clone()
    }

    pub fn violations(&self) -> Vec<Violation> {
        self.lock().violations.clone()
    }

    pub fn clear_violations(&self) {
        self.lock().violations.clear();
    }

    /// Panics listing the violations, if any.
    #[track_caller]
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        if !v.is_empty() {
            let list: Vec<String> = v.iter().map(|v| format!("  {v}")).collect();
            panic!("{} API violation(s):\n{}", v.len(), list.join("\n"));
        }
    }

    /// Polls `cond` every 20 ms until it holds (true) or `timeout` (false).
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&MenderServer) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MenderServer {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let conns =
            std::mem::take(&mut *self.shared.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, stream) in &conns {
            if let Some(s) = stream {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        let end = Instant::now() + JOIN_WAIT;
        for (handle, _) in conns {
            while !handle.is_finished() && Instant::now() < end {
                thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

pub(super) fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let clone = stream.try_clone().ok();
        let conn_shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("mender-server-conn".into())
            .spawn(move || serve_connection(conn_shared, stream));
        let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|(h, _)| !h.is_finished());
        if let Ok(handle) = spawned {
            conns.push((handle, clone));
        }
    }
}
