//! One driver at a time: `.cutover/lock`, created atomically, naming its holder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the lock file says about who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub id: String,
    /// `user@host`.
    pub holder: String,
    pub host: String,
    pub pid: u32,
    /// The kernel's start time of `pid`, so a reused pid is not mistaken for the holder.
    #[serde(default)]
    pub pid_start: Option<u64>,
    pub command: String,
    pub started: String,
}

impl LockInfo {
    /// True when the holder is on this host and its process is gone.
    pub fn is_stale(&self) -> bool {
        self.host == crate::actor::hostname() && !process_alive(self.pid, self.pid_start)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (pid {} on {}, `{}`, since {}, lock id {})",
            self.holder, self.pid, self.host, self.command, self.started, self.id
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another driver holds the lock: {}", .0.describe())]
    Held(Box<LockInfo>),
    #[error("the lock is stale: {} — its process is gone. If nothing is running, remove it with `cutover unlock {}`", .0.describe(), .0.id)]
    Stale(Box<LockInfo>),
    #[error("the lock id is {actual}, not {given}; nothing was removed")]
    WrongId { given: String, actual: String },
    #[error("nobody holds the lock")]
    NotHeld,
    #[error("the lock file {path} cannot be read: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("cannot {action} the lock {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held while this process drives; dropping it removes the lock if it is still ours.
#[derive(Debug)]
pub struct LockGuard {
    path: PathBuf,
    info: LockInfo,
}

impl LockGuard {
    pub fn info(&self) -> &LockInfo {
        &self.info
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Ok(Some(current)) = read(&self.path) {
            if current.id == self.info.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> LockError {
    LockError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The start time of a process (field 22 of /proc/PID/stat), where the platform tells it.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn process_alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let exists = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    };
    match (exists, start, process_start(pid)) {
        (false, _, _) => false,
        (true, Some(recorded), Some(now)) => recorded == now,
        (true, _, _) => true,
    }
}

/// Reads the lock, if any.
pub fn read(path: &Path) -> Result<Option<LockInfo>, LockError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LockError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path, e)),
    }
}

fn new_id(holder: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(holder.as_bytes());
    hasher.update(std::process::id().to_le_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.update(nanos.to_le_bytes());
    hex::encode(&hasher.finalize()[..6])
}

/// Takes the lock for this process, or says who holds it.
pub fn acquire(path: &Path, holder: &str, command: &str) -> Result<LockGuard, LockError> {
    let pid = std::process::id();
    let info = LockInfo {
        id: new_id(holder),
        holder: holder.to_string(),
        host: crate::actor::hostname(),
        pid,
        pid_start: process_start(pid),
        command: command.to_string(),
        started: crate::journal::now_rfc3339(),
    };
    let text = serde_json::to_string_pretty(&info).map_err(|e| LockError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Write the whole content under a private name, then link it into place: the link is
    // atomic and fails if a lock exists, so nobody ever sees a half-written lock.
    let tmp = path.with_extension(format!("{}.{}.tmp", pid, info.id));
    std::fs::write(&tmp, text).map_err(|e| io("write", &tmp, e))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(LockGuard {
            path: path.to_path_buf(),
            info,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read(path)? {
            Some(current) if current.is_stale() => Err(LockError::Stale(Box::new(current))),
            Some(current) => Err(LockError::Held(Box::new(current))),
            // Released between our link and our read: try once more.
            None => acquire(path, holder, command),
        },
        Err(e) => Err(io("create", path, e)),
    }
}

/// Removes the lock only when `id` is the one it holds.
pub fn unlock(path: &Path, id: &str) -> Result<LockInfo, LockError> {
    let current = read(path)?.ok_or(LockError::NotHeld)?;
    if current.id != id {
        return Err(LockError::WrongId {
            given: id.to_string(),
            actual: current.id,
        });
    }
    std::fs::remove_file(path).map_err(|e| io("remove", path, e))?;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_naming_the_holder_and_unlock_needs_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let guard = acquire(&path, "ana@laptop", "cutover run build").unwrap();
        match acquire(&path, "bo@desk", "cutover run other") {
            Err(LockError::Held(info)) => {
                assert_eq!(info.holder, "ana@laptop");
                assert_eq!(info.command, "cutover run build");
                assert_eq!(info.id, guard.info().id);
            }
            other => panic!("expected Held, got {other:?}"),
        }
        assert!(matches!(
            unlock(&path, "nope"),
            Err(LockError::WrongId { .. })
        ));
        drop(guard);
        assert!(read(&path).unwrap().is_none());
        assert!(matches!(unlock(&path, "x"), Err(LockError::NotHeld)));
    }

    #[test]
    fn a_lock_of_a_dead_process_on_this_host_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let info = LockInfo {
            id: "abc123".into(),
            holder: "ana@laptop".into(),
            host: crate::actor::hostname(),
            pid,
            pid_start: None,
            command: "cutover run x".into(),
            started: "2026-01-01T00:00:00Z".into(),
        };
        std::fs::write(&path, serde_json::to_string(&info).unwrap()).unwrap();
        assert!(matches!(
            acquire(&path, "bo@desk", "cutover run"),
            Err(LockError::Stale(_))
        ));
        assert_eq!(unlock(&path, "abc123").unwrap().holder, "ana@laptop");
        assert!(acquire(&path, "bo@desk", "cutover run").is_ok());
    }
}
