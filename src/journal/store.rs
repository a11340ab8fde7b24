//! Where journal bytes live. A file today; a shared store (S3 with conditional writes) can
//! implement the same trait later.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::JournalError;

/// Durable, append-only storage of journal lines.
pub trait JournalStore: Send {
    /// Every byte stored so far (empty when there is no journal yet).
    fn read_all(&self) -> Result<Vec<u8>, JournalError>;
    /// Appends one line (with its newline); returns only once it is durable.
    fn append_line(&mut self, line: &[u8]) -> Result<(), JournalError>;
    /// Cuts the journal back to `keep` bytes, keeping what is cut aside for inspection.
    /// Used only for a last line a crash left unfinished.
    fn set_aside_tail(&mut self, keep: u64) -> Result<String, JournalError>;
    /// Where it is, for messages.
    fn location(&self) -> String;
}

/// `journal.jsonl` in the state directory: opened for append, synced after every line.
pub struct FileStore {
    path: PathBuf,
    file: Option<File>,
}

impl FileStore {
    pub fn new(path: impl AsRef<Path>) -> Self {
        FileStore {
            path: path.as_ref().to_path_buf(),
            file: None,
        }
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> JournalError {
        JournalError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

impl JournalStore for FileStore {
    fn read_all(&self) -> Result<Vec<u8>, JournalError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io("read", e)),
        }
    }

    fn append_line(&mut self, line: &[u8]) -> Result<(), JournalError> {
        if self.file.is_none() {
            let created = !self.path.exists();
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .map_err(|e| self.io("open", e))?;
            if created {
                // The journal's directory entry is durable before its first line counts.
                if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    crate::workspace::sync_dir(dir)
                        .map_err(|e| self.io("sync the directory of", e))?;
                }
            }
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let before = file.metadata().map(|m| m.len()).ok();
        // One write call per line, so a crash leaves at most this line cut short.
        let result = file.write_all(line).and_then(|()| file.sync_data());
        result.map_err(|e| {
            // A write that failed part-way is cut off again, so the next line is never glued
            // onto it (best effort: the disk may be the very thing failing).
            if let (Some(len), Some(file)) = (before, self.file.as_ref()) {
                let _ = file.set_len(len).and_then(|()| file.sync_all());
            }
            self.file = None;
            self.io("append to", e)
        })
    }

    fn set_aside_tail(&mut self, keep: u64) -> Result<String, JournalError> {
        let bytes = self.read_all()?;
        let keep = usize::try_from(keep)
            .unwrap_or(bytes.len())
            .min(bytes.len());
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "");
        let aside = self.path.with_extension(format!("partial-{stamp}"));
        std::fs::write(&aside, &bytes[keep..]).map_err(|e| self.io("save the cut line of", e))?;
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| self.io("open", e))?;
        file.set_len(keep as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| self.io("truncate", e))?;
        self.file = None;
        Ok(aside.display().to_string())
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}
