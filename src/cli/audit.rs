//! `cutover audit verify`: proves the journal was not edited.

use clap::Subcommand;
use cutover::journal;
use cutover::state::s3::Reading;
use cutover::workspace::Workspace;

use super::context::load_journal;
use super::context::Context;
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every line's sequence number and hash chain; name the first bad line.
    Verify,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    // Every key and ETag checked: a deleted or replaced event anywhere is named.
    let state = ctx.state(Some(Reading::Full))?;
    match args.command {
        AuditCommand::Verify => verify(&state.workspace),
    }
}

fn verify(workspace: &Workspace) -> Result<u8, Failure> {
    let path = workspace.journal_path();
    let loaded = load_journal(workspace)?;
    match &loaded.integrity {
        journal::Integrity::Broken { line, reason } => Err(Failure::new(
            exit::JOURNAL_DAMAGED,
            format!("{}: line {line} is bad: {reason}", path.display()),
        )),
        integrity => {
            if let journal::Integrity::PartialTail { .. } = integrity {
                if let Some(w) = loaded.warning() {
                    eprintln!("cutover: warning: {w}");
                }
            }
            println!(
                "{}: verified — {} lines, chain intact, last hash {}",
                path.display(),
                loaded.state.lines,
                loaded.state.last_hash
            );
            Ok(exit::OK)
        }
    }
}
