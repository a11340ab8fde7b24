//! `cutover ecs-run -- CMD...`: a one-off ECS task (what `heroku run` was).

use cutover::actions::{Outcome, Registry};
use cutover::redact::Redactor;
use cutover::runbook::Runbook;
use cutover::state::s3::Reading;

use super::context::{self, Context};
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// ECS cluster (default: the runbook's [aws] cluster).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Service whose network configuration and task definition to use.
    #[arg(long)]
    pub service: Option<String>,
    #[arg(long)]
    pub container: Option<String>,
    /// The command, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let _state = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    ecs_run(
        runbook,
        ctx.registry.clone(),
        args.cluster,
        args.service,
        args.container,
        args.command,
    )
}

/// `cutover ecs-run -- CMD...`: the `ecs.run-task` action, outside any step.
fn ecs_run(
    runbook: Runbook,
    registry: Registry,
    cluster: Option<String>,
    service: Option<String>,
    container: Option<String>,
    command: Vec<String>,
) -> Result<u8, Failure> {
    use cutover::actions::{ActionContext, ActionEvent, Reporter, Stream};
    let aws = runbook.aws.clone().unwrap_or_default();
    let missing = |what: &str| {
        Failure::new(
            exit::INVALID,
            format!("no {what}: pass --{what} or set [aws] {what} in the runbook"),
        )
    };
    let cluster = cluster
        .or_else(|| aws.cluster.clone())
        .ok_or_else(|| missing("cluster"))?;
    let service = service
        .or_else(|| aws.service.clone())
        .ok_or_else(|| missing("service"))?;
    let container = container.or_else(|| aws.container.clone());
    let Some(action) = registry.get("ecs.run-task") else {
        return Err(Failure::new(exit::STEP_FAILED, "no ecs.run-task action"));
    };
    let runtime = context::runtime()?;
    runtime.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ncutover: stopping the task...");
                on_signal.cancel();
            }
        });
        let outputs =
            std::env::temp_dir().join(format!("cutover-ecs-run-{}.outputs", std::process::id()));
        let context = ActionContext {
            step: "ecs-run".into(),
            params: serde_json::json!({
                "cluster": cluster,
                "service": service,
                "command": command,
                "container": container,
            }),
            cancel,
            report: Reporter::new(tx),
            work_dir: runbook.base_dir(),
            outputs_file: outputs,
            operator_note: None,
            aws,
            recorded: Default::default(),
            forwards: Vec::new(),
            tunnels: Default::default(),
        };
        let task = tokio::spawn(async move { action.run(context).await });
        let redactor = Redactor::new();
        while let Some(event) = rx.recv().await {
            match event {
                ActionEvent::Log {
                    stream: Stream::Stdout,
                    line,
                } => println!("{}", redactor.redact(&line)),
                ActionEvent::Log { line, .. } => eprintln!("» {}", redactor.redact(&line)),
                ActionEvent::Recorded(ack) => ack.answer(),
                ActionEvent::Output { .. } | ActionEvent::Progress(_) => {}
            }
        }
        let outcome = task
            .await
            .unwrap_or_else(|e| Outcome::failed(e.to_string()));
        match outcome {
            Outcome::Succeeded { .. } => Ok(exit::OK),
            Outcome::Failed { reason, exit_code } => {
                eprintln!("cutover: {reason}");
                Ok(exit_code.map_or(exit::STEP_FAILED, |c| {
                    u8::try_from(c.clamp(1, 255)).unwrap_or(exit::STEP_FAILED)
                }))
            }
            Outcome::Cancelled => Ok(exit::CANCELLED),
        }
    })
}
