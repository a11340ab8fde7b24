//! `rds.snapshot` (create, wait until available, the id as an output) and `rds.wait` (the
//! instance is available and runs the expected engine major version).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{explain, pause, prepare, Session};
use crate::actions::{parse_duration, Action, ActionContext, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Snapshot(pub Arc<Session>);
pub struct Wait(pub Arc<Session>);

static SNAPSHOT: ActionSchema = ActionSchema {
    kind: "rds.snapshot",
    summary: "takes a manual RDS snapshot and waits until it is available",
    params: &[
        ParamSpec::required("instance", ParamType::String, "DB instance identifier"),
        ParamSpec::optional(
            "snapshot_id",
            ParamType::String,
            "snapshot identifier (default: <instance>-<step>-<time>)",
        ),
        ParamSpec::optional("deadline", ParamType::Duration, "how long to wait (1h)"),
        ParamSpec::optional("interval", ParamType::Duration, "pause between looks (10s)"),
    ],
    outputs: &["snapshot_id"],
    needs_operator_note: false,
};

static WAIT: ActionSchema = ActionSchema {
    kind: "rds.wait",
    summary: "waits until an RDS instance is available and checks its engine major version",
    params: &[
        ParamSpec::required("instance", ParamType::String, "DB instance identifier"),
        ParamSpec::optional(
            "engine_major",
            ParamType::String,
            "expected major version, e.g. \"16\"",
        ),
        ParamSpec::optional("deadline", ParamType::Duration, "how long to wait (30m)"),
        ParamSpec::optional("interval", ParamType::Duration, "pause between looks (15s)"),
    ],
    outputs: &["endpoint", "engine_version"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotParams {
    instance: String,
    snapshot_id: Option<String>,
    deadline: Option<String>,
    interval: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitParams {
    instance: String,
    engine_major: Option<String>,
    deadline: Option<String>,
    interval: Option<String>,
}

#[async_trait]
impl Action for Snapshot {
    fn schema(&self) -> &'static ActionSchema {
        &SNAPSHOT
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        format!(
            "snapshot RDS instance {} and wait until it is available",
            params
                .get("instance")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<SnapshotParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        snapshot(&config, &p, &ctx).await.unwrap_or_else(|o| o)
    }
}

async fn snapshot(
    config: &aws_config::SdkConfig,
    p: &SnapshotParams,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    let deadline = parse_duration(p.deadline.as_deref(), Duration::from_secs(3600), "deadline")?;
    let interval = parse_duration(p.interval.as_deref(), Duration::from_secs(10), "interval")?;
    let rds = aws_sdk_rds::Client::new(config);
    let id = p.snapshot_id.clone().unwrap_or_else(|| {
        let stamp: String = crate::clock::now_rfc3339()
            .chars()
            .filter(char::is_ascii_digit)
            .take(14)
            .collect();
        format!("{}-{}-{stamp}", p.instance, ctx.step)
    });
    rds.create_db_snapshot()
        .db_instance_identifier(&p.instance)
        .db_snapshot_identifier(&id)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("rds:CreateDBSnapshot", &e)))?;
    // The id is journaled now: a snapshot outlives a failed wait, and the rollback needs it.
    ctx.report.output("snapshot_id", id.clone()).await;
    ctx.report
        .info(format!("snapshot {id} of {} requested", p.instance))
        .await;
    let started = Instant::now();
    loop {
        let described = rds
            .describe_db_snapshots()
            .db_snapshot_identifier(&id)
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("rds:DescribeDBSnapshots", &e)))?;
        let snap = described
            .db_snapshots()
            .first()
            .ok_or_else(|| Outcome::failed(format!("snapshot {id} is not listed")))?;
        let status = snap.status().unwrap_or("?");
        let percent = snap.percent_progress().unwrap_or(0);
        ctx.report
            .progress(
                u64::try_from(percent).unwrap_or(0),
                Some(100),
                "%",
                Some(format!("snapshot {status}")),
            )
            .await;
        match status {
            "available" => {
                return Ok(Outcome::Succeeded {
                    note: Some(format!(
                        "snapshot {id} available ({} GB)",
                        snap.allocated_storage().unwrap_or(0)
                    )),
                })
            }
            "failed" | "incompatible-restore" | "deleted" => {
                return Ok(Outcome::failed(format!("snapshot {id} is {status}")))
            }
            _ => {}
        }
        if started.elapsed() >= deadline {
            return Ok(Outcome::failed(format!(
                "snapshot {id} is still {status} ({percent}%) after {}",
                humantime::format_duration(deadline)
            )));
        }
        pause(&ctx.cancel, interval).await?;
    }
}

/// "16.4" → "16"; "9.6.22" → "9.6" (before 10, the major version had two parts).
pub fn engine_major(version: &str) -> String {
    let mut parts = version.split('.');
    let first = parts.next().unwrap_or_default();
    match (first.parse::<u32>(), parts.next()) {
        (Ok(n), Some(second)) if n < 10 => format!("{first}.{second}"),
        _ => first.to_string(),
    }
}

#[async_trait]
impl Action for Wait {
    fn schema(&self) -> &'static ActionSchema {
        &WAIT
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let instance = params
            .get("instance")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        match params.get("engine_major").and_then(|v| v.as_str()) {
            Some(major) => {
                format!("wait until RDS instance {instance} is available, on PostgreSQL {major}")
            }
            None => format!("wait until RDS instance {instance} is available"),
        }
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<WaitParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        wait(&config, &p, &ctx).await.unwrap_or_else(|o| o)
    }
}

async fn wait(
    config: &aws_config::SdkConfig,
    p: &WaitParams,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    let deadline = parse_duration(p.deadline.as_deref(), Duration::from_secs(1800), "deadline")?;
    let interval = parse_duration(p.interval.as_deref(), Duration::from_secs(15), "interval")?;
    let rds = aws_sdk_rds::Client::new(config);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let described = rds
            .describe_db_instances()
            .db_instance_identifier(&p.instance)
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("rds:DescribeDBInstances", &e)))?;
        let db = described
            .db_instances()
            .first()
            .ok_or_else(|| Outcome::failed(format!("no RDS instance {}", p.instance)))?;
        let status = db.db_instance_status().unwrap_or("?").to_string();
        if status != last {
            ctx.report.info(format!("{}: {status}", p.instance)).await;
            last = status.clone();
        }
        if status == "available" {
            let version = db.engine_version().unwrap_or_default().to_string();
            let endpoint = db
                .endpoint()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e.address().unwrap_or_default(),
                        e.port().unwrap_or(5432)
                    )
                })
                .unwrap_or_default();
            ctx.report.output("endpoint", endpoint.clone()).await;
            ctx.report.output("engine_version", version.clone()).await;
            if let Some(expected) = &p.engine_major {
                if engine_major(&version) != *expected {
                    return Ok(Outcome::failed(format!(
                        "{} runs {} {version}, the runbook expects major version {expected}",
                        p.instance,
                        db.engine().unwrap_or("?")
                    )));
                }
            }
            return Ok(Outcome::Succeeded {
                note: Some(format!(
                    "{} available at {endpoint} ({} {version})",
                    p.instance,
                    db.engine().unwrap_or("?")
                )),
            });
        }
        if started.elapsed() >= deadline {
            return Ok(Outcome::failed(format!(
                "{} is still {status} after {}",
                p.instance,
                humantime::format_duration(deadline)
            )));
        }
        pause(&ctx.cancel, interval).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::engine_major;

    #[test]
    fn major_versions() {
        assert_eq!(engine_major("16.4"), "16");
        assert_eq!(engine_major("16"), "16");
        assert_eq!(engine_major("9.6.22"), "9.6");
    }
}
