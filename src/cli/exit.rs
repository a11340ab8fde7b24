//! Exit codes, one meaning each, documented in `--help`.

use std::process::ExitCode;

use cutover::state::s3::{RemoteLockError, S3Error};
use cutover::state::{DriveError, StateError};

pub const OK: u8 = 0;
pub const STEP_FAILED: u8 = 1;
pub const INVALID: u8 = 2;
pub const LOCKED: u8 = 3;
pub const JOURNAL_DAMAGED: u8 = 4;
pub const REFUSED: u8 = 5;
pub const STATE_UNAVAILABLE: u8 = 6;
pub const CANCELLED: u8 = 130;

pub const HELP: &str = "\
Exit codes:
  0    success (the step succeeded; the runbook is valid; the journal verifies)
  1    the step failed (its reason is printed and journaled), or an unexpected error
  2    the runbook is invalid, or the command line is wrong
  3    another driver holds the lock (its holder is named; on S3 also a stale lock,
       with the id `cutover unlock` takes), or a command a killed driver started
       still runs and holds it, or this driver lost its S3 lock (its lease lapsed
       and another took it): it stopped its step and wrote nothing more
  4    the journal is damaged: `cutover audit verify` names the first bad line
  5    refused: needs not done, time gate closed, confirmation phrase missing or
       wrong, approvals not all in (or a deny in force), a manual step without
       --note, a rollback without its phrase or of a step that has none, or
       nothing left to run
  6    the state directory (.cutover/) cannot be created, read or written, or the
       S3 state cannot be used (no bucket, access denied, no conditional writes)
  130  cancelled with Ctrl-C (the step is journaled as failed: cancelled)";

/// A failure to report on stderr, with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

pub fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

impl From<cutover::runbook::LoadError> for Failure {
    fn from(e: cutover::runbook::LoadError) -> Self {
        use cutover::runbook::LoadError;
        let code = match e {
            LoadError::Io { .. } => STATE_UNAVAILABLE,
            _ => INVALID,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<cutover::journal::JournalError> for Failure {
    fn from(e: cutover::journal::JournalError) -> Self {
        use cutover::journal::JournalError;
        let code = match e {
            JournalError::Broken { .. } => JOURNAL_DAMAGED,
            JournalError::Conflict { .. } => LOCKED,
            _ => STATE_UNAVAILABLE,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<cutover::journal::lock::LockError> for Failure {
    fn from(e: cutover::journal::lock::LockError) -> Self {
        use cutover::journal::lock::LockError;
        let code = match e {
            LockError::Held(_) | LockError::HeldByLeftover(_) => LOCKED,
            LockError::WrongId { .. } | LockError::NotHeld => REFUSED,
            _ => STATE_UNAVAILABLE,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<cutover::workspace::WorkspaceError> for Failure {
    fn from(e: cutover::workspace::WorkspaceError) -> Self {
        Failure::new(STATE_UNAVAILABLE, e.to_string())
    }
}

impl From<cutover::engine::EngineError> for Failure {
    fn from(e: cutover::engine::EngineError) -> Self {
        use cutover::engine::EngineError;
        match e {
            EngineError::Journal(j) => j.into(),
            EngineError::Workspace(w) => w.into(),
            EngineError::UnknownStep(..) => Failure::new(INVALID, e.to_string()),
            EngineError::AllDone | EngineError::NothingToUndo { .. } => {
                Failure::new(OK, e.to_string())
            }
            other => Failure::new(REFUSED, other.to_string()),
        }
    }
}

impl From<S3Error> for Failure {
    fn from(e: S3Error) -> Self {
        let code = match e {
            S3Error::Interrupted { .. } => CANCELLED,
            _ => STATE_UNAVAILABLE,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<RemoteLockError> for Failure {
    fn from(e: RemoteLockError) -> Self {
        let code = match e {
            RemoteLockError::Held(_) | RemoteLockError::Stale(_) => LOCKED,
            RemoteLockError::S3(_) => STATE_UNAVAILABLE,
            _ => REFUSED,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<StateError> for Failure {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Workspace(e) => e.into(),
            StateError::S3(e) => e.into(),
            StateError::Journal(e) => e.into(),
        }
    }
}

impl From<DriveError> for Failure {
    fn from(e: DriveError) -> Self {
        match e {
            DriveError::Workspace(e) => e.into(),
            DriveError::Local(e) => e.into(),
            DriveError::Remote(e) => e.into(),
            DriveError::Journal(e) => e.into(),
        }
    }
}
