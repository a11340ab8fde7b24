//! `cutover mark STEP STATE --note WHY`: a step's state set by hand.

use clap::ValueEnum;
use cutover::engine::Mark;
use cutover::state::s3::Reading;

use super::context::Context;
use super::driving::drive;
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub step: String,
    #[arg(value_enum)]
    pub state: MarkState,
    #[arg(long)]
    pub note: String,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum MarkState {
    Done,
    Pending,
    Skipped,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let Args { step, state, note } = args;
    let setup = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    let (mut engine, _lock) = drive(
        runbook,
        &setup,
        ctx.registry.clone(),
        &format!("mark {step}"),
    )?;
    let mark = match state {
        MarkState::Done => Mark::Done,
        MarkState::Pending => Mark::Pending,
        MarkState::Skipped => Mark::Skipped,
    };
    engine.mark(&step, mark, &note)?;
    println!("{step}: marked {}", format!("{state:?}").to_lowercase());
    Ok(exit::OK)
}
