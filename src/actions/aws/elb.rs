//! `elb.health`: waits until a target group's targets are healthy, showing why they are not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum;

use super::{explain, pause, prepare, Session};
use crate::actions::{parse_duration, Action, ActionContext, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Health(pub Arc<Session>);

static SCHEMA: ActionSchema = ActionSchema {
    kind: "elb.health",
    summary: "waits until every target of a target group is healthy",
    params: &[
        ParamSpec::required(
            "target_group",
            ParamType::String,
            "target group name or ARN",
        ),
        ParamSpec::optional("deadline", ParamType::Duration, "how long to wait (10m)"),
        ParamSpec::optional("interval", ParamType::Duration, "pause between looks (10s)"),
    ],
    outputs: &["healthy"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    target_group: String,
    deadline: Option<String>,
    interval: Option<String>,
}

#[async_trait]
impl Action for Health {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        format!(
            "wait until the targets of {} are healthy",
            params
                .get("target_group")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<Params>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        health(&config, &p, &ctx).await.unwrap_or_else(|o| o)
    }
}

async fn health(
    config: &aws_config::SdkConfig,
    p: &Params,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    let deadline = parse_duration(p.deadline.as_deref(), Duration::from_secs(600), "deadline")?;
    let interval = parse_duration(p.interval.as_deref(), Duration::from_secs(10), "interval")?;
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(config);
    let arn = if p.target_group.starts_with("arn:") {
        p.target_group.clone()
    } else {
        let found = elb
            .describe_target_groups()
            .names(&p.target_group)
            .send()
            .await
            .map_err(|e| {
                Outcome::failed(explain("elasticloadbalancing:DescribeTargetGroups", &e))
            })?;
        found
            .target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
            .map(str::to_string)
            .ok_or_else(|| Outcome::failed(format!("no target group {}", p.target_group)))?
    };
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let out = elb
            .describe_target_health()
            .target_group_arn(&arn)
            .send()
            .await
            .map_err(|e| {
                Outcome::failed(explain("elasticloadbalancing:DescribeTargetHealth", &e))
            })?;
        let targets = out.target_health_descriptions();
        let healthy = targets
            .iter()
            .filter(|t| {
                t.target_health().and_then(|h| h.state()) == Some(&TargetHealthStateEnum::Healthy)
            })
            .count();
        let mut lines: Vec<String> = targets
            .iter()
            .filter(|t| {
                t.target_health().and_then(|h| h.state()) != Some(&TargetHealthStateEnum::Healthy)
            })
            .map(|t| {
                let h = t.target_health();
                format!(
                    "{}:{} {} ({}: {})",
                    t.target().and_then(|x| x.id()).unwrap_or("?"),
                    t.target().and_then(|x| x.port()).unwrap_or(0),
                    h.and_then(|h| h.state()).map_or("unknown", |s| s.as_str()),
                    h.and_then(|h| h.reason()).map_or("-", |r| r.as_str()),
                    h.and_then(|h| h.description()).unwrap_or("no description")
                )
            })
            .collect();
        lines.sort();
        let summary = format!("{healthy}/{} healthy", targets.len());
        let text = format!(
            "{summary}{}",
            lines.iter().map(|l| format!("\n  {l}")).collect::<String>()
        );
        if text != last {
            ctx.report.info(text.clone()).await;
            last = text;
        }
        ctx.report
            .progress(
                healthy as u64,
                Some(targets.len() as u64),
                "healthy targets",
                None,
            )
            .await;
        if !targets.is_empty() && healthy == targets.len() {
            ctx.report.output("healthy", healthy.to_string()).await;
            return Ok(Outcome::Succeeded {
                note: Some(summary),
            });
        }
        if started.elapsed() >= deadline {
            let why = if targets.is_empty() {
                "no targets are registered".to_string()
            } else {
                lines.join("; ")
            };
            return Ok(Outcome::failed(format!(
                "not healthy after {}: {summary}: {why}",
                humantime::format_duration(deadline)
            )));
        }
        pause(&ctx.cancel, interval).await?;
    }
}
