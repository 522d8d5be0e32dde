//! The bootloader environment: the variables through which the client and
//! the bootloader hand over control of an update (`docs/bootloaders.md`,
//! "The boot environment variables").
//!
//! [`BootEnv`] is what the update engine uses; [`uboot::UBootEnv`] stores
//! the variables in a U-Boot environment area described by an
//! `fw_env.config`, byte-compatible with libubootenv's `fw_printenv` and
//! `fw_setenv`; [`grub::GrubEnv`] keeps them in the two GRUB environment
//! copies of grub-mender-grubenv; [`tools::ToolsEnv`] runs external
//! print/set tools for storage not handled natively (MTD, UBI). [`open`]
//! picks one by `BootEnvType`.

pub mod grub;
pub mod tools;
pub mod uboot;

pub use grub::GrubEnv;
pub use tools::ToolsEnv;
pub use uboot::UBootEnv;

use std::collections::BTreeMap;
use std::io;

/// All variables of an environment, by name.
pub type EnvVars = BTreeMap<String, String>;

/// Variables of the bootloader contract (`docs/bootloaders.md`), named
/// here once.
pub const MENDER_BOOT_PART: &str = "mender_boot_part";
pub const MENDER_BOOT_PART_HEX: &str = "mender_boot_part_hex";
pub const UPGRADE_AVAILABLE: &str = "upgrade_available";
pub const BOOTCOUNT: &str = "bootcount";
pub const MENDER_SAVEENV_CANARY: &str = "mender_saveenv_canary";
pub const MENDER_CHECK_SAVEENV_CANARY: &str = "mender_check_saveenv_canary";

/// Everything that can go wrong with a boot environment. Messages are one
/// line and name the configuration, file or device concerned.
#[derive(Debug, thiserror::Error)]
pub enum BootEnvError {
    /// Opening, reading, writing or syncing a file or device failed.
    /// (The cause is part of the message, not a `source()`, so that error
    /// chains do not print it twice.)
    #[error("{path}: cannot {op}: {cause}")]
    Io {
        path: String,
        op: String,
        cause: io::Error,
    },
    /// A file that is not a regular file, or larger than its cap (the
    /// message names it and says which).
    #[error(transparent)]
    Read(#[from] crate::fsutil::ReadError),
    /// A line of the configuration file cannot be used.
    #[error("{config} line {line}: {reason}")]
    ConfigLine {
        config: String,
        line: usize,
        reason: String,
    },
    /// The configuration file as a whole cannot be used (no entries, too
    /// many entries).
    #[error("{config}: {reason}")]
    Config { config: String, reason: String },
    /// The environment area does not fit inside the file or device.
    #[error(
        "{device}: environment area at offset {offset:#x} of {size:#x} bytes ends beyond the end of the file or device"
    )]
    Short {
        device: String,
        offset: u64,
        size: usize,
    },
    /// The device is of a kind that is not handled natively.
    #[error("{device}: {reason}")]
    Unsupported { device: String, reason: String },
    /// A single-copy environment whose checksum does not match.
    #[error(
        "{device}: bad CRC in the environment at offset {offset:#x} (stored {stored:#010x}, computed {computed:#010x})"
    )]
    BadCrc {
        device: String,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    /// A redundant environment with no usable copy.
    #[error("{location}: both environment copies are bad: copy 1: {first}; copy 2: {second}")]
    BothCopiesBad {
        location: String,
        first: String,
        second: String,
    },
    /// A write to an area that holds no environment at all: the bootloader
    /// still runs on its built-in default environment, and an environment
    /// holding only our variables would replace all of it.
    #[error(
        "{location}: the environment was never written (all 0x00 or all 0xff); refusing to create one, the bootloader would lose its built-in default environment (let the bootloader save it once, or seed it with fw_setenv -f DEFAULTS)"
    )]
    NeverWritten { location: String },
    /// A variable name that cannot be stored.
    #[error("invalid environment variable name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// A value that cannot be stored.
    #[error("invalid value for environment variable {name}: contains a NUL byte")]
    InvalidValue { name: String },
    /// The new environment does not fit into the area.
    #[error("{location}: environment full: needs {needed} bytes of {capacity}")]
    Full {
        location: String,
        needed: usize,
        capacity: usize,
    },
    /// Another process holds the environment.
    #[error("{path}: locked by another process (gave up after {seconds} s)")]
    Locked { path: String, seconds: u64 },
    /// The canary rule ([`check_canary`], `docs/bootloaders.md`) failed.
    #[error(
        "the bootloader's environment is not visible to us: check fw_env.config ({MENDER_CHECK_SAVEENV_CANARY}=1 but {MENDER_SAVEENV_CANARY}={found})"
    )]
    CanaryMismatch { found: String },
}

/// A store of bootloader variables.
pub trait BootEnv {
    /// The whole environment. An area that is all 0x00 or all 0xff (never
    /// written) reads as empty, not as an error.
    fn read(&self) -> Result<EnvVars, BootEnvError>;

    /// Applies all changes in ONE write of the area: `Some(v)` sets, `None`
    /// deletes; other variables are kept. As with `fw_setenv name=` (what
    /// the Go client ran), an empty value deletes too. Names (non-empty, no
    /// '=', no NUL, no whitespace) and values (no NUL) are validated before
    /// anything is written. Later changes of the same name override earlier
    /// ones. A batch that changes nothing writes nothing.
    fn write(&self, changes: &[(&str, Option<&str>)]) -> Result<(), BootEnvError>;

    /// Where the environment lives, for messages
    /// (`/etc/fw_env.config: /dev/mmcblk0 0x400000`).
    fn describe(&self) -> String;

    /// Replaces the whole environment by `vars` (empty values left out),
    /// whatever is there now, valid or not: for setting up a device or a
    /// test image (`bootenv set --create`), never used by updates.
    /// Backends that cannot do it return [`BootEnvError::Unsupported`].
    fn create(&self, vars: &EnvVars) -> Result<(), BootEnvError> {
        let _ = vars;
        Err(BootEnvError::Unsupported {
            device: self.describe(),
            reason: "creating an environment is not supported for this boot environment type"
                .into(),
        })
    }
}

/// The boot environment selected by `BootEnvType`: U-Boot from
/// `BootEnvConfig` (an `fw_env.config`), GRUB from `GrubEnvDir` or where
/// [`GrubEnv::locate`] finds it, tools from `BootUtilitiesGetNextActivePart`
/// and `BootUtilitiesSetActivePart` (default `fw_printenv`, `fw_setenv`).
pub fn open(config: &crate::config::Config) -> Result<Box<dyn BootEnv>, BootEnvError> {
    use crate::config::BootEnvType;
    Ok(match config.boot_env_type {
        BootEnvType::UBoot => Box::new(UBootEnv::from_config_file(&config.boot_env_config)?),
        BootEnvType::Grub => Box::new(GrubEnv::new(GrubEnv::locate(
            config.grub_env_dir.as_deref(),
        )?)),
        BootEnvType::Tools => Box::new(ToolsEnv::from_config(config)),
    })
}

/// The canary rule: when the bootloader asks for the check
/// (`mender_check_saveenv_canary=1`), it must have left
/// `mender_saveenv_canary=1` where we read; otherwise user space and the
/// bootloader look at different environments and nothing may be written.
pub fn check_canary(env: &EnvVars) -> Result<(), BootEnvError> {
    if env.get(MENDER_CHECK_SAVEENV_CANARY).map(String::as_str) != Some("1") {
        return Ok(());
    }
    match env.get(MENDER_SAVEENV_CANARY).map(String::as_str) {
        Some("1") => Ok(()),
        Some(other) => Err(BootEnvError::CanaryMismatch {
            found: format!("{other:?}"),
        }),
        None => Err(BootEnvError::CanaryMismatch {
            found: "<unset>".into(),
        }),
    }
}

/// Checks a name against what an environment can store.
pub(crate) fn validate_name(name: &str) -> Result<(), BootEnvError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains('=') {
        "contains '='"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name.chars().any(char::is_whitespace) {
        "contains whitespace"
    } else {
        return Ok(());
    };
    Err(BootEnvError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    })
}

/// Checks a batch of changes before anything is written.
pub(crate) fn validate_changes(changes: &[(&str, Option<&str>)]) -> Result<(), BootEnvError> {
    for (name, value) in changes {
        validate_name(name)?;
        if value.is_some_and(|v| v.contains('\0')) {
            return Err(BootEnvError::InvalidValue {
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

/// How long a writer waits for another one holding the environment.
pub(crate) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `flock`s `file` for the time it stays open, waiting up to [`LOCK_WAIT`]
/// for another process. File systems without locks are used unlocked.
pub(crate) fn lock_file(
    file: &std::fs::File,
    path: &std::path::Path,
    exclusive: bool,
) -> Result<(), BootEnvError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let locked = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        let e = match locked {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                if std::time::Instant::now() >= deadline {
                    return Err(BootEnvError::Locked {
                        path: path.display().to_string(),
                        seconds: LOCK_WAIT.as_secs(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            Err(std::fs::TryLockError::Error(e)) => e,
        };
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ENOLCK | libc::EOPNOTSUPP) => {
                log::debug!(
                    "{}: no file locks here ({e}), going on unlocked",
                    path.display()
                );
                return Ok(());
            }
            _ => {
                return Err(BootEnvError::Io {
                    path: path.display().to_string(),
                    op: "lock".into(),
                    cause: e,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvVars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn canary_not_requested_passes() {
        assert!(check_canary(&env(&[])).is_ok());
        assert!(check_canary(&env(&[(MENDER_SAVEENV_CANARY, "0")])).is_ok());
        assert!(check_canary(&env(&[(MENDER_CHECK_SAVEENV_CANARY, "0")])).is_ok());
        assert!(
            check_canary(&env(&[
                (MENDER_CHECK_SAVEENV_CANARY, "0"),
                (MENDER_SAVEENV_CANARY, "0")
            ]))
            .is_ok()
        );
    }

    #[test]
    fn canary_requested_and_present_passes() {
        assert!(
            check_canary(&env(&[
                (MENDER_CHECK_SAVEENV_CANARY, "1"),
                (MENDER_SAVEENV_CANARY, "1")
            ]))
            .is_ok()
        );
    }

    #[test]
    fn canary_requested_but_missing_fails() {
        let err = check_canary(&env(&[(MENDER_CHECK_SAVEENV_CANARY, "1")])).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, BootEnvError::CanaryMismatch { .. }));
        assert!(msg.contains("not visible to us"), "{msg}");
        assert!(msg.contains("fw_env.config"), "{msg}");
        assert!(msg.contains("<unset>"), "{msg}");
    }

    #[test]
    fn canary_requested_but_wrong_fails() {
        for bad in ["0", "", "11", " 1", "yes"] {
            let e = env(&[
                (MENDER_CHECK_SAVEENV_CANARY, "1"),
                (MENDER_SAVEENV_CANARY, bad),
            ]);
            assert!(check_canary(&e).is_err(), "canary {bad:?} accepted");
        }
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", "a=b", "a\0b", "a b", "a\tb", "a\nb", "\u{a0}x"] {
            assert!(
                matches!(validate_name(bad), Err(BootEnvError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        for good in ["a", "mender_boot_part", "x.y-z:1", "ünïcode"] {
            assert!(validate_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn values_are_validated() {
        assert!(validate_changes(&[("a", Some("x y=z\n"))]).is_ok());
        assert!(validate_changes(&[("a", None)]).is_ok());
        assert!(matches!(
            validate_changes(&[("a", Some("1")), ("b", Some("x\0y"))]),
            Err(BootEnvError::InvalidValue { .. })
        ));
        assert!(matches!(
            validate_changes(&[("a", Some("1")), ("b c", None)]),
            Err(BootEnvError::InvalidName { .. })
        ));
    }
}
