//! `--state s3://BUCKET/PREFIX` (or `CUTOVER_STATE`, or the runbook's `[state] backend`): the
//! journal and the lock on S3, mirrored in a state directory of their own; and `cutover state
//! push` / `state pull`.

use std::path::PathBuf;

use cutover::journal::lock::LockInfo;
use cutover::runbook::AwsSettings;
use cutover::state::s3::{self, Remote, RemoteLockError};
use cutover::state::{Backend, DriveError, State, StateError};
use cutover::workspace::Workspace;

use super::context::Context;
use super::exit::{self, Failure};
use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum StateCommand {
    /// Upload a local journal (its chain verified first) to the empty S3 prefix.
    Push {
        /// The local state directory (default: .cutover/ beside the runbook).
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
    },
    /// Bring the local mirror up to S3; with --to, copy the journal there for reading.
    Pull {
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    match args.command {
        // Push fills an empty prefix: nothing to read first.
        StateCommand::Push { from } => {
            let setup = ctx.state(None)?;
            push(&setup, from.unwrap_or(ctx.workspace().root))
        }
        StateCommand::Pull { to } => {
            let setup = ctx.state(Some(s3::Reading::New))?;
            pull(&setup, to)
        }
    }
}

/// The backend: `--state`/`CUTOVER_STATE`, else the runbook's `[state] backend`.
fn backend(cli: &Cli, runbook: Option<&cutover::runbook::Runbook>) -> Result<Backend, Failure> {
    let text = cli
        .state_url
        .clone()
        .or_else(|| runbook.and_then(|r| r.state.clone()));
    match text {
        None => Ok(Backend::Local),
        Some(text) => Backend::parse(&text).map_err(|e| Failure::new(exit::INVALID, e)),
    }
}

impl From<s3::S3Error> for Failure {
    fn from(e: s3::S3Error) -> Self {
        let code = match e {
            s3::S3Error::Interrupted { .. } => exit::CANCELLED,
            _ => exit::STATE_UNAVAILABLE,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<RemoteLockError> for Failure {
    fn from(e: RemoteLockError) -> Self {
        let code = match e {
            RemoteLockError::Held(_) | RemoteLockError::Stale(_) => exit::LOCKED,
            RemoteLockError::S3(_) => exit::STATE_UNAVAILABLE,
            _ => exit::REFUSED,
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

/// Opens this command's state (`cutover::state::open_for_reading`): the local workspace, or
/// the S3 state with its mirror brought up to it as `reading` says (not at all for a push).
pub fn setup(
    cli: &Cli,
    runbook: Option<&cutover::runbook::Runbook>,
    local: Workspace,
    reading: Option<s3::Reading>,
) -> Result<State, Failure> {
    let backend = backend(cli, runbook)?;
    let mut aws: AwsSettings = runbook.and_then(|r| r.aws.clone()).unwrap_or_default();
    if cli.endpoint_url.is_some() {
        aws.endpoint_url = cli.endpoint_url.clone();
    }
    if cli.profile.is_some() {
        aws.profile = cli.profile.clone();
    }
    if cli.region.is_some() {
        aws.region = cli.region.clone();
    }
    let state = cutover::state::open_for_reading(local, &backend, &aws, reading)?;
    if state.remote.is_some() {
        // Status shows the S3 lock's holder: alive while S3 has seen it renewed within its lease.
        match &state.driver {
            Some(holder) => super::context::set_remote_driver(
                LockInfo {
                    id: holder.id.clone(),
                    holder: holder.holder.clone(),
                    host: holder.host.clone(),
                    pid: holder.pid,
                    pid_start: None,
                    command: holder.command.clone(),
                    started: holder.started.clone(),
                },
                !holder.is_stale(),
            ),
            None => super::context::set_no_remote_driver(),
        }
    }
    Ok(state)
}

/// `cutover state push [--from DIR]`: a local journal to an empty S3 prefix.
pub fn push(setup: &State, from: PathBuf) -> Result<u8, Failure> {
    let Some(remote) = &setup.remote else {
        return Err(Failure::new(
            exit::INVALID,
            "state push needs an S3 state: --state s3://BUCKET/PREFIX (or [state] backend)",
        ));
    };
    let journal = from.join("journal.jsonl");
    let bytes = std::fs::read(&journal).map_err(|e| {
        Failure::new(
            exit::STATE_UNAVAILABLE,
            format!("cannot read {}: {e}", journal.display()),
        )
    })?;
    let events = s3::push(remote, &bytes).map_err(|e| Failure::new(exit::REFUSED, e))?;
    let pulled = s3::pull(remote, &setup.workspace.journal_path())?;
    println!(
        "{}: {events} event(s) pushed from {}, chain verified; mirrored in {} ({} events)",
        remote.url(),
        journal.display(),
        setup.workspace.root.display(),
        pulled.events
    );
    Ok(exit::OK)
}

/// `cutover state pull [--to DIR]`: the S3 journal copied for reading.
pub fn pull(setup: &State, to: Option<PathBuf>) -> Result<u8, Failure> {
    let Some(remote) = &setup.remote else {
        return Err(Failure::new(
            exit::INVALID,
            "state pull needs an S3 state: --state s3://BUCKET/PREFIX (or [state] backend)",
        ));
    };
    let pulled = s3::pull(remote, &setup.workspace.journal_path())?;
    let mirror = setup.workspace.journal_path();
    let target = match to {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| {
                Failure::new(exit::STATE_UNAVAILABLE, format!("{}: {e}", dir.display()))
            })?;
            let copy = dir.join("journal.jsonl");
            std::fs::copy(&mirror, &copy).map_err(|e| {
                Failure::new(exit::STATE_UNAVAILABLE, format!("{}: {e}", copy.display()))
            })?;
            copy
        }
        None => mirror,
    };
    println!(
        "{}: {} event(s) ({} fetched now) in {}",
        remote.url(),
        pulled.events,
        pulled.fetched,
        target.display()
    );
    Ok(exit::OK)
}

/// `cutover unlock ID` on an S3 state: a stale lock with that id, only if unchanged since read.
pub fn unlock(remote: &Remote, id: &str) -> Result<u8, Failure> {
    let info = s3::unlock(remote, id)?;
    println!("removed the stale S3 lock of {}", info.describe());
    Ok(exit::OK)
}
