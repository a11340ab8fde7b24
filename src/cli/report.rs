//! `cutover report`: the whole migration as one document for the change ticket (Markdown or
//! JSON): every step with who, when, how long and how it ended, the windows predicted against
//! actual, the journal's final hash.

use std::time::SystemTime;

use clap::ValueEnum;
use cutover::journal::{JournalState, Recorded};
use cutover::redact::Redactor;
use cutover::runbook::Runbook;
use cutover::state::s3::Reading;
use cutover::window::{self, WindowState};
use cutover::workspace::Workspace;
use serde_json::json;

use super::context::{load_journal, Context};
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_enum, default_value = "md")]
    pub format: ReportFormat,
    /// Also write the soak's charts into DIR, an SVG file per figure (soak-<figure>.svg):
    /// AWS's figure over the soak with its threshold, Heroku's baseline beside it, the
    /// deployments, rollbacks and the cutover marked.
    #[arg(long, value_name = "DIR")]
    pub charts: Option<std::path::PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Md,
    Json,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let state = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    let history = ctx.history()?;
    report(
        &runbook,
        &state.workspace,
        history.as_ref(),
        args.format,
        args.charts.as_deref(),
    )
}

/// The whole migration as Markdown or JSON.
fn report(
    runbook: &Runbook,
    workspace: &Workspace,
    history: Option<&JournalState>,
    format: ReportFormat,
    charts: Option<&std::path::Path>,
) -> Result<u8, Failure> {
    let loaded = load_journal(workspace)?;
    let state = &loaded.state;
    // The soak: the gate's evidence beside Heroku's baseline, and its charts when asked.
    let picture = cutover::status::soak_picture(runbook, state);
    let chart_files = match (&picture, charts) {
        (Ok(p), Some(dir)) => super::soak_charts::write(p, dir)
            .map_err(|e| exit::Failure::new(exit::INVALID, format!("the soak's charts: {e}")))?,
        (Err(why), Some(_)) => {
            return Err(exit::Failure::new(
                exit::INVALID,
                format!("no soak charts to write: {why}"),
            ))
        }
        _ => Vec::new(),
    };
    let soak = match &picture {
        Ok(p) => {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            v["charts"] = json!(chart_files);
            v
        }
        Err(why) => json!({ "missing": why }),
    };
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
                "approval_request": record.and_then(|r| r.approval_request.as_ref()).map(|q| json!({
                    "by": q.by_arn, "user_id": q.by_user_id, "actor": q.actor, "at": q.time,
                    "digest": q.digest, "what": q.what, "required": q.required,
                })),
                "approvals": record.map(|r| r.approvals.iter().map(|a| json!({
                    "verdict": a.verdict, "by": a.by_arn, "user_id": a.by_user_id,
                    "sts_request_id": a.sts_request_id, "sts_endpoint": a.sts_endpoint,
                    "actor": a.by_actor, "digest": a.digest,
                    "note": a.note, "standing": a.standing, "recorded": a.time,
                })).collect::<Vec<_>>()).unwrap_or_default(),
                "break_glass": record.map(|r| r.break_glass.iter().map(|b| json!({
                    "by": b.by_arn, "actor": b.actor, "at": b.time, "note": b.note,
                })).collect::<Vec<_>>()).unwrap_or_default(),
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
        "soak": soak,
    });
    let text = match format {
        ReportFormat::Json => serde_json::to_string_pretty(&doc).unwrap_or_default(),
        ReportFormat::Md => {
            let mut text = markdown(runbook, state, history, &doc);
            match &picture {
                Ok(p) => text.push_str(&soak_markdown(p, &chart_files)),
                Err(why) if runbook.steps.iter().any(|s| s.action.kind == "soak.gate") => {
                    text.push_str(&format!("\n## Soak\n\n{why}\n"));
                }
                Err(_) => {}
            }
            text
        }
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
    out.push_str(&approvals_markdown(doc, &text));
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

/// The soak: the gate's verdict, what did not hold, and each figure against its threshold and
/// Heroku's, with a sparkline (and its chart's file).
fn soak_markdown(p: &cutover::soak::Picture, charts: &[std::path::PathBuf]) -> String {
    use cutover::soak::number_text;
    let minute = |unix: u64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix),
        )
        .to_string()
    };
    let mut out = format!(
        "\n## Soak\n\nAWS from {} to {} ({} minutes), judged: **{}**.",
        minute(p.from),
        minute(p.to + 60),
        p.to.saturating_sub(p.from) / 60 + 1,
        p.verdict.as_deref().unwrap_or("not judged")
    );
    match p.baseline {
        Some((a, b)) => out.push_str(&format!(
            " Heroku's baseline: {} to {}.\n",
            minute(a),
            minute(b + 60)
        )),
        None => out.push_str(" No Heroku baseline was recorded.\n"),
    }
    for b in &p.breaches {
        out.push_str(&format!("\n- no-go: {b}"));
    }
    out.push_str("\n\n| figure | over the soak | last | judged | limit | Heroku | chart |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for f in &p.figures {
        let values: Vec<f64> = f.points.iter().map(|p| p.1).collect();
        let chart = charts
            .iter()
            .find(|c| {
                c.file_name()
                    .is_some_and(|n| n.to_string_lossy() == format!("soak-{}.svg", f.key))
            })
            .map_or("—".to_string(), |c| {
                format!("[{}]({})", f.key, c.display())
            });
        out.push_str(&format!(
            "| {} ({}) | `{}` | {} | {} | {} | {} | {} |\n",
            f.title,
            f.unit,
            if values.is_empty() {
                "no data".to_string()
            } else {
                window::sparkline(&values)
            },
            f.last().map_or("—".to_string(), number_text),
            f.judged.map_or("—".to_string(), |v| if f.broken() {
                format!("**{}** (broken)", number_text(v))
            } else {
                number_text(v)
            }),
            f.limit.map_or("—".to_string(), |l| l.text()),
            f.heroku_level.map_or("—".to_string(), number_text),
            chart
        ));
    }
    if !p.marks.is_empty() {
        out.push_str("\nOn the time axis:\n\n");
        for m in &p.marks {
            out.push_str(&format!(
                "- {} {}: {}\n",
                m.kind.letter(),
                minute(m.at),
                m.label
            ));
        }
    }
    out
}

/// Who asked for each step's approval, each verdict as the driver recorded it (with STS's word
/// on who gave it), and every run without approvals, for review.
fn approvals_markdown(
    doc: &serde_json::Value,
    text: &dyn Fn(&serde_json::Value) -> String,
) -> String {
    let mut out = String::new();
    let mut glass = String::new();
    for step in doc["steps"].as_array().into_iter().flatten() {
        let id = text(&step["id"]);
        if let Some(q) = step["approval_request"].as_object() {
            out.push_str(&format!(
                "- `{id}`: asked by {} ({}) at {} for digest `{}`, {} approval(s) needed; it will: {}\n",
                q.get("by").map(text).unwrap_or_default(),
                q.get("actor").map(text).unwrap_or_default(),
                q.get("at").map(text).unwrap_or_default(),
                q.get("digest").map(text).unwrap_or_default(),
                q.get("required").map(text).unwrap_or_default(),
                q.get("what").map(text).unwrap_or_default(),
            ));
        }
        for a in step["approvals"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  - {} by {} (UserId {}, STS request {}{}; {}) for digest `{}`: {}{}\n",
                text(&a["verdict"]),
                if a["by"].as_str().is_some_and(|b| !b.is_empty()) {
                    text(&a["by"])
                } else {
                    format!("{} (unverified)", text(&a["actor"]))
                },
                text(&a["user_id"]),
                text(&a["sts_request_id"]),
                match a["sts_endpoint"].as_str() {
                    Some(e)
                        if e.starts_with("https://sts.")
                            && e.trim_end_matches('/').ends_with(".amazonaws.com") =>
                        String::new(),
                    Some(e) if !e.is_empty() => format!(" from {e}, not AWS's STS"),
                    _ => String::new(),
                },
                text(&a["recorded"]),
                text(&a["digest"]),
                text(&a["standing"]),
                a["note"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .map_or(String::new(), |n| format!(" — “{n}”")),
            ));
        }
        for b in step["break_glass"].as_array().into_iter().flatten() {
            glass.push_str(&format!(
                "- `{id}`: run without its approvals by {} ({}) at {}: “{}”\n",
                text(&b["by"]),
                text(&b["actor"]),
                text(&b["at"]),
                text(&b["note"]),
            ));
        }
    }
    let mut section = String::from("\n## Approvals\n\n");
    section.push_str(if out.is_empty() {
        "None asked for.\n"
    } else {
        &out
    });
    if !glass.is_empty() {
        section.push_str("\n### Break glass: to review\n\n");
        section.push_str(&glass);
    }
    section
}
