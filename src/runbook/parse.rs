//! From TOML text to a checked [`Runbook`], collecting every error with its place in the file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::time::Duration;

use sha2::{Digest, Sha256};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::graph;
use super::schema::{ActionCatalog, ParamType};
use super::template::{Reference, Scope, Template};
use super::{
    ActionSpec, Diagnostic, Diagnostics, LoadError, OnlyIf, Phase, Prelude, Rollback, Runbook,
    SecretSource, SourceFile, Step, TimeGate,
};

const ROOT_KEYS: &[&str] = &[
    "runbook", "vars", "secrets", "aws", "cost", "phase", "window", "state",
];
const WINDOW_KEYS: &[&str] = &["name", "from", "to", "notes"];
const AWS_KEYS: &[&str] = &[
    "account_id",
    "region",
    "profile",
    "endpoint_url",
    "cluster",
    "service",
    "container",
];
const COST_KEYS: &[&str] = &["region", "expected_monthly", "aws", "heroku"];
const COST_AWS_KEYS: &[&str] = &[
    "tasks",
    "vcpu",
    "memory_gb",
    "architecture",
    "spot",
    "task_public_ip",
    "rds_class",
    "rds_storage_gb",
    "multi_az",
    "albs",
    "alb_azs",
    "alb_lcus",
    "nat_gateways",
    "nat_gb",
    "log_gb",
    "ecr_gb",
    "ssm_advanced",
    "secrets",
    "route53_zones",
    "services",
    "cache_node",
];
const COST_HEROKU_KEYS: &[&str] = &["dynos", "postgres", "dyno_prices", "addons"];
const RUNBOOK_KEYS: &[&str] = &[
    "name",
    "app",
    "description",
    "approvals",
    "approval_ttl",
    "approvers",
];
const PHASE_KEYS: &[&str] = &["id", "title", "notes", "step"];
const SECRET_KEYS: &[&str] = &["env", "command", "description"];
const STEP_KEYS: &[&str] = &[
    "id",
    "title",
    "notes",
    "do",
    "needs",
    "destructive",
    "confirm",
    "rollback",
    "check",
    "timeout",
    "retries",
    "retry_delay",
    "outputs",
    "after",
    "starts_billing",
    "via",
    "only_if",
    "refuse_after",
    "approvals",
    "approvers",
];
const ONLY_IF_KEYS: &[&str] = &["value", "equals", "why"];
const AFTER_KEYS: &[&str] = &["step", "at_least"];
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(5);

type Value<'i> = Spanned<DeValue<'i>>;

struct VarScope<'a>(&'a BTreeMap<String, String>);

impl Scope for VarScope<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn secret(&self, _: &str) -> Option<String> {
        None
    }
    fn output(&self, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// A `${...}` found in a step, kept until every step is known.
struct FoundReference {
    reference: Reference,
    span: Range<usize>,
    step: usize,
}

struct Parser<'a> {
    catalog: &'a dyn ActionCatalog,
    diagnostics: Vec<Diagnostic>,
    vars: BTreeMap<String, String>,
    references: Vec<FoundReference>,
}

pub(super) fn parse(
    source: SourceFile,
    overrides: &BTreeMap<String, String>,
    catalog: &dyn ActionCatalog,
) -> Result<Runbook, LoadError> {
    let text = source.text.clone();
    let (root, errors) = DeTable::parse_recoverable(&text);
    if !errors.is_empty() {
        let items = errors
            .iter()
            .map(|e| {
                Diagnostic::new(
                    e.span().unwrap_or(0..0),
                    format!("invalid TOML: {}", e.message().trim()),
                )
            })
            .collect();
        return Err(LoadError::Invalid(Diagnostics { source, items }));
    }
    let root = root.into_inner();
    let mut parser = Parser {
        catalog,
        diagnostics: Vec::new(),
        vars: BTreeMap::new(),
        references: Vec::new(),
    };
    parser.check_keys(&root, ROOT_KEYS, "the runbook");

    let (name, app, description) = parser.header(&root, &text);
    let approvals = parser.approval_defaults(&root);
    parser.vars(&root, overrides)?;
    let secrets = parser.secrets(&root);
    let cost = parser.cost(&root);
    let aws = parser.aws(&root);
    let state = parser.state(&root);
    let (phases, mut steps) = parser.phases(&root, &source);
    parser.check_graph(&root, &steps, &secrets);
    let asks = approvals.count > 0 || steps.iter().any(|s| s.approvals.is_some_and(|n| n > 0));
    if asks && aws.is_none() {
        let span = Parser::key_span(&root, "runbook").unwrap_or(0..0);
        parser.error(
            span,
            "approvals are proven by each operator's AWS identity (sts:GetCallerIdentity): the runbook needs an [aws] section",
        );
    }
    let windows = parser.windows(&root, &steps, &source);
    // Digests are only meaningful for a valid runbook.
    if !parser.diagnostics.is_empty() {
        parser.diagnostics.sort_by_key(|d| d.span.start);
        return Err(LoadError::Invalid(Diagnostics {
            source,
            items: parser.diagnostics,
        }));
    }
    for step in &mut steps {
        step.digest = step_digest(step, &VarScope(&parser.vars));
    }
    Ok(Runbook {
        digest: short_digest(text.as_bytes()),
        source,
        name,
        app,
        description,
        vars: parser.vars,
        secrets,
        aws,
        cost,
        phases,
        steps,
        windows,
        state,
        approvals,
    })
}

/// The digest covers what the step does: not its wording (title, notes, rollback text) nor
/// how the file around it is laid out.
fn step_digest(step: &Step, vars: &VarScope<'_>) -> String {
    let params = |p: &serde_json::Map<String, serde_json::Value>| {
        expand_vars(&serde_json::Value::Object(p.clone()), vars)
    };
    let definition = serde_json::json!({
        "id": step.id,
        "do": step.action.kind,
        "params": params(&step.action.params),
        "check": step.check.as_ref().map(|c| serde_json::json!({"do": c.kind, "params": params(&c.params)})),
        "needs": step.needs,
        "destructive": step.destructive,
        "confirm": step.confirm,
        "timeout": step.timeout.map(|d| d.as_millis() as u64),
        "retries": step.retries,
        "retry_delay": step.retry_delay.as_millis() as u64,
        "outputs": step.outputs,
        "after": step.after.as_ref().map(|a| serde_json::json!({"step": a.step, "at_least": a.at_least.as_millis() as u64})),
        "via": step.via,
    });
    let mut definition = definition;
    // Only when present, as `only_if`: a step's approval policy is part of what it is.
    if let Some(map) = definition.as_object_mut() {
        if let Some(n) = step.approvals {
            map.insert("approvals".into(), serde_json::json!(n));
        }
        if let Some(a) = &step.approvers {
            map.insert("approvers".into(), serde_json::json!(a));
        }
    }
    // Only when present: the digests of steps without a condition stay what they were, so
    // journals written before `only_if` existed still match their steps.
    if let (Some(c), Some(map)) = (&step.only_if, definition.as_object_mut()) {
        map.insert(
            "only_if".into(),
            serde_json::json!({"value": expand_vars(&serde_json::Value::String(c.value.clone()), vars), "equals": c.equals}),
        );
    }
    short_digest(definition.to_string().as_bytes())
}

/// The first 64 bits of sha256, in hex: enough to tell two definitions apart, and short
/// enough to repeat on every journal line (the chain itself uses whole hashes).
fn short_digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// The same value with `${var}`s filled, so a changed variable changes the digest.
fn expand_vars(value: &serde_json::Value, vars: &VarScope<'_>) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            Value::String(Template::parse(s).map_or_else(|_| s.clone(), |t| t.expand_vars(vars)))
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| expand_vars(v, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), expand_vars(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    value.type_str()
}

fn to_json(value: &DeValue<'_>) -> serde_json::Value {
    match value {
        DeValue::String(s) => serde_json::Value::String(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map_or(serde_json::Value::Null, serde_json::Value::from),
        DeValue::Float(f) => f
            .as_str()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        DeValue::Boolean(b) => serde_json::Value::Bool(*b),
        DeValue::Datetime(d) => serde_json::Value::String(d.to_string()),
        DeValue::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| to_json(v.get_ref())).collect())
        }
        DeValue::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.get_ref().to_string(), to_json(v.get_ref())))
                .collect(),
        ),
    }
}

fn integer(value: &DeValue<'_>) -> Option<i64> {
    match value {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

fn suggestion(key: &str, allowed: &[&str]) -> Option<String> {
    allowed
        .iter()
        .map(|a| (strsim::levenshtein(key, a), a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| format!("did you mean `{a}`?"))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !id.starts_with('-')
}

impl Parser<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::new(span, message));
    }

    fn check_keys(&mut self, table: &DeTable<'_>, allowed: &[&str], context: &str) {
        for key in table.keys() {
            if !allowed.contains(&key.get_ref().as_ref()) {
                let mut d = Diagnostic::new(
                    key.span(),
                    format!("unknown key `{}` in {context}", key.get_ref()),
                );
                d.help = suggestion(key.get_ref(), allowed)
                    .or_else(|| Some(format!("allowed here: {}", allowed.join(", "))));
                self.diagnostics.push(d);
            }
        }
    }

    fn get<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<&'t Value<'i>> {
        table.get(key)
    }

    fn key_span(table: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
        table
            .get_key_value(key)
            .map(|(k, v)| k.span().start..v.span().end)
    }

    /// A string field; reports a wrong type, and a missing one when `required`.
    fn string(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        context: &str,
        required: Option<Range<usize>>,
    ) -> Option<(String, Range<usize>)> {
        match Self::get(table, key) {
            Some(v) => match v.get_ref() {
                DeValue::String(s) => Some((s.to_string(), v.span())),
                other => {
                    self.error(
                        v.span(),
                        format!(
                            "`{key}` in {context} must be a string, found {}",
                            type_name(other)
                        ),
                    );
                    None
                }
            },
            None => {
                if let Some(span) = required {
                    self.error(span, format!("{context} has no `{key}`"));
                }
                None
            }
        }
    }

    fn bool(&mut self, table: &DeTable<'_>, key: &str, context: &str) -> Option<bool> {
        let v = Self::get(table, key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    v.span(),
                    format!(
                        "`{key}` in {context} must be true or false, found {}",
                        type_name(other)
                    ),
                );
                None
            }
        }
    }

    fn string_list(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        context: &str,
    ) -> Vec<(String, Range<usize>)> {
        let Some(v) = Self::get(table, key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.error(
                v.span(),
                format!(
                    "`{key}` in {context} must be an array of strings, found {}",
                    type_name(v.get_ref())
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), item.span())),
                other => self.error(
                    item.span(),
                    format!(
                        "`{key}` in {context} must hold strings, found {}",
                        type_name(other)
                    ),
                ),
            }
        }
        out
    }

    /// A string that may use `${var}` but nothing filled at run time.
    fn vars_only(&mut self, text: &str, span: Range<usize>, what: &str) -> Option<String> {
        match Template::parse(text) {
            Ok(t) => {
                if let Some(other) = t.references().find(|r| !matches!(r, Reference::Var(_))) {
                    self.error(
                        span,
                        format!("{what} may use only `${{var}}` references, not `{other}`"),
                    );
                    return None;
                }
                match t.render(&VarScope(&self.vars)) {
                    Ok(r) => Some(r.value),
                    Err(missing) => {
                        self.undefined_var(span, &missing);
                        None
                    }
                }
            }
            Err(e) => {
                self.error(span, e.message);
                None
            }
        }
    }

    /// As `vars_only`, for a shell command: its values as data (see `Template::render_shell`).
    fn vars_only_shell(
        &mut self,
        text: &str,
        span: Range<usize>,
        what: &str,
    ) -> Option<(String, BTreeMap<String, String>)> {
        // The same checks and messages as for any vars-only string.
        self.vars_only(text, span.clone(), what)?;
        let rendered = Template::parse(text)
            .ok()?
            .render_shell(&VarScope(&self.vars), &[], false)
            .ok()?;
        Some((
            rendered.script,
            rendered.env.into_iter().map(|(k, (v, _))| (k, v)).collect(),
        ))
    }

    fn undefined_var(&mut self, span: Range<usize>, missing: &Reference) {
        let name = match missing {
            Reference::Var(n) => n.as_str(),
            _ => "",
        };
        let known: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        let mut d = Diagnostic::new(span, format!("undefined variable `{missing}`"));
        d.help = suggestion(name, &known).or_else(|| {
            Some(format!(
                "define it under [vars], or write `$${{{name}}}` for a literal (e.g. shell) `${{{name}}}`"
            ))
        });
        self.diagnostics.push(d);
    }

    fn duration(&mut self, text: &str, span: Range<usize>, what: &str) -> Option<Duration> {
        let expanded = self.vars_only(text, span.clone(), what)?;
        match humantime::parse_duration(expanded.trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    span,
                    format!("{what} `{expanded}` is not a duration ({e}); write e.g. \"90s\", \"5m\", \"7d\""),
                );
                None
            }
        }
    }

    /// `approvals = N` (0 to 10) in a table.
    fn approval_count(&mut self, table: &DeTable<'_>, context: &str) -> Option<u32> {
        let v = Self::get(table, "approvals")?;
        match integer(v.get_ref()) {
            Some(n) if (0..=10).contains(&n) => u32::try_from(n).ok(),
            _ => {
                self.error(
                    v.span(),
                    format!("`approvals` of {context} must be an integer from 0 to 10"),
                );
                None
            }
        }
    }

    /// An approver is an ARN pattern (`*` for any run of characters).
    fn check_approver(&mut self, pattern: &str, span: Range<usize>) {
        if !pattern.starts_with("arn:") {
            let mut d =
                Diagnostic::new(span, format!("approver `{pattern}` is not an ARN pattern"));
            d.help = Some("for example arn:aws:iam::123456789012:user/* or arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_*/*".into());
            self.diagnostics.push(d);
        }
    }

    /// `[runbook] approvals`, `approval_ttl` and `approvers`: what every destructive step asks
    /// for unless it says otherwise.
    fn approval_defaults(&mut self, root: &DeTable<'_>) -> super::ApprovalDefaults {
        let mut defaults = super::ApprovalDefaults::default();
        let Some(table) = Self::get(root, "runbook").and_then(|v| v.get_ref().as_table()) else {
            return defaults;
        };
        if let Some(n) = self.approval_count(table, "[runbook]") {
            defaults.count = n;
        }
        if let Some((text, span)) = self.string(table, "approval_ttl", "[runbook]", None) {
            if let Some(ttl) = self.duration(&text, span.clone(), "`approval_ttl`") {
                // STS takes a presigned request for at most 12 hours.
                if (Duration::from_secs(1)..=Duration::from_secs(12 * 3600)).contains(&ttl) {
                    defaults.ttl = ttl;
                } else {
                    self.error(span, "`approval_ttl` must be from 1s to 12h (STS honours a presigned proof of identity for 12 hours at most)");
                }
            }
        }
        defaults.approvers = self
            .string_list(table, "approvers", "[runbook]")
            .into_iter()
            .map(|(a, span)| {
                self.check_approver(&a, span);
                a
            })
            .collect();
        defaults
    }

    fn header(&mut self, root: &DeTable<'_>, text: &str) -> (String, String, String) {
        let whole = 0..text.lines().next().map_or(0, str::len);
        let Some(v) = Self::get(root, "runbook") else {
            self.error(
                whole,
                "the runbook has no [runbook] table (with `name` and `app`)",
            );
            return Default::default();
        };
        let Some(table) = v.get_ref().as_table() else {
            self.error(v.span(), "`runbook` must be a table");
            return Default::default();
        };
        self.check_keys(table, RUNBOOK_KEYS, "[runbook]");
        let span = Self::key_span(root, "runbook").unwrap_or(whole);
        let name = self.string(table, "name", "[runbook]", Some(span.clone()));
        let app = self.string(table, "app", "[runbook]", Some(span));
        let description = self.string(table, "description", "[runbook]", None);
        (
            name.map(|n| n.0).unwrap_or_default(),
            app.map(|n| n.0).unwrap_or_default(),
            description.map(|n| n.0).unwrap_or_default(),
        )
    }

    fn vars(
        &mut self,
        root: &DeTable<'_>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(), LoadError> {
        let mut raw: BTreeMap<String, (String, Range<usize>)> = BTreeMap::new();
        if let Some(v) = Self::get(root, "vars") {
            match v.get_ref().as_table() {
                Some(table) => {
                    for (key, value) in table.iter() {
                        let text = match value.get_ref() {
                            DeValue::String(s) => s.to_string(),
                            DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                                to_json(value.get_ref()).to_string()
                            }
                            other => {
                                self.error(
                                    value.span(),
                                    format!(
                                        "variable `{}` must be a string, number or boolean, found {}",
                                        key.get_ref(),
                                        type_name(other)
                                    ),
                                );
                                continue;
                            }
                        };
                        if !valid_id(key.get_ref()) {
                            self.error(
                                key.span(),
                                "variable names use letters, digits, `-` and `_`",
                            );
                        }
                        raw.insert(key.get_ref().to_string(), (text, value.span()));
                    }
                }
                None => self.error(v.span(), "`vars` must be a table"),
            }
        }
        for (key, value) in overrides {
            let Some(entry) = raw.get_mut(key) else {
                let known: Vec<&str> = raw.keys().map(String::as_str).collect();
                return Err(LoadError::UnknownVar(key.clone(), known.join(", ")));
            };
            entry.0 = value.clone();
        }
        let names: Vec<String> = raw.keys().cloned().collect();
        for name in names {
            let mut visiting = Vec::new();
            self.resolve_var(&name, &raw, &mut visiting);
        }
        Ok(())
    }

    fn resolve_var(
        &mut self,
        name: &str,
        raw: &BTreeMap<String, (String, Range<usize>)>,
        visiting: &mut Vec<String>,
    ) -> Option<String> {
        if let Some(done) = self.vars.get(name) {
            return Some(done.clone());
        }
        let (text, span) = raw.get(name)?;
        if visiting.iter().any(|v| v == name) {
            visiting.push(name.to_string());
            self.error(
                span.clone(),
                format!(
                    "variables refer to each other in a loop: {}",
                    visiting.join(" → ")
                ),
            );
            return None;
        }
        visiting.push(name.to_string());
        let template = match Template::parse(text) {
            Ok(t) => t,
            Err(e) => {
                self.error(span.clone(), e.message);
                return None;
            }
        };
        let mut value = String::new();
        let mut ok = true;
        for reference in template.references() {
            match reference {
                Reference::Var(inner) => {
                    if !raw.contains_key(inner) {
                        self.undefined_var(span.clone(), reference);
                        ok = false;
                    } else if self.resolve_var(inner, raw, visiting).is_none() {
                        ok = false;
                    }
                }
                other => {
                    self.error(
                        span.clone(),
                        format!(
                            "variable `{name}` may refer only to other variables, not `{other}`"
                        ),
                    );
                    ok = false;
                }
            }
        }
        visiting.pop();
        if !ok {
            return None;
        }
        if let Ok(r) = template.render(&VarScope(&self.vars)) {
            value = r.value;
        }
        self.vars.insert(name.to_string(), value.clone());
        Some(value)
    }

    /// `[state] backend = "s3://BUCKET/PREFIX"`: where the journal, the lock and the logs live.
    fn state(&mut self, root: &DeTable<'_>) -> Option<String> {
        let v = Self::get(root, "state")?;
        let Some(table) = v.get_ref().as_table() else {
            self.error(
                v.span(),
                "`state` must be a table: [state] backend = \"s3://BUCKET/PREFIX\"",
            );
            return None;
        };
        self.check_keys(table, &["backend"], "[state]");
        let (text, span) = self.string(table, "backend", "[state]", Some(v.span()))?;
        let text = self.vars_only(&text, span.clone(), "the state backend")?;
        match super::Backend::parse(&text) {
            Ok(_) => Some(text),
            Err(e) => {
                self.error(span, e);
                None
            }
        }
    }

    /// `[aws]`: account, region, profile, endpoint.
    fn aws(&mut self, root: &DeTable<'_>) -> Option<super::AwsSettings> {
        let v = Self::get(root, "aws")?;
        let Some(table) = v.get_ref().as_table() else {
            self.error(v.span(), "`aws` must be a table");
            return None;
        };
        self.check_keys(table, AWS_KEYS, "[aws]");
        let before = self.diagnostics.len();
        let json = self.expand_json_vars(&to_json(v.get_ref()), v.span());
        if self.diagnostics.len() > before {
            return None;
        }
        match serde_json::from_value::<super::AwsSettings>(json) {
            Ok(settings) => Some(settings),
            Err(e) => {
                if !e.to_string().contains("unknown field") {
                    self.error(v.span(), format!("[aws]: {e}"));
                }
                None
            }
        }
    }

    /// `[[window]]`: a stretch of the migration that matters to its users (the write freeze),
    /// from the end of one step to the end of another that depends on it.
    fn windows(
        &mut self,
        root: &DeTable<'_>,
        steps: &[Step],
        source: &SourceFile,
    ) -> Vec<super::Window> {
        let mut out: Vec<super::Window> = Vec::new();
        let Some(v) = Self::get(root, "window") else {
            return out;
        };
        let Some(items) = v.get_ref().as_array() else {
            self.error(
                v.span(),
                "`window` is a list of tables: [[window]] with name, from and to",
            );
            return out;
        };
        let known: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        for item in items.iter() {
            let Some(table) = item.get_ref().as_table() else {
                self.error(item.span(), "a [[window]] is a table: name, from, to");
                continue;
            };
            self.check_keys(table, WINDOW_KEYS, "[[window]]");
            let name = self.string(table, "name", "[[window]]", Some(item.span()));
            let from = self.string(table, "from", "[[window]]", Some(item.span()));
            let to = self.string(table, "to", "[[window]]", Some(item.span()));
            let notes = self
                .string(table, "notes", "[[window]]", None)
                .map(|(n, _)| n)
                .unwrap_or_default();
            let (Some((name, name_span)), Some((from, from_span)), Some((to, to_span))) =
                (name, from, to)
            else {
                continue;
            };
            if out.iter().any(|w| w.name == name) {
                self.error(name_span.clone(), format!("duplicate window `{name}`"));
            }
            let mut ok = true;
            for (id, span, key) in [(&from, &from_span, "from"), (&to, &to_span, "to")] {
                if !known.contains(&id.as_str()) {
                    let mut d = Diagnostic::new(
                        span.clone(),
                        format!("window `{name}`: `{key}` names unknown step `{id}`"),
                    );
                    d.help = suggestion(id, &known);
                    self.diagnostics.push(d);
                    ok = false;
                }
            }
            if ok && !graph::transitive_needs(steps, &to).contains(&from) {
                self.diagnostics.push(
                    Diagnostic::new(
                        to_span.clone(),
                        format!(
                            "window `{name}`: step `{to}` does not depend on `{from}`, so the window may never close after it opens"
                        ),
                    )
                    .with_help(format!("`{to}` must need `{from}`, directly or through other steps")),
                );
            }
            out.push(super::Window {
                name,
                from,
                to,
                notes,
                line: source.locate(item.span().start).line,
            });
        }
        out
    }

    /// `[cost]`: what the target is made of, for the estimator.
    fn cost(&mut self, root: &DeTable<'_>) -> Option<crate::cost::CostSpec> {
        let v = Self::get(root, "cost")?;
        let Some(table) = v.get_ref().as_table() else {
            self.error(v.span(), "`cost` must be a table");
            return None;
        };
        self.check_keys(table, COST_KEYS, "[cost]");
        for (key, allowed) in [("aws", COST_AWS_KEYS), ("heroku", COST_HEROKU_KEYS)] {
            if let Some(sub) = Self::get(table, key).and_then(|s| s.get_ref().as_table()) {
                self.check_keys(sub, allowed, &format!("[cost.{key}]"));
            }
        }
        let before = self.diagnostics.len();
        let json = self.expand_json_vars(&to_json(v.get_ref()), v.span());
        if self.diagnostics.len() > before {
            return None;
        }
        match serde_json::from_value::<crate::cost::CostSpec>(json) {
            Ok(spec) => Some(spec),
            Err(e) => {
                // Unknown keys were reported above with their places; what is left is a type.
                if !e.to_string().contains("unknown field") {
                    self.error(v.span(), format!("[cost]: {e}"));
                }
                None
            }
        }
    }

    /// Fills `${var}` in every string of a value (reporting other references at `span`).
    fn expand_json_vars(
        &mut self,
        value: &serde_json::Value,
        span: Range<usize>,
    ) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                Value::String(self.vars_only(s, span, "this value").unwrap_or_default())
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.expand_json_vars(i, span.clone()))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, i)| (k.clone(), self.expand_json_vars(i, span.clone())))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn secrets(&mut self, root: &DeTable<'_>) -> BTreeMap<String, SecretSource> {
        let mut out = BTreeMap::new();
        let Some(v) = Self::get(root, "secrets") else {
            return out;
        };
        let Some(table) = v.get_ref().as_table() else {
            self.error(v.span(), "`secrets` must be a table");
            return out;
        };
        for (key, value) in table.iter() {
            let name = key.get_ref().to_string();
            let context = format!("secret `{name}`");
            let Some(spec) = value.get_ref().as_table() else {
                self.error(
                    value.span(),
                    format!("{context} must be a table such as {{ env = \"VAR\" }} or {{ command = \"...\" }}"),
                );
                continue;
            };
            self.check_keys(spec, SECRET_KEYS, &context);
            let env = self.string(spec, "env", &context, None);
            let command = self.string(spec, "command", &context, None);
            let source = match (env, command) {
                (Some((env, _)), None) => SecretSource::Env(env),
                (None, Some((command, span))) => {
                    match self.vars_only_shell(&command, span, &format!("the command of {context}"))
                    {
                        Some((script, env)) => SecretSource::Command { script, env },
                        None => continue,
                    }
                }
                _ => {
                    self.error(
                        value.span(),
                        format!("{context} needs exactly one of `env` or `command`"),
                    );
                    continue;
                }
            };
            out.insert(name, source);
        }
        out
    }

    fn phases(&mut self, root: &DeTable<'_>, source: &SourceFile) -> (Vec<Phase>, Vec<Step>) {
        let mut phases = Vec::new();
        let mut steps = Vec::new();
        let Some(v) = Self::get(root, "phase") else {
            self.error(0..0, "the runbook has no [[phase]]");
            return (phases, steps);
        };
        let Some(items) = v.get_ref().as_array() else {
            self.error(
                v.span(),
                "`phase` must be an array of tables: write [[phase]]",
            );
            return (phases, steps);
        };
        for (n, item) in items.iter().enumerate() {
            let Some(table) = item.get_ref().as_table() else {
                self.error(item.span(), "each [[phase]] must be a table");
                continue;
            };
            let context = format!("phase {}", n + 1);
            self.check_keys(table, PHASE_KEYS, &context);
            let id = self
                .string(table, "id", &context, Some(item.span()))
                .map(|(id, span)| {
                    if !valid_id(&id) {
                        self.error(span, "ids use letters, digits, `-` and `_`");
                    }
                    id
                })
                .unwrap_or_default();
            let title = self
                .string(table, "title", &context, None)
                .and_then(|(t, span)| self.vars_only(&t, span, "a title"))
                .unwrap_or_else(|| id.clone());
            let notes = self
                .string(table, "notes", &context, None)
                .map(|n| n.0)
                .unwrap_or_default();
            let first = steps.len();
            if let Some(list) = Self::get(table, "step") {
                match list.get_ref().as_array() {
                    Some(list) => {
                        for step in list.iter() {
                            if let Some(s) = self.step(step, phases.len(), steps.len(), source) {
                                steps.push(s);
                            }
                        }
                    }
                    None => self.error(
                        list.span(),
                        "`step` must be an array of tables: write [[phase.step]]",
                    ),
                }
            }
            phases.push(Phase {
                id,
                title,
                notes,
                steps: first..steps.len(),
            });
        }
        (phases, steps)
    }

    fn step(
        &mut self,
        value: &Value<'_>,
        phase: usize,
        index: usize,
        source: &SourceFile,
    ) -> Option<Step> {
        let Some(table) = value.get_ref().as_table() else {
            self.error(value.span(), "each [[phase.step]] must be a table");
            return None;
        };
        let (id, id_span) = self.string(table, "id", "a step", Some(value.span()))?;
        if !valid_id(&id) {
            self.error(
                id_span.clone(),
                format!("step id `{id}`: ids use letters, digits, `-` and `_` (at most 64)"),
            );
        }
        let context = format!("step `{id}`");
        let title = self
            .string(table, "title", &context, None)
            .and_then(|(t, span)| self.vars_only(&t, span, "a title"))
            .unwrap_or_else(|| id.clone());
        let notes = self
            .string(table, "notes", &context, None)
            .map(|(n, span)| {
                self.collect_references(&n, span, index);
                n
            })
            .unwrap_or_default();
        let rollback = self.rollback(table, &context, index);
        let destructive = self.bool(table, "destructive", &context).unwrap_or(false);
        let confirm = self
            .string(table, "confirm", &context, None)
            .and_then(|(c, span)| {
                let phrase = self.vars_only(&c, span.clone(), "a confirm phrase")?;
                if phrase.trim().is_empty() {
                    self.error(span, "a confirm phrase cannot be empty");
                    return None;
                }
                Some(phrase)
            });
        let step_span = Self::key_span(table, "id").unwrap_or(id_span.clone());
        if destructive && confirm.is_none() && Self::get(table, "confirm").is_none() {
            self.diagnostics.push(
                Diagnostic::new(
                    step_span.clone(),
                    format!("{context} is destructive but has no `confirm` phrase"),
                )
                .with_help(
                    "add e.g. confirm = \"delete the heroku app\": the operator must type it",
                ),
            );
        }
        if !destructive && confirm.is_some() {
            if let Some(span) = Self::key_span(table, "confirm") {
                self.error(
                    span,
                    format!("{context} has a `confirm` phrase but is not `destructive = true`"),
                );
            }
        }
        let needs = self
            .string_list(table, "needs", &context)
            .into_iter()
            .map(|n| n.0)
            .collect();
        let outputs = self
            .string_list(table, "outputs", &context)
            .into_iter()
            .map(|(o, span)| {
                if !valid_id(&o) {
                    self.error(span, "output names use letters, digits, `-` and `_`");
                }
                o
            })
            .collect();
        let timeout = self
            .string(table, "timeout", &context, None)
            .and_then(|(t, span)| self.duration(&t, span, "`timeout`"));
        let retry_delay = self
            .string(table, "retry_delay", &context, None)
            .and_then(|(t, span)| self.duration(&t, span, "`retry_delay`"))
            .unwrap_or(DEFAULT_RETRY_DELAY);
        let retries = match Self::get(table, "retries") {
            None => 0,
            Some(v) => match integer(v.get_ref()) {
                Some(n) if (0..=100).contains(&n) => n as u32,
                _ => {
                    self.error(v.span(), "`retries` must be an integer from 0 to 100");
                    0
                }
            },
        };
        let after = self.time_gate(table, &context);
        let starts_billing = self
            .string_list(table, "starts_billing", &context)
            .into_iter()
            .filter_map(|(item, span)| {
                if crate::cost::LINE_ITEMS.contains(&item.as_str()) {
                    Some(item)
                } else {
                    let mut d = Diagnostic::new(span, format!("unknown cost line item `{item}`"));
                    d.help = suggestion(&item, crate::cost::LINE_ITEMS)
                        .or_else(|| Some(format!("known: {}", crate::cost::LINE_ITEMS.join(", "))));
                    self.diagnostics.push(d);
                    None
                }
            })
            .collect();
        let via = self.string(table, "via", &context, None).map(|(v, _)| v);
        let only_if = self.only_if(table, &context, index);
        let refuse_after = self
            .string(table, "refuse_after", &context, None)
            .map(|(v, _)| v);
        let approvals = self.approval_count(table, &context);
        let approvers = Self::get(table, "approvers").map(|_| {
            let list: Vec<String> = self
                .string_list(table, "approvers", &context)
                .into_iter()
                .map(|(a, span)| {
                    self.check_approver(&a, span);
                    a
                })
                .collect();
            list
        });
        let action = self.action(table, &context, value.span(), index, STEP_KEYS);
        let check = match Self::get(table, "check") {
            None => None,
            Some(v) => match v.get_ref().as_table() {
                Some(check) => self.action(
                    check,
                    &format!("the check of {context}"),
                    v.span(),
                    index,
                    &["do"],
                ),
                None => {
                    self.error(
                        v.span(),
                        "`check` must be a table such as { do = \"http\", url = \"...\" }",
                    );
                    None
                }
            },
        };
        // A step whose action is wrong still takes part in the graph checks, so every
        // error is reported in one pass; the diagnostic already stops the load.
        let action = action.unwrap_or_else(|| ActionSpec {
            kind: String::new(),
            params: serde_json::Map::new(),
        });
        Some(Step {
            id,
            title,
            notes,
            phase,
            action,
            check,
            needs,
            destructive,
            confirm,
            rollback,
            timeout,
            retries,
            retry_delay,
            outputs,
            after,
            starts_billing,
            via,
            only_if,
            refuse_after,
            approvals,
            approvers,
            digest: String::new(),
            line: source.locate(id_span.start).line,
        })
    }

    /// `rollback = "words"` or `rollback = { do = "...", ..., notes = "...", warn = { do = ... },
    /// via = "tunnel", refuse_after = "step" }`.
    fn rollback(&mut self, table: &DeTable<'_>, context: &str, index: usize) -> Option<Rollback> {
        let v = Self::get(table, "rollback")?;
        if v.get_ref().is_str() {
            let (text, span) = self.string(table, "rollback", context, None)?;
            self.collect_references(&text, span, index);
            return Some(Rollback {
                text: Some(text),
                action: None,
                warn: None,
                via: None,
                warn_via: None,
                refuse_after: None,
                first: Vec::new(),
            });
        }
        let Some(spec) = v.get_ref().as_table() else {
            self.error(
                v.span(),
                "`rollback` must be words, or an action such as { do = \"shell\", run = \"...\" }",
            );
            return None;
        };
        let what = format!("the rollback of {context}");
        let text = self.string(spec, "notes", &what, None).map(|(n, span)| {
            self.collect_references(&n, span, index);
            n
        });
        let via = self.string(spec, "via", &what, None).map(|(v, _)| v);
        let refuse_after = self
            .string(spec, "refuse_after", &what, None)
            .map(|(v, _)| v);
        let mut warn_via = None;
        let warn = match Self::get(spec, "warn") {
            None => None,
            Some(w) => match w.get_ref().as_table() {
                Some(warn) => {
                    let context = format!("the warning of {what}");
                    warn_via = self.string(warn, "via", &context, None).map(|(v, _)| v);
                    self.action(warn, &context, w.span(), index, &["do", "via"])
                }
                None => {
                    self.error(
                        w.span(),
                        "`warn` must be an action such as { do = \"db.writes\", ... }",
                    );
                    None
                }
            },
        };
        let mut first = Vec::new();
        if let Some(f) = Self::get(spec, "first") {
            match f.get_ref().as_array() {
                Some(items) => {
                    for (k, item) in items.iter().enumerate() {
                        let context = format!("`first` action {} of {what}", k + 1);
                        match item.get_ref().as_table() {
                            Some(t) => {
                                let via = self.string(t, "via", &context, None).map(|(v, _)| v);
                                if let Some(action) =
                                    self.action(t, &context, item.span(), index, &["do", "via"])
                                {
                                    first.push(Prelude { action, via });
                                }
                            }
                            None => self.error(
                                item.span(),
                                "each of `first` must be an action such as { do = \"elb.maintenance\", ... }",
                            ),
                        }
                    }
                }
                None => self.error(
                    f.span(),
                    "`first` must be a list of actions, run in order before the rollback's own",
                ),
            }
        }
        let action = self.action(
            spec,
            &what,
            v.span(),
            index,
            &["do", "notes", "via", "refuse_after", "warn", "first"],
        );
        if !first.is_empty() && action.is_none() {
            self.error(
                v.span(),
                format!("{what}: `first` runs before the rollback's own action, and it has none"),
            );
        }
        Some(Rollback {
            text,
            action,
            warn,
            via,
            warn_via,
            refuse_after,
            first,
        })
    }

    /// `only_if = { value = "${steps.X.outputs.Y}", equals = "1", why = "..." }`. The value
    /// must read an output of a step this one needs (checked with the other references), and
    /// no secret: a condition is shown and journaled.
    fn only_if(&mut self, table: &DeTable<'_>, context: &str, index: usize) -> Option<OnlyIf> {
        let v = Self::get(table, "only_if")?;
        let Some(spec) = v.get_ref().as_table() else {
            self.error(
                v.span(),
                "`only_if` must be a table such as { value = \"${steps.check.outputs.exit_code}\", equals = \"1\", why = \"...\" }",
            );
            return None;
        };
        let what = format!("`only_if` of {context}");
        self.check_keys(spec, ONLY_IF_KEYS, &what);
        let value = self.string(spec, "value", &what, Some(v.span()));
        // `equals = 1` reads as the text "1": outputs are text.
        let equals = match Self::get(spec, "equals").map(|e| integer(e.get_ref())) {
            Some(Some(n)) => Some(n.to_string()),
            _ => self
                .string(spec, "equals", &what, Some(v.span()))
                .and_then(|(e, span)| self.vars_only(&e, span, "`equals`")),
        };
        let why = self
            .string(spec, "why", &what, None)
            .and_then(|(w, span)| self.vars_only(&w, span, "`why`"));
        let (value, span) = value?;
        match Template::parse(&value) {
            Ok(t) => {
                let refs: Vec<&Reference> = t.references().collect();
                if refs.iter().any(|r| matches!(r, Reference::Secret(_))) {
                    self.error(
                        span.clone(),
                        format!("{what} reads a secret: a condition is shown and journaled, so it may read step outputs and variables only"),
                    );
                } else if !refs
                    .iter()
                    .any(|r| matches!(r, Reference::StepOutput { .. }))
                {
                    self.diagnostics.push(
                        Diagnostic::new(
                            span.clone(),
                            format!("{what} reads no step output: its value would be known before anything ran"),
                        )
                        .with_help("refer to an output of a step it needs, e.g. value = \"${steps.migrations-pending.outputs.exit_code}\""),
                    );
                }
                self.collect_references(&value, span, index);
            }
            Err(e) => self.error(span, e.message),
        }
        Some(OnlyIf {
            value,
            equals: equals?,
            why,
        })
    }

    fn time_gate(&mut self, table: &DeTable<'_>, context: &str) -> Option<TimeGate> {
        let v = Self::get(table, "after")?;
        let Some(gate) = v.get_ref().as_table() else {
            self.error(
                v.span(),
                "`after` must be a table such as { step = \"dns-cutover\", at_least = \"7d\" }",
            );
            return None;
        };
        let what = format!("`after` of {context}");
        self.check_keys(gate, AFTER_KEYS, &what);
        let step = self.string(gate, "step", &what, Some(v.span()));
        let at_least = self
            .string(gate, "at_least", &what, Some(v.span()))
            .and_then(|(t, span)| self.duration(&t, span, "`at_least`"));
        Some(TimeGate {
            step: step?.0,
            at_least: at_least?,
        })
    }

    /// The action of a step (or of its check): `do` plus that kind's parameters.
    fn action(
        &mut self,
        table: &DeTable<'_>,
        context: &str,
        span: Range<usize>,
        step: usize,
        own_keys: &[&str],
    ) -> Option<ActionSpec> {
        let (kind, kind_span) = self.string(table, "do", context, Some(span.clone()))?;
        let Some(schema) = self.catalog.schema(&kind) else {
            let kinds = self.catalog.kinds();
            let mut d = Diagnostic::new(
                kind_span,
                format!("unknown action kind `{kind}` in {context}"),
            );
            d.help = suggestion(&kind, &kinds)
                .or_else(|| Some(format!("known kinds: {}", kinds.join(", "))));
            self.diagnostics.push(d);
            return None;
        };
        let schema = *schema;
        let mut params = serde_json::Map::new();
        let param_names: Vec<&str> = schema.params.iter().map(|p| p.name).collect();
        for (key, value) in table.iter() {
            let key_text = key.get_ref().as_ref();
            if own_keys.contains(&key_text) {
                continue;
            }
            let Some(spec) = schema.params.iter().find(|p| p.name == key_text) else {
                let mut allowed = param_names.clone();
                allowed.extend(own_keys.iter().filter(|k| **k != "do"));
                let mut d = Diagnostic::new(
                    key.span(),
                    format!("unknown key `{key_text}` in {context} (action `{kind}`)"),
                );
                d.help = suggestion(key_text, &allowed)
                    .or_else(|| Some(format!("`{kind}` takes: {}", param_names.join(", "))));
                self.diagnostics.push(d);
                continue;
            };
            if self.param_type_ok(spec.ty, value, key_text, context) {
                self.collect_json_references(value, step);
                params.insert(key_text.to_string(), to_json(value.get_ref()));
            }
        }
        for spec in schema.params.iter().filter(|p| p.required) {
            if !params.contains_key(spec.name) && table.get(spec.name).is_none() {
                self.error(
                    Self::key_span(table, "do").unwrap_or(span.clone()),
                    format!(
                        "{context}: action `{kind}` needs `{}` ({})",
                        spec.name, spec.help
                    ),
                );
            }
        }
        Some(ActionSpec { kind, params })
    }

    fn param_type_ok(
        &mut self,
        ty: ParamType,
        value: &Value<'_>,
        key: &str,
        context: &str,
    ) -> bool {
        let v = value.get_ref();
        let ok = match ty {
            ParamType::Any => true,
            ParamType::String => v.is_str(),
            ParamType::Integer => v.is_integer() || v.is_str(),
            ParamType::Bool => v.is_bool(),
            ParamType::Duration => v.is_str(),
            ParamType::StringList => v
                .as_array()
                .is_some_and(|items| items.iter().all(|i| i.get_ref().is_str())),
            ParamType::StringMap => v.as_table().is_some_and(|t| {
                t.values()
                    .all(|i| i.get_ref().is_str() || i.get_ref().is_integer())
            }),
        };
        if !ok {
            self.error(
                value.span(),
                format!(
                    "`{key}` in {context} must be {}, found {}",
                    ty.describe(),
                    type_name(v)
                ),
            );
            return false;
        }
        if ty == ParamType::Duration {
            if let Some(text) = v.as_str() {
                let template = Template::parse(text);
                if let Ok(t) = template {
                    if !t.has_references() && humantime::parse_duration(text.trim()).is_err() {
                        self.error(
                            value.span(),
                            format!("`{key}` `{text}` is not a duration; write e.g. \"90s\", \"5m\", \"7d\""),
                        );
                        return false;
                    }
                }
            }
        }
        true
    }

    fn collect_json_references(&mut self, value: &Value<'_>, step: usize) {
        match value.get_ref() {
            DeValue::String(s) => self.collect_references(s, value.span(), step),
            DeValue::Array(items) => {
                for item in items.iter() {
                    self.collect_json_references(item, step);
                }
            }
            DeValue::Table(t) => {
                for item in t.values() {
                    self.collect_json_references(item, step);
                }
            }
            _ => {}
        }
    }

    fn collect_references(&mut self, text: &str, span: Range<usize>, step: usize) {
        match Template::parse(text) {
            Ok(t) => {
                for reference in t.references() {
                    self.references.push(FoundReference {
                        reference: reference.clone(),
                        span: span.clone(),
                        step,
                    });
                }
            }
            Err(e) => self.error(span, e.message),
        }
    }

    fn check_graph(
        &mut self,
        root: &DeTable<'_>,
        steps: &[Step],
        secrets: &BTreeMap<String, SecretSource>,
    ) {
        // Spans of each step's `id` and `needs`, found again from the tree for precise errors.
        let mut id_spans: HashMap<String, Range<usize>> = HashMap::new();
        let mut needs_spans: HashMap<(String, String), Range<usize>> = HashMap::new();
        let mut after_spans: HashMap<String, Range<usize>> = HashMap::new();
        let mut via_spans: HashMap<String, Range<usize>> = HashMap::new();
        let step_tables = Self::get(root, "phase")
            .and_then(|p| p.get_ref().as_array())
            .into_iter()
            .flat_map(|phases| phases.iter())
            .filter_map(|p| p.get_ref().as_table())
            .filter_map(|p| Self::get(p, "step").and_then(|s| s.get_ref().as_array()))
            .flat_map(|s| s.iter())
            .filter_map(|s| s.get_ref().as_table());
        let mut seen_ids: BTreeSet<String> = BTreeSet::new();
        for table in step_tables {
            let Some(id) = Self::get(table, "id") else {
                continue;
            };
            let Some(id_text) = id.get_ref().as_str() else {
                continue;
            };
            if !seen_ids.insert(id_text.to_string()) {
                self.error(id.span(), format!("duplicate step id `{id_text}`"));
                continue;
            }
            id_spans.insert(id_text.to_string(), id.span());
            if let Some(needs) = Self::get(table, "needs").and_then(|n| n.get_ref().as_array()) {
                for n in needs.iter() {
                    if let Some(text) = n.get_ref().as_str() {
                        needs_spans.insert((id_text.to_string(), text.to_string()), n.span());
                    }
                }
            }
            if let Some(via) = Self::get(table, "via") {
                via_spans.insert(id_text.to_string(), via.span());
            }
            if let Some(after) = Self::get(table, "after") {
                let span = after
                    .get_ref()
                    .as_table()
                    .and_then(|t| Self::get(t, "step"))
                    .map_or(after.span(), |s| s.span());
                after_spans.insert(id_text.to_string(), span);
            }
        }
        let known: BTreeSet<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        let known_list: Vec<&str> = known.iter().copied().collect();
        for step in steps {
            for need in &step.needs {
                let span = needs_spans
                    .get(&(step.id.clone(), need.clone()))
                    .cloned()
                    .unwrap_or_else(|| id_spans.get(&step.id).cloned().unwrap_or(0..0));
                if need == &step.id {
                    self.error(span, format!("step `{}` needs itself", step.id));
                } else if !known.contains(need.as_str()) {
                    let mut d = Diagnostic::new(
                        span,
                        format!("step `{}` needs unknown step `{need}`", step.id),
                    );
                    d.help = suggestion(need, &known_list);
                    self.diagnostics.push(d);
                }
            }
            if let Some(via) = &step.via {
                let span = via_spans.get(&step.id).cloned().unwrap_or(0..0);
                match steps.iter().find(|s| &s.id == via) {
                    None => {
                        let mut d = Diagnostic::new(
                            span,
                            format!("`via` of step `{}` names unknown step `{via}`", step.id),
                        );
                        d.help = suggestion(via, &known_list);
                        self.diagnostics.push(d);
                    }
                    Some(tunnel) if tunnel.action.kind != "aws.tunnel" => self.error(
                        span,
                        format!(
                            "`via` of step `{}` names `{via}`, a `{}` step: `via` takes an `aws.tunnel` step",
                            step.id, tunnel.action.kind
                        ),
                    ),
                    Some(_) if !graph::transitive_needs(steps, &step.id).contains(via) => {
                        self.diagnostics.push(
                            Diagnostic::new(
                                span,
                                format!(
                                    "step `{}` goes through the tunnel `{via}` but does not need it",
                                    step.id
                                ),
                            )
                            .with_help(format!(
                                "add \"{via}\" to its `needs`: the tunnel is checked before its first use"
                            )),
                        )
                    }
                    Some(_) => {}
                }
            }
            if let Some(after) = &step.refuse_after {
                if !known.contains(after.as_str()) {
                    let span = id_spans.get(&step.id).cloned().unwrap_or(0..0);
                    let mut d = Diagnostic::new(
                        span,
                        format!(
                            "`refuse_after` of step `{}` names unknown step `{after}`",
                            step.id
                        ),
                    );
                    d.help = suggestion(after, &known_list);
                    self.diagnostics.push(d);
                }
            }
            if let Some(gate) = &step.after {
                if !known.contains(gate.step.as_str()) {
                    let span = after_spans.get(&step.id).cloned().unwrap_or(0..0);
                    let mut d = Diagnostic::new(
                        span,
                        format!(
                            "`after` of step `{}` names unknown step `{}`",
                            step.id, gate.step
                        ),
                    );
                    d.help = suggestion(&gate.step, &known_list);
                    self.diagnostics.push(d);
                }
            }
        }
        let edges: Vec<(String, Vec<String>)> = steps
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    s.needs.iter().filter(|n| **n != s.id).cloned().collect(),
                )
            })
            .collect();
        for cycle in graph::cycles(&edges) {
            let first = &cycle[0];
            let span = needs_spans
                .get(&(first.clone(), cycle[1].clone()))
                .cloned()
                .unwrap_or_else(|| id_spans.get(first).cloned().unwrap_or(0..0));
            self.error(span, format!("dependency cycle: {}", cycle.join(" → ")));
        }
        for step in steps {
            let Some(rollback) = &step.rollback else {
                continue;
            };
            let span = id_spans.get(&step.id).cloned().unwrap_or(0..0);
            if let Some(after) = &rollback.refuse_after {
                if !known.contains(after.as_str()) {
                    let mut d = Diagnostic::new(
                        span.clone(),
                        format!(
                            "`refuse_after` of the rollback of step `{}` names unknown step `{after}`",
                            step.id
                        ),
                    );
                    d.help = suggestion(after, &known_list);
                    self.diagnostics.push(d);
                }
            }
            let firsts: Vec<(&Option<String>, &str)> = rollback
                .first
                .iter()
                .map(|f| (&f.via, "rollback's `first` action"))
                .collect();
            for (via, whose) in [
                (&rollback.via, "rollback"),
                (&rollback.warn_via, "rollback's warning"),
            ]
            .into_iter()
            .chain(firsts)
            {
                let Some(via) = via else { continue };
                if !steps
                    .iter()
                    .any(|s| &s.id == via && s.action.kind == "aws.tunnel")
                {
                    self.error(
                        span.clone(),
                        format!(
                            "`via` of the {whose} of step `{}` must name an `aws.tunnel` step, not `{via}`",
                            step.id
                        ),
                    );
                }
            }
            if rollback.text.is_none() && rollback.action.is_none() {
                self.error(
                    span,
                    format!("the rollback of step `{}` says nothing", step.id),
                );
            }
        }
        let references = std::mem::take(&mut self.references);
        for found in references {
            let Some(step) = steps.get(found.step) else {
                continue;
            };
            match &found.reference {
                Reference::Var(name) => {
                    if !self.vars.contains_key(name) {
                        self.undefined_var(found.span.clone(), &found.reference);
                    }
                }
                Reference::Secret(name) => {
                    if !secrets.contains_key(name) {
                        let names: Vec<&str> = secrets.keys().map(String::as_str).collect();
                        let mut d = Diagnostic::new(
                            found.span.clone(),
                            format!("undeclared secret `{}`", found.reference),
                        );
                        d.help = suggestion(name, &names).or_else(|| {
                            Some(format!(
                                "declare it under [secrets], e.g. {name} = {{ env = \"{name}\" }}"
                            ))
                        });
                        self.diagnostics.push(d);
                    }
                }
                Reference::StepOutput { step: source, name } => {
                    let Some(source_step) = steps.iter().find(|s| &s.id == source) else {
                        self.error(
                            found.span.clone(),
                            format!("`{}` refers to unknown step `{source}`", found.reference),
                        );
                        continue;
                    };
                    let kind_outputs = self
                        .catalog
                        .schema(&source_step.action.kind)
                        .map(|s| s.outputs)
                        .unwrap_or(&[]);
                    if !source_step.outputs.contains(name) && !kind_outputs.contains(&name.as_str())
                    {
                        self.error(
                            found.span.clone(),
                            format!(
                                "step `{source}` has no output `{name}` (add it to that step's `outputs`)"
                            ),
                        );
                    } else if source != &step.id
                        && !graph::transitive_needs(steps, &step.id).contains(source)
                    {
                        self.diagnostics.push(
                            Diagnostic::new(
                                found.span.clone(),
                                format!(
                                    "step `{}` uses an output of `{source}` but does not need it",
                                    step.id
                                ),
                            )
                            .with_help(format!("add \"{source}\" to its `needs`")),
                        );
                    }
                }
            }
        }
    }
}
