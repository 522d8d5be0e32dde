//! The `Download` call: the streaming session that hands the payload files
//! to a running module through FIFOs (`stream-next`, `streams/<name>`), or
//! into `files/` when the module does not stream (`docs/update-modules.md`,
//! "Download: streams or files"). Separate from the other
//! calls because it is the only one that talks to the module while it runs.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::calls::{ModuleCall, ModuleError, Proc, UpdateModule};
use super::file_tree::{remove_path, remove_tree};
use crate::artifact::valid_payload_file_name;
use crate::fsutil::sync_dir;
use crate::process::Exit;

/// Longest sleep between two polls of a module's state.
const POLL_MAX: Duration = Duration::from_millis(20);

impl UpdateModule {
    /// Starts `<module> Download <tree>` and returns the session that
    /// receives the payload files. The tree must have been prepared.
    pub fn start_download(&self) -> Result<DownloadSession, ModuleError> {
        self.start_download_with(false)
    }

    /// Starts `Download`, or with `file_sizes` `DownloadWithFileSizes`
    /// (protocol 4.0, for a module that answered `Yes` to
    /// `ProvidePayloadFileSizes`): then each `stream-next` line is
    /// `streams/<name> <size in bytes>`, as Mender 4.x writes it
    /// (`docs/update-modules.md`).
    pub fn start_download_with(&self, file_sizes: bool) -> Result<DownloadSession, ModuleError> {
        let verb = if file_sizes {
            ModuleCall::DownloadWithFileSizes
        } else {
            ModuleCall::Download
        };
        let tree = self.tree();
        self.check_tree(&tree, verb.as_str())?;
        let stream_next = tree.join("stream-next");
        let streams = tree.join("streams");
        remove_path(&stream_next).map_err(self.io_err("removing an old stream-next"))?;
        remove_tree(&streams).map_err(self.io_err("removing an old streams/"))?;
        remove_tree(&tree.join("files")).map_err(self.io_err("removing an old files/"))?;
        make_fifo(&stream_next).map_err(self.io_err("creating the FIFO stream-next"))?;
        DirBuilder::new()
            .mode(0o700)
            .create(&streams)
            .map_err(self.io_err("creating streams/"))?;
        let proc = match Proc::spawn(&self.module, verb.as_str(), &tree, self.timeout, false) {
            Ok(proc) => proc,
            Err(e) => {
                let _ = remove_path(&stream_next);
                let _ = remove_tree(&streams);
                return Err(e);
            }
        };
        Ok(DownloadSession {
            proc,
            verb,
            tree,
            mode: Mode::Waiting,
            current: None,
            done: false,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The module has not opened `stream-next` yet.
    Waiting,
    /// The module reads `stream-next` and `streams/*`.
    Streaming,
    /// The module exited 0 without streaming: files go to `files/`.
    Files,
}

struct CurrentFile {
    name: String,
    file: File,
    size: u64,
    written: u64,
}

/// A running `Download`: receives the payload files as the artifact reader
/// streams them (`begin_file`, `write`…, `end_file`), then `finish` or
/// `abort`. Dropping an unfinished session aborts it.
pub struct DownloadSession {
    proc: Proc,
    /// `Download` or `DownloadWithFileSizes`.
    verb: ModuleCall,
    tree: PathBuf,
    mode: Mode,
    current: Option<CurrentFile>,
    done: bool,
}

impl DownloadSession {
    /// True once the module turned out not to stream (files go to `files/`).
    pub fn files_mode(&self) -> bool {
        self.mode == Mode::Files
    }

    pub fn begin_file(&mut self, name: &str, size: u64) -> Result<(), ModuleError> {
        if let Some(cur) = &self.current {
            return Err(self.protocol(format!(
                "payload file {name} begun while {} is still open",
                cur.name
            )));
        }
        if !valid_payload_file_name(name) {
            return Err(self.protocol(format!(
                "invalid payload file name '{}'",
                name.escape_debug()
            )));
        }
        log::debug!(
            "module {}: {}: payload file {name} ({size} bytes)",
            self.proc.module.display(),
            self.verb
        );
        if self.mode != Mode::Files {
            let fifo = self.tree.join("streams").join(name);
            make_fifo(&fifo).map_err(self.io_err(format!("creating the FIFO streams/{name}")))?;
            match self.connect("stream-next")? {
                Some(mut next) => {
                    self.mode = Mode::Streaming;
                    let line = if self.verb == ModuleCall::DownloadWithFileSizes {
                        format!("streams/{name} {size}\n")
                    } else {
                        format!("streams/{name}\n")
                    };
                    self.write_fifo(&mut next, line.as_bytes(), "stream-next")?;
                }
                None => self.switch_to_files()?,
            }
        }
        let file = if self.mode == Mode::Files {
            let path = self.tree.join("files").join(name);
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(self.io_err(format!("creating files/{name}")))?
        } else {
            // Streaming by now, so `connect` never reports files/ mode.
            match self.connect(&format!("streams/{name}"))? {
                Some(f) => f,
                None => return Err(self.ended_early(Exit::Code(0))),
            }
        };
        self.current = Some(CurrentFile {
            name: name.to_string(),
            file,
            size,
            written: 0,
        });
        Ok(())
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), ModuleError> {
        let Some(mut cur) = self.current.take() else {
            return Err(self.protocol("payload bytes outside of a payload file".into()));
        };
        let result = if self.mode == Mode::Files {
            cur.file
                .write_all(data)
                .map_err(self.io_err(format!("writing files/{}", cur.name)))
        } else {
            let what = format!("streams/{}", cur.name);
            self.write_fifo(&mut cur.file, data, &what)
        };
        cur.written += data.len() as u64;
        self.current = Some(cur);
        result
    }

    pub fn end_file(&mut self) -> Result<(), ModuleError> {
        let Some(cur) = self.current.take() else {
            return Err(self.protocol("end of a payload file never begun".into()));
        };
        if cur.written != cur.size {
            log::warn!(
                "module {}: payload file {} has {} bytes, its header said {}",
                self.proc.module.display(),
                cur.name,
                cur.written,
                cur.size
            );
        }
        if self.mode == Mode::Files {
            cur.file
                .sync_all()
                .map_err(self.io_err(format!("syncing files/{}", cur.name)))?;
        }
        // Closing the stream is the module's end of file.
        drop(cur);
        Ok(())
    }

    /// After the last file: sends the end-of-streams marker (or, in files/
    /// mode, fsyncs files/), waits for the module's exit within the timeout
    /// and checks its status.
    pub fn finish(mut self) -> Result<(), ModuleError> {
        if let Some(cur) = &self.current {
            return Err(self.protocol(format!(
                "download finished while {} is still open",
                cur.name
            )));
        }
        if self.mode != Mode::Files {
            match self.connect("stream-next")? {
                // Opened and closed without a byte: end of streams.
                Some(next) => {
                    self.mode = Mode::Streaming;
                    drop(next);
                }
                None => self.switch_to_files()?,
            }
        }
        if self.mode == Mode::Files {
            let files = self.tree.join("files");
            sync_dir(&files).map_err(self.io_err("syncing files/"))?;
            sync_dir(&self.tree).map_err(self.io_err("syncing the file tree"))?;
        }
        self.proc.wait()?;
        if self.mode == Mode::Streaming {
            remove_path(&self.tree.join("stream-next"))
                .map_err(self.io_err("removing stream-next"))?;
            remove_tree(&self.tree.join("streams")).map_err(self.io_err("removing streams/"))?;
        }
        self.done = true;
        Ok(())
    }

    /// On error: kills the module's process group and removes the stream
    /// FIFOs and any partial `files/`.
    pub fn abort(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.proc.terminate();
        self.current = None;
        for (path, dir) in [("stream-next", false), ("streams", true), ("files", true)] {
            let path = self.tree.join(path);
            let r = if dir {
                remove_tree(&path)
            } else {
                remove_path(&path)
            };
            if let Err(e) = r {
                log::warn!("removing {}: {e}", path.display());
            }
        }
    }

    fn protocol(&self, detail: String) -> ModuleError {
        ModuleError::Protocol {
            module: self.proc.module.clone(),
            call: self.verb.to_string(),
            detail,
        }
    }

    fn io_err(&self, context: impl Into<String>) -> impl FnOnce(io::Error) -> ModuleError + '_ {
        let context = format!("{}: {}", self.verb, context.into());
        move |source| ModuleError::Io {
            module: self.proc.module.clone(),
            context,
            source,
        }
    }

    /// The error for a module that ended before the end-of-streams marker.
    fn ended_early(&self, ended: Exit) -> ModuleError {
        match ended {
            Exit::Code(0) => self.protocol("terminated in the middle of the download".into()),
            Exit::Code(code) => self.protocol(format!(
                "terminated in the middle of the download (exit code {code})"
            )),
            Exit::Signal(sig) => self.protocol(format!(
                "terminated in the middle of the download (signal {sig})"
            )),
            Exit::TimedOut => self.proc.timeout_error(),
        }
    }

    fn timeout(&mut self) -> ModuleError {
        self.proc.terminate();
        self.proc.timeout_error()
    }

    /// Opens the FIFO `rel` (relative to the tree) for writing once the
    /// module opened it for reading. `None`: the module exited 0 without
    /// ever opening `stream-next` (files/ mode).
    fn connect(&mut self, rel: &str) -> Result<Option<File>, ModuleError> {
        let path = self.tree.join(rel);
        let mut nap = Duration::from_millis(1);
        loop {
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(f) => return Ok(Some(f)),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(format!("opening {rel}"))(e)),
            }
            if let Some(ended) = self
                .proc
                .run
                .peek()
                .map_err(self.io_err("waiting for the module"))?
            {
                return match (self.mode, ended) {
                    (Mode::Waiting, Exit::Code(0)) => Ok(None),
                    (Mode::Waiting, ended) => Err(self.proc.status_error(ended)),
                    (_, ended) => Err(self.ended_early(ended)),
                };
            }
            let left = self.proc.run.time_left();
            if left.is_zero() {
                return Err(self.timeout());
            }
            // Sleeps, but reads the module's output meanwhile.
            self.proc
                .run
                .pump_for(nap.min(left))
                .map_err(self.io_err("waiting for the module"))?;
            nap = (nap * 2).min(POLL_MAX);
        }
    }

    /// Writes all of `data` to a FIFO opened non-blocking, waiting for room
    /// with poll(2), at most until the session's deadline.
    fn write_fifo(&mut self, fifo: &mut File, data: &[u8], what: &str) -> Result<(), ModuleError> {
        let mut off = 0;
        while off < data.len() {
            match fifo.write(&data[off..]) {
                Ok(n) if n > 0 => {
                    off += n;
                    continue;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    // Give a dying module a moment to be seen dead.
                    let ended = self
                        .proc
                        .run
                        .wait_exit(Duration::from_millis(100))
                        .ok()
                        .flatten();
                    return Err(match ended {
                        Some(ended) => self.ended_early(ended),
                        None => self
                            .protocol(format!("the module stopped reading {what} before its end")),
                    });
                }
                Err(e) => return Err(self.io_err(format!("writing {what}"))(e)),
            }
            let left = self.proc.run.time_left();
            if left.is_zero() {
                return Err(self.timeout());
            }
            // Waits for room in the FIFO while reading the module's output
            // (a module blocked on a full stdout would never read on).
            let ready = self
                .proc
                .run
                .wait_fd(
                    fifo.as_raw_fd(),
                    libc::POLLOUT,
                    left.min(Duration::from_millis(100)),
                )
                .map_err(self.io_err(format!("waiting to write {what}")))?;
            if !ready
                && let Some(ended) = self
                    .proc
                    .run
                    .peek()
                    .map_err(self.io_err("waiting for the module"))?
            {
                return Err(self.ended_early(ended));
            }
        }
        Ok(())
    }

    fn switch_to_files(&mut self) -> Result<(), ModuleError> {
        log::debug!(
            "module {}: {} exited without streaming; storing payload files in files/",
            self.proc.module.display(),
            self.verb
        );
        remove_path(&self.tree.join("stream-next")).map_err(self.io_err("removing stream-next"))?;
        remove_tree(&self.tree.join("streams")).map_err(self.io_err("removing streams/"))?;
        let files = self.tree.join("files");
        remove_tree(&files).map_err(self.io_err("removing an old files/"))?;
        DirBuilder::new()
            .mode(0o700)
            .create(&files)
            .map_err(self.io_err("creating files/"))?;
        self.mode = Mode::Files;
        Ok(())
    }
}

impl Drop for DownloadSession {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn make_fifo(path: &Path) -> io::Result<()> {
    crate::sys::mkfifo(path, 0o600)?;
    // mkfifo's mode is filtered by the umask.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        make_fifo(&p).unwrap();
        let meta = fs::metadata(&p).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // No reader: a non-blocking open for writing fails with ENXIO.
        let e = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&p)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENXIO));
        remove_path(&p).unwrap();
        remove_path(&p).unwrap();
        remove_tree(&dir.path().join("nope")).unwrap();
    }
}
