//! Where a migration's state lives: `.cutover/` beside the runbook (the default), or an S3
//! prefix a team shares (`s3://BUCKET/PREFIX`), mirrored locally.
//!
//! One place opens a state for a command, whatever the front end: [`open_for_reading`] (the
//! workspace to read, an S3 state's mirror brought up to date) and [`open_for_driving`] (the
//! locks, the journal's store, the log shipper — all or nothing). A front end that cannot
//! drive holds nothing, and [`follow`]s instead.

pub mod approvals;
pub mod s3;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::journal::lock::{self, LockError, LockGuard};
use crate::journal::{FileStore, JournalError, JournalStore};
use crate::runbook::AwsSettings;
pub use crate::runbook::Backend;
use crate::workspace::{Workspace, WorkspaceError};

/// How often the logs go to S3 while a step runs.
const SHIP_EVERY: Duration = Duration::from_secs(2);

/// A state opened for a command: where to read it (for S3, the local mirror) and, for S3,
/// the client and the lock's holder as S3 showed it.
pub struct State {
    pub workspace: Workspace,
    pub remote: Option<Arc<s3::Remote>>,
    /// Who holds the S3 lock (with how long ago S3 saw it renewed); `None` for nobody, or a
    /// local state.
    pub driver: Option<s3::RemoteLockInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    S3(#[from] s3::S3Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Opens the state at `backend` for reading: the local workspace, or an S3 prefix (the bucket
/// checked, at first use that it honours conditional writes, and its mirror — a state
/// directory under `local` — brought up to S3 as `reading` says; not at all for a push).
pub fn open_for_reading(
    local: Workspace,
    backend: &Backend,
    aws: &AwsSettings,
    reading: Option<s3::Reading>,
) -> Result<State, StateError> {
    let Backend::S3 { bucket, prefix } = backend else {
        return Ok(State {
            workspace: local,
            remote: None,
            driver: None,
        });
    };
    let workspace = Workspace {
        root: s3::mirror_dir(&local.root, bucket, prefix),
    };
    workspace.ensure()?;
    let remote = Arc::new(s3::Remote::connect(bucket, prefix, aws)?);
    remote.check_conditional_writes(&workspace.root.join("conditional-writes-ok"))?;
    if let Some(reading) = reading {
        s3::pull_checked(&remote, &workspace.journal_path(), reading)?;
    }
    let driver = s3::holder(&remote)?;
    Ok(State {
        workspace,
        remote: Some(remote),
        driver,
    })
}

/// Why a state cannot be driven by this command.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// This machine's lock (the state directory's, or the mirror's).
    #[error(transparent)]
    Local(#[from] LockError),
    /// The S3 lock.
    #[error(transparent)]
    Remote(#[from] s3::RemoteLockError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl DriveError {
    /// Another driver holds a lock (here or on S3): a front end may watch instead.
    pub fn holder(&self) -> Option<String> {
        match self {
            DriveError::Local(LockError::Held(info)) => Some(format!(
                "{} drives (pid {}, since {})",
                info.holder, info.pid, info.started
            )),
            DriveError::Local(LockError::HeldByLeftover(info)) => Some(format!(
                "a command {}'s driver started still runs and holds the lock",
                info.holder
            )),
            DriveError::Remote(
                s3::RemoteLockError::Held(info) | s3::RemoteLockError::Stale(info),
            ) => Some(format!("{} drives (following S3)", info.describe())),
            _ => None,
        }
    }
}

/// What a driver holds while it drives: this machine's lock, and with an S3 state the S3 lock
/// and the log shipping. Dropped in this order: the logs' last lines shipped while the locks
/// are still held.
pub struct Hold {
    _logs: Option<s3::LogShipping>,
    local: LockGuard,
    remote: Option<s3::RemoteLock>,
    interrupter: Option<s3::Interrupter>,
}

impl Hold {
    /// The local lock's descriptor: the commands steps run are handed it (and nothing else).
    pub fn driver_lock_fd(&self) -> std::os::fd::RawFd {
        self.local.raw_fd()
    }

    /// Fired when this driver loses the S3 lock: cancel the running step with it. `None` for
    /// a local state.
    pub fn lost(&self) -> Option<CancellationToken> {
        self.remote.as_ref().map(|r| r.lease().lost())
    }

    /// The S3 lease, for whoever must stop when it is lost. `None` for a local state.
    pub fn lease(&self) -> Option<Arc<s3::Lease>> {
        self.remote.as_ref().map(|r| r.lease())
    }

    /// Why the S3 lock was lost, once it was.
    pub fn lost_why(&self) -> Option<String> {
        self.remote
            .as_ref()
            .map(|r| r.lease())
            .filter(|l| l.is_lost())
            .and_then(|l| l.lost_why())
    }

    /// Stops the S3 calls in flight (Ctrl-C while S3 does not answer). `None` for a local
    /// state.
    pub fn interrupter(&self) -> Option<s3::Interrupter> {
        self.interrupter.clone()
    }

    pub fn local(&self) -> &LockGuard {
        &self.local
    }
}

/// What a command that drives gets: the journal's store (for `Journal::open`) and what it
/// holds (keep it until the command ends).
pub struct Driving {
    pub store: Box<dyn JournalStore>,
    pub hold: Hold,
}

/// Takes what driving `state` needs, all or nothing: with an S3 state its lock first (it
/// decides between machines), then this machine's lock; the journal's store (an S3 one writes
/// only while the S3 lease holds, its mirror first brought up to S3); the step logs shipped
/// to S3 as they grow. Refused, it holds nothing (the S3 lock taken first is released).
pub fn open_for_driving(state: &State, actor: &str, command: &str) -> Result<Driving, DriveError> {
    let workspace = &state.workspace;
    workspace.ensure()?;
    let remote_lock = match &state.remote {
        Some(remote) => Some(s3::acquire(remote.clone(), actor, command)?),
        None => None,
    };
    let local = lock::acquire(&workspace.lock_path(), actor, command)?;
    let (store, logs): (Box<dyn JournalStore>, _) = match (&state.remote, &remote_lock) {
        (Some(remote), Some(held)) => {
            let shipper = Arc::new(Mutex::new(s3::LogShipper::new(
                remote.clone(),
                &workspace.root,
                Some(held.lease()),
            )));
            let store = s3::S3Store::open(remote.clone(), &workspace.journal_path(), held.lease())?
                .with_logs(shipper.clone());
            (
                Box::new(store),
                Some(s3::LogShipping::start(shipper, SHIP_EVERY)),
            )
        }
        _ => (Box::new(FileStore::new(workspace.journal_path())), None),
    };
    Ok(Driving {
        store,
        hold: Hold {
            _logs: logs,
            local,
            remote: remote_lock,
            interrupter: state.remote.as_ref().map(|r| r.interrupter()),
        },
    })
}

/// For a front end that watches an S3 state: its mirror follows S3 every `every` while this
/// lives. `None` for a local state (the driver writes the journal this one reads).
pub fn follow(state: &State, every: Duration) -> Option<s3::Following> {
    state
        .remote
        .as_ref()
        .map(|remote| s3::Following::start(remote.clone(), &state.workspace.root, every))
}
