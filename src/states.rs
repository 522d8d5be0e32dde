//! The names of the update states and of their state scripts, defined once
//! (`docs/architecture.md`). The artifact reader and writer check script
//! names with them, the script runner finds scripts by them, and the engine
//! and the daemon say which state they are in with them.
//!
//! A leaf module of its own because every layer needs the vocabulary: the
//! artifact format at the bottom, the scripts and the engine above it.

/// A state that has scripts: `Idle`, `Sync` and `Download` run the root
/// filesystem's scripts, the `Artifact*` states the artifact's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptState {
    Idle,
    Sync,
    Download,
    ArtifactInstall,
    ArtifactReboot,
    ArtifactCommit,
    ArtifactRollback,
    ArtifactRollbackReboot,
    ArtifactFailure,
}

impl ScriptState {
    /// Every state, in the order of a deployment.
    pub const ALL: [ScriptState; 9] = [
        ScriptState::Idle,
        ScriptState::Sync,
        ScriptState::Download,
        ScriptState::ArtifactInstall,
        ScriptState::ArtifactReboot,
        ScriptState::ArtifactCommit,
        ScriptState::ArtifactRollback,
        ScriptState::ArtifactRollbackReboot,
        ScriptState::ArtifactFailure,
    ];

    /// The state as spelled in script names.
    pub fn name(self) -> &'static str {
        match self {
            ScriptState::Idle => "Idle",
            ScriptState::Sync => "Sync",
            ScriptState::Download => "Download",
            ScriptState::ArtifactInstall => "ArtifactInstall",
            ScriptState::ArtifactReboot => "ArtifactReboot",
            ScriptState::ArtifactCommit => "ArtifactCommit",
            ScriptState::ArtifactRollback => "ArtifactRollback",
            ScriptState::ArtifactRollbackReboot => "ArtifactRollbackReboot",
            ScriptState::ArtifactFailure => "ArtifactFailure",
        }
    }

    /// Whether the scripts of this state live in the root filesystem
    /// directory (`Idle`, `Sync`, `Download`) rather than the Artifact one.
    pub fn is_rootfs(self) -> bool {
        matches!(
            self,
            ScriptState::Idle | ScriptState::Sync | ScriptState::Download
        )
    }

    /// The states whose scripts an artifact may carry, comma-separated.
    pub fn artifact_state_names() -> String {
        ScriptState::ALL
            .iter()
            .filter(|s| !s.is_rootfs())
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// When, around its state, a script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptAction {
    Enter,
    Leave,
    Error,
}

impl ScriptAction {
    pub const ALL: [ScriptAction; 3] = [
        ScriptAction::Enter,
        ScriptAction::Leave,
        ScriptAction::Error,
    ];

    /// The action as spelled in script names.
    pub fn name(self) -> &'static str {
        match self {
            ScriptAction::Enter => "Enter",
            ScriptAction::Leave => "Leave",
            ScriptAction::Error => "Error",
        }
    }
}

/// `<State>_<Action>`, as in logs and update control maps
/// (`ArtifactInstall_Enter`).
pub fn state_label(state: ScriptState, action: ScriptAction) -> String {
    format!("{}_{}", state.name(), action.name())
}

/// A parsed state script name `<State>_<Enter|Leave|Error>_NN[_text]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptName {
    pub state: ScriptState,
    pub action: ScriptAction,
    pub order: u8,
}

/// Parses a state script name. The optional `_text` suffix must be
/// non-empty and free of white space and `/`.
pub fn parse_script_name(name: &str) -> Option<ScriptName> {
    let mut parts = name.splitn(4, '_');
    let state = parts.next()?;
    let action = parts.next()?;
    let order = parts.next()?;
    let rest = parts.next();
    let state = *ScriptState::ALL.iter().find(|s| s.name() == state)?;
    let action = *ScriptAction::ALL.iter().find(|a| a.name() == action)?;
    if order.len() != 2 || !order.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(text) = rest
        && (text.is_empty() || text.chars().any(|c| c.is_whitespace() || c == '/'))
    {
        return None;
    }
    Some(ScriptName {
        state,
        action,
        order: order.parse().ok()?,
    })
}

/// A name that stays one entry of its directory: not empty, not `.` or
/// `..`, without `/` or NUL. The artifact reader, the writer and the script
/// store each add their own limits on top.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// The longest deployment id accepted (Mender's are 36-character UUIDs).
pub const MAX_DEPLOYMENT_ID: usize = 128;

/// A deployment id the device can use: it names the deployment log file,
/// goes into log lines and URLs. 1 to [`MAX_DEPLOYMENT_ID`] characters of
/// `A-Z a-z 0-9 . _ -`, and not `.` or `..`. The server client refuses
/// other ids from the server; the deployment log refuses to name a file
/// after one.
pub fn is_deployment_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DEPLOYMENT_ID
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_ids() {
        for ok in [
            "standalone",
            "2f8e-11",
            "a.b_c-d",
            &"i".repeat(MAX_DEPLOYMENT_ID),
        ] {
            assert!(is_deployment_id(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a\nb",
            &"i".repeat(MAX_DEPLOYMENT_ID + 1),
        ] {
            assert!(!is_deployment_id(bad), "{bad:?}");
        }
    }

    /// Artifact scripts only (what the writer accepts).
    fn artifact_script(name: &str) -> Option<ScriptName> {
        parse_script_name(name).filter(|s| !s.state.is_rootfs())
    }

    #[test]
    fn script_names() {
        let s = artifact_script("ArtifactInstall_Enter_01").unwrap();
        assert_eq!(
            (s.state, s.action, s.order),
            (ScriptState::ArtifactInstall, ScriptAction::Enter, 1)
        );
        assert!(artifact_script("ArtifactCommit_Leave_99_send-mail").is_some());
        assert!(artifact_script("Download_Enter_01").is_none());
        assert!(parse_script_name("Download_Enter_01").is_some());
        assert!(artifact_script("ArtifactInstall_Enter_1").is_none());
        assert!(artifact_script("ArtifactInstall_Start_01").is_none());
        assert!(artifact_script("ArtifactInstall_Enter_01_").is_none());
        assert!(artifact_script("ArtifactInstall_Enter_01_a/b").is_none());
        assert!(artifact_script("ArtifactInstall_Enter_ab").is_none());
    }

    #[test]
    fn names_and_labels() {
        assert!(ScriptState::Sync.is_rootfs());
        assert!(!ScriptState::ArtifactFailure.is_rootfs());
        assert_eq!(ScriptAction::Error.name(), "Error");
        assert_eq!(
            state_label(ScriptState::ArtifactInstall, ScriptAction::Enter),
            "ArtifactInstall_Enter"
        );
        assert_eq!(
            ScriptState::artifact_state_names(),
            "ArtifactInstall, ArtifactReboot, ArtifactCommit, ArtifactRollback, \
             ArtifactRollbackReboot, ArtifactFailure"
        );
    }

    #[test]
    fn plain_names() {
        assert!(is_plain_file_name("ArtifactInstall_Enter_01"));
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }
}
