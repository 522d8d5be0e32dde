//! The values of the Mender client's store (`mender-store`) as 3.x, 4.x
//! and 5.x write them (`docs/takeover.md`, "What is read"): each parser
//! takes the raw bytes of one key and says, on error, what is wrong with
//! it; the caller adds the key and the file.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::artifact::header::Provides;

/// `standalone-state`'s `InState` while an installed update waits for
/// `commit` or `rollback` (4.x/5.x, version 2).
pub const AWAITING_COMMIT: &str = "Before_ArtifactCommit_Enter";

/// The software the Mender client says is installed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Installed {
    /// `artifact-name`; `None` when the key is missing or empty.
    pub name: Option<String>,
    /// `artifact-group`; `None` when missing or empty.
    pub group: Option<String>,
    /// `artifact-provides`: the type-info provides, without name and group.
    pub type_info: Provides,
}

impl Installed {
    /// The provides as depends checks and `show-provides` see them: the
    /// type-info provides plus `artifact_name` and `artifact_group`.
    pub fn provides(&self) -> Provides {
        let mut all = self.type_info.clone();
        // The dedicated keys win over a stray copy inside the JSON.
        all.remove("artifact_name");
        all.remove("artifact_group");
        if let Some(name) = &self.name {
            all.insert("artifact_name".into(), name.clone());
        }
        if let Some(group) = &self.group {
            all.insert("artifact_group".into(), group.clone());
        }
        all
    }

    /// The inverse of [`Installed::provides`], for handing back.
    pub fn from_provides(provides: &Provides) -> Installed {
        let mut type_info = provides.clone();
        let name = type_info.remove("artifact_name");
        let group = type_info.remove("artifact_group").filter(|g| !g.is_empty());
        Installed {
            name,
            group,
            type_info,
        }
    }
}

/// `artifact-name` / `artifact-group`: a raw string. Empty means unset.
pub fn parse_text(bytes: Option<Vec<u8>>) -> Result<Option<String>, String> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    if text.is_empty() {
        return Ok(None);
    }
    if let Some(why) = crate::artifact::text_problem(&text, false) {
        return Err(why);
    }
    Ok(Some(text))
}

/// `artifact-provides`: a JSON object of strings; missing, empty or the
/// literal `null` (3.x marshals a nil map so) is no provides.
pub fn parse_provides(bytes: Option<Vec<u8>>) -> Result<Provides, String> {
    let Some(bytes) = bytes else {
        return Ok(Provides::new());
    };
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(Provides::new());
    }
    let provides: BTreeMap<String, String> = serde_json::from_slice(trimmed)
        .map_err(|e| format!("not a JSON object of strings: {e}"))?;
    for (k, v) in &provides {
        if let Some(why) = crate::artifact::text_problem(k, true) {
            return Err(format!("provide key '{}' {why}", k.escape_debug()));
        }
        if let Some(why) = crate::artifact::text_problem(v, false) {
            return Err(format!("provide '{}' {why}", k.escape_debug()));
        }
    }
    Ok(provides)
}

/// `standalone-state`: version 1 (3.x: the first six fields) or 2 (4.x,
/// 5.x: with `InState`, `Failed`, `RolledBack`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StandaloneState {
    #[serde(rename = "Version")]
    pub version: u32,
    #[serde(rename = "ArtifactName")]
    pub artifact_name: String,
    #[serde(rename = "ArtifactGroup", default)]
    pub artifact_group: String,
    #[serde(rename = "PayloadTypes", default)]
    pub payload_types: Option<Vec<String>>,
    #[serde(rename = "ArtifactTypeInfoProvides", default)]
    pub provides: Option<Provides>,
    #[serde(rename = "ArtifactClearsProvides", default)]
    pub clears_provides: Option<Vec<String>>,
    #[serde(rename = "InState", default)]
    pub in_state: Option<String>,
    #[serde(rename = "Failed", default)]
    pub failed: bool,
    #[serde(rename = "RolledBack", default)]
    pub rolled_back: bool,
}

impl StandaloneState {
    pub fn parse(bytes: &[u8]) -> Result<StandaloneState, String> {
        let state: StandaloneState =
            serde_json::from_slice(bytes).map_err(|e| format!("not a standalone state: {e}"))?;
        if state.version != 1 && state.version != 2 {
            return Err(format!(
                "version {} (versions 1 and 2 are known)",
                state.version
            ));
        }
        if let Some(why) = crate::artifact::text_problem(&state.artifact_name, false) {
            return Err(format!("ArtifactName {why}"));
        }
        Ok(state)
    }

    /// Installed and waiting for `commit` or `rollback`: every version 1
    /// record (3.x writes it only then), a version 2 one in
    /// `Before_ArtifactCommit_Enter` that neither failed nor rolled back.
    pub fn awaits_commit(&self) -> bool {
        self.version == 1
            || (self.in_state.as_deref() == Some(AWAITING_COMMIT)
                && !self.failed
                && !self.rolled_back)
    }

    /// The one payload type; `None` when there is not exactly one.
    pub fn payload_type(&self) -> Option<&str> {
        match self.payload_types.as_deref() {
            Some([one]) => Some(one),
            _ => None,
        }
    }
}

/// `state` / `state-uncommitted`: a managed deployment in flight, as 3.x
/// (`json.Marshal(StateData)`) and 4.x (`GenerateStateDataJson`) write it
/// (`docs/takeover.md`, "A deployment from the server"). Fields 3.x leaves
/// out (`omitempty`) or that only one of them writes default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ManagedState {
    #[serde(rename = "Version", default)]
    pub version: u32,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "UpdateInfo", default)]
    pub update_info: Option<ManagedUpdateInfo>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ManagedUpdateInfo {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Artifact", default)]
    pub artifact: Option<ManagedArtifact>,
    #[serde(rename = "SupportsRollback", default)]
    pub supports_rollback: Option<String>,
    #[serde(rename = "StateDataStoreCount", default)]
    pub store_count: u32,
    #[serde(rename = "HasDBSchemaUpdate", default)]
    pub has_db_schema_update: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct ManagedArtifact {
    #[serde(rename = "PayloadTypes", default)]
    pub payload_types: Option<Vec<String>>,
    #[serde(default)]
    pub artifact_name: String,
    #[serde(default)]
    pub artifact_group: String,
    #[serde(default)]
    pub artifact_provides: Option<Provides>,
    #[serde(default)]
    pub clears_artifact_provides: Option<Vec<String>>,
}

/// `SupportsRollback` when the payload can roll back.
pub const ROLLBACK_SUPPORTED: &str = "rollback-supported";
pub const ROLLBACK_NOT_SUPPORTED: &str = "rollback-not-supported";

impl ManagedState {
    pub fn parse(bytes: &[u8]) -> Result<ManagedState, String> {
        let state: ManagedState =
            serde_json::from_slice(bytes).map_err(|e| format!("not a deployment state: {e}"))?;
        // Version 1 (before Mender 2.0) is read as 4.x migrates it: a
        // rootfs-image that supports rollback.
        if state.version > 2 {
            return Err(format!(
                "version {} (versions 1 and 2 are known)",
                state.version
            ));
        }
        if let Some(a) = state.update_info.as_ref().and_then(|u| u.artifact.as_ref()) {
            if let Some(why) = crate::artifact::text_problem(&a.artifact_name, false) {
                return Err(format!("artifact_name {why}"));
            }
            for (k, v) in a.artifact_provides.iter().flatten() {
                if let Some(why) = crate::artifact::text_problem(k, true)
                    .or_else(|| crate::artifact::text_problem(v, false))
                {
                    return Err(format!("artifact_provides '{}' {why}", k.escape_debug()));
                }
            }
        }
        Ok(state)
    }

    pub fn deployment_id(&self) -> &str {
        self.update_info.as_ref().map_or("", |u| u.id.as_str())
    }

    /// The artifact of the deployment (empty when the record has none).
    pub fn artifact(&self) -> ManagedArtifact {
        self.update_info
            .as_ref()
            .and_then(|u| u.artifact.clone())
            .unwrap_or_default()
    }

    /// The one payload type: version 1 records are rootfs images.
    pub fn payload_type(&self) -> Option<String> {
        if self.version < 2 {
            return Some("rootfs-image".into());
        }
        match self.artifact().payload_types.as_deref() {
            Some([one]) => Some(one.clone()),
            _ => None,
        }
    }

    /// Whether the payload can roll back, when the record says. Version 1
    /// records always could. 4.x/5.x write `""` until a failure makes them
    /// ask the module (checked by hand with 5.1.0): then `None`, and the
    /// installer is asked, as 4.x would.
    pub fn supports_rollback(&self) -> Option<bool> {
        if self.version < 2 {
            return Some(true);
        }
        match self
            .update_info
            .as_ref()
            .and_then(|u| u.supports_rollback.as_deref())
        {
            Some(ROLLBACK_SUPPORTED) => Some(true),
            Some(ROLLBACK_NOT_SUPPORTED) => Some(false),
            _ => None,
        }
    }

    /// `StateDataStoreCount`: how often the client saved the record.
    pub fn store_count(&self) -> u32 {
        self.update_info.as_ref().map_or(0, |u| u.store_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provides_quirks_of_3x_and_4x() {
        for empty in [None, Some(b"".to_vec()), Some(b"null".to_vec())] {
            assert_eq!(parse_provides(empty).unwrap(), Provides::new());
        }
        let p = parse_provides(Some(br#"{"rootfs-image.version":"v1"}"#.to_vec())).unwrap();
        assert_eq!(p["rootfs-image.version"], "v1");
        for bad in [&br#"[1]"#[..], br#"{"a":1}"#, br#"{"a":"x\ny"}"#, b"\xff"] {
            assert!(parse_provides(Some(bad.to_vec())).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_groups() {
        assert_eq!(parse_text(None).unwrap(), None);
        assert_eq!(parse_text(Some(Vec::new())).unwrap(), None);
        assert_eq!(parse_text(Some(b"r1".to_vec())).unwrap().unwrap(), "r1");
        assert!(parse_text(Some(b"r1\nartifact_name=x".to_vec())).is_err());
        let installed = Installed {
            name: Some("r1".into()),
            group: None,
            type_info: [("artifact_name".to_string(), "stray".to_string())].into(),
        };
        assert_eq!(installed.provides()["artifact_name"], "r1");
        assert_eq!(
            Installed::from_provides(&installed.provides())
                .name
                .unwrap(),
            "r1"
        );
    }

    #[test]
    fn standalone_versions() {
        // 3.x (v1), as `json.Marshal` writes it: nil maps are `null`.
        let v1 = StandaloneState::parse(
            br#"{"Version":1,"ArtifactName":"r2","ArtifactGroup":"","ArtifactTypeInfoProvides":null,"PayloadTypes":["rootfs-image"]}"#,
        )
        .unwrap();
        assert!(v1.awaits_commit());
        assert_eq!(v1.payload_type(), Some("rootfs-image"));
        assert_eq!(v1.clears_provides, None);
        let v2 = br#"{"Version":2,"ArtifactName":"r2","ArtifactGroup":"","PayloadTypes":["rootfs-image"],"ArtifactTypeInfoProvides":{"rootfs-image.version":"r2"},"ArtifactClearsProvides":["rootfs-image.*"],"InState":"Before_ArtifactCommit_Enter","Failed":false,"RolledBack":false}"#;
        let v2 = StandaloneState::parse(v2).unwrap();
        assert!(v2.awaits_commit());
        assert_eq!(v2.clears_provides.unwrap(), vec!["rootfs-image.*"]);
        let other = StandaloneState::parse(
            br#"{"Version":2,"ArtifactName":"r2","InState":"ArtifactRollback","Failed":true}"#,
        )
        .unwrap();
        assert!(!other.awaits_commit());
        let e = StandaloneState::parse(br#"{"Version":3,"ArtifactName":"r2"}"#).unwrap_err();
        assert!(e.contains("version 3"), "{e}");
    }

    #[test]
    fn managed_states_of_3x_and_4x() {
        // 4.x (shared spec 2.3), with `reboot-type-automatic`.
        let v2 = ManagedState::parse(
            br#"{"Version":2,"Name":"reboot","UpdateInfo":{"Artifact":{"Source":{"URI":"https://x","Expire":"2026-01-01T00:00:00Z"},"device_types_compatible":["rpi4"],"PayloadTypes":["rootfs-image"],"artifact_name":"release-2","artifact_group":"","artifact_provides":{"rootfs-image.version":"release-2"},"clears_artifact_provides":["rootfs-image.*"]},"ID":"d-2","RebootRequested":["reboot-type-automatic"],"SupportsRollback":"rollback-supported","StateDataStoreCount":7,"HasDBSchemaUpdate":false,"AllRollbacksSuccessful":false}}"#,
        )
        .unwrap();
        assert_eq!(v2.payload_type().as_deref(), Some("rootfs-image"));
        assert_eq!(v2.supports_rollback(), Some(true));
        assert_eq!(v2.store_count(), 7);
        let a = v2.artifact();
        assert_eq!(a.artifact_name, "release-2");
        assert_eq!(a.clears_artifact_provides.unwrap(), ["rootfs-image.*"]);
        // 3.x leaves empty provides and clears out; no rollback support.
        let v2 = ManagedState::parse(
            br#"{"Version":2,"Name":"update-install","UpdateInfo":{"Artifact":{"PayloadTypes":["single-file"],"artifact_name":"m"},"ID":"d-3","SupportsRollback":"rollback-not-supported","StateDataStoreCount":1}}"#,
        )
        .unwrap();
        assert_eq!(v2.payload_type().as_deref(), Some("single-file"));
        assert_eq!(v2.supports_rollback(), Some(false));
        assert_eq!(v2.artifact().artifact_provides, None);
        // 5.x before any failure: not asked yet.
        let v5 = ManagedState::parse(
            br#"{"Version":2,"Name":"reboot","UpdateInfo":{"Artifact":{"PayloadTypes":["rootfs-image"],"artifact_name":"r"},"ID":"d-5","SupportsRollback":"","StateDataStoreCount":2}}"#,
        )
        .unwrap();
        assert_eq!(v5.supports_rollback(), None);
        // Version 1: a rootfs image that can roll back.
        let v1 = ManagedState::parse(br#"{"Version":1,"Name":"reboot","UpdateInfo":{"ID":"d-1"}}"#)
            .unwrap();
        assert_eq!(v1.payload_type().as_deref(), Some("rootfs-image"));
        assert_eq!(v1.supports_rollback(), Some(true));
        for bad in [
            &br#"{"Version":3,"Name":"reboot"}"#[..],
            br#"{"Version":2,"Name":"reboot","UpdateInfo":{"Artifact":{"artifact_name":"a\nb"}}}"#,
            br#"{"Version":2,"Name":"reboot","UpdateInfo":{"Artifact":{"artifact_provides":{"k":"v\n"}}}}"#,
            br#"{"Version":2}"#,
        ] {
            assert!(ManagedState::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn managed_state_names_its_deployment() {
        let s = ManagedState::parse(
            br#"{"Version":2,"Name":"reboot","UpdateInfo":{"ID":"d-1","Artifact":{}}}"#,
        )
        .unwrap();
        assert_eq!((s.name.as_str(), s.deployment_id()), ("reboot", "d-1"));
    }
}
