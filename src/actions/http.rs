//! `http`: a request repeated until it answers as expected or the deadline passes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{parse_duration, parse_integer, Action, ActionContext, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Http;

static SCHEMA: ActionSchema = ActionSchema {
    kind: "http",
    summary: "sends an HTTP request until it returns the expected status (and body text)",
    params: &[
        ParamSpec::required("url", ParamType::String, "the URL to request"),
        ParamSpec::optional(
            "method",
            ParamType::String,
            "GET (default), HEAD, POST, PUT, DELETE",
        ),
        ParamSpec::optional(
            "expect_status",
            ParamType::Integer,
            "status that counts as success (200)",
        ),
        ParamSpec::optional(
            "expect_body",
            ParamType::String,
            "text the body must contain",
        ),
        ParamSpec::optional(
            "expect_json",
            ParamType::StringMap,
            "fields the JSON body must hold, by dotted path: { \"database.port\" = \"5432\" }",
        ),
        ParamSpec::optional("headers", ParamType::StringMap, "request headers"),
        ParamSpec::optional("body", ParamType::String, "request body"),
        ParamSpec::optional(
            "deadline",
            ParamType::Duration,
            "keep trying this long (30s)",
        ),
        ParamSpec::optional("interval", ParamType::Duration, "pause between tries (2s)"),
        ParamSpec::optional(
            "request_timeout",
            ParamType::Duration,
            "one request's time limit (10s)",
        ),
    ],
    outputs: &["status"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    url: String,
    method: Option<String>,
    expect_status: Option<serde_json::Value>,
    expect_body: Option<String>,
    #[serde(default)]
    expect_json: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    headers: BTreeMap<String, serde_json::Value>,
    body: Option<String>,
    deadline: Option<String>,
    interval: Option<String>,
    request_timeout: Option<String>,
}

fn status_param(value: Option<&serde_json::Value>) -> Result<u16, Outcome> {
    match value {
        None => Ok(200),
        Some(v) => parse_integer(Some(v), "expect_status")
            .ok()
            .flatten()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| (100..600).contains(n))
            .ok_or_else(|| Outcome::failed(format!("`expect_status` = {v} is not an HTTP status"))),
    }
}

#[async_trait]
impl Action for Http {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let get = |k: &str| {
            params.get(k).and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            })
        };
        let mut text = format!(
            "{} {} → expect {}",
            get("method").unwrap_or_else(|| "GET".into()).to_uppercase(),
            get("url").unwrap_or_default(),
            get("expect_status").unwrap_or_else(|| "200".into())
        );
        if let Some(body) = get("expect_body") {
            text.push_str(&format!(" containing {body:?}"));
        }
        if let Some(fields) = params.get("expect_json").and_then(|v| v.as_object()) {
            let shown: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{k} = {}", scalar_text(v)))
                .collect();
            text.push_str(&format!(" with JSON {}", shown.join(", ")));
        }
        text.push_str(&format!(
            ", for up to {}",
            get("deadline").unwrap_or_else(|| "30s".into())
        ));
        text
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let params: Params = match ctx.params() {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        let settings = (|| {
            Ok::<_, Outcome>((
                status_param(params.expect_status.as_ref())?,
                parse_duration(
                    params.deadline.as_deref(),
                    Duration::from_secs(30),
                    "deadline",
                )?,
                parse_duration(
                    params.interval.as_deref(),
                    Duration::from_secs(2),
                    "interval",
                )?,
                parse_duration(
                    params.request_timeout.as_deref(),
                    Duration::from_secs(10),
                    "request_timeout",
                )?,
            ))
        })();
        let (expect, deadline, interval, request_timeout) = match settings {
            Ok(s) => s,
            Err(outcome) => return outcome,
        };
        let method = match reqwest::Method::from_bytes(
            params
                .method
                .as_deref()
                .unwrap_or("GET")
                .to_uppercase()
                .as_bytes(),
        ) {
            Ok(m) => m,
            Err(_) => return Outcome::failed(format!("unknown HTTP method {:?}", params.method)),
        };
        let client = match reqwest::Client::builder()
            .timeout(request_timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
        {
            Ok(c) => c,
            Err(e) => return Outcome::failed(format!("cannot build an HTTP client: {e}")),
        };
        let started = Instant::now();
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let mut request = client.request(method.clone(), &params.url);
            for (name, value) in &params.headers {
                request = request.header(
                    name,
                    value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_string),
                );
            }
            if let Some(body) = &params.body {
                request = request.body(body.clone());
            }
            let result = tokio::select! {
                r = request.send() => r,
                () = ctx.cancel.cancelled() => return Outcome::Cancelled,
            };
            let verdict = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap_or_default();
                    let body_ok = params
                        .expect_body
                        .as_ref()
                        .is_none_or(|t| body.contains(t.as_str()));
                    let json_mismatch = json_mismatch(&body, &params.expect_json);
                    if status == expect && body_ok && json_mismatch.is_none() {
                        ctx.report
                            .info(format!("attempt {attempt}: {status}"))
                            .await;
                        ctx.report.output("status", status.to_string()).await;
                        return Outcome::Succeeded {
                            note: Some(format!(
                                "{method} answered {status} after {attempt} attempt(s)"
                            )),
                        };
                    }
                    if status != expect {
                        format!("got {status}, expected {expect}")
                    } else if let Some(mismatch) = json_mismatch {
                        format!("status {status} but {mismatch}")
                    } else {
                        format!(
                            "status {status} but the body lacks {:?}",
                            params.expect_body.as_deref().unwrap_or("")
                        )
                    }
                }
                Err(e) => format!("request failed: {}", error_chain(&e)),
            };
            ctx.report
                .info(format!("attempt {attempt}: {verdict}"))
                .await;
            let elapsed = started.elapsed();
            ctx.report
                .progress(
                    elapsed.as_secs(),
                    Some(deadline.as_secs().max(1)),
                    "s",
                    Some(format!("attempt {attempt}")),
                )
                .await;
            if elapsed + interval > deadline {
                return Outcome::failed(format!(
                    "{verdict} (gave up after {attempt} attempt(s) in {}s)",
                    elapsed.as_secs()
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = ctx.cancel.cancelled() => return Outcome::Cancelled,
            }
        }
    }
}

/// A JSON scalar as text: strings bare, numbers and booleans as written.
fn scalar_text(value: &serde_json::Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

/// The first field of `expected` (dotted paths into the body's JSON) the body does not hold,
/// said in words; `None` when every field matches (or nothing is expected). Values compare as
/// text, so `5432` and `"5432"` are the same.
fn json_mismatch(body: &str, expected: &BTreeMap<String, serde_json::Value>) -> Option<String> {
    if expected.is_empty() {
        return None;
    }
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
        return Some("the body is not JSON".to_string());
    };
    for (path, want) in expected {
        let found = path.split('.').try_fold(&json, |node, key| node.get(key));
        let want = scalar_text(want);
        match found {
            None => return Some(format!("the body has no `{path}` (expected {want:?})")),
            Some(value) if scalar_text(value) != want => {
                return Some(format!(
                    "`{path}` is {:?}, expected {want:?}",
                    scalar_text(value)
                ))
            }
            Some(_) => {}
        }
    }
    None
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_are_matched_by_dotted_path() {
        let body = r#"{"status":"ok","database":{"port":5433,"system_identifier":"7"}}"#;
        let expect = |pairs: &[(&str, serde_json::Value)]| -> BTreeMap<String, serde_json::Value> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        assert_eq!(json_mismatch(body, &BTreeMap::new()), None);
        assert_eq!(
            json_mismatch(
                body,
                &expect(&[("database.port", serde_json::json!("5433"))])
            ),
            None
        );
        assert_eq!(
            json_mismatch(
                body,
                &expect(&[("database.system_identifier", serde_json::json!("8"))])
            ),
            Some("`database.system_identifier` is \"7\", expected \"8\"".to_string())
        );
        assert_eq!(
            json_mismatch(body, &expect(&[("database.name", serde_json::json!("x"))])),
            Some("the body has no `database.name` (expected \"x\")".to_string())
        );
        assert_eq!(
            json_mismatch("<html>", &expect(&[("status", serde_json::json!("ok"))])),
            Some("the body is not JSON".to_string())
        );
    }
}
