//! `ecs.run-task` (a one-off task whose outcome is the truth) and `ecs.deploy` (a rollout that
//! succeeds only when the deployment it started completes).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ecs::types::{
    ContainerOverride, Deployment, DeploymentRolloutState, DesiredStatus, LaunchType, Service,
    Task, TaskOverride, TaskStopCode,
};

use super::logs::LogFollower;
use super::{explain, pause, prepare, Session};
use crate::actions::{parse_duration, Action, ActionContext, Outcome, Reporter};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

/// How often a running task and its log are looked at.
const POLL: Duration = Duration::from_millis(500);

/// RunTask refuses overrides larger than this; we refuse them before calling.
pub const MAX_OVERRIDES_BYTES: usize = 8192;

pub struct RunTask(pub Arc<Session>);
pub struct Deploy(pub Arc<Session>);

static RUN_TASK: ActionSchema = ActionSchema {
    kind: "ecs.run-task",
    summary: "runs a one-off ECS task (the service's network and task definition) and reports its exit code",
    params: &[
        ParamSpec::required("cluster", ParamType::String, "ECS cluster"),
        ParamSpec::required("service", ParamType::String, "service whose network configuration (and task definition) the task uses"),
        ParamSpec::required("command", ParamType::StringList, "the container command, e.g. [\"yarn\", \"migration:run\"]"),
        ParamSpec::optional("container", ParamType::String, "container to override (default: the first)"),
        ParamSpec::optional("task_definition", ParamType::String, "task definition (default: the service's)"),
        ParamSpec::optional("exit_codes", ParamType::Any, "the container's exit codes that count as success, e.g. [0, 1] (default [0]); any other fails the step"),
    ],
    outputs: &["task_arn", "exit_code"],
    needs_operator_note: false,
};

static DEPLOY: ActionSchema = ActionSchema {
    kind: "ecs.deploy",
    summary: "forces a new deployment (optionally of a new image) and waits until it completes",
    params: &[
        ParamSpec::required("cluster", ParamType::String, "ECS cluster"),
        ParamSpec::required("service", ParamType::String, "ECS service"),
        ParamSpec::optional(
            "image",
            ParamType::String,
            "new image (registers a new task definition revision)",
        ),
        ParamSpec::optional(
            "task_definition",
            ParamType::String,
            "deploy this revision instead of the service's (a rollback: the `previous_task_definition` of the deploy)",
        ),
        ParamSpec::optional(
            "expect",
            ParamType::String,
            "as a rollback: the revision the service must run now (the deploy's `task_definition` output); a service already on `task_definition` needs nothing, any other revision is refused",
        ),
        ParamSpec::optional(
            "container",
            ParamType::String,
            "container whose image changes (default: the first)",
        ),
        ParamSpec::optional(
            "deadline",
            ParamType::Duration,
            "how long to wait for the rollout (30m)",
        ),
        ParamSpec::optional("interval", ParamType::Duration, "pause between looks (5s)"),
    ],
    outputs: &["deployment_id", "task_definition", "previous_task_definition"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunTaskParams {
    cluster: String,
    service: String,
    command: Vec<String>,
    container: Option<String>,
    task_definition: Option<String>,
    /// The exit codes that count as success (`[0]` when not given).
    exit_codes: Option<Vec<i32>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployParams {
    cluster: String,
    service: String,
    image: Option<String>,
    task_definition: Option<String>,
    expect: Option<String>,
    container: Option<String>,
    deadline: Option<String>,
    interval: Option<String>,
}

/// What a stopped task's outcome is. Exit code 0 of the container is the only success: a task
/// that never started, or a container with no exit code, is a failure whatever else it says.
pub fn judge_task(task: &Task, container: &str) -> Outcome {
    judge_task_accepting(task, container, &[0])
}

/// [`judge_task`] with the exit codes that count as success (`exit_codes` of `ecs.run-task`:
/// `yarn migration:show` exits 1 when a migration is pending, an answer and not a failure).
/// A task that never started, or a container with no exit code, fails whatever the list says.
pub fn judge_task_accepting(task: &Task, container: &str, accepted: &[i32]) -> Outcome {
    let stopped = task.stopped_reason().unwrap_or("no reason given");
    if task.stop_code() == Some(&TaskStopCode::TaskFailedToStart) {
        return Outcome::failed(format!("the task failed to start: {stopped}"));
    }
    let found = task
        .containers()
        .iter()
        .find(|c| c.name() == Some(container))
        .or_else(|| task.containers().first());
    let Some(found) = found else {
        return Outcome::failed(format!(
            "the task has no container `{container}`: {stopped}"
        ));
    };
    match found.exit_code() {
        None => Outcome::failed(format!(
            "container `{}` has no exit code, so it did not run to its end: {}",
            found.name().unwrap_or(container),
            found.reason().unwrap_or(stopped)
        )),
        Some(0) if accepted == [0] => Outcome::Succeeded { note: Some("exit code 0".into()) },
        Some(code) if accepted.contains(&code) => Outcome::Succeeded {
            note: Some(format!("exit code {code} (accepted: {})", list(accepted))),
        },
        Some(137) => Outcome::Failed {
            reason: format!("exit code 137: the container was killed, usually for running out of memory (raise the task's memory); {stopped}"),
            exit_code: Some(137),
        },
        Some(code) if accepted != [0] => Outcome::Failed {
            reason: format!("exit code {code}, not one of the accepted {}: {stopped}", list(accepted)),
            exit_code: Some(code),
        },
        Some(code) => Outcome::Failed { reason: format!("exit code {code}: {stopped}"), exit_code: Some(code) },
    }
}

/// `0, 1` for the messages.
fn list(codes: &[i32]) -> String {
    codes
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentVerdict {
    InProgress {
        desired: i32,
        running: i32,
        pending: i32,
        failed: i32,
        state: String,
    },
    Completed {
        running: i32,
    },
    Failed(String),
}

/// Judges the deployment `ours` of a service: done only when it is still the PRIMARY one,
/// its rollout COMPLETED and running == desired. A rollback (our deployment no longer
/// primary) is a failure even though the service looks stable.
pub fn judge_deployment(service: &Service, ours: &str) -> DeploymentVerdict {
    let Some(d) = service.deployments().iter().find(|d| d.id() == Some(ours)) else {
        return DeploymentVerdict::Failed(format!(
            "deployment {ours} is gone from the service: it was replaced or rolled back"
        ));
    };
    let reason = d
        .rollout_state_reason()
        .unwrap_or("no reason given")
        .to_string();
    if d.status() != Some("PRIMARY") {
        return DeploymentVerdict::Failed(format!(
            "deployment {ours} was rolled back (it is now {}): {reason}",
            d.status().unwrap_or("?")
        ));
    }
    if d.rollout_state() == Some(&DeploymentRolloutState::Failed) {
        return DeploymentVerdict::Failed(format!("deployment {ours} failed: {reason}"));
    }
    let (desired, running, pending, failed) = (
        d.desired_count(),
        d.running_count(),
        d.pending_count(),
        d.failed_tasks(),
    );
    let completed = match d.rollout_state() {
        Some(DeploymentRolloutState::Completed) => true,
        Some(_) => false,
        // No rollout state (no circuit breaker): the only deployment, at full strength.
        None => service.deployments().len() == 1 && pending == 0,
    };
    if completed && running == desired {
        DeploymentVerdict::Completed { running }
    } else {
        DeploymentVerdict::InProgress {
            desired,
            running,
            pending,
            failed,
            state: d
                .rollout_state()
                .map_or("-".into(), |s| s.as_str().to_string()),
        }
    }
}

fn primary(service: &Service) -> Option<&Deployment> {
    service
        .deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
}

fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[async_trait]
impl Action for RunTask {
    fn schema(&self) -> &'static ActionSchema {
        &RUN_TASK
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let command: Vec<&str> = params
            .get("command")
            .and_then(|c| c.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let accepted = params
            .get("exit_codes")
            .and_then(|c| c.as_array())
            .map(|codes| {
                let codes: Vec<String> = codes.iter().map(ToString::to_string).collect();
                format!(" (exit codes {} count as success)", codes.join(", "))
            })
            .unwrap_or_default();
        format!(
            "ECS RunTask on {} (network of service {}): {}{accepted}",
            params
                .get("cluster")
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            params
                .get("service")
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            command.join(" ")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (params, config) = match prepare::<RunTaskParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        run_task(&config, &params, &ctx).await.unwrap_or_else(|o| o)
    }
}

async fn run_task(
    config: &aws_config::SdkConfig,
    p: &RunTaskParams,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    if p.exit_codes.as_ref().is_some_and(Vec::is_empty) {
        return Err(Outcome::failed(
            "`exit_codes` is empty: no exit code could succeed; give e.g. [0] or [0, 1]. Nothing was started",
        ));
    }
    let ecs = aws_sdk_ecs::Client::new(config);
    let report = &ctx.report;
    let services = ecs
        .describe_services()
        .cluster(&p.cluster)
        .services(&p.service)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ecs:DescribeServices", &e)))?;
    let Some(service) = services.services().first() else {
        return Err(Outcome::failed(format!(
            "no service `{}` in cluster `{}`",
            p.service, p.cluster
        )));
    };
    let network = service.network_configuration().cloned();
    let task_definition = p
        .task_definition
        .clone()
        .or_else(|| service.task_definition().map(str::to_string))
        .ok_or_else(|| Outcome::failed("the service has no task definition"))?;
    let described = ecs
        .describe_task_definition()
        .task_definition(&task_definition)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ecs:DescribeTaskDefinition", &e)))?;
    let containers = described
        .task_definition()
        .map(|t| t.container_definitions())
        .unwrap_or_default();
    let container = match &p.container {
        Some(name) => containers.iter().find(|c| c.name() == Some(name.as_str())),
        None => containers.first(),
    }
    .ok_or_else(|| {
        Outcome::failed(format!(
            "task definition {task_definition} has no container {:?}",
            p.container
        ))
    })?;
    let container_name = container.name().unwrap_or_default().to_string();
    let log_options = container
        .log_configuration()
        .and_then(|l| l.options())
        .cloned()
        .unwrap_or_default();

    let overrides_json =
        serde_json::json!({"containerOverrides": [{"name": container_name, "command": p.command}]});
    let size = overrides_json.to_string().len();
    if size > MAX_OVERRIDES_BYTES {
        return Err(Outcome::failed(format!(
            "the command override is {size} bytes; RunTask accepts at most {MAX_OVERRIDES_BYTES}: nothing was started"
        )));
    }
    let overrides = TaskOverride::builder()
        .container_overrides(
            ContainerOverride::builder()
                .name(&container_name)
                .set_command(Some(p.command.clone()))
                .build(),
        )
        .build();
    let mut request = ecs
        .run_task()
        .cluster(&p.cluster)
        .task_definition(&task_definition)
        .launch_type(LaunchType::Fargate)
        .overrides(overrides)
        .started_by("cutover");
    if let Some(network) = network {
        request = request.network_configuration(network);
    }
    let started = request
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ecs:RunTask", &e)))?;
    if !started.failures().is_empty() {
        let reasons: Vec<String> = started
            .failures()
            .iter()
            .map(|f| {
                format!(
                    "{} {}",
                    f.reason().unwrap_or("?"),
                    f.detail().unwrap_or_default()
                )
                .trim()
                .to_string()
            })
            .collect();
        return Err(Outcome::failed(format!(
            "RunTask failed: {}",
            reasons.join("; ")
        )));
    }
    let task_arn = started
        .tasks()
        .first()
        .and_then(|t| t.task_arn())
        .ok_or_else(|| Outcome::failed("RunTask returned no task and no failure"))?
        .to_string();
    report
        .info(format!("task {task_arn} started: {}", p.command.join(" ")))
        .await;
    report.output("task_arn", task_arn.clone()).await;

    let mut follower = match (
        log_options.get("awslogs-group"),
        log_options.get("awslogs-stream-prefix"),
    ) {
        (Some(group), Some(prefix)) => Some(LogFollower::new(
            aws_sdk_cloudwatchlogs::Client::new(config),
            group.clone(),
            format!("{prefix}/{container_name}/{}", task_id(&task_arn)),
        )),
        _ => {
            report
                .info("the container has no awslogs configuration: no log to follow")
                .await;
            None
        }
    };
    let mut last_status = String::new();
    let task = loop {
        let described = ecs
            .describe_tasks()
            .cluster(&p.cluster)
            .tasks(&task_arn)
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("ecs:DescribeTasks", &e)))?;
        let Some(task) = described.tasks().first().cloned() else {
            return Err(Outcome::failed(format!(
                "task {task_arn} is no longer known to ECS"
            )));
        };
        let status = task.last_status().unwrap_or("?").to_string();
        if status != last_status {
            report.info(format!("task {status}")).await;
            last_status = status.clone();
        }
        if let Some(f) = follower.as_mut() {
            f.poll(report).await;
        }
        if status == "STOPPED" {
            break task;
        }
        // Every half second: a log line shows within about that (throttling backs off in the
        // follower), and the task's end is seen within it, so `ecs-run` adds little to its run.
        if pause(&ctx.cancel, POLL).await.is_err() {
            let _ = ecs
                .stop_task()
                .cluster(&p.cluster)
                .task(&task_arn)
                .reason("cancelled from cutover")
                .send()
                .await;
            report.info(format!("stopped task {task_arn}")).await;
            return Err(Outcome::Cancelled);
        }
    };
    // The last lines reach CloudWatch after the task stops: read once more, and again shortly.
    if let Some(f) = follower.as_mut() {
        f.poll(report).await;
        let _ = pause(&ctx.cancel, POLL).await;
        f.poll(report).await;
    }
    let accepted = p.exit_codes.clone().unwrap_or_else(|| vec![0]);
    let outcome = judge_task_accepting(&task, &container_name, &accepted);
    if let Some(code) = task
        .containers()
        .iter()
        .find(|c| c.name() == Some(container_name.as_str()))
        .and_then(|c| c.exit_code())
    {
        report.output("exit_code", code.to_string()).await;
    }
    Ok(outcome)
}

#[async_trait]
impl Action for Deploy {
    fn schema(&self) -> &'static ActionSchema {
        &DEPLOY
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let get = |k: &str| {
            params
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        };
        let revision = params.get("task_definition").and_then(|v| v.as_str());
        match params.get("image").and_then(|v| v.as_str()) {
            None if revision.is_some() => format!(
                "deploy {} to {}/{} and wait for the rollout",
                revision.unwrap_or_default(),
                get("cluster"),
                get("service")
            ),
            Some(image) => format!(
                "deploy {image} to {}/{} and wait for the rollout",
                get("cluster"),
                get("service")
            ),
            None => format!(
                "force a new deployment of {}/{} and wait for the rollout",
                get("cluster"),
                get("service")
            ),
        }
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (params, config) = match prepare::<DeployParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        deploy(&config, &params, &ctx).await.unwrap_or_else(|o| o)
    }

    /// As a rollback: the deployment restarted the revision it found — there is no other
    /// revision to go back to.
    fn nothing_to_undo(&self, params: &serde_json::Value) -> Option<String> {
        let get = |k: &str| params.get(k).and_then(|v| v.as_str());
        let (wanted, expect) = (get("task_definition")?, get("expect")?);
        (wanted == expect).then(|| {
            format!(
                "the deployment restarted the revision the service already ran ({wanted}): there is no other revision to go back to (re-run the step to restart the tasks again)"
            )
        })
    }
}

async fn deploy(
    config: &aws_config::SdkConfig,
    p: &DeployParams,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    let deadline = parse_duration(p.deadline.as_deref(), Duration::from_secs(1800), "deadline")?;
    let interval = parse_duration(p.interval.as_deref(), Duration::from_secs(5), "interval")?;
    let ecs = aws_sdk_ecs::Client::new(config);
    let report = &ctx.report;
    let described = ecs
        .describe_services()
        .cluster(&p.cluster)
        .services(&p.service)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ecs:DescribeServices", &e)))?;
    let service = described.services().first().ok_or_else(|| {
        Outcome::failed(format!(
            "no service `{}` in cluster `{}`",
            p.service, p.cluster
        ))
    })?;
    let seen_events: HashSet<String> = service
        .events()
        .iter()
        .filter_map(|e| e.id().map(str::to_string))
        .collect();
    let live = service.task_definition().unwrap_or_default().to_string();
    // As a rollback: already back is done; only the revision the step deployed is undone.
    if let (Some(expect), Some(wanted)) = (&p.expect, &p.task_definition) {
        if &live == wanted {
            return Ok(Outcome::Succeeded {
                note: Some(format!(
                    "{}/{} already runs {wanted}, the revision before the deployment: nothing to change",
                    p.cluster, p.service
                )),
            });
        }
        if &live != expect {
            return Err(Outcome::failed(format!(
                "{}/{} runs {live}: neither the revision the deployment set ({expect}) nor the one before it ({wanted}). Deployed since by someone else; nothing was touched",
                p.cluster, p.service
            )));
        }
    }
    // A re-run that finds the revision an earlier attempt deployed keeps the revision that
    // attempt found before it (what a rollback goes back to); anything else — a deployment by
    // CI since, a rollback — is the service as it is now.
    let recorded = ctx.recorded.get(&ctx.step);
    let earlier = recorded
        .filter(|o| o.get("task_definition") == Some(&live))
        .and_then(|o| o.get("previous_task_definition"))
        .cloned();
    if let Some(earlier) = &earlier {
        report
            .info(format!(
                "the service runs {live}, an earlier attempt's deployment: the revision to go back to stays {earlier}"
            ))
            .await;
    }
    report
        .output(
            "previous_task_definition",
            earlier.clone().unwrap_or_else(|| live.clone()),
        )
        .await;
    report.recorded().await;
    let previous = live;
    let mut task_definition = p.task_definition.clone().unwrap_or(previous);
    if let Some(image) = &p.image {
        task_definition =
            register_with_image(&ecs, &task_definition, p.container.as_deref(), image).await?;
        report
            .info(format!("registered {task_definition} with image {image}"))
            .await;
    }
    let updated = ecs
        .update_service()
        .cluster(&p.cluster)
        .service(&p.service)
        .task_definition(&task_definition)
        .force_new_deployment(true)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ecs:UpdateService", &e)))?;
    let ours = updated
        .service()
        .and_then(primary)
        .and_then(|d| d.id())
        .ok_or_else(|| Outcome::failed("UpdateService returned no primary deployment"))?
        .to_string();
    report
        .info(format!("deployment {ours} started ({task_definition})"))
        .await;
    report.output("deployment_id", ours.clone()).await;
    report
        .output("task_definition", task_definition.clone())
        .await;
    watch_rollout(&ecs, p, &ours, seen_events, deadline, interval, ctx).await
}

async fn watch_rollout(
    ecs: &aws_sdk_ecs::Client,
    p: &DeployParams,
    ours: &str,
    mut seen_events: HashSet<String>,
    deadline: Duration,
    interval: Duration,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    let report = &ctx.report;
    let started = Instant::now();
    let mut seen_stopped: HashSet<String> = HashSet::new();
    let mut last_line = String::new();
    loop {
        let described = ecs
            .describe_services()
            .cluster(&p.cluster)
            .services(&p.service)
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("ecs:DescribeServices", &e)))?;
        let service = described
            .services()
            .first()
            .ok_or_else(|| Outcome::failed("the service disappeared"))?;
        let mut events: Vec<_> = service
            .events()
            .iter()
            .filter(|e| e.id().is_some_and(|id| !seen_events.contains(id)))
            .collect();
        events.reverse();
        for event in events {
            seen_events.insert(event.id().unwrap_or_default().to_string());
            report
                .info(format!("event: {}", event.message().unwrap_or_default()))
                .await;
        }
        let verdict = judge_deployment(service, ours);
        if let DeploymentVerdict::InProgress { failed, .. } = &verdict {
            if *failed > 0 {
                report_stopped_tasks(ecs, p, &mut seen_stopped, report).await;
            }
        }
        match verdict {
            DeploymentVerdict::Completed { running } => {
                return Ok(Outcome::Succeeded {
                    note: Some(format!(
                        "deployment {ours} completed with {running} running"
                    )),
                })
            }
            DeploymentVerdict::Failed(reason) => {
                report_stopped_tasks(ecs, p, &mut seen_stopped, report).await;
                return Ok(Outcome::failed(reason));
            }
            DeploymentVerdict::InProgress {
                desired,
                running,
                pending,
                failed,
                state,
            } => {
                let line = format!("rollout {state}: {running}/{desired} running, {pending} pending, {failed} failed");
                if line != last_line {
                    report.info(line.clone()).await;
                    last_line = line;
                }
                report
                    .progress(
                        u64::try_from(running).unwrap_or(0),
                        Some(u64::try_from(desired).unwrap_or(0)),
                        "tasks",
                        Some(state),
                    )
                    .await;
            }
        }
        if started.elapsed() >= deadline {
            return Ok(Outcome::failed(format!(
                "deployment {ours} did not complete within {}: {last_line}",
                humantime::format_duration(deadline)
            )));
        }
        pause(&ctx.cancel, interval).await?;
    }
}

async fn report_stopped_tasks(
    ecs: &aws_sdk_ecs::Client,
    p: &DeployParams,
    seen: &mut HashSet<String>,
    report: &Reporter,
) {
    let Ok(listed) = ecs
        .list_tasks()
        .cluster(&p.cluster)
        .service_name(&p.service)
        .desired_status(DesiredStatus::Stopped)
        .send()
        .await
    else {
        return;
    };
    let arns: Vec<String> = listed
        .task_arns()
        .iter()
        .filter(|a| !seen.contains(*a))
        .take(10)
        .cloned()
        .collect();
    if arns.is_empty() {
        return;
    }
    if let Ok(described) = ecs
        .describe_tasks()
        .cluster(&p.cluster)
        .set_tasks(Some(arns))
        .send()
        .await
    {
        for task in described.tasks() {
            let arn = task.task_arn().unwrap_or_default().to_string();
            report
                .info(format!(
                    "stopped task {}: {}",
                    task_id(&arn),
                    task.stopped_reason().unwrap_or("no reason given")
                ))
                .await;
            seen.insert(arn);
        }
    }
}

/// Registers a new revision of a task definition with one container's image replaced.
async fn register_with_image(
    ecs: &aws_sdk_ecs::Client,
    current: &str,
    container: Option<&str>,
    image: &str,
) -> Result<String, Outcome> {
    let described = ecs
        .describe_task_definition()
        .task_definition(current)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ecs:DescribeTaskDefinition", &e)))?;
    let td = described
        .task_definition()
        .ok_or_else(|| Outcome::failed(format!("no task definition {current}")))?;
    let mut containers = td.container_definitions().to_vec();
    let index = match container {
        Some(name) => containers.iter().position(|c| c.name() == Some(name)),
        None => (!containers.is_empty()).then_some(0),
    }
    .ok_or_else(|| Outcome::failed(format!("{current} has no container {container:?}")))?;
    let mut changed = containers[index].clone();
    changed.image = Some(image.to_string());
    containers[index] = changed;
    let registered = ecs
        .register_task_definition()
        .family(td.family().unwrap_or_default())
        .set_container_definitions(Some(containers))
        .set_task_role_arn(td.task_role_arn().map(str::to_string))
        .set_execution_role_arn(td.execution_role_arn().map(str::to_string))
        .set_network_mode(td.network_mode().cloned())
        .set_requires_compatibilities(Some(td.requires_compatibilities().to_vec()))
        .set_cpu(td.cpu().map(str::to_string))
        .set_memory(td.memory().map(str::to_string))
        .set_runtime_platform(td.runtime_platform().cloned())
        .set_volumes(Some(td.volumes().to_vec()))
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ecs:RegisterTaskDefinition", &e)))?;
    registered
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .map(str::to_string)
        .ok_or_else(|| Outcome::failed("RegisterTaskDefinition returned no ARN"))
}

#[cfg(test)]
mod tests {
    //! Outcomes moto cannot produce (a non-zero exit, a task that never started, a rollback),
    //! judged over SDK values built as the ECS API returns them. These are not integration tests.
    use super::*;
    use aws_sdk_ecs::types::Container;

    fn task(stop_code: Option<TaskStopCode>, exit: Option<i32>, reason: &str) -> Task {
        Task::builder()
            .task_arn("arn:aws:ecs:us-east-1:123456789012:task/gengar/0123456789abcdef")
            .last_status("STOPPED")
            .set_stop_code(stop_code)
            .stopped_reason(reason)
            .containers(
                Container::builder()
                    .name("gengar")
                    .set_exit_code(exit)
                    .build(),
            )
            .build()
    }

    #[test]
    fn exit_codes_decide_and_137_is_explained() {
        assert!(matches!(
            judge_task(
                &task(
                    Some(TaskStopCode::EssentialContainerExited),
                    Some(0),
                    "Essential container in task exited"
                ),
                "gengar"
            ),
            Outcome::Succeeded { .. }
        ));
        match judge_task(
            &task(
                Some(TaskStopCode::EssentialContainerExited),
                Some(3),
                "Essential container in task exited",
            ),
            "gengar",
        ) {
            Outcome::Failed { reason, exit_code } => {
                assert_eq!(exit_code, Some(3));
                assert!(
                    reason.contains("exit code 3") && reason.contains("Essential container"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        match judge_task(
            &task(
                None,
                Some(137),
                "OutOfMemoryError: Container killed due to memory usage",
            ),
            "gengar",
        ) {
            Outcome::Failed { reason, exit_code } => {
                assert_eq!(exit_code, Some(137));
                assert!(
                    reason.contains("out of memory") && reason.contains("OutOfMemoryError"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// `exit_codes = [0, 1]`: `migration:show`'s 1 ("a migration is pending") is an answer; a
    /// code outside the list fails as before, naming the list; no exit code never succeeds.
    #[test]
    fn accepted_exit_codes_succeed_and_others_fail_naming_the_list() {
        let exited = |code| {
            task(
                Some(TaskStopCode::EssentialContainerExited),
                Some(code),
                "Essential container in task exited",
            )
        };
        for code in [0, 1] {
            match judge_task_accepting(&exited(code), "gengar", &[0, 1]) {
                Outcome::Succeeded { note } => {
                    assert_eq!(note, Some(format!("exit code {code} (accepted: 0, 1)")))
                }
                other => panic!("{other:?}"),
            }
        }
        match judge_task_accepting(&exited(2), "gengar", &[0, 1]) {
            Outcome::Failed { reason, exit_code } => {
                assert_eq!(exit_code, Some(2));
                assert!(
                    reason.contains("exit code 2, not one of the accepted 0, 1"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // 0 itself fails when the list leaves it out.
        assert!(matches!(
            judge_task_accepting(&exited(0), "gengar", &[1]),
            Outcome::Failed {
                exit_code: Some(0),
                ..
            }
        ));
        assert!(matches!(
            judge_task_accepting(
                &task(Some(TaskStopCode::UserInitiated), None, "stopped"),
                "gengar",
                &[0, 1]
            ),
            Outcome::Failed {
                exit_code: None,
                ..
            }
        ));
    }

    #[test]
    fn a_task_that_never_started_or_has_no_exit_code_fails() {
        let failed = task(
            Some(TaskStopCode::TaskFailedToStart),
            None,
            "CannotPullContainerError: pull image manifest has been retried 5 time(s)",
        );
        match judge_task(&failed, "gengar") {
            Outcome::Failed {
                reason,
                exit_code: None,
            } => assert!(
                reason.contains("failed to start") && reason.contains("CannotPullContainerError"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // Even a stop code that is not TaskFailedToStart: no exit code is never success.
        let no_code = task(
            Some(TaskStopCode::UserInitiated),
            None,
            "Task stopped by user",
        );
        assert!(matches!(
            judge_task(&no_code, "gengar"),
            Outcome::Failed {
                exit_code: None,
                ..
            }
        ));
    }

    fn deployment(
        id: &str,
        status: &str,
        state: Option<DeploymentRolloutState>,
        desired: i32,
        running: i32,
        reason: &str,
    ) -> Deployment {
        Deployment::builder()
            .id(id)
            .status(status)
            .set_rollout_state(state)
            .rollout_state_reason(reason)
            .desired_count(desired)
            .running_count(running)
            .pending_count(desired - running)
            .build()
    }

    #[test]
    fn only_our_completed_primary_deployment_at_full_strength_is_success() {
        let ours = "ecs-svc/111";
        let done = Service::builder()
            .deployments(deployment(
                ours,
                "PRIMARY",
                Some(DeploymentRolloutState::Completed),
                1,
                1,
                "completed",
            ))
            .build();
        assert_eq!(
            judge_deployment(&done, ours),
            DeploymentVerdict::Completed { running: 1 }
        );
        let rolling = Service::builder()
            .deployments(deployment(
                ours,
                "PRIMARY",
                Some(DeploymentRolloutState::InProgress),
                2,
                1,
                "in progress",
            ))
            .deployments(deployment(
                "ecs-svc/000",
                "ACTIVE",
                Some(DeploymentRolloutState::Completed),
                2,
                2,
                "old",
            ))
            .build();
        assert!(matches!(
            judge_deployment(&rolling, ours),
            DeploymentVerdict::InProgress {
                running: 1,
                desired: 2,
                ..
            }
        ));
        // COMPLETED but short of desired is not done.
        let short = Service::builder()
            .deployments(deployment(
                ours,
                "PRIMARY",
                Some(DeploymentRolloutState::Completed),
                2,
                1,
                "",
            ))
            .build();
        assert!(matches!(
            judge_deployment(&short, ours),
            DeploymentVerdict::InProgress { .. }
        ));
    }

    #[test]
    fn a_circuit_breaker_rollback_is_a_failure_naming_the_reason() {
        let ours = "ecs-svc/222";
        // After a rollback the service is stable again, on the previous task definition.
        let rolled_back = Service::builder()
            .deployments(deployment(
                "ecs-svc/333",
                "PRIMARY",
                Some(DeploymentRolloutState::Completed),
                1,
                1,
                "rollback completed",
            ))
            .deployments(deployment(
                ours,
                "ACTIVE",
                Some(DeploymentRolloutState::Failed),
                1,
                0,
                "ECS deployment circuit breaker: tasks failed to start.",
            ))
            .build();
        match judge_deployment(&rolled_back, ours) {
            DeploymentVerdict::Failed(reason) => assert!(
                reason.contains("rolled back") && reason.contains("circuit breaker"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        let failed = Service::builder()
            .deployments(deployment(
                ours,
                "PRIMARY",
                Some(DeploymentRolloutState::Failed),
                1,
                0,
                "tasks failed health checks",
            ))
            .build();
        assert!(
            matches!(judge_deployment(&failed, ours), DeploymentVerdict::Failed(r) if r.contains("health checks"))
        );
        let gone = Service::builder()
            .deployments(deployment(
                "ecs-svc/444",
                "PRIMARY",
                Some(DeploymentRolloutState::Completed),
                1,
                1,
                "",
            ))
            .build();
        assert!(
            matches!(judge_deployment(&gone, ours), DeploymentVerdict::Failed(r) if r.contains("gone"))
        );
    }
}
