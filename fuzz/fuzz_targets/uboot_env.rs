//! Feeds arbitrary bytes to the U-Boot environment parsers. The low two
//! bits of the first byte pick what the rest is:
//!
//! - 0: `fw_env.config` text (`UBootEnv::from_config_str`);
//! - 1: a single-copy environment area (CRC, entries);
//! - 2: two redundant copies (CRC, flag, entries each), the rest cut in two
//!   equal halves;
//! - 3: like 2, but the first byte's bit 2 set means "single copy".
//!
//! With bit 3 of the first byte set, the target fixes each copy's CRC
//! before the read, so that the fuzzer reaches the entries (a random CRC
//! almost never matches). The area lives in a file of this process under
//! /dev/shm (or the temporary directory) named by a generated
//! `fw_env.config`; the public `BootEnv` read and write are used.
//!
//! A panic is a crash; so is a broken contract:
//!
//! - errors are one line (the configuration's name first, for config text);
//! - an accepted configuration has one or two areas, each of
//!   6..=64 MiB bytes that end within `u64`, two areas of the same size
//!   that do not overlap on one device;
//! - an environment that reads fine, written with one more variable, reads
//!   back as the same variables plus that one (what we did not change is
//!   kept), and a second read gives the same;
//! - parsing is deterministic.

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mender_rs::bootenv::{BootEnv, BootEnvError, UBootEnv};

const CONFIG_NAME: &str = "fw_env.config";
const MAX_ENV_SIZE: usize = 64 << 20;
const PROBE: &str = "fuzz_probe";

static AREA_FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("mender-rs-fuzz-uboot-{}.env", std::process::id()))
});

/// CRC-32 (IEEE, as U-Boot), bit by bit: the target only needs it to forge
/// matching checksums.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn one_line(message: &str) {
    assert!(!message.is_empty(), "empty message");
    assert!(!message.contains('\n'), "multi-line message: {message:?}");
}

fn config_text(text: &str) {
    let result = UBootEnv::from_config_str(CONFIG_NAME, text);
    match &result {
        Ok(env) => {
            let areas = env.areas();
            assert!(matches!(areas.len(), 1 | 2), "{} areas", areas.len());
            for a in areas {
                assert!(
                    (6..=MAX_ENV_SIZE).contains(&a.size),
                    "area size {:#x} accepted",
                    a.size
                );
                assert!(
                    a.offset.checked_add(a.size as u64).is_some(),
                    "area at {:#x} of {:#x} bytes ends beyond u64",
                    a.offset,
                    a.size
                );
                assert!(!a.device.as_os_str().is_empty(), "empty device");
            }
            if let [a, b] = areas {
                assert_eq!(a.size, b.size, "redundant areas of different sizes");
                if a.device == b.device {
                    assert!(
                        a.offset + a.size as u64 <= b.offset
                            || b.offset + b.size as u64 <= a.offset,
                        "overlapping areas accepted"
                    );
                }
            }
            assert_eq!(env.is_redundant(), areas.len() == 2);
        }
        Err(e) => {
            let message = e.to_string();
            one_line(&message);
            assert!(
                message.starts_with(CONFIG_NAME),
                "message does not name the configuration: {message:?}"
            );
        }
    }
    let again = UBootEnv::from_config_str(CONFIG_NAME, text);
    assert_eq!(
        result
            .as_ref()
            .map(|e| e.areas().to_vec())
            .map_err(ToString::to_string),
        again
            .as_ref()
            .map(|e| e.areas().to_vec())
            .map_err(ToString::to_string),
        "not deterministic"
    );
}

fn binary(data: &[u8], redundant: bool, fix_crc: bool) {
    let mut data = data.to_vec();
    let (size, header) = if redundant {
        data.truncate(data.len() / 2 * 2);
        (data.len() / 2, 5)
    } else {
        (data.len(), 4)
    };
    if size < 6 {
        return;
    }
    if fix_crc {
        for copy in data.chunks_mut(size) {
            let crc = crc32(&copy[header..]);
            copy[..4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let path = AREA_FILE.display().to_string();
    let mut config = format!("{path} 0x0 {size:#x}\n");
    if redundant {
        config.push_str(&format!("{path} {size:#x} {size:#x}\n"));
    }
    let env = UBootEnv::from_config_str(CONFIG_NAME, &config).expect("the generated config");
    std::fs::write(&*AREA_FILE, &data).expect("write the area file");

    let vars = match env.read() {
        Ok(vars) => vars,
        Err(e) => {
            one_line(&e.to_string());
            return;
        }
    };
    let again = env
        .read()
        .expect("a second read of an environment that was read");
    assert_eq!(vars, again, "a second read gives other variables");

    match env.write(&[(PROBE, Some("1"))]) {
        Ok(()) => {
            let mut expected = vars.clone();
            expected.insert(PROBE.into(), "1".into());
            let after = env
                .read()
                .unwrap_or_else(|e| panic!("the environment we wrote does not read: {e}"));
            assert_eq!(after, expected, "a write changed other variables");
        }
        // Full, or never written (all 0x00 / 0xff): nothing written.
        Err(e @ (BootEnvError::Full { .. } | BootEnvError::NeverWritten { .. })) => {
            one_line(&e.to_string());
            let after = env.read().expect("read after a refused write");
            assert_eq!(after, vars, "a refused write changed the environment");
        }
        Err(e) => panic!("unexpected write error: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let fix_crc = selector & 8 != 0;
    match selector & 3 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                config_text(text);
            }
        }
        1 => binary(rest, false, fix_crc),
        2 => binary(rest, true, fix_crc),
        _ => binary(rest, selector & 4 == 0, fix_crc),
    }
});
