//! `ssm.sync` (parameters under a prefix from a `.env` file or Heroku's config, as
//! SecureString, with a diff whose values are masked) and `ssm.verify` (every key of
//! `.env.example` exists).
//!
//! Heroku manages some config vars itself (the attachment URLs of its add-ons: `DATABASE_URL`,
//! `HEROKU_POSTGRESQL_<COLOR>_URL`, `REDIS_URL`, …). Their values point at Heroku and rotate, so
//! `ssm.sync` never copies them: each must be mapped (`set`, e.g. `DATABASE_URL` from RDS) or
//! skipped (`skip`) by name, or the step fails before writing anything.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ssm::types::ParameterType;

use super::{explain, prepare, Session};
use crate::actions::{Action, ActionContext, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Sync(pub Arc<Session>);
pub struct Verify(pub Arc<Session>);
pub struct Restore(pub Arc<Session>);

static SYNC: ActionSchema = ActionSchema {
    kind: "ssm.sync",
    summary:
        "writes parameters under a prefix as SecureString, showing the diff with values masked",
    params: &[
        ParamSpec::required("prefix", ParamType::String, "e.g. /gengar/prod/"),
        ParamSpec::optional(
            "env_file",
            ParamType::String,
            "a .env file (KEY=VALUE lines)",
        ),
        ParamSpec::optional(
            "heroku_json",
            ParamType::String,
            "a file holding `heroku config --json -a APP`",
        ),
        ParamSpec::optional(
            "heroku_app",
            ParamType::String,
            "read `heroku config --json -a APP` directly (nothing is written to disk)",
        ),
        ParamSpec::optional(
            "set",
            ParamType::Any,
            "keys set from elsewhere: { DATABASE_URL = { value = \"${secret.RDS_DATABASE_URL}\", from = \"RDS\" } } (or a plain string)",
        ),
        ParamSpec::optional(
            "skip",
            ParamType::StringList,
            "keys of the source not to write",
        ),
        ParamSpec::optional(
            "delete_missing",
            ParamType::Bool,
            "delete parameters the source does not have (false)",
        ),
    ],
    outputs: &["added", "changed", "removed", "versions"],
    needs_operator_note: false,
};

static VERIFY: ActionSchema = ActionSchema {
    kind: "ssm.verify",
    summary: "checks that every key of an example env file exists under a prefix",
    params: &[
        ParamSpec::required("prefix", ParamType::String, "e.g. /gengar/prod/"),
        ParamSpec::required(
            "example_file",
            ParamType::String,
            "e.g. gengar/.env.example",
        ),
    ],
    outputs: &[],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncParams {
    prefix: String,
    env_file: Option<String>,
    heroku_json: Option<String>,
    heroku_app: Option<String>,
    #[serde(default)]
    set: BTreeMap<String, SetValue>,
    #[serde(default)]
    skip: Vec<String>,
    #[serde(default)]
    delete_missing: bool,
}

/// A key set from elsewhere than the source: its value, and where it comes from (for the diff).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum SetValue {
    Plain(String),
    From { value: String, from: Option<String> },
}

impl SetValue {
    fn value(&self) -> &str {
        match self {
            SetValue::Plain(v) | SetValue::From { value: v, .. } => v,
        }
    }

    fn origin(&self) -> String {
        match self {
            SetValue::From {
                from: Some(from), ..
            } => format!("set from {from}"),
            _ => "set by the runbook".to_string(),
        }
    }
}

/// Config vars Heroku's add-ons manage: their values point at Heroku's resources and rotate.
const HEROKU_MANAGED: &[&str] = &[
    r"^DATABASE_URL$",
    r"^DATABASE_CONNECTION_POOL_URL$",
    r"^JDBC_DATABASE_(URL|USERNAME|PASSWORD)$",
    r"^HEROKU_POSTGRESQL_[A-Z0-9_]+_(URL|JDBC_URL)$",
    r"^REDIS(_TLS)?_URL$",
    r"^HEROKU_REDIS_[A-Z0-9_]+(_TLS)?_URL$",
    r"^KAFKA_(URL|CLIENT_CERT|CLIENT_CERT_KEY|TRUSTED_CERT|PREFIX)$",
    r"^HEROKU_KAFKA_[A-Z0-9_]+$",
];

/// Whether Heroku manages this config var (an add-on's attachment).
pub fn heroku_managed(key: &str) -> bool {
    static PATTERNS: std::sync::LazyLock<regex::RegexSet> = std::sync::LazyLock::new(|| {
        regex::RegexSet::new(HEROKU_MANAGED).unwrap_or_else(|_| regex::RegexSet::empty())
    });
    PATTERNS.is_match(key)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyParams {
    prefix: String,
    example_file: String,
}

/// KEY=VALUE lines: comments, blank lines and `export ` skipped, surrounding quotes removed.
pub fn parse_dotenv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.strip_prefix("export ").unwrap_or(l))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), unquoted.to_string())
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn read(work_dir: &Path, file: &str) -> Result<String, Outcome> {
    let path = work_dir.join(file);
    std::fs::read_to_string(&path)
        .map_err(|e| Outcome::failed(format!("cannot read {}: {e}", path.display())))
}

fn normalise(prefix: &str) -> String {
    let mut p = prefix.trim().to_string();
    if !p.starts_with('/') {
        p.insert(0, '/');
    }
    if !p.ends_with('/') {
        p.push('/');
    }
    p
}

/// Every parameter under `prefix`, by key (the name without the prefix), decrypted.
async fn existing(
    ssm: &aws_sdk_ssm::Client,
    prefix: &str,
) -> Result<BTreeMap<String, (String, i64)>, Outcome> {
    let mut out = BTreeMap::new();
    let mut token = None;
    loop {
        let page = ssm
            .get_parameters_by_path()
            .path(prefix)
            .recursive(true)
            .with_decryption(true)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("ssm:GetParametersByPath", &e)))?;
        for p in page.parameters() {
            let name = p.name().unwrap_or_default();
            out.insert(
                name.strip_prefix(prefix).unwrap_or(name).to_string(),
                (p.value().unwrap_or_default().to_string(), p.version()),
            );
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

#[async_trait]
impl Action for Sync {
    fn schema(&self) -> &'static ActionSchema {
        &SYNC
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let source = match (
            params
                .get("env_file")
                .or_else(|| params.get("heroku_json"))
                .and_then(|v| v.as_str()),
            params.get("heroku_app").and_then(|v| v.as_str()),
        ) {
            (Some(file), _) => file.to_string(),
            (None, Some(app)) => format!("the config vars of Heroku app {app}"),
            (None, None) => "the keys of `set`".to_string(),
        };
        format!(
            "write {source} to SSM under {} as SecureString",
            params.get("prefix").and_then(|v| v.as_str()).unwrap_or("?")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<SyncParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        // Stops at once when cancelled: a request under way is dropped.
        tokio::select! {
            result = sync(&config, &p, &ctx) => result.unwrap_or_else(|o| o),
            () = ctx.cancel.cancelled() => Outcome::Cancelled,
        }
    }
}

/// `heroku config --json` output as key → value.
fn heroku_config(text: &str, what: &str) -> Result<BTreeMap<String, String>, Outcome> {
    Ok(
        serde_json::from_str::<BTreeMap<String, serde_json::Value>>(text)
            .map_err(|e| {
                Outcome::failed(format!("{what} is not `heroku config --json` output: {e}"))
            })?
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect(),
    )
}

/// Runs `heroku config --json -a APP` and keeps its output in memory only: the production
/// secrets never touch the disk. Its error output is shown; cancellation kills it.
async fn heroku_config_of(app: &str, ctx: &ActionContext) -> Result<String, Outcome> {
    ctx.report
        .info(format!(
            "reading the config vars of {app} (heroku config --json)"
        ))
        .await;
    let stdout = crate::actions::heroku::heroku_cli(&["config", "--json", "-a", app], ctx).await?;
    String::from_utf8(stdout)
        .map_err(|_| Outcome::failed("`heroku config --json` printed something that is not UTF-8"))
}

async fn sync(
    config: &aws_config::SdkConfig,
    p: &SyncParams,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    let from_heroku = p.heroku_json.is_some() || p.heroku_app.is_some();
    let source: Option<BTreeMap<String, String>> =
        match (&p.env_file, &p.heroku_json, &p.heroku_app) {
            (Some(file), None, None) => Some(parse_dotenv(&read(&ctx.work_dir, file)?)),
            (None, Some(file), None) => Some(heroku_config(&read(&ctx.work_dir, file)?, file)?),
            (None, None, Some(app)) => Some(heroku_config(
                &heroku_config_of(app, ctx).await?,
                "heroku config --json",
            )?),
            (None, None, None) if !p.set.is_empty() => None,
            _ => {
                return Err(Outcome::failed(
                    "give exactly one of `env_file`, `heroku_json` or `heroku_app` (or only `set`)",
                ))
            }
        };
    // Heroku's add-on variables are never copied: each is mapped or skipped by name.
    if from_heroku {
        let unmapped: Vec<&String> = source
            .iter()
            .flat_map(|s| s.keys())
            .filter(|k| heroku_managed(k) && !p.set.contains_key(*k) && !p.skip.contains(*k))
            .collect();
        if !unmapped.is_empty() {
            let names: Vec<&str> = unmapped.iter().map(|k| k.as_str()).collect();
            return Err(Outcome::failed(format!(
                "{} managed by a Heroku add-on: its value points at Heroku and rotates, so it is never copied. \
                 Map it (`set = {{ {} = {{ value = \"${{secret.RDS_DATABASE_URL}}\", from = \"RDS\" }} }}`) \
                 or list it in `skip`; nothing was written",
                names.join(", "),
                names.first().copied().unwrap_or("DATABASE_URL")
            )));
        }
    }
    // What is written: the source less the skipped keys, then the keys set from elsewhere.
    let mut wanted: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    for (key, value) in source.iter().flatten() {
        if p.skip.contains(key) {
            ctx.report.info(format!("  {key} skipped (`skip`)")).await;
        } else if !p.set.contains_key(key) {
            wanted.insert(key.clone(), (value.clone(), None));
        }
    }
    for (key, set) in &p.set {
        let note = match source.as_ref().and_then(|s| s.get(key)) {
            Some(_) if from_heroku => format!("{}, not Heroku's value", set.origin()),
            Some(_) => format!("{}, not the source's value", set.origin()),
            None => set.origin(),
        };
        wanted.insert(key.clone(), (set.value().to_string(), Some(note)));
    }
    let prefix = normalise(&p.prefix);
    let ssm = aws_sdk_ssm::Client::new(config);
    let current = existing(&ssm, &prefix).await?;
    let (mut added, mut changed, mut removed) = (0u32, 0u32, 0u32);
    // For the rollback, each written key's version before its first change (none when added)
    // and the version written. What an earlier attempt recorded is kept: a re-run finds the
    // key as that attempt left it, and the version to go back to is the one before.
    let mut versions: BTreeMap<String, Written> =
        match ctx.recorded.get(&ctx.step).and_then(|o| o.get("versions")) {
            None => BTreeMap::new(),
            Some(text) => parse_versions(text)?,
        };
    // An earlier attempt's entry stays only while the key still holds what that attempt
    // wrote: a key changed since (by hand, or put back by a rollback) is the world as it is
    // now, and what a rollback would go back to is read anew below.
    versions.retain(|key, w| current.get(key).map(|(_, v)| *v) == Some(w.by_the_sync()));
    let mut writes = Vec::new();
    // Values are secrets: the diff names keys only.
    for (key, (value, origin)) in &wanted {
        let origin = origin
            .as_deref()
            .map(|o| format!(" ({o})"))
            .unwrap_or_default();
        let verb = match current.get(key) {
            None => "added",
            Some((old, _)) if old != value => "changed",
            Some(_) => {
                if !origin.is_empty() {
                    ctx.report
                        .info(format!("= {key} = ***{origin}, unchanged"))
                        .await;
                }
                continue;
            }
        };
        let before = current.get(key).map(|(_, v)| *v);
        versions
            .entry(key.clone())
            .and_modify(|w| w.written = None)
            .or_insert(Written {
                previous: before,
                written: None,
            });
        writes.push((key, value, verb, origin));
    }
    // What each write replaces is on record before the first of them.
    if !writes.is_empty() {
        ctx.report
            .output("versions", versions_text(&versions))
            .await;
        ctx.report.recorded().await;
    }
    for (key, value, verb, origin) in writes {
        let written = put_secure(&ssm, &format!("{prefix}{key}"), value).await;
        if let Some(w) = versions.get_mut(key.as_str()) {
            w.written = written.as_ref().ok().copied();
        }
        // Each write on record as it lands: a sync cut off after it keeps it.
        ctx.report
            .output("versions", versions_text(&versions))
            .await;
        written?;
        if verb == "added" {
            added += 1;
            ctx.report.info(format!("+ {key} = ***{origin}")).await;
        } else {
            changed += 1;
            ctx.report
                .info(format!("~ {key} = *** (changed){origin}"))
                .await;
        }
    }
    // With only `set`, the other parameters under the prefix are not this step's business.
    let others: Vec<&String> = match &source {
        Some(_) => current
            .keys()
            .filter(|k| !wanted.contains_key(*k) && !p.skip.contains(*k))
            .collect(),
        None => Vec::new(),
    };
    for key in others {
        removed += 1;
        if p.delete_missing {
            ssm.delete_parameter()
                .name(format!("{prefix}{key}"))
                .send()
                .await
                .map_err(|e| Outcome::failed(explain("ssm:DeleteParameter", &e)))?;
            ctx.report.info(format!("- {key} (deleted)")).await;
        } else {
            ctx.report
                .info(format!(
                    "- {key} is not in the source (kept; delete_missing = true removes it)"
                ))
                .await;
        }
    }
    let unchanged = wanted.len() as u32 - added - changed;
    ctx.report.output("added", added.to_string()).await;
    ctx.report.output("changed", changed.to_string()).await;
    ctx.report.output("removed", removed.to_string()).await;
    ctx.report
        .output("versions", versions_text(&versions))
        .await;
    Ok(Outcome::Succeeded {
        note: Some(format!(
            "{added} added, {changed} changed, {unchanged} unchanged, {removed} not in the source"
        )),
    })
}

static RESTORE: ActionSchema = ActionSchema {
    kind: "ssm.restore",
    summary: "puts parameters back to the versions an ssm.sync step replaced (deleting the ones it added), if they still hold what it wrote",
    params: &[
        ParamSpec::required("prefix", ParamType::String, "the ssm.sync step's prefix"),
        ParamSpec::required(
            "versions",
            ParamType::String,
            "the `versions` output of the ssm.sync step",
        ),
    ],
    outputs: &[],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreParams {
    prefix: String,
    versions: String,
}

/// One key in a sync's `versions` output: the version before the sync first changed it (none:
/// the sync added it) and the version it wrote — none while the write is under way, or when
/// the sync stopped before it could record it (then the one version after `previous` is the
/// sync's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Written {
    previous: Option<i64>,
    written: Option<i64>,
}

impl Written {
    /// The version the sync wrote, or the one it must have written.
    fn by_the_sync(&self) -> i64 {
        self.written
            .unwrap_or_else(|| self.previous.map_or(1, |v| v + 1))
    }
}

fn versions_text(versions: &BTreeMap<String, Written>) -> String {
    serde_json::to_string(versions).unwrap_or_default()
}

#[async_trait]
impl Action for Restore {
    fn schema(&self) -> &'static ActionSchema {
        &RESTORE
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let keys: Vec<String> = params
            .get("versions")
            .and_then(|v| v.as_str())
            .and_then(|v| serde_json::from_str::<BTreeMap<String, serde_json::Value>>(v).ok())
            .map(|m| m.into_keys().collect())
            .unwrap_or_default();
        format!(
            "put {} under {} back to the versions before the sync",
            if keys.is_empty() {
                "?".to_string()
            } else {
                keys.join(", ")
            },
            params.get("prefix").and_then(|v| v.as_str()).unwrap_or("?")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<RestoreParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        restore(&config, &p, &ctx).await.unwrap_or_else(|o| o)
    }

    fn nothing_to_undo(&self, params: &serde_json::Value) -> Option<String> {
        let versions = params.get("versions")?.as_str()?;
        parse_versions(versions)
            .ok()
            .filter(BTreeMap::is_empty)
            .map(|_| "the sync changed no parameter (each already held the value it would write), so there is no version to put back".to_string())
    }
}

/// Writes a SecureString (overwriting); its new version.
async fn put_secure(ssm: &aws_sdk_ssm::Client, name: &str, value: &str) -> Result<i64, Outcome> {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .map(|put| put.version())
        .map_err(|e| Outcome::failed(explain("ssm:PutParameter", &e)))
}

/// A parameter's value and version now (none: it does not exist), and the value of one of
/// its versions. Decrypted in memory only, to compare.
async fn parameter(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
) -> Result<Option<(String, i64)>, Outcome> {
    match ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .parameter()
            .map(|p| (p.value().unwrap_or_default().to_string(), p.version()))),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_parameter_not_found()) =>
        {
            Ok(None)
        }
        Err(e) => Err(Outcome::failed(explain("ssm:GetParameter", &e))),
    }
}

async fn value_at(ssm: &aws_sdk_ssm::Client, name: &str, version: i64) -> Result<String, Outcome> {
    let old = ssm
        .get_parameter()
        .name(format!("{name}:{version}"))
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ssm:GetParameter", &e)))?;
    old.parameter()
        .and_then(|p| p.value())
        .map(str::to_string)
        .ok_or_else(|| Outcome::failed(format!("{name}:{version} has no value")))
}

/// What one key's rollback does.
enum Undo {
    /// It already holds what it held before the sync (a rollback that was interrupted after
    /// its change, or a change by hand back to it).
    AlreadyBefore,
    /// Put this value back (the value of `previous`).
    Put { previous: i64, value: String },
    /// Delete it: the sync added it.
    Delete,
}

/// Values are secrets: only names and version numbers are ever said.
async fn restore(
    config: &aws_config::SdkConfig,
    p: &RestoreParams,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    let versions = parse_versions(&p.versions)?;
    let prefix = normalise(&p.prefix);
    let ssm = aws_sdk_ssm::Client::new(config);
    // First every key is read: each must hold what it held before the sync (nothing to do) or
    // what the sync wrote (put back). Any other value is someone else's, and nothing is touched.
    let mut plan = Vec::new();
    for (key, w) in &versions {
        let name = format!("{prefix}{key}");
        let now = parameter(&ssm, &name).await?;
        let before = match w.previous {
            Some(v) => Some(value_at(&ssm, &name, v).await?),
            None => None,
        };
        let ours = w.by_the_sync();
        let undo = match (&now, &before) {
            (None, None) => Undo::AlreadyBefore,
            (Some((value, _)), Some(before)) if value == before => Undo::AlreadyBefore,
            (Some((value, version)), _) => {
                let wrote = *version == ours || value_at(&ssm, &name, ours).await.ok().as_ref() == Some(value);
                match (wrote, w.previous, before) {
                    (true, Some(previous), Some(value)) => Undo::Put { previous, value },
                    (true, None, _) => Undo::Delete,
                    _ => {
                        return Err(Outcome::failed(format!(
                            "{name} is at version {version}: neither what it held before the sync ({}) nor the version {ours} the sync wrote — it changed since; nothing was touched",
                            w.previous
                                .map_or("no parameter".to_string(), |v| format!("version {v}"))
                        )))
                    }
                }
            }
            (None, Some(_)) => {
                return Err(Outcome::failed(format!(
                    "{name} no longer exists: neither what it held before the sync (version {}) nor the version {ours} the sync wrote — it was deleted since; nothing was touched",
                    w.previous.unwrap_or_default()
                )))
            }
        };
        plan.push((key, name, undo));
    }
    let (mut done, mut already) = (0, 0);
    for (key, name, undo) in plan {
        match undo {
            Undo::AlreadyBefore => {
                already += 1;
                ctx.report
                    .info(format!("{key}: already as before the sync"))
                    .await;
            }
            Undo::Put { previous, value } => {
                done += 1;
                let now = put_secure(&ssm, &name, &value).await?;
                ctx.report
                    .info(format!(
                        "{key}: the value of version {previous} put back (now version {now})"
                    ))
                    .await;
            }
            Undo::Delete => {
                done += 1;
                ssm.delete_parameter()
                    .name(&name)
                    .send()
                    .await
                    .map_err(|e| Outcome::failed(explain("ssm:DeleteParameter", &e)))?;
                ctx.report
                    .info(format!("{key}: deleted (the sync added it)"))
                    .await;
            }
        }
    }
    Ok(Outcome::Succeeded {
        note: Some(match (done, already) {
            (0, n) => format!("{n} parameter(s) under {prefix} were already as before the sync"),
            (n, 0) => format!("{n} parameter(s) under {prefix} as they were before the sync"),
            (n, m) => format!(
                "{n} parameter(s) under {prefix} as they were before the sync ({m} already were)"
            ),
        }),
    })
}

fn parse_versions(text: &str) -> Result<BTreeMap<String, Written>, Outcome> {
    serde_json::from_str(text).map_err(|e| {
        Outcome::failed(format!(
            "`versions` is not what ssm.sync records in its `versions` output: {e}"
        ))
    })
}

#[async_trait]
impl Action for Verify {
    fn schema(&self) -> &'static ActionSchema {
        &VERIFY
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        format!(
            "every key of {} exists under {}",
            params
                .get("example_file")
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            params.get("prefix").and_then(|v| v.as_str()).unwrap_or("?")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<VerifyParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        let expected = match read(&ctx.work_dir, &p.example_file) {
            Ok(text) => parse_dotenv(&text),
            Err(o) => return o,
        };
        let prefix = normalise(&p.prefix);
        let present = match existing(&aws_sdk_ssm::Client::new(&config), &prefix).await {
            Ok(found) => found,
            Err(o) => return o,
        };
        let missing: Vec<&String> = expected
            .keys()
            .filter(|k| !present.contains_key(*k))
            .collect();
        for key in expected.keys() {
            let mark = if present.contains_key(key) {
                "ok"
            } else {
                "MISSING"
            };
            ctx.report.info(format!("{mark:>7}  {prefix}{key}")).await;
        }
        if missing.is_empty() {
            Outcome::Succeeded {
                note: Some(format!(
                    "all {} keys present under {prefix}",
                    expected.len()
                )),
            }
        } else {
            Outcome::failed(format!(
                "{} of {} keys missing under {prefix}: {}",
                missing.len(),
                expected.len(),
                missing
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines() {
        let env = parse_dotenv(
            "# comment\n\nexport A=1\nB=\"two words\"\nC='x=y'\nD=\n  E = spaced \nnot a pair\n",
        );
        assert_eq!(env.get("A").map(String::as_str), Some("1"));
        assert_eq!(env.get("B").map(String::as_str), Some("two words"));
        assert_eq!(env.get("C").map(String::as_str), Some("x=y"));
        assert_eq!(env.get("D").map(String::as_str), Some(""));
        assert_eq!(env.get("E").map(String::as_str), Some("spaced"));
        assert_eq!(env.len(), 5);
        assert_eq!(normalise("gengar/prod"), "/gengar/prod/");
    }

    #[test]
    fn heroku_add_on_variables_are_recognised() {
        for key in [
            "DATABASE_URL",
            "HEROKU_POSTGRESQL_ROSE_URL",
            "REDIS_URL",
            "REDIS_TLS_URL",
            "HEROKU_REDIS_MAROON_TLS_URL",
            "KAFKA_CLIENT_CERT",
        ] {
            assert!(heroku_managed(key), "{key}");
        }
        for key in ["PORT", "JWT_SECRET", "MY_DATABASE_URL", "FRONTEND_URL"] {
            assert!(!heroku_managed(key), "{key}");
        }
    }
}
