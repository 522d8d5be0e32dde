//! The script inventory of the Mender integration test of state scripts
//! (spec §3.9.2), shared by the standalone and the daemon tests, and the
//! states an artifact's scripts run in.

/// The states whose scripts an artifact carries (`<State>_Enter|Leave|Error`).
pub const ARTIFACT_STATES: [&str; 6] = [
    "ArtifactInstall",
    "ArtifactReboot",
    "ArtifactCommit",
    "ArtifactRollback",
    "ArtifactRollbackReboot",
    "ArtifactFailure",
];

/// Rootfs scripts installed in `RootfsScriptsPath`.
pub const ROOTFS_SCRIPTS: &[&str] = &[
    "Idle_Enter_08_testing",
    "Idle_Enter_09",
    "Idle_Enter_100",
    "Idle_Leave_09",
    "Idle_Leave_10",
    "Idle_Error_00",
    "Sync_Enter_02",
    "Sync_Enter_03",
    "Sync_Leave_04",
    "Sync_Leave_15",
    "Sync_Error_15",
    "Sync_Error_16",
    "Download_Enter_12",
    "Download_Enter_13",
    "Download_Leave_14",
    "Download_Leave_25",
    "Download_Error_25",
];

/// Artifact scripts shipped in the artifact.
pub const ARTIFACT_SCRIPTS: &[&str] = &[
    "ArtifactInstall_Enter_01",
    "ArtifactInstall_Enter_02",
    "ArtifactInstall_Leave_01",
    "ArtifactInstall_Leave_03",
    "ArtifactInstall_Error_01",
    "ArtifactInstall_Error_02",
    "ArtifactInstall_Error_99",
    "ArtifactReboot_Enter_01",
    "ArtifactReboot_Enter_11",
    "ArtifactReboot_Leave_01",
    "ArtifactReboot_Leave_89",
    "ArtifactReboot_Leave_99",
    "ArtifactReboot_Error_97",
    "ArtifactReboot_Error_98",
    "ArtifactCommit_Enter_01",
    "ArtifactCommit_Enter_05",
    "ArtifactCommit_Leave_01_extra_string",
    "ArtifactCommit_Leave_91",
    "ArtifactCommit_Error_91",
    "ArtifactRollback_Enter_00",
    "ArtifactRollback_Enter_01",
    "ArtifactRollback_Leave_00",
    "ArtifactRollback_Leave_01",
    "ArtifactRollback_Error_15",
    "ArtifactRollbackReboot_Enter_00",
    "ArtifactRollbackReboot_Enter_99",
    "ArtifactRollbackReboot_Leave_01",
    "ArtifactRollbackReboot_Leave_99",
    "ArtifactRollbackReboot_Error_88",
    "ArtifactRollbackReboot_Error_99",
    "ArtifactFailure_Enter_22",
    "ArtifactFailure_Enter_33",
    "ArtifactFailure_Leave_44",
    "ArtifactFailure_Leave_55",
    "ArtifactFailure_Error_55",
];
