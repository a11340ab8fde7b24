//! One journal line: who did what to which step, when, chained to the line before it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. Externally tagged (`{"started":{...}}`) so a line parses without buffering;
/// text borrows from the line when read back, so replaying a long journal allocates little.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event<'a> {
    /// An attempt began; its log is at `log` (relative to the state directory).
    Started {
        attempt: u32,
        #[serde(borrow)]
        log: Cow<'a, str>,
    },
    /// Outputs an action produced, written as soon as they exist (a snapshot id survives a later failure).
    Outputs { values: BTreeMap<String, String> },
    Succeeded {
        attempt: u32,
        #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
        note: Option<Cow<'a, str>>,
    },
    Failed {
        attempt: u32,
        #[serde(borrow)]
        reason: Cow<'a, str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
    },
    /// The step's check ran; when it `holds`, the step's effect is already in place.
    Checked {
        holds: bool,
        #[serde(borrow)]
        detail: Cow<'a, str>,
        #[serde(borrow)]
        log: Cow<'a, str>,
    },
    /// The operator typed the step's phrase.
    Confirmed {},
    MarkedDone {
        #[serde(borrow)]
        note: Cow<'a, str>,
    },
    Skipped {
        #[serde(borrow)]
        note: Cow<'a, str>,
    },
    /// Back to pending (the operator decided to redo it).
    Reset {
        #[serde(borrow)]
        note: Cow<'a, str>,
    },
    Note {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    /// The operator started the step's rollback, saying why; its log is at `log`.
    RollbackStarted {
        #[serde(borrow)]
        note: Cow<'a, str>,
        #[serde(borrow)]
        log: Cow<'a, str>,
    },
    /// The rollback ran to its end: the step's effect is undone.
    RolledBack {
        #[serde(borrow)]
        note: Cow<'a, str>,
    },
    /// The rollback failed: the step's effect may be partly undone; its log says how far.
    RollbackFailed {
        #[serde(borrow)]
        reason: Cow<'a, str>,
    },
    /// A milestone worth keeping, such as "snapshot 40%".
    Progress {
        #[serde(borrow)]
        message: Cow<'a, str>,
    },
    /// A run of a step that needs approvals asked for them: the digest of what will run, what
    /// it will do (masked), the decision head approvers bind to, and who asks, as STS says.
    ApprovalRequested {
        #[serde(borrow)]
        digest: Cow<'a, str>,
        #[serde(borrow)]
        what: Cow<'a, str>,
        #[serde(borrow)]
        head: Cow<'a, str>,
        required: u32,
        #[serde(borrow)]
        by_arn: Cow<'a, str>,
        #[serde(borrow)]
        by_user_id: Cow<'a, str>,
        #[serde(borrow)]
        sts_request_id: Cow<'a, str>,
    },
    /// A verdict posted on the step (approve, deny, withdraw), with STS's answer on who signed
    /// it and how it stands: counted, denies, or void and why. Recorded when first read and
    /// whenever its standing changes, so an expired approval stays in the record.
    ApprovalConsidered {
        #[serde(borrow)]
        verdict: Cow<'a, str>,
        #[serde(borrow)]
        nonce: Cow<'a, str>,
        /// Empty when the proof did not verify.
        #[serde(borrow)]
        by_arn: Cow<'a, str>,
        #[serde(borrow)]
        by_user_id: Cow<'a, str>,
        #[serde(borrow)]
        sts_request_id: Cow<'a, str>,
        /// The STS endpoint that answered (AWS's, or a stand-in's in a test).
        #[serde(default, borrow)]
        sts_endpoint: Cow<'a, str>,
        /// The approver's `user@host`, as they said.
        #[serde(borrow)]
        by_actor: Cow<'a, str>,
        #[serde(borrow)]
        digest: Cow<'a, str>,
        signed_at_ms: u64,
        expires_at_ms: u64,
        #[serde(borrow)]
        note: Cow<'a, str>,
        #[serde(borrow)]
        standing: Cow<'a, str>,
    },
    /// Run without the approvals its policy asks for, on the operator's word: listed in the
    /// report for review.
    BreakGlass {
        #[serde(borrow)]
        note: Cow<'a, str>,
        #[serde(borrow)]
        by_arn: Cow<'a, str>,
        #[serde(borrow)]
        by_user_id: Cow<'a, str>,
    },
}

impl Event<'_> {
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
            Event::RollbackStarted { .. } => "rollback started",
            Event::RolledBack { .. } => "rolled back",
            Event::RollbackFailed { .. } => "rollback failed",
            Event::ApprovalRequested { .. } => "approval requested",
            Event::ApprovalConsidered { .. } => "approval considered",
            Event::BreakGlass { .. } => "break glass",
        }
    }

    /// Lines that record approvals and notes, not a decision: an approval binds to the last
    /// line that is not one of these (the decision head), so recording approvals never voids
    /// them.
    pub fn is_bookkeeping(&self) -> bool {
        matches!(
            self,
            Event::ApprovalRequested { .. } | Event::ApprovalConsidered { .. } | Event::Note { .. }
        )
    }
}

/// A whole journal line, as written (lines are read back through a borrowed view). `E` is the
/// event: an [`Event`], or the same event as a JSON value once its strings are masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record<E> {
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
    pub event: E,
    /// sha256 (hex) of the previous line's bytes, [`GENESIS`] for the first.
    pub prev: String,
}
