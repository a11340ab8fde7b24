//! `cutover note TEXT`: a note in the journal.

use cutover::state::s3::Reading;

use super::context::Context;
use super::driving::drive;
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub text: String,
    /// The step it is about.
    #[arg(long)]
    pub step: Option<String>,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let state = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    let (mut engine, _lock) = drive(runbook, &state, ctx.registry.clone(), "note")?;
    engine.note(args.step.as_deref(), &args.text)?;
    Ok(exit::OK)
}
