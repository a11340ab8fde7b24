//! Runs one step: needs, gates, confirmation, timeout, retries, cancellation, redaction and
//! events. The journal line for each event is durable before the work it records proceeds.

mod rollback;
mod secrets;

pub use rollback::{rollback_phrase, RollbackRequest};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::actions::{ActionContext, ActionEvent, Outcome, Progress, Registry, Reporter, Stream};
use crate::journal::{Event, Journal, JournalError, JournalState, Recorded};
use crate::redact::Redactor;
use crate::runbook::{self, ActionCatalog, ActionSpec, Runbook, Scope, Step};
use crate::status::{short_duration, step_states, StepState, StepView};
use crate::workspace::{Workspace, WorkspaceError};

/// How long an action gets to stop by itself after a cancel or a timeout (its children get
/// SIGTERM, then SIGKILL after `KILL_GRACE`) before it is aborted anyway: its connections
/// closed, its direct children killed. A backstop for an action that does not stop.
pub const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// What the engine tells its subscribers (the headless printer, the TUI).
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    StepStarted {
        step: String,
        attempt: u32,
        /// The step's action, its check, or its rollback.
        purpose: Purpose,
        log: PathBuf,
        /// What it does, secrets masked.
        action: String,
    },
    Log {
        step: String,
        stream: Stream,
        line: String,
    },
    Progress {
        step: String,
        progress: Progress,
    },
    Output {
        step: String,
        name: String,
        value: String,
    },
    Retrying {
        step: String,
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    StepFinished {
        step: String,
        attempt: u32,
        outcome: Outcome,
    },
}

/// Receives engine events, in order, as they happen.
pub trait Subscriber: Send {
    fn on_event(&mut self, event: &EngineEvent);
}

/// Which step to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Step(String),
    /// The first step, in runbook order, that can run now.
    Next,
}

/// A request to run (or check) one step.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub target: Target,
    /// The phrase typed by the operator, for destructive steps.
    pub confirm: Option<String>,
    /// The operator's note (needed by `manual` steps).
    pub note: Option<String>,
    /// Run the step's `check` instead of its action.
    pub check_only: bool,
    /// Run without the approvals the step's policy asks for, saying why: recorded, and
    /// listed in the report for review.
    pub break_glass: Option<String>,
    pub cancel: CancellationToken,
}

impl RunRequest {
    pub fn new(target: Target) -> Self {
        RunRequest {
            target,
            confirm: None,
            note: None,
            check_only: false,
            break_glass: None,
            cancel: CancellationToken::new(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    pub step: String,
    pub attempt: u32,
    pub outcome: Outcome,
}

/// Why the engine would not run a step. A failed step is not an error: it is a [`RunResult`].
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no step `{0}` in the runbook{1}")]
    UnknownStep(String, String),
    #[error("every step is done")]
    AllDone,
    #[error("nothing can run now: {0}")]
    NothingReady(String),
    #[error("step `{step}` is waiting for: {}", waiting_for.join(", "))]
    Blocked {
        step: String,
        waiting_for: Vec<String>,
    },
    #[error("step `{step}` is gated: {detail}")]
    Gated { step: String, detail: String },
    #[error("step `{step}` may not run now: `{after}` was done at {since} by {actor}, and running `{step}` again would overwrite what happened since (roll `{after}` back first if that is what you mean)")]
    RunRefusedAfter {
        step: String,
        after: String,
        since: String,
        actor: String,
    },
    #[error("step `{step}` changed since it ran: re-run it by id (`cutover run {step}`) or mark it (`cutover mark {step} done --note ...`)")]
    Changed { step: String },
    #[error("step `{step}` is destructive. {consequence}\nTo run it, type its phrase: --confirm \"{phrase}\"")]
    ConfirmationRequired {
        step: String,
        phrase: String,
        consequence: String,
    },
    #[error(
        "the phrase typed for step `{step}` does not match. Only '{phrase}' will be accepted."
    )]
    ConfirmationMismatch { step: String, phrase: String },
    #[error("step `{step}` is done by hand. {instructions}\nWhen it is done, record it: cutover run {step} --note \"what was done\"")]
    OperatorNoteRequired { step: String, instructions: String },
    #[error("step `{step}` {condition}, and {missing} has no value yet: run the step that produces it first, or settle this one by hand (`cutover mark {step} skipped --note ...`)")]
    ConditionUnknown {
        step: String,
        condition: String,
        missing: String,
    },
    #[error("step `{step}` awaits approval: {detail}")]
    AwaitingApproval { step: String, detail: String },
    #[error("step `{0}` has no `check`")]
    NoCheck(String),
    #[error("a note is required")]
    EmptyNote,
    #[error("rolling back step `{step}` undoes what it did. {consequence}\nTo roll it back, type its phrase: --confirm \"{phrase}\"")]
    RollbackConfirmationRequired {
        step: String,
        phrase: String,
        consequence: String,
    },
    #[error("step `{step}` cannot be rolled back: {why}")]
    RollbackRefused { step: String, why: String },
    #[error(
        "step `{step}` has nothing to undo: {why}. Nothing was run or recorded; it stays done"
    )]
    NothingToUndo { step: String, why: String },
    #[error("steps done after `{step}` rely on it: roll back the chain in this order, each with its own phrase ({}) — or only `{step}` with --only (they will show as needing a re-run)", chain.join(" → "))]
    DependantsDone { step: String, chain: Vec<String> },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

/// What an attempt runs: the step's action (its outputs recorded), its check, or its
/// rollback (through the rollback's tunnel; outputs not recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Run,
    Check,
    Undo,
}

impl Purpose {
    /// "attempt 2", "check", "rollback": what a log's first line and the printer call it.
    pub fn label(self, attempt: u32) -> String {
        match self {
            Purpose::Run => format!("attempt {attempt}"),
            Purpose::Check => "check".to_string(),
            Purpose::Undo => "rollback".to_string(),
        }
    }
}

/// How `mark` sets a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Done,
    Pending,
    Skipped,
}

/// Values for `${...}` at run time: the runbook's vars, resolved secrets, recorded outputs.
struct RunScope<'a> {
    runbook: &'a Runbook,
    secrets: &'a BTreeMap<String, String>,
    journal: &'a JournalState,
}

impl Scope for RunScope<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.runbook.vars.get(name).cloned()
    }
    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned()
    }
    fn output(&self, step: &str, name: &str) -> Option<String> {
        self.journal.step(step)?.outputs.get(name).cloned()
    }
}

/// A scope for showing things: no secret values, outputs as recorded.
pub fn display_scope<'a>(runbook: &'a Runbook, journal: &'a JournalState) -> impl Scope + 'a {
    static NO_SECRETS: BTreeMap<String, String> = BTreeMap::new();
    RunScope {
        runbook,
        secrets: &NO_SECRETS,
        journal,
    }
}

/// Runs steps of one runbook for the driver that holds the lock.
pub struct Engine {
    runbook: Arc<Runbook>,
    workspace: Workspace,
    journal: Journal,
    registry: Registry,
    redactor: Arc<Redactor>,
    subscribers: Vec<Box<dyn Subscriber>>,
    /// Tunnels opened by `aws.tunnel` steps, for the steps that go `via` them.
    tunnels: crate::actions::aws::Tunnels,
    /// Told of each success; what they return is journaled as the step's outputs.
    observers: Vec<Box<dyn Observer>>,
    /// Where approvers post their verdicts (the state's); none: a step that needs approvals
    /// cannot run.
    mailbox: Option<Arc<dyn crate::approval::Mailbox>>,
}

/// Sees each step that succeeded, with the journal as it now stands, and returns outputs to
/// journal for it (the window report's prediction, made when a window opens). The engine runs
/// steps; what is worth recording about them for a report is an observer's concern.
pub trait Observer: Send {
    fn on_success(
        &mut self,
        runbook: &Runbook,
        step: &Step,
        journal: &JournalState,
    ) -> BTreeMap<String, String>;
}

impl Engine {
    pub fn new(
        runbook: Arc<Runbook>,
        workspace: Workspace,
        journal: Journal,
        registry: Registry,
        redactor: Arc<Redactor>,
    ) -> Self {
        Engine {
            runbook,
            workspace,
            journal,
            registry,
            redactor,
            subscribers: Vec::new(),
            tunnels: Default::default(),
            observers: Vec::new(),
            mailbox: None,
        }
    }

    /// Where approvals are read from (the state's mailbox).
    pub fn set_mailbox(&mut self, mailbox: Arc<dyn crate::approval::Mailbox>) {
        self.mailbox = Some(mailbox);
    }

    /// Adds an observer of successes (see [`Observer`]).
    pub fn observe(&mut self, observer: Box<dyn Observer>) {
        self.observers.push(observer);
    }

    pub fn subscribe(&mut self, subscriber: Box<dyn Subscriber>) {
        self.subscribers.push(subscriber);
    }

    pub fn journal(&self) -> &JournalState {
        self.journal.state()
    }

    fn emit(&mut self, event: EngineEvent) {
        for s in &mut self.subscribers {
            s.on_event(&event);
        }
    }

    /// States as this driver sees them: a started step with no end was interrupted, since
    /// this process holds the lock and is not running it.
    pub fn states(&self) -> Vec<StepView<'_>> {
        step_states(
            &self.runbook,
            self.journal.state(),
            false,
            SystemTime::now(),
        )
    }

    fn choose(&self, target: &Target) -> Result<(Step, StepState), EngineError> {
        let views = self.states();
        match target {
            Target::Step(id) => views
                .iter()
                .find(|v| &v.step.id == id)
                .map(|v| (v.step.clone(), v.state.clone()))
                .ok_or_else(|| {
                    let ids: Vec<&str> = self.runbook.steps.iter().map(|s| s.id.as_str()).collect();
                    let hint = ids
                        .iter()
                        .min_by_key(|c| strsim::levenshtein(id, c))
                        .filter(|c| strsim::levenshtein(id, c) <= 3)
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default();
                    EngineError::UnknownStep(id.clone(), hint)
                }),
            Target::Next => {
                if let Some(v) = views.iter().find(|v| v.state.is_actionable()) {
                    return Ok((v.step.clone(), v.state.clone()));
                }
                match views.iter().find(|v| !v.state.is_settled()) {
                    None => Err(EngineError::AllDone),
                    Some(v) => Err(EngineError::NothingReady(format!(
                        "the first unfinished step is `{}` ({})",
                        v.step.id,
                        describe_state(&v.state)
                    ))),
                }
            }
        }
    }

    /// Why a step with `only_if` is not needed now (its value rendered from the journal and
    /// compared), or `None` when it runs. A value that has no value yet is an error: the step
    /// cannot be judged, so it neither runs nor is skipped.
    fn not_needed(
        &self,
        step: &Step,
        condition: &runbook::OnlyIf,
    ) -> Result<Option<String>, EngineError> {
        let scope = display_scope(&self.runbook, self.journal.state());
        let rendered = runbook::Template::parse(&condition.value)
            .map_err(|e| e.message)
            .and_then(|t| t.render(&scope).map_err(|missing| missing.to_string()));
        match rendered {
            Ok(value) if value.value.trim() == condition.equals.trim() => Ok(None),
            Ok(value) => Ok(Some(condition.skip_reason(value.value.trim()))),
            Err(missing) => Err(EngineError::ConditionUnknown {
                step: step.id.clone(),
                condition: condition.describe(),
                missing,
            }),
        }
    }

    /// Whether the step's turn has come: its needs met, its gate passed.
    fn admissible(
        &self,
        step: &Step,
        state: &StepState,
        request: &RunRequest,
    ) -> Result<(), EngineError> {
        match state {
            StepState::Blocked { waiting_for } | StepState::Stale { waiting_for, .. }
                if !waiting_for.is_empty() =>
            {
                return Err(EngineError::Blocked {
                    step: step.id.clone(),
                    waiting_for: waiting_for.clone(),
                })
            }
            StepState::Gated { .. } => {
                return Err(EngineError::Gated {
                    step: step.id.clone(),
                    detail: describe_state(state),
                })
            }
            StepState::Changed if request.target == Target::Next => {
                return Err(EngineError::Changed {
                    step: step.id.clone(),
                })
            }
            _ => {}
        }
        if let Some(after) = &step.refuse_after {
            if let Some(record) = self
                .journal
                .state()
                .step(after)
                .filter(|r| r.status == Recorded::Done)
            {
                return Err(EngineError::RunRefusedAfter {
                    step: step.id.clone(),
                    after: after.clone(),
                    since: record.since.clone(),
                    actor: record.actor.clone(),
                });
            }
        }
        Ok(())
    }

    /// Checks everything that must hold before the step may start.
    fn admit(
        &mut self,
        step: &Step,
        state: &StepState,
        request: &RunRequest,
        preview: Option<String>,
    ) -> Result<(), EngineError> {
        self.admissible(step, state, request)?;
        let needs_note = self
            .registry
            .schema(&step.action.kind)
            .is_some_and(|s| s.needs_operator_note);
        if needs_note && request.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
            let scope = display_scope(&self.runbook, self.journal.state());
            let notes = runbook::Template::parse(&step.notes)
                .map_or_else(|_| step.notes.clone(), |t| t.display(&scope));
            let checklist: Vec<String> = step
                .action
                .params
                .get("checklist")
                .and_then(|c| c.as_array())
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|i| i.as_str())
                        .map(|i| format!("\n  [ ] {i}"))
                        .collect()
                })
                .unwrap_or_default();
            return Err(EngineError::OperatorNoteRequired {
                step: step.id.clone(),
                instructions: format!("{}{}", notes.trim(), checklist.concat()),
            });
        }
        if step.destructive {
            let phrase = step.confirm.clone().unwrap_or_default();
            match request.confirm.as_deref() {
                None => {
                    return Err(EngineError::ConfirmationRequired {
                        step: step.id.clone(),
                        consequence: format!(
                            "{}{}",
                            preview.map_or_else(String::new, |p| format!("It will: {p}\n")),
                            match &step.rollback {
                                Some(r) => format!("Rollback: {}", r.summary()),
                                None => "It cannot be undone.".to_string(),
                            }
                        ),
                        phrase,
                    })
                }
                Some(typed) if typed.trim() != phrase => {
                    return Err(EngineError::ConfirmationMismatch {
                        step: step.id.clone(),
                        phrase,
                    })
                }
                Some(_) => {
                    self.journal
                        .append(Some((&step.id, &step.digest)), Event::Confirmed {})?;
                }
            }
        }
        Ok(())
    }

    /// The approvals `policy` asks of `step`: the requester's identity from STS, the digest
    /// of what will run, every verdict posted verified with STS and judged; new verdicts and
    /// standings recorded, and a request recorded when the approvals are not all in (with
    /// what approvers need to approve it). With break glass, nothing is asked: the reason (and
    /// who, when STS answers) is returned, to be journaled once the phrase is typed.
    async fn approvals(
        &mut self,
        step: &Step,
        policy: &crate::approval::Policy,
        request: &RunRequest,
    ) -> Result<Option<(String, crate::approval::Identity)>, EngineError> {
        use crate::actions::aws::approval as sts;
        use crate::approval::{self as ap, Posted, RecordedDeny};
        let refuse = |detail: String| EngineError::AwaitingApproval {
            step: step.id.clone(),
            detail,
        };
        let settings = self.runbook.aws.clone().unwrap_or_default();
        let session = crate::actions::aws::Session::default();
        if let Some(note) = &request.break_glass {
            if note.trim().is_empty() {
                return Err(EngineError::EmptyNote);
            }
            // Break glass is for when things are broken: who it is, if STS says.
            let who = match session.guard(&settings).await {
                Ok((config, _)) => sts::caller(config).await,
                Err(e) => Err(e),
            }
            .unwrap_or_else(|e| ap::Identity {
                arn: format!("(STS did not say: {e})"),
                user_id: String::new(),
                account: String::new(),
                request_id: String::new(),
            });
            return Ok(Some((note.clone(), who)));
        }
        let config = session
            .guard(&settings)
            .await
            .map_err(|e| refuse(format!("who asks cannot be told: {e}")))?
            .0
            .clone();
        let requester = sts::caller(&config)
            .await
            .map_err(|e| refuse(format!("who asks cannot be told: {e}")))?;
        let params = self
            .render_spec(&step.action)
            .await
            .map_err(|why| refuse(format!("what it will run cannot be said yet {why}")))?;
        let digest = ap::content_digest(&step.id, &step.digest, &step.action.kind, &params);
        let head = self.journal.state().decision_head.clone();
        let mailbox = self.mailbox.clone().ok_or_else(|| {
            refuse("this front end reads no approvals (no state mailbox)".to_string())
        })?;
        let files = mailbox
            .read(&step.id)
            .map_err(|e| refuse(format!("the approvals cannot be read: {e}")))?;
        let endpoint = sts::endpoint_text(&config);
        let mut posted = Vec::new();
        let mut unreadable = Vec::new();
        for (name, bytes) in files {
            match serde_json::from_slice::<Posted>(&bytes) {
                Ok(p) => {
                    let identity = sts::verify(&config, &p.proof, &p.binding.hash()).await;
                    posted.push((p.binding, identity));
                }
                Err(e) => unreadable.push(format!("{name}: {e}")),
            }
        }
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let record = self.journal.state().step(&step.id).cloned();
        let notes = record
            .as_ref()
            .map(|r| r.approvals.as_slice())
            .unwrap_or_default();
        // Denies recorded in force (their latest standing), which no file may lift by going.
        let mut recorded: Vec<RecordedDeny> = Vec::new();
        for note in notes {
            recorded.retain(|d| d.nonce != note.nonce);
            if note.verdict == "deny" && note.standing == "denies" {
                recorded.push(RecordedDeny {
                    nonce: note.nonce.clone(),
                    arn: note.by_arn.clone(),
                    user_id: note.by_user_id.clone(),
                });
            }
        }
        let account = settings
            .account_id
            .clone()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| requester.account.clone());
        let tally = ap::tally(
            policy,
            posted,
            &recorded,
            &ap::Request {
                step: &step.id,
                requester: &requester.principal(),
                account: &account,
                digest: &digest,
                head: &head,
                now_ms,
            },
        );
        // Each verdict into the journal when first read and when its standing changes.
        for c in &tally.considered {
            let standing = c.standing.text();
            let known = notes
                .iter()
                .rev()
                .find(|n| n.nonce == c.binding.nonce)
                .is_some_and(|n| n.standing == standing);
            if known {
                continue;
            }
            let (arn, user_id, request_id) = match &c.identity {
                Ok(i) => (i.arn.as_str(), i.user_id.as_str(), i.request_id.as_str()),
                Err(_) => ("", "", ""),
            };
            self.journal.append(
                Some((&step.id, &step.digest)),
                Event::ApprovalConsidered {
                    verdict: c.binding.verdict.as_str().into(),
                    nonce: c.binding.nonce.as_str().into(),
                    by_arn: arn.into(),
                    by_user_id: user_id.into(),
                    sts_request_id: request_id.into(),
                    sts_endpoint: endpoint.as_str().into(),
                    by_actor: c.binding.actor.as_str().into(),
                    digest: c.binding.digest.as_str().into(),
                    signed_at_ms: c.binding.signed_at_ms,
                    expires_at_ms: c.binding.expires_at_ms,
                    note: c.binding.note.as_str().into(),
                    standing: standing.as_str().into(),
                },
            )?;
        }
        if tally.allows() {
            let names: Vec<String> = tally.counted().map(|c| c.who()).collect();
            self.emit(EngineEvent::Log {
                step: step.id.clone(),
                stream: crate::actions::Stream::Info,
                line: format!("approved by {} for digest {digest}", names.join(", ")),
            });
            return Ok(None);
        }
        let asked = record
            .as_ref()
            .and_then(|r| r.approval_request.as_ref())
            .is_some_and(|r| r.digest == digest && r.head == head);
        if !asked {
            let what = self.describe_spec(&step.action).await;
            self.journal.append(
                Some((&step.id, &step.digest)),
                Event::ApprovalRequested {
                    digest: digest.as_str().into(),
                    what: what.as_str().into(),
                    head: head.as_str().into(),
                    required: policy.count,
                    by_arn: requester.arn.as_str().into(),
                    by_user_id: requester.user_id.as_str().into(),
                    sts_request_id: requester.request_id.as_str().into(),
                },
            )?;
        }
        let mut detail = tally.describe();
        for u in unreadable {
            detail.push_str(&format!("\n- not an approval, left out: {u}"));
        }
        detail.push_str(&format!(
            "\nAsked by {} for digest {digest}. A second operator approves it from their own terminal, with their own AWS credentials:\n  cutover approve {} --digest {digest}\nor refuses it: cutover deny {} --note \"why\". Then run it again.",
            requester.arn, step.id, step.id
        ));
        Err(refuse(detail))
    }

    /// Whether a step's approvals are in, for a front end that asks for the phrase only after
    /// they are: the same check a run makes (a request recorded when they are not), `Err` with
    /// what stands and what is missing. A step that needs none: `Ok`.
    pub async fn approvals_in(&mut self, id: &str) -> Result<(), String> {
        let Some(step) = self.runbook.step(id).cloned() else {
            return Err(format!("no step `{id}`"));
        };
        let Some(policy) = self.runbook.approval_policy(&step) else {
            return Ok(());
        };
        let request = RunRequest::new(Target::Step(id.to_string()));
        match self.approvals(&step, &policy, &request).await {
            Ok(_) => Ok(()),
            Err(EngineError::AwaitingApproval { detail, .. }) => Err(detail),
            Err(e) => Err(e.to_string()),
        }
    }

    /// What a step will do, with its secrets and outputs filled in and then masked: for a
    /// database step, the hosts and databases it will touch. Read for the confirmation of a
    /// destructive step, before the operator types its phrase.
    pub async fn preview(&mut self, id: &str) -> Result<String, String> {
        let step = self
            .runbook
            .step(id)
            .ok_or_else(|| format!("no step `{id}`"))?
            .clone();
        Ok(self.describe_spec(&step.action).await)
    }

    /// An action as it will run: its secrets read, then masked.
    async fn describe_spec(&mut self, spec: &runbook::ActionSpec) -> String {
        let Some(action) = self.registry.get(&spec.kind) else {
            return format!("unknown action kind `{}`", spec.kind);
        };
        match self.render_spec(spec).await {
            Ok(params) => self.redactor.redact(&action.describe(&params)).into_owned(),
            Err(why) => why,
        }
    }

    /// An action's parameters as it will get them (secrets read), or why they cannot be yet.
    async fn render_spec(
        &mut self,
        spec: &runbook::ActionSpec,
    ) -> Result<serde_json::Value, String> {
        let secrets = secrets::resolve(&self.runbook, &runbook::secrets_used(spec), &self.redactor)
            .await
            .map_err(|reason| {
                format!(
                    "(cannot say which target yet: {})",
                    self.redactor.redact(&reason)
                )
            })?;
        let scope = RunScope {
            runbook: &self.runbook,
            secrets: &secrets,
            journal: self.journal.state(),
        };
        runbook::render_params(spec, &scope)
            .map(|(params, _)| params)
            .map_err(|missing| format!("(cannot say yet: {missing} has no value)"))
    }

    /// Why a rollback action would change nothing, when its parameters alone say so.
    async fn nothing_to_undo(&mut self, spec: &runbook::ActionSpec) -> Option<String> {
        let action = self.registry.get(&spec.kind)?;
        let params = self.render_spec(spec).await.ok()?;
        action
            .nothing_to_undo(&params)
            .map(|why| self.redactor.redact(&why).into_owned())
    }

    /// Runs a step (or its check) to its end, through its retries; then closes the tunnels
    /// no unfinished step needs any more.
    pub async fn run(&mut self, request: RunRequest) -> Result<RunResult, EngineError> {
        let result = self.run_step(request).await;
        self.close_unneeded_tunnels().await;
        result
    }

    async fn run_step(&mut self, request: RunRequest) -> Result<RunResult, EngineError> {
        self.workspace.ensure()?;
        let (step, state) = self.choose(&request.target)?;
        if request.check_only {
            return self.check(&step, &request).await;
        }
        if let Some(condition) = &step.only_if {
            // Its turn has come (needs met, gate passed): the condition decides before the
            // operator is asked for anything.
            self.admissible(&step, &state, &request)?;
            if let Some(reason) = self.not_needed(&step, condition)? {
                self.journal.append(
                    Some((&step.id, &step.digest)),
                    Event::Skipped {
                        note: reason.as_str().into(),
                    },
                )?;
                self.emit(EngineEvent::Log {
                    step: step.id.clone(),
                    stream: crate::actions::Stream::Info,
                    line: reason.clone(),
                });
                let outcome = Outcome::Succeeded {
                    note: Some(format!("{SKIPPED}{reason}")),
                };
                self.emit(EngineEvent::StepFinished {
                    step: step.id.clone(),
                    attempt: 0,
                    outcome: outcome.clone(),
                });
                return Ok(RunResult {
                    step: step.id.clone(),
                    attempt: 0,
                    outcome,
                });
            }
        }
        // A second operator's approval before the phrase is even asked for.
        let mut break_glass = None;
        if let Some(policy) = self.runbook.approval_policy(&step) {
            self.admissible(&step, &state, &request)?;
            break_glass = self.approvals(&step, &policy, &request).await?;
        }
        // The confirmation names what the step will touch (for a copy: the target's host and
        // database), with its secrets read as the run itself would read them.
        let preview = if step.destructive && request.confirm.is_none() {
            Some(self.describe_spec(&step.action).await)
        } else {
            None
        };
        self.admit(&step, &state, &request, preview)?;
        // Recorded only once the phrase is typed: the run happens.
        if let Some((note, who)) = break_glass {
            self.journal.append(
                Some((&step.id, &step.digest)),
                Event::BreakGlass {
                    note: note.as_str().into(),
                    by_arn: who.arn.as_str().into(),
                    by_user_id: who.user_id.as_str().into(),
                },
            )?;
            self.emit(EngineEvent::Log {
                step: step.id.clone(),
                stream: crate::actions::Stream::Stderr,
                line: format!(
                    "break glass: run without its approvals, by {} — recorded for review",
                    who.arn
                ),
            });
        }
        let attempts = step.retries + 1;
        let mut n = 0;
        loop {
            let attempt = self
                .journal
                .state()
                .step(&step.id)
                .map_or(0, |r| r.attempts)
                + 1;
            let log = crate::workspace::Workspace::log_relative(&step.id, attempt);
            self.journal.append(
                Some((&step.id, &step.digest)),
                Event::Started {
                    attempt,
                    log: log.as_str().into(),
                },
            )?;
            let outcome = self
                .attempt(&step, &step.action, attempt, &log, &request, Purpose::Run)
                .await?;
            let event = match &outcome {
                Outcome::Succeeded { note } => Event::Succeeded {
                    attempt,
                    note: note
                        .clone()
                        .or_else(|| request.note.clone())
                        .map(Into::into),
                },
                Outcome::Failed { reason, exit_code } => Event::Failed {
                    attempt,
                    reason: reason.as_str().into(),
                    exit_code: *exit_code,
                },
                Outcome::Cancelled => Event::Failed {
                    attempt,
                    reason: "cancelled".into(),
                    exit_code: None,
                },
            };
            self.journal.append(Some((&step.id, &step.digest)), event)?;
            if let Outcome::Succeeded { .. } = outcome {
                self.record_observations(&step)?;
            }
            self.emit(EngineEvent::StepFinished {
                step: step.id.clone(),
                attempt,
                outcome: outcome.clone(),
            });
            n += 1;
            if !matches!(outcome, Outcome::Failed { .. }) || n >= attempts {
                return Ok(RunResult {
                    step: step.id.clone(),
                    attempt,
                    outcome,
                });
            }
            {
                if let Outcome::Failed { reason, .. } = &outcome {
                    self.emit(EngineEvent::Retrying {
                        step: step.id.clone(),
                        attempt: attempt + 1,
                        delay: step.retry_delay,
                        reason: reason.clone(),
                    });
                }
                tokio::select! {
                    () = tokio::time::sleep(step.retry_delay) => {}
                    () = request.cancel.cancelled() => {
                        return Ok(RunResult { step: step.id.clone(), attempt, outcome: Outcome::Cancelled });
                    }
                }
            }
        }
    }

    async fn check(&mut self, step: &Step, request: &RunRequest) -> Result<RunResult, EngineError> {
        let Some(check) = step.check.clone() else {
            return Err(EngineError::NoCheck(step.id.clone()));
        };
        let n = self.journal.state().lines + 1;
        let log = Workspace::check_log_relative(&step.id, n);
        let outcome = self
            .attempt(step, &check, 0, &log, request, Purpose::Check)
            .await?;
        let (holds, detail) = match &outcome {
            Outcome::Succeeded { note } => (
                true,
                note.clone().unwrap_or_else(|| "the check passed".into()),
            ),
            Outcome::Failed { reason, .. } => (false, reason.clone()),
            Outcome::Cancelled => (false, "cancelled".to_string()),
        };
        self.journal.append(
            Some((&step.id, &step.digest)),
            Event::Checked {
                holds,
                detail: detail.into(),
                log: log.into(),
            },
        )?;
        self.emit(EngineEvent::StepFinished {
            step: step.id.clone(),
            attempt: 0,
            outcome: outcome.clone(),
        });
        Ok(RunResult {
            step: step.id.clone(),
            attempt: 0,
            outcome,
        })
    }

    /// One attempt of an action: secrets, parameters, the action itself, its events.
    async fn attempt(
        &mut self,
        step: &Step,
        spec: &ActionSpec,
        attempt: u32,
        log: &str,
        request: &RunRequest,
        purpose: Purpose,
    ) -> Result<Outcome, EngineError> {
        let record_outputs = purpose == Purpose::Run;
        // Buffered, and flushed whenever the action falls quiet: a watcher reading the file is
        // never more than a burst behind, and a log storm is not a syscall per line.
        let mut log_file = std::io::BufWriter::new(self.workspace.create_log(log)?);
        let log_path = self.workspace.resolve(log);
        let Some(action) = self.registry.get(&spec.kind) else {
            return Ok(Outcome::failed(format!(
                "unknown action kind `{}`",
                spec.kind
            )));
        };
        let secrets =
            match secrets::resolve(&self.runbook, &runbook::secrets_used(spec), &self.redactor)
                .await
            {
                Ok(s) => s,
                Err(reason) => {
                    let reason = self.redactor.redact(&reason).into_owned();
                    let _ = writeln!(log_file, "» {reason}");
                    return Ok(Outcome::failed(reason));
                }
            };
        let rendered = {
            let scope = RunScope {
                runbook: &self.runbook,
                secrets: &secrets,
                journal: self.journal.state(),
            };
            runbook::render_params(spec, &scope)
        };
        let (params, shown) = match rendered {
            Ok(p) => p,
            Err(missing) => {
                let reason =
                    format!("{missing} has no value yet (has the step that produces it run?)");
                let _ = writeln!(log_file, "» {reason}");
                return Ok(Outcome::failed(reason));
            }
        };
        let described = self.redactor.redact(&action.describe(&shown)).into_owned();
        let _ = writeln!(
            log_file,
            "» {} attempt {attempt} by {} at {}: {described}",
            step.id,
            self.journal.actor(),
            crate::clock::now_rfc3339()
        );
        self.emit(EngineEvent::StepStarted {
            step: step.id.clone(),
            attempt,
            purpose,
            log: log_path.clone(),
            action: described,
        });

        // The step's time limit counts from here: opening its tunnel is part of it.
        let deadline = step.timeout.map(|t| tokio::time::Instant::now() + t);
        let cancel = request.cancel.child_token();
        // A step that goes through a tunnel gets it open and alive, or does not start.
        let mut forwards = Vec::new();
        if let (Some(via), true) = (&step.via, purpose != Purpose::Check) {
            let opened = {
                let opening = self.ensure_tunnel(via, &log_path, &mut log_file, &cancel);
                tokio::pin!(opening);
                tokio::select! {
                    opened = &mut opening => opened,
                    () = sleep_until(deadline) => {
                        cancel.cancel();
                        let limit = step
                            .timeout
                            .map(|t| humantime::format_duration(t).to_string())
                            .unwrap_or_default();
                        // It stops within the grace; what it opened late is closed with the
                        // tunnels no step needs.
                        let _ = tokio::time::timeout(CANCEL_GRACE, &mut opening).await;
                        Err(format!("timed out after {limit} while it was being opened"))
                    }
                }
            };
            match opened {
                Ok(forward) => {
                    let _ = writeln!(
                        log_file,
                        "» through the tunnel `{via}`: {}:{} is reached on {}",
                        forward.host, forward.port, forward.local
                    );
                    forwards.push(forward);
                }
                Err(reason) => {
                    let reason = self.redactor.redact(&reason).into_owned();
                    let reason = format!("the tunnel `{via}` could not be opened: {reason}");
                    let _ = writeln!(log_file, "» {reason}");
                    return Ok(if request.cancel.is_cancelled() {
                        Outcome::Cancelled
                    } else {
                        Outcome::failed(reason)
                    });
                }
            }
        }
        let (tx, mut rx) = mpsc::channel(1024);
        let context = ActionContext {
            step: step.id.clone(),
            params,
            cancel: cancel.clone(),
            report: Reporter::new(tx),
            work_dir: self.runbook.base_dir(),
            outputs_file: log_path.with_extension("outputs"),
            operator_note: request.note.clone(),
            aws: self.runbook.aws.clone().unwrap_or_default(),
            recorded: self
                .journal
                .state()
                .steps
                .iter()
                .filter(|(_, r)| !r.outputs.is_empty())
                .map(|(id, r)| (id.clone(), r.outputs.clone()))
                .collect(),
            forwards,
            tunnels: self.tunnels.clone(),
        };
        let mut task = tokio::spawn(async move { action.run(context).await });
        let mut timed_out = false;
        // Set once cancelled: past it the action is aborted, whether it honours the token or not.
        let mut abort_at: Option<tokio::time::Instant> = None;
        let mut aborted = false;
        let mut outputs = BTreeMap::new();
        let joined = loop {
            let delivered = tokio::select! {
                biased;
                event = rx.recv() => match event {
                    Some(event) => {
                        let delivered =
                            self.deliver(step, event, &mut log_file, &mut outputs, record_outputs);
                        if rx.is_empty() {
                            let _ = log_file.flush();
                        }
                        delivered
                    }
                    None => break (&mut task).await,
                },
                joined = &mut task => {
                    // Drain what the action sent before it returned.
                    let mut delivered = Ok(());
                    while let Ok(event) = rx.try_recv() {
                        delivered = delivered.and_then(|()| {
                            self.deliver(step, event, &mut log_file, &mut outputs, record_outputs)
                        });
                    }
                    delivered?;
                    break joined;
                }
                () = sleep_until(deadline), if !timed_out => {
                    timed_out = true;
                    cancel.cancel();
                    Ok(())
                }
                () = cancel.cancelled(), if abort_at.is_none() => {
                    abort_at = Some(tokio::time::Instant::now() + CANCEL_GRACE);
                    Ok(())
                }
                () = sleep_until(abort_at), if abort_at.is_some() && !aborted => {
                    aborted = true;
                    task.abort();
                    let _ = writeln!(
                        log_file,
                        "» the action did not stop within {:.1}s of being cancelled: aborted (its connections closed, its child processes killed)",
                        CANCEL_GRACE.as_secs_f64()
                    );
                    Ok(())
                }
            };
            if let Err(e) = delivered {
                // The journal cannot record what the action does: it does not go on unsupervised.
                cancel.cancel();
                task.abort();
                return Err(e);
            }
        };
        let mut outcome = joined.unwrap_or_else(|e| {
            if e.is_cancelled() {
                Outcome::Cancelled
            } else {
                Outcome::failed(format!("the action stopped unexpectedly: {e}"))
            }
        });
        if timed_out {
            let limit = step
                .timeout
                .map(|t| humantime::format_duration(t).to_string())
                .unwrap_or_default();
            outcome = Outcome::failed(format!("timed out after {limit}"));
        }
        if let Outcome::Succeeded { .. } = outcome {
            if record_outputs {
                if let Some(missing) = step.outputs.iter().find(|o| !outputs.contains_key(*o)) {
                    outcome = Outcome::failed(format!(
                        "declared output `{missing}` was not produced (a shell step writes `{missing}=VALUE` to $CUTOVER_OUTPUT)"
                    ));
                }
            }
        }
        if let Outcome::Failed { reason, exit_code } = &outcome {
            outcome = Outcome::Failed {
                reason: self.redactor.redact(reason).into_owned(),
                exit_code: *exit_code,
            };
        }
        let _ = writeln!(log_file, "» {}", describe_outcome(&outcome));
        let _ = log_file.flush();
        Ok(outcome)
    }

    /// The forward of the tunnel step `id`: the open one when it still answers, else a new
    /// one (its action run again, its lines in this step's log).
    async fn ensure_tunnel(
        &mut self,
        id: &str,
        log_path: &std::path::Path,
        log_file: &mut impl Write,
        cancel: &CancellationToken,
    ) -> Result<crate::actions::Forward, String> {
        if let Some(mut open) = self.tunnels.take(id) {
            if open.alive().await {
                let forward = open.forward.clone();
                self.tunnels.park(id, open);
                return Ok(forward);
            }
            let _ = writeln!(log_file, "» the tunnel `{id}` dropped: opening it again");
            open.close().await;
        } else {
            let _ = writeln!(log_file, "» opening the tunnel `{id}`");
        }
        let step = self
            .runbook
            .step(id)
            .cloned()
            .ok_or_else(|| format!("no step `{id}`"))?;
        let action = self
            .registry
            .get(&step.action.kind)
            .ok_or_else(|| format!("unknown action kind `{}`", step.action.kind))?;
        let secrets = secrets::resolve(
            &self.runbook,
            &runbook::secrets_used(&step.action),
            &self.redactor,
        )
        .await?;
        let params = {
            let scope = RunScope {
                runbook: &self.runbook,
                secrets: &secrets,
                journal: self.journal.state(),
            };
            runbook::render_params(&step.action, &scope)
                .map_err(|missing| format!("{missing} has no value yet"))?
                .0
        };
        let (tx, mut rx) = mpsc::channel(256);
        let context = ActionContext {
            step: id.to_string(),
            params,
            cancel: cancel.child_token(),
            report: Reporter::new(tx),
            work_dir: self.runbook.base_dir(),
            outputs_file: log_path.with_extension("tunnel"),
            operator_note: None,
            aws: self.runbook.aws.clone().unwrap_or_default(),
            recorded: BTreeMap::new(),
            forwards: Vec::new(),
            tunnels: self.tunnels.clone(),
        };
        let task = tokio::spawn(async move { action.run(context).await });
        // Every line it says goes to this step's log: the channel closes when it is done.
        while let Some(event) = rx.recv().await {
            match event {
                ActionEvent::Log { line, .. } => {
                    let _ = writeln!(log_file, "» tunnel: {}", self.redactor.redact(&line));
                }
                ActionEvent::Recorded(ack) => ack.answer(),
                _ => {}
            }
        }
        let outcome = task.await;
        match outcome {
            Ok(Outcome::Succeeded { .. }) => self
                .tunnels
                .forward(id)
                .ok_or_else(|| format!("step `{id}` opened no tunnel")),
            Ok(Outcome::Failed { reason, .. }) => Err(reason),
            Ok(Outcome::Cancelled) => Err("cancelled".into()),
            Err(e) => Err(format!("the tunnel's action stopped unexpectedly: {e}")),
        }
    }

    /// What the observers want journaled about a step that succeeded.
    fn record_observations(&mut self, step: &Step) -> Result<(), EngineError> {
        let mut values = BTreeMap::new();
        for observer in &mut self.observers {
            values.extend(observer.on_success(&self.runbook, step, self.journal.state()));
        }
        if values.is_empty() {
            return Ok(());
        }
        self.journal
            .append(Some((&step.id, &step.digest)), Event::Outputs { values })?;
        Ok(())
    }

    /// Closes each open tunnel that no unfinished step goes through any more.
    pub async fn close_unneeded_tunnels(&mut self) {
        for id in self.tunnels.open() {
            let needed = self.runbook.steps.iter().any(|s| {
                s.via.as_deref() == Some(id.as_str())
                    && !self
                        .journal
                        .state()
                        .step(&s.id)
                        .is_some_and(|r| matches!(r.status, Recorded::Done | Recorded::Skipped))
            });
            if !needed {
                if let Some(open) = self.tunnels.take(&id) {
                    open.close().await;
                }
            }
        }
    }

    /// Closes every tunnel (the operator quits, or the command is over).
    pub async fn close_tunnels(&mut self) {
        for id in self.tunnels.open() {
            if let Some(open) = self.tunnels.take(&id) {
                open.close().await;
            }
        }
    }

    /// Redacts an action event, writes it to the step log and the journal, and tells subscribers.
    fn deliver(
        &mut self,
        step: &Step,
        event: ActionEvent,
        log_file: &mut impl Write,
        outputs: &mut BTreeMap<String, String>,
        record_outputs: bool,
    ) -> Result<(), EngineError> {
        let event = match event {
            ActionEvent::Log { stream, line } => {
                let line = self.redactor.redact(&line).into_owned();
                let _ = match stream {
                    Stream::Info => writeln!(log_file, "» {line}"),
                    _ => writeln!(log_file, "{line}"),
                };
                EngineEvent::Log {
                    step: step.id.clone(),
                    stream,
                    line,
                }
            }
            ActionEvent::Progress(progress) => EngineEvent::Progress {
                step: step.id.clone(),
                progress,
            },
            ActionEvent::Output { name, value } => {
                let value = self.redactor.redact(&value).into_owned();
                let _ = writeln!(log_file, "» output {name} = {value}");
                if record_outputs {
                    self.journal.append(
                        Some((&step.id, &step.digest)),
                        Event::Outputs {
                            values: [(name.clone(), value.clone())].into(),
                        },
                    )?;
                }
                outputs.insert(name.clone(), value.clone());
                EngineEvent::Output {
                    step: step.id.clone(),
                    name,
                    value,
                }
            }
            ActionEvent::Recorded(ack) => {
                // Events are handled in order and the journal's appends are synced: all
                // before this one are on record.
                ack.answer();
                return Ok(());
            }
        };
        self.emit(event);
        Ok(())
    }

    /// Sets a step's state by hand, with the operator's note.
    pub fn mark(&mut self, id: &str, mark: Mark, note: &str) -> Result<(), EngineError> {
        self.workspace.ensure()?;
        let (step, _) = self.choose(&Target::Step(id.to_string()))?;
        let note = note.trim();
        if note.is_empty() {
            return Err(EngineError::EmptyNote);
        }
        let note = note.to_string();
        let event = match mark {
            Mark::Done => Event::MarkedDone { note: note.into() },
            Mark::Pending => Event::Reset { note: note.into() },
            Mark::Skipped => Event::Skipped { note: note.into() },
        };
        self.journal.append(Some((&step.id, &step.digest)), event)?;
        Ok(())
    }

    /// Adds a free note to the journal, about a step or the migration.
    pub fn note(&mut self, step: Option<&str>, text: &str) -> Result<(), EngineError> {
        let step = match step {
            Some(id) => Some(self.choose(&Target::Step(id.to_string()))?.0),
            None => None,
        };
        self.journal.append(
            step.as_ref().map(|s| (s.id.as_str(), s.digest.as_str())),
            Event::Note { text: text.into() },
        )?;
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One line on an outcome, as logs and the terminal show it.
/// How the note of a step skipped by its `only_if` begins (the outcome a run reports for it).
pub const SKIPPED: &str = "skipped — ";

pub fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Succeeded { note: Some(note) } if note.starts_with(SKIPPED) => note.clone(),
        Outcome::Succeeded { note: Some(note) } => format!("succeeded: {note}"),
        Outcome::Succeeded { note: None } => "succeeded".to_string(),
        Outcome::Failed { reason, .. } => format!("failed: {reason}"),
        Outcome::Cancelled => "cancelled".to_string(),
    }
}

/// One line on a state, with what it waits for.
pub fn describe_state(state: &StepState) -> String {
    match state {
        StepState::Blocked { waiting_for } => format!("waiting for {}", waiting_for.join(", ")),
        StepState::Gated {
            after,
            remaining: Some(left),
        } => format!("{} left of the wait after `{after}`", short_duration(*left)),
        StepState::Gated {
            after,
            remaining: None,
        } => format!("opens only after `{after}` is done"),
        StepState::Failed { reason } => format!("failed: {reason}"),
        StepState::Stale {
            rolled_back,
            waiting_for,
        } if waiting_for.is_empty() => {
            format!("needs re-run: `{rolled_back}` was rolled back after it was done")
        }
        StepState::Stale {
            rolled_back,
            waiting_for,
        } => format!(
            "needs re-run (`{rolled_back}` was rolled back after it was done), after {}",
            waiting_for.join(", ")
        ),
        other => other.label().to_string(),
    }
}
