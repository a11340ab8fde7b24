//! `cutover validate`: the runbook checked, every error with file:line:column.

use super::context::Context;
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn exec(ctx: &Context, _args: Args) -> Result<u8, Failure> {
    let runbook = ctx.load()?;
    println!(
        "{}: valid — {} phases, {} steps",
        runbook.source.path.display(),
        runbook.phases.len(),
        runbook.steps.len()
    );
    Ok(exit::OK)
}
