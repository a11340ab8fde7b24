//! Where each step stands: the journal's fold read against the runbook, the lock and the clock.

use std::time::{Duration, SystemTime};

use crate::journal::{parse_time, JournalState, Recorded, StepRecord};
use crate::runbook::{Runbook, Step};

/// A step's state as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepState {
    /// Waiting for these steps.
    Blocked {
        waiting_for: Vec<String>,
    },
    /// Its needs are met; it can run now.
    Ready,
    /// Its needs are met but its time gate has not passed.
    Gated {
        after: String,
        remaining: Option<Duration>,
    },
    /// Started by a driver that is still alive.
    Running,
    /// Started, and its driver is gone: it may or may not have had its effect.
    Interrupted,
    Done,
    Failed {
        reason: String,
    },
    Skipped,
    /// Done (or skipped) under an earlier definition of the step.
    Changed,
    /// Its rollback ran: its effect is undone; it can run again.
    RolledBack,
    /// Done before a step it needs was rolled back: what it did may no longer hold, so it
    /// runs again (never silently "done").
    Stale {
        rolled_back: String,
        /// Its needs not done again yet: it runs after them.
        waiting_for: Vec<String>,
    },
}

impl StepState {
    pub fn label(&self) -> &'static str {
        match self {
            StepState::Blocked { .. } => "pending",
            StepState::Ready => "ready",
            StepState::Gated { .. } => "gated",
            StepState::Running => "running",
            StepState::Interrupted => "interrupted",
            StepState::Done => "done",
            StepState::Failed { .. } => "failed",
            StepState::Skipped => "skipped",
            StepState::Changed => "changed",
            StepState::RolledBack => "rolled back",
            StepState::Stale { .. } => "needs re-run",
        }
    }

    /// Done or skipped: later steps may rely on it.
    pub fn is_settled(&self) -> bool {
        matches!(self, StepState::Done | StepState::Skipped)
    }

    /// Can be started now (ready, or a failed/interrupted step to retry).
    pub fn is_actionable(&self) -> bool {
        matches!(
            self,
            StepState::Ready
                | StepState::Failed { .. }
                | StepState::Interrupted
                | StepState::RolledBack
        ) || matches!(self, StepState::Stale { waiting_for, .. } if waiting_for.is_empty())
    }
}

/// One step with its state and what the journal says about it.
#[derive(Debug, Clone)]
pub struct StepView<'a> {
    pub step: &'a Step,
    pub state: StepState,
    pub record: Option<&'a StepRecord>,
}

/// The state of every step, in runbook order. `driver_alive` says whether a started step
/// may still be running (a live lock holder other than the caller).
pub fn step_states<'a>(
    runbook: &'a Runbook,
    journal: &'a JournalState,
    driver_alive: bool,
    now: SystemTime,
) -> Vec<StepView<'a>> {
    // Own states first (without needs), then needs, which depend on own states.
    let own: Vec<Option<StepState>> = runbook
        .steps
        .iter()
        .map(|step| {
            let state = own_state(step, journal.step(&step.id), driver_alive);
            match state {
                Some(StepState::Done) => Some(stale(runbook, journal, step).map_or(
                    StepState::Done,
                    |rolled_back| StepState::Stale {
                        rolled_back,
                        waiting_for: Vec::new(),
                    },
                )),
                other => other,
            }
        })
        .collect();
    let settled = |id: &str| {
        runbook
            .step_index(id)
            .and_then(|i| own[i].as_ref())
            .is_some_and(StepState::is_settled)
    };
    runbook
        .steps
        .iter()
        .zip(own.iter())
        .map(|(step, own)| {
            let state = match own {
                Some(StepState::Stale { rolled_back, .. }) => StepState::Stale {
                    rolled_back: rolled_back.clone(),
                    waiting_for: step.needs.iter().filter(|n| !settled(n)).cloned().collect(),
                },
                Some(state) => state.clone(),
                None => {
                    let waiting_for: Vec<String> =
                        step.needs.iter().filter(|n| !settled(n)).cloned().collect();
                    if !waiting_for.is_empty() {
                        StepState::Blocked { waiting_for }
                    } else {
                        gate_state(step, journal, now).unwrap_or(StepState::Ready)
                    }
                }
            };
            StepView {
                step,
                state,
                record: journal.step(&step.id),
            }
        })
        .collect()
}

/// What the step's own record says; `None` when it has not run (or was reset).
fn own_state(step: &Step, record: Option<&StepRecord>, driver_alive: bool) -> Option<StepState> {
    let record = record?;
    let changed = record.step_digest != step.digest;
    match record.status {
        Recorded::Pending => None,
        Recorded::Started if driver_alive => Some(StepState::Running),
        Recorded::Started => Some(StepState::Interrupted),
        Recorded::Done | Recorded::Skipped if changed => Some(StepState::Changed),
        Recorded::Done => Some(StepState::Done),
        Recorded::Skipped => Some(StepState::Skipped),
        Recorded::Failed => Some(StepState::Failed {
            reason: record.detail.clone().unwrap_or_default(),
        }),
        Recorded::RolledBack => Some(StepState::RolledBack),
    }
}

/// The step it needs (directly or not) that was rolled back after this one was done.
fn stale(runbook: &Runbook, journal: &JournalState, step: &Step) -> Option<String> {
    let done_at = journal
        .step(&step.id)?
        .done_at
        .as_deref()
        .and_then(parse_time)?;
    runbook.transitive_needs(&step.id).into_iter().find(|need| {
        journal
            .step(need)
            .and_then(|r| r.rolled_back_at.as_deref())
            .and_then(parse_time)
            .is_some_and(|at| at >= done_at)
    })
}

fn gate_state(step: &Step, journal: &JournalState, now: SystemTime) -> Option<StepState> {
    let gate = step.after.as_ref()?;
    let done_at = journal
        .step(&gate.step)
        .filter(|r| r.status == Recorded::Done)
        .and_then(|r| r.done_at.as_deref())
        .and_then(parse_time);
    let Some(done_at) = done_at else {
        return Some(StepState::Gated {
            after: gate.step.clone(),
            remaining: None,
        });
    };
    let open_at = done_at + gate.at_least;
    match open_at.duration_since(now) {
        Ok(remaining) if !remaining.is_zero() => Some(StepState::Gated {
            after: gate.step.clone(),
            remaining: Some(remaining),
        }),
        _ => None,
    }
}

/// "3d 4h", "12m 5s": the time left on a gate, to the two largest units.
pub fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, minutes, seconds) =
        (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// Done and total, counting skipped steps as done.
pub fn progress(views: &[StepView<'_>]) -> (usize, usize) {
    let done = views.iter().filter(|v| v.state.is_settled()).count();
    (done, views.len())
}

/// A change capture's backlog in one direction, as the latest catch-up that way left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// Where the changes come from and go, as the catch-up names them (`HEROKU_DATABASE_URL →
    /// RDS_DATABASE_URL`: the secrets' names, never their values).
    pub direction: String,
    /// The catch-up step that read it.
    pub step: String,
    /// Changes logged and not applied when it ended.
    pub changes: u64,
    /// The oldest of them, then.
    pub oldest: Option<Duration>,
    /// When it ended.
    pub as_of: String,
}

impl Backlog {
    /// One line: "RDS_DATABASE_URL → HEROKU_DATABASE_URL: 12 changes, the oldest 3m old, as of
    /// db-catchup-back 2 min ago".
    pub fn describe(&self, now: SystemTime) -> String {
        let since = parse_time(&self.as_of)
            .and_then(|at| now.duration_since(at).ok())
            .unwrap_or_default();
        let what = match (self.changes, self.oldest) {
            (0, _) => "nothing waiting".to_string(),
            (n, Some(oldest)) => format!(
                "{n} change(s) waiting, the oldest {} old",
                short_duration(oldest + since)
            ),
            (n, None) => format!("{n} change(s) waiting"),
        };
        format!(
            "{}: {what} (as `{}` left it {} ago)",
            self.direction,
            self.step,
            short_duration(since)
        )
    }
}

/// The backlog of each direction a catch-up has run in: its latest run's. A catch-up step is
/// one whose action is `db.catchup`; its direction, the source and target it names.
pub fn backlogs(runbook: &Runbook, journal: &JournalState) -> Vec<Backlog> {
    let name = |value: Option<&serde_json::Value>| -> String {
        let text = value.and_then(|v| v.as_str()).unwrap_or("?");
        match text
            .strip_prefix("${secret.")
            .and_then(|t| t.strip_suffix('}'))
        {
            Some(secret) => secret.to_string(),
            // Written into the runbook as it is: it may hold a password; never shown.
            None if text.contains("://") => "a database URL".to_string(),
            None => text.to_string(),
        }
    };
    let mut latest: std::collections::BTreeMap<String, (SystemTime, Backlog)> =
        std::collections::BTreeMap::new();
    for step in runbook
        .steps
        .iter()
        .filter(|s| s.action.kind == "db.catchup")
    {
        let Some(record) = journal.step(&step.id) else {
            continue;
        };
        let Some(changes) = record
            .outputs
            .get("backlog")
            .and_then(|b| b.trim().parse::<u64>().ok())
        else {
            continue;
        };
        let Some(at) = parse_time(&record.since) else {
            continue;
        };
        let direction = format!(
            "{} → {}",
            name(step.action.params.get("source")),
            name(step.action.params.get("target"))
        );
        let oldest = record
            .outputs
            .get("backlog_oldest_secs")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let backlog = Backlog {
            direction: direction.clone(),
            step: step.id.clone(),
            changes,
            oldest,
            as_of: record.since.clone(),
        };
        if latest.get(&direction).is_none_or(|(was, _)| *was <= at) {
            latest.insert(direction, (at, backlog));
        }
    }
    latest.into_values().map(|(_, b)| b).collect()
}

/// The soak as the UI's soak view and `cutover report` draw it: the latest `soak.gate`'s
/// evidence (its figures and the service's events), Heroku's baseline from the
/// `heroku.baseline` step, and what the journal says happened in the window (the DNS
/// cutover, deployments, rollbacks). `Err` says why there is no picture yet.
pub fn soak_picture(
    runbook: &Runbook,
    journal: &JournalState,
) -> Result<crate::soak::Picture, String> {
    use crate::soak::{Bucket, Evidence, Mark, MarkKind, Picture};
    let of_kind = |kind: &'static str| runbook.steps.iter().filter(move |s| s.action.kind == kind);
    let Some((gate, record)) = of_kind("soak.gate")
        .filter_map(|s| Some((s, journal.step(&s.id)?)))
        .filter(|(_, r)| r.outputs.contains_key("figures"))
        .max_by_key(|(_, r)| r.started_at.as_deref().and_then(parse_time))
    else {
        return Err(match of_kind("soak.gate").next() {
            Some(s) => format!(
                "no evidence yet: `{}` reads CloudWatch's figures when it runs",
                s.id
            ),
            None => "the runbook has no soak.gate step".to_string(),
        });
    };
    let text = &record.outputs["figures"];
    let evidence: Evidence = serde_json::from_str(text).map_err(|e| {
        let earlier = serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|v| v.get("figures").is_none() && v.get("requests").is_some());
        if earlier {
            format!(
                "`{}` ran with an earlier version of cutover, which kept its figures without their limits: run it again to draw them",
                gate.id
            )
        } else {
            format!("`{}`'s figures are not readable ({e}): run it again", gate.id)
        }
    })?;
    let baseline: Option<Vec<Bucket>> = of_kind("heroku.baseline")
        .filter_map(|s| journal.step(&s.id)?.outputs.get("buckets"))
        .find_map(|b| serde_json::from_str(b).ok());
    let mut marks: Vec<Mark> = record
        .outputs
        .get("marks")
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default();
    let unix = |text: Option<&str>| {
        text.and_then(parse_time)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    for step in &runbook.steps {
        let Some(r) = journal.step(&step.id) else {
            continue;
        };
        let kind = match step.action.kind.as_str() {
            "dns.point" => Some((MarkKind::Cutover, "the DNS cutover")),
            "ecs.deploy" => Some((MarkKind::Deploy, "a deployment")),
            _ => None,
        };
        if let (Some((kind, what)), Some(at)) = (kind, unix(r.done_at.as_deref())) {
            marks.push(Mark {
                at,
                kind,
                label: format!("{what}: `{}`", step.id),
            });
        }
        if let Some(at) = unix(r.rolled_back_at.as_deref()) {
            marks.push(Mark {
                at,
                kind: MarkKind::Rollback,
                label: format!("`{}` rolled back", step.id),
            });
        }
    }
    let verdict = record.outputs.get("verdict").cloned();
    let breaches = record
        .outputs
        .get("breaches")
        .and_then(|b| serde_json::from_str::<Vec<serde_json::Value>>(b).ok())
        .unwrap_or_default()
        .iter()
        .map(|b| {
            format!(
                "{}: {} (limit {})",
                b["figure"].as_str().unwrap_or("?"),
                b["value"].as_str().unwrap_or("?"),
                b["limit"].as_str().unwrap_or("?")
            )
        })
        .collect();
    Ok(Picture::new(
        evidence,
        baseline.as_deref(),
        marks,
        verdict,
        breaches,
    ))
}
