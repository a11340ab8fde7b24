//! `heroku.baseline`: Heroku's own traffic figures, recorded before the cutover, so that the
//! soak compares AWS with what the app did on Heroku (crate::soak reads the router's lines).

use async_trait::async_trait;

use super::{parse_integer, Action, ActionContext, Outcome, Stream};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};
use crate::soak::Baseline;

pub struct HerokuBaseline;

static SCHEMA: ActionSchema = ActionSchema {
    kind: "heroku.baseline",
    summary: "records Heroku's traffic (requests, 5xx per 1,000, p50/p95/p99 service time per minute) from its router's log",
    params: &[
        ParamSpec::required("app", ParamType::String, "the Heroku app"),
        ParamSpec::optional(
            "log_file",
            ParamType::String,
            "a log drain's file to read instead of `heroku logs` (syslog or `heroku logs` lines)",
        ),
        ParamSpec::optional(
            "lines",
            ParamType::Integer,
            "how many of the latest log lines `heroku logs --num` reads (default 1500, Heroku's most)",
        ),
        ParamSpec::optional(
            "min_requests",
            ParamType::Integer,
            "fewer router lines than this is no baseline: the step fails (default 100)",
        ),
    ],
    outputs: &[
        "requests",
        "errors",
        "errors_per_1000",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "from",
        "to",
        "minutes",
        "buckets",
    ],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    app: String,
    log_file: Option<String>,
    lines: Option<serde_json::Value>,
    min_requests: Option<serde_json::Value>,
}

#[async_trait]
impl Action for HerokuBaseline {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let app = params.get("app").and_then(|v| v.as_str()).unwrap_or("?");
        match params.get("log_file").and_then(|v| v.as_str()) {
            Some(file) => {
                format!("reads {app}'s router lines from {file}; records its traffic figures")
            }
            None => format!(
                "heroku logs --num N -a {app}: records its router's traffic figures per minute"
            ),
        }
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        match baseline(&ctx).await {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }
}

async fn baseline(ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let p: Params = ctx.params()?;
    let lines = parse_integer(p.lines.as_ref(), "lines")?.unwrap_or(1500);
    let min_requests = parse_integer(p.min_requests.as_ref(), "min_requests")?.unwrap_or(100);
    if !(1..=1500).contains(&lines) {
        return Err(Outcome::failed(format!(
            "`lines` = {lines}: `heroku logs --num` reads 1 to 1500 lines"
        )));
    }
    let (text, source) = match &p.log_file {
        Some(file) => {
            let path = ctx.work_dir.join(file);
            let text = tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| Outcome::failed(format!("cannot read {}: {e}", path.display())))?;
            (text, path.display().to_string())
        }
        None => (
            heroku_logs(&p.app, lines, ctx).await?,
            format!("heroku logs --num {lines} -a {}", p.app),
        ),
    };
    let Some(b) = Baseline::from_log(&text) else {
        return Err(Outcome::failed(format!(
            "no router line in {source}: no request reached {} in that window (is it serving? is the log drain the router's?)",
            p.app
        )));
    };
    // Not echoed: a router line's path may carry a query string's token.
    if !b.unreadable.is_empty() {
        ctx.report
            .info(format!(
                "{} router line(s) without a time or a status were left out",
                b.unreadable.len()
            ))
            .await;
    }
    let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
    ctx.report
        .info(format!(
            "{source}: {} requests over {} minute(s), {} server errors ({:.1} per 1,000), service time p50 {} · p95 {} · p99 {}",
            b.requests,
            b.buckets.len(),
            b.errors,
            b.errors_per_1000(),
            ms(b.p50_ms),
            ms(b.p95_ms),
            ms(b.p99_ms)
        ))
        .await;
    for bucket in &b.buckets {
        ctx.report
            .info(format!(
                "  {} {:>5} requests {:>4} errors  p50 {} p95 {} p99 {}",
                minute_text(bucket.minute),
                bucket.requests,
                bucket.errors,
                ms(bucket.p50_ms),
                ms(bucket.p95_ms),
                ms(bucket.p99_ms)
            ))
            .await;
    }
    if (b.requests as i64) < min_requests {
        return Err(Outcome::failed(format!(
            "only {} requests in {source} (fewer than min_requests = {min_requests}): too few to compare AWS with; record it when {} has its usual traffic",
            b.requests, p.app
        )));
    }
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for (name, value) in [
        ("requests", b.requests.to_string()),
        ("errors", b.errors.to_string()),
        ("errors_per_1000", format!("{:.2}", b.errors_per_1000())),
        ("p50_ms", opt(b.p50_ms)),
        ("p95_ms", opt(b.p95_ms)),
        ("p99_ms", opt(b.p99_ms)),
        ("from", minute_text(b.from)),
        ("to", minute_text(b.to)),
        ("minutes", b.buckets.len().to_string()),
        (
            "buckets",
            serde_json::to_string(&b.buckets).unwrap_or_default(),
        ),
    ] {
        ctx.report.output(name, value).await;
    }
    Ok(Outcome::Succeeded {
        note: Some(format!(
            "Heroku's baseline: {} requests, {:.1} errors per 1,000, p99 {}",
            b.requests,
            b.errors_per_1000(),
            ms(b.p99_ms)
        )),
    })
}

fn minute_text(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

/// `heroku logs --num N -a APP` (the Heroku CLI's own login; nothing secret on its command
/// line): the latest lines of the app's log, the router's among them.
async fn heroku_logs(app: &str, lines: i64, ctx: &ActionContext) -> Result<String, Outcome> {
    ctx.report
        .info(format!(
            "reading the latest {lines} lines of {app}'s log (heroku logs)"
        ))
        .await;
    let out = heroku_cli(&["logs", "--num", &lines.to_string(), "-a", app], ctx).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Runs the Heroku CLI (its own login: nothing secret on its command line) and returns what it
/// printed; its stderr goes to the step's log; cancelled with the step.
pub(crate) async fn heroku_cli(args: &[&str], ctx: &ActionContext) -> Result<Vec<u8>, Outcome> {
    let shown = format!("heroku {}", args.join(" "));
    let child = tokio::process::Command::new("heroku")
        .args(args)
        .current_dir(&ctx.work_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Outcome::failed(format!("cannot run `heroku` (the Heroku CLI): {e}")))?;
    let output = tokio::select! {
        out = child.wait_with_output() => out
            .map_err(|e| Outcome::failed(format!("`{shown}` failed: {e}")))?,
        () = ctx.cancel.cancelled() => return Err(Outcome::Cancelled),
    };
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        ctx.report.line(Stream::Stderr, line).await;
    }
    if !output.status.success() {
        return Err(Outcome::failed(format!(
            "`{shown}` failed ({})",
            output.status
        )));
    }
    Ok(output.stdout)
}
