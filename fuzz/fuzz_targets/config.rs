//! Feeds arbitrary text to the configuration parser (`Config::from_str`),
//! as JSON when the first byte is even and as TOML when it is odd (the rest
//! is the file). A panic is a crash; so is a broken contract:
//!
//! - an error's message is one line and starts with the file name;
//! - an accepted configuration has every duration in 1..=u32::MAX seconds
//!   (0 means the default, larger values are refused so that adding them to
//!   a time stamp cannot overflow), every server URL has a scheme and a host
//!   and no white space or trailing `/`, no path that must be set is empty,
//!   the tenant token has no surrounding white space, `RebootCommand` names
//!   a program (it is split at white space);
//! - parsing the same text again gives the same result.

#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mender_rs::config::Config;

const NAME: &str = "fuzz.conf";
const MAX_SECONDS: u64 = u32::MAX as u64;

fn check_seconds(what: &str, d: Duration) {
    assert!(
        d.subsec_nanos() == 0 && (1..=MAX_SECONDS).contains(&d.as_secs()),
        "{what} out of bounds: {d:?}"
    );
}

fn check_path(what: &str, p: &Path) {
    assert!(!p.as_os_str().is_empty(), "{what} is an empty path");
}

fn check(config: &Config) {
    check_seconds("state_script_timeout", config.state_script_timeout);
    check_seconds(
        "state_script_retry_interval",
        config.state_script_retry_interval,
    );
    check_seconds(
        "state_script_retry_timeout",
        config.state_script_retry_timeout,
    );
    check_seconds("module_timeout", config.module_timeout);
    check_seconds("update_poll_interval", config.update_poll_interval);
    check_seconds("inventory_poll_interval", config.inventory_poll_interval);
    check_seconds("retry_poll_interval", config.retry_poll_interval);
    check_seconds(
        "update_control_map_boot_expiration",
        config.update_control_map_boot_expiration,
    );
    if let Some(d) = config.update_control_map_expiration {
        check_seconds("update_control_map_expiration", d);
    }
    assert!(config.retry_download_count > 0, "retry_download_count is 0");
    for url in &config.servers {
        let (scheme, host) = url
            .split_once("://")
            .unwrap_or_else(|| panic!("server URL without a scheme: {url:?}"));
        assert!(
            !scheme.is_empty() && !host.is_empty(),
            "bad server URL {url:?}"
        );
        assert!(!url.ends_with('/'), "server URL ends in '/': {url:?}");
        assert!(
            !url.chars().any(char::is_whitespace),
            "server URL with white space: {url:?}"
        );
    }
    assert_eq!(
        config.tenant_token,
        config.tenant_token.trim(),
        "tenant token not trimmed"
    );
    for (what, p) in [
        ("device_type_file", &config.device_type_file),
        ("rootfs_scripts_path", &config.rootfs_scripts_path),
        ("artifact_scripts_path", &config.artifact_scripts_path),
        ("modules_path", &config.modules_path),
        ("modules_work_path", &config.modules_work_path),
        ("boot_env_config", &config.boot_env_config),
        ("identity_script", &config.identity_script),
        ("inventory_scripts_path", &config.inventory_scripts_path),
    ] {
        check_path(what, p);
    }
    for (what, p) in [
        ("rootfs_part_a", &config.rootfs_part_a),
        ("rootfs_part_b", &config.rootfs_part_b),
        ("grub_env_dir", &config.grub_env_dir),
        ("server_certificate", &config.server_certificate),
        ("auth_private_key", &config.auth_private_key),
    ] {
        if let Some(p) = p {
            check_path(what, p);
        }
    }
    for p in &config.artifact_verify_keys {
        check_path("artifact_verify_keys[]", p);
    }
    if let Some(client) = &config.https_client {
        check_path("https_client.certificate", &client.certificate);
        check_path("https_client.key", &client.key);
    }
    for (what, s) in [
        (
            "boot_utilities_set_active_part",
            &config.boot_utilities_set_active_part,
        ),
        (
            "boot_utilities_get_next_active_part",
            &config.boot_utilities_get_next_active_part,
        ),
        ("daemon_log_level", &config.daemon_log_level),
    ] {
        if let Some(s) = s {
            assert!(!s.is_empty(), "{what} is Some(\"\")");
        }
    }
    assert!(
        config.reboot_command.split_whitespace().next().is_some(),
        "reboot_command has no program: {:?}",
        config.reboot_command
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let toml = selector & 1 == 1;
    let data_dir = Path::new("/data/mender");
    let first = Config::from_str(NAME, text, toml, data_dir);
    let second = Config::from_str(NAME, text, toml, data_dir);
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            check(a);
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "not deterministic");
        }
        (Err(a), Err(b)) => {
            let message = a.to_string();
            assert_eq!(message, b.to_string(), "not deterministic");
            assert!(
                message.starts_with(&format!("{NAME}: ")),
                "message does not start with the file name: {message:?}"
            );
            assert!(!message.contains('\n'), "multi-line message: {message:?}");
        }
        _ => panic!("accepted once and refused once"),
    }
});
