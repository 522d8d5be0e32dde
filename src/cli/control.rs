//! `mender-rs control set|show|clear`: update control maps from a shell,
//! without D-Bus. `set` is `SetUpdateControlMap` (same validation, same
//! insert-or-delete rule, same answer: the refresh timeout in seconds);
//! the maps live in `<data>/mender-rs-control-maps.json` (see
//! [`crate::control_map`]). After a change a running daemon is woken
//! (`SIGUSR1`) so that a paused deployment looks at the maps at once.

use std::io::Read;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::EXIT_OK;
use crate::config::Config;
use crate::control_map::{self, BootTime, ControlMap, ControlMapSet, DeviceChange, MAX_MAP_BYTES};
use crate::daemon::signals::{SignalError, signal_daemon};
use crate::fsutil;

#[derive(clap::Subcommand, Debug)]
pub enum ControlCommand {
    /// Add or replace an update control map; prints the refresh timeout.
    ///
    /// As a device application does over D-Bus. The refresh timeout is in
    /// seconds: set the map again before it passes, or it expires after
    /// twice that time. A map whose states all say continue removes the map
    /// with its id and priority.
    Set {
        /// The map as JSON: a file, or - for standard input.
        file: String,
    },
    /// Print the maps in force (expired ones left out) as JSON.
    Show,
    /// Remove the maps with this id (all priorities, or one with --priority).
    Clear {
        /// The map's id (a UUID).
        id: String,
        /// Remove only the map with this priority.
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i64>,
    },
}

pub fn run(config: &Config, command: ControlCommand) -> Result<i32> {
    match command {
        ControlCommand::Set { file } => set(config, &file),
        ControlCommand::Show => show(config),
        ControlCommand::Clear { id, priority } => clear(config, &id, priority),
    }
}

/// Reads at most one byte more than a map may have, so a huge input is
/// refused without being read whole (the map's own check then names the
/// limit). A file must be a regular file: a FIFO or a device would block or
/// never end; pipes go through standard input ("-").
fn read_input(file: &str) -> Result<(String, Vec<u8>)> {
    let limit = MAX_MAP_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    if file == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .context("standard input")?;
        return Ok(("standard input".into(), bytes));
    }
    let (handle, _) = fsutil::open_regular(std::path::Path::new(file))?;
    handle
        .take(limit)
        .read_to_end(&mut bytes)
        .with_context(|| file.to_string())?;
    Ok((file.to_string(), bytes))
}

fn set(config: &Config, file: &str) -> Result<i32> {
    let (name, bytes) = read_input(file)?;
    let map = ControlMap::parse(&bytes).with_context(|| name.clone())?;
    let (id, priority) = (map.id.clone(), map.priority);
    let outcome = control_map::set_device_map(config, map, BootTime::now())?;
    wake_daemon(config);
    if let DeviceChange::Removed { existed } = outcome.change {
        let what = if existed {
            "removed"
        } else {
            "no such map to remove"
        };
        eprintln!("no state left after the defaults: {what} (id {id}, priority {priority})");
    }
    println!("{}", outcome.refresh_timeout);
    Ok(EXIT_OK)
}

fn show(config: &Config) -> Result<i32> {
    let now = BootTime::now();
    let maps = ControlMapSet::open_at(config, now)?;
    let mut active: Vec<_> = maps.active(now).collect();
    active.sort_by(|a, b| (b.map.priority, &a.map.id).cmp(&(a.map.priority, &b.map.id)));
    let list: Vec<Value> = active
        .into_iter()
        .map(|m| {
            let mut v = m.map.to_value();
            if let Value::Object(o) = &mut v {
                o.insert("source".into(), m.source.as_str().into());
                // Rounded up: a map shown with 0 s left would be expired.
                let left = m.remaining(now).as_millis().div_ceil(1000);
                o.insert("expires_in_seconds".into(), (left as u64).into());
            }
            v
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&list)?);
    Ok(EXIT_OK)
}

fn clear(config: &Config, id: &str, priority: Option<i64>) -> Result<i32> {
    control_map::validate_id(id)?;
    let priority = priority.map(control_map::validate_priority).transpose()?;
    let now = BootTime::now();
    let mut maps = ControlMapSet::open_at(config, now)?;
    maps.expire(now);
    let removed = maps.remove(id, priority);
    maps.save()?;
    wake_daemon(config);
    if removed == 0 {
        eprintln!("no update control map with id {id} to remove");
    }
    Ok(EXIT_OK)
}

/// Wakes a running daemon. No daemon is the usual case from a shell and
/// says nothing; anything else is a warning (the maps are saved anyway).
fn wake_daemon(config: &Config) {
    match signal_daemon(&config.data_dir, libc::SIGUSR1) {
        Ok(_) | Err(SignalError::NoDaemon(_)) => {}
        Err(e) => eprintln!("mender-rs: warning: the daemon was not woken: {e:#}"),
    }
}
