//! `cutover watch`: the terminal UI, read-only, while another terminal drives.

use cutover::state::s3::Reading;

use super::context::Context;
use super::exit::Failure;
use super::tui;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub mouse: bool,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let state = ctx.state(Some(Reading::New))?;
    tui::open(ctx, state, true, args.mouse, 100_000)
}
