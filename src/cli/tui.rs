//! `cutover tui` (what `cutover` alone does on a terminal): the terminal UI, driving when it can
//! take the locks.

use std::sync::Arc;

use cutover::engine::Engine;
use cutover::journal::{lock, Journal};
use cutover::redact::Redactor;
use cutover::state::s3::Reading;

use super::context::{self, Context};
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scroll and click with the mouse.
    #[arg(long)]
    pub mouse: bool,
    /// Log lines kept in memory per step (the full log is on disk).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub log_lines: usize,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let state = ctx.state(Some(Reading::New))?;
    open(ctx, state, false, args.mouse, args.log_lines)
}

/// Opens the terminal UI: driving when it can take the locks, watching (and holding nothing)
/// when another driver holds one, or with `watch_only`.
pub fn open(
    ctx: &Context,
    state: cutover::state::State,
    watch_only: bool,
    mouse: bool,
    log_lines: usize,
) -> Result<u8, Failure> {
    use cutover::tui::{self, Mode, Setup};
    let runbook = match ctx.load() {
        Ok(r) => r,
        Err(failure) => {
            let _ = tui::show_error(&failure.message);
            return Err(failure);
        }
    };
    let workspace = state.workspace.clone();
    workspace.ensure()?;
    // One redactor for the journal, the step logs and tui.log: it learns each secret once read.
    let redactor = Arc::new(Redactor::new());
    super::logging::init_file_tracing(&workspace, redactor.clone());
    let actor = cutover::actor::current();
    let runbook = Arc::new(runbook);
    // Driving takes every lock (S3's first) or none; refused, the UI watches — an S3 state's
    // mirror following S3 (the journal and the log chunks) every second.
    let driving = if watch_only {
        None
    } else {
        match cutover::state::open_for_driving(&state, &actor, "cutover tui") {
            Ok(driving) => {
                cutover::actions::process::set_driver_lock_fd(Some(driving.hold.driver_lock_fd()));
                Some(driving)
            }
            Err(refused) => match refused.holder() {
                Some(holder) => {
                    tracing::info!(%holder, "the UI watches");
                    None
                }
                None => return Err(refused.into()),
            },
        }
    };
    let (mode, engine, hold, _following) = match driving {
        Some(driving) => {
            let (journal, _warning) = Journal::open(
                driving.store,
                actor.clone(),
                runbook.digest.clone(),
                redactor.clone(),
            )?;
            let mut engine = Engine::new(
                runbook.clone(),
                workspace.clone(),
                journal,
                ctx.registry.clone(),
                redactor,
            );
            engine.observe(Box::new(context::PredictionRecorder(ctx.history()?)));
            engine.set_mailbox(cutover::state::approvals::mailbox(&state));
            (Mode::Drive, Some(engine), Some(driving.hold), None)
        }
        None => {
            let following = cutover::state::follow(&state, std::time::Duration::from_secs(1));
            let reason = match (
                cutover::state::s3::followed_driver(&workspace.root),
                lock::read(&workspace.lock_path()).ok().flatten(),
            ) {
                (_, Some(info)) if info.driver_gone() => format!(
                    "a command {}'s driver started still runs and holds the lock",
                    info.holder
                ),
                (_, Some(info)) => format!(
                    "{} drives (pid {}, since {})",
                    info.holder, info.pid, info.started
                ),
                (Some((_, Some(holder))), None) => format!("{holder} drives (following S3)"),
                (Some((_, None)), None) => "nobody drives (following S3)".to_string(),
                (None, None) => "nobody drives".to_string(),
            };
            (Mode::Watch { reason }, None, None, following)
        }
    };
    // A driver that loses the S3 lock stops its step (the lease says why in tui.log: the
    // journal may no longer be its to write).
    let lost = hold.as_ref().and_then(cutover::state::Hold::lost);
    let cost = runbook.cost.as_ref().and_then(|spec| {
        cutover::cost::offline_estimate(spec, &workspace.root.join("prices-live.json")).ok()
    });
    // The header names where AWS work happens; the account is checked before every AWS call.
    let aws = runbook.aws.as_ref().map(|a| {
        [
            a.account_id.as_deref().map(|v| format!("AWS {v}")),
            a.region.clone(),
            a.profile.as_deref().map(|p| format!("profile {p}")),
            a.endpoint_url.as_deref().map(|u| format!("endpoint {u}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · ")
    });
    let setup = Setup {
        aws,
        cost,
        runbook,
        workspace,
        engine,
        mode,
        banner: std::env::var("CUTOVER_BANNER")
            .ok()
            .filter(|b| !b.trim().is_empty()),
        mouse,
        log_capacity: log_lines.max(1000),
        history: ctx.history()?,
        actor,
        started: context::STARTED
            .get()
            .copied()
            .unwrap_or_else(std::time::Instant::now),
        lost,
    };
    let runtime = context::runtime()?;
    let result = runtime.block_on(tui::run(setup));
    drop(hold);
    result.map_err(|e| Failure::new(exit::STEP_FAILED, format!("terminal error: {e}")))?;
    Ok(exit::OK)
}
