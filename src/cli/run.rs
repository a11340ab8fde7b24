//! `cutover run STEP` / `run --next`: one step, headless, streaming its log.

use cutover::actions::{Outcome, Registry};
use cutover::engine::{RunRequest, Target};
use cutover::journal;
use cutover::runbook::Runbook;
use cutover::state::s3::Reading;

use super::context::{self, Context};
use super::driving::{cancel_on_signals, drive, stopped};
use super::exit::{self, Failure};
use super::printer;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The step's id.
    pub step: Option<String>,
    /// Run the first step that can run now.
    #[arg(long)]
    pub next: bool,
    /// The confirmation phrase of a destructive step, typed exactly.
    #[arg(long, value_name = "PHRASE")]
    pub confirm: Option<String>,
    /// A note for the journal; required to complete a manual step.
    #[arg(long)]
    pub note: Option<String>,
    /// Run the step's check instead: if its effect already holds, the step is done.
    #[arg(long)]
    pub check: bool,
    /// Run a step that needs approvals without them, saying why (in --note): recorded as
    /// such, and listed in the report for review. Its phrase is still asked.
    #[arg(long, requires = "note")]
    pub break_glass: bool,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let state = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    let mut request = RunRequest::new(match (args.step, args.next) {
        (Some(id), _) => Target::Step(id),
        (None, _) => Target::Next,
    });
    request.confirm = args.confirm;
    if args.break_glass {
        request.break_glass = args.note.clone();
    }
    request.note = args.note;
    request.check_only = args.check;
    let runtime = context::runtime()?;
    let history = ctx.history()?;
    runtime.block_on(run(runbook, &state, ctx.registry.clone(), request, history))
}

async fn run(
    runbook: Runbook,
    state: &cutover::state::State,
    registry: Registry,
    request: RunRequest,
    history: Option<journal::JournalState>,
) -> Result<u8, Failure> {
    let label = match &request.target {
        Target::Step(id) => format!("run {id}"),
        Target::Next => "run --next".to_string(),
    };
    let (mut engine, hold) = drive(runbook, state, registry, &label)?;
    engine.observe(Box::new(context::PredictionRecorder(history)));
    tracing::info!(step = %label, "headless run");
    engine.subscribe(Box::new(printer::Printer::new()));
    cancel_on_signals(&request.cancel);
    let result = engine.run(request).await;
    // A tunnel lives as long as the command: this one is over.
    engine.close_tunnels().await;
    let result = match result {
        Ok(result) => result,
        Err(cutover::engine::EngineError::AllDone) => {
            println!("every step is done");
            return Ok(exit::OK);
        }
        Err(e) => return Err(stopped(&hold, e.into())),
    };
    Ok(match result.outcome {
        Outcome::Succeeded { .. } => exit::OK,
        Outcome::Failed { .. } => exit::STEP_FAILED,
        Outcome::Cancelled => exit::CANCELLED,
    })
}
