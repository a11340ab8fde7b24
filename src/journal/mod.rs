//! The journal: an append-only, hash-chained record of every event. Step state is its fold.

mod event;
mod fold;
pub mod lock;
mod store;

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use event::{Event, Record, GENESIS};
pub use fold::{Activity, JournalState, LineMeta, Recorded, StepRecord};
pub use store::{FileStore, JournalStore};

use crate::redact::Redactor;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot {action} the journal {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the journal is damaged at line {line}: {reason}; run `cutover audit verify` — nothing will be driven until it is repaired")]
    Broken { line: u64, reason: String },
    #[error("cannot encode a journal line: {0}")]
    Encode(#[from] serde_json::Error),
    /// Another driver wrote this event first (the S3 journal's conditional write refused ours).
    #[error("another driver wrote event {seq} first: {detail}; this one stops")]
    Conflict { seq: u64, detail: String },
    #[error("the journal on S3: {0}")]
    Remote(String),
}

/// What reading the journal found beyond the events themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    Intact,
    /// The last line has no newline: a crash cut it. It is ignored.
    PartialTail {
        line: u64,
        bytes: usize,
    },
    /// A line does not parse, is out of sequence, or does not chain to the one before.
    Broken {
        line: u64,
        reason: String,
    },
}

/// The journal as read: its fold up to the first problem, and what that problem is.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub state: JournalState,
    pub integrity: Integrity,
    /// Bytes up to the end of the last good line.
    pub valid_len: u64,
}

impl Loaded {
    pub fn warning(&self) -> Option<String> {
        match &self.integrity {
            Integrity::Intact => None,
            Integrity::PartialTail { line, bytes } => Some(format!(
                "journal line {line} was cut short by a crash ({bytes} bytes); it is ignored"
            )),
            Integrity::Broken { line, reason } => {
                Some(format!("journal damaged at line {line}: {reason}"))
            }
        }
    }
}

/// A line as read back: strings borrowed from the journal's bytes where they need no unescaping.
#[derive(serde::Deserialize)]
struct LineView<'a> {
    seq: u64,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    actor: std::borrow::Cow<'a, str>,
    #[allow(dead_code)]
    runbook: serde::de::IgnoredAny,
    // Ids and digests never need JSON escapes, so they borrow; `Option<Cow>` would not.
    #[serde(borrow, default)]
    step: Option<&'a str>,
    #[serde(borrow, default)]
    step_digest: Option<&'a str>,
    #[serde(borrow)]
    event: Event<'a>,
    #[serde(borrow)]
    prev: std::borrow::Cow<'a, str>,
}

impl LineView<'_> {
    fn meta(&self) -> LineMeta<'_> {
        LineMeta {
            seq: self.seq,
            time: &self.time,
            actor: &self.actor,
            step: self.step,
            step_digest: self.step_digest,
        }
    }
}

pub fn hash_line(line: &[u8]) -> String {
    String::from_utf8_lossy(&hex64(&Sha256::digest(line))).into_owned()
}

/// Reads and verifies a journal: parses each line, checks `seq` and the hash chain, folds.
pub fn load(bytes: &[u8]) -> Loaded {
    let mut loaded = replay(bytes);
    // The last good line is the last activity.
    let end = loaded.valid_len as usize;
    if end > 0 {
        let start = bytes[..end - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        if let Ok(view) = serde_json::from_slice::<LineView<'_>>(&bytes[start..end - 1]) {
            loaded.state.set_last_activity(&view.meta(), &view.event);
        }
    }
    loaded
}

/// A parsed line and its own hash in hex.
type Parsed<'a> = Result<(LineView<'a>, [u8; 64]), String>;

/// Lower-case hex of a sha256. The `hex` crate's general encoder costs more than parsing the
/// line does, and a long journal is hashed at every start.
fn hex64(hash: &[u8]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, byte) in hash.iter().take(32).enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
    }
    out
}

fn parse_and_hash(line: &[u8]) -> Parsed<'_> {
    let hash = hex64(&Sha256::digest(line));
    let view: LineView<'_> =
        serde_json::from_slice(line).map_err(|e| format!("not a journal event ({e})"))?;
    Ok((view, hash))
}

/// Each whole line of `bytes` (which ends with a newline): its length and its parse.
fn parse_lines(bytes: &[u8]) -> Vec<(usize, Parsed<'_>)> {
    let Some(body) = bytes.strip_suffix(b"\n") else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(bytes.iter().filter(|b| **b == b'\n').count());
    out.extend(
        body.split(|b| *b == b'\n')
            .map(|line| (line.len(), parse_and_hash(line))),
    );
    out
}

/// Parses and hashes on every core, each thread taking a run of whole lines: a long journal
/// is read at every start.
fn parse_all(bytes: &[u8]) -> Vec<Vec<(usize, Parsed<'_>)>> {
    const MIN_PARALLEL: usize = 1 << 20;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if threads < 2 || bytes.len() < MIN_PARALLEL {
        return vec![parse_lines(bytes)];
    }
    let mut parts = Vec::with_capacity(threads);
    let mut start = 0;
    for n in 1..=threads {
        let target = (bytes.len() * n / threads).max(start);
        let end = if n == threads {
            bytes.len()
        } else {
            bytes[target..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |i| target + i + 1)
        };
        if end > start {
            parts.push(&bytes[start..end]);
        }
        start = end;
    }
    let joined: Option<Vec<_>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .map(|part| scope.spawn(move || parse_lines(part)))
            .collect();
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    joined.unwrap_or_else(|| vec![parse_lines(bytes)])
}

fn replay(bytes: &[u8]) -> Loaded {
    // Everything up to the last newline is whole lines; anything after it was cut by a crash.
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut state = JournalState::new();
    let mut prev = hex64(&[0u8; 32]);
    let mut decision = prev;
    let mut offset = 0usize;
    let parsed = parse_all(&bytes[..complete]);
    let count: usize = parsed.iter().map(Vec::len).sum();
    for (index, (len, parsed)) in parsed.into_iter().flatten().enumerate() {
        let line_no = index as u64 + 1;
        let broken = |mut state: JournalState, reason: String| {
            state.last_hash = String::from_utf8_lossy(&prev).into_owned();
            state.decision_head = String::from_utf8_lossy(&decision).into_owned();
            Loaded {
                state,
                integrity: Integrity::Broken {
                    line: line_no,
                    reason,
                },
                valid_len: offset as u64,
            }
        };
        let (record, hash) = match parsed {
            Ok(p) => p,
            Err(reason) => return broken(state, reason),
        };
        if record.seq != line_no {
            let reason = format!(
                "sequence number {} where {line_no} was expected (a line was removed or inserted)",
                record.seq
            );
            return broken(state, reason);
        }
        if record.prev.as_bytes() != prev {
            return broken(
                state,
                "its `prev` hash does not match the line before it (an earlier line was edited)"
                    .to_string(),
            );
        }
        state.apply(&record.meta(), &record.event);
        prev = hash;
        if !record.event.is_bookkeeping() {
            decision = hash;
        }
        offset += len + 1;
    }
    state.last_hash = String::from_utf8_lossy(&prev).into_owned();
    state.decision_head = String::from_utf8_lossy(&decision).into_owned();
    let integrity = if complete < bytes.len() {
        Integrity::PartialTail {
            line: count as u64 + 1,
            bytes: bytes.len() - complete,
        }
    } else {
        Integrity::Intact
    };
    Loaded {
        state,
        integrity,
        valid_len: complete as u64,
    }
}

/// The writing end: appends durable, redacted, chained lines and keeps the fold current.
pub struct Journal {
    store: Box<dyn JournalStore>,
    state: JournalState,
    actor: String,
    runbook_digest: String,
    redactor: Arc<Redactor>,
}

impl Journal {
    /// Opens a journal to write to. A damaged journal is refused; a line cut by a crash is set
    /// aside (and named in the returned warning) so the next line starts clean.
    pub fn open(
        mut store: Box<dyn JournalStore>,
        actor: String,
        runbook_digest: String,
        redactor: Arc<Redactor>,
    ) -> Result<(Journal, Option<String>), JournalError> {
        let loaded = load(&store.read_all()?);
        let warning = match &loaded.integrity {
            Integrity::Intact => None,
            Integrity::Broken { line, reason } => {
                return Err(JournalError::Broken {
                    line: *line,
                    reason: reason.clone(),
                })
            }
            Integrity::PartialTail { .. } => {
                let aside = store.set_aside_tail(loaded.valid_len)?;
                loaded
                    .warning()
                    .map(|w| format!("{w} (its bytes were moved to {aside})"))
            }
        };
        Ok((
            Journal {
                store,
                state: loaded.state,
                actor,
                runbook_digest,
                redactor,
            },
            warning,
        ))
    }

    pub fn state(&self) -> &JournalState {
        &self.state
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Writes one event; it is on disk (synced) when this returns.
    pub fn append(
        &mut self,
        step: Option<(&str, &str)>,
        event: Event<'_>,
    ) -> Result<(), JournalError> {
        let time = now_rfc3339();
        let record = Record {
            seq: self.state.lines + 1,
            time: time.clone(),
            actor: self.actor.clone(),
            runbook: self.runbook_digest.clone(),
            step: step.map(|(id, _)| id.to_string()),
            step_digest: step.map(|(_, digest)| digest.to_string()),
            event,
            prev: self.state.last_hash.clone(),
        };
        // The one choke point every line passes: nothing secret is written. Each string of the
        // event is masked as a value, before encoding: a mask never reaches across a field
        // (a note ending in `token=…` cannot swallow the JSON after it), and the chain's hashes
        // and ids are never touched.
        let mut event = serde_json::to_value(&record.event)?;
        redact_strings(&mut event, &self.redactor);
        let line = serde_json::to_string(&Record {
            seq: record.seq,
            time: record.time,
            actor: record.actor,
            runbook: record.runbook,
            step: record.step,
            step_digest: record.step_digest,
            event,
            prev: record.prev,
        })?;
        // The fold sees exactly what is on disk.
        let view: LineView<'_> = serde_json::from_str(&line)?;
        let hash = hash_line(line.as_bytes());
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.store.append_line(&bytes)?;
        self.state.apply(&view.meta(), &view.event);
        self.state.set_last_activity(&view.meta(), &view.event);
        if !view.event.is_bookkeeping() {
            self.state.decision_head = hash.clone();
        }
        self.state.last_hash = hash;
        Ok(())
    }
}

/// Masks every string inside a JSON value (keys are the journal's own names, never data).
fn redact_strings(value: &mut serde_json::Value, redactor: &Redactor) {
    match value {
        serde_json::Value::String(s) => {
            if let std::borrow::Cow::Owned(masked) = redactor.redact(s) {
                *s = masked;
            }
        }
        serde_json::Value::Array(items) => {
            items.iter_mut().for_each(|v| redact_strings(v, redactor));
        }
        serde_json::Value::Object(map) => {
            map.values_mut().for_each(|v| redact_strings(v, redactor));
        }
        _ => {}
    }
}

/// The journal's times, from the clock module (a leaf every layer may use).
pub(crate) use crate::clock::{now_rfc3339, parse_time};

#[cfg(test)]
mod tests {
    use super::*;

    struct MemoryStore(Vec<u8>);
    impl JournalStore for MemoryStore {
        fn read_all(&self) -> Result<Vec<u8>, JournalError> {
            Ok(self.0.clone())
        }
        fn append_line(&mut self, line: &[u8]) -> Result<(), JournalError> {
            self.0.extend_from_slice(line);
            Ok(())
        }
        fn set_aside_tail(&mut self, keep: u64) -> Result<String, JournalError> {
            self.0.truncate(keep as usize);
            Ok("memory".into())
        }
        fn location(&self) -> String {
            "memory".into()
        }
    }

    fn journal(bytes: Vec<u8>) -> Journal {
        let (journal, _) = Journal::open(
            Box::new(MemoryStore(bytes)),
            "ana@laptop".into(),
            "rb".into(),
            Arc::new(Redactor::new()),
        )
        .unwrap();
        journal
    }

    fn bytes_of(journal: Journal) -> Vec<u8> {
        journal.store.read_all().unwrap()
    }

    #[test]
    fn fold_follows_a_step_through_its_life() {
        let mut j = journal(Vec::new());
        let step = Some(("build", "d1"));
        j.append(
            step,
            Event::Started {
                attempt: 1,
                log: "logs/build/1.log".into(),
            },
        )
        .unwrap();
        assert_eq!(j.state().step("build").unwrap().status, Recorded::Started);
        j.append(
            step,
            Event::Failed {
                attempt: 1,
                reason: "exit code 2".into(),
                exit_code: Some(2),
            },
        )
        .unwrap();
        let r = j.state().step("build").unwrap();
        assert_eq!(
            (r.status, r.exit_code, r.detail.as_deref()),
            (Recorded::Failed, Some(2), Some("exit code 2"))
        );
        j.append(
            step,
            Event::Started {
                attempt: 2,
                log: "logs/build/2.log".into(),
            },
        )
        .unwrap();
        j.append(
            step,
            Event::Outputs {
                values: [("image".to_string(), "sha-1".to_string())].into(),
            },
        )
        .unwrap();
        j.append(
            step,
            Event::Succeeded {
                attempt: 2,
                note: None,
            },
        )
        .unwrap();
        let r = j.state().step("build").unwrap().clone();
        assert_eq!(r.status, Recorded::Done);
        assert_eq!(r.attempts, 2);
        assert_eq!(r.outputs.get("image").map(String::as_str), Some("sha-1"));
        assert!(r.done_at.is_some());
        j.append(
            step,
            Event::Reset {
                note: "redo".into(),
            },
        )
        .unwrap();
        let r = j.state().step("build").unwrap();
        assert_eq!((r.status, r.done_at.clone()), (Recorded::Pending, None));
        j.append(
            Some(("other", "d2")),
            Event::Checked {
                holds: false,
                detail: "no".into(),
                log: "x".into(),
            },
        )
        .unwrap();
        assert_eq!(j.state().step("other").unwrap().status, Recorded::Pending);
        j.append(
            Some(("other", "d2")),
            Event::Checked {
                holds: true,
                detail: "ok".into(),
                log: "x".into(),
            },
        )
        .unwrap();
        assert_eq!(j.state().step("other").unwrap().status, Recorded::Done);
        // Reading the bytes back gives the same fold.
        let state = j.state().clone();
        let loaded = load(&bytes_of(j));
        assert_eq!(loaded.integrity, Integrity::Intact);
        assert_eq!(loaded.state, state);
    }

    #[test]
    fn a_cut_last_line_is_ignored_and_set_aside() {
        let mut j = journal(Vec::new());
        j.append(
            Some(("a", "d")),
            Event::Started {
                attempt: 1,
                log: "l".into(),
            },
        )
        .unwrap();
        let mut bytes = bytes_of(j);
        bytes.extend_from_slice(b"{\"seq\":2,\"time\":\"20");
        let loaded = load(&bytes);
        assert_eq!(
            loaded.integrity,
            Integrity::PartialTail { line: 2, bytes: 19 }
        );
        assert_eq!(loaded.state.lines, 1);
        let (mut j, warning) = Journal::open(
            Box::new(MemoryStore(bytes)),
            "b@h".into(),
            "rb".into(),
            Arc::new(Redactor::new()),
        )
        .unwrap();
        assert!(warning.unwrap().contains("cut short"));
        j.append(
            Some(("a", "d")),
            Event::Succeeded {
                attempt: 1,
                note: None,
            },
        )
        .unwrap();
        let loaded = load(&bytes_of(j));
        assert_eq!(loaded.integrity, Integrity::Intact);
        assert_eq!(loaded.state.lines, 2);
    }

    #[test]
    fn an_edited_line_breaks_the_chain_at_the_next_line() {
        let mut j = journal(Vec::new());
        for attempt in 1..=3 {
            j.append(
                Some(("a", "d")),
                Event::Started {
                    attempt,
                    log: "l".into(),
                },
            )
            .unwrap();
        }
        let text = String::from_utf8(bytes_of(j)).unwrap();
        let edited = text.replacen("\"attempt\":2", "\"attempt\":9", 1);
        let loaded = load(edited.as_bytes());
        assert!(
            matches!(loaded.integrity, Integrity::Broken { line: 3, .. }),
            "{:?}",
            loaded.integrity
        );
        assert_eq!(loaded.state.lines, 2);
        let removed: String = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let loaded = load(removed.as_bytes());
        assert!(
            matches!(loaded.integrity, Integrity::Broken { line: 2, ref reason } if reason.contains("sequence"))
        );
        assert!(Journal::open(
            Box::new(MemoryStore(edited.into_bytes())),
            "a@b".into(),
            "rb".into(),
            Arc::new(Redactor::new())
        )
        .is_err());
    }

    #[test]
    fn secrets_never_reach_a_line() {
        let redactor = Arc::new(Redactor::new());
        redactor.add_secret("hunter2-secret");
        let (mut j, _) = Journal::open(
            Box::new(MemoryStore(Vec::new())),
            "a@b".into(),
            "rb".into(),
            redactor,
        )
        .unwrap();
        j.append(
            Some(("a", "d")),
            Event::Failed {
                attempt: 1,
                reason: "connect postgres://app:pa55word@db/x failed; token hunter2-secret".into(),
                exit_code: None,
            },
        )
        .unwrap();
        let text = String::from_utf8(bytes_of(j)).unwrap();
        assert!(
            !text.contains("pa55word") && !text.contains("hunter2-secret"),
            "{text}"
        );
        assert!(text.contains("postgres://app:***@db/x"), "{text}");
        assert_eq!(load(text.as_bytes()).integrity, Integrity::Intact);
    }
}

/// Journals made up for tests: steps that ran at given times.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Event, JournalState, LineMeta};

    /// (step, start, end, outputs)
    pub(crate) type Run<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

    /// A journal where each run started, recorded its outputs and succeeded, by ana@laptop;
    /// `digest` gives each step's definition digest.
    pub(crate) fn timed(runs: &[Run<'_>], digest: impl Fn(&str) -> String) -> JournalState {
        let mut state = JournalState::new();
        let mut seq = 0;
        for (id, start, end, outputs) in runs {
            let digest = digest(id);
            let events = [
                (
                    *start,
                    Event::Started {
                        attempt: 1,
                        log: format!("logs/{id}/1.log").into(),
                    },
                ),
                (
                    *end,
                    Event::Outputs {
                        values: outputs
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    },
                ),
                (
                    *end,
                    Event::Succeeded {
                        attempt: 1,
                        note: None,
                    },
                ),
            ];
            for (time, event) in events {
                seq += 1;
                let meta = LineMeta {
                    seq,
                    time,
                    actor: "ana@laptop",
                    step: Some(id),
                    step_digest: Some(&digest),
                };
                state.apply(&meta, &event);
                state.set_last_activity(&meta, &event);
            }
        }
        state
    }
}
