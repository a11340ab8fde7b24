//! `ssm.sync` (parameters under a prefix from a `.env` file or Heroku's config JSON, as
//! SecureString, with a diff whose values are masked) and `ssm.verify` (every key of
//! `.env.example` exists).

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
            "delete_missing",
            ParamType::Bool,
            "delete parameters the source does not have (false)",
        ),
    ],
    outputs: &["added", "changed", "removed"],
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
    #[serde(default)]
    delete_missing: bool,
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
) -> Result<BTreeMap<String, String>, Outcome> {
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
                p.value().unwrap_or_default().to_string(),
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
        let source = params
            .get("env_file")
            .or_else(|| params.get("heroku_json"))
            .and_then(|v| v.as_str())
            .unwrap_or("?");
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
        sync(&config, &p, &ctx).await.unwrap_or_else(|o| o)
    }
}

async fn sync(
    config: &aws_config::SdkConfig,
    p: &SyncParams,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    let source: BTreeMap<String, String> = match (&p.env_file, &p.heroku_json) {
        (Some(file), None) => parse_dotenv(&read(&ctx.work_dir, file)?),
        (None, Some(file)) => {
            serde_json::from_str::<BTreeMap<String, serde_json::Value>>(&read(&ctx.work_dir, file)?)
                .map_err(|e| {
                    Outcome::failed(format!("{file} is not `heroku config --json` output: {e}"))
                })?
                .into_iter()
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect()
        }
        _ => {
            return Err(Outcome::failed(
                "give exactly one of `env_file` or `heroku_json`",
            ))
        }
    };
    let prefix = normalise(&p.prefix);
    let ssm = aws_sdk_ssm::Client::new(config);
    let current = existing(&ssm, &prefix).await?;
    let (mut added, mut changed, mut removed) = (0u32, 0u32, 0u32);
    // Values are secrets: the diff names keys only.
    for (key, value) in &source {
        let verb = match current.get(key) {
            None => "added",
            Some(old) if old != value => "changed",
            Some(_) => continue,
        };
        ssm.put_parameter()
            .name(format!("{prefix}{key}"))
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("ssm:PutParameter", &e)))?;
        if verb == "added" {
            added += 1;
            ctx.report.info(format!("+ {key} = ***")).await;
        } else {
            changed += 1;
            ctx.report.info(format!("~ {key} = *** (changed)")).await;
        }
    }
    for key in current.keys().filter(|k| !source.contains_key(*k)) {
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
    let unchanged = source.len() as u32 - added - changed;
    ctx.report.output("added", added.to_string()).await;
    ctx.report.output("changed", changed.to_string()).await;
    ctx.report.output("removed", removed.to_string()).await;
    Ok(Outcome::Succeeded {
        note: Some(format!(
            "{added} added, {changed} changed, {unchanged} unchanged, {removed} not in the source"
        )),
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
}
