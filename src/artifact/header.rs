//! Artifact metadata: `version`, `header-info`, `type-info`, `meta-data`,
//! normalised across format versions 2 and 3.
//!
//! Parsing goes through `serde_json::Value` rather than derived structs so
//! that an error can name the member and the field path (`header-info:
//! artifact_depends.device_type[1]: expected a string`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::chunk_index::{self, ChunkIndex};
use super::{ArtifactError, check_text};

/// A depends value: a single string or a list of accepted strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum DependValue {
    One(String),
    Any(Vec<String>),
}

impl DependValue {
    pub fn accepts(&self, value: &str) -> bool {
        match self {
            DependValue::One(v) => v == value,
            DependValue::Any(vs) => vs.iter().any(|v| v == value),
        }
    }
}

pub type Provides = BTreeMap<String, String>;
pub type Depends = BTreeMap<String, DependValue>;

/// One payload's header bucket (`headers/0000/`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PayloadHeader {
    /// The payload type; None for an empty (bootstrap) payload.
    pub payload_type: Option<String>,
    pub provides: Provides,
    pub depends: Depends,
    /// None when the field is absent (which clears everything on commit).
    pub clears_provides: Option<Vec<String>>,
    pub meta_data: Option<Map<String, Value>>,
    /// File names announced by a v2 header (`headers/0000/files`).
    pub v2_files: Option<Vec<String>>,
    /// The chunk index of a chunked rootfs-image artifact (type-info's
    /// `mender_rs_chunk_index`, docs/artifacts.md).
    pub chunk_index: Option<ChunkIndex>,
}

/// An artifact state script carried in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub name: String,
    pub content: Vec<u8>,
}

/// The verified, parsed header of an artifact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArtifactHeader {
    pub format_version: u32,
    pub name: String,
    pub group: Option<String>,
    pub compatible_devices: Vec<String>,
    /// header-info `artifact_provides` as stored (v3); `artifact_name` for v2.
    pub provides: Provides,
    /// header-info `artifact_depends` as stored (v3); `device_type` for v2.
    pub depends: Depends,
    pub scripts: Vec<Script>,
    pub payloads: Vec<PayloadHeader>,
}

impl ArtifactHeader {
    /// The payload of this artifact (current clients support exactly one).
    pub fn payload(&self) -> Option<&PayloadHeader> {
        self.payloads.first()
    }

    /// All depends: header-info's and every payload's.
    pub fn merged_depends(&self) -> Depends {
        let mut all = self.depends.clone();
        for p in &self.payloads {
            all.extend(p.depends.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        all
    }

    /// The concatenated `clears_artifact_provides` of all payloads; None
    /// when no payload has a non-empty list (an explicit empty list behaves
    /// as absent: `docs/artifacts.md`, "Depends and provides").
    pub fn clears_provides(&self) -> Option<Vec<String>> {
        let all: Vec<String> = self
            .payloads
            .iter()
            .filter_map(|p| p.clears_provides.as_ref())
            .flatten()
            .cloned()
            .collect();
        if all.is_empty() { None } else { Some(all) }
    }
}

/// Parses the `version` member; returns the format version (2 or 3).
pub fn parse_version(bytes: &[u8]) -> Result<u32, ArtifactError> {
    let v = parse_json("version", bytes)?;
    let obj = as_object("version", "", &v)?;
    match obj.get("format") {
        Some(Value::String(f)) if f == "mender" => {}
        Some(Value::String(f)) => {
            return Err(ArtifactError::format(format!(
                "version: format is '{f}', expected 'mender'"
            )));
        }
        _ => {
            return Err(ArtifactError::format(
                "version: field 'format' missing or not a string",
            ));
        }
    }
    let version = match obj.get("version") {
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
    .ok_or_else(|| ArtifactError::format("version: field 'version' missing or not an integer"))?;
    match version {
        2 | 3 => Ok(version as u32),
        1 => Err(ArtifactError::format(
            "version: artifact format version 1 is no longer supported; rebuild it with a current mender-artifact",
        )),
        n => Err(ArtifactError::format(format!(
            "version: unsupported artifact format version {n}"
        ))),
    }
}

/// Fills `header` from a v3 `header-info`.
pub fn parse_header_info_v3(
    bytes: &[u8],
    header: &mut ArtifactHeader,
) -> Result<(), ArtifactError> {
    const M: &str = "header-info";
    let v = parse_json(M, bytes)?;
    let obj = as_object(M, "", &v)?;
    let payloads = obj
        .get("payloads")
        .ok_or_else(|| ArtifactError::format("header-info: field 'payloads' missing"))?;
    let payloads = as_array(M, "payloads", payloads)?;
    header.payloads = parse_payload_types(M, "payloads", payloads)?;

    let provides = obj
        .get("artifact_provides")
        .ok_or_else(|| ArtifactError::format("header-info: field 'artifact_provides' missing"))?;
    let provides = as_object(M, "artifact_provides", provides)?;
    header.provides = string_map(M, "artifact_provides", provides)?;
    header.name = match header.provides.get("artifact_name") {
        Some(n) if !n.is_empty() => n.clone(),
        _ => {
            return Err(ArtifactError::format(
                "header-info: artifact_provides.artifact_name missing or empty",
            ));
        }
    };
    header.group = header.provides.get("artifact_group").cloned();

    let depends = match obj.get("artifact_depends") {
        Some(d) => as_object(M, "artifact_depends", d)?,
        None => {
            return Err(ArtifactError::format(
                "header-info: field 'artifact_depends' missing",
            ));
        }
    };
    header.depends = depends_map(M, "artifact_depends", depends)?;
    header.compatible_devices = match header.depends.get("device_type") {
        Some(DependValue::Any(list)) if !list.is_empty() => list.clone(),
        Some(DependValue::One(one)) => vec![one.clone()],
        _ => {
            return Err(ArtifactError::format(
                "header-info: artifact_depends.device_type missing or empty",
            ));
        }
    };
    Ok(())
}

/// Fills `header` from a v2 `header-info` (`updates`, `device_types_compatible`,
/// `artifact_name`).
pub fn parse_header_info_v2(
    bytes: &[u8],
    header: &mut ArtifactHeader,
) -> Result<(), ArtifactError> {
    const M: &str = "header-info";
    let v = parse_json(M, bytes)?;
    let obj = as_object(M, "", &v)?;
    let updates = obj
        .get("updates")
        .ok_or_else(|| ArtifactError::format("header-info: field 'updates' missing"))?;
    header.payloads = parse_payload_types(M, "updates", as_array(M, "updates", updates)?)?;
    header.name = match obj.get("artifact_name") {
        Some(Value::String(s)) if !s.is_empty() => {
            check_text(M, "artifact_name", s, false)?;
            s.clone()
        }
        _ => {
            return Err(ArtifactError::format(
                "header-info: artifact_name missing or empty",
            ));
        }
    };
    let devices = obj.get("device_types_compatible").ok_or_else(|| {
        ArtifactError::format("header-info: field 'device_types_compatible' missing")
    })?;
    header.compatible_devices = string_list(M, "device_types_compatible", devices)?;
    if header.compatible_devices.is_empty() {
        return Err(ArtifactError::format(
            "header-info: device_types_compatible is empty",
        ));
    }
    header.provides = BTreeMap::from([("artifact_name".to_string(), header.name.clone())]);
    header.depends = BTreeMap::from([(
        "device_type".to_string(),
        DependValue::Any(header.compatible_devices.clone()),
    )]);
    Ok(())
}

fn parse_payload_types(
    member: &str,
    field: &str,
    list: &[Value],
) -> Result<Vec<PayloadHeader>, ArtifactError> {
    if list.len() != 1 {
        return Err(ArtifactError::format(format!(
            "{member}: {field} has {} entries; exactly one payload is supported",
            list.len()
        )));
    }
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let obj = as_object(member, &path, p)?;
        let payload_type = match obj.get("type") {
            Some(Value::Null) => None,
            Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
            Some(Value::String(_)) => {
                return Err(ArtifactError::format(format!(
                    "{member}: {path}.type is empty"
                )));
            }
            Some(_) => {
                return Err(ArtifactError::format(format!(
                    "{member}: {path}.type must be a string or null"
                )));
            }
            None => {
                return Err(ArtifactError::format(format!(
                    "{member}: {path}.type missing"
                )));
            }
        };
        if let Some(t) = &payload_type
            && !valid_type_name(t)
        {
            return Err(ArtifactError::format(format!(
                "{member}: {path}.type '{t}' is not a valid payload type name"
            )));
        }
        out.push(PayloadHeader {
            payload_type,
            ..Default::default()
        });
    }
    Ok(out)
}

/// Payload types name Update Module executables: no path separators.
fn valid_type_name(t: &str) -> bool {
    t != "."
        && t != ".."
        && !t.contains('/')
        && !t.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Parses `headers/NNNN/type-info` into `payload`. The type there must agree
/// with header-info; mender-artifact 3.9 writes an empty string for
/// rootfs-image, which we accept.
pub fn parse_type_info(
    member: &str,
    bytes: &[u8],
    v3: bool,
    payload: &mut PayloadHeader,
) -> Result<(), ArtifactError> {
    let v = parse_json(member, bytes)?;
    let obj = as_object(member, "", &v)?;
    match obj.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.is_empty() => {}
        Some(Value::String(t)) => {
            if payload.payload_type.as_deref() != Some(t.as_str()) {
                return Err(ArtifactError::format(format!(
                    "{member}: type '{t}' differs from header-info's '{}'",
                    payload.payload_type.as_deref().unwrap_or("null")
                )));
            }
        }
        Some(_) => {
            return Err(ArtifactError::format(format!(
                "{member}: type must be a string or null"
            )));
        }
    }
    // Everything but the chunk index is held to the cap of the other header
    // JSON: provides and depends reach the store.
    let mut rest = bytes.len() as u64;
    if let Some(encoded) = obj.get(chunk_index::TYPE_INFO_KEY) {
        let key = chunk_index::TYPE_INFO_KEY;
        if !v3 {
            return Err(ArtifactError::format(format!(
                "{member}: {key}: only format version 3 artifacts are chunked"
            )));
        }
        if payload.payload_type.as_deref() != Some("rootfs-image") {
            return Err(ArtifactError::format(format!(
                "{member}: {key}: only rootfs-image payloads are chunked"
            )));
        }
        let Value::String(text) = encoded else {
            return Err(type_error(member, key, "a string", encoded));
        };
        payload.chunk_index = Some(ChunkIndex::parse_base64(text)?);
        rest = rest.saturating_sub(text.len() as u64);
    }
    let cap = super::reader::MAX_HEADER_JSON_SIZE;
    if rest > cap {
        return Err(ArtifactError::format(format!(
            "{member}: {rest} bytes besides {} is over the limit of {cap}",
            chunk_index::TYPE_INFO_KEY
        )));
    }
    if !v3 {
        return Ok(());
    }
    if let Some(p) = obj.get("artifact_provides").filter(|p| !p.is_null()) {
        payload.provides = string_map(
            member,
            "artifact_provides",
            as_object(member, "artifact_provides", p)?,
        )?;
    }
    if let Some(d) = obj.get("artifact_depends").filter(|d| !d.is_null()) {
        payload.depends = depends_map(
            member,
            "artifact_depends",
            as_object(member, "artifact_depends", d)?,
        )?;
    }
    if let Some(c) = obj.get("clears_artifact_provides").filter(|c| !c.is_null()) {
        payload.clears_provides = Some(string_list(member, "clears_artifact_provides", c)?);
    }
    Ok(())
}

/// Parses `meta-data`: empty means absent; otherwise a JSON object. Like
/// mender-artifact, any value is allowed except lists holding objects or
/// lists.
pub fn parse_meta_data(
    member: &str,
    bytes: &[u8],
) -> Result<Option<Map<String, Value>>, ArtifactError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    let v = parse_json(member, bytes)?;
    let obj = as_object(member, "", &v)?;
    check_meta_values(member, "", obj)?;
    Ok(Some(obj.clone()))
}

fn check_meta_values(
    member: &str,
    path: &str,
    obj: &Map<String, Value>,
) -> Result<(), ArtifactError> {
    for (k, val) in obj {
        let at = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        // Keys become file names and log text for Update Modules; '=' is
        // harmless there (meta-data is never printed as key=value).
        check_text(member, "meta-data key", &at, false)?;
        match val {
            Value::Object(inner) => check_meta_values(member, &at, inner)?,
            Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                return Err(ArtifactError::format(format!(
                    "{member}: {at}: lists may not contain objects or lists"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses a v2 `headers/NNNN/files`: `{"files": ["name", ...]}`.
pub fn parse_v2_files(member: &str, bytes: &[u8]) -> Result<Vec<String>, ArtifactError> {
    let v = parse_json(member, bytes)?;
    let obj = as_object(member, "", &v)?;
    match obj.get("files") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(f) => string_list(member, "files", f),
    }
}

/// Merges payload provides/depends with the header-info ones, refusing a key
/// present in both (the reference readers do the same).
pub fn check_conflicts(header: &ArtifactHeader) -> Result<(), ArtifactError> {
    for (i, p) in header.payloads.iter().enumerate() {
        let member = format!("headers/{i:04}/type-info");
        for k in p.provides.keys() {
            if header.provides.contains_key(k) {
                return Err(ArtifactError::format(format!(
                    "{member}: artifact_provides.{k} conflicts with the same key in header-info"
                )));
            }
        }
        for k in p.depends.keys() {
            if header.depends.contains_key(k) {
                return Err(ArtifactError::format(format!(
                    "{member}: artifact_depends.{k} conflicts with the same key in header-info"
                )));
            }
        }
    }
    Ok(())
}

fn parse_json(member: &str, bytes: &[u8]) -> Result<Value, ArtifactError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ArtifactError::format(format!("{member}: malformed JSON: {e}")))
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn type_error(member: &str, path: &str, want: &str, v: &Value) -> ArtifactError {
    let at = if path.is_empty() {
        "top level".to_string()
    } else {
        path.to_string()
    };
    ArtifactError::format(format!(
        "{member}: {at}: expected {want}, found {}",
        describe(v)
    ))
}

fn as_object<'a>(
    member: &str,
    path: &str,
    v: &'a Value,
) -> Result<&'a Map<String, Value>, ArtifactError> {
    v.as_object()
        .ok_or_else(|| type_error(member, path, "an object", v))
}

fn as_array<'a>(member: &str, path: &str, v: &'a Value) -> Result<&'a Vec<Value>, ArtifactError> {
    v.as_array()
        .ok_or_else(|| type_error(member, path, "a list", v))
}

fn string_list(member: &str, path: &str, v: &Value) -> Result<Vec<String>, ArtifactError> {
    as_array(member, path, v)?
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => {
                check_text(member, &format!("{path}[{i}]"), s, false)?;
                Ok(s.clone())
            }
            other => Err(type_error(
                member,
                &format!("{path}[{i}]"),
                "a string",
                other,
            )),
        })
        .collect()
}

fn string_map(
    member: &str,
    path: &str,
    obj: &Map<String, Value>,
) -> Result<Provides, ArtifactError> {
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => {
                check_text(member, &format!("{path} key"), k, true)?;
                check_text(member, &format!("{path}.{k}"), s, false)?;
                Ok((k.clone(), s.clone()))
            }
            other => Err(type_error(
                member,
                &format!("{path}.{k}"),
                "a string",
                other,
            )),
        })
        .collect()
}

fn depends_map(
    member: &str,
    path: &str,
    obj: &Map<String, Value>,
) -> Result<Depends, ArtifactError> {
    obj.iter()
        .map(|(k, v)| {
            check_text(member, &format!("{path} key"), k, true)?;
            let p = format!("{path}.{k}");
            let dv = match v {
                Value::String(s) => {
                    check_text(member, &p, s, false)?;
                    DependValue::One(s.clone())
                }
                Value::Array(_) => DependValue::Any(string_list(member, &p, v)?),
                other => {
                    return Err(type_error(
                        member,
                        &p,
                        "a string or a list of strings",
                        other,
                    ));
                }
            };
            Ok((k.clone(), dv))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_member() {
        assert_eq!(
            parse_version(br#"{"format":"mender","version":3}"#).unwrap(),
            3
        );
        assert_eq!(
            parse_version(br#"{"format":"mender","version":2}"#).unwrap(),
            2
        );
        let e = parse_version(br#"{"format":"mender","version":1}"#).unwrap_err();
        assert!(e.to_string().contains("no longer supported"));
        assert!(parse_version(br#"{"format":"other","version":3}"#).is_err());
        assert!(parse_version(br#"{"format":"mender","version":"3"}"#).is_err());
        assert!(parse_version(b"not json").is_err());
    }

    #[test]
    fn header_info_v3_fields() {
        let mut h = ArtifactHeader::default();
        parse_header_info_v3(
            br#"{"payloads":[{"type":"rootfs-image"}],"artifact_provides":{"artifact_name":"r2","artifact_group":"g"},
                "artifact_depends":{"device_type":["a","b"],"artifact_name":["r1"]}}"#,
            &mut h,
        )
        .unwrap();
        assert_eq!(h.name, "r2");
        assert_eq!(h.group.as_deref(), Some("g"));
        assert_eq!(h.compatible_devices, ["a", "b"]);
        assert_eq!(h.payloads[0].payload_type.as_deref(), Some("rootfs-image"));
        assert!(h.depends["artifact_name"].accepts("r1"));
    }

    #[test]
    fn header_info_errors_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"payloads":[{"type":"x"}],"artifact_provides":{"artifact_name":3},"artifact_depends":{"device_type":["a"]}}"#, "artifact_provides.artifact_name"),
            (br#"{"payloads":[{"type":"x"}],"artifact_provides":{"artifact_name":"n"},"artifact_depends":{"device_type":["a",1]}}"#, "artifact_depends.device_type[1]"),
            (br#"{"payloads":[{"type":""}],"artifact_provides":{"artifact_name":"n"},"artifact_depends":{"device_type":["a"]}}"#, "payloads[0].type"),
            (br#"{"payloads":[{"type":"../x"}],"artifact_provides":{"artifact_name":"n"},"artifact_depends":{"device_type":["a"]}}"#, "payloads[0].type"),
            (br#"{"payloads":[],"artifact_provides":{"artifact_name":"n"},"artifact_depends":{"device_type":["a"]}}"#, "payloads has 0"),
            (br#"{"payloads":[{"type":"x"}],"artifact_provides":{"artifact_name":"n"},"artifact_depends":{}}"#, "device_type"),
            (br#"{"payloads":[{"type":"x"}],"artifact_provides":{"artifact_name":"n"},"artifact_depends":{"device_type":["a"]},}"#, "malformed JSON"),
        ];
        for (json, want) in cases {
            let e = parse_header_info_v3(json, &mut ArtifactHeader::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
    }

    #[test]
    fn type_info_and_meta_data() {
        let mut p = PayloadHeader {
            payload_type: Some("rootfs-image".into()),
            ..Default::default()
        };
        parse_type_info(
            "t",
            br#"{"type":"","artifact_provides":{"k":"v"},"artifact_depends":{"d":"x","e":["y","z"]},"clears_artifact_provides":["a.*"]}"#,
            true,
            &mut p,
        )
        .unwrap();
        assert_eq!(p.provides["k"], "v");
        assert!(p.depends["e"].accepts("z"));
        assert_eq!(p.clears_provides.as_deref(), Some(&["a.*".to_string()][..]));
        assert!(parse_type_info("t", br#"{"type":"other"}"#, true, &mut p).is_err());
        assert!(
            parse_type_info(
                "t",
                br#"{"type":"rootfs-image","artifact_provides":{"k":1}}"#,
                true,
                &mut p
            )
            .is_err()
        );
        assert!(parse_meta_data("m", b"").unwrap().is_none());
        assert!(
            parse_meta_data("m", br#"{"a":"b","n":[1,"x"]}"#)
                .unwrap()
                .is_some()
        );
        assert!(parse_meta_data("m", br#"{"a":{"b":1,"c":[1]},"n":null,"t":true}"#).is_ok());
        assert!(parse_meta_data("m", br#"{"a":[{"b":1}]}"#).is_err());
        assert!(parse_meta_data("m", br#"{"a":{"b":[[1]]}}"#).is_err());
        assert!(parse_meta_data("m", br#"[1]"#).is_err());
    }

    #[test]
    fn type_info_chunk_index() {
        use crate::artifact::chunking::ChunkParams;
        use crate::artifact::compression::Compression;
        let index = ChunkIndex {
            compression: Compression::Gzip,
            params: ChunkParams::for_average(16 << 10).unwrap(),
            payload_size: 5,
            header_frame_len: 40,
            trailer_frame_offset: 47,
            trailer_frame_len: 20,
            chunks: vec![chunk_index::ChunkRecord {
                frame_offset: 40,
                frame_len: 7,
                len: 5,
                sha256: [3; 32],
            }],
        };
        let json = serde_json::json!({
            "type": "rootfs-image",
            "artifact_provides": {"k": "v"},
            chunk_index::TYPE_INFO_KEY: index.encode_base64(),
        })
        .to_string();
        let payload = |t: &str| PayloadHeader {
            payload_type: Some(t.into()),
            ..Default::default()
        };
        let mut p = payload("rootfs-image");
        parse_type_info("t", json.as_bytes(), true, &mut p).unwrap();
        assert_eq!(p.chunk_index.as_ref(), Some(&index));
        assert_eq!(p.provides["k"], "v");
        // No key, no index.
        let mut p = payload("rootfs-image");
        parse_type_info("t", br#"{"type":"rootfs-image"}"#, true, &mut p).unwrap();
        assert!(p.chunk_index.is_none());

        let refused = |json: &str, t: &str, v3: bool, want: &str| {
            let e = parse_type_info("t", json.as_bytes(), v3, &mut payload(t))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        };
        let other = json.replace("rootfs-image", "single-file");
        refused(&other, "single-file", true, "only rootfs-image payloads");
        refused(&json, "rootfs-image", false, "only format version 3");
        refused(
            r#"{"mender_rs_chunk_index":["x"]}"#,
            "rootfs-image",
            true,
            "t: mender_rs_chunk_index: expected a string, found a list",
        );
        // Only the index may take type-info past the cap of other header JSON.
        let cap = crate::artifact::reader::MAX_HEADER_JSON_SIZE as usize;
        let big = format!(
            r#"{{"artifact_provides":{{"k":"{}"}},"mender_rs_chunk_index":"{}"}}"#,
            "v".repeat(cap),
            index.encode_base64()
        );
        refused(&big, "rootfs-image", true, "besides mender_rs_chunk_index");
        let padded = format!(r#"{{"type":"rootfs-image","pad":"{}"}}"#, " ".repeat(cap));
        refused(&padded, "rootfs-image", true, "over the limit of 1048576");
    }
}
