//! `cutover tunnel-guard` (internal): runs a tunnel's Session Manager plugin and stops it when
//! cutover ends.

use super::context::Context;
use super::exit::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub program: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn exec(_ctx: &Context, args: Args) -> Result<u8, Failure> {
    let code = cutover::actions::aws::tunnel::guard(&args.program, &args.args);
    Ok(u8::try_from(code).unwrap_or(1))
}
