//! Depends against the device's provides and the provides bookkeeping done
//! when an update is committed (`docs/artifacts.md`, "Depends and provides").
//!
//! Device provides are one flat map, as `show-provides` prints them:
//! `artifact_name`, `artifact_group` (when set) and every stored type-info
//! provide.

use super::ArtifactError;
use super::header::{ArtifactHeader, DependValue, Provides};

/// The most the device's provides may take after a commit (keys and
/// values, in bytes). Provides not cleared by an artifact are kept, so
/// without a cap a series of artifacts could grow the store without end;
/// real devices hold a few hundred bytes.
pub const MAX_PROVIDES_SIZE: usize = 1 << 20;

/// Checks that `header` may be installed on a device of `device_type` whose
/// current provides are `provides`. The error names the first failed key.
pub fn check_compatible(
    header: &ArtifactHeader,
    device_type: &str,
    provides: &Provides,
) -> Result<(), ArtifactError> {
    if !header.compatible_devices.iter().any(|d| d == device_type) {
        return Err(ArtifactError::Incompatible(format!(
            "device type '{device_type}' is not among the artifact's compatible devices [{}]",
            header.compatible_devices.join(", ")
        )));
    }
    for (key, wanted) in header.merged_depends() {
        if key == "device_type" {
            continue;
        }
        let fail = |why: String| Err(ArtifactError::Incompatible(format!("depends {key}: {why}")));
        match provides.get(&key) {
            None => {
                return fail(format!(
                    "the device provides no '{key}' (wanted {})",
                    show(&wanted)
                ));
            }
            Some(have) if !wanted.accepts(have) => {
                return fail(format!(
                    "the device has '{have}', the artifact wants {}",
                    show(&wanted)
                ));
            }
            Some(_) => {}
        }
    }
    let size: usize = provides_after_commit(provides, header)
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if size > MAX_PROVIDES_SIZE {
        return Err(ArtifactError::format(format!(
            "the device's provides would take {size} bytes after this artifact, more than the {} allowed",
            MAX_PROVIDES_SIZE
        )));
    }
    Ok(())
}

fn show(v: &DependValue) -> String {
    match v {
        DependValue::One(s) => format!("'{s}'"),
        DependValue::Any(l) => format!("one of [{}]", l.join(", ")),
    }
}

/// Wildcard match where `*` stands for any run of characters and every other
/// character for itself.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // Greedy match with one backtrack point: linear for patterns like these.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The device provides after committing `header` over `current`
/// (`docs/artifacts.md`, "Depends and provides").
pub fn provides_after_commit(current: &Provides, header: &ArtifactHeader) -> Provides {
    let clears = header.clears_provides();
    let cleared = |key: &str| match &clears {
        None => true,
        Some(patterns) => patterns.iter().any(|p| wildcard_match(p, key)),
    };
    let mut next: Provides = current
        .iter()
        .filter(|(k, _)| k.as_str() != "artifact_name" && k.as_str() != "artifact_group")
        .filter(|(k, _)| !cleared(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for payload in &header.payloads {
        next.extend(payload.provides.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    next.insert("artifact_name".into(), header.name.clone());
    match (&header.group, current.get("artifact_group")) {
        (Some(group), _) => {
            next.insert("artifact_group".into(), group.clone());
        }
        (None, Some(old)) if !cleared("artifact_group") => {
            next.insert("artifact_group".into(), old.clone());
        }
        _ => {}
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::header::PayloadHeader;

    fn provides(pairs: &[(&str, &str)]) -> Provides {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn artifact(
        name: &str,
        group: Option<&str>,
        clears: Option<Vec<&str>>,
        new: &[(&str, &str)],
    ) -> ArtifactHeader {
        ArtifactHeader {
            name: name.into(),
            group: group.map(Into::into),
            compatible_devices: vec!["dev".into()],
            payloads: vec![PayloadHeader {
                payload_type: Some("rootfs-image".into()),
                provides: provides(new),
                clears_provides: clears.map(|c| c.into_iter().map(Into::into).collect()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("rootfs-image.*", "rootfs-image.checksum"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(wildcard_match("a*c", "abcbc"));
        assert!(!wildcard_match("a*c", "abcb"));
        assert!(!wildcard_match("rootfs-image.*", "rootfs-image"));
        assert!(wildcard_match("artifact_group", "artifact_group"));
        assert!(!wildcard_match("artifact_group", "artifact_groups"));
    }

    #[test]
    fn compatibility() {
        let mut a = artifact("r2", None, None, &[]);
        a.depends
            .insert("artifact_name".into(), DependValue::Any(vec!["r1".into()]));
        a.payloads[0].depends.insert(
            "rootfs-image.checksum".into(),
            DependValue::One("abc".into()),
        );
        let dev = provides(&[("artifact_name", "r1"), ("rootfs-image.checksum", "abc")]);
        check_compatible(&a, "dev", &dev).unwrap();
        let e = check_compatible(&a, "other", &dev).unwrap_err().to_string();
        assert!(e.contains("device type 'other'"), "{e}");
        let e = check_compatible(&a, "dev", &provides(&[("artifact_name", "r0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("artifact_name"), "{e}");
        let e = check_compatible(&a, "dev", &provides(&[("artifact_name", "r1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rootfs-image.checksum"), "{e}");
    }

    #[test]
    fn provides_are_capped() {
        let big = "x".repeat(MAX_PROVIDES_SIZE / 2);
        let dev = provides(&[("artifact_name", "r1"), ("old.data", &big)]);
        // Kept (not cleared) old provides count too.
        let a = artifact("r2", None, Some(vec!["other.*"]), &[("new.data", &big)]);
        let e = check_compatible(&a, "dev", &dev).unwrap_err().to_string();
        assert!(e.contains("more than the 1048576 allowed"), "{e}");
        let a = artifact("r2", None, None, &[("new.data", &big)]);
        check_compatible(&a, "dev", &dev).unwrap();
    }

    #[test]
    fn commit_bookkeeping() {
        let cur = provides(&[
            ("artifact_name", "r1"),
            ("artifact_group", "g"),
            ("rootfs-image.checksum", "old"),
            ("other.version", "1"),
        ]);
        // No clears: every old type-info provide goes, the group too.
        let next = provides_after_commit(&cur, &artifact("r2", None, None, &[("x", "1")]));
        assert_eq!(next, provides(&[("artifact_name", "r2"), ("x", "1")]));
        // Default rootfs clears keep unrelated provides.
        let clears = vec!["artifact_group", "rootfs_image_checksum", "rootfs-image.*"];
        let next = provides_after_commit(
            &cur,
            &artifact(
                "r2",
                None,
                Some(clears),
                &[("rootfs-image.checksum", "new")],
            ),
        );
        assert_eq!(
            next,
            provides(&[
                ("artifact_name", "r2"),
                ("other.version", "1"),
                ("rootfs-image.checksum", "new")
            ])
        );
        // A group is kept when nothing clears it, replaced when given.
        let next = provides_after_commit(&cur, &artifact("r2", None, Some(vec!["x.*"]), &[]));
        assert_eq!(next.get("artifact_group").map(String::as_str), Some("g"));
        let next = provides_after_commit(&cur, &artifact("r2", Some("h"), Some(vec!["x.*"]), &[]));
        assert_eq!(next.get("artifact_group").map(String::as_str), Some("h"));
        // An explicit empty list behaves as absent.
        let next = provides_after_commit(&cur, &artifact("r2", None, Some(vec![]), &[]));
        assert_eq!(next, provides(&[("artifact_name", "r2")]));
    }
}
