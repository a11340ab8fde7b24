//! The state of every step, folded from the journal's lines. There is no other state.

use std::collections::{BTreeMap, HashMap};

use super::event::{Event, Record};

/// What the journal says of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Pending,
    /// Started with no end yet: running if its driver is alive, otherwise interrupted.
    Started,
    Done,
    Failed,
    Skipped,
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
}

impl StepRecord {
    fn new(record: &Record) -> Self {
        StepRecord {
            status: Recorded::Pending,
            attempts: 0,
            since: record.time.clone(),
            actor: record.actor.clone(),
            step_digest: record.step_digest.clone().unwrap_or_default(),
            detail: None,
            exit_code: None,
            done_at: None,
            outputs: BTreeMap::new(),
            confirmed: None,
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
    pub last_activity: Option<Activity>,
}

impl JournalState {
    pub fn new() -> Self {
        JournalState {
            last_hash: super::event::GENESIS.to_string(),
            ..Default::default()
        }
    }

    pub fn step(&self, id: &str) -> Option<&StepRecord> {
        self.steps.get(id)
    }

    /// Folds one more line into the state.
    pub fn apply(&mut self, record: &Record, line_hash: String) {
        self.lines = record.seq;
        self.last_hash = line_hash;
        self.last_activity = Some(Activity {
            time: record.time.clone(),
            actor: record.actor.clone(),
            step: record.step.clone(),
            event: record.event.name(),
        });
        let Some(step) = &record.step else {
            return;
        };
        let entry = self
            .steps
            .entry(step.clone())
            .or_insert_with(|| StepRecord::new(record));
        let set_status = |entry: &mut StepRecord, status: Recorded, detail: Option<String>| {
            entry.status = status;
            entry.since = record.time.clone();
            entry.actor = record.actor.clone();
            entry.step_digest = record.step_digest.clone().unwrap_or_default();
            entry.detail = detail;
            entry.exit_code = None;
            if status == Recorded::Done {
                entry.done_at = Some(record.time.clone());
            }
        };
        match &record.event {
            Event::Started { attempt, .. } => {
                entry.attempts = entry.attempts.max(*attempt);
                set_status(entry, Recorded::Started, None);
            }
            Event::Outputs { values } => {
                entry
                    .outputs
                    .extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Event::Succeeded { note, .. } => set_status(entry, Recorded::Done, note.clone()),
            Event::Failed {
                reason, exit_code, ..
            } => {
                set_status(entry, Recorded::Failed, Some(reason.clone()));
                entry.exit_code = *exit_code;
            }
            Event::Checked { holds, detail, .. } => {
                if *holds {
                    set_status(entry, Recorded::Done, Some(format!("check: {detail}")));
                }
            }
            Event::Confirmed {} => {
                entry.confirmed = Some((record.actor.clone(), record.time.clone()));
            }
            Event::MarkedDone { note } => set_status(entry, Recorded::Done, Some(note.clone())),
            Event::Skipped { note } => set_status(entry, Recorded::Skipped, Some(note.clone())),
            Event::Reset { note } => {
                set_status(entry, Recorded::Pending, Some(note.clone()));
                entry.done_at = None;
                entry.confirmed = None;
            }
            Event::Note { .. } | Event::Progress { .. } => {}
        }
    }
}
