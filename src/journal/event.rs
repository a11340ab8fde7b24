//! One journal line: who did what to which step, when, chained to the line before it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. Externally tagged (`{"started":{...}}`) so a line parses without buffering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An attempt began; its log is at `log` (relative to the state directory).
    Started {
        attempt: u32,
        log: String,
    },
    /// Outputs an action produced, written as soon as they exist (a snapshot id survives a later failure).
    Outputs {
        values: BTreeMap<String, String>,
    },
    Succeeded {
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Failed {
        attempt: u32,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
    },
    /// The step's check ran; when it `holds`, the step's effect is already in place.
    Checked {
        holds: bool,
        detail: String,
        log: String,
    },
    /// The operator typed the step's phrase.
    Confirmed {},
    MarkedDone {
        note: String,
    },
    Skipped {
        note: String,
    },
    /// Back to pending (the operator decided to redo it).
    Reset {
        note: String,
    },
    Note {
        text: String,
    },
    /// A milestone worth keeping, such as "snapshot 40%".
    Progress {
        message: String,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::Outputs { .. } => "outputs",
            Event::Succeeded { .. } => "succeeded",
            Event::Failed { .. } => "failed",
            Event::Checked { .. } => "checked",
            Event::Confirmed {} => "confirmed",
            Event::MarkedDone { .. } => "marked done",
            Event::Skipped { .. } => "skipped",
            Event::Reset { .. } => "reset",
            Event::Note { .. } => "note",
            Event::Progress { .. } => "progress",
        }
    }
}

/// A whole journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 1 for the first line, then one more per line.
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `user@host`.
    pub actor: String,
    /// sha256 of the runbook file when this was written.
    pub runbook: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// sha256 of the step's definition when this was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_digest: Option<String>,
    pub event: Event,
    /// sha256 (hex) of the previous line's bytes, [`GENESIS`] for the first.
    pub prev: String,
}
