//! Every `Name` of Mender's deployment record maps to the state our
//! update resumes in (`docs/takeover.md`, "A deployment in flight").

use super::*;

#[test]
fn each_mender_state_name_maps_to_our_resume_state() {
    let cases: [(&str, &str, bool); 12] = [
        ("reboot", "artifact-reboot", false),
        ("after-reboot", "artifact-reboot", false),
        ("update-store", "download", false),
        ("update-after-commit", "artifact-commit-leave", false),
        ("update-after-first-commit", "artifact-commit-leave", false),
        ("update-error", "artifact-failure", true),
        ("cleanup", "cleanup", true),
        ("rollback", "artifact-rollback", true),
        ("rollback-reboot", "artifact-rollback-reboot", true),
        ("after-rollback-reboot", "artifact-rollback-reboot", true),
        ("update-install", "artifact-install", true),
        ("mender-update-control-pause", "artifact-install", true),
    ];
    for (name, phase, failed) in cases {
        let dev = SimDevice::new();
        dev.set_env(&BOOTED_UPDATE);
        let record = STATE_4X.replace(r#""Name":"reboot""#, &format!(r#""Name":"{name}""#));
        mender_store(
            &dev.data,
            &[
                ("artifact-name", "release-1"),
                ("artifact-provides", r#"{"rootfs-image.checksum":"c1"}"#),
                ("state", &record),
            ],
        );
        let out = dev.run(&["show-artifact"]);
        assert_eq!(exit_code(&out), 0, "{name}: {}", describe(&out));
        let ours: serde_json::Value =
            serde_json::from_slice(&fs::read(dev.data.join(OUR_STORE)).unwrap()).unwrap();
        let update = &ours["update"];
        assert_eq!(update["phase"], phase, "{name}: {ours}");
        assert_eq!(update["failed"], failed, "{name}");
        assert_eq!(update["deployment_id"], "dep-7", "{name}");
        // Committed already: the artifact's provides, by its clears rules.
        let committed = phase == "artifact-commit-leave";
        let want = if committed { "release-2" } else { "release-1" };
        assert_eq!(ours["provides"]["artifact_name"], want, "{name}");
        let checksum = if committed { "c2" } else { "c1" };
        assert_eq!(
            ours["provides"]["rootfs-image.checksum"], checksum,
            "{name}"
        );
    }
    // Rebooted into, but the bootloader went back: the rollback's end.
    let dev = SimDevice::new();
    mender_store(&dev.data, &[("state", STATE_4X)]);
    assert_eq!(exit_code(&dev.run(&["show-artifact"])), 0);
    let ours: serde_json::Value =
        serde_json::from_slice(&fs::read(dev.data.join(OUR_STORE)).unwrap()).unwrap();
    assert_eq!(ours["update"]["phase"], "artifact-rollback-reboot");
    // No deployment id: an error naming the key; nothing changes.
    let dev = SimDevice::new();
    dev.set_env(&BOOTED_UPDATE);
    let record = STATE_4X.replace(r#""ID":"dep-7","#, "");
    mender_store(&dev.data, &[("state", &record)]);
    let out = dev.run(&["show-artifact"]);
    assert_eq!(exit_code(&out), 1, "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'state'"));
    assert!(!dev.data.join(OUR_STORE).exists());
    assert!(store_path(&dev.data).exists());
}
