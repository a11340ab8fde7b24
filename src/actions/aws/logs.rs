//! CloudWatch Logs: following a stream into the step log, and searching a group.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;

use super::{explain, pause, prepare, Session};
use crate::actions::{
    parse_duration, parse_integer, Action, ActionContext, Outcome, Reporter, Stream,
};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

/// Follows one log stream from its start; each `poll` reports the lines written since the last.
pub struct LogFollower {
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
    token: Option<String>,
    /// Throttled: wait at least this long before the next call.
    backoff: Duration,
}

impl LogFollower {
    pub fn new(client: aws_sdk_cloudwatchlogs::Client, group: String, stream: String) -> Self {
        LogFollower {
            client,
            group,
            stream,
            token: None,
            backoff: Duration::ZERO,
        }
    }

    /// Reports new lines; returns how many. A stream that does not exist yet (the container
    /// has not started) is not an error.
    pub async fn poll(&mut self, report: &Reporter) -> usize {
        if !self.backoff.is_zero() {
            tokio::time::sleep(self.backoff).await;
        }
        let mut count = 0;
        loop {
            let result = self
                .client
                .get_log_events()
                .log_group_name(&self.group)
                .log_stream_name(&self.stream)
                .start_from_head(true)
                .set_next_token(self.token.clone())
                .send()
                .await;
            let out = match result {
                Ok(out) => out,
                Err(e) => {
                    match e.as_service_error().and_then(|s| s.code()) {
                        Some("ResourceNotFoundException") => {}
                        Some("ThrottlingException") => {
                            self.backoff = (self.backoff * 2)
                                .clamp(Duration::from_millis(500), Duration::from_secs(10));
                        }
                        _ => {
                            report
                                .info(format!("logs: {}", explain("logs:GetLogEvents", &e)))
                                .await
                        }
                    }
                    return count;
                }
            };
            self.backoff = Duration::ZERO;
            for event in out.events() {
                report
                    .line(
                        Stream::Stdout,
                        event.message().unwrap_or_default().trim_end(),
                    )
                    .await;
                count += 1;
            }
            let next = out.next_forward_token().map(str::to_string);
            // The same token back means there is nothing newer.
            let done = next.is_none() || next == self.token || out.events().is_empty();
            self.token = next;
            if done {
                return count;
            }
        }
    }
}

pub struct Search(pub Arc<Session>);
pub struct Tail(pub Arc<Session>);
pub struct Group(pub Arc<Session>);

static GROUP: ActionSchema = ActionSchema {
    kind: "logs.group",
    summary: "checks that a log group exists with the expected retention",
    params: &[
        ParamSpec::required("log_group", ParamType::String, "e.g. /ecs/gengar"),
        ParamSpec::optional(
            "retention_days",
            ParamType::Integer,
            "the retention it must have (any when absent)",
        ),
    ],
    outputs: &["retention_days"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupParams {
    log_group: String,
    retention_days: Option<serde_json::Value>,
}

#[async_trait]
impl Action for Group {
    fn schema(&self) -> &'static ActionSchema {
        &GROUP
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let group = params
            .get("log_group")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        match params.get("retention_days") {
            Some(days) => format!("log group {group} exists, keeping {days} days"),
            None => format!("log group {group} exists"),
        }
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<GroupParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        let expected = match parse_integer(p.retention_days.as_ref(), "retention_days") {
            Ok(days) => days,
            Err(o) => return o,
        };
        let client = aws_sdk_cloudwatchlogs::Client::new(&config);
        let found = client
            .describe_log_groups()
            .log_group_name_prefix(&p.log_group)
            .send()
            .await;
        let groups = match found {
            Ok(out) => out.log_groups().to_vec(),
            Err(e) => return Outcome::failed(explain("logs:DescribeLogGroups", &e)),
        };
        let Some(group) = groups
            .iter()
            .find(|g| g.log_group_name() == Some(p.log_group.as_str()))
        else {
            return Outcome::failed(format!("the log group {} does not exist", p.log_group));
        };
        let retention = group.retention_in_days();
        let shown = retention.map_or("forever".to_string(), |d| format!("{d} days"));
        ctx.report
            .info(format!("{} keeps its lines {shown}", p.log_group))
            .await;
        ctx.report
            .output(
                "retention_days",
                retention.map_or("never expires".to_string(), |d| d.to_string()),
            )
            .await;
        match expected {
            Some(days) if retention.map(i64::from) != Some(days) => Outcome::failed(format!(
                "{} keeps its lines {shown}, not the {days} days expected",
                p.log_group
            )),
            _ => Outcome::Succeeded { note: Some(shown) },
        }
    }
}

static SEARCH: ActionSchema = ActionSchema {
    kind: "logs.search",
    summary: "finds lines matching a pattern in a log group within a time window",
    params: &[
        ParamSpec::required("log_group", ParamType::String, "e.g. /ecs/gengar"),
        ParamSpec::required(
            "pattern",
            ParamType::String,
            "a CloudWatch filter pattern, e.g. \"usage reset\"",
        ),
        ParamSpec::optional("since", ParamType::Duration, "how far back to look (1h)"),
        ParamSpec::optional(
            "min_matches",
            ParamType::Integer,
            "matches needed for success (1)",
        ),
    ],
    outputs: &["matches"],
    needs_operator_note: false,
};

static TAIL: ActionSchema = ActionSchema {
    kind: "logs.tail",
    summary: "shows a log group's new lines for a while",
    params: &[
        ParamSpec::required("log_group", ParamType::String, "e.g. /ecs/gengar"),
        ParamSpec::optional("for", ParamType::Duration, "how long to follow (1m)"),
        ParamSpec::optional("since", ParamType::Duration, "start this far back (5m)"),
    ],
    outputs: &[],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    log_group: String,
    pattern: String,
    since: Option<String>,
    min_matches: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TailParams {
    log_group: String,
    #[serde(rename = "for")]
    duration: Option<String>,
    since: Option<String>,
}

fn millis_ago(ago: Duration) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.saturating_sub(ago).as_millis()).unwrap_or(0)
}

/// Pages through FilterLogEvents from `start` (ms); reports lines; returns (count, last timestamp).
async fn filter(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    pattern: Option<&str>,
    start: i64,
    report: &Reporter,
) -> Result<(usize, i64), Outcome> {
    let mut token = None;
    let mut count = 0;
    let mut last = start;
    loop {
        let out = client
            .filter_log_events()
            .log_group_name(group)
            .set_filter_pattern(pattern.map(str::to_string))
            .start_time(start)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("logs:FilterLogEvents", &e)))?;
        for event in out.events() {
            report
                .line(
                    Stream::Stdout,
                    event.message().unwrap_or_default().trim_end(),
                )
                .await;
            count += 1;
            last = last.max(event.timestamp().unwrap_or(last) + 1);
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok((count, last));
        }
    }
}

#[async_trait]
impl Action for Search {
    fn schema(&self) -> &'static ActionSchema {
        &SEARCH
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let get = |k: &str| {
            params
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        };
        format!(
            "search {} for {:?} over the last {}",
            get("log_group"),
            get("pattern"),
            params.get("since").and_then(|v| v.as_str()).unwrap_or("1h")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<SearchParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        let since = match parse_duration(p.since.as_deref(), Duration::from_secs(3600), "since") {
            Ok(d) => d,
            Err(o) => return o,
        };
        let min = match parse_integer(p.min_matches.as_ref(), "min_matches").map(|n| n.unwrap_or(1))
        {
            Ok(n) if n >= 1 => n as usize,
            Ok(n) => return Outcome::failed(format!("`min_matches` = {n}: at least 1 is needed")),
            Err(o) => return o,
        };
        let client = aws_sdk_cloudwatchlogs::Client::new(&config);
        match filter(
            &client,
            &p.log_group,
            Some(&p.pattern),
            millis_ago(since),
            &ctx.report,
        )
        .await
        {
            Ok((count, _)) => {
                ctx.report.output("matches", count.to_string()).await;
                if count >= min {
                    Outcome::Succeeded {
                        note: Some(format!("{count} matching line(s)")),
                    }
                } else {
                    Outcome::failed(format!(
                        "{count} line(s) match {:?} in {} over the last {}; {min} needed",
                        p.pattern,
                        p.log_group,
                        humantime::format_duration(since)
                    ))
                }
            }
            Err(o) => o,
        }
    }
}

#[async_trait]
impl Action for Tail {
    fn schema(&self) -> &'static ActionSchema {
        &TAIL
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        format!(
            "follow {} for {}",
            params
                .get("log_group")
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            params.get("for").and_then(|v| v.as_str()).unwrap_or("1m")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<TailParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        let (duration, since) = match (
            parse_duration(p.duration.as_deref(), Duration::from_secs(60), "for"),
            parse_duration(p.since.as_deref(), Duration::from_secs(300), "since"),
        ) {
            (Ok(d), Ok(s)) => (d, s),
            (Err(o), _) | (_, Err(o)) => return o,
        };
        let client = aws_sdk_cloudwatchlogs::Client::new(&config);
        let end = std::time::Instant::now() + duration;
        let mut start = millis_ago(since);
        let mut total = 0;
        while std::time::Instant::now() < end {
            match filter(&client, &p.log_group, None, start, &ctx.report).await {
                Ok((count, last)) => {
                    total += count;
                    start = last;
                }
                Err(o) => return o,
            }
            if let Err(o) = pause(&ctx.cancel, Duration::from_secs(1)).await {
                return o;
            }
        }
        Outcome::Succeeded {
            note: Some(format!(
                "{total} line(s) in {}",
                humantime::format_duration(duration)
            )),
        }
    }
}
