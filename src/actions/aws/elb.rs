//! `elb.health`: waits until a target group's targets are healthy, showing why they are not;
//! `elb.maintenance`: the ALB answers a fixed maintenance response itself, or forwards again.

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

/// `elb.maintenance`: the load balancer answers every request itself (`mode = "on"`: a fixed
/// response, 503 by default) or forwards again (`mode = "off"`). Writes on AWS stop with no
/// task stopped: the service keeps its tasks (and the tunnel to RDS through them), and a client
/// still resolving the domain to the ALB gets the maintenance answer, not a write RDS keeps.
///
/// It is a listener rule of its own — every path (`/*`), priority 1, a fixed response — on
/// each listener that does not redirect, so Terraform's listeners and their default actions
/// are never changed (no drift) and the rule is found again by its shape.
pub struct Maintenance(pub Arc<Session>);

static MAINTENANCE: ActionSchema = ActionSchema {
    kind: "elb.maintenance",
    summary: "the ALB answers every request with a fixed maintenance response, or forwards again",
    params: &[
        ParamSpec::required(
            "load_balancer",
            ParamType::String,
            "the ALB: its name, ARN or DNS name",
        ),
        ParamSpec::required(
            "mode",
            ParamType::String,
            "\"on\" (answer with the fixed response) or \"off\" (forward again)",
        ),
        ParamSpec::optional("status", ParamType::Integer, "the status answered (503)"),
        ParamSpec::optional("message", ParamType::String, "the body answered"),
    ],
    outputs: &[],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceParams {
    load_balancer: String,
    mode: String,
    status: Option<u16>,
    message: Option<String>,
}

/// The priority of the maintenance rule: before every rule the app's listeners may have.
const MAINTENANCE_PRIORITY: i32 = 1;
const DEFAULT_MESSAGE: &str = "Down for maintenance: back in a few minutes.";

#[async_trait]
impl Action for Maintenance {
    fn schema(&self) -> &'static ActionSchema {
        &MAINTENANCE
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let lb = params
            .get("load_balancer")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        match params.get("mode").and_then(|v| v.as_str()) {
            Some("off") => format!("{lb} forwards to its targets again (the maintenance rule removed)"),
            _ => format!(
                "{lb} answers every request with {} itself: no request reaches the service (its tasks keep running)",
                params.get("status").and_then(|v| v.as_u64()).unwrap_or(503)
            ),
        }
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<MaintenanceParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        maintenance(&config, &p, &ctx).await.unwrap_or_else(|o| o)
    }
}

/// The load balancer's ARN from its name, ARN or DNS name.
async fn load_balancer_arn(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    given: &str,
) -> Result<String, Outcome> {
    if given.starts_with("arn:") {
        return Ok(given.to_string());
    }
    let wanted = given.trim().trim_end_matches('.').to_ascii_lowercase();
    let mut pages = elb.describe_load_balancers().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            Outcome::failed(explain("elasticloadbalancing:DescribeLoadBalancers", &e))
        })?;
        for lb in page.load_balancers() {
            let name = lb.load_balancer_name().unwrap_or_default();
            let dns = lb.dns_name().unwrap_or_default().to_ascii_lowercase();
            if name == given || dns == wanted || dns.trim_end_matches('.') == wanted {
                if let Some(arn) = lb.load_balancer_arn() {
                    return Ok(arn.to_string());
                }
            }
        }
    }
    Err(Outcome::failed(format!(
        "no load balancer named {given} (by name, ARN or DNS name) in this account and region"
    )))
}

/// A rule is the maintenance rule when it answers every path with a fixed response.
fn is_maintenance(rule: &aws_sdk_elasticloadbalancingv2::types::Rule) -> bool {
    let every_path = rule.conditions().iter().any(|c| {
        c.field() == Some("path-pattern")
            && (c.values().iter().any(|v| v == "/*")
                || c.path_pattern_config()
                    .is_some_and(|p| p.values().iter().any(|v| v == "/*")))
    });
    let fixed = rule.actions().iter().any(|a| {
        a.r#type() == Some(&aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::FixedResponse)
    });
    // Ours is at priority 1 (before every rule of the app's): a catch-all fixed response the
    // app keeps at another priority (a 404 at 50000) is not it.
    let first = rule.priority() == Some(MAINTENANCE_PRIORITY.to_string().as_str());
    !rule.is_default().unwrap_or(false) && first && every_path && fixed
}

/// The listeners the rule goes on (those that do not redirect), with their maintenance rules
/// and the priorities other rules hold.
struct ListenerRules {
    arn: String,
    port: i32,
    ours: Vec<String>,
    taken: Vec<(String, String)>,
}

async fn listener_rules(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    lb: &str,
) -> Result<Vec<ListenerRules>, Outcome> {
    use aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum;
    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(lb)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("elasticloadbalancing:DescribeListeners", &e)))?;
    let mut out = Vec::new();
    for listener in listeners.listeners() {
        let redirects = listener
            .default_actions()
            .iter()
            .all(|a| a.r#type() == Some(&ActionTypeEnum::Redirect));
        let Some(arn) = listener.listener_arn() else {
            continue;
        };
        if redirects && !listener.default_actions().is_empty() {
            continue;
        }
        let rules = elb
            .describe_rules()
            .listener_arn(arn)
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("elasticloadbalancing:DescribeRules", &e)))?;
        let mut ours = Vec::new();
        let mut taken = Vec::new();
        for rule in rules.rules() {
            let rule_arn = rule.rule_arn().unwrap_or_default().to_string();
            if is_maintenance(rule) {
                ours.push(rule_arn);
            } else if !rule.is_default().unwrap_or(false) {
                taken.push((rule.priority().unwrap_or_default().to_string(), rule_arn));
            }
        }
        out.push(ListenerRules {
            arn: arn.to_string(),
            port: listener.port().unwrap_or_default(),
            ours,
            taken,
        });
    }
    Ok(out)
}

async fn maintenance(
    config: &aws_config::SdkConfig,
    p: &MaintenanceParams,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    use aws_sdk_elasticloadbalancingv2::types::{
        Action as LbAction, ActionTypeEnum, FixedResponseActionConfig, RuleCondition,
    };
    let on = match p.mode.as_str() {
        "on" => true,
        "off" => false,
        other => {
            return Err(Outcome::failed(format!(
                "`mode` = {other:?}: give \"on\" or \"off\""
            )))
        }
    };
    let status = p.status.unwrap_or(503);
    if !(400..=599).contains(&status) {
        return Err(Outcome::failed(format!(
            "`status` = {status}: a maintenance answer is a 4xx or 5xx status"
        )));
    }
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(config);
    let lb = load_balancer_arn(&elb, &p.load_balancer).await?;
    let listeners = listener_rules(&elb, &lb).await?;
    if listeners.is_empty() {
        return Err(Outcome::failed(format!(
            "{} has no listener that forwards (every one redirects, or it has none): nothing to put the maintenance answer on",
            p.load_balancer
        )));
    }
    let mut changed = Vec::new();
    for listener in &listeners {
        if on && listener.ours.is_empty() {
            if let Some((_, other)) = listener
                .taken
                .iter()
                .find(|(priority, _)| priority == &MAINTENANCE_PRIORITY.to_string())
            {
                return Err(Outcome::failed(format!(
                    "priority {MAINTENANCE_PRIORITY} on the listener of port {} is taken by another rule ({other}): the maintenance rule must come before every rule",
                    listener.port
                )));
            }
            let answer = FixedResponseActionConfig::builder()
                .status_code(status.to_string())
                .content_type("text/plain")
                .message_body(p.message.as_deref().unwrap_or(DEFAULT_MESSAGE))
                .build();
            let created = elb
                .create_rule()
                .listener_arn(&listener.arn)
                .priority(MAINTENANCE_PRIORITY)
                .conditions(
                    RuleCondition::builder()
                        .field("path-pattern")
                        .values("/*")
                        .build(),
                )
                .actions(
                    LbAction::builder()
                        .r#type(ActionTypeEnum::FixedResponse)
                        .fixed_response_config(answer)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| Outcome::failed(explain("elasticloadbalancing:CreateRule", &e)))?;
            let arn = created
                .rules()
                .first()
                .and_then(|r| r.rule_arn())
                .unwrap_or("?");
            ctx.report
                .info(format!(
                    "port {}: every request answered {status} (rule {arn})",
                    listener.port
                ))
                .await;
            changed.push(listener.port);
        } else if !on {
            for rule in &listener.ours {
                elb.delete_rule()
                    .rule_arn(rule)
                    .send()
                    .await
                    .map_err(|e| Outcome::failed(explain("elasticloadbalancing:DeleteRule", &e)))?;
                ctx.report
                    .info(format!(
                        "port {}: the maintenance rule removed ({rule})",
                        listener.port
                    ))
                    .await;
                changed.push(listener.port);
            }
        }
    }
    // Read back: the claim is about the listeners as they are now.
    let now = listener_rules(&elb, &lb).await?;
    let wrong: Vec<String> = now
        .iter()
        .filter(|l| l.ours.is_empty() == on)
        .map(|l| format!("port {}", l.port))
        .collect();
    if !wrong.is_empty() {
        return Err(Outcome::failed(format!(
            "read back, {} {}",
            wrong.join(", "),
            if on {
                "still forward(s): the maintenance rule is not there"
            } else {
                "still answer(s) with the maintenance rule"
            }
        )));
    }
    let ports = |ls: &[ListenerRules]| {
        ls.iter()
            .map(|l| l.port.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let note = match (on, changed.is_empty()) {
        (true, true) => format!(
            "nothing to change: {} already answers {status} on port(s) {} (the maintenance rule is there)",
            p.load_balancer,
            ports(&now)
        ),
        (true, false) => format!(
            "{} answers every request with {status} on port(s) {}: no request reaches the service; its tasks keep running",
            p.load_balancer,
            ports(&now)
        ),
        (false, true) => format!(
            "nothing to change: {} forwards on port(s) {} (no maintenance rule)",
            p.load_balancer,
            ports(&now)
        ),
        (false, false) => format!(
            "{} forwards to its targets again on port(s) {}: the maintenance rule is gone",
            p.load_balancer,
            ports(&now)
        ),
    };
    Ok(Outcome::Succeeded { note: Some(note) })
}
