//! The runbook: phases of steps read from `runbook.toml`, checked as a whole before anything runs.

mod backend;
mod diagnostics;
mod graph;
mod parse;
pub mod schema;
pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use backend::Backend;
pub use diagnostics::{Diagnostic, Diagnostics, Location, SourceFile};
pub(crate) use graph::transitive_needs;
pub use schema::{ActionCatalog, ActionSchema, ParamSpec, ParamType};
pub use template::{Reference, Rendered, Scope, ShellRendered, Template, MASK};

/// A checked runbook. Every `${var}` in it is known; secrets and step outputs are filled at run time.
#[derive(Debug, Clone)]
pub struct Runbook {
    pub source: SourceFile,
    /// sha256 of the file's bytes (its first 64 bits, in hex).
    pub digest: String,
    pub name: String,
    pub app: String,
    pub description: String,
    /// Variables with overrides applied and references between them filled.
    pub vars: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretSource>,
    pub aws: Option<AwsSettings>,
    /// `[cost]`: the target's shape and today's Heroku plans, for estimates.
    pub cost: Option<crate::cost::CostSpec>,
    pub phases: Vec<Phase>,
    /// All steps in file order; phases index into this.
    pub steps: Vec<Step>,
    /// `[[window]]`s: stretches users feel (the write freeze), measured and predicted.
    pub windows: Vec<Window>,
    /// `[state] backend`: where the state lives when not in `.cutover/` (`s3://BUCKET/PREFIX`).
    pub state: Option<String>,
    /// `[runbook] approvals`, `approval_ttl`, `approvers`: what destructive steps ask for.
    pub approvals: ApprovalDefaults,
}

/// What destructive steps ask for unless they say otherwise: approvals from this many other
/// operators (0: none), valid for `ttl`, from principals matching `approvers` (any if empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDefaults {
    pub count: u32,
    pub ttl: Duration,
    pub approvers: Vec<String>,
}

impl Default for ApprovalDefaults {
    fn default() -> Self {
        ApprovalDefaults {
            count: 0,
            ttl: crate::approval::DEFAULT_TTL,
            approvers: Vec::new(),
        }
    }
}

impl Runbook {
    /// The approvals a step needs before it may run: its own `approvals` (and `approvers`),
    /// else for a destructive step the runbook's; `None` when it needs none.
    pub fn approval_policy(&self, step: &Step) -> Option<crate::approval::Policy> {
        let count = step.approvals.unwrap_or(if step.destructive {
            self.approvals.count
        } else {
            0
        });
        (count > 0).then(|| crate::approval::Policy {
            count,
            approvers: step
                .approvers
                .clone()
                .unwrap_or_else(|| self.approvals.approvers.clone()),
            ttl: self.approvals.ttl,
        })
    }
}

/// A stretch of the migration its users feel, from the end of step `from` to the end of step
/// `to` (which depends on it): the write freeze from `maintenance-on` to `dns-cutover`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub name: String,
    pub from: String,
    pub to: String,
    pub notes: String,
    /// 1-based line of the `[[window]]`.
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub id: String,
    pub title: String,
    pub notes: String,
    pub steps: std::ops::Range<usize>,
}

/// Where a secret's value comes from; it is read right before a step that uses it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the operator's shell.
    Env(String),
    /// The standard output of a shell command (trailing newline removed). Its `${var}`s reach
    /// it as data: `script` expands environment variables that `env` holds.
    Command {
        script: String,
        env: BTreeMap<String, String>,
    },
}

/// `[aws]`: where the runbook's AWS work happens; checked before any AWS call.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// The account the credentials must belong to.
    pub account_id: Option<String>,
    pub region: Option<String>,
    /// A named profile (SSO profiles included); `--profile` overrides it.
    pub profile: Option<String>,
    /// A local AWS API server (the rehearsal's); `--endpoint-url` or AWS_ENDPOINT_URL also work.
    pub endpoint_url: Option<String>,
    /// Defaults for `cutover ecs-run`.
    pub cluster: Option<String>,
    pub service: Option<String>,
    pub container: Option<String>,
}

/// An action with its (unrendered) parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionSpec {
    pub kind: String,
    /// Parameter values as written, strings still holding their `${...}` references.
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// How a step is undone: words for the operator, or an action `cutover rollback` runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollback {
    /// The rollback in words: all of it when it cannot be automated, else what the action
    /// does (may hold references; render before showing).
    pub text: Option<String>,
    /// What `cutover rollback STEP` runs.
    pub action: Option<ActionSpec>,
    /// Read-only, run before the operator confirms: its note is shown with the phrase (for
    /// the DNS: the rows RDS took since the cutover, which a return to Heroku loses).
    pub warn: Option<ActionSpec>,
    /// The `aws.tunnel` step the rollback action's connections go through.
    pub via: Option<String>,
    /// The `aws.tunnel` step the warning's connections go through (`warn = { ..., via }`).
    /// Apart from the action's: a warning that cannot reach its database is shown as unknown,
    /// and the rollback still runs.
    pub warn_via: Option<String>,
    /// Once this step is done the rollback has nothing to go back to, and is refused.
    pub refuse_after: Option<String>,
    /// Run in order after the confirmation and before the action (`first = [{ do = ... }]`),
    /// each through its own tunnel: the first that fails stops the rollback there, before the
    /// action (for the DNS: writes on AWS stopped and RDS's changes drained into Heroku before
    /// the domain goes back). Each must be safe to run again: a failed rollback is re-run whole.
    pub first: Vec<Prelude>,
}

/// One of a rollback's `first` actions, and the `aws.tunnel` step it connects through.
#[derive(Debug, Clone, PartialEq)]
pub struct Prelude {
    pub action: ActionSpec,
    pub via: Option<String>,
}

impl Rollback {
    /// One line for the checklist and the confirmation.
    pub fn summary(&self) -> String {
        match (&self.text, &self.action) {
            (Some(text), _) => text.trim().to_string(),
            (None, Some(action)) => format!("`cutover rollback` runs {}", action.kind),
            (None, None) => String::new(),
        }
    }
}

/// "Run only once `step` has been done for at least `at_least`" (the soak period).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeGate {
    pub step: String,
    pub at_least: Duration,
}

/// `only_if = { value = "${steps.X.outputs.Y}", equals = "1", why = "..." }`: the step runs
/// only when `value`, rendered when its turn comes, equals `equals`; otherwise it is skipped,
/// the journal saying why, and the steps that need it proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlyIf {
    /// A template holding at least one output of a step this one needs.
    pub value: String,
    pub equals: String,
    /// What the condition means, in the operator's words.
    pub why: Option<String>,
}

impl OnlyIf {
    /// What `value` names: "migrations-pending's exit_code" for a lone step output, else the
    /// template as written.
    pub fn subject(&self) -> String {
        let lone = Template::parse(&self.value).ok().and_then(|t| {
            let refs: Vec<Reference> = t.references().cloned().collect();
            match refs.as_slice() {
                [Reference::StepOutput { step, name }]
                    if self.value.trim() == format!("${{steps.{step}.outputs.{name}}}") =>
                {
                    Some(format!("{step}'s {name}"))
                }
                _ => None,
            }
        });
        lone.unwrap_or_else(|| format!("`{}`", self.value))
    }

    /// "runs only when migrations-pending's exit_code is 1 (a migration is pending)".
    pub fn describe(&self) -> String {
        format!(
            "runs only when {} is {}{}",
            self.subject(),
            self.equals,
            self.why_suffix()
        )
    }

    /// Why a step with this condition is not run, `value` being what it rendered to:
    /// "not needed: migrations-pending's exit_code is 0; runs only when 1 (a migration is
    /// pending)".
    pub fn skip_reason(&self, value: &str) -> String {
        format!(
            "not needed: {} is {value}; runs only when {}{}",
            self.subject(),
            self.equals,
            self.why_suffix()
        )
    }

    fn why_suffix(&self) -> String {
        self.why
            .as_deref()
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(|w| format!(" ({w})"))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub title: String,
    /// May hold references to step outputs or secrets; render before showing.
    pub notes: String,
    pub phase: usize,
    pub action: ActionSpec,
    pub check: Option<ActionSpec>,
    pub needs: Vec<String>,
    pub destructive: bool,
    pub confirm: Option<String>,
    pub rollback: Option<Rollback>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub outputs: Vec<String>,
    pub after: Option<TimeGate>,
    /// Cost line items this step starts billing (e.g. `rds_instance`).
    pub starts_billing: Vec<String>,
    /// The `aws.tunnel` step whose forward this step's connections go through: the engine
    /// opens it (or re-opens it) before each attempt and closes it after the last step that
    /// names it.
    pub via: Option<String>,
    /// Runs only when a value known by then equals this (see [`OnlyIf`]).
    pub only_if: Option<OnlyIf>,
    /// `refuse_after = "STEP"`: once that step is done (and not rolled back) this one may not
    /// run again — what it writes would overwrite what happened since (a copy or a catch-up
    /// after the cutover, over the users' writes on the target).
    pub refuse_after: Option<String>,
    /// `approvals = N`: approvals from N other operators before it runs (overrides the
    /// runbook's default for destructive steps; 0 for none).
    pub approvals: Option<u32>,
    /// `approvers = [ARN patterns]`: whose approvals count for this step.
    pub approvers: Option<Vec<String>>,
    /// sha256 of the step's definition with its variables filled (first 64 bits, in hex).
    pub digest: String,
    /// 1-based line of the step's `id`.
    pub line: usize,
}

/// Why a runbook could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read runbook {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: the runbook is not valid UTF-8 (a byte that begins no UTF-8 character here); save it as UTF-8")]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("--var {0}: the runbook has no variable of that name (known: {1})")]
    UnknownVar(String, String),
    #[error("--var {0}: expected KEY=VALUE")]
    MalformedVar(String),
}

/// The 1-based line and column (in characters) of byte `offset` of a text whose bytes before
/// `offset` are valid UTF-8.
fn position_of(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = String::from_utf8_lossy(&bytes[..offset.min(bytes.len())]);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Runbook {
    /// Reads, parses and validates a runbook, applying `KEY=VALUE` overrides to `[vars]`.
    pub fn load(
        path: &Path,
        overrides: &[String],
        catalog: &dyn ActionCatalog,
    ) -> Result<Runbook, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let (line, column) = position_of(e.as_bytes(), e.utf8_error().valid_up_to());
            LoadError::NotUtf8 {
                path: path.to_path_buf(),
                line,
                column,
            }
        })?;
        Self::from_source(SourceFile::new(path, text), overrides, catalog)
    }

    pub fn from_source(
        source: SourceFile,
        overrides: &[String],
        catalog: &dyn ActionCatalog,
    ) -> Result<Runbook, LoadError> {
        let mut parsed = BTreeMap::new();
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| LoadError::MalformedVar(item.clone()))?;
            parsed.insert(key.trim().to_string(), value.to_string());
        }
        parse::parse(source, &parsed, catalog)
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    /// The directory the runbook lives in; relative paths in it are taken from here.
    pub fn base_dir(&self) -> PathBuf {
        self.source
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// Every step `id` needs, directly or not.
    pub fn transitive_needs(&self, id: &str) -> Vec<String> {
        graph::transitive_needs(&self.steps, id)
    }
}

/// Secrets a step's action and check refer to, in name order.
pub fn secrets_used(spec: &ActionSpec) -> Vec<String> {
    let mut names = Vec::new();
    visit_strings(&serde_json::Value::Object(spec.params.clone()), &mut |s| {
        if let Ok(t) = Template::parse(s) {
            for r in t.references() {
                if let Reference::Secret(name) = r {
                    names.push(name.clone());
                }
            }
        }
    });
    names.sort();
    names.dedup();
    names
}

/// Calls `f` on every string inside a JSON value.
pub fn visit_strings(value: &serde_json::Value, f: &mut dyn FnMut(&str)) {
    match value {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
        serde_json::Value::Object(map) => map.values().for_each(|v| visit_strings(v, f)),
        _ => {}
    }
}

/// Renders an action's parameters: the values, and a copy for display with secrets masked. In a
/// `shell` action every value is data: `run` refers to environment variables that hold the
/// values (see [`Template::render_shell`]), and those are added to its `env`.
pub fn render_params(
    spec: &ActionSpec,
    scope: &dyn Scope,
) -> Result<(serde_json::Value, serde_json::Value), Reference> {
    let (plain, shell) = split_shell(spec);
    let (mut value, mut shown) = render_tree(&plain, scope)?;
    if let Some((run, splice)) = shell {
        let rendered = match Template::parse(run) {
            Ok(t) => t.render_shell(scope, &splice, false)?,
            Err(_) => template::ShellRendered {
                script: run.to_string(),
                env: Default::default(),
            },
        };
        put_shell(&mut value, &mut shown, rendered);
    }
    Ok((value, shown))
}

/// A `shell` action's `run` as written and the `${var}`s it splices as shell text.
type ShellParts<'a> = Option<(&'a str, Vec<String>)>;

/// A `shell` action's parameters without `run` and `splice`, and those two apart.
fn split_shell(spec: &ActionSpec) -> (serde_json::Map<String, serde_json::Value>, ShellParts<'_>) {
    let mut plain = spec.params.clone();
    if spec.kind != "shell" {
        return (plain, None);
    }
    let Some(run) = spec.params.get("run").and_then(|v| v.as_str()) else {
        return (plain, None);
    };
    plain.remove("run");
    let splice = plain
        .remove("splice")
        .and_then(|v| {
            v.as_array().map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    (plain, Some((run, splice)))
}

/// The rendered script as `run`, its values added to `env` (shown masked).
fn put_shell(
    value: &mut serde_json::Value,
    shown: &mut serde_json::Value,
    rendered: template::ShellRendered,
) {
    for (tree, display) in [(value, false), (shown, true)] {
        let Some(map) = tree.as_object_mut() else {
            continue;
        };
        map.insert(
            "run".into(),
            serde_json::Value::String(rendered.script.clone()),
        );
        let env = map
            .entry("env")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(env) = env.as_object_mut() {
            for (name, (v, d)) in &rendered.env {
                let text = if display { d } else { v };
                env.insert(name.clone(), serde_json::Value::String(text.clone()));
            }
        }
    }
}

/// Renders every string in a parameter tree; returns the values and a masked copy for display.
fn render_tree(
    params: &serde_json::Map<String, serde_json::Value>,
    scope: &dyn Scope,
) -> Result<(serde_json::Value, serde_json::Value), Reference> {
    fn walk(
        value: &serde_json::Value,
        scope: &dyn Scope,
    ) -> Result<(serde_json::Value, serde_json::Value), Reference> {
        use serde_json::Value;
        Ok(match value {
            Value::String(s) => {
                // Strings were checked at load; an unparsable one cannot reach here.
                let rendered = match Template::parse(s) {
                    Ok(t) => t.render(scope)?,
                    Err(_) => Rendered {
                        value: s.clone(),
                        display: s.clone(),
                    },
                };
                (
                    Value::String(rendered.value),
                    Value::String(rendered.display),
                )
            }
            Value::Array(items) => {
                let mut values = Vec::new();
                let mut shown = Vec::new();
                for item in items {
                    let (v, d) = walk(item, scope)?;
                    values.push(v);
                    shown.push(d);
                }
                (Value::Array(values), Value::Array(shown))
            }
            Value::Object(map) => {
                let mut values = serde_json::Map::new();
                let mut shown = serde_json::Map::new();
                for (k, item) in map {
                    let (v, d) = walk(item, scope)?;
                    values.insert(k.clone(), v);
                    shown.insert(k.clone(), d);
                }
                (Value::Object(values), Value::Object(shown))
            }
            other => (other.clone(), other.clone()),
        })
    }
    walk(&serde_json::Value::Object(params.clone()), scope)
}

/// Shows an action's parameters with what is known filled in and secrets masked, a `shell`
/// action's `run` as it will really run (with the values it reads); never fails.
pub fn display_params(spec: &ActionSpec, scope: &dyn Scope) -> serde_json::Value {
    let (plain, shell) = split_shell(spec);
    let mut shown = display_tree(&plain, scope);
    if let Some((run, splice)) = shell {
        let rendered = Template::parse(run)
            .ok()
            .and_then(|t| t.render_shell(scope, &splice, true).ok())
            .unwrap_or_else(|| template::ShellRendered {
                script: run.to_string(),
                env: Default::default(),
            });
        let mut copy = shown.clone();
        put_shell(&mut copy, &mut shown, rendered);
    }
    shown
}

fn display_tree(
    params: &serde_json::Map<String, serde_json::Value>,
    scope: &dyn Scope,
) -> serde_json::Value {
    fn walk(value: &serde_json::Value, scope: &dyn Scope) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(match Template::parse(s) {
                Ok(t) => t.display(scope),
                Err(_) => s.clone(),
            }),
            Value::Array(items) => Value::Array(items.iter().map(|v| walk(v, scope)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), walk(v, scope)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    walk(&serde_json::Value::Object(params.clone()), scope)
}

#[cfg(test)]
mod tests;
