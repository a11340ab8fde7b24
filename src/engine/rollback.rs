//! Rolling a done step back: its rollback action, confirmed by a typed phrase, with the
//! operator's reason, after its done dependants (or alone, when the operator insists).

use tokio_util::sync::CancellationToken;

use super::{display_scope, Engine, EngineError, EngineEvent, Purpose, RunRequest, Target};
use crate::actions::Outcome;
use crate::journal::{Event, Recorded};
use crate::runbook::{self, Rollback, Step};
use crate::status::StepState;
use crate::workspace::Workspace;

/// A request to roll one step back.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    pub step: String,
    /// The phrase typed: `roll back STEP`.
    pub confirm: Option<String>,
    /// Why: required, journaled with who.
    pub note: String,
    /// Roll back this step although steps done after it rely on it.
    pub only: bool,
    pub cancel: CancellationToken,
}

impl RollbackRequest {
    pub fn new(step: &str, note: &str) -> Self {
        RollbackRequest {
            step: step.to_string(),
            confirm: None,
            note: note.to_string(),
            only: false,
            cancel: CancellationToken::new(),
        }
    }
}

/// How long a rollback's warning may take (its tunnel included) before it is shown as unknown.
const WARN_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The phrase that confirms a rollback: the same for every step, naming it.
pub fn rollback_phrase(step: &str) -> String {
    format!("roll back {step}")
}

impl Engine {
    /// The done steps that rely on `id` (directly or not) and have something to undo, in the
    /// order they roll back (the last done first), ending with `id` itself.
    pub fn rollback_chain(&self, id: &str) -> Vec<String> {
        let views = self.states();
        let done = |s: &Step| {
            views.iter().any(|v| {
                v.step.id == s.id
                    && matches!(
                        v.state,
                        StepState::Done | StepState::Stale { .. } | StepState::Changed
                    )
                    && v.record.is_some_and(|r| r.status == Recorded::Done)
            })
        };
        let mut members: Vec<&Step> = self
            .runbook
            .steps
            .iter()
            .filter(|s| s.id != id && self.runbook.transitive_needs(&s.id).iter().any(|n| n == id))
            .filter(|s| done(s))
            .filter(|s| s.destructive || s.rollback.as_ref().is_some_and(|r| r.action.is_some()))
            .collect();
        // Dependants before what they need: repeatedly take one that no other member needs.
        let mut order = Vec::new();
        while !members.is_empty() {
            let next = members
                .iter()
                .position(|m| {
                    !members.iter().any(|other| {
                        other.id != m.id && self.runbook.transitive_needs(&other.id).contains(&m.id)
                    })
                })
                .unwrap_or(0);
            order.push(members.remove(next).id.clone());
        }
        order.push(id.to_string());
        order
    }

    /// Rolls a done step back: refuses what cannot be undone or is not confirmed, runs the
    /// rollback's warning (read-only) for the confirmation, then its action, journaled.
    pub async fn rollback(
        &mut self,
        request: RollbackRequest,
    ) -> Result<super::RunResult, EngineError> {
        let result = self.rollback_step(request).await;
        self.close_unneeded_tunnels().await;
        result
    }

    async fn rollback_step(
        &mut self,
        request: RollbackRequest,
    ) -> Result<super::RunResult, EngineError> {
        self.workspace.ensure()?;
        let (step, state) = self.choose(&Target::Step(request.step.clone()))?;
        let id = step.id.clone();
        let refuse = |why: String| EngineError::RollbackRefused {
            step: id.clone(),
            why,
        };
        match &state {
            StepState::Done | StepState::Stale { .. } | StepState::Changed
                if self
                    .journal
                    .state()
                    .step(&id)
                    .is_some_and(|r| r.status == Recorded::Done) => {}
            StepState::RolledBack => return Err(refuse("it is already rolled back".into())),
            other => {
                return Err(refuse(format!(
                    "it is not done ({}): there is nothing to undo",
                    super::describe_state(other)
                )))
            }
        }
        let rollback = step.rollback.clone();
        let (action, rollback) = match rollback {
            Some(r @ Rollback { action: Some(_), .. }) => (r.action.clone(), r),
            Some(Rollback { text, .. }) => {
                let scope = display_scope(&self.runbook, self.journal.state());
                let words = text
                    .map(|t| {
                        runbook::Template::parse(&t).map_or_else(|_| t.clone(), |t| t.display(&scope))
                    })
                    .unwrap_or_default();
                return Err(refuse(format!(
                    "its rollback is done by hand: {}\nWhen it is undone, record it: cutover mark {id} pending --note \"what was done\"",
                    words.trim()
                )));
            }
            None if step.destructive => {
                return Err(refuse(
                    "it has no rollback: it cannot be undone".to_string(),
                ))
            }
            None => {
                return Err(refuse(format!(
                    "it has no rollback (it changes nothing to undo): run it again with `cutover run {id}`"
                )))
            }
        };
        let Some(action) = action else {
            return Err(refuse("its rollback has no action".into()));
        };
        if let Some(after) = &rollback.refuse_after {
            if let Some(record) = self
                .journal
                .state()
                .step(after)
                .filter(|r| r.status == Recorded::Done)
            {
                return Err(refuse(format!(
                    "`{after}` was done at {} by {}: there is nothing left to go back to",
                    record.since, record.actor
                )));
            }
        }
        let note = request.note.trim().to_string();
        if note.is_empty() {
            return Err(EngineError::EmptyNote);
        }
        // A rollback with parts that must come first (the drain before the DNS) always runs
        // them: its own action having nothing to undo says nothing about what they carry.
        if rollback.first.is_empty() {
            if let Some(why) = self.nothing_to_undo(&action).await {
                return Err(EngineError::NothingToUndo { step: id, why });
            }
        }
        let chain = self.rollback_chain(&id);
        let dependants: Vec<String> = chain.iter().filter(|s| **s != id).cloned().collect();
        if !dependants.is_empty() && !request.only {
            return Err(EngineError::DependantsDone {
                step: id.clone(),
                chain,
            });
        }
        // The rollback runs as the step, through the rollback action's own tunnel, if any;
        // the warning through its own: a rollback needs only what it uses.
        let mut undo = step.clone();
        undo.via = rollback.via.clone();
        undo.outputs = Vec::new();
        let mut warn_as = undo.clone();
        warn_as.via = rollback.warn_via.clone();
        // The warning is read-only and optional: an AWS that does not answer cannot hold the
        // rollback; past its limit it is unknown, like any other failure to read it.
        warn_as.timeout = Some(step.timeout.map_or(WARN_LIMIT, |t| t.min(WARN_LIMIT)));
        let n = self.journal.state().lines + 1;
        let run = RunRequest {
            target: Target::Step(id.clone()),
            confirm: None,
            note: Some(note.clone()),
            check_only: false,
            break_glass: None,
            cancel: request.cancel.clone(),
        };
        let phrase = rollback_phrase(&id);
        let warning = match &rollback.warn {
            Some(warn) => {
                let log = format!("logs/{id}/rollback-{n}-warn.log");
                match self
                    .attempt(&warn_as, warn, 0, &log, &run, Purpose::Undo)
                    .await?
                {
                    Outcome::Succeeded { note } => note,
                    // Unknown is said as unknown; the rollback itself does not need it.
                    Outcome::Failed { reason, .. } => Some(format!(
                        "what going back loses is unknown: it could not be read ({reason}). The rollback does not need it and can run"
                    )),
                    Outcome::Cancelled => return Err(refuse("cancelled".into())),
                }
            }
            None => None,
        };
        match request.confirm.as_deref() {
            None => {
                let mut steps = Vec::new();
                for first in &rollback.first {
                    steps.push(self.describe_spec(&first.action).await);
                }
                steps.push(self.describe_spec(&action).await);
                let what = match steps.len() {
                    1 => steps.concat(),
                    _ => steps
                        .iter()
                        .enumerate()
                        .map(|(k, s)| format!("\n  {}. {s}", k + 1))
                        .collect::<String>(),
                };
                let mut consequence = format!("The rollback will: {what}");
                if let Some(warning) = &warning {
                    consequence.push_str(&format!("\nWARNING: {warning}"));
                }
                if !dependants.is_empty() {
                    consequence.push_str(&format!(
                        "\nDone after it and relying on it (they will need a re-run): {}",
                        dependants.join(", ")
                    ));
                }
                return Err(EngineError::RollbackConfirmationRequired {
                    step: id,
                    phrase,
                    consequence,
                });
            }
            Some(typed) if typed.trim() != phrase => {
                return Err(EngineError::ConfirmationMismatch { step: id, phrase })
            }
            Some(_) => {}
        }
        let log = Workspace::rollback_log_relative(&id, n);
        self.journal.append(
            Some((&id, &step.digest)),
            Event::RollbackStarted {
                note: note.as_str().into(),
                log: log.as_str().into(),
            },
        )?;
        if let Some(warning) = &warning {
            self.emit(EngineEvent::Log {
                step: id.clone(),
                stream: crate::actions::Stream::Info,
                line: format!("WARNING: {warning}"),
            });
        }
        // Its `first` actions, in order, each through its own tunnel; the first that does not
        // succeed ends the rollback there, failed, before its own action.
        let mut before = None;
        // What the parts before a failing one changed: the world is left so until it is rolled
        // back again (the ALB answering 503, say), and the failure says it.
        let mut done_before: Vec<String> = Vec::new();
        for (k, first) in rollback.first.iter().enumerate() {
            let mut first_as = undo.clone();
            first_as.via = first.via.clone();
            let first_log = format!("logs/{id}/rollback-{n}-first-{}.log", k + 1);
            let outcome = self
                .attempt(&first_as, &first.action, 0, &first_log, &run, Purpose::Undo)
                .await?;
            self.emit(EngineEvent::Log {
                step: id.clone(),
                stream: crate::actions::Stream::Info,
                line: match &outcome {
                    Outcome::Succeeded { note } => format!(
                        "{}. {}: done{}",
                        k + 1,
                        first.action.kind,
                        note.as_deref()
                            .map(|n| format!(" — {n}"))
                            .unwrap_or_default()
                    ),
                    Outcome::Failed { reason, .. } => {
                        format!("{}. {}: failed — {reason}", k + 1, first.action.kind)
                    }
                    Outcome::Cancelled => format!("{}. {}: cancelled", k + 1, first.action.kind),
                },
            });
            match outcome {
                Outcome::Succeeded { note } => done_before.push(format!(
                    "{}. {}{}",
                    k + 1,
                    first.action.kind,
                    note.map(|n| format!(": {n}")).unwrap_or_default()
                )),
                Outcome::Failed { reason, .. } => {
                    let left = if done_before.is_empty() {
                        String::new()
                    } else {
                        format!("; done before it, and left so: {}", done_before.join("; "))
                    };
                    before = Some(Outcome::failed(format!(
                        "before the rollback itself, {} (step {} of {}) failed: {reason} — nothing after it ran{left}. Fix it and roll back again (each part is safe to re-run)",
                        first.action.kind,
                        k + 1,
                        rollback.first.len() + 1
                    )));
                    break;
                }
                // Cancelled in the middle, the world is as the parts before it left it: said.
                Outcome::Cancelled if !done_before.is_empty() => {
                    before = Some(Outcome::failed(format!(
                        "cancelled during {} (step {} of {}) — nothing after it ran; done before it, and left so: {}. Roll back again to finish",
                        first.action.kind,
                        k + 1,
                        rollback.first.len() + 1,
                        done_before.join("; ")
                    )));
                    break;
                }
                Outcome::Cancelled => {
                    before = Some(Outcome::Cancelled);
                    break;
                }
            }
        }
        let outcome = match before {
            Some(stopped) => stopped,
            None => {
                self.attempt(&undo, &action, 0, &log, &run, Purpose::Undo)
                    .await?
            }
        };
        let event = match &outcome {
            Outcome::Succeeded { .. } => Event::RolledBack {
                note: note.as_str().into(),
            },
            Outcome::Failed { reason, .. } => Event::RollbackFailed {
                reason: reason.as_str().into(),
            },
            Outcome::Cancelled => Event::RollbackFailed {
                reason: "cancelled".into(),
            },
        };
        self.journal.append(Some((&id, &step.digest)), event)?;
        self.emit(EngineEvent::StepFinished {
            step: id.clone(),
            attempt: 0,
            outcome: outcome.clone(),
        });
        Ok(super::RunResult {
            step: id,
            attempt: 0,
            outcome,
        })
    }
}
