//! The default U-Boot environment the layer ships for boards that keep
//! their environment on storage (`meta-mender-rs/.../mender-rs-uboot-env.txt`):
//! filled in as the layer's recipe does, seeded into an environment area by
//! Debian's `fw_setenv -f` (libubootenv, the oracle), then read and driven
//! by the client through a whole update.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::support::device::*;

const ENV_TEXT: &str =
    include_str!("../../meta-mender-rs/recipes-bsp/u-boot/files/mender-rs-uboot-env.txt");

/// The placeholders and what the recipe puts there for a qemuarm64-like
/// machine (rootfs A on partition 2, B on 3, virtio disk).
const MACHINE: &[(&str, &str)] = &[
    ("@MENDER_ROOTFS_PART_A_NUMBER@", "2"),
    ("@MENDER_ROOTFS_PART_B_NUMBER@", "3"),
    ("@MENDER_ROOTFS_PART_A_NUMBER_HEX@", "2"),
    ("@MENDER_ROOTFS_PART_B_NUMBER_HEX@", "3"),
    ("@MENDER_UBOOT_STORAGE_INTERFACE@", "virtio"),
    ("@MENDER_UBOOT_STORAGE_DEVICE@", "0"),
    ("@MENDER_STORAGE_DEVICE_BASE@", "/dev/vda"),
    ("@MENDER_KERNEL_IMAGETYPE@", "Image"),
    ("@MENDER_DTB_NAME@", "qemu.dtb"),
    ("@MENDER_BOOT_KERNEL_TYPE@", "booti"),
];

fn filled() -> String {
    let mut text = ENV_TEXT.to_string();
    for (from, to) in MACHINE {
        text = text.replace(from, to);
    }
    text
}

/// name=value lines, comments and blank lines skipped.
fn settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not name=value: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn every_placeholder_is_known_and_every_line_is_a_setting() {
    let env = settings(&filled());
    for (name, value) in &env {
        assert!(
            !value.contains('@'),
            "{name}: unfilled placeholder in {value:?}"
        );
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad variable name {name:?}"
        );
    }
    // Every placeholder used is one the recipe fills in.
    for line in settings(ENV_TEXT).values() {
        let mut rest = line.as_str();
        while let Some(start) = rest.find('@') {
            let end = rest[start + 1..]
                .find('@')
                .expect("unterminated placeholder")
                + start
                + 2;
            let placeholder = &rest[start..end];
            assert!(
                MACHINE.iter().any(|(p, _)| *p == placeholder),
                "unknown placeholder {placeholder}"
            );
            rest = &rest[end..];
        }
    }
    // The variables the client and the boot logic share.
    for name in [
        "bootlimit",
        "bootcount",
        "upgrade_available",
        "mender_boot_part",
        "mender_boot_part_hex",
        "altbootcmd",
        "bootcmd",
        "mender_check_saveenv_canary",
    ] {
        assert!(env.contains_key(name), "{name} missing");
    }
    assert_eq!(env["bootlimit"], "1");
    assert_eq!(env["upgrade_available"], "0");
    assert_eq!(env["mender_boot_part"], "2");
    // The fallback boot switches partitions, clears the pending upgrade and
    // saves before booting.
    let alt = &env["mender_altbootcmd"];
    for part in [
        "setenv mender_boot_part ${mender_rootfsb_part}",
        "setenv mender_boot_part ${mender_rootfsa_part}",
        "setenv upgrade_available 0",
        "saveenv",
    ] {
        assert!(alt.contains(part), "mender_altbootcmd lacks {part:?}");
    }
    assert!(env["altbootcmd"].starts_with("run mender_altbootcmd"));
}

#[test]
fn seeded_by_fw_setenv_it_carries_a_whole_update() {
    let dev = SimDevice::new();
    // An empty environment area seeded from the default file, as on a
    // board's first boot with `fw_setenv -f`.
    fs::write(&dev.env_file, vec![0u8; 0x4000]).unwrap();
    let defaults = dev.path("mender-rs-uboot-env.txt");
    fs::write(&defaults, filled()).unwrap();
    let out = run_bounded(
        Command::new("fw_setenv")
            .arg("-c")
            .arg(&dev.fw_env_config)
            .arg("-f")
            .arg(&defaults)
            .args(["bootcount", "0"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let expected: BTreeMap<String, String> = settings(&filled())
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    // Our reader sees what libubootenv wrote, byte for byte.
    assert_eq!(dev.env(), expected);

    // U-Boot never ran: the canary it saves at its first boot is missing,
    // so an install is refused before anything is written.
    let artifact = dev.write_rootfs_artifact("release-2", 256 << 10, &[], &[]);
    let a = artifact.display().to_string();
    let out = dev.run(&["install", &a]);
    assert_eq!(exit_code(&out), 1, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mender_saveenv_canary"),
        "{}",
        describe(&out)
    );
    assert_eq!(dev.env(), expected, "nothing written");

    // What mender_setup does at the first boot.
    dev.set_env(&[("mender_saveenv_canary", "1")]);
    dev.ok(&["install", &a]);
    let env = dev.env();
    assert_eq!(env["mender_boot_part"], "3");
    assert_eq!(env["mender_boot_part_hex"], "3");
    assert_eq!(env["upgrade_available"], "1");
    assert_eq!(env["bootcount"], "0");
    // Everything else is as the defaults left it.
    for (k, v) in &expected {
        if ![
            "mender_boot_part",
            "mender_boot_part_hex",
            "upgrade_available",
        ]
        .contains(&k.as_str())
        {
            assert_eq!(env.get(k), Some(v), "{k} changed");
        }
    }
    // fw_printenv agrees.
    let out = run_bounded(
        Command::new("fw_printenv")
            .arg("-c")
            .arg(&dev.fw_env_config)
            .arg("upgrade_available"),
        Duration::from_secs(30),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "upgrade_available=1"
    );
    dev.reboot();
    dev.ok(&["commit"]);
    let env = dev.env();
    assert_eq!(env["upgrade_available"], "0");
    assert_eq!(env["mender_boot_part"], "3");
    assert_eq!(dev.show_artifact(), "release-2");
}

#[test]
fn the_layer_fills_in_every_placeholder_the_file_uses() {
    let class = include_str!("../../meta-mender-rs/classes-recipe/mender-rs-uboot.bbclass");
    let filled_by_class: Vec<&str> = MACHINE
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| class.contains(&format!("s|{p}|")))
        .collect();
    let used: Vec<&str> = MACHINE
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| settings(ENV_TEXT).values().any(|v| v.contains(p)))
        .collect();
    for p in &used {
        assert!(
            filled_by_class.contains(p),
            "{p} is not filled in by mender-rs-uboot.bbclass"
        );
    }
}
