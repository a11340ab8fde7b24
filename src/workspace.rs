//! `.cutover/` beside the runbook: the journal, the lock and the step logs, private to the user.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}")]
pub struct WorkspaceError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The state directory of one runbook.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    /// `.cutover/` in the runbook's directory.
    pub fn for_runbook(runbook: &Path) -> Workspace {
        let dir = runbook
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Workspace {
            root: dir.join(".cutover"),
        }
    }

    /// Creates the directory (0700), tightening it if it exists with wider rights.
    pub fn ensure(&self) -> Result<(), WorkspaceError> {
        let err = |action, source| WorkspaceError {
            action,
            path: self.root.clone(),
            source,
        };
        let existed = self.root.is_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|e| err("create", e))?;
        if !existed {
            // The new directory's entry is durable before anything is written into it.
            if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent).map_err(|e| err("sync the parent of", e))?;
            }
        }
        let meta = std::fs::metadata(&self.root).map_err(|e| err("inspect", e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| err("make private", e))?;
        }
        // Probe writability now, so an unwritable directory is reported before any work.
        let probe = self.root.join(".write-test");
        std::fs::write(&probe, b"").map_err(|e| err("write to", e))?;
        let _ = std::fs::remove_file(probe);
        Ok(())
    }

    pub fn journal_path(&self) -> PathBuf {
        self.root.join("journal.jsonl")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Relative to the root, as the journal records it.
    pub fn log_relative(step: &str, attempt: u32) -> String {
        format!("logs/{step}/{attempt}.log")
    }

    pub fn check_log_relative(step: &str, n: u64) -> String {
        format!("logs/{step}/check-{n}.log")
    }

    pub fn rollback_log_relative(step: &str, n: u64) -> String {
        format!("logs/{step}/rollback-{n}.log")
    }

    pub fn resolve(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Creates a step's log file (0600), with its directory.
    pub fn create_log(&self, relative: &str) -> Result<std::fs::File, WorkspaceError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.resolve(relative);
        let err = |action, source| WorkspaceError {
            action,
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| err("create", e))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| err("create", e))
    }
}

/// fsync of a directory: the entries created in it survive a crash.
pub fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
