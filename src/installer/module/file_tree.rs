//! The file tree an Update Module works in (`<ModulesWorkPath>/payloads/0000/tree`):
//! what the client writes there before `Download` (the header, the current
//! software, the protocol version; `docs/update-modules.md`, "The file
//! tree") and the helpers that remove it. Separate from the calls because
//! it is the data handed over, not the conversation.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::calls::{ModuleError, UpdateModule};
use crate::artifact::header::{ArtifactHeader, Provides};
use crate::fsutil::{sync_dir, write_atomic};

impl UpdateModule {
    /// The file tree path: `<work_dir>/payloads/0000/tree`.
    pub fn tree(&self) -> PathBuf {
        self.work_dir.join("payloads").join("0000").join("tree")
    }

    /// (Re)creates the file tree, removing an old one first. JSON is
    /// re-serialised from the parsed header; directories are 0700, files
    /// 0600, and everything is fsynced.
    pub fn prepare_tree(
        &self,
        header: &ArtifactHeader,
        current: &Provides,
        device_type: &str,
    ) -> Result<(), ModuleError> {
        let tree = self.tree();
        remove_tree(&tree).map_err(self.io_err(format!("removing {}", tree.display())))?;
        let header_dir = tree.join("header");
        for dir in [&header_dir, &tree.join("tmp")] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(self.io_err(format!("creating {}", dir.display())))?;
        }

        let payload = header.payload();
        let payload_type = payload.and_then(|p| p.payload_type.clone());
        let header_info = json!({
            "payloads": header
                .payloads
                .iter()
                .map(|p| json!({ "type": p.payload_type }))
                .collect::<Vec<_>>(),
            "artifact_provides": header.provides,
            "artifact_depends": header.depends,
        });
        let type_info = json!({
            "type": payload_type,
            "artifact_provides": payload.map(|p| &p.provides),
            "artifact_depends": payload.map(|p| &p.depends),
            "clears_artifact_provides": payload.and_then(|p| p.clears_provides.as_ref()),
        });
        let meta_data = payload
            .and_then(|p| p.meta_data.clone())
            .map(Value::Object)
            .unwrap_or_else(|| json!({}));
        let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON values serialise");

        let current_value = |key: &str| current.get(key).cloned().unwrap_or_default();
        let files: [(PathBuf, Vec<u8>); 10] = [
            (tree.join("version"), b"3".to_vec()),
            (
                tree.join("current_artifact_name"),
                current_value("artifact_name").into_bytes(),
            ),
            (
                tree.join("current_artifact_group"),
                current_value("artifact_group").into_bytes(),
            ),
            (
                tree.join("current_device_type"),
                device_type.as_bytes().to_vec(),
            ),
            (
                header_dir.join("artifact_group"),
                header.group.clone().unwrap_or_default().into_bytes(),
            ),
            (
                header_dir.join("artifact_name"),
                header.name.clone().into_bytes(),
            ),
            (
                header_dir.join("payload_type"),
                payload_type.unwrap_or_default().into_bytes(),
            ),
            (header_dir.join("header-info"), pretty(&header_info)),
            (header_dir.join("type-info"), pretty(&type_info)),
            (header_dir.join("meta-data"), pretty(&meta_data)),
        ];
        for (path, bytes) in &files {
            write_atomic(path, bytes, 0o600)
                .map_err(self.io_err(format!("writing {}", path.display())))?;
        }
        // Directory entries, from the innermost up to the work directory.
        let mut dirs = vec![header_dir, tree.join("tmp")];
        let mut dir = Some(tree.as_path());
        while let Some(d) = dir {
            dirs.push(d.to_path_buf());
            if d == self.work_dir {
                break;
            }
            dir = d.parent();
        }
        for d in &dirs {
            sync_dir(d).map_err(self.io_err(format!("syncing {}", d.display())))?;
        }
        Ok(())
    }
}

/// Removes a directory tree; a missing one is fine.
pub(super) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Removes a file or FIFO; a missing one is fine.
pub(super) fn remove_path(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
