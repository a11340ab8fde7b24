//! A command that drives: the locks taken and the journal opened for writing, and the signal
//! handlers that cancel its step (a lost S3 lease too).

use std::sync::Arc;

use cutover::actions::Registry;
use cutover::engine::Engine;
use cutover::journal::Journal;
use cutover::redact::Redactor;
use cutover::runbook::Runbook;

use super::exit::{self, Failure};
use super::logging::init_stderr_warnings;

/// What the signal handlers of the command that drives need: its S3 lease (lost: the step is
/// cancelled) and its S3 client (Ctrl-C while S3 does not answer).
struct Driving {
    lease: Option<Arc<cutover::state::s3::Lease>>,
    interrupter: Option<cutover::state::s3::Interrupter>,
}

static DRIVING: std::sync::OnceLock<Driving> = std::sync::OnceLock::new();

/// How long S3 gets after Ctrl-C to record the cancelled step (the action's own grace, and
/// then some) before its calls are abandoned; a second Ctrl-C abandons them at once.
const S3_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the locks and opens the journal for writing, through `cutover::state::open_for_driving`:
/// what every command that changes state does. Keep the `Hold` until the command ends.
pub fn drive(
    runbook: Runbook,
    state: &cutover::state::State,
    registry: Registry,
    command: &str,
) -> Result<(Engine, cutover::state::Hold), Failure> {
    let actor = cutover::actor::current();
    if state.remote.is_some() {
        init_stderr_warnings();
    }
    let driving = cutover::state::open_for_driving(state, &actor, &format!("cutover {command}"))?;
    // The commands its steps run keep the lock if this driver is killed; nothing else does.
    cutover::actions::process::set_driver_lock_fd(Some(driving.hold.driver_lock_fd()));
    let _ = DRIVING.set(Driving {
        lease: driving.hold.lease(),
        interrupter: driving.hold.interrupter(),
    });
    let redactor = Arc::new(Redactor::new());
    let (journal, warning) = Journal::open(
        driving.store,
        actor,
        runbook.digest.clone(),
        redactor.clone(),
    )?;
    if let Some(warning) = warning {
        eprintln!("cutover: warning: {warning}");
    }
    let mut engine = Engine::new(
        Arc::new(runbook),
        state.workspace.clone(),
        journal,
        registry,
        redactor,
    );
    engine.set_mailbox(cutover::state::approvals::mailbox(state));
    Ok((engine, driving.hold))
}

/// A command that drove and failed: when it lost the S3 lock, or was interrupted while S3 did
/// not answer, that is what it says.
pub fn stopped(hold: &cutover::state::Hold, failure: Failure) -> Failure {
    if let Some(why) = hold.lost_why() {
        return Failure::new(exit::LOCKED, why);
    }
    if hold.interrupter().is_some_and(|i| i.is_interrupted()) {
        return Failure::new(exit::CANCELLED, format!("cancelled: {}", failure.message));
    }
    failure
}

/// Ctrl-C, SIGTERM or a closed terminal (SIGHUP) cancels the running step; the engine
/// records it and returns, and the lock is released.
///
/// With an S3 state: S3 then has [`S3_GRACE`] to record the cancelled step before its calls
/// are abandoned (a second signal abandons them at once), so a network that stopped answering
/// does not hold the command; and a lost S3 lease cancels the step too, saying why.
pub fn cancel_on_signals(cancel: &tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let driving = DRIVING.get();
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ] {
        if let Ok(mut stream) = signal(kind) {
            let cancel = cancel.clone();
            let interrupter = driving.and_then(|d| d.interrupter.clone());
            tokio::spawn(async move {
                stream.recv().await;
                eprintln!("\ncutover: cancelling the running step...");
                cancel.cancel();
                if let Some(interrupter) = interrupter {
                    tokio::select! {
                        () = tokio::time::sleep(S3_GRACE) => {}
                        _ = stream.recv() => {}
                    }
                    interrupter.interrupt();
                }
            });
        }
    }
    if let Some(lease) = driving.and_then(|d| d.lease.clone()) {
        let cancel = cancel.clone();
        // The lease says why (a warning on stderr); the step stops.
        tokio::spawn(async move {
            lease.lost().cancelled().await;
            cancel.cancel();
        });
    }
}
