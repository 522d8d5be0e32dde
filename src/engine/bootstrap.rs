//! The bootstrap artifact (`docs/standalone.md`, "The bootstrap
//! artifact"): an image may carry `<data dir>/bootstrap.mender`, an
//! artifact with an empty payload whose only job is to give a freshly
//! flashed device its name and provides. As Mender 4.x does, it is
//! installed the first time the client starts on a store with no artifact
//! name (`install`, `show-artifact`, `show-provides`, `daemon`), without
//! checking its signature (nobody asked for it to be signed), and the file
//! is removed whatever happened, so a bad one cannot fail every later
//! start.
//!
//! Where we differ from 4.x: with no bootstrap file we write nothing, so an
//! image that names itself in `artifact_info` (the 3.x way) keeps that
//! name until its first update; 4.x would store `unknown`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::artifact::depends;
use crate::artifact::header::ArtifactHeader;
use crate::artifact::reader::{self, ArtifactHandler, ReadOptions, SignaturePolicy};
use crate::config::Config;
use crate::fsutil;
use crate::store::{Store, StoreError};

/// The file name Mender uses, in the data directory.
pub const BOOTSTRAP_FILE: &str = "bootstrap.mender";

/// A bootstrap artifact is headers only; 4 MiB is far beyond any real one
/// (`docs/standalone.md`, Limits) and keeps a stray image file from being
/// read through.
pub const MAX_BOOTSTRAP_SIZE: u64 = 4 << 20;

/// The bootstrap artifact's path for `config`.
pub fn bootstrap_path(config: &Config) -> PathBuf {
    config.data_dir.join(BOOTSTRAP_FILE)
}

/// Installs `<data dir>/bootstrap.mender` when the store has no artifact
/// name, then removes the file. Returns the installed artifact's name.
/// Errors name the file; the file is removed even then (as Mender does),
/// so the next start goes on without it.
pub fn maybe_install(config: &Config) -> Result<Option<String>> {
    let path = bootstrap_path(config);
    // The cheap check first, without the store's lock: `show-artifact`
    // must not wait for (or fail on) a running daemon.
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let named = Store::read_only(&config.data_dir)?
        .artifact_name()
        .is_some();
    let result = if named {
        log::info!(
            "{}: the device already has an artifact name; removing the bootstrap artifact unused",
            path.display()
        );
        Ok(None)
    } else {
        install(config, &path)
    };
    if let Err(e) = result.as_ref()
        && e.downcast_ref::<StoreError>()
            .is_some_and(|s| matches!(s, StoreError::Busy(_)))
    {
        // Another process (the daemon) holds the store: it installs the
        // file itself; leave it in place.
        log::info!(
            "{}: the store is in use; the bootstrap artifact is left for the process that holds it",
            path.display()
        );
        return Ok(None);
    }
    remove(&path)?;
    result
}

fn install(config: &Config, path: &Path) -> Result<Option<String>> {
    let mut store = Store::open(&config.data_dir)?;
    // Checked again under the lock: a daemon may have installed it between.
    if store.artifact_name().is_some() {
        return Ok(None);
    }
    let header = read(config, path)?;
    let next = depends::provides_after_commit(store.provides(), &header);
    store.save(|d| d.provides = next)?;
    log::info!(
        "installed the bootstrap artifact '{}' from {}",
        header.name,
        path.display()
    );
    Ok(Some(header.name))
}

/// Reads and checks the bootstrap artifact: an empty payload, no scripts,
/// compatible with this device. The signature is not checked.
fn read(config: &Config, path: &Path) -> Result<ArtifactHeader> {
    let what = || format!("bootstrap artifact {}", path.display());
    let (file, meta) = fsutil::open_regular(path).with_context(what)?;
    if meta.len() > MAX_BOOTSTRAP_SIZE {
        bail!(
            "{}: {} bytes, more than the {} allowed for a bootstrap artifact (it carries no payload)",
            what(),
            meta.len(),
            MAX_BOOTSTRAP_SIZE
        );
    }
    let device_type = config.device_type()?;
    let mut handler = Checks {
        device_type: &device_type,
        header: None,
    };
    let options = ReadOptions {
        verify_keys: &[],
        policy: SignaturePolicy::Enforce,
        ranges: None,
    };
    reader::read_artifact(
        std::io::BufReader::new(file.take(MAX_BOOTSTRAP_SIZE)),
        &options,
        &mut handler,
    )
    .with_context(what)?;
    handler
        .header
        .ok_or_else(|| anyhow!("{}: no header", what()))
}

struct Checks<'a> {
    device_type: &'a str,
    header: Option<ArtifactHeader>,
}

impl ArtifactHandler for Checks<'_> {
    fn header(&mut self, header: &ArtifactHeader) -> Result<()> {
        if header.payloads.len() != 1 || header.payload().is_some_and(|p| p.payload_type.is_some())
        {
            bail!(
                "'{}' is not a bootstrap artifact: it must have exactly one empty payload (type null)",
                header.name
            );
        }
        if !header.scripts.is_empty() {
            bail!(
                "'{}' is not a bootstrap artifact: it carries state scripts",
                header.name
            );
        }
        // Provides of the device are empty here, so only the device type
        // and depends that need nothing apply.
        depends::check_compatible(header, self.device_type, &Default::default())?;
        self.header = Some(header.clone());
        Ok(())
    }

    fn begin_file(&mut self, name: &str, _size: u64) -> Result<()> {
        bail!("a bootstrap artifact has no payload files, found '{name}'")
    }
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(anyhow!(e).context(format!(
                "removing the bootstrap artifact {}",
                path.display()
            )));
        }
    }
    fsutil::sync_dir(&fsutil::parent_dir(path))
        .with_context(|| format!("syncing the directory of {}", path.display()))
}
