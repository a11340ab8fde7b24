//! `cutover plan`: what each remaining step would do; with `--window`, a window predicted.

use std::time::SystemTime;

use cutover::actions::Registry;
use cutover::engine::{describe_state, display_scope};
use cutover::journal::JournalState;
use cutover::redact::Redactor;
use cutover::runbook::{self, Runbook, Template};
use cutover::state::s3::Reading;
use cutover::status::{step_states, StepState, StepView};
use cutover::window::{self, WindowState};
use cutover::workspace::Workspace;

use super::context::{driver, load_journal, Context};
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Instead: a window's steps with a predicted duration each and the total (the write
    /// freeze before `maintenance-on`), from the journal and --history.
    #[arg(long, value_name = "NAME")]
    pub window: Option<String>,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let state = ctx.state(Some(Reading::New))?;
    let workspace = &state.workspace;
    match args.window {
        None => {
            let runbook = ctx.load()?;
            steps(&runbook, workspace, &ctx.registry)
        }
        Some(name) => {
            let runbook = ctx.load()?;
            let history = ctx.history()?;
            window_plan(&runbook, workspace, history.as_ref(), &name)
        }
    }
}

/// What each remaining step would do, variables filled and secrets masked.
fn steps(runbook: &Runbook, workspace: &Workspace, registry: &Registry) -> Result<u8, Failure> {
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
        if let Some(condition) = &step.only_if {
            let now = Template::parse(&condition.value)
                .ok()
                .and_then(|t| t.render(&scope).ok())
                .map(|v| match v.value.trim() == condition.equals.trim() {
                    true => format!(" — now {}: it will run", v.value.trim()),
                    false => format!(" — now {}: it will be skipped", v.value.trim()),
                })
                .unwrap_or_else(|| " — not known yet".to_string());
            out.push_str(&format!("    only if: {}{now}\n", condition.describe()));
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

/// The window's steps, each with its predicted duration and where the figure comes from.
fn window_plan(
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
