//! `mender-rs daemon`: managed mode. Authenticates with the server, sends
//! the inventory, polls for deployments and runs them through the update
//! state machine, with the `Idle` and `Sync` state scripts around the
//! polling (`docs/managed-mode.md`).
//!
//! The loop: `Idle_Enter` scripts, wait for the next poll (or a signal),
//! `Idle_Leave`, then `Sync_Enter`, the inventory and/or the update check,
//! `Sync_Leave`, and the deployment if one came. Idle script failures are
//! ignored; a Sync failure runs `Sync_Error` and skips this round.

#[cfg(feature = "dbus")]
pub mod dbus;
#[cfg(feature = "dbus")]
pub mod forwarder;
pub mod memory;
pub mod signals;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::artifact::adaptive::ArtifactSource;
use crate::config::Config;
use crate::control_map::{Action, BootTime, ControlMap, ControlMapSet, StateKey};
use crate::device_key::DeviceKey;
use crate::engine::managed::{Aborted, Progress};
use crate::engine::{DeploymentHooks, Engine};
use crate::identity::{self, AttributeValue, Attributes};
use crate::scripts::{ScriptAction, ScriptConfig, ScriptRunner, ScriptState};
use crate::server::backoff::{backoff, status_report_tries};
use crate::server::client::NextDeployment;
use crate::server::{ApiError, DownloadOptions, ResumableDownload, ServerClient, Status};
use crate::server::{link_refresh, token};
use crate::store::Store;
use signals::{PidFile, Signals};

/// Longest run of an inventory script.
const INVENTORY_SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The device key: `Security.AuthPrivateKey`, else `mender-agent.pem` in
/// the data directory when it exists, else the `HttpsClient` key (as Mender
/// 3.x), else `mender-agent.pem` (created); and whether it is that default
/// one, the only one created or replaced.
pub fn key_path(config: &Config) -> (PathBuf, bool) {
    if let Some(p) = &config.auth_private_key {
        return (p.clone(), false);
    }
    let default = config.data_dir.join("mender-agent.pem");
    // Mender 4.x/5.x sign with `mender-agent.pem` even when `HttpsClient`
    // has a key (TLS only); 3.x signed with `HttpsClient.Key` and then wrote
    // no `mender-agent.pem`. So an existing `mender-agent.pem` is the key
    // the server knows, whichever client the device comes from
    // (docs/differences.md).
    if let Some(h) = &config.https_client
        && std::fs::symlink_metadata(&default).is_err()
    {
        return (h.key.clone(), false);
    }
    (default, true)
}

/// Loads (or, for the default path, creates) the device key.
pub fn device_key(config: &Config) -> Result<DeviceKey> {
    let (path, generate) = key_path(config);
    if !generate {
        return Ok(DeviceKey::load(&path)?);
    }
    let started = Instant::now();
    let (key, generated) = DeviceKey::load_or_generate(&path, config.device_key_type)?;
    if generated {
        log::info!(
            "generated the device key {} ({}) in {:.1} s",
            path.display(),
            key.describe(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(key)
}

/// The connection to the configured server(s) with `key`: the identity
/// from the identity script, the TLS settings, `TenantToken` and
/// `DeviceTier`. Shared by the daemon and `mender-auth bootstrap`.
pub fn server_client(config: &Config, key: DeviceKey) -> Result<ServerClient> {
    let identity = identity::device_identity(&config.identity_script)
        .with_context(|| format!("device identity from {}", config.identity_script.display()))?;
    let id_data = identity::identity_json(&identity);
    log::info!("device identity {id_data}, key {}", key.describe());
    let https_client = config
        .https_client
        .as_ref()
        .map(|h| (h.certificate.as_path(), h.key.as_path()));
    let agent = crate::http::agent_with(&crate::http::HttpOptions {
        extra_ca: config.server_certificate.as_deref(),
        skip_verify: config.skip_verify,
        client_cert: https_client,
        status_as_response: true,
    })?;
    let mut client = ServerClient::new(
        agent,
        config.servers.clone(),
        config.tenant_token.clone(),
        key,
        id_data,
    );
    client.set_device_tier(config.device_tier.clone());
    Ok(client)
}

/// A random duration in `0..max` (jitter, so a fleet started together
/// spreads its requests).
fn jitter(max: Duration) -> Duration {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return Duration::ZERO;
    }
    let fraction = u64::from_le_bytes(bytes) as f64 / u64::MAX as f64;
    max.mul_f64(fraction)
}

/// The extra wait added to each poll: up to a tenth of the interval, at
/// most 30 s.
fn poll_jitter(interval: Duration) -> Duration {
    jitter((interval / 10).min(Duration::from_secs(30)))
}

struct Daemon<'c> {
    config: &'c Config,
    client: ServerClient,
    /// The update control maps (None when their file cannot be read).
    maps: Option<ControlMapSet>,
    scripts: ScriptRunner,
    signals: Signals,
    next_update: Instant,
    next_inventory: Instant,
    /// Failed inventory submissions in a row (for the back-off).
    inventory_failures: u32,
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(config: &Config) -> Result<()> {
    run_with_key(config, device_key)
}

/// [`run`] with the device key from `load_key`, called once the daemon
/// holds its pid file (`mender-auth daemon`: a passphrase, a new key).
pub fn run_with_key(
    config: &Config,
    load_key: impl FnOnce(&Config) -> Result<DeviceKey>,
) -> Result<()> {
    let _pid = PidFile::acquire(&config.data_dir)?;
    let signals = Signals::install().context("installing the signal handlers")?;
    if config.servers.is_empty() {
        bail!("no server configured: set ServerURL (or Servers) in mender.conf");
    }
    let client = server_client(config, load_key(config)?)?;
    // D-Bus API (DBus.Enabled): shares the token, starts the service thread.
    #[cfg(feature = "dbus")]
    let client = dbus::start(config, client);
    let scripts = ScriptRunner::new(ScriptConfig::from_config(config));
    let now = Instant::now();
    let start = now
        + jitter(Duration::from_millis(
            (config.update_poll_interval.as_millis() / 10).min(30_000) as u64,
        ));
    let maps = match ControlMapSet::load(config) {
        Ok(m) => Some(m),
        Err(e) => {
            log::error!("update control maps: {e}; deployments proceed without them");
            None
        }
    };
    let mut daemon = Daemon {
        config,
        client,
        maps,
        scripts,
        signals,
        next_update: start,
        next_inventory: start,
        inventory_failures: 0,
    };
    log::info!(
        "mender-rs {} daemon started (server {}, update poll {} s, inventory poll {} s)",
        env!("CARGO_PKG_VERSION"),
        config.servers.join(", "),
        config.update_poll_interval.as_secs(),
        config.inventory_poll_interval.as_secs()
    );
    daemon.resume_deployment()?;
    daemon.purge_expired_maps();
    daemon.run_loop();
    log::info!("daemon stopped");
    Ok(())
}

impl Daemon<'_> {
    fn run_loop(&mut self) {
        loop {
            self.run_scripts_ignored(ScriptState::Idle, ScriptAction::Enter);
            let wake = self.idle_wait();
            if wake.terminate {
                return;
            }
            self.run_scripts_ignored(ScriptState::Idle, ScriptAction::Leave);
            let now = Instant::now();
            let inventory_due = wake.send_inventory || now >= self.next_inventory;
            let update_due = wake.check_update || now >= self.next_update;
            if !inventory_due && !update_due {
                continue;
            }
            if let Err(e) = self
                .scripts
                .run(ScriptState::Sync, ScriptAction::Enter, false)
            {
                log::error!("Sync_Enter scripts: {e:#}; skipping this round");
                self.run_scripts_ignored(ScriptState::Sync, ScriptAction::Error);
                self.reschedule(inventory_due, update_due);
                continue;
            }
            if inventory_due {
                self.send_inventory();
            }
            let deployment = if update_due {
                self.next_update = Instant::now()
                    + self.config.update_poll_interval
                    + poll_jitter(self.config.update_poll_interval);
                self.check_update()
            } else {
                None
            };
            if let Err(e) = self
                .scripts
                .run(ScriptState::Sync, ScriptAction::Leave, false)
            {
                log::error!("Sync_Leave scripts: {e:#}; skipping this round");
                self.run_scripts_ignored(ScriptState::Sync, ScriptAction::Error);
                continue;
            }
            if let Some(d) = deployment {
                self.deploy(&d);
                self.purge_expired_maps();
                // The inventory changed (or at least its artifact name).
                self.next_inventory = Instant::now();
            }
            if self.signals.terminating() {
                return;
            }
        }
    }

    fn reschedule(&mut self, inventory: bool, update: bool) {
        let now = Instant::now();
        if inventory {
            self.next_inventory = now + self.config.inventory_poll_interval;
        }
        if update {
            self.next_update = now + self.config.update_poll_interval;
        }
    }

    /// Runs every script of the action; failures are only logged.
    fn run_scripts_ignored(&self, state: ScriptState, action: ScriptAction) {
        if let Err(e) = self.scripts.run(state, action, true) {
            log::warn!("{} {action:?} scripts (ignored): {e:#}", state.name());
        }
    }

    /// Waits for the next due poll or a signal.
    fn idle_wait(&mut self) -> signals::Wake {
        let mut wake = signals::Wake::default();
        let released = memory::release_idle_pages();
        log::trace!("idle: released {} KiB of code mappings", released >> 10);
        // Bounded: every round either times out (a poll is due) or handles
        // a signal.
        loop {
            let due = self.next_update.min(self.next_inventory);
            let now = Instant::now();
            if now >= due {
                return wake;
            }
            let got = self.signals.wait(due - now);
            token::serve_fetch_request(&mut self.client); // D-Bus FetchJwtToken
            wake.check_update |= got.check_update;
            wake.send_inventory |= got.send_inventory;
            wake.terminate |= got.terminate;
            if got != signals::Wake::default() {
                if got.check_update {
                    log::info!("update check requested");
                }
                if got.send_inventory {
                    log::info!("inventory update requested");
                }
                return wake;
            }
        }
    }

    fn store(&self) -> Option<Store> {
        match Store::read_only(&self.config.data_dir) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("reading the store: {e}");
                None
            }
        }
    }

    /// The attributes sent as inventory.
    fn inventory(&self) -> Attributes {
        let mut attributes = identity::collect_inventory(
            &self.config.inventory_scripts_path,
            INVENTORY_SCRIPT_TIMEOUT,
        );
        let single = |v: String| AttributeValue::Single(v);
        if let Some(store) = self.store() {
            for (k, v) in store.effective_provides(&self.config.artifact_info_file) {
                attributes.insert(k, single(v));
            }
        }
        match self.config.device_type() {
            Ok(t) => {
                attributes.insert("device_type".into(), single(t));
            }
            Err(e) => log::error!("{e}"),
        }
        attributes.insert(
            "mender_client_version".into(),
            single(env!("CARGO_PKG_VERSION").into()),
        );
        if self.config.rootfs_part_a.is_some() {
            attributes.insert(
                "mender_bootloader_integration".into(),
                single(self.config.boot_env_type.as_str().into()),
            );
        }
        attributes
    }

    fn send_inventory(&mut self) {
        let attributes = self.inventory();
        match self.client.send_inventory(&attributes) {
            Ok(()) => {
                log::info!("inventory sent ({} attributes)", attributes.len());
                self.inventory_failures = 0;
                self.next_inventory = Instant::now()
                    + self.config.inventory_poll_interval
                    + poll_jitter(self.config.inventory_poll_interval);
            }
            Err(e) => {
                log::error!("sending the inventory: {e}");
                let retry = backoff(
                    self.inventory_failures,
                    self.config.retry_poll_interval,
                    self.config.retry_poll_count,
                );
                self.inventory_failures += 1;
                self.next_inventory = Instant::now()
                    + match retry {
                        Some(wait) => wait,
                        None => {
                            self.inventory_failures = 0;
                            self.config.inventory_poll_interval
                        }
                    };
            }
        }
    }

    /// Asks the server for a deployment.
    fn check_update(&mut self) -> Option<crate::server::DeploymentInstruction> {
        let store = self.store()?;
        let mut provides = store.effective_provides(&self.config.artifact_info_file);
        let device_type = match self.config.device_type() {
            Ok(t) => t,
            Err(e) => {
                log::error!("{e}");
                return None;
            }
        };
        provides.remove("device_type");
        match self.client.next_deployment(&provides, &device_type) {
            Ok(NextDeployment::None) => {
                log::debug!("no deployment");
                None
            }
            Ok(NextDeployment::Deploy(d)) => {
                let current = provides.get("artifact_name").map(String::as_str);
                if current == Some(d.artifact_name.as_str()) {
                    log::info!(
                        "deployment {}: artifact '{}' is installed already",
                        d.id,
                        d.artifact_name
                    );
                    if let Err(e) = self
                        .client
                        .report_status(&d.id, Status::AlreadyInstalled, None)
                    {
                        log::error!("reporting already-installed: {e}");
                    }
                    return None;
                }
                if !d.device_types_compatible.contains(&device_type) {
                    log::error!(
                        "deployment {}: artifact '{}' is not for device type '{device_type}' (it is for {})",
                        d.id,
                        d.artifact_name,
                        d.device_types_compatible.join(", ")
                    );
                    self.fail_unstarted(&d.id);
                    return None;
                }
                Some(d)
            }
            Ok(NextDeployment::Malformed { id, reason }) => {
                log::error!("{reason}");
                self.fail_unstarted(&id);
                None
            }
            Err(e) => {
                log::error!("checking for an update: {e}");
                None
            }
        }
    }

    /// Reports a deployment the device cannot even start as failed.
    fn fail_unstarted(&mut self, id: &str) {
        let mut hooks = ServerHooks {
            client: &mut self.client,
            config: self.config,
            maps: self.maps.as_mut(),
            signals: &mut self.signals,
        };
        if let Err(e) = hooks.final_status(id, false, &[]) {
            log::error!("{e:#}");
        }
    }

    fn engine(config: &Config) -> Option<Engine<'_>> {
        match Engine::open(config) {
            Ok(e) => Some(e),
            Err(e) => {
                log::error!("{e:#}");
                None
            }
        }
    }

    fn resume_deployment(&mut self) -> Result<()> {
        let mut engine = Engine::open(self.config)?;
        let Some(id) = engine.interrupted_deployment()? else {
            return Ok(());
        };
        let mut hooks = ServerHooks {
            client: &mut self.client,
            config: self.config,
            maps: self.maps.as_mut(),
            signals: &mut self.signals,
        };
        signals::set_busy(true);
        let result = engine.resume_deployment(&mut hooks);
        signals::set_busy(false);
        result?;
        drop(engine);
        self.forget_server_map(&id);
        // The outcome changes the inventory; the next deployment check
        // waits a poll interval, so a deployment whose final status could
        // not be delivered is not retried at once.
        self.next_inventory = Instant::now();
        self.next_update = Instant::now() + self.config.update_poll_interval;
        Ok(())
    }

    fn deploy(&mut self, d: &crate::server::DeploymentInstruction) {
        if let Err(e) = self.take_server_map(d) {
            log::error!("deployment {}: {e:#}", d.id);
            self.fail_unstarted(&d.id);
            return;
        }
        self.run_deployment(d);
        self.forget_server_map(&d.id);
    }

    /// The update control map the server sent with a deployment (or the
    /// absence of one, which removes an old one with its id).
    fn take_server_map(&mut self, d: &crate::server::DeploymentInstruction) -> Result<()> {
        let map = match &d.control_map {
            None => None,
            Some(v) => Some(
                ControlMap::from_value(v)
                    .map_err(|e| anyhow::anyhow!("invalid update control map: {e}"))?,
            ),
        };
        match self.maps.as_mut() {
            Some(maps) => {
                maps.insert_from_server(&d.id, map, BootTime::now())?;
                save_maps(maps);
            }
            None if map.is_some() => {
                bail!(
                    "the update control maps cannot be kept (see above): refusing a deployment that comes with one"
                )
            }
            None => {}
        }
        Ok(())
    }

    /// Drops the update control maps that have expired. Mender does it when
    /// its state machine enters Idle: at start and after each deployment,
    /// not between polls, so a map that expires while the device sits idle
    /// still gives the next deployment its `on_map_expire`
    /// (docs/managed-mode.md). Without it an expired pause map would fail
    /// every later deployment, and expired device maps would count against
    /// the limit of device maps for ever.
    fn purge_expired_maps(&mut self) {
        let Some(maps) = self.maps.as_mut() else {
            return;
        };
        let now = BootTime::now();
        maps.expire(now);
        let purged = maps.purge_expired(now);
        if purged > 0 {
            log::info!("{purged} expired update control map(s) removed");
            save_maps(maps);
        }
    }

    fn forget_server_map(&mut self, id: &str) {
        if let Some(maps) = self.maps.as_mut()
            && maps.remove(id, None) > 0
        {
            save_maps(maps);
        }
    }

    fn run_deployment(&mut self, d: &crate::server::DeploymentInstruction) {
        let config = self.config;
        let Some(mut engine) = Self::engine(config) else {
            return;
        };
        let mut hooks = ServerHooks {
            client: &mut self.client,
            config,
            maps: self.maps.as_mut(),
            signals: &mut self.signals,
        };
        signals::set_busy(true);
        if let Err(e) = engine.deploy(d, &mut hooks) {
            log::error!("deployment {}: {e:#}", d.id);
        }
        signals::set_busy(false);
    }
}

fn save_maps(maps: &mut ControlMapSet) {
    if let Err(e) = maps.save() {
        log::error!("saving the update control maps: {e}");
    }
}

/// The state machine's view of the server (and of the update control
/// maps).
struct ServerHooks<'a> {
    client: &'a mut ServerClient,
    config: &'a Config,
    maps: Option<&'a mut ControlMapSet>,
    signals: &'a mut Signals,
}

/// Longest wait between two looks at the maps while paused (a change by
/// `mender-rs control` wakes the daemon at once anyway).
const PAUSE_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

impl ServerHooks<'_> {
    /// Sends a status with the retries of `docs/managed-mode.md`; 409 ends at once.
    fn report_with_retries(&mut self, id: &str, status: Status) -> Result<(), ApiError> {
        let tries = status_report_tries(
            self.config.update_poll_interval,
            self.config.retry_poll_interval,
        );
        let mut last = None;
        for attempt in 0..tries {
            if attempt > 0 {
                std::thread::sleep(self.config.retry_poll_interval);
            }
            match self.client.report_status(id, status, None) {
                Ok(()) => return Ok(()),
                Err(ApiError::Aborted) => return Err(ApiError::Aborted),
                Err(e) => {
                    log::warn!(
                        "reporting '{}' (try {}/{tries}): {e}",
                        status.as_str(),
                        attempt + 1
                    );
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ApiError::Invalid("no try made".into())))
    }
}

/// The server's status for the engine's progress. Mapped here, where both
/// are known: the engine does not speak the wire, and the server does not
/// know the engine.
fn wire_status(progress: Progress) -> Status {
    match progress {
        Progress::Downloading => Status::Downloading,
        Progress::Installing => Status::Installing,
        Progress::Rebooting => Status::Rebooting,
    }
}

impl DeploymentHooks for ServerHooks<'_> {
    fn status(&mut self, id: &str, progress: Progress) -> Result<(), Aborted> {
        let status = wire_status(progress);
        match self.client.report_status(id, status, None) {
            Ok(()) => Ok(()),
            Err(ApiError::Aborted) => {
                log::error!("deployment {id} was aborted on the server");
                Err(Aborted)
            }
            Err(e) => {
                log::warn!("reporting '{}': {e}", status.as_str());
                Ok(())
            }
        }
    }

    fn pre_commit(&mut self, id: &str) -> Result<()> {
        // The new software must show it can authenticate before it is
        // committed.
        self.client.drop_token();
        self.report_with_retries(id, Status::Installing)
            .map_err(|e| anyhow::anyhow!("reporting to the server before the commit: {e}"))
    }

    fn checkpoint(&mut self, id: &str, state: StateKey) -> Result<()> {
        let Some(maps) = self.maps.as_deref_mut() else {
            return Ok(());
        };
        let mut paused = false;
        // After a failed refresh of the server's map, wait before the next.
        let mut refresh_not_before = BootTime::now();
        let mut fetched = false;
        // Each round waits for a signal or a map's timer; a stop request
        // during a deployment ends the process (signals.rs).
        loop {
            let now = BootTime::now();
            // The server's map for this deployment is fetched again from
            // half its lifetime on (`docs/managed-mode.md`, "Update control maps").
            // At each checkpoint it is fetched once at once (after a
            // restart the stored copy only has the boot lifetime).
            if maps.has_id(id)
                && now >= refresh_not_before
                && (!fetched
                    || maps
                        .earliest_halfway(now, Some(id))
                        .is_some_and(|half| now >= half))
            {
                fetched = true;
                match self.client.control_map(id) {
                    Ok(Some(v)) => {
                        let map = ControlMap::from_value(&v)
                            .map_err(|e| anyhow::anyhow!("invalid update control map: {e}"))?;
                        maps.insert_from_server(id, Some(map), now)?;
                        save_maps(maps);
                    }
                    Ok(None) => bail!(
                        "the server no longer has deployment {id} (its update control map is gone)"
                    ),
                    Err(e) => {
                        log::warn!("refreshing the update control map: {e}");
                        refresh_not_before = now.after(self.config.retry_poll_interval);
                    }
                }
            }
            for gone in maps.expire(now) {
                log::info!("update control map {} expired", gone.map.id);
            }
            let decision = maps.decision(state, now);
            match decision.action {
                Action::Continue | Action::ForceContinue => {
                    maps.after_action(state, now);
                    save_maps(maps);
                    if paused {
                        log::info!("deployment {id}: {state}: continuing");
                    }
                    return Ok(());
                }
                Action::Fail => {
                    maps.after_action(state, now);
                    save_maps(maps);
                    bail!(
                        "update control map {} says fail at {state}",
                        decision.ids.join(", ")
                    );
                }
                Action::Pause => {
                    if !paused {
                        paused = true;
                        log::info!(
                            "deployment {id}: paused at {state} by update control map {}",
                            decision.ids.join(", ")
                        );
                        maps.after_action(state, now);
                        save_maps(maps);
                        let status = match state {
                            StateKey::ArtifactInstallEnter => Status::PauseBeforeInstalling,
                            StateKey::ArtifactRebootEnter => Status::PauseBeforeRebooting,
                            StateKey::ArtifactCommitEnter => Status::PauseBeforeCommitting,
                        };
                        if let Err(ApiError::Aborted) = self.client.report_status(id, status, None)
                        {
                            bail!("deployment {id} was aborted on the server while paused");
                        }
                    }
                    let mut wait = PAUSE_RECHECK;
                    for t in [maps.next_expiry(now), maps.earliest_halfway(now, None)]
                        .into_iter()
                        .flatten()
                    {
                        wait = wait.min(t.since(now).max(std::time::Duration::from_millis(100)));
                    }
                    self.signals.wait(wait);
                    token::serve_fetch_request(self.client); // D-Bus FetchJwtToken
                    // Reads what `mender-rs control` changed meanwhile.
                    save_maps(maps);
                }
            }
        }
    }

    fn open_artifact(
        &mut self,
        deployment: &crate::server::DeploymentInstruction,
        provides: &crate::artifact::header::Provides,
        device_type: &str,
    ) -> Result<ArtifactSource> {
        let mut download = ResumableDownload::start(
            self.client.agent().clone(),
            &deployment.uri,
            DownloadOptions {
                max_attempts: self.config.retry_download_count,
                max_interval: self.config.retry_poll_interval,
                min_progress: crate::server::download::MIN_PROGRESS,
                progress_window: crate::server::download::PROGRESS_WINDOW,
            },
        )?;
        if let Some(refresh) =
            link_refresh::refresher(self.client, &deployment.id, provides, device_type)
        {
            download.set_refresh(refresh);
        }
        Ok(ArtifactSource::ranged(download))
    }

    fn final_status(&mut self, id: &str, success: bool, log: &[serde_json::Value]) -> Result<()> {
        let status = if success {
            Status::Success
        } else {
            Status::Failure
        };
        match self.report_with_retries(id, status) {
            Ok(()) => {}
            Err(ApiError::Aborted) => {
                log::warn!("deployment {id}: the server no longer takes a status (aborted)");
                return Ok(());
            }
            Err(e) => bail!("reporting '{}': {e}", status.as_str()),
        }
        if !success {
            let records: Vec<serde_json::Value> = if log.is_empty() {
                vec![serde_json::json!({
                    "timestamp": crate::deployment_log::rfc3339_utc(std::time::SystemTime::now()),
                    "level": "error",
                    "message": "the deployment failed before it started",
                })]
            } else {
                log.to_vec()
            };
            if let Err(e) = self.client.upload_log(id, &records) {
                log::error!("deployment {id}: uploading the log: {e}");
            }
        }
        Ok(())
    }
}
