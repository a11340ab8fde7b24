//! Action kinds: one module each, all behind [`Action`]. An action gets its rendered
//! parameters, a cancellation token and an event sender; it never prompts, never touches the
//! terminal and never writes the journal.

pub mod aws;
pub mod db;
pub(crate) mod heroku;
mod http;
pub mod lines;
mod manual;
pub mod process;
pub mod scaffold;
mod shell;
mod terraform;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::runbook::{ActionCatalog, ActionSchema};

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Said by cutover itself (what is being done, waited for, retried).
    Info,
}

/// Measured advance of a long action.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
    /// "bytes", "tables", "%", "tasks", "attempts"...
    pub unit: String,
    pub message: Option<String>,
}

impl Progress {
    pub fn fraction(&self) -> Option<f64> {
        self.total
            .filter(|t| *t > 0)
            .map(|t| (self.done as f64 / t as f64).clamp(0.0, 1.0))
    }
}

/// A local port that reaches `host:port` elsewhere (a Session Manager tunnel through a task):
/// what a step with `via` is given, so its connections to that host go through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub host: String,
    pub port: u16,
    pub local: std::net::SocketAddr,
}

impl Forward {
    pub fn forwards(&self, host: &str, port: u16) -> bool {
        self.port == port && self.host.eq_ignore_ascii_case(host.trim_end_matches('.'))
    }
}

/// What an action reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionEvent {
    Log {
        stream: Stream,
        line: String,
    },
    Progress(Progress),
    Output {
        name: String,
        value: String,
    },
    /// Answered once every event sent before it is recorded (see [`Reporter::recorded`]).
    Recorded(Ack),
}

/// The engine's answer to [`ActionEvent::Recorded`]; a receiver that drops it unanswered
/// (it records nothing) releases the waiter too.
#[derive(Debug, Clone)]
pub struct Ack(Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>);

impl Ack {
    fn new() -> (Self, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Ack(Arc::new(std::sync::Mutex::new(Some(tx)))), rx)
    }

    pub fn answer(&self) {
        if let Some(tx) = self.0.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send(());
        }
    }
}

impl PartialEq for Ack {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        note: Option<String>,
    },
    Failed {
        reason: String,
        exit_code: Option<i32>,
    },
    /// Stopped by cancellation (Ctrl-C, a timeout, the operator).
    Cancelled,
}

impl Outcome {
    pub fn failed(reason: impl Into<String>) -> Self {
        Outcome::Failed {
            reason: reason.into(),
            exit_code: None,
        }
    }
}

/// The sending side of an action's events. Sending waits when the receiver is behind, so a
/// chatty child is slowed rather than buffered without bound.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::Sender<ActionEvent>,
}

impl Reporter {
    pub fn new(tx: mpsc::Sender<ActionEvent>) -> Self {
        Reporter { tx }
    }

    pub async fn send(&self, event: ActionEvent) {
        // The receiver goes away only when the step is over; nothing is left to tell.
        let _ = self.tx.send(event).await;
    }

    pub async fn line(&self, stream: Stream, line: impl Into<String>) {
        self.send(ActionEvent::Log {
            stream,
            line: line.into(),
        })
        .await;
    }

    pub async fn info(&self, line: impl Into<String>) {
        self.line(Stream::Info, line).await;
    }

    pub async fn progress(
        &self,
        done: u64,
        total: Option<u64>,
        unit: &str,
        message: Option<String>,
    ) {
        self.send(ActionEvent::Progress(Progress {
            done,
            total,
            unit: unit.to_string(),
            message,
        }))
        .await;
    }

    pub async fn output(&self, name: &str, value: impl Into<String>) {
        self.send(ActionEvent::Output {
            name: name.to_string(),
            value: value.into(),
        })
        .await;
    }

    /// Waits until the engine has written every event sent so far (outputs to the journal):
    /// what must be on record before an irreversible move, such as a target that a restore
    /// is about to make dirty. Returns at once when the step is over (nothing listens).
    pub async fn recorded(&self) {
        let (ack, answered) = Ack::new();
        if self.tx.send(ActionEvent::Recorded(ack)).await.is_ok() {
            let _ = answered.await;
        }
    }
}

/// Everything one attempt of an action gets.
#[derive(Debug, Clone)]
pub struct ActionContext {
    pub step: String,
    /// Parameters with every `${...}` filled.
    pub params: serde_json::Value,
    pub cancel: CancellationToken,
    pub report: Reporter,
    /// Relative paths are taken from here (the runbook's directory).
    pub work_dir: PathBuf,
    /// A file where a shell step may write `name=value` lines to export outputs.
    pub outputs_file: PathBuf,
    /// The operator's note (for `manual`).
    pub operator_note: Option<String>,
    /// The runbook's `[aws]` settings (with command-line overrides).
    pub aws: crate::runbook::AwsSettings,
    /// Every step's outputs as the journal held them before this attempt, by step id: what
    /// earlier attempts recorded, such as a copy that left its target dirty.
    pub recorded: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// The tunnels this step's connections go through (its `via`), open and checked.
    pub forwards: Vec<Forward>,
    /// Where an `aws.tunnel` step leaves the tunnel it opened, for the steps that use it.
    pub tunnels: aws::Tunnels,
}

impl ActionContext {
    /// The parameters as the action's own type; a mismatch is a failed step, not a panic.
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, Outcome> {
        serde_json::from_value(self.params.clone())
            .map_err(|e| Outcome::failed(format!("bad parameters: {e}")))
    }
}

/// One kind of action.
#[async_trait]
pub trait Action: Send + Sync {
    fn schema(&self) -> &'static ActionSchema;
    /// One line saying what it would do, from parameters with secrets masked.
    fn describe(&self, params: &serde_json::Value) -> String;
    async fn run(&self, ctx: ActionContext) -> Outcome;
    /// As a rollback: why these parameters would change nothing, if they say so by themselves
    /// (the step it undoes changed nothing). Then there is nothing to undo, and nothing runs.
    fn nothing_to_undo(&self, _params: &serde_json::Value) -> Option<String> {
        None
    }
}

/// All action kinds by name.
#[derive(Clone)]
pub struct Registry {
    actions: Vec<Arc<dyn Action>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    pub fn builtin() -> Self {
        let mut actions: Vec<Arc<dyn Action>> = vec![
            Arc::new(manual::Manual),
            Arc::new(shell::Shell),
            Arc::new(http::Http),
            Arc::new(scaffold::Scaffold),
            Arc::new(terraform::Terraform),
            Arc::new(heroku::HerokuBaseline),
        ];
        actions.extend(aws::actions(Arc::new(aws::Session::default())));
        actions.extend(db::actions());
        Registry { actions }
    }

    pub fn get(&self, kind: &str) -> Option<Arc<dyn Action>> {
        self.actions
            .iter()
            .find(|a| a.schema().kind == kind)
            .cloned()
    }
}

impl ActionCatalog for Registry {
    fn schema(&self, kind: &str) -> Option<&ActionSchema> {
        self.actions
            .iter()
            .map(|a| a.schema())
            .find(|s| s.kind == kind)
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.actions.iter().map(|a| a.schema().kind).collect()
    }
}

/// Reads an integer parameter, written as a number or a string (`ParamType::Integer` admits
/// both); anything else fails the step, naming the parameter.
pub(crate) fn parse_integer(
    value: Option<&serde_json::Value>,
    name: &str,
) -> Result<Option<i64>, Outcome> {
    let Some(v) = value else {
        return Ok(None);
    };
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .map(Some)
        .ok_or_else(|| Outcome::failed(format!("`{name}` = {v} is not a whole number")))
}

/// Reads a duration parameter such as "30s".
pub(crate) fn parse_duration(
    value: Option<&str>,
    default: std::time::Duration,
    name: &str,
) -> Result<std::time::Duration, Outcome> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text.trim())
            .map_err(|e| Outcome::failed(format!("`{name}` = {text:?} is not a duration: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_parameters_are_numbers_or_numeric_strings() {
        assert_eq!(parse_integer(None, "ttl").ok(), Some(None));
        assert_eq!(
            parse_integer(Some(&serde_json::json!(30)), "ttl").ok(),
            Some(Some(30))
        );
        assert_eq!(
            parse_integer(Some(&serde_json::json!(" 30 ")), "ttl").ok(),
            Some(Some(30))
        );
        match parse_integer(Some(&serde_json::json!("thirty")), "ttl") {
            Err(Outcome::Failed { reason, .. }) => {
                assert_eq!(reason, "`ttl` = \"thirty\" is not a whole number")
            }
            other => panic!("{other:?}"),
        }
    }
}
