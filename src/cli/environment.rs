//! The environment variables of the Mender client 4.x/5.x that move its
//! directories (`docs/configuration.md`, "Environment"):
//!
//! * `MENDER_CONF_DIR` (default `/etc/mender`): the main configuration file
//!   (`mender.conf`, and `mender.toml` and `artifact_info` beside it) and the
//!   rootfs state scripts (`scripts`);
//! * `MENDER_DATA_DIR` (default `/usr/share/mender`): Update Modules
//!   (`modules/v3`), the identity script (`identity/mender-device-identity`)
//!   and the inventory scripts (`inventory`);
//! * `MENDER_DATASTORE_DIR` (default `/var/lib/mender`): the data directory
//!   (store, fallback configuration, artifact scripts, module work files).
//!
//! Command-line options win over the variables, and keys set in a
//! configuration file win over the directories they derive (4.x has no such
//! keys; mender-rs keeps its own). An empty variable counts as unset.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::{Config, DEFAULT_DATA_DIR};

/// 4.x's defaults of the directories the variables replace.
const DEFAULT_CONF_DIR: &str = "/etc/mender";
const DEFAULT_SHARE_DIR: &str = "/usr/share/mender";

/// The directories, from the environment or the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directories {
    /// `MENDER_CONF_DIR`.
    pub conf_dir: PathBuf,
    /// `MENDER_DATA_DIR`.
    pub share_dir: PathBuf,
    /// `MENDER_DATASTORE_DIR`.
    pub datastore: PathBuf,
}

impl Directories {
    /// From the process environment.
    pub fn from_env() -> Directories {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// From the variables `lookup` returns.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Directories {
        let dir = |name: &str, default: &str| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Directories {
            conf_dir: dir("MENDER_CONF_DIR", DEFAULT_CONF_DIR),
            share_dir: dir("MENDER_DATA_DIR", DEFAULT_SHARE_DIR),
            datastore: dir("MENDER_DATASTORE_DIR", DEFAULT_DATA_DIR),
        }
    }

    /// The main configuration file when `--config` is not given.
    pub fn main_config(&self) -> PathBuf {
        self.conf_dir.join("mender.conf")
    }

    /// Moves the paths `config` took from the built-in defaults under the
    /// directories of the variables. A path a file set to the very value of
    /// the default moves too: 4.x has no such keys, so for a 4.x device the
    /// variable is what decides.
    pub fn apply(&self, config: &mut Config) {
        let moved = |path: &mut PathBuf, default: &str, base: &Path, rel: &str| {
            if path.as_path() == Path::new(default) {
                *path = base.join(rel);
            }
        };
        let share = &self.share_dir;
        moved(
            &mut config.rootfs_scripts_path,
            "/etc/mender/scripts",
            &self.conf_dir,
            "scripts",
        );
        moved(
            &mut config.modules_path,
            "/usr/share/mender/modules/v3",
            share,
            "modules/v3",
        );
        moved(
            &mut config.identity_script,
            "/usr/share/mender/identity/mender-device-identity",
            share,
            "identity/mender-device-identity",
        );
        moved(
            &mut config.inventory_scripts_path,
            "/usr/share/mender/inventory",
            share,
            "inventory",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_str("test.conf", "{}", false, Path::new("/data")).unwrap()
    }

    #[test]
    fn defaults_are_4x_directories() {
        let d = Directories::from_lookup(|_| None);
        assert_eq!(d.main_config(), Path::new("/etc/mender/mender.conf"));
        assert_eq!(d.datastore, Path::new("/var/lib/mender"));
        let mut c = config();
        let before = (
            c.rootfs_scripts_path.clone(),
            c.modules_path.clone(),
            c.identity_script.clone(),
            c.inventory_scripts_path.clone(),
        );
        d.apply(&mut c);
        // The built-in defaults are 4.x's directories: nothing moves.
        assert_eq!(
            before,
            (
                c.rootfs_scripts_path,
                c.modules_path,
                c.identity_script,
                c.inventory_scripts_path
            )
        );
    }

    #[test]
    fn variables_move_the_derived_paths() {
        let d = Directories::from_lookup(|name| match name {
            "MENDER_CONF_DIR" => Some("/c".into()),
            "MENDER_DATA_DIR" => Some("/s".into()),
            "MENDER_DATASTORE_DIR" => Some("/v".into()),
            _ => None,
        });
        assert_eq!(d.main_config(), Path::new("/c/mender.conf"));
        assert_eq!(d.datastore, Path::new("/v"));
        let mut c = config();
        d.apply(&mut c);
        assert_eq!(c.rootfs_scripts_path, Path::new("/c/scripts"));
        assert_eq!(c.modules_path, Path::new("/s/modules/v3"));
        assert_eq!(
            c.identity_script,
            Path::new("/s/identity/mender-device-identity")
        );
        assert_eq!(c.inventory_scripts_path, Path::new("/s/inventory"));
        // A key a file sets to another path stays.
        let mut c = Config::from_str(
            "t.conf",
            r#"{"ModulesPath": "/opt/modules"}"#,
            false,
            Path::new("/data"),
        )
        .unwrap();
        d.apply(&mut c);
        assert_eq!(c.modules_path, Path::new("/opt/modules"));
        // Empty counts as unset.
        let e = Directories::from_lookup(|_| Some("".into()));
        assert_eq!(e, Directories::from_lookup(|_| None));
    }
}
