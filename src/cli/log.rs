//! `cutover log STEP`: a step's log (the latest attempt unless --attempt).

use cutover::state::s3::Reading;

use cutover::runbook::Runbook;
use cutover::workspace::Workspace;

use super::context::{load_journal, Context};
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub step: String,
    #[arg(long)]
    pub attempt: Option<u32>,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let state = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    if let Some(remote) = &state.remote {
        cutover::state::s3::pull_logs(
            remote,
            &state.workspace.root,
            &format!("logs/{}/", args.step),
        )?;
    }
    log(&runbook, &state.workspace, &args.step, args.attempt)
}

fn log(
    runbook: &Runbook,
    workspace: &Workspace,
    id: &str,
    attempt: Option<u32>,
) -> Result<u8, Failure> {
    if runbook.step(id).is_none() {
        return Err(Failure::new(
            exit::INVALID,
            format!("no step `{id}` in the runbook"),
        ));
    }
    let loaded = load_journal(workspace)?;
    let last = loaded.state.step(id).map_or(0, |r| r.attempts);
    let attempt = attempt.unwrap_or(last);
    if attempt == 0 {
        return Err(Failure::new(
            exit::REFUSED,
            format!("step `{id}` has not run yet"),
        ));
    }
    let path = workspace.resolve(&Workspace::log_relative(id, attempt));
    match std::fs::read(&path) {
        Ok(bytes) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&bytes);
            Ok(exit::OK)
        }
        Err(e) => Err(Failure::new(
            exit::REFUSED,
            format!(
                "no log for step `{id}` attempt {attempt} ({}: {e}); it has {last} attempt(s)",
                path.display()
            ),
        )),
    }
}
