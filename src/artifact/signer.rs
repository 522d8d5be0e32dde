//! Signing an existing artifact: one forward copy of its members with a new
//! `manifest.sig` after `manifest`. Nothing but the signature changes, so the
//! manifest checksums still hold; the copy is validated on the way through.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::ArtifactError;
use super::manifest::MAX_MANIFEST_SIZE;
use super::reader::{Discard, ReadOptions, read_artifact};
use super::signature::SigningKey;
use super::writer::OuterTar;
use crate::fsutil;

/// Signs `input` with `key` into `output` (which may be `input`). An artifact
/// that is already signed is refused unless `force`.
pub fn sign_artifact(
    input: &Path,
    key: &SigningKey,
    output: &Path,
    force: bool,
) -> Result<(), ArtifactError> {
    let open = |p: &Path| {
        File::open(p)
            .map(|f| BufReader::with_capacity(256 << 10, f))
            .map_err(|e| ArtifactError::io(format!("opening {}", p.display()), e))
    };
    // Validate first: signing a corrupt artifact would lend it credibility.
    read_artifact(open(input)?, &ReadOptions::default(), &mut Discard)?;

    let out_err = |e: std::io::Error| ArtifactError::io(format!("writing {}", output.display()), e);
    let tmp = fsutil::temp_beside(output, 0o666).map_err(out_err)?;
    {
        let mut archive = tar::Archive::new(super::tar_guard::TarGuard::new(open(input)?));
        let entries = archive
            .entries()
            .map_err(|e| ArtifactError::io("reading artifact", e))?;
        let mut out = OuterTar::new(tmp.as_file(), 0);
        for entry in entries {
            let mut entry = entry.map_err(|e| ArtifactError::io("reading artifact", e))?;
            let name = String::from_utf8(entry.path_bytes().into_owned())
                .map_err(|_| ArtifactError::format("a member name is not valid UTF-8"))?;
            let size = entry.size();
            match name.as_str() {
                "manifest" => {
                    let mut manifest = Vec::new();
                    // Validated above, but the file may have changed since.
                    (&mut entry)
                        .take(MAX_MANIFEST_SIZE + 1)
                        .read_to_end(&mut manifest)
                        .map_err(|e| ArtifactError::io("reading manifest", e))?;
                    if manifest.len() as u64 > MAX_MANIFEST_SIZE {
                        return Err(ArtifactError::format(format!(
                            "manifest: larger than the limit of {MAX_MANIFEST_SIZE} bytes"
                        )));
                    }
                    let sig = key
                        .sign(&manifest)
                        .map_err(|e| ArtifactError::Signature(e.to_string()))?;
                    out.append_bytes("manifest", &manifest).map_err(out_err)?;
                    out.append_bytes("manifest.sig", sig.as_bytes())
                        .map_err(out_err)?;
                }
                "manifest.sig" if !force => {
                    return Err(ArtifactError::Signature(
                        "the artifact is already signed; use --force to replace the signature"
                            .into(),
                    ));
                }
                "manifest.sig" => {}
                _ => out
                    .append_reader(&name, size, &mut entry)
                    .map_err(out_err)?,
            }
        }
        out.finish().map_err(out_err)?;
    }
    fsutil::persist(tmp, output).map_err(out_err)
}
