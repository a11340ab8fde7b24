//! `cutover rollback STEP`: undo a done step by running its rollback action.

use cutover::engine::{rollback_phrase, Engine, EngineError, RollbackRequest};
use cutover::state::s3::Reading;
use tokio_util::sync::CancellationToken;

use super::context::{self, Context};
use super::driving::{self, drive};
use super::exit::{self, Failure};
use super::printer;

// What the operator asked for (the phrases typed: one per step rolled back).
#[derive(clap::Args, Debug)]
pub struct Args {
    pub step: String,
    /// Why (journaled with who).
    #[arg(long)]
    pub note: String,
    /// `roll back STEP`, typed exactly; once per step of a chain.
    #[arg(long, value_name = "PHRASE")]
    pub confirm: Vec<String>,
    /// Only this step, although done steps rely on it.
    #[arg(long, conflicts_with = "chain")]
    pub only: bool,
    /// The done steps relying on it first, the last done first.
    #[arg(long)]
    pub chain: bool,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let state = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    let runtime = context::runtime()?;
    let (mut engine, _lock) = drive(
        runbook,
        &state,
        ctx.registry.clone(),
        &format!("rollback {}", args.step),
    )?;
    engine.subscribe(Box::new(printer::Printer::new()));
    runtime.block_on(rollback(&mut engine, args))
}

/// Rolls back one step, or with `--chain` the done steps relying on it first (last done
/// first), each confirmed by its own phrase. Nothing runs until every phrase of the chain is
/// typed: without them it lists what each rollback will do and the phrases, and exits 5.
pub async fn rollback(engine: &mut Engine, args: Args) -> Result<u8, Failure> {
    let cancel = CancellationToken::new();
    driving::cancel_on_signals(&cancel);
    let steps = if args.chain {
        engine.rollback_chain(&args.step)
    } else {
        vec![args.step.clone()]
    };
    let typed = |step: &str| {
        let phrase = rollback_phrase(step);
        args.confirm.iter().find(|c| c.trim() == phrase).cloned()
    };
    let request = |step: &str, confirm: Option<String>| RollbackRequest {
        step: step.to_string(),
        confirm,
        note: args.note.clone(),
        // In a chain, each step's dependants are rolled back before it.
        only: args.only || args.chain,
        cancel: cancel.clone(),
    };
    if args.chain && steps.iter().any(|s| typed(s).is_none()) {
        let mut missing = Vec::new();
        println!("The chain rolls back, in this order:");
        for (i, step) in steps.iter().enumerate() {
            match engine.rollback(request(step, None)).await {
                Err(EngineError::RollbackConfirmationRequired {
                    consequence,
                    phrase,
                    ..
                }) => {
                    println!(
                        "  {}. {step}: {}",
                        i + 1,
                        consequence.replace('\n', "\n     ")
                    );
                    if typed(step).is_none() {
                        missing.push(phrase);
                    }
                }
                // Nothing runs for it: it needs no phrase.
                Err(EngineError::NothingToUndo { why, .. }) => {
                    println!("  {}. {step}: nothing to undo ({why})", i + 1);
                }
                Err(e) => return Err(e.into()),
                Ok(_) => {
                    return Err(Failure::new(
                        exit::STEP_FAILED,
                        format!("{step} was rolled back without its phrase"),
                    ))
                }
            }
        }
        if !missing.is_empty() {
            let flags: Vec<String> = missing
                .iter()
                .map(|p| format!("--confirm \"{p}\""))
                .collect();
            return Err(Failure::new(
                exit::REFUSED,
                format!(
                    "each rollback of the chain needs its phrase, typed exactly: {}",
                    flags.join(" ")
                ),
            ));
        }
    }
    let mut code = exit::OK;
    for step in &steps {
        let confirm = typed(step).or_else(|| {
            // One step alone: the phrase as typed, so a wrong one is named as wrong.
            (!args.chain)
                .then(|| args.confirm.first().cloned())
                .flatten()
        });
        let result = match engine.rollback(request(step, confirm)).await {
            Ok(r) => r,
            // In a chain, a step with nothing to undo is passed over, said.
            Err(EngineError::NothingToUndo { why, .. }) if args.chain => {
                println!("{step}: nothing to undo ({why}); it stays done");
                continue;
            }
            Err(e) => {
                engine.close_tunnels().await;
                return Err(e.into());
            }
        };
        println!(
            "{step}: {}",
            match &result.outcome {
                cutover::actions::Outcome::Succeeded { .. } => "rolled back".to_string(),
                other => format!("rollback {}", cutover::engine::describe_outcome(other)),
            }
        );
        code = match result.outcome {
            cutover::actions::Outcome::Succeeded { .. } => exit::OK,
            cutover::actions::Outcome::Failed { .. } => exit::STEP_FAILED,
            cutover::actions::Outcome::Cancelled => exit::CANCELLED,
        };
        if code != exit::OK {
            break;
        }
    }
    engine.close_tunnels().await;
    Ok(code)
}
