//! `cutover state push` / `state pull`: a migration's state moved to S3 (into an empty prefix)
//! or copied from there. (Opening the state every command reads, `--state s3://BUCKET/PREFIX`,
//! is in context.rs.)

use std::path::PathBuf;

use cutover::state::s3::{self, Remote};
use cutover::state::State;

use super::context::Context;
use super::exit::{self, Failure};

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
