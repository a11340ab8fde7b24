//! `--state s3://BUCKET/PREFIX` (or `CUTOVER_STATE`, or the runbook's `[state] backend`): the
//! journal and the lock on S3, mirrored in a state directory of their own; and `cutover state
//! push` / `state pull`.

use std::path::PathBuf;
use std::sync::Arc;

use cutover::journal::lock::LockInfo;
use cutover::runbook::AwsSettings;
use cutover::state::s3::{self, Remote, RemoteLockError};
use cutover::state::Backend;
use cutover::workspace::Workspace;

use super::exit::{self, Failure};
use super::Cli;

/// Where this command's state is: the workspace (for S3, the local mirror) and the S3 prefix.
pub struct Setup {
    pub workspace: Workspace,
    pub remote: Option<Arc<Remote>>,
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
        Failure::new(exit::STATE_UNAVAILABLE, e.to_string())
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

/// Connects to the S3 state when there is one (checking the bucket and, at first use, that it
/// honours conditional writes), and brings the local mirror up to it as `reading` says (not at
/// all for a push).
pub fn setup(
    cli: &Cli,
    runbook: Option<&cutover::runbook::Runbook>,
    local: Workspace,
    reading: Option<s3::Reading>,
) -> Result<Setup, Failure> {
    let Backend::S3 { bucket, prefix } = backend(cli, runbook)? else {
        return Ok(Setup {
            workspace: local,
            remote: None,
        });
    };
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
    let workspace = Workspace {
        root: s3::mirror_dir(&local.root, &bucket, &prefix),
    };
    workspace.ensure()?;
    let remote = Arc::new(Remote::connect(&bucket, &prefix, &aws)?);
    remote.check_conditional_writes(&workspace.root.join("conditional-writes-ok"))?;
    if let Some(reading) = reading {
        s3::pull_checked(&remote, &workspace.journal_path(), reading)?;
    }
    // Status shows the S3 lock's holder: alive while its heartbeat is within the lease.
    if let Some(holder) = s3::holder(&remote)? {
        let alive = !holder.is_stale(std::time::SystemTime::now());
        super::show::set_remote_driver(
            LockInfo {
                id: holder.id.clone(),
                holder: holder.holder.clone(),
                host: holder.host.clone(),
                pid: holder.pid,
                pid_start: None,
                command: holder.command.clone(),
                started: holder.started.clone(),
            },
            alive,
        );
    } else {
        super::show::set_no_remote_driver();
    }
    Ok(Setup {
        workspace,
        remote: Some(remote),
    })
}

/// `cutover state push [--from DIR]`: a local journal to an empty S3 prefix.
pub fn push(setup: &Setup, from: PathBuf) -> Result<u8, Failure> {
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
pub fn pull(setup: &Setup, to: Option<PathBuf>) -> Result<u8, Failure> {
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
