//! `cutover status`: every phase and step with its state, who did it and when. Read-only:
//! it takes no lock.

use std::time::SystemTime;

use cutover::engine::describe_state;
use cutover::journal::{self, Integrity};
use cutover::redact::Redactor;
use cutover::runbook::Runbook;
use cutover::state::s3::Reading;
use cutover::status::{progress, step_states, StepState, StepView};
use cutover::workspace::Workspace;
use serde_json::json;

use super::context::{driver, load_journal, Context};
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let state = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    let history = ctx.history()?;
    status(&runbook, &state.workspace, args.json, history.as_ref())
}

fn symbol(state: &StepState) -> &'static str {
    match state {
        StepState::Done => "✓",
        StepState::Skipped => "↷",
        StepState::Ready => "▶",
        StepState::Running => "⟳",
        StepState::Failed { .. } => "✗",
        StepState::Interrupted => "!",
        StepState::Changed => "~",
        StepState::Gated { .. } => "⏸",
        StepState::Blocked { .. } => "·",
        StepState::RolledBack => "↶",
        StepState::Stale { .. } => "↻",
    }
}

fn short_time(rfc3339: &str) -> String {
    rfc3339.get(..16).unwrap_or(rfc3339).replace('T', " ")
}

pub fn status(
    runbook: &Runbook,
    workspace: &Workspace,
    json_output: bool,
    history: Option<&journal::JournalState>,
) -> Result<u8, Failure> {
    let loaded = load_journal(workspace)?;
    let driver = driver(workspace);
    let alive = driver.as_ref().is_some_and(|(_, alive)| *alive);
    let views = step_states(runbook, &loaded.state, alive, SystemTime::now());
    let (done, total) = progress(&views);
    let code = match loaded.integrity {
        Integrity::Broken { .. } => exit::JOURNAL_DAMAGED,
        _ => exit::OK,
    };
    if json_output {
        let phases: Vec<serde_json::Value> = runbook
            .phases
            .iter()
            .map(|phase| {
                json!({
                    "id": phase.id,
                    "title": phase.title,
                    "steps": views[phase.steps.clone()].iter().map(step_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        let value = json!({
            "runbook": {
                "name": runbook.name,
                "app": runbook.app,
                "path": runbook.source.path,
                "digest": runbook.digest,
            },
            "driver": driver.as_ref().map(|(info, alive)| json!({
                "holder": info.holder,
                "host": info.host,
                "pid": info.pid,
                "command": info.command,
                "since": info.started,
                "lock_id": info.id,
                // The driver is gone and a command it started holds the lock.
                "driver_gone": !alive,
            })),
            "journal": {
                "lines": loaded.state.lines,
                "warning": loaded.warning(),
            },
            "progress": { "done": done, "total": total },
            "last_activity": loaded.state.last_activity.as_ref().map(|a| json!({
                "time": a.time, "actor": a.actor, "step": a.step, "event": a.event,
            })),
            "phases": phases,
            "windows": cutover::window::to_json(runbook, &loaded.state, history, SystemTime::now()),
            "backlogs": cutover::status::backlogs(runbook, &loaded.state).iter().map(|b| json!({
                "direction": b.direction,
                "step": b.step,
                "changes": b.changes,
                "oldest_secs": b.oldest.map(|o| o.as_secs()),
                "as_of": b.as_of,
            })).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(code);
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{} — {}   ({})\n",
        runbook.name,
        runbook.app,
        runbook.source.path.display()
    ));
    match &driver {
        Some((info, true)) => out.push_str(&format!("driver: {}\n", info.describe())),
        Some((info, false)) => out.push_str(&format!(
            "driver: none — but a command started by {} still runs and holds the lock\n",
            info.describe()
        )),
        None => out.push_str("driver: none\n"),
    }
    out.push_str(&format!("{done}/{total} steps done"));
    if let Some(a) = &loaded.state.last_activity {
        out.push_str(&format!(
            " · last: {} {} by {} at {}",
            a.event,
            a.step.as_deref().unwrap_or("-"),
            a.actor,
            short_time(&a.time)
        ));
    }
    out.push('\n');
    if let Some(w) = loaded.warning() {
        out.push_str(&format!("warning: {w}\n"));
    }
    for view in cutover::window::views(runbook, &loaded.state) {
        let predicted =
            cutover::window::predict(runbook, &view.window, &loaded.state, history).total;
        match &view.state {
            cutover::window::WindowState::Pending => out.push_str(&format!(
                "window {}: not open yet (opens when {} is done), predicted {}\n",
                view.window.name,
                view.window.from,
                cutover::clock::short(predicted)
            )),
            state => out.push_str(&format!(
                "window {}: {} {}, predicted {}\n",
                view.window.name,
                if matches!(state, cutover::window::WindowState::Open { .. }) {
                    "OPEN for"
                } else {
                    "closed after"
                },
                cutover::clock::short(state.elapsed(SystemTime::now()).unwrap_or_default()),
                cutover::clock::short(predicted)
            )),
        }
    }
    for backlog in cutover::status::backlogs(runbook, &loaded.state) {
        out.push_str(&format!(
            "backlog {}\n",
            backlog.describe(SystemTime::now())
        ));
    }
    let id_width = runbook.steps.iter().map(|s| s.id.len()).max().unwrap_or(4);
    for (n, phase) in runbook.phases.iter().enumerate() {
        out.push_str(&format!("\nPhase {} · {}\n", n + 1, phase.title));
        for view in &views[phase.steps.clone()] {
            let who = view
                .record
                .filter(|r| r.status != journal::Recorded::Pending)
                .map(|r| format!("  {} {}", r.actor, short_time(&r.since)))
                .unwrap_or_default();
            let extra = match &view.state {
                StepState::Blocked { .. } | StepState::Gated { .. } | StepState::Failed { .. } => {
                    format!("  ({})", describe_state(&view.state))
                }
                // Why it was skipped (an `only_if` says what it read).
                StepState::Skipped => view
                    .record
                    .and_then(|r| r.detail.as_deref())
                    .map(|note| format!("  ({note})"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {} {:<11} {:<id_width$}  {}{}{}{}\n",
                symbol(&view.state),
                view.state.label(),
                view.step.id,
                view.step.title,
                if view.step.destructive {
                    "  [destructive]"
                } else {
                    ""
                },
                who,
                extra,
            ));
        }
    }
    print!("{}", Redactor::new().redact(&out));
    Ok(code)
}

fn step_json(view: &StepView<'_>) -> serde_json::Value {
    let record = view.record;
    json!({
        "id": view.step.id,
        "title": view.step.title,
        "state": view.state.label(),
        "detail": describe_state(&view.state),
        "destructive": view.step.destructive,
        "attempts": record.map_or(0, |r| r.attempts),
        "actor": record.map(|r| r.actor.clone()),
        "since": record.map(|r| r.since.clone()),
        "note": record.and_then(|r| r.detail.clone()),
        "outputs": record.map(|r| r.outputs.clone()).unwrap_or_default(),
    })
}
