//! `soak.gate`: the soak's go/no-go. AWS's figures over the soak from CloudWatch (the ALB's
//! requests, 5xx and p99, its healthy targets; RDS's free storage and connections; the ECS
//! service's CPU and memory, shown) against Heroku's baseline and the thresholds
//! (crate::soak::gate). Succeeds only when every threshold held; a breach names the figure,
//! the minute and the value. Every figure, downsampled, with its threshold, goes into the
//! journal (`figures`, a crate::soak::Evidence): the UI's soak view and `cutover report` draw it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};

use super::{explain, prepare, Session};
use crate::actions::{parse_duration, parse_integer, Action, ActionContext, Outcome, Stream};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};
use crate::soak::gate::{self, Database, Figures, Heroku, Series, Thresholds};
use crate::soak::{Mark, MarkKind};

pub struct Gate(pub Arc<Session>);

static SCHEMA: ActionSchema = ActionSchema {
    kind: "soak.gate",
    summary: "the soak's go/no-go: AWS's CloudWatch figures over the soak against Heroku's baseline and thresholds",
    params: &[
        ParamSpec::required("load_balancer", ParamType::String, "the ALB's DNS name"),
        ParamSpec::required("target_group", ParamType::String, "the web service's target group name"),
        ParamSpec::required("rds_instance", ParamType::String, "the RDS instance identifier"),
        ParamSpec::optional("cluster", ParamType::String, "ECS cluster (its service's CPU and memory are shown)"),
        ParamSpec::optional("service", ParamType::String, "ECS service"),
        ParamSpec::optional("window", ParamType::Duration, "how far back the soak is judged, in complete minutes (24h; at least the last minute)"),
        ParamSpec::optional("since", ParamType::String, "no minute before this RFC 3339 time is judged (the DNS cutover's `at`): the gate waits for the first complete minute after it"),
        ParamSpec::optional("delay", ParamType::Duration, "how late CloudWatch's ALB and RDS points arrive: the last minutes left out (3m)"),
        ParamSpec::optional("min_requests", ParamType::Integer, "fewer requests through the ALB in the window is no evidence (1)"),
        ParamSpec::required("heroku_errors_per_1000", ParamType::String, "Heroku's 5xx per 1,000 requests (heroku.baseline)"),
        ParamSpec::required("heroku_p99_ms", ParamType::String, "Heroku's p99 service time, ms (heroku.baseline)"),
        ParamSpec::optional("error_margin_pp", ParamType::String, "the 5xx rate may exceed Heroku's by this many percentage points (0.5)"),
        ParamSpec::optional("p99_ratio", ParamType::String, "p99 at most this many times Heroku's (1.5)"),
        ParamSpec::optional("p99_floor_ms", ParamType::String, "...or this many ms, whichever is more (50: below it, the network's noise)"),
        ParamSpec::optional("healthy_window", ParamType::Duration, "no minute without a healthy target in this last stretch (24h)"),
        ParamSpec::optional("min_free_storage_pct", ParamType::String, "RDS free storage above this % of the allocated (20)"),
        ParamSpec::optional("max_connections_pct", ParamType::String, "RDS connections under this % of max_connections (80)"),
        ParamSpec::optional("max_connections", ParamType::Integer, "RDS's max_connections (default: from the instance class's memory, as RDS's default parameter group sets it)"),
    ],
    outputs: &["verdict", "requests", "errors", "p99_ms", "breaches", "figures", "marks"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    load_balancer: String,
    target_group: String,
    rds_instance: String,
    cluster: Option<String>,
    service: Option<String>,
    window: Option<String>,
    since: Option<String>,
    delay: Option<String>,
    min_requests: Option<serde_json::Value>,
    heroku_errors_per_1000: String,
    heroku_p99_ms: String,
    error_margin_pp: Option<String>,
    p99_ratio: Option<String>,
    p99_floor_ms: Option<String>,
    healthy_window: Option<String>,
    min_free_storage_pct: Option<String>,
    max_connections_pct: Option<String>,
    max_connections: Option<serde_json::Value>,
}

#[async_trait]
impl Action for Gate {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let s = |k: &str| params.get(k).and_then(|v| v.as_str()).unwrap_or("?");
        format!(
            "CloudWatch GetMetricData over the last {}: {}'s requests, 5xx, p99 and healthy targets, {}'s storage and connections, judged against Heroku's baseline",
            s("window"),
            s("load_balancer"),
            s("rds_instance")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        match run(&self.0, &ctx).await {
            Ok(o) | Err(o) => o,
        }
    }
}

fn number(text: Option<&str>, name: &str, default: f64) -> Result<f64, Outcome> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(default),
        Some(t) => t
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| Outcome::failed(format!("`{name}` = {t:?} is not a number ≥ 0"))),
    }
}

/// max_connections as RDS's default parameter group sets it for PostgreSQL:
/// LEAST({DBInstanceClassMemory/9531392}, 5000), from the class's memory.
fn default_max_connections(class: &str) -> Option<f64> {
    let gib: f64 = match class.strip_prefix("db.")?.split_once('.')? {
        (_, "micro") => 1.0,
        (_, "small") => 2.0,
        (_, "medium") => 4.0,
        (f, "large") if f.starts_with('t') || f.starts_with('m') => 8.0,
        (f, "xlarge") if f.starts_with('t') || f.starts_with('m') => 16.0,
        (f, "2xlarge") if f.starts_with('t') || f.starts_with('m') => 32.0,
        (f, "large") if f.starts_with('r') => 16.0,
        (f, "xlarge") if f.starts_with('r') => 32.0,
        (f, "2xlarge") if f.starts_with('r') => 64.0,
        _ => return None,
    };
    Some((gib * 1024f64.powi(3) / 9_531_392.0).floor().min(5000.0))
}

fn query(
    id: &str,
    namespace: &str,
    name: &str,
    dims: &[(&str, &str)],
    stat: &str,
    period: i32,
) -> MetricDataQuery {
    let mut metric = Metric::builder().namespace(namespace).metric_name(name);
    for (k, v) in dims {
        metric = metric.dimensions(Dimension::builder().name(*k).value(*v).build());
    }
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(metric.build())
                .period(period)
                .stat(stat)
                .build(),
        )
        .return_data(true)
        .build()
}

async fn run(session: &Session, ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let (p, config): (Params, _) = prepare(session, ctx).await?;
    let window = parse_duration(
        p.window.as_deref(),
        Duration::from_secs(24 * 3600),
        "window",
    )?
    .max(Duration::from_secs(60));
    let t = Thresholds {
        error_margin_pp: number(p.error_margin_pp.as_deref(), "error_margin_pp", 0.5)?,
        p99_ratio: number(p.p99_ratio.as_deref(), "p99_ratio", 1.5)?,
        p99_floor_ms: number(p.p99_floor_ms.as_deref(), "p99_floor_ms", 50.0)?,
        healthy_secs: parse_duration(
            p.healthy_window.as_deref(),
            Duration::from_secs(24 * 3600),
            "healthy_window",
        )?
        .as_secs(),
        min_free_storage_pct: number(
            p.min_free_storage_pct.as_deref(),
            "min_free_storage_pct",
            20.0,
        )?,
        max_connections_pct: number(
            p.max_connections_pct.as_deref(),
            "max_connections_pct",
            80.0,
        )?,
        min_requests: parse_integer(p.min_requests.as_ref(), "min_requests")?.unwrap_or(1) as f64,
    };
    let delay = parse_duration(p.delay.as_deref(), Duration::from_secs(180), "delay")?.as_secs();
    let since = match p.since.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => 0,
        Some(text) => crate::clock::parse_time(text)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .ok_or_else(|| {
                Outcome::failed(format!("`since` = {text:?} is not an RFC 3339 time"))
            })?,
    };
    let heroku = Heroku {
        errors_per_1000: number(
            Some(&p.heroku_errors_per_1000),
            "heroku_errors_per_1000",
            0.0,
        )?,
        p99_ms: number(Some(&p.heroku_p99_ms), "heroku_p99_ms", 0.0)?,
    };

    // The ALB and the target group as CloudWatch names them (their ARNs' last parts).
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let mut lb_arn = None;
    let mut pages = elb.describe_load_balancers().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            Outcome::failed(explain("elasticloadbalancing:DescribeLoadBalancers", &e))
        })?;
        if let Some(lb) = page.load_balancers().iter().find(|lb| {
            lb.dns_name()
                .is_some_and(|d| d.eq_ignore_ascii_case(p.load_balancer.trim_end_matches('.')))
        }) {
            lb_arn = lb.load_balancer_arn().map(str::to_string);
            break;
        }
    }
    let lb_arn = lb_arn.ok_or_else(|| {
        Outcome::failed(format!(
            "no load balancer named {} in this account and region",
            p.load_balancer
        ))
    })?;
    let lb_dim = lb_arn
        .split_once(":loadbalancer/")
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let tg = elb
        .describe_target_groups()
        .names(&p.target_group)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("elasticloadbalancing:DescribeTargetGroups", &e)))?;
    let tg_arn = tg
        .target_groups()
        .first()
        .and_then(|g| g.target_group_arn())
        .unwrap_or_default()
        .to_string();
    let tg_dim = tg_arn
        .rsplit_once(':')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();

    // The database's allocated storage and its connection limit.
    let rds = aws_sdk_rds::Client::new(&config);
    let described = rds
        .describe_db_instances()
        .db_instance_identifier(&p.rds_instance)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("rds:DescribeDBInstances", &e)))?;
    let instance = described
        .db_instances()
        .first()
        .ok_or_else(|| Outcome::failed(format!("no RDS instance {}", p.rds_instance)))?;
    let class = instance.db_instance_class().unwrap_or_default().to_string();
    let max_connections = match parse_integer(p.max_connections.as_ref(), "max_connections")? {
        Some(n) => n as f64,
        None => default_max_connections(&class).ok_or_else(|| {
            Outcome::failed(format!("no bundled memory figure for {class}: give max_connections (SHOW max_connections on RDS)"))
        })?,
    };
    let db = Database {
        allocated_bytes: f64::from(instance.allocated_storage().unwrap_or(0)) * 1024f64.powi(3),
        max_connections,
    };

    // Complete minutes only, and only those CloudWatch has had time to fill (`delay`); none
    // before the cutover (`since`): the first minute judged is the first whole one after it.
    let first = since.div_ceil(60) * 60;
    let last_complete = |now: u64| (now.saturating_sub(delay) / 60 * 60).saturating_sub(60);
    let now = loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| Outcome::failed(e.to_string()))?
            .as_secs();
        if last_complete(now) >= first {
            break now;
        }
        let left = (first + 120 + delay).saturating_sub(now);
        ctx.report
            .progress(
                0,
                None,
                "s",
                Some(format!(
                    "waiting for the first complete minute after the cutover (about {left} s)"
                )),
            )
            .await;
        super::pause(&ctx.cancel, Duration::from_secs(5)).await?;
    };
    let to = last_complete(now);
    let from = (to.saturating_sub(window.as_secs().saturating_sub(60)) / 60 * 60).max(first);
    ctx.report
        .info(format!(
            "CloudWatch, {} to {} ({} minutes), the ALB {lb_dim}, the target group {tg_dim}, RDS {} ({class}, {} GiB, max_connections {max_connections:.0})",
            minute_text(from),
            minute_text(to),
            (to - from) / 60 + 1,
            p.rds_instance,
            instance.allocated_storage().unwrap_or(0)
        ))
        .await;
    let alb = [("LoadBalancer", lb_dim.as_str())];
    let mut queries = vec![
        query("req", "AWS/ApplicationELB", "RequestCount", &alb, "Sum", 60),
        query(
            "t5",
            "AWS/ApplicationELB",
            "HTTPCode_Target_5XX_Count",
            &alb,
            "Sum",
            60,
        ),
        query(
            "e5",
            "AWS/ApplicationELB",
            "HTTPCode_ELB_5XX_Count",
            &alb,
            "Sum",
            60,
        ),
        query(
            "p99",
            "AWS/ApplicationELB",
            "TargetResponseTime",
            &alb,
            "p99",
            60,
        ),
        query(
            "healthy",
            "AWS/ApplicationELB",
            "HealthyHostCount",
            &[
                ("TargetGroup", tg_dim.as_str()),
                ("LoadBalancer", lb_dim.as_str()),
            ],
            "Minimum",
            60,
        ),
        query(
            "free",
            "AWS/RDS",
            "FreeStorageSpace",
            &[("DBInstanceIdentifier", p.rds_instance.as_str())],
            "Minimum",
            60,
        ),
        query(
            "conn",
            "AWS/RDS",
            "DatabaseConnections",
            &[("DBInstanceIdentifier", p.rds_instance.as_str())],
            "Maximum",
            60,
        ),
        query(
            "rcpu",
            "AWS/RDS",
            "CPUUtilization",
            &[("DBInstanceIdentifier", p.rds_instance.as_str())],
            "Average",
            60,
        ),
        query(
            "rmem",
            "AWS/RDS",
            "FreeableMemory",
            &[("DBInstanceIdentifier", p.rds_instance.as_str())],
            "Minimum",
            60,
        ),
    ];
    if let (Some(cluster), Some(service)) = (&p.cluster, &p.service) {
        let ecs = [
            ("ClusterName", cluster.as_str()),
            ("ServiceName", service.as_str()),
        ];
        queries.push(query(
            "cpu",
            "AWS/ECS",
            "CPUUtilization",
            &ecs,
            "Average",
            60,
        ));
        queries.push(query(
            "mem",
            "AWS/ECS",
            "MemoryUtilization",
            &ecs,
            "Average",
            60,
        ));
    }
    let span = i32::try_from(to + 60 - from).unwrap_or(i32::MAX);
    queries.push(query(
        "p99w",
        "AWS/ApplicationELB",
        "TargetResponseTime",
        &alb,
        "p99",
        span,
    ));
    let cw = aws_sdk_cloudwatch::Client::new(&config);
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    let mut next: Option<String> = None;
    loop {
        let out = cw
            .get_metric_data()
            .set_metric_data_queries(Some(queries.clone()))
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                from as i64,
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                (to + 60) as i64,
            ))
            .set_next_token(next.clone())
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("cloudwatch:GetMetricData", &e)))?;
        for r in out.metric_data_results() {
            if let Some(code) = r.status_code().filter(|c| c.as_str() != "Complete") {
                ctx.report
                    .line(
                        Stream::Stderr,
                        format!(
                            "CloudWatch answered {} for {}: {:?}",
                            code.as_str(),
                            r.id().unwrap_or("?"),
                            r.messages()
                        ),
                    )
                    .await;
            }
            let s = series
                .entry(r.id().unwrap_or_default().to_string())
                .or_default();
            for (t, v) in r.timestamps().iter().zip(r.values()) {
                let m = u64::try_from(t.secs()).unwrap_or(0) / 60 * 60;
                s.insert(m, *v);
            }
        }
        next = out.next_token().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    let mut take = |id: &str| series.remove(id).unwrap_or_default();
    let mut errors = take("t5");
    for (m, v) in take("e5") {
        *errors.entry(m).or_default() += v;
    }
    let figures = Figures {
        requests: take("req"),
        errors,
        p99_ms: take("p99")
            .into_iter()
            .map(|(m, v)| (m, v * 1000.0))
            .collect(),
        window_p99_ms: take("p99w").values().next().map(|v| v * 1000.0),
        healthy: take("healthy"),
        free_storage: take("free"),
        connections: take("conn"),
        cpu: take("cpu"),
        memory: take("mem"),
        rds_cpu: take("rcpu"),
        rds_freeable_memory: take("rmem"),
    };
    let requests: f64 = figures.requests.values().sum();
    let errors: f64 = figures.errors.values().sum();
    ctx.report
        .info(format!(
            "AWS: {requests:.0} requests, {errors:.0} 5xx, p99 {} · Heroku: {:.2} 5xx per 1,000, p99 {:.0} ms",
            figures.window_p99_ms.map_or("- (no response time)".to_string(), |v| format!("{v:.0} ms")),
            heroku.errors_per_1000,
            heroku.p99_ms
        ))
        .await;
    let breaches = gate::judge(&figures, &heroku, &db, &t, from, to);
    let kept = gate::evidence(&figures, &heroku, &db, &t, from, to);
    // What the service's event list says happened in the window: deployments, rollbacks,
    // tasks started (ECS keeps the last 100 events).
    let mut marks = Vec::new();
    if let (Some(cluster), Some(service)) = (&p.cluster, &p.service) {
        // Only marks for the pictures: a failure here does not change the verdict.
        let described = match aws_sdk_ecs::Client::new(&config)
            .describe_services()
            .cluster(cluster)
            .services(service)
            .send()
            .await
        {
            Ok(d) => Some(d),
            Err(e) => {
                ctx.report
                    .line(
                        Stream::Stderr,
                        format!(
                            "no deployment marks for the pictures: {}",
                            explain("ecs:DescribeServices", &e)
                        ),
                    )
                    .await;
                None
            }
        };
        for event in described
            .iter()
            .flat_map(|d| d.services())
            .flat_map(|s| s.events())
        {
            let (Some(at), Some(message)) = (event.created_at(), event.message()) else {
                continue;
            };
            let at = u64::try_from(at.secs()).unwrap_or(0);
            if let Some(kind) = MarkKind::of_service_event(message) {
                if (from..to + 60).contains(&at) {
                    marks.push(Mark {
                        at,
                        kind,
                        label: message.to_string(),
                    });
                }
            }
        }
        marks.sort_by_key(|m| m.at);
    }
    for (name, value) in [
        (
            "verdict",
            if breaches.is_empty() { "go" } else { "no-go" }.to_string(),
        ),
        ("requests", format!("{requests:.0}")),
        ("errors", format!("{errors:.0}")),
        (
            "p99_ms",
            figures
                .window_p99_ms
                .map(|v| format!("{v:.0}"))
                .unwrap_or_default(),
        ),
        (
            "breaches",
            serde_json::to_string(&breaches).unwrap_or_default(),
        ),
        ("figures", serde_json::to_string(&kept).unwrap_or_default()),
        ("marks", serde_json::to_string(&marks).unwrap_or_default()),
    ] {
        ctx.report.output(name, value).await;
    }
    if breaches.is_empty() {
        return Ok(Outcome::Succeeded {
            note: Some(format!(
                "go: every threshold held over {} minutes ({requests:.0} requests)",
                (to - from) / 60 + 1
            )),
        });
    }
    for b in &breaches {
        let when = if b.minute == 0 {
            "the window".to_string()
        } else {
            minute_text(b.minute)
        };
        ctx.report
            .line(
                Stream::Stderr,
                format!(
                    "no-go: {} at {when}: {} (limit {})",
                    b.figure, b.value, b.limit
                ),
            )
            .await;
    }
    Err(Outcome::failed(format!(
        "no-go: {} threshold(s) did not hold ({}). Nothing of Heroku is deleted; to go back to Heroku: `cutover rollback maintenance-on --chain`",
        breaches.len(),
        breaches.iter().map(|b| b.figure.as_str()).collect::<Vec<_>>().join("; ")
    )))
}

fn minute_text(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_follows_the_class_memory() {
        assert_eq!(default_max_connections("db.t4g.micro"), Some(112.0));
        assert_eq!(default_max_connections("db.t4g.medium"), Some(450.0));
        assert_eq!(
            default_max_connections("db.r7g.2xlarge"),
            Some(5000.0f64.min(7209.0))
        );
        assert_eq!(default_max_connections("db.x2g.16xlarge"), None);
    }
}
