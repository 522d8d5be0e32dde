//! The `manifest` member: `sha256sum`-style lines, one per covered file.

use std::collections::BTreeMap;

use super::ArtifactError;

pub type Digest = [u8; 32];

/// Maximum size of a manifest we accept: room for tens of thousands of files.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

#[derive(Debug, Default, Clone)]
pub struct Manifest {
    /// Path → checksum, in sorted order.
    entries: BTreeMap<String, Digest>,
}

impl Manifest {
    /// Parses a manifest strictly: `<64 lowercase hex>  <path>` per line,
    /// no duplicates, UTF-8 paths without white space.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ArtifactError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            ArtifactError::format(format!(
                "manifest: invalid UTF-8 at byte {}",
                e.valid_up_to()
            ))
        })?;
        let mut entries = BTreeMap::new();
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.is_empty() {
            return Err(ArtifactError::format("manifest: empty"));
        }
        for (i, line) in body.split('\n').enumerate() {
            let lineno = i + 1;
            let bad = |why: &str| ArtifactError::format(format!("manifest line {lineno}: {why}"));
            let (hex, path) = line
                .split_once("  ")
                .ok_or_else(|| bad("expected '<sha256>  <path>'"))?;
            let digest = parse_hex_digest(hex)
                .ok_or_else(|| bad("checksum is not 64 lowercase hex digits"))?;
            if path.is_empty() || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad("path is empty or contains white space"));
            }
            if entries.insert(path.to_string(), digest).is_some() {
                return Err(bad(&format!("'{path}' is listed twice")));
            }
        }
        Ok(Manifest { entries })
    }

    pub fn get(&self, path: &str) -> Option<&Digest> {
        self.entries.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Digest)> {
        self.entries.iter()
    }
}

/// Serialises lines in the order given (mender-artifact writes data files,
/// then the header, then `version`).
pub fn format_manifest<'a>(lines: impl IntoIterator<Item = (&'a str, &'a Digest)>) -> String {
    let mut out = String::new();
    for (path, digest) in lines {
        out.push_str(&to_hex(digest));
        out.push_str("  ");
        out.push_str(path);
        out.push('\n');
    }
    out
}

pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

pub fn parse_hex_digest(hex: &str) -> Option<Digest> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "96bcd965947569404798bcbdb614f103db5a004eb6e364cfc162c146890ea35b";

    #[test]
    fn parses_and_round_trips() {
        let text = format!("{H}  data/0000/a\n{H}  version\n");
        let m = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(to_hex(m.get("version").unwrap()), H);
        let back = format_manifest(m.iter().map(|(p, d)| (p.as_str(), d)));
        assert_eq!(back, text);
    }

    #[test]
    fn rejects_bad_lines() {
        for bad in [
            String::new(),
            format!("{H} version\n"),
            format!("{}  version\n", H.to_uppercase()),
            format!("{}  version\n", &H[1..]),
            format!("{H}  version\n{H}  version\n"),
            format!("{H}  ver sion\n"),
            format!("{H}  version\n\n"),
            format!("{H}  \n"),
        ] {
            let err = Manifest::parse(bad.as_bytes()).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid artifact: manifest"),
                "{bad:?}: {err}"
            );
        }
    }
}
