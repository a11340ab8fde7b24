//! Windows: the stretches of a migration its users feel — the write freeze from
//! `maintenance-on` to `dns-cutover`. Measured from the journal (a window opens when its `from`
//! step is done and closes when its `to` step is done after that), and predicted before it opens
//! from the durations the journal — or a rehearsal's journal — recorded for the same steps,
//! scaled where the work grows with the data.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::journal::{parse_time, JournalState, Recorded};
use crate::runbook::{Runbook, Step, Window};

/// Where a window stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    /// `from` is not done.
    Pending,
    /// `from` is done, `to` not (yet) after it.
    Open { since: SystemTime },
    Closed {
        opened: SystemTime,
        closed: SystemTime,
    },
}

impl WindowState {
    /// How long it has been open (until `now`), or was.
    pub fn elapsed(&self, now: SystemTime) -> Option<Duration> {
        match self {
            WindowState::Pending => None,
            WindowState::Open { since } => Some(now.duration_since(*since).unwrap_or_default()),
            WindowState::Closed { opened, closed } => {
                Some(closed.duration_since(*opened).unwrap_or_default())
            }
        }
    }
}

/// A window as the journal has it.
#[derive(Debug, Clone)]
pub struct WindowView {
    pub window: Window,
    pub state: WindowState,
    /// The steps that run inside it, in runbook order (after `from`, up to `to`).
    pub inside: Vec<String>,
}

fn done_at(state: &JournalState, id: &str) -> Option<SystemTime> {
    state
        .step(id)
        .filter(|r| r.status == Recorded::Done)
        .and_then(|r| r.done_at.as_deref())
        .and_then(parse_time)
}

/// The steps a window holds: those that depend on `from` and that `to` depends on, and `to`.
pub fn inside(runbook: &Runbook, window: &Window) -> Vec<String> {
    let before_to = crate::runbook::transitive_needs(&runbook.steps, &window.to);
    runbook
        .steps
        .iter()
        .filter(|s| {
            s.id != window.from
                && (s.id == window.to || before_to.contains(&s.id))
                && crate::runbook::transitive_needs(&runbook.steps, &s.id).contains(&window.from)
        })
        .map(|s| s.id.clone())
        .collect()
}

/// Every window of the runbook, with its state from the journal.
pub fn views(runbook: &Runbook, state: &JournalState) -> Vec<WindowView> {
    runbook
        .windows
        .iter()
        .map(|w| {
            let state = match (done_at(state, &w.from), done_at(state, &w.to)) {
                (None, _) => WindowState::Pending,
                (Some(opened), Some(closed)) if closed >= opened => {
                    WindowState::Closed { opened, closed }
                }
                (Some(since), _) => WindowState::Open { since },
            };
            WindowView {
                window: w.clone(),
                inside: inside(runbook, w),
                state,
            }
        })
        .collect()
}

/// One step's predicted duration, and where the figure comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicted {
    pub step: String,
    pub duration: Duration,
    pub how: String,
    /// Measured, when the step has run inside this window.
    pub actual: Option<Duration>,
}

/// A window's prediction: each step inside it, the DNS caches' share, the total.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub window: String,
    pub steps: Vec<Predicted>,
    /// How long resolvers keep the old answer after the record changed (its TTL then).
    pub dns_ttl: Option<Duration>,
    /// Why the DNS share is what it is (or unknown).
    pub dns_how: String,
    pub total: Duration,
}

/// Seconds read from a journal as a duration: none for NaN, a negative number or one too
/// large for a duration (a history journal can be anything; a prediction never panics on it).
pub fn duration_of(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

/// Seconds as a duration, zero when they are not a duration at all (see [`duration_of`]).
fn seconds(secs: f64) -> Duration {
    duration_of(secs).unwrap_or_default()
}

/// `d` × `factor`, saturating; a factor that is not a finite, non-negative number leaves `d`.
fn scaled(d: Duration, factor: f64) -> Duration {
    if !factor.is_finite() || factor < 0.0 {
        return d;
    }
    duration_of(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// A history journal's figures, checked before they predict anything: every output (or field
/// of a JSON output) named `…_secs` must be a finite, non-negative number of seconds.
pub fn check_history(history: &JournalState) -> Result<(), String> {
    fn bad(value: &serde_json::Value, name: &str) -> Option<String> {
        match value {
            serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
                if k.ends_with("_secs") {
                    let numbers: Vec<&serde_json::Value> = match v {
                        serde_json::Value::Array(items) => items.iter().collect(),
                        other => vec![other],
                    };
                    if let Some(n) = numbers
                        .iter()
                        .find(|n| !n.is_null() && n.as_f64().and_then(duration_of).is_none())
                    {
                        return Some(format!("{name}: `{k}` = {n} is not a number of seconds"));
                    }
                }
                bad(v, name)
            }),
            serde_json::Value::Array(items) => items.iter().find_map(|v| bad(v, name)),
            _ => None,
        }
    }
    let mut steps: Vec<_> = history.steps.iter().collect();
    steps.sort_by(|a, b| a.0.cmp(b.0));
    for (id, record) in steps {
        for (name, value) in &record.outputs {
            let what = format!("step `{id}`, output `{name}`");
            if name.ends_with("_secs")
                && value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(duration_of)
                    .is_none()
            {
                return Err(format!("{what} = {value:?} is not a number of seconds"));
            }
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(value) {
                if let Some(problem) = bad(&json, &what) {
                    return Err(problem);
                }
            }
        }
    }
    Ok(())
}

/// The output of a window's `from` step holding what the window was predicted to last when it
/// opened (JSON: window name → [`prediction_json`]).
pub const RECORDED_PREDICTION: &str = "window_prediction";

/// A prediction as the journal keeps it.
pub fn prediction_json(p: &Prediction) -> serde_json::Value {
    serde_json::json!({
        "total_secs": p.total.as_secs_f64(),
        "dns_ttl_secs": p.dns_ttl.map(|d| d.as_secs_f64()),
        "dns_how": p.dns_how,
        "steps": p.steps.iter().map(|s| serde_json::json!({
            "step": s.step,
            "secs": s.duration.as_secs_f64(),
            "how": s.how,
        })).collect::<Vec<_>>(),
    })
}

/// The prediction recorded when the window opened, if the journal has one.
fn recorded(current: &JournalState, window: &Window) -> Option<Prediction> {
    let text = current
        .step(&window.from)?
        .outputs
        .get(RECORDED_PREDICTION)?
        .clone();
    let all: serde_json::Value = serde_json::from_str(&text).ok()?;
    let p = all.get(&window.name)?;
    let secs = |v: &serde_json::Value| v.as_f64().and_then(duration_of);
    Some(Prediction {
        window: window.name.clone(),
        steps: p["steps"]
            .as_array()?
            .iter()
            .filter_map(|s| {
                Some(Predicted {
                    step: s["step"].as_str()?.to_string(),
                    duration: secs(&s["secs"])?,
                    how: {
                        // A window opened again recorded what it read from its first opening.
                        let how = s["how"].as_str().unwrap_or_default();
                        if how.starts_with(OPENED) {
                            how.to_string()
                        } else {
                            format!("{OPENED}{how}")
                        }
                    },
                    actual: None,
                })
            })
            .collect(),
        dns_ttl: secs(&p["dns_ttl_secs"]),
        dns_how: p["dns_how"].as_str().unwrap_or_default().to_string(),
        total: secs(&p["total_secs"])?,
    })
}

/// Step kinds whose duration grows with the database's size.
const SCALES_WITH_DATA: &[&str] = &["db.copy", "db.verify"];

/// What a step of a kind takes when nothing was ever measured: a guess, said to be one.
fn guess(step: &Step) -> Duration {
    Duration::from_secs(match step.action.kind.as_str() {
        "manual" => 120,
        "http" | "aws.identity" | "ssm.verify" | "network.verify" | "dns.point" => 5,
        "db.copy" => 600,
        "ecs.deploy" | "ecs.run-task" | "elb.health" | "rds.snapshot" => 180,
        _ => 30,
    })
}

/// AWS's own machinery, whose time a rehearsal only emulates: a rolling deployment reaching
/// healthy targets, an RDS snapshot, a one-off task, an instance's wait.
fn machinery(kind: &str) -> Option<&'static str> {
    match kind {
        "ecs.deploy" | "elb.health" => Some("deployment"),
        "rds.snapshot" => Some("snapshot"),
        "ecs.run-task" => Some("one-off task"),
        "rds.wait" => Some("instance wait"),
        _ => None,
    }
}

/// The parameters that name what an AWS step acts on.
const RESOURCE_KEYS: &[&str] = &["cluster", "service", "instance", "target_group"];

/// Values as the journal knows them: the runbook's variables and the recorded outputs (no
/// secret: a prediction reads what it compares and shows, nothing more).
struct Known<'a> {
    runbook: &'a Runbook,
    journal: &'a JournalState,
}

impl crate::runbook::Scope for Known<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.runbook.vars.get(name).cloned()
    }
    fn secret(&self, _: &str) -> Option<String> {
        None
    }
    fn output(&self, step: &str, name: &str) -> Option<String> {
        self.journal.step(step)?.outputs.get(name).cloned()
    }
}

/// A step's parameter as it renders today (`${cluster}` → `gengar`), else as written.
fn param(runbook: &Runbook, current: &JournalState, step: &Step, key: &str) -> Option<String> {
    let raw = step.action.params.get(key)?;
    let Some(text) = raw.as_str() else {
        return Some(raw.to_string());
    };
    let scope = Known {
        runbook,
        journal: current,
    };
    Some(
        crate::runbook::Template::parse(text)
            .ok()
            .and_then(|t| t.render(&scope).ok())
            .map_or_else(|| text.to_string(), |r| r.value),
    )
}

/// What a step's `only_if` reads now, if the journal already knows it.
fn condition_value(runbook: &Runbook, current: &JournalState, step: &Step) -> Option<String> {
    let condition = step.only_if.as_ref()?;
    let scope = Known {
        runbook,
        journal: current,
    };
    crate::runbook::Template::parse(&condition.value)
        .ok()?
        .render(&scope)
        .ok()
        .map(|r| r.value.trim().to_string())
}

/// An AWS step's time from this migration's own measurements on AWS, in this order: the
/// step's earlier run; a health wait after a rollout that completed before the window (one
/// look); the latest step of the same kind, else of the same machinery, on the same resources
/// (`first-deploy` for a deployment, `snapshot-before` for a snapshot; for a one-off task the
/// quickest one on the same cluster, its command's own work being on top). Only when this
/// migration has measured nothing of the kind: the history's figure, labelled as a rehearsal's
/// AWS is — emulated, not evidence; else a guess.
fn on_aws(
    runbook: &Runbook,
    window: &Window,
    step: &Step,
    class: &str,
    current: &JournalState,
    actual: Option<Duration>,
    from_history: Option<Duration>,
) -> (Duration, String) {
    let emulated = from_history
        .map(|d| format!(" (the rehearsal's {}: emulated, not evidence)", short(d)))
        .unwrap_or_default();
    if let Some(d) = current
        .step(&step.id)
        .and_then(|r| r.last_duration)
        .filter(|_| actual.is_none())
    {
        return (d, format!("an earlier run of this step on AWS{emulated}"));
    }
    let in_window = inside(runbook, window);
    if step.action.kind == "elb.health" {
        // The rollout waited for these targets to be healthy before the window opened: when
        // nothing rolls out in between, the wait is one look.
        let needs = crate::runbook::transitive_needs(&runbook.steps, &step.id);
        let rollout_inside = runbook.steps.iter().any(|s| {
            s.action.kind == "ecs.deploy" && in_window.contains(&s.id) && needs.contains(&s.id)
        });
        let before = runbook.steps.iter().rev().find(|s| {
            s.action.kind == "ecs.deploy" && needs.contains(&s.id) && !in_window.contains(&s.id)
        });
        if let (Some(deploy), false) = (before, rollout_inside) {
            return (
                LOOK,
                format!(
                    "one look: `{}` completed its rollout before the window opened (the targets were healthy then) and nothing rolls out in between{emulated}",
                    deploy.id
                ),
            );
        }
    }
    let same_resources = |other: &Step| {
        RESOURCE_KEYS.iter().all(|k| {
            match (
                param(runbook, current, step, k),
                param(runbook, current, other, k),
            ) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
        })
    };
    let measured: Vec<(String, Duration, &Step)> = runbook
        .steps
        .iter()
        .filter(|o| o.id != step.id && machinery(&o.action.kind) == Some(class))
        .filter(|o| same_resources(o))
        .filter_map(|o| {
            let r = current.step(&o.id).filter(|r| r.status == Recorded::Done)?;
            Some((r.done_at.clone()?, r.last_duration?, o))
        })
        .collect();
    let same_kind = |o: &Step| o.action.kind == step.action.kind;
    let chosen = if step.action.kind == "ecs.run-task" {
        measured
            .iter()
            .min_by(|a, b| same_kind(b.2).cmp(&same_kind(a.2)).then(a.1.cmp(&b.1)))
    } else {
        measured
            .iter()
            .max_by(|a, b| same_kind(a.2).cmp(&same_kind(b.2)).then(a.0.cmp(&b.0)))
    };
    match (chosen, from_history) {
        (Some((_, d, other)), _) => {
            let which = if step.action.kind == "ecs.run-task" {
                "the quickest one-off task on the same cluster, measured on AWS; the command's own work comes on top"
            } else if same_kind(other) {
                "the same kind on the same resources, measured on AWS"
            } else {
                "the same machinery on the same resources, measured on AWS"
            };
            (
                *d,
                format!(
                    "this migration's own `{}` ({class}: {which}){emulated}",
                    other.id
                ),
            )
        }
        (None, Some(d)) => (
            d,
            format!(
                "the rehearsal's {}: emulated, not evidence — no {class} measured on AWS yet",
                short(d)
            ),
        ),
        (None, None) => (
            guess(step),
            format!("no {class} measured on AWS yet: a guess"),
        ),
    }
}

/// How a prediction recorded when its window opened is introduced.
const OPENED: &str = "predicted when the window opened: ";

/// The latest other step of the same action kind this journal has done, and how long it took
/// (RDS's capture predicted from Heroku's, say).
fn same_kind_here(
    runbook: &Runbook,
    current: &JournalState,
    step: &Step,
) -> Option<(Duration, String)> {
    // Only where the kind says what the work is (a capture installed, counters read): a shell
    // script or a manual step of another id is other work.
    const LIKE_FOR_LIKE: &[&str] = &["db.capture", "db.writes", "elb.maintenance", "db.idle"];
    if !LIKE_FOR_LIKE.contains(&step.action.kind.as_str()) {
        return None;
    }
    let mode = |s: &Step| s.action.params.get("mode").cloned();
    runbook
        .steps
        .iter()
        .filter(|o| o.id != step.id && o.action.kind == step.action.kind && mode(o) == mode(step))
        .filter_map(|o| {
            let r = current.step(&o.id).filter(|r| r.status == Recorded::Done)?;
            Some((
                r.done_at.as_deref().and_then(parse_time)?,
                r.last_duration?,
                o,
            ))
        })
        .max_by_key(|(at, _, _)| *at)
        .map(|(_, d, o)| (d, o.id.clone()))
}

/// One look of a wait whose condition already holds.
const LOOK: Duration = Duration::from_secs(5);

/// One `db.catchup` run as the journal recorded it.
struct CatchupRun<'a> {
    id: &'a str,
    done_at: SystemTime,
    took: Duration,
    applied: u64,
    backlog: u64,
    /// The log's last change when it ended: its position plus the backlog.
    logged: u64,
}

/// The catch-up inside the window (the drain): its backlog when the window opens ÷ the apply
/// rate, both from this migration's latest catch-up; the backlog grown by the changes written
/// between that catch-up's end and the window's opening, at the rate the log grew between the
/// two latest catch-ups.
fn drain(
    runbook: &Runbook,
    window: &Window,
    step: &Step,
    current: &JournalState,
) -> Option<(Duration, String)> {
    let number = |r: &crate::journal::StepRecord, name: &str| -> Option<u64> {
        r.outputs.get(name)?.trim().parse().ok()
    };
    let mut runs: Vec<CatchupRun<'_>> = runbook
        .steps
        .iter()
        .filter(|s| s.action.kind == "db.catchup" && s.id != step.id)
        .filter_map(|s| {
            let r = current.step(&s.id).filter(|r| r.status == Recorded::Done)?;
            let position = number(r, "position").unwrap_or(0);
            let backlog = number(r, "backlog")?;
            Some(CatchupRun {
                id: &s.id,
                done_at: parse_time(r.done_at.as_deref()?)?,
                took: r.last_duration?,
                applied: number(r, "applied")?,
                backlog,
                logged: position + backlog,
            })
        })
        .collect();
    runs.sort_by_key(|r| r.done_at);
    let latest = runs.last()?;
    let rated = runs
        .iter()
        .rev()
        .find(|r| r.applied > 0 && !r.took.is_zero())?;
    let rate = rated.applied as f64 / rated.took.as_secs_f64();
    let rate_how = format!(
        "{rate:.0} changes/s (`{}` applied {} in {})",
        rated.id,
        rated.applied,
        short(rated.took)
    );
    let mut backlog = latest.backlog as f64;
    let mut how = format!(
        "the drain: a backlog of {} change(s) (`{}`'s when it ended)",
        latest.backlog, latest.id
    );
    let opened = done_at(current, &window.from);
    let earlier = runs.iter().rev().nth(1);
    match (opened, earlier) {
        (Some(opened), Some(earlier)) if latest.logged >= earlier.logged => {
            let between = latest
                .done_at
                .duration_since(earlier.done_at)
                .unwrap_or_default()
                .as_secs_f64();
            let since = opened
                .duration_since(latest.done_at)
                .unwrap_or_default()
                .as_secs_f64();
            if between > 0.0 {
                let writes = (latest.logged - earlier.logged) as f64 / between;
                backlog += writes * since;
                how.push_str(&format!(
                    " + {:.0} written before the window opened ({writes:.1} changes/s, the log's growth between `{}` and `{}`, for {})",
                    writes * since,
                    earlier.id,
                    latest.id,
                    short(seconds(since))
                ));
            }
        }
        (None, _) => how.push_str(" (plus what is written between it and the window's opening)"),
        _ => {}
    }
    how.push_str(&format!(" ÷ {rate_how}"));
    Some((seconds(backlog / rate), how))
}

/// The part of a final catch-up that is not the drain (the tables without a key and the large
/// objects copied whole, sequences, views, the check by key), from the same step in the
/// history: its duration less its drain (`drain_secs`), grown with the source's bytes as the
/// whole tables grow with the data.
fn final_rest(
    id: &str,
    history: Option<&JournalState>,
    now_bytes: Option<u64>,
    then_bytes: Option<u64>,
) -> Option<(Duration, String)> {
    let record = history?.step(id)?;
    let took = record.last_duration?.as_secs_f64();
    let drain: f64 = record.outputs.get("drain_secs")?.trim().parse().ok()?;
    let rest = (took - drain).max(0.0);
    let (ratio, scaled) = match (now_bytes, then_bytes) {
        (Some(now), Some(then)) if then > 0 => (
            now as f64 / then as f64,
            format!(", ×{:.2} the source's bytes", now as f64 / then as f64),
        ),
        _ => (1.0, String::new()),
    };
    Some((
        seconds(rest * ratio),
        format!(
            "the rest of the final catch-up (whole tables, large objects, sequences, the check by key): {} in the history less its drain{scaled}",
            short(seconds(rest))
        ),
    ))
}

/// Whether a step reads every row: `db.verify` given both of the copy's checksum sets reads
/// none (it compares what the copy recorded), so its time does not grow with the data.
fn reads_rows(step: &Step) -> bool {
    step.action.kind != "db.verify"
        || !(step.action.params.contains_key("source_checksums")
            && step.action.params.contains_key("target_checksums"))
}

/// The slower of the preflight's read and write samples (MiB/s), if it took them.
fn sampled_rate(runbook: &Runbook, state: &JournalState) -> Option<f64> {
    let read: f64 = preflight_output(runbook, state, "read_mib_s")?;
    let write: f64 = preflight_output(runbook, state, "write_mib_s")?;
    Some(read.min(write)).filter(|r| *r > 0.0)
}

/// An output of the runbook's `db.preflight` step, as the journal recorded it.
fn preflight_output<T: std::str::FromStr>(
    runbook: &Runbook,
    state: &JournalState,
    name: &str,
) -> Option<T> {
    runbook
        .steps
        .iter()
        .filter(|s| s.action.kind == "db.preflight")
        .find_map(|s| state.step(&s.id)?.outputs.get(name)?.parse().ok())
}

/// A data-bound step's history grown to today's source. The copy in two parts, as its history
/// recorded them: until the last row was in (`data_secs`), which grows with the bytes and
/// with how much slower today's preflight sample is than the history's; and the rest (index
/// builds, constraints), which are sorts and graph builds — they grow as n·log n in the rows.
/// Anything else, or a copy without that record: in proportion to the bytes.
fn grown(
    runbook: &Runbook,
    step: &Step,
    took: Duration,
    history: &JournalState,
    current: &JournalState,
    then: u64,
    now: u64,
) -> (Duration, String) {
    let ratio = now as f64 / then as f64;
    let size = format!("{} then, {} now", bytes(then), bytes(now));
    let record = history.step(&step.id);
    let data_secs = record
        .and_then(|r| r.outputs.get("data_secs"))
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|_| step.action.kind == "db.copy");
    let Some(data_secs) = data_secs else {
        return (
            scaled(took, ratio),
            format!(
                "history {}, ×{ratio:.2} for the source's size ({size})",
                short(took)
            ),
        );
    };
    let data = seconds(data_secs.clamp(0.0, took.as_secs_f64()));
    let rest = took.saturating_sub(data);
    let rows: u64 = record
        .and_then(|r| r.outputs.get("checksums"))
        .and_then(|c| serde_json::from_str::<BTreeMap<String, serde_json::Value>>(c).ok())
        .map(|tables| tables.values().filter_map(|t| t["rows"].as_u64()).sum())
        .unwrap_or(0);
    let n = rows.max(2) as f64;
    let nlogn = ratio * ((ratio * n).ln() / n.ln()).max(1.0);
    let (speed, speed_how) = match (
        sampled_rate(runbook, history),
        sampled_rate(runbook, current),
    ) {
        (Some(a), Some(b)) => (
            a / b,
            format!(
                ", ×{:.2} for the preflight's throughput ({a:.0} MiB/s then, {b:.0} now)",
                a / b
            ),
        ),
        _ => (1.0, String::new()),
    };
    let (rest_now, rest_how) = match (
        sampled_builds(runbook, history),
        sampled_builds(runbook, current),
    ) {
        // The expensive builds (vector graphs…) as the preflights measured them then and
        // now; the rest of the tail (sorts, constraints) as n·log n.
        (Some((then_secs, _)), Some((now_secs, names))) => {
            let other = rest.saturating_sub(seconds(then_secs));
            (
                seconds(now_secs) + scaled(other, nlogn),
                format!(
                    "the indexes and the rest {}: the sampled builds {} then, {} now ({names}: \
                     the preflight's sample), the other {} ×{nlogn:.2} (n·log n from {rows} rows)",
                    short(rest),
                    short(seconds(then_secs)),
                    short(seconds(now_secs)),
                    short(other)
                ),
            )
        }
        // No sample in the history: its builds cannot be told apart from the rest; today's
        // sampled builds are at least how long the tail takes.
        (None, Some((now_secs, names))) if seconds(now_secs) > scaled(rest, nlogn) => {
            let sampled = seconds(now_secs);
            let how = format!(
                "the indexes and the rest {} ×{nlogn:.2} (n·log n from {rows} rows), but at \
                 least the sampled builds' {} ({names}: the preflight's sample)",
                short(rest),
                short(sampled)
            );
            (sampled, how)
        }
        _ => (
            scaled(rest, nlogn),
            format!(
                "the indexes and the rest {} ×{nlogn:.2} (n·log n from {rows} rows)",
                short(rest)
            ),
        ),
    };
    let duration = scaled(data, ratio * speed) + rest_now;
    (
        duration,
        format!(
            "history {}: the data {} ×{ratio:.2} for the source's size ({size}){speed_how}; {rest_how}",
            short(took),
            short(data),
        ),
    )
}

/// The preflight's sampled index builds (`index_builds`): their predicted seconds in all, and
/// their names with kind and growth, e.g. `public.docs_idx hnsw ×n^1.52`.
fn sampled_builds(runbook: &Runbook, state: &JournalState) -> Option<(f64, String)> {
    let text: String = preflight_output(runbook, state, "index_builds")?;
    let builds: Vec<serde_json::Value> = serde_json::from_str(&text).ok()?;
    let secs = builds
        .iter()
        .filter_map(|b| b["predicted_secs"].as_f64())
        .sum();
    let names: Vec<String> = builds
        .iter()
        .map(|b| {
            format!(
                "{} {} ×n^{:.2}",
                b["index"].as_str().unwrap_or("?"),
                b["kind"].as_str().unwrap_or("?"),
                b["exponent"].as_f64().unwrap_or(1.0)
            )
        })
        .collect();
    Some((secs, names.join(", "))).filter(|_| !builds.is_empty())
}

/// The source database's size as the journal's preflight measured it.
fn source_bytes(runbook: &Runbook, state: &JournalState) -> Option<u64> {
    preflight_output(runbook, state, "source_bytes")
}

/// The TTL resolvers hold when the record changes: what a `dns.ttl` step set it to, else the
/// TTL it found (the journal of this migration first, then the history).
fn dns_ttl(runbook: &Runbook, journals: &[&JournalState]) -> Option<(Duration, String)> {
    for state in journals {
        for step in runbook.steps.iter().filter(|s| s.action.kind == "dns.ttl") {
            let Some(record) = state.step(&step.id) else {
                continue;
            };
            if record.status == Recorded::Done {
                if let Some(ttl) = record.outputs.get("ttl").and_then(|t| t.parse().ok()) {
                    return Some((
                        Duration::from_secs(ttl),
                        format!(
                            "the record's TTL after `{}` (resolvers keep the old answer that long)",
                            step.id
                        ),
                    ));
                }
            }
            if let Some(ttl) = record
                .outputs
                .get("previous_ttl")
                .and_then(|t| t.parse().ok())
            {
                return Some((
                    Duration::from_secs(ttl),
                    format!(
                        "the record's TTL today, not lowered yet (`{}` has not run)",
                        step.id
                    ),
                ));
            }
        }
    }
    None
}

/// Predicts a window: each step inside it from this migration's journal, else the history's
/// (a rehearsal), scaled by the source's size for the kinds whose work grows with the data; the
/// copy from the preflight's throughput sample when there is no history; a guess otherwise.
pub fn predict(
    runbook: &Runbook,
    window: &Window,
    current: &JournalState,
    history: Option<&JournalState>,
) -> Prediction {
    let mut prediction = predict_now(runbook, window, current, history);
    // Once the window is open, the prediction is the one made when it opened (journaled), so
    // what a step takes never becomes its own prediction.
    if done_at(current, &window.from).is_some() {
        if let Some(then) = recorded(current, window) {
            for step in &mut prediction.steps {
                if let Some(made) = then.steps.iter().find(|p| p.step == step.step) {
                    step.duration = made.duration;
                    step.how = made.how.clone();
                }
            }
            prediction.total = then.total;
            prediction.dns_ttl = then.dns_ttl;
            prediction.dns_how = then.dns_how;
        }
    }
    prediction
}

fn predict_now(
    runbook: &Runbook,
    window: &Window,
    current: &JournalState,
    history: Option<&JournalState>,
) -> Prediction {
    let now_bytes = source_bytes(runbook, current);
    let then_bytes = history.and_then(|h| source_bytes(runbook, h));
    let opened = done_at(current, &window.from);
    let mut steps = Vec::new();
    for id in inside(runbook, window) {
        let Some(step) = runbook.step(&id) else {
            continue;
        };
        let here = current.step(&id);
        // Measured inside this window: the actual figure.
        let actual = here
            .filter(|r| r.status == Recorded::Done)
            .filter(|r| {
                opened.is_some_and(|o| r.done_at.as_deref().and_then(parse_time) >= Some(o))
            })
            .and_then(|r| r.last_duration);
        let scales = SCALES_WITH_DATA.contains(&step.action.kind.as_str());
        let from_history = history
            .and_then(|h| h.step(&id))
            .and_then(|r| r.last_duration);
        let condition = step
            .only_if
            .as_ref()
            .map(|c| (c, condition_value(runbook, current, step)));
        let drained = (step.action.kind == "db.catchup")
            .then(|| drain(runbook, window, step, current))
            .flatten()
            .map(
                |(d, how)| match final_rest(&id, history, now_bytes, then_bytes) {
                    Some((rest, rest_how)) => (d + rest, format!("{how} + {rest_how}")),
                    None => (d, how),
                },
            );
        let (duration, how) = if let Some((c, Some(value))) = condition
            .clone()
            .filter(|(c, v)| v.as_deref().is_some_and(|v| v != c.equals.trim()))
        {
            (
                Duration::ZERO,
                format!("skipped: {}", c.skip_reason(&value)),
            )
        } else if let Some(drained) = drained {
            drained
        } else if let Some(class) = machinery(&step.action.kind) {
            on_aws(runbook, window, step, class, current, actual, from_history)
        } else if let Some(d) = from_history {
            match (scales && reads_rows(step), now_bytes, then_bytes, history) {
                (true, Some(now), Some(then), Some(h)) if then > 0 => {
                    grown(runbook, step, d, h, current, then, now)
                }
                _ => (d, format!("history {}", short(d))),
            }
        } else if let Some(d) = here
            .and_then(|r| r.last_duration)
            .filter(|_| actual.is_none())
        {
            (d, "an earlier run in this journal".to_string())
        } else if let Some(secs) = (step.action.kind == "db.copy")
            .then(|| measured_copy(runbook, current))
            .flatten()
        {
            (
                seconds(secs),
                "the preflight's throughput sample (source size ÷ the slower of read and write)"
                    .to_string(),
            )
        } else if let Some((d, other)) = same_kind_here(runbook, current, step) {
            (
                d,
                format!("this migration's own `{other}` (the same kind of step, measured here)"),
            )
        } else {
            (guess(step), "no history: a guess".to_string())
        };
        let how = match condition {
            Some((c, None)) if !duration.is_zero() => {
                format!("{how}; if it runs: it {} (not known yet)", c.describe())
            }
            _ => how,
        };
        steps.push(Predicted {
            step: id,
            duration,
            how,
            actual,
        });
    }
    // The time between the steps (a command started, a phrase typed, a check read) is part of
    // the window too: the history's window less its steps.
    if let Some(gap) = history.and_then(|h| between_steps(runbook, window, h)) {
        steps.push(Predicted {
            step: BETWEEN_STEPS.to_string(),
            duration: gap,
            how: format!(
                "history {}: its window less its steps (the time between them)",
                short(gap)
            ),
            actual: between_steps(runbook, window, current),
        });
    }
    let journals: Vec<&JournalState> = std::iter::once(current).chain(history).collect();
    let has_dns = steps.iter().any(|p| {
        runbook
            .step(&p.step)
            .is_some_and(|s| s.action.kind == "dns.point")
    });
    let (dns_ttl, dns_how) = match (has_dns, dns_ttl(runbook, &journals)) {
        (false, _) => (None, "no DNS change in this window".to_string()),
        (true, Some((ttl, how))) => (Some(ttl), how),
        (true, None) => (
            None,
            "the record's TTL is not known: lower it first with a `dns.ttl` step".to_string(),
        ),
    };
    let total = steps.iter().map(|p| p.duration).sum::<Duration>() + dns_ttl.unwrap_or_default();
    Prediction {
        window: window.name.clone(),
        steps,
        dns_ttl,
        dns_how,
        total,
    }
}

/// The line of a prediction for the time between the window's steps.
pub const BETWEEN_STEPS: &str = "between steps";

/// A closed window's measured time less the time its steps took inside it.
fn between_steps(runbook: &Runbook, window: &Window, state: &JournalState) -> Option<Duration> {
    let opened = done_at(state, &window.from)?;
    let closed = done_at(state, &window.to).filter(|c| *c >= opened)?;
    let measured = closed.duration_since(opened).ok()?;
    let steps: Duration = inside(runbook, window)
        .iter()
        .filter_map(|id| state.step(id))
        .filter(|r| {
            r.done_at
                .as_deref()
                .and_then(parse_time)
                .is_some_and(|d| d >= opened && d <= closed)
        })
        .filter_map(|r| r.last_duration)
        .sum();
    Some(measured.saturating_sub(steps))
}

/// The copy's duration from the preflight's measurements, if it took them.
fn measured_copy(runbook: &Runbook, state: &JournalState) -> Option<f64> {
    preflight_output(runbook, state, "predicted_copy_secs")
}

use crate::clock::short;

/// "06:12" (minutes:seconds, hours when needed), for the header.
pub fn clock(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
    } else {
        format!("{:02}:{:02}", secs / 60, secs % 60)
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The windows and their predictions as `status --json` and `report --format json` show them.
pub fn to_json(
    runbook: &Runbook,
    current: &JournalState,
    history: Option<&JournalState>,
    now: SystemTime,
) -> serde_json::Value {
    let views = views(runbook, current);
    serde_json::Value::Array(
        views
            .iter()
            .map(|v| {
                let prediction = predict(runbook, &v.window, current, history);
                let time = |t: &SystemTime| humantime::format_rfc3339_millis(*t).to_string();
                let (state, opened, closed) = match &v.state {
                    WindowState::Pending => ("pending", None, None),
                    WindowState::Open { since } => ("open", Some(time(since)), None),
                    WindowState::Closed { opened, closed } => {
                        ("closed", Some(time(opened)), Some(time(closed)))
                    }
                };
                let steps: BTreeMap<&str, serde_json::Value> = prediction
                    .steps
                    .iter()
                    .map(|p| {
                        (
                            p.step.as_str(),
                            serde_json::json!({
                                "predicted_secs": p.duration.as_secs_f64(),
                                "actual_secs": p.actual.map(|a| a.as_secs_f64()),
                                "how": p.how,
                            }),
                        )
                    })
                    .collect();
                serde_json::json!({
                    "name": v.window.name,
                    "from": v.window.from,
                    "to": v.window.to,
                    "state": state,
                    "opened": opened,
                    "closed": closed,
                    "measured_secs": v.state.elapsed(now).map(|d| d.as_secs_f64()),
                    "predicted_secs": prediction.total.as_secs_f64(),
                    "dns_ttl_secs": prediction.dns_ttl.map(|d| d.as_secs_f64()),
                    "steps": steps,
                })
            })
            .collect(),
    )
}

/// A Gantt-like strip of a window, one line per step: the steps run one after another, so
/// each bar starts where the previous ended. `█` is what the step took (or, not run yet, `░`
/// what it is predicted to take); `│` marks where the prediction ended it.
pub fn timeline(prediction: &Prediction, width: usize) -> Vec<String> {
    let label = prediction
        .steps
        .iter()
        .map(|p| p.step.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let spans: Vec<(f64, f64)> = prediction
        .steps
        .iter()
        .map(|p| {
            (
                p.actual.unwrap_or(p.duration).as_secs_f64(),
                p.duration.as_secs_f64(),
            )
        })
        .collect();
    let mut start = 0.0;
    let mut ends = Vec::new();
    for (taken, predicted) in &spans {
        ends.push((start, start + taken, start + predicted));
        start += taken;
    }
    let span = ends
        .iter()
        .map(|(_, end, predicted)| end.max(*predicted))
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let scale = |t: f64| ((t / span) * width as f64).round() as usize;
    prediction
        .steps
        .iter()
        .zip(ends)
        .map(|(p, (from, to, predicted_end))| {
            let mut bar: Vec<char> = vec![' '; width + 1];
            let fill = if p.actual.is_some() { '█' } else { '░' };
            let (a, b) = (scale(from), scale(to).max(scale(from) + 1).min(width));
            for cell in bar.iter_mut().take(b).skip(a) {
                *cell = fill;
            }
            if p.actual.is_some() {
                let mark = scale(predicted_end).min(width);
                bar[mark] = if bar[mark] == '█' { '┃' } else { '│' };
            }
            let bar: String = bar.into_iter().collect();
            let figures = match p.actual {
                Some(actual) => format!("{} (predicted {})", short(actual), short(p.duration)),
                None => format!("predicted {}", short(p.duration)),
            };
            format!("{:<label$} {bar} {figures}", p.step)
        })
        .collect()
}

/// Samples as a one-line sparkline (▁ lowest to █ highest).
pub fn sparkline(samples: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = samples.iter().copied().fold(0.0_f64, f64::max);
    samples
        .iter()
        .map(|v| {
            if max <= 0.0 {
                BARS[0]
            } else {
                BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

/// The copy's throughput samples (MiB/s per second) from the journal, when a copy recorded them.
pub fn copy_throughput(runbook: &Runbook, state: &JournalState) -> Option<Vec<f64>> {
    runbook
        .steps
        .iter()
        .filter(|s| s.action.kind == "db.copy")
        .find_map(|s| {
            let text = state.step(&s.id)?.outputs.get("throughput_mib_s")?.clone();
            let samples: Vec<f64> = text.split(',').filter_map(|v| v.parse().ok()).collect();
            (!samples.is_empty()).then_some(samples)
        })
}

/// What to journal when `step` succeeds: if it opens a window (the write freeze), what the
/// window is predicted to last (from this journal and an earlier run's, `--history`), so the
/// report can show it against what it took. The front ends give it to the engine as an
/// observer of successes.
pub fn predictions_on_success(
    runbook: &Runbook,
    step: &Step,
    journal: &JournalState,
    history: Option<&JournalState>,
) -> BTreeMap<String, String> {
    let mut recorded = serde_json::Map::new();
    for window in runbook.windows.iter().filter(|w| w.from == step.id) {
        let prediction = predict(runbook, window, journal, history);
        recorded.insert(window.name.clone(), prediction_json(&prediction));
    }
    if recorded.is_empty() {
        return BTreeMap::new();
    }
    [(
        RECORDED_PREDICTION.to_string(),
        serde_json::Value::Object(recorded).to_string(),
    )]
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Registry;
    use crate::journal::{Event, LineMeta};
    use crate::runbook::SourceFile;

    const RUNBOOK: &str = r#"
[runbook]
name = "freeze"
app = "a"

[[window]]
name = "write freeze"
from = "maintenance-on"
to = "dns-cutover"

[[phase]]
id = "p"

[[phase.step]]
id = "preflight"
do = "db.preflight"
source = "postgres://u:p@h/d"
target = "postgres://u:p@h2/d"

[[phase.step]]
id = "dns-ttl"
do = "dns.ttl"
zone = "example.com"
name = "api.example.com"

[[phase.step]]
id = "maintenance-on"
do = "shell"
run = "true"
needs = ["preflight"]

[[phase.step]]
id = "copy"
do = "db.copy"
source = "postgres://u:p@h/d"
target = "postgres://u:p@h2/d"
needs = ["maintenance-on"]

[[phase.step]]
id = "verify"
do = "db.verify"
source = "postgres://u:p@h/d"
target = "postgres://u:p@h2/d"
source_checksums = "${steps.copy.outputs.checksums}"
target_checksums = "${steps.copy.outputs.target_checksums}"
needs = ["copy"]

[[phase.step]]
id = "deploy"
do = "manual"
needs = ["verify"]

[[phase.step]]
id = "dns-cutover"
do = "dns.point"
zone = "example.com"
name = "api.example.com"
target = "alb"
needs = ["deploy", "dns-ttl"]

[[phase.step]]
id = "after"
do = "shell"
run = "true"
needs = ["dns-cutover"]
"#;

    fn runbook() -> Runbook {
        Runbook::from_source(
            SourceFile::new("runbook.toml", RUNBOOK.to_string()),
            &[],
            &Registry::builtin(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn journal(runs: &[crate::journal::testing::Run<'_>]) -> JournalState {
        crate::journal::testing::timed(runs, |_| "d".to_string())
    }

    /// The freeze's deployment on the real day is predicted from this migration's own
    /// deployment on AWS, never from the rehearsal's emulated seconds.
    #[test]
    fn aws_machinery_is_predicted_from_this_migrations_own_measurement() {
        let text = RUNBOOK.replace(
            "id = \"deploy\"\ndo = \"manual\"",
            "id = \"deploy\"\ndo = \"ecs.deploy\"\ncluster = \"c\"\nservice = \"s\"",
        ) + "\n[[phase.step]]\nid = \"first-deploy\"\ndo = \"elb.health\"\ntarget_group = \"tg\"\n";
        let rb = Runbook::from_source(
            SourceFile::new("runbook.toml", text),
            &[],
            &Registry::builtin(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let history = journal(&[(
            "deploy",
            "2026-11-01T10:00:00.000Z",
            "2026-11-01T10:00:02.000Z",
            &[],
        )]);
        let deploy = |current: &JournalState| {
            predict(&rb, &rb.windows[0], current, Some(&history))
                .steps
                .into_iter()
                .find(|s| s.step == "deploy")
                .unwrap()
        };
        // Nothing measured on AWS yet: the rehearsal's 2 s, named as no evidence.
        let none = deploy(&journal(&[]));
        assert_eq!(none.duration, Duration::from_secs(2));
        assert_eq!(
            none.how,
            "the rehearsal's 2.0s: emulated, not evidence — no deployment measured on AWS yet"
        );
        // The first deployment took 150 s on AWS: that is the figure.
        let real = journal(&[(
            "first-deploy",
            "2026-11-20T09:00:00.000Z",
            "2026-11-20T09:02:30.000Z",
            &[],
        )]);
        let measured = deploy(&real);
        assert_eq!(measured.duration, Duration::from_secs(150));
        assert_eq!(
            measured.how,
            "this migration's own `first-deploy` (deployment: the same machinery on the same \
             resources, measured on AWS) (the rehearsal's 2.0s: emulated, not evidence)"
        );
    }

    /// A step inside the window that no measurement of its machinery or history covers is
    /// predicted from this journal's own step of the same kind (RDS's capture from Heroku's),
    /// and a window opened twice says once that its prediction was recorded when it opened.
    #[test]
    fn a_step_is_predicted_from_this_migrations_step_of_the_same_kind() {
        let text = "[runbook]\nname = \"w\"\napp = \"a\"\n\n\
            [[window]]\nname = \"freeze\"\nfrom = \"a\"\nto = \"c\"\n\n\
            [[phase]]\nid = \"p\"\n\n\
            [[phase.step]]\nid = \"heroku-capture\"\ndo = \"db.capture\"\nurl = \"postgres://h/db\"\nmode = \"install\"\n\n\
            [[phase.step]]\nid = \"a\"\ndo = \"manual\"\nneeds = [\"heroku-capture\"]\n\n\
            [[phase.step]]\nid = \"rds-capture\"\ndo = \"db.capture\"\nurl = \"postgres://r/db\"\nmode = \"install\"\nneeds = [\"a\"]\n\n\
            [[phase.step]]\nid = \"c\"\ndo = \"manual\"\nneeds = [\"rds-capture\"]\n";
        let rb = Runbook::from_source(
            SourceFile::new("runbook.toml", text.to_string()),
            &[],
            &Registry::builtin(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let current = journal(&[(
            "heroku-capture",
            "2026-11-20T09:00:00.000Z",
            "2026-11-20T09:00:03.000Z",
            &[],
        )]);
        let p = predict(&rb, &rb.windows[0], &current, None);
        let capture = step_of(&p, "rds-capture");
        assert_eq!(capture.duration, Duration::from_secs(3));
        assert_eq!(
            capture.how,
            "this migration's own `heroku-capture` (the same kind of step, measured here)"
        );
    }

    /// The freeze of the bundled runbook's shape: the snapshot, the drain, the pending
    /// migrations and the health wait, with what ran before it.
    const FREEZE: &str = r#"
[runbook]
name = "freeze"
app = "a"

[vars]
rds = "gengar-db"
cluster = "gengar"

[[window]]
name = "write freeze"
from = "maintenance-on"
to = "dns-cutover"

[[phase]]
id = "p"

[[phase.step]]
id = "snapshot-before"
do = "rds.snapshot"
instance = "${rds}"

[[phase.step]]
id = "snapshot-other"
do = "rds.snapshot"
instance = "another-db"

[[phase.step]]
id = "db-catchup"
do = "db.catchup"
source = "postgres://u:p@h/d"
target = "postgres://u:p@h2/d"
until = 1000

[[phase.step]]
id = "db-catchup-2"
do = "db.catchup"
source = "postgres://u:p@h/d"
target = "postgres://u:p@h2/d"
until = 1000
needs = ["db-catchup"]

[[phase.step]]
id = "deploy-rds"
do = "ecs.deploy"
cluster = "${cluster}"
service = "gengar"

[[phase.step]]
id = "migrations-pending"
do = "ecs.run-task"
cluster = "gengar"
service = "gengar"
command = ["yarn", "migration:show"]
exit_codes = [0, 1]
needs = ["deploy-rds"]

[[phase.step]]
id = "maintenance-on"
do = "shell"
run = "true"
needs = ["db-catchup-2", "migrations-pending", "snapshot-before"]

[[phase.step]]
id = "snapshot-after"
do = "rds.snapshot"
instance = "gengar-db"
needs = ["maintenance-on"]

[[phase.step]]
id = "db-drain"
do = "db.catchup"
source = "postgres://u:p@h/d"
target = "postgres://u:p@h2/d"
needs = ["snapshot-after"]

[[phase.step]]
id = "migrations"
do = "ecs.run-task"
cluster = "${cluster}"
service = "gengar"
command = ["yarn", "migration:run"]
needs = ["db-drain", "migrations-pending"]
only_if = { value = "${steps.migrations-pending.outputs.exit_code}", equals = "1", why = "a migration is pending" }

[[phase.step]]
id = "targets-healthy"
do = "elb.health"
target_group = "tg"
needs = ["migrations"]

[[phase.step]]
id = "dns-cutover"
do = "shell"
run = "true"
needs = ["targets-healthy"]
"#;

    fn freeze() -> Runbook {
        Runbook::from_source(
            SourceFile::new("runbook.toml", FREEZE.to_string()),
            &[],
            &Registry::builtin(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The real day's journal before the freeze: a snapshot of 4 min, another instance's of
    /// 20 min after it, two catch-ups, a rollout, the pending-migration check (46 s, exit 1 or 0).
    fn real_day(pending: Option<&str>, opened: bool) -> JournalState {
        let code = pending.map(|c| [("exit_code", c)]);
        let mut runs: Vec<crate::journal::testing::Run<'_>> = vec![
            // The latest snapshot, but of another instance.
            (
                "snapshot-other",
                "2026-11-20T09:20:00.000Z",
                "2026-11-20T09:40:00.000Z",
                &[],
            ),
            (
                "snapshot-before",
                "2026-11-20T09:00:00.000Z",
                "2026-11-20T09:04:00.000Z",
                &[],
            ),
            // 40,000 applied in 80 s; the log at 41,000 when it ended.
            (
                "db-catchup",
                "2026-11-20T09:10:00.000Z",
                "2026-11-20T09:11:20.000Z",
                &[
                    ("position", "40000"),
                    ("horizon", "900"),
                    ("applied", "40000"),
                    ("backlog", "1000"),
                ],
            ),
            // 100 s later: 2,000 applied in 4 s (500/s); the log at 41,200, 200 behind.
            (
                "db-catchup-2",
                "2026-11-20T09:12:56.000Z",
                "2026-11-20T09:13:00.000Z",
                &[
                    ("position", "41000"),
                    ("horizon", "950"),
                    ("applied", "2000"),
                    ("backlog", "200"),
                ],
            ),
            (
                "deploy-rds",
                "2026-11-20T09:14:00.000Z",
                "2026-11-20T09:17:10.000Z",
                &[],
            ),
        ];
        if let Some(code) = &code {
            runs.push((
                "migrations-pending",
                "2026-11-20T09:18:00.000Z",
                "2026-11-20T09:18:46.000Z",
                code,
            ));
        }
        if opened {
            // 50 s after the last catch-up ended.
            runs.push((
                "maintenance-on",
                "2026-11-20T09:13:49.000Z",
                "2026-11-20T09:13:50.000Z",
                &[],
            ));
        }
        journal(&runs)
    }

    /// A rehearsal where the AWS work took the twin's seconds.
    fn rehearsal() -> JournalState {
        journal(&[
            (
                "snapshot-after",
                "2026-11-01T10:00:00.000Z",
                "2026-11-01T10:00:01.000Z",
                &[],
            ),
            (
                "migrations",
                "2026-11-01T10:01:00.000Z",
                "2026-11-01T10:01:02.000Z",
                &[],
            ),
            (
                "targets-healthy",
                "2026-11-01T10:02:00.000Z",
                "2026-11-01T10:02:02.000Z",
                &[],
            ),
            (
                "db-drain",
                "2026-11-01T10:03:00.000Z",
                "2026-11-01T10:03:01.000Z",
                &[],
            ),
        ])
    }

    fn step_of(p: &Prediction, id: &str) -> Predicted {
        p.steps
            .iter()
            .find(|s| s.step == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {p:?}"))
    }

    #[test]
    fn the_snapshot_is_predicted_from_this_migrations_snapshot_of_the_same_instance() {
        let rb = freeze();
        let p = predict(
            &rb,
            &rb.windows[0],
            &real_day(None, false),
            Some(&rehearsal()),
        );
        let snapshot = step_of(&p, "snapshot-after");
        // snapshot-before's 4 min (its instance `${rds}` is gengar-db, as snapshot-after's);
        // never the other instance's 20 min, never the rehearsal's 1 s.
        assert_eq!(snapshot.duration, Duration::from_secs(240));
        assert_eq!(
            snapshot.how,
            "this migration's own `snapshot-before` (snapshot: the same kind on the same \
             resources, measured on AWS) (the rehearsal's 1.0s: emulated, not evidence)"
        );
        // Nothing measured on AWS: the rehearsal's figure, said to be no evidence.
        let p = predict(&rb, &rb.windows[0], &journal(&[]), Some(&rehearsal()));
        let snapshot = step_of(&p, "snapshot-after");
        assert_eq!(snapshot.duration, Duration::from_secs(1));
        assert!(
            snapshot
                .how
                .starts_with("the rehearsal's 1.0s: emulated, not evidence"),
            "{}",
            snapshot.how
        );
    }

    #[test]
    fn the_drain_is_predicted_from_the_measured_backlog_and_apply_rate() {
        let rb = freeze();
        // Before the freeze: 200 pending ÷ 500/s.
        let p = predict(
            &rb,
            &rb.windows[0],
            &real_day(None, false),
            Some(&rehearsal()),
        );
        let drain = step_of(&p, "db-drain");
        assert_eq!(drain.duration, Duration::from_millis(400));
        assert_eq!(
            drain.how,
            "the drain: a backlog of 200 change(s) (`db-catchup-2`'s when it ended) (plus what \
             is written between it and the window's opening) ÷ 500 changes/s (`db-catchup-2` \
             applied 2000 in 4.0s)"
        );
        // The freeze opened 50 s after it: the log grew 200 in 100 s between the catch-ups'
        // ends (2/s), so 100 more: 300 ÷ 500/s.
        let p = predict(&rb, &rb.windows[0], &real_day(None, true), None);
        let drain = step_of(&p, "db-drain");
        assert_eq!(drain.duration, Duration::from_millis(600));
        assert!(
            drain.how.contains(
                "+ 100 written before the window opened (2.0 changes/s, the log's growth \
                 between `db-catchup` and `db-catchup-2`, for 50.0s)"
            ),
            "{}",
            drain.how
        );
    }

    #[test]
    fn the_rest_of_the_final_catchup_comes_from_the_history_less_its_drain() {
        let rb = freeze();
        // The rehearsal's final catch-up took 3 s, 1 s of it draining: the other 2 s (whole
        // tables, large objects, the check) come on top of today's drain (200 ÷ 500/s).
        let history = journal(&[(
            "db-drain",
            "2026-11-01T10:03:00.000Z",
            "2026-11-01T10:03:03.000Z",
            &[("drain_secs", "1.000")],
        )]);
        let p = predict(&rb, &rb.windows[0], &real_day(None, false), Some(&history));
        let drain = step_of(&p, "db-drain");
        assert_eq!(drain.duration, Duration::from_millis(2400));
        assert!(
            drain.how.ends_with(
                "+ the rest of the final catch-up (whole tables, large objects, sequences, the \
                 check by key): 2.0s in the history less its drain"
            ),
            "{}",
            drain.how
        );
    }

    #[test]
    fn a_step_its_condition_skips_is_zero_and_one_that_runs_is_predicted_from_aws() {
        let rb = freeze();
        let predicted = |pending| {
            let p = predict(
                &rb,
                &rb.windows[0],
                &real_day(pending, false),
                Some(&rehearsal()),
            );
            step_of(&p, "migrations")
        };
        // No migration pending: skipped, 0 s.
        let skipped = predicted(Some("0"));
        assert_eq!(skipped.duration, Duration::ZERO);
        assert_eq!(
            skipped.how,
            "skipped: not needed: migrations-pending's exit_code is 0; runs only when 1 (a \
             migration is pending)"
        );
        // One pending: a one-off task on the same cluster, as long as the check's took on AWS.
        let runs = predicted(Some("1"));
        assert_eq!(runs.duration, Duration::from_secs(46));
        assert!(
            runs.how.starts_with("this migration's own `migrations-pending` (one-off task: the quickest one-off task on the same cluster"),
            "{}",
            runs.how
        );
        // Not known yet: predicted as if it ran, the condition said.
        let unknown = predicted(None);
        assert_eq!(unknown.duration, Duration::from_secs(2));
        assert!(
            unknown.how.ends_with(
                "; if it runs: it runs only when migrations-pending's exit_code is 1 (a \
                 migration is pending) (not known yet)"
            ),
            "{}",
            unknown.how
        );
    }

    #[test]
    fn a_health_wait_after_a_rollout_done_before_the_window_is_one_look() {
        let rb = freeze();
        let p = predict(
            &rb,
            &rb.windows[0],
            &real_day(Some("0"), false),
            Some(&rehearsal()),
        );
        let wait = step_of(&p, "targets-healthy");
        assert_eq!(wait.duration, LOOK);
        assert!(
            wait.how.starts_with(
                "one look: `deploy-rds` completed its rollout before the window opened"
            ),
            "{}",
            wait.how
        );
    }

    #[test]
    fn a_window_holds_the_steps_between_its_ends() {
        let rb = runbook();
        assert_eq!(
            inside(&rb, &rb.windows[0]),
            vec!["copy", "verify", "deploy", "dns-cutover"]
        );
    }

    #[test]
    fn the_prediction_scales_the_history_by_the_source_and_adds_the_ttl() {
        let rb = runbook();
        // The rehearsal: 100 MiB copied in 10 s, verified… the deploy took 30 s.
        let history = journal(&[
            (
                "preflight",
                "2026-11-01T10:00:00.000Z",
                "2026-11-01T10:00:02.000Z",
                &[("source_bytes", "104857600")],
            ),
            (
                "copy",
                "2026-11-01T10:01:00.000Z",
                "2026-11-01T10:01:10.000Z",
                &[],
            ),
            (
                "deploy",
                "2026-11-01T10:02:00.000Z",
                "2026-11-01T10:02:30.000Z",
                &[],
            ),
        ]);
        // Production: ten times the data; the TTL already lowered to 60 s.
        let now = journal(&[
            (
                "preflight",
                "2026-11-20T10:00:00.000Z",
                "2026-11-20T10:00:03.000Z",
                &[("source_bytes", "1048576000")],
            ),
            (
                "dns-ttl",
                "2026-11-20T09:00:00.000Z",
                "2026-11-20T09:00:05.000Z",
                &[("previous_ttl", "300"), ("ttl", "60")],
            ),
        ]);
        let p = predict(&rb, &rb.windows[0], &now, Some(&history));
        let step = |id: &str| p.steps.iter().find(|s| s.step == id).unwrap().clone();
        assert_eq!(step("copy").duration, Duration::from_secs(100));
        assert!(step("copy").how.contains("×10.00"), "{}", step("copy").how);
        // Not data-bound: as it took.
        assert_eq!(step("deploy").duration, Duration::from_secs(30));
        // Never ran anywhere: a guess, said to be one.
        assert!(step("dns-cutover").how.contains("a guess"));
        assert_eq!(p.dns_ttl, Some(Duration::from_secs(60)));
        assert_eq!(
            p.total,
            Duration::from_secs(100 + 30 + 60)
                + step("dns-cutover").duration
                + step("verify").duration
        );

        // Without history the copy comes from the preflight's sample; the TTL not lowered
        // yet is today's.
        let sampled = journal(&[(
            "preflight",
            "2026-11-20T10:00:00.000Z",
            "2026-11-20T10:00:03.000Z",
            &[
                ("source_bytes", "1048576000"),
                ("predicted_copy_secs", "250.0"),
            ],
        )]);
        let mut partial = sampled.clone();
        partial.apply(
            &LineMeta {
                seq: 99,
                time: "2026-11-20T10:00:04.000Z",
                actor: "ana",
                step: Some("dns-ttl"),
                step_digest: Some("d"),
            },
            &Event::Outputs {
                values: [("previous_ttl".to_string(), "300".to_string())].into(),
            },
        );
        let p = predict(&rb, &rb.windows[0], &partial, None);
        let copy = p.steps.iter().find(|s| s.step == "copy").unwrap();
        assert_eq!(copy.duration, Duration::from_secs(250));
        assert!(copy.how.contains("throughput sample"));
        assert_eq!(p.dns_ttl, Some(Duration::from_secs(300)));
        assert!(p.dns_how.contains("not lowered yet"));
    }

    #[test]
    fn the_copy_grows_in_two_parts_and_a_verify_on_checksums_does_not_grow() {
        let rb = runbook();
        // The rehearsal: 100 MiB, 1,000 rows; the copy took 10 s, its data in after 4 s; the
        // preflight sampled 40 MiB/s (the slower side); the verification took 2 s.
        let history = journal(&[
            (
                "preflight",
                "2026-11-01T10:00:00.000Z",
                "2026-11-01T10:00:02.000Z",
                &[
                    ("source_bytes", "104857600"),
                    ("read_mib_s", "80.0"),
                    ("write_mib_s", "40.0"),
                ],
            ),
            (
                "copy",
                "2026-11-01T10:01:00.000Z",
                "2026-11-01T10:01:10.000Z",
                &[
                    ("data_secs", "4.0"),
                    (
                        "checksums",
                        r#"{"a":{"rows":600,"sum":1},"b":{"rows":400,"sum":2}}"#,
                    ),
                ],
            ),
            (
                "verify",
                "2026-11-01T10:02:00.000Z",
                "2026-11-01T10:02:02.000Z",
                &[],
            ),
            // The window: open 10:00:50 → 10:02:11 (81 s), 13 s of it in steps.
            (
                "maintenance-on",
                "2026-11-01T10:00:49.000Z",
                "2026-11-01T10:00:50.000Z",
                &[],
            ),
            (
                "dns-cutover",
                "2026-11-01T10:02:10.000Z",
                "2026-11-01T10:02:11.000Z",
                &[],
            ),
        ]);
        // Today: ten times the bytes, on a machine whose sample is half as fast (20 MiB/s).
        let now = journal(&[(
            "preflight",
            "2026-11-20T10:00:00.000Z",
            "2026-11-20T10:00:03.000Z",
            &[
                ("source_bytes", "1048576000"),
                ("read_mib_s", "20.0"),
                ("write_mib_s", "35.0"),
            ],
        )]);
        let p = predict(&rb, &rb.windows[0], &now, Some(&history));
        let step = |id: &str| p.steps.iter().find(|s| s.step == id).unwrap().clone();
        // Data: 4 s × 10 × 2 = 80 s; the rest: 6 s × 10 × ln(10,000)/ln(1,000) = 80 s.
        let copy = step("copy");
        assert!(
            (copy.duration.as_secs_f64() - 160.0).abs() < 0.01,
            "{:?}",
            copy.duration
        );
        assert!(
            copy.how.contains("×2.00 for the preflight's throughput"),
            "{}",
            copy.how
        );
        assert!(copy.how.contains("n·log n from 1000 rows"), "{}", copy.how);
        // The verification compares the copy's checksums: as long as it took.
        assert_eq!(step("verify").duration, Duration::from_secs(2));
        assert_eq!(step("verify").how, "history 2.0s");
        // The time between the steps, as the history's window had it.
        assert_eq!(step(BETWEEN_STEPS).duration, Duration::from_secs(68));
        assert_eq!(step(BETWEEN_STEPS).actual, None);
    }

    #[test]
    fn the_sampled_index_builds_replace_their_part_of_the_tail() {
        let rb = runbook();
        // The rehearsal's copy: 10 s, its data in after 4 s; of the 6 s after, the HNSW build
        // its preflight sampled took 5 s.
        let build = |secs: f64, exponent: f64| {
            format!(
                r#"[{{"index":"public.docs_idx","table":"public.docs","kind":"hnsw","rows":1000,"sample_rows":[250,500,1000],"sample_secs":[0.1,0.3,1.0],"exponent":{exponent},"predicted_secs":{secs},"index_bytes":1,"memory_bytes":2,"spill_factor":null}}]"#
            )
        };
        let then_builds = build(5.0, 1.5);
        let history = journal(&[
            (
                "preflight",
                "2026-11-01T10:00:00.000Z",
                "2026-11-01T10:00:02.000Z",
                &[
                    ("source_bytes", "104857600"),
                    ("index_builds", then_builds.as_str()),
                ],
            ),
            (
                "copy",
                "2026-11-01T10:01:00.000Z",
                "2026-11-01T10:01:10.000Z",
                &[
                    ("data_secs", "4.0"),
                    ("checksums", r#"{"docs":{"rows":1000,"sum":1}}"#),
                ],
            ),
        ]);
        // Today ten times the data, and the preflight's sample says the graph takes 158 s.
        let now_builds = build(158.0, 1.5);
        let now = journal(&[(
            "preflight",
            "2026-11-20T10:00:00.000Z",
            "2026-11-20T10:00:03.000Z",
            &[
                ("source_bytes", "1048576000"),
                ("index_builds", now_builds.as_str()),
            ],
        )]);
        let p = predict(&rb, &rb.windows[0], &now, Some(&history));
        let copy = p.steps.iter().find(|s| s.step == "copy").unwrap();
        // Data 4 s × 10; the graph 158 s; the other 1 s × 10 × ln(10,000)/ln(1,000).
        let expected = 40.0 + 158.0 + 10.0 * (10_000f64.ln() / 1_000f64.ln());
        assert!(
            (copy.duration.as_secs_f64() - expected).abs() < 0.01,
            "{:?} {}",
            copy.duration,
            copy.how
        );
        assert!(
            copy.how
                .contains("the sampled builds 5.0s then, 2m 38s now (public.docs_idx hnsw ×n^1.50"),
            "{}",
            copy.how
        );

        // A history without a sample: n·log n, but never less than today's sampled builds.
        let bare = journal(&[(
            "preflight",
            "2026-11-01T10:00:00.000Z",
            "2026-11-01T10:00:02.000Z",
            &[("source_bytes", "104857600")],
        )]);
        let mut old = history.clone();
        old.steps
            .insert("preflight".into(), bare.step("preflight").unwrap().clone());
        let p = predict(&rb, &rb.windows[0], &now, Some(&old));
        let copy = p.steps.iter().find(|s| s.step == "copy").unwrap();
        assert!(
            (copy.duration.as_secs_f64() - 198.0).abs() < 0.01,
            "{:?} {}",
            copy.duration,
            copy.how
        );
        assert!(
            copy.how.contains("but at least the sampled builds' 2m 38s"),
            "{}",
            copy.how
        );
    }

    #[test]
    fn a_window_opens_when_its_first_step_is_done_and_closes_with_its_last() {
        let rb = runbook();
        let open = journal(&[
            (
                "maintenance-on",
                "2026-11-20T10:00:00.000Z",
                "2026-11-20T10:00:01.000Z",
                &[],
            ),
            (
                "copy",
                "2026-11-20T10:00:02.000Z",
                "2026-11-20T10:01:02.000Z",
                &[],
            ),
        ]);
        let view = &views(&rb, &open)[0];
        let since = parse_time("2026-11-20T10:00:01.000Z").unwrap();
        assert_eq!(view.state, WindowState::Open { since });
        assert_eq!(
            view.state.elapsed(since + Duration::from_secs(90)),
            Some(Duration::from_secs(90))
        );
        // Measured inside the window: the copy's actual figure.
        let p = predict(&rb, &rb.windows[0], &open, None);
        assert_eq!(p.steps[0].actual, Some(Duration::from_secs(60)));

        let closed = journal(&[
            (
                "maintenance-on",
                "2026-11-20T10:00:00.000Z",
                "2026-11-20T10:00:01.000Z",
                &[],
            ),
            (
                "dns-cutover",
                "2026-11-20T10:05:00.000Z",
                "2026-11-20T10:05:31.000Z",
                &[],
            ),
        ]);
        let view = &views(&rb, &closed)[0];
        assert_eq!(
            view.state.elapsed(SystemTime::now()),
            Some(Duration::from_secs(330))
        );
        assert!(matches!(view.state, WindowState::Closed { .. }));
        assert_eq!(
            views(&rb, &JournalState::new())[0].state,
            WindowState::Pending
        );
    }

    #[test]
    fn the_timeline_and_sparkline_draw_what_they_are_given() {
        let p = Prediction {
            window: "w".into(),
            steps: vec![
                Predicted {
                    step: "copy".into(),
                    duration: Duration::from_secs(10),
                    how: String::new(),
                    actual: Some(Duration::from_secs(20)),
                },
                Predicted {
                    step: "dns".into(),
                    duration: Duration::from_secs(20),
                    how: String::new(),
                    actual: None,
                },
            ],
            dns_ttl: None,
            dns_how: String::new(),
            total: Duration::from_secs(30),
        };
        let lines = timeline(&p, 40);
        // copy: 20 s of 40 s → half the width, its prediction marked at a quarter.
        assert_eq!(
            lines[0],
            format!(
                "copy {}┃{}{} 20.0s (predicted 10.0s)",
                "█".repeat(10),
                "█".repeat(9),
                " ".repeat(21)
            )
        );
        // dns: not run, predicted from 20 s to 40 s.
        assert_eq!(
            lines[1],
            format!(
                "dns  {}{} predicted 20.0s",
                " ".repeat(20),
                "░".repeat(20) + " "
            )
        );
        assert_eq!(sparkline(&[0.0, 5.0, 10.0]), "▁▅█");
        assert_eq!(sparkline(&[]), "");
    }
}
