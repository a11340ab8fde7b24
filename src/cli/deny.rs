//! `cutover deny STEP --note "why"`: a second operator refuses a step; it cannot run until
//! they take it back (`cutover deny STEP --withdraw`). Signed and posted as an approval is
//! (`cutover approve`), with their own AWS credentials.

use cutover::approval::Verdict;
use cutover::state::s3::Reading;

use super::approve::{post, step_needing_approval};
use super::context::{load_journal, Context};
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The step to refuse.
    pub step: String,
    /// Why (required for a deny).
    #[arg(long, default_value = "")]
    pub note: String,
    /// Take back your own deny.
    #[arg(long)]
    pub withdraw: bool,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    if !args.withdraw && args.note.trim().is_empty() {
        return Err(Failure::new(
            exit::INVALID,
            "a deny says why: --note \"...\"",
        ));
    }
    let state = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    let step = step_needing_approval(&runbook, &args.step)?;
    let loaded = load_journal(&state.workspace)?;
    let journal = &loaded.state;
    let request = journal
        .step(&step.id)
        .and_then(|r| r.approval_request.clone());
    // A deny holds whatever is asked for next, until withdrawn: it names the request it saw.
    let (digest, head) = request.map(|r| (r.digest, r.head)).unwrap_or_default();
    post(
        &runbook,
        &state,
        step,
        if args.withdraw {
            Verdict::Withdraw
        } else {
            Verdict::Deny
        },
        &digest,
        &head,
        &args.note,
        None,
        journal,
    )
}
