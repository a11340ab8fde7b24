//! The state of every step, folded from the journal's lines. There is no other state.

use std::collections::{BTreeMap, HashMap};

use super::event::{Event, Record};

/// The parts of a line the fold needs, borrowed from wherever the line lives.
#[derive(Debug, Clone, Copy)]
pub struct LineMeta<'a> {
    pub seq: u64,
    pub time: &'a str,
    pub actor: &'a str,
    pub step: Option<&'a str>,
    pub step_digest: Option<&'a str>,
}

impl<'a> From<&'a Record<Event<'_>>> for LineMeta<'a> {
    fn from(record: &'a Record<Event<'_>>) -> Self {
        LineMeta {
            seq: record.seq,
            time: &record.time,
            actor: &record.actor,
            step: record.step.as_deref(),
            step_digest: record.step_digest.as_deref(),
        }
    }
}

/// What the journal says of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Pending,
    /// Started with no end yet: running if its driver is alive, otherwise interrupted.
    Started,
    Done,
    Failed,
    Skipped,
    /// Its rollback ran: its effect is undone, and it may run again as a fresh attempt.
    RolledBack,
}

/// Everything the journal knows about one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub status: Recorded,
    /// How many attempts were started, across resets.
    pub attempts: u32,
    /// When and by whom `status` was last set.
    pub since: String,
    pub actor: String,
    /// The step's definition digest when `status` was last set.
    pub step_digest: String,
    /// Why it failed, or the note it was marked or skipped with.
    pub detail: Option<String>,
    pub exit_code: Option<i32>,
    /// When it last became done; gates count from here.
    pub done_at: Option<String>,
    /// Outputs, latest value for each name.
    pub outputs: BTreeMap<String, String>,
    /// Who typed the confirmation phrase, and when.
    pub confirmed: Option<(String, String)>,
    /// When the latest attempt started.
    pub started_at: Option<String>,
    /// How long the attempt that last succeeded took (its start to its success).
    pub last_duration: Option<std::time::Duration>,
    /// When it was last rolled back: steps done before that which need it must run again.
    pub rolled_back_at: Option<String>,
    /// A rollback started and has not ended (its driver may have died in it).
    pub rolling_back: bool,
    /// The latest request for approvals, every verdict recorded, every break-glass run.
    pub approval_request: Option<ApprovalRequest>,
    pub approvals: Vec<ApprovalNote>,
    pub break_glass: Vec<BreakGlassNote>,
}

impl StepRecord {
    fn new(line: &LineMeta<'_>) -> Self {
        StepRecord {
            status: Recorded::Pending,
            attempts: 0,
            since: line.time.to_string(),
            actor: line.actor.to_string(),
            step_digest: line.step_digest.unwrap_or_default().to_string(),
            detail: None,
            exit_code: None,
            done_at: None,
            outputs: BTreeMap::new(),
            confirmed: None,
            started_at: None,
            last_duration: None,
            rolled_back_at: None,
            rolling_back: false,
            approval_request: None,
            approvals: Vec::new(),
            break_glass: Vec::new(),
        }
    }
}

/// The last thing that happened, for "last activity by ..." lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub time: String,
    pub actor: String,
    pub step: Option<String>,
    pub event: &'static str,
}

/// The fold of a journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalState {
    pub steps: HashMap<String, StepRecord>,
    /// Lines folded so far.
    pub lines: u64,
    /// Hash of the last line, the `prev` of the next.
    pub last_hash: String,
    /// Hash of the last line that was not bookkeeping (approvals, notes): what an approval
    /// binds to.
    pub decision_head: String,
    pub last_activity: Option<Activity>,
}

impl JournalState {
    pub fn new() -> Self {
        JournalState {
            last_hash: super::event::GENESIS.to_string(),
            decision_head: super::event::GENESIS.to_string(),
            ..Default::default()
        }
    }

    pub fn step(&self, id: &str) -> Option<&StepRecord> {
        self.steps.get(id)
    }

    /// Records the last line's time, actor and event, for "last activity" lines.
    pub fn set_last_activity(&mut self, line: &LineMeta<'_>, event: &Event<'_>) {
        self.last_activity = Some(Activity {
            time: line.time.to_string(),
            actor: line.actor.to_string(),
            step: line.step.map(str::to_string),
            event: event.name(),
        });
    }

    /// Folds one more line into the state (all but `last_activity`, which is set once at the
    /// end of a replay: it is the hot path of reading a long journal).
    /// The caller keeps `last_hash`.
    pub fn apply(&mut self, line: &LineMeta<'_>, event: &Event<'_>) {
        self.lines = line.seq;
        let Some(step) = line.step else {
            return;
        };
        // One lookup on the hot path; a step's first line pays for a second.
        let entry = match self.steps.get_mut(step) {
            Some(entry) => entry,
            None => self
                .steps
                .entry(step.to_string())
                .or_insert_with(|| StepRecord::new(line)),
        };
        let set_status = |entry: &mut StepRecord, status: Recorded, detail: Option<String>| {
            entry.status = status;
            entry.since.clear();
            entry.since.push_str(line.time);
            entry.actor.clear();
            entry.actor.push_str(line.actor);
            entry.step_digest.clear();
            entry
                .step_digest
                .push_str(line.step_digest.unwrap_or_default());
            entry.detail = detail;
            entry.exit_code = None;
            if status == Recorded::Done {
                let done_at = entry.done_at.get_or_insert_with(String::new);
                done_at.clear();
                done_at.push_str(line.time);
            }
        };
        match event {
            Event::Started { attempt, .. } => {
                entry.attempts = entry.attempts.max(*attempt);
                set_status(entry, Recorded::Started, None);
                entry.started_at = Some(line.time.to_string());
            }
            Event::Outputs { values } => {
                entry
                    .outputs
                    .extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Event::Succeeded { note, .. } => {
                if let Some(started) = entry.started_at.as_deref() {
                    entry.last_duration = super::parse_time(line.time)
                        .zip(super::parse_time(started))
                        .and_then(|(end, start)| end.duration_since(start).ok());
                }
                set_status(entry, Recorded::Done, note.as_deref().map(str::to_string))
            }
            Event::Failed {
                reason, exit_code, ..
            } => {
                set_status(entry, Recorded::Failed, Some(reason.to_string()));
                entry.exit_code = *exit_code;
            }
            Event::Checked { holds, detail, .. } => {
                if *holds {
                    set_status(entry, Recorded::Done, Some(format!("check: {detail}")));
                }
            }
            Event::Confirmed {} => {
                entry.confirmed = Some((line.actor.to_string(), line.time.to_string()));
            }
            Event::MarkedDone { note } => set_status(entry, Recorded::Done, Some(note.to_string())),
            Event::Skipped { note } => set_status(entry, Recorded::Skipped, Some(note.to_string())),
            Event::Reset { note } => {
                set_status(entry, Recorded::Pending, Some(note.to_string()));
                entry.done_at = None;
                entry.confirmed = None;
            }
            Event::RollbackStarted { .. } => entry.rolling_back = true,
            Event::RolledBack { note } => {
                set_status(entry, Recorded::RolledBack, Some(note.to_string()));
                entry.rolled_back_at = Some(line.time.to_string());
                entry.rolling_back = false;
                entry.done_at = None;
                entry.confirmed = None;
            }
            Event::RollbackFailed { reason } => {
                entry.rolling_back = false;
                entry.detail = Some(format!("rollback failed: {reason}"));
            }
            Event::Note { .. } | Event::Progress { .. } => {}
            Event::ApprovalRequested {
                digest,
                what,
                head,
                required,
                by_arn,
                by_user_id,
                ..
            } => {
                entry.approval_request = Some(ApprovalRequest {
                    step_digest: line.step_digest.unwrap_or_default().to_string(),
                    digest: digest.to_string(),
                    what: what.to_string(),
                    head: head.to_string(),
                    required: *required,
                    by_arn: by_arn.to_string(),
                    by_user_id: by_user_id.to_string(),
                    actor: line.actor.to_string(),
                    time: line.time.to_string(),
                });
            }
            Event::ApprovalConsidered {
                verdict,
                nonce,
                by_arn,
                by_user_id,
                sts_request_id,
                sts_endpoint,
                by_actor,
                digest,
                note,
                standing,
                ..
            } => entry.approvals.push(ApprovalNote {
                verdict: verdict.to_string(),
                nonce: nonce.to_string(),
                by_arn: by_arn.to_string(),
                by_user_id: by_user_id.to_string(),
                sts_request_id: sts_request_id.to_string(),
                sts_endpoint: sts_endpoint.to_string(),
                by_actor: by_actor.to_string(),
                digest: digest.to_string(),
                note: note.to_string(),
                standing: standing.to_string(),
                time: line.time.to_string(),
            }),
            Event::BreakGlass { note, by_arn, .. } => entry.break_glass.push(BreakGlassNote {
                actor: line.actor.to_string(),
                by_arn: by_arn.to_string(),
                note: note.to_string(),
                time: line.time.to_string(),
            }),
        }
    }
}

/// The latest request for approvals of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    /// The step's definition digest when it was asked.
    pub step_digest: String,
    pub digest: String,
    pub what: String,
    pub head: String,
    pub required: u32,
    pub by_arn: String,
    pub by_user_id: String,
    pub actor: String,
    pub time: String,
}

/// A verdict as the driver recorded it (`ApprovalConsidered`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalNote {
    pub verdict: String,
    pub nonce: String,
    pub by_arn: String,
    pub by_user_id: String,
    pub sts_request_id: String,
    pub sts_endpoint: String,
    pub by_actor: String,
    pub digest: String,
    pub note: String,
    pub standing: String,
    pub time: String,
}

/// A run without its approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassNote {
    pub actor: String,
    pub by_arn: String,
    pub note: String,
    pub time: String,
}
