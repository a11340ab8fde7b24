//! Read-only views: status, plan, a step's log. None of them takes the lock.

use std::time::SystemTime;

use cutover::actions::Registry;
use cutover::engine::{describe_state, display_scope};
use cutover::journal::{self, lock, FileStore, Integrity, JournalStore, Loaded};
use cutover::redact::Redactor;
use cutover::runbook::{self, Runbook, Template};
use cutover::status::{progress, step_states, StepState, StepView};
use cutover::workspace::Workspace;
use serde_json::json;

use super::exit::{self, Failure};

pub fn load_journal(workspace: &Workspace) -> Result<Loaded, Failure> {
    let store = FileStore::new(workspace.journal_path());
    Ok(journal::load(&store.read_all()?))
}

/// With an S3 state: the S3 lock's holder, alive while its heartbeat is within the lease
/// (`None` inside: nobody holds it). Set once, before the views are drawn.
type RemoteDriver = Option<(lock::LockInfo, bool)>;
static REMOTE_DRIVER: std::sync::OnceLock<RemoteDriver> = std::sync::OnceLock::new();

pub fn set_remote_driver(info: lock::LockInfo, alive: bool) {
    let _ = REMOTE_DRIVER.set(Some((info, alive)));
}

pub fn set_no_remote_driver() {
    let _ = REMOTE_DRIVER.set(None);
}

/// The lock holder, if any, and whether its process is still alive.
fn driver(workspace: &Workspace) -> Option<(lock::LockInfo, bool)> {
    if let Some(remote) = REMOTE_DRIVER.get() {
        return remote.clone();
    }
    lock::read(&workspace.lock_path())
        .ok()
        .flatten()
        .map(|info| {
            let alive = !info.driver_gone();
            (info, alive)
        })
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

pub fn plan(runbook: &Runbook, workspace: &Workspace, registry: &Registry) -> Result<u8, Failure> {
    let loaded = load_journal(workspace)?;
    let alive = driver(workspace).is_some_and(|(_, alive)| alive);
    let views = step_states(runbook, &loaded.state, alive, SystemTime::now());
    let scope = display_scope(runbook, &loaded.state);
    let estimate = runbook.cost.as_ref().and_then(|spec| {
        cutover::cost::offline_estimate(spec, &workspace.root.join("prices-live.json")).ok()
    });
    let mut out = String::new();
    let remaining: Vec<&StepView<'_>> = views.iter().filter(|v| !v.state.is_settled()).collect();
    out.push_str(&format!(
        "{} steps remain of {} in {}\n",
        remaining.len(),
        views.len(),
        runbook.name
    ));
    let render =
        |text: &str| Template::parse(text).map_or_else(|_| text.to_string(), |t| t.display(&scope));
    for view in remaining {
        let step = view.step;
        out.push_str(&format!(
            "\n[{}] {} — {} (phase {})\n",
            view.state.label(),
            step.id,
            step.title,
            runbook
                .phases
                .get(step.phase)
                .map_or("?", |p| p.id.as_str())
        ));
        if let StepState::Blocked { .. } | StepState::Gated { .. } | StepState::Failed { .. } =
            &view.state
        {
            out.push_str(&format!("    now: {}\n", describe_state(&view.state)));
        }
        let describe = |spec: &runbook::ActionSpec| {
            let shown = runbook::display_params(spec, &scope);
            registry.get(&spec.kind).map_or_else(
                || spec.kind.clone(),
                |a| format!("{}: {}", spec.kind, a.describe(&shown)),
            )
        };
        out.push_str(&format!("    do: {}\n", describe(&step.action)));
        if !step.needs.is_empty() {
            out.push_str(&format!("    needs: {}\n", step.needs.join(", ")));
        }
        if let Some(gate) = &step.after {
            out.push_str(&format!(
                "    after: `{}` done for at least {}\n",
                gate.step,
                humantime::format_duration(gate.at_least)
            ));
        }
        if let Some(check) = &step.check {
            out.push_str(&format!("    check: {}\n", describe(check)));
        }
        let mut limits = Vec::new();
        if let Some(t) = step.timeout {
            limits.push(format!("timeout {}", humantime::format_duration(t)));
        }
        if step.retries > 0 {
            limits.push(format!("retries {}", step.retries));
        }
        if !step.outputs.is_empty() {
            limits.push(format!("outputs {}", step.outputs.join(", ")));
        }
        if let Some(via) = &step.via {
            limits.push(format!("through the tunnel `{via}`"));
        }
        if !limits.is_empty() {
            out.push_str(&format!("    {}\n", limits.join(" · ")));
        }
        if let Some(monthly) = estimate
            .as_ref()
            .and_then(|e| e.monthly_of(&step.starts_billing))
        {
            out.push_str(&format!(
                "    starts billing about {}/month ({})\n",
                cutover::cost::usd(monthly),
                step.starts_billing.join(", ")
            ));
        }
        if step.destructive {
            out.push_str(&format!(
                "    DESTRUCTIVE — runs only with --confirm \"{}\"\n",
                step.confirm.as_deref().unwrap_or_default()
            ));
        }
        match &step.rollback {
            Some(r) => out.push_str(&format!("    rollback: {}\n", render(&r.summary()).trim())),
            None if step.destructive => out.push_str("    rollback: none — irreversible\n"),
            None => {}
        }
    }
    // Literal credentials written into the runbook itself are masked too.
    print!("{}", Redactor::new().redact(&out));
    Ok(exit::OK)
}

pub fn log(
    runbook: &Runbook,
    workspace: &Workspace,
    id: &str,
    attempt: Option<u32>,
) -> Result<u8, Failure> {
    if runbook.step(id).is_none() {
        return Err(Failure::new(
            exit::INVALID,
            format!("no step `{id}` in the runbook"),
        ));
    }
    let loaded = load_journal(workspace)?;
    let last = loaded.state.step(id).map_or(0, |r| r.attempts);
    let attempt = attempt.unwrap_or(last);
    if attempt == 0 {
        return Err(Failure::new(
            exit::REFUSED,
            format!("step `{id}` has not run yet"),
        ));
    }
    let path = workspace.resolve(&Workspace::log_relative(id, attempt));
    match std::fs::read(&path) {
        Ok(bytes) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&bytes);
            Ok(exit::OK)
        }
        Err(e) => Err(Failure::new(
            exit::REFUSED,
            format!(
                "no log for step `{id}` attempt {attempt} ({}: {e}); it has {last} attempt(s)",
                path.display()
            ),
        )),
    }
}
