//! The Mender Artifact format: a streaming reader, a writer and signatures.
//!
//! The reader makes one forward pass over any `Read` and hands payload bytes
//! to a [`reader::ArtifactHandler`] as they stream; the writer produces
//! artifacts that mender-artifact 3.9 validates. Both share the metadata
//! types of [`header`] and the manifest of [`manifest`].

pub mod adaptive;
pub mod chunk_index;
#[cfg(feature = "writer")]
pub mod chunked_writer;
pub mod chunking;
pub mod compression;
pub mod depends;
pub mod frame_decoder;
mod hashing;
pub mod header;
pub mod manifest;
pub mod reader;
pub mod signature;
#[cfg(feature = "writer")]
pub mod signer;
mod tar_guard;
#[cfg(feature = "writer")]
pub mod writer;

use std::fmt;
use std::io;

/// Everything that can go wrong with an artifact. Messages are one line and
/// name the member, field or file concerned.
#[derive(Debug)]
pub enum ArtifactError {
    /// The artifact is malformed: structure, JSON, names, sizes.
    Format(String),
    /// A member or payload file does not match its manifest checksum.
    Checksum(String),
    /// The signature is missing, unverifiable or wrong.
    Signature(String),
    /// The artifact does not fit this device (depends vs provides).
    Incompatible(String),
    /// Reading the input or writing the output failed.
    Io { context: String, source: io::Error },
    /// The consumer of the payload refused or failed.
    Consumer(anyhow::Error),
}

impl ArtifactError {
    pub fn format(msg: impl Into<String>) -> Self {
        ArtifactError::Format(msg.into())
    }
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        ArtifactError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ArtifactError::Format(m) => format!("invalid artifact: {m}"),
            ArtifactError::Checksum(m) => format!("checksum mismatch: {m}"),
            ArtifactError::Signature(m) => format!("signature: {m}"),
            ArtifactError::Incompatible(m) => format!("artifact not compatible: {m}"),
            ArtifactError::Io { context, source } => format!("{context}: {source}"),
            ArtifactError::Consumer(e) => format!("{e:#}"),
        };
        // Messages quote names and fields from the input (and the tar
        // crate's errors quote raw header bytes): keep them on one line and
        // free of terminal control sequences.
        f.write_str(&escape_controls(&text))
    }
}

/// Escapes control characters so that untrusted text stays one printable line.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl std::error::Error for ArtifactError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ArtifactError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What is wrong with `text` as a name, key or value taken from an artifact,
/// if anything. These end up in `show-provides` output, whose `key=value`
/// lines device scripts parse, and in logs: a control character (C0, DEL
/// and C1, `char::is_control`) could forge a line or a terminal sequence,
/// and `=` or an empty string in a key could forge a `key=value` split.
pub fn text_problem(text: &str, is_key: bool) -> Option<String> {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Some(format!(
            "contains the control character U+{:04X}",
            u32::from(c)
        ));
    }
    if is_key && text.is_empty() {
        return Some("is empty".into());
    }
    if is_key && text.contains('=') {
        return Some("contains '='".into());
    }
    None
}

/// [`text_problem`] as an artifact error naming `member` and `field`.
pub fn check_text(
    member: &str,
    field: &str,
    text: &str,
    is_key: bool,
) -> Result<(), ArtifactError> {
    match text_problem(text, is_key) {
        None => Ok(()),
        Some(why) => Err(ArtifactError::format(format!(
            "{member}: {field} '{text}' {why}",
            // Display escapes what is quoted here.
            text = text.escape_debug()
        ))),
    }
}

/// Payload file names: flat, and only `[A-Za-z0-9_.,-]`, never `.` or `..`.
pub fn valid_payload_file_name(name: &str) -> bool {
    crate::states::is_plain_file_name(name)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b',' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_text() {
        assert!(text_problem("rootfs-image.version", true).is_none());
        assert!(text_problem("a=b", false).is_none());
        assert!(text_problem("ä ü", false).is_none());
        assert!(text_problem("a=b", true).unwrap().contains("'='"));
        assert!(text_problem("", true).unwrap().contains("empty"));
        for bad in ["a\nb", "a\rb", "\0", "a\x7f", "a\u{85}b", "a\u{9b}b", "\t"] {
            assert!(text_problem(bad, false).is_some(), "{bad:?}");
        }
        let e = check_text(
            "header-info",
            "artifact_provides key",
            "x\nartifact_name",
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.contains("artifact_provides key 'x\\nartifact_name'"),
            "{e}"
        );
        assert!(e.contains("U+000A"), "{e}");
    }

    #[test]
    fn payload_names() {
        assert!(valid_payload_file_name("rootfs.ext4"));
        assert!(valid_payload_file_name("a,b-c_d"));
        for bad in ["", ".", "..", "a/b", "a b", "ä", "a\0"] {
            assert!(!valid_payload_file_name(bad), "{bad:?}");
        }
    }
}
