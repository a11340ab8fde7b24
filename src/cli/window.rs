//! `cutover plan --window NAME` (a window predicted before it opens) and `cutover report` (the
//! whole migration as one document for the change ticket).

use std::path::Path;
use std::time::SystemTime;

use cutover::journal::{self, JournalState, Recorded};
use cutover::redact::Redactor;
use cutover::runbook::Runbook;
use cutover::window::{self, WindowState};
use cutover::workspace::Workspace;
use serde_json::json;

use super::exit::{self, Failure};
use super::show::load_journal;
use super::ReportFormat;

/// The journal of an earlier run (`--history`), folded; a damaged one is used up to the damage.
pub fn load_history(path: Option<&Path>) -> Result<Option<JournalState>, Failure> {
    let Some(path) = path else {
        return Ok(None);
    };
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::new(exit::INVALID, format!("--history {}: {e}", path.display())))?;
    let loaded = journal::load(&bytes);
    if let Some(w) = loaded.warning() {
        eprintln!("cutover: --history {}: {w}", path.display());
    }
    cutover::window::check_history(&loaded.state)
        .map_err(|e| Failure::new(exit::INVALID, format!("--history {}: {e}", path.display())))?;
    Ok(Some(loaded.state))
}

/// The window's steps, each with its predicted duration and where the figure comes from.
pub fn plan(
    runbook: &Runbook,
    workspace: &Workspace,
    history: Option<&JournalState>,
    name: &str,
) -> Result<u8, Failure> {
    let Some(w) = runbook.windows.iter().find(|w| w.name == name) else {
        let names: Vec<&str> = runbook.windows.iter().map(|w| w.name.as_str()).collect();
        return Err(Failure::new(
            exit::INVALID,
            if names.is_empty() {
                format!("no window `{name}`: the runbook has no [[window]]")
            } else {
                format!("no window `{name}` (the runbook's: {})", names.join(", "))
            },
        ));
    };
    let loaded = load_journal(workspace)?;
    let prediction = window::predict(runbook, w, &loaded.state, history);
    let view = window::views(runbook, &loaded.state)
        .into_iter()
        .find(|v| v.window.name == w.name);
    let mut out = format!(
        "window `{}`: from the end of `{}` to the end of `{}`{}\n",
        w.name,
        w.from,
        w.to,
        if w.notes.is_empty() {
            String::new()
        } else {
            format!(" — {}", w.notes)
        }
    );
    match view.as_ref().map(|v| &v.state) {
        Some(WindowState::Open { .. }) | Some(WindowState::Closed { .. }) => {
            let elapsed = view
                .as_ref()
                .and_then(|v| v.state.elapsed(SystemTime::now()))
                .unwrap_or_default();
            out.push_str(&format!(
                "{} {}\n",
                if matches!(
                    view.as_ref().map(|v| &v.state),
                    Some(WindowState::Open { .. })
                ) {
                    "open for"
                } else {
                    "was open for"
                },
                cutover::clock::short(elapsed)
            ));
        }
        _ => out.push_str("not open yet\n"),
    }
    if history.is_none() {
        out.push_str(
            "(no --history: figures from this journal, the preflight's sample, or guesses)\n",
        );
    }
    let width = prediction
        .steps
        .iter()
        .map(|p| p.step.len())
        .max()
        .unwrap_or(4);
    out.push('\n');
    for p in &prediction.steps {
        out.push_str(&format!(
            "  {:<width$}  {:>9}  {}{}\n",
            p.step,
            cutover::clock::short(p.duration),
            p.how,
            p.actual
                .map(|a| format!(" — took {}", cutover::clock::short(a)))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "  {:<width$}  {:>9}  {}\n",
        "DNS caches",
        prediction
            .dns_ttl
            .map_or("?".to_string(), cutover::clock::short),
        prediction.dns_how
    ));
    out.push_str(&format!(
        "  {:<width$}  {:>9}  predicted for `{}`\n",
        "total",
        cutover::clock::short(prediction.total),
        w.name
    ));
    print!("{}", Redactor::new().redact(&out));
    Ok(exit::OK)
}

/// The whole migration as Markdown or JSON.
pub fn report(
    runbook: &Runbook,
    workspace: &Workspace,
    history: Option<&JournalState>,
    format: ReportFormat,
) -> Result<u8, Failure> {
    let loaded = load_journal(workspace)?;
    let state = &loaded.state;
    let now = SystemTime::now();
    let steps: Vec<serde_json::Value> = runbook
        .steps
        .iter()
        .map(|step| {
            let record = state.step(&step.id);
            json!({
                "id": step.id,
                "title": step.title,
                "phase": runbook.phases.get(step.phase).map(|p| p.id.clone()),
                "state": record.map_or("pending", |r| match r.status {
                    Recorded::Pending => "pending",
                    Recorded::Started => "interrupted or running",
                    Recorded::Done => "done",
                    Recorded::Failed => "failed",
                    Recorded::Skipped => "skipped",
                    Recorded::RolledBack => "rolled back",
                }),
                "actor": record.map(|r| r.actor.clone()),
                "finished": record.and_then(|r| r.done_at.clone()),
                "took_secs": record.and_then(|r| r.last_duration).map(|d| d.as_secs_f64()),
                "attempts": record.map_or(0, |r| r.attempts),
                "note": record.and_then(|r| r.detail.clone()),
                "confirmed": record.and_then(|r| r.confirmed.clone()).map(|(actor, time)| json!({"by": actor, "at": time})),
            })
        })
        .collect();
    let windows = window::to_json(runbook, state, history, now);
    let doc = json!({
        "runbook": {
            "name": runbook.name,
            "app": runbook.app,
            "path": runbook.source.path,
            "digest": runbook.digest,
        },
        "journal": {
            "path": workspace.journal_path(),
            "lines": state.lines,
            "final_hash": state.last_hash,
            "warning": loaded.warning(),
        },
        "steps": steps,
        "windows": windows,
        "copy_throughput_mib_s": window::copy_throughput(runbook, state),
    });
    let text = match format {
        ReportFormat::Json => serde_json::to_string_pretty(&doc).unwrap_or_default(),
        ReportFormat::Md => markdown(runbook, state, history, &doc),
    };
    println!("{}", Redactor::new().redact(&text));
    Ok(exit::OK)
}

fn markdown(
    runbook: &Runbook,
    state: &JournalState,
    history: Option<&JournalState>,
    doc: &serde_json::Value,
) -> String {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "—".to_string(),
        serde_json::Value::String(s) => s.replace('|', "\\|").replace('\n', " "),
        other => other.to_string(),
    };
    let mut out = format!(
        "# Migration report: {} ({})\n\nRunbook `{}` (digest {}). Journal `{}`: {} lines, final hash `{}` — `cutover audit verify` prints the same.\n",
        runbook.name,
        runbook.app,
        runbook.source.path.display(),
        runbook.digest,
        doc["journal"]["path"].as_str().unwrap_or_default(),
        state.lines,
        state.last_hash
    );
    if let Some(w) = doc["journal"]["warning"].as_str() {
        out.push_str(&format!("\n**Warning:** {w}\n"));
    }
    out.push_str("\n## Steps\n\n| step | state | by | finished | took | attempts | note |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for step in doc["steps"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            text(&step["id"]),
            text(&step["state"]),
            text(&step["actor"]),
            text(&step["finished"]),
            step["took_secs"]
                .as_f64()
                .and_then(window::duration_of)
                .map_or("—".to_string(), cutover::clock::short),
            text(&step["attempts"]),
            text(&step["note"]),
        ));
    }
    out.push_str("\n## Confirmations\n\n");
    let mut any = false;
    for step in doc["steps"].as_array().into_iter().flatten() {
        if let Some(c) = step["confirmed"].as_object() {
            any = true;
            out.push_str(&format!(
                "- `{}`: its phrase typed by {} at {}\n",
                text(&step["id"]),
                c.get("by").map(text).unwrap_or_default(),
                c.get("at").map(text).unwrap_or_default()
            ));
        }
    }
    if !any {
        out.push_str("None yet.\n");
    }
    for view in window::views(runbook, state) {
        let prediction = window::predict(runbook, &view.window, state, history);
        out.push_str(&format!(
            "\n## Window: {}\n\nFrom the end of `{}` to the end of `{}`. ",
            view.window.name, view.window.from, view.window.to
        ));
        match view.state.elapsed(SystemTime::now()) {
            Some(measured) => out.push_str(&format!(
                "{} {}; predicted {} (steps {} + DNS caches {}).\n",
                if matches!(view.state, WindowState::Open { .. }) {
                    "Open for"
                } else {
                    "Measured"
                },
                cutover::clock::short(measured),
                cutover::clock::short(prediction.total),
                cutover::clock::short(prediction.total - prediction.dns_ttl.unwrap_or_default()),
                prediction
                    .dns_ttl
                    .map_or("unknown".into(), cutover::clock::short)
            )),
            None => out.push_str(&format!(
                "Not open yet; predicted {}.\n",
                cutover::clock::short(prediction.total)
            )),
        }
        out.push_str("\n```\n");
        for line in window::timeline(&prediction, 50) {
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("```\n");
    }
    if let Some(samples) = window::copy_throughput(runbook, state) {
        let max = samples.iter().copied().fold(0.0_f64, f64::max);
        out.push_str(&format!(
            "\nCopy throughput, MiB/s per second (peak {max:.1}):\n\n```\n{}\n```\n",
            window::sparkline(&samples)
        ));
    }
    out
}

/// The window report's observer of the engine: journals a window's prediction when it opens.
pub struct PredictionRecorder(pub Option<JournalState>);

impl cutover::engine::Observer for PredictionRecorder {
    fn on_success(
        &mut self,
        runbook: &Runbook,
        step: &cutover::runbook::Step,
        journal: &JournalState,
    ) -> std::collections::BTreeMap<String, String> {
        cutover::window::predictions_on_success(runbook, step, journal, self.0.as_ref())
    }
}
