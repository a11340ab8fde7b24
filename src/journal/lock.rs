//! One driver at a time: an advisory kernel lock (`flock`) on `.cutover/lock`, held for the
//! driver's life, with the holder's details written in the file for the refusal message.
//!
//! The kernel releases the lock when the last descriptor of it closes, so a driver that dies
//! (even by SIGKILL) leaves no stale lock. Its descriptor is handed to the commands its steps
//! run (and to nothing else it starts): a command that outlives a killed driver (an orphaned
//! `pg_restore`, a `sleep`) keeps holding the lock until it exits, so nobody drives while it
//! still writes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
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
    /// True when the driver that took the lock is gone from this host: then a command it
    /// started holds the lock now.
    pub fn driver_gone(&self) -> bool {
        self.host == crate::actor::hostname() && !process_alive(self.pid, self.pid_start)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (pid {} on {}, `{}`, since {}, lock id {})",
            self.holder, self.pid, self.host, self.command, self.started, self.id
        )
    }

    /// For a lock held by a driver still writing its details.
    fn starting() -> LockInfo {
        LockInfo {
            id: "?".into(),
            holder: "another driver (starting)".into(),
            host: crate::actor::hostname(),
            pid: 0,
            pid_start: None,
            command: "?".into(),
            started: "now".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another driver holds the lock: {}", .0.describe())]
    Held(Box<LockInfo>),
    #[error("the lock is held by a command that {}'s driver started and that still runs (the driver, pid {}, is gone): wait for it to end, or stop it (`fuser -v` on the lock file lists it); lock id {}", .0.holder, .0.pid, .0.id)]
    HeldByLeftover(Box<LockInfo>),
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

/// Held while this process drives; the kernel releases it when the last descriptor closes
/// (this process's, and those its step commands were handed).
#[derive(Debug)]
pub struct LockGuard {
    _lock: Flock<File>,
    info: LockInfo,
}

impl LockGuard {
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// The descriptor holding the lock: the commands a step runs are given it.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self._lock.as_raw_fd()
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
    if raw == 0 {
        return true;
    }
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

fn open(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("open", path, e))
}

/// The details the lock file holds (written by whoever took it last).
fn details(file: &mut File, path: &Path) -> Result<Option<LockInfo>, LockError> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text))
        .map_err(|e| io("read", path, e))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| LockError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Tries the exclusive lock a few times over a short while: a reader's probe (`read`) holds a
/// shared lock for an instant, which must not turn a driver away.
fn try_exclusive(mut file: File) -> Result<Flock<File>, (File, nix::errno::Errno)> {
    for _ in 0..10 {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(locked),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => {
                file = back;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(other) => return Err(other),
        }
    }
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
}

/// Who holds the lock now, if anyone (nobody when the file is missing or the lock is free).
pub fn read(path: &Path) -> Result<Option<LockInfo>, LockError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", path, e)),
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Free: whatever the file says is history.
        Ok(_free) => Ok(None),
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => Ok(Some(
            details(&mut file, path)?.unwrap_or_else(LockInfo::starting),
        )),
        Err((_, errno)) => Err(io("probe", path, errno.into())),
    }
}

pub(crate) fn new_id(holder: &str) -> String {
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

fn refused(mut file: File, path: &Path) -> LockError {
    match details(&mut file, path) {
        Ok(Some(info)) if info.driver_gone() => LockError::HeldByLeftover(Box::new(info)),
        Ok(Some(info)) => LockError::Held(Box::new(info)),
        Ok(None) => LockError::Held(Box::new(LockInfo::starting())),
        Err(e) => e,
    }
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
        started: crate::clock::now_rfc3339(),
    };
    let text = serde_json::to_string_pretty(&info).map_err(|e| LockError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut locked = match try_exclusive(open(path)?) {
        Ok(locked) => locked,
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => return Err(refused(file, path)),
        Err((_, errno)) => return Err(io("lock", path, errno.into())),
    };
    locked
        .set_len(0)
        .and_then(|()| locked.seek(SeekFrom::Start(0)).map(|_| ()))
        .and_then(|()| locked.write_all(text.as_bytes()))
        .and_then(|()| locked.sync_data())
        .map_err(|e| io("write", path, e))?;
    // Close-on-exec (as Rust opens every file): the front end hands the descriptor to step
    // commands only (`actions::process::hand_driver_lock`), never to a helper that may outlive it.
    Ok(LockGuard {
        _lock: locked,
        info,
    })
}

/// For a lock file on a shared filesystem, where the kernel lock may not reach another host:
/// clears the holder's details, only when `id` is the one they name and nobody holds the lock
/// here. A live holder is never unlocked.
pub fn unlock(path: &Path, id: &str) -> Result<LockInfo, LockError> {
    if !path.exists() {
        return Err(LockError::NotHeld);
    }
    let mut locked = match try_exclusive(open(path)?) {
        Ok(locked) => locked,
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => return Err(refused(file, path)),
        Err((_, errno)) => return Err(io("lock", path, errno.into())),
    };
    let current = details(&mut locked, path)?.ok_or(LockError::NotHeld)?;
    if current.id != id {
        return Err(LockError::WrongId {
            given: id.to_string(),
            actual: current.id,
        });
    }
    locked.set_len(0).map_err(|e| io("clear", path, e))?;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_naming_the_holder_and_released_on_drop() {
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
        assert_eq!(
            read(&path).unwrap().map(|i| i.id),
            Some(guard.info().id.clone())
        );
        // A live holder is never unlocked, whatever id is given.
        assert!(matches!(
            unlock(&path, &guard.info().id),
            Err(LockError::Held(_))
        ));
        drop(guard);
        assert!(read(&path).unwrap().is_none(), "free once dropped");
        assert!(acquire(&path, "bo@desk", "cutover run").is_ok());
    }

    #[test]
    fn unlock_clears_details_left_on_a_free_lock_only_with_their_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        assert!(matches!(unlock(&path, "x"), Err(LockError::NotHeld)));
        let guard = acquire(&path, "ana@laptop", "cutover run").unwrap();
        let id = guard.info().id.clone();
        drop(guard);
        assert!(matches!(
            unlock(&path, "nope"),
            Err(LockError::WrongId { .. })
        ));
        assert_eq!(unlock(&path, &id).unwrap().holder, "ana@laptop");
        assert!(matches!(unlock(&path, &id), Err(LockError::NotHeld)));
    }
}
