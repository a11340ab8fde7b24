//! `cutover man`: the manual page (roff), from the same definitions as the command line.

use super::completions;
use super::context::Context;
use super::exit::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn exec(_ctx: &Context, _args: Args) -> Result<u8, Failure> {
    completions::man()
}
