//! What `deployments/next` asks the device to install, checked before any
//! of it is used: the fields Mender 3.x requires, a deployment id that can
//! name files, and names without control characters.

use serde::Deserialize;

use crate::states::MAX_DEPLOYMENT_ID;

/// What `deployments/next` asks the device to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentInstruction {
    pub id: String,
    pub artifact_name: String,
    pub uri: String,
    pub device_types_compatible: Vec<String>,
    /// The update control map sent with it (v2 `next`), not validated yet.
    pub control_map: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawInstruction {
    id: Option<String>,
    artifact: Option<RawArtifact>,
    update_control_map: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawArtifact {
    artifact_name: Option<String>,
    source: Option<RawSource>,
    device_types_compatible: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawSource {
    uri: Option<String>,
}

impl DeploymentInstruction {
    /// Parses and checks a 200 answer of `next` (the fields Mender 3.x
    /// requires). An instruction with an id but a missing field is
    /// returned as `Err((Some(id), ..))` so the deployment can be failed.
    pub(crate) fn parse(body: &[u8]) -> Result<DeploymentInstruction, (Option<String>, String)> {
        let raw: RawInstruction = serde_json::from_slice(body).map_err(|e| {
            (
                None,
                format!("the deployment instruction is not valid JSON: {e}"),
            )
        })?;
        let id = raw
            .id
            .filter(|s| !s.is_empty())
            .ok_or((None, "the deployment instruction has no id".to_string()))?;
        // The id names files (the deployment log) and goes into log lines
        // and URLs: one that cannot is not reported back either.
        check_deployment_id(&id).map_err(|e| (None, e))?;
        let missing = |field: &str| {
            (
                Some(id.clone()),
                format!("deployment {id}: {field} missing"),
            )
        };
        let artifact = raw.artifact.ok_or_else(|| missing("artifact"))?;
        let artifact_name = artifact
            .artifact_name
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("artifact.artifact_name"))?;
        // Names go into log lines and are compared with the artifact's: the
        // artifact's own rule for names (no control characters) applies.
        let refuse = |field: &str, text: &str| {
            crate::artifact::text_problem(text, false).map(|why| {
                (
                    Some(id.clone()),
                    format!("deployment {id}: {field} '{}' {why} (names may not hold control characters)", text.escape_debug()),
                )
            })
        };
        if let Some(e) = refuse("artifact.artifact_name", &artifact_name) {
            return Err(e);
        }
        let uri = artifact
            .source
            .and_then(|s| s.uri)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("artifact.source.uri"))?;
        let device_types_compatible = artifact
            .device_types_compatible
            .filter(|d| !d.is_empty())
            .ok_or_else(|| missing("artifact.device_types_compatible"))?;
        if let Some(e) = device_types_compatible
            .iter()
            .find_map(|d| refuse("artifact.device_types_compatible", d))
        {
            return Err(e);
        }
        Ok(DeploymentInstruction {
            id,
            artifact_name,
            uri,
            device_types_compatible,
            control_map: raw.update_control_map.filter(|m| !m.is_null()),
        })
    }
}

/// A deployment id the device can use: 1 to [`MAX_DEPLOYMENT_ID`]
/// characters of `A-Z a-z 0-9 . _ -` (a UUID), not `.` or `..`.
fn check_deployment_id(id: &str) -> Result<(), String> {
    if crate::states::is_deployment_id(id) {
        Ok(())
    } else {
        let shown: String = id.chars().take(64).collect();
        Err(format!(
            "the deployment id {shown:?}{} is not usable (at most {MAX_DEPLOYMENT_ID} characters of A-Z, a-z, 0-9, '.', '_', '-')",
            if shown.len() < id.len() { "..." } else { "" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_ids_must_be_usable_as_file_names() {
        for ok in ["0d5a2c3e-0000-4000-8000-000000000001", "d1", "a.b_c"] {
            assert!(check_deployment_id(ok).is_ok(), "{ok}");
        }
        let long = "i".repeat(MAX_DEPLOYMENT_ID + 1);
        for bad in ["..", ".", "a/b", "../x", "a\nb", "a b", "é", long.as_str()] {
            assert!(check_deployment_id(bad).is_err(), "{bad:?}");
        }
        let answer = br#"{"id":"../x","artifact":{"artifact_name":"a","source":{"uri":"u"},"device_types_compatible":["t"]}}"#;
        let e = DeploymentInstruction::parse(answer).unwrap_err();
        assert_eq!(e.0, None, "an unusable id is not reported back");
        assert!(e.1.contains("deployment id"), "{}", e.1);
    }
}
