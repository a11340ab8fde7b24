//! `cutover unlock LOCK_ID`: the holder details left in a lock file cleared, with their id.

use cutover::journal::lock;
use cutover::state::s3::Reading;

use super::context::Context;
use super::exit::{self, Failure};
use super::state;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_name = "LOCK_ID")]
    pub id: String,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let setup = ctx.state(Some(Reading::New))?;
    if let Some(remote) = &setup.remote {
        return state::unlock(remote, &args.id);
    }
    let info = lock::unlock(&setup.workspace.lock_path(), &args.id)?;
    println!("cleared the lock details of {}", info.describe());
    Ok(exit::OK)
}
