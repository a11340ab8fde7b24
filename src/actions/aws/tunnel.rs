//! `aws.tunnel`: a private path to a host inside the VPC (RDS) for the steps that run on the
//! operator's machine. A Session Manager port-forwarding session
//! (`AWS-StartPortForwardingSessionToRemoteHost`) through a running task of the service (ECS
//! Exec), bound to a free loopback port: nothing public, no security-group rule, nothing left
//! open afterwards.
//!
//! cutover calls `ssm:StartSession` itself (an AccessDenied is named as such) and hands the
//! session to the Session Manager plugin the way the AWS CLI does — the response, which holds
//! the session's token, in the `AWS_SSM_START_SESSION_RESPONSE` environment variable, never on
//! argv. The plugin runs under `cutover tunnel-guard`, which stops it when cutover goes away
//! (however it ends), so no session outlives its driver.
//!
//! The step opens the tunnel, checks that PostgreSQL answers through it over TLS (the
//! certificate verified for the real host name when a CA bundle is given), and leaves it in
//! the engine's [`Tunnels`] for the steps that name it with `via`; the engine re-opens it when
//! it dropped and closes it after the last of them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ecs::types::{DesiredStatus, Task};
use aws_sdk_sts::error::ProvideErrorMetadata;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::{explain, prepare, Session};
use crate::actions::{Action, ActionContext, Forward, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Tunnel(pub Arc<Session>);

/// The plugin's name on PATH, as AWS installs it.
pub const PLUGIN: &str = "session-manager-plugin";
const PLUGIN_INSTALL: &str = "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html";
/// The environment variable that carries the StartSession response to the plugin.
const RESPONSE_VAR: &str = "AWS_SSM_START_SESSION_RESPONSE";
const DOCUMENT: &str = "AWS-StartPortForwardingSessionToRemoteHost";
/// How long the plugin gets to start listening.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long the PostgreSQL check through the tunnel may take.
const CHECK_WITHIN: Duration = Duration::from_secs(15);

static TUNNEL: ActionSchema = ActionSchema {
    kind: "aws.tunnel",
    summary: "opens a Session Manager port forward through a running task of the service to a host inside the VPC (RDS), checks PostgreSQL answers through it over TLS, and keeps it open for the steps that name it with `via`",
    params: &[
        ParamSpec::required("cluster", ParamType::String, "ECS cluster"),
        ParamSpec::required("service", ParamType::String, "service whose running task the session goes through (ECS Exec on)"),
        ParamSpec::required("host", ParamType::String, "the host to reach from inside the VPC, e.g. the RDS address"),
        ParamSpec::optional("port", ParamType::Integer, "its port (5432)"),
        ParamSpec::optional("container", ParamType::String, "container of the task (default: the first with the ExecuteCommandAgent running)"),
        ParamSpec::optional("ca_bundle", ParamType::String, "CA bundle (PEM) the server's certificate is verified against for `host` (for RDS: its global bundle); without it the check only requires TLS"),
        ParamSpec::optional("local_port", ParamType::Integer, "loopback port to listen on (default: a free one)"),
    ],
    outputs: &["task", "target", "local_address", "session_id"],
    needs_operator_note: false,
};

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    cluster: String,
    service: String,
    host: String,
    port: Option<u16>,
    container: Option<String>,
    ca_bundle: Option<String>,
    local_port: Option<u16>,
}

/// An open session: the plugin (under its guard) listening on `forward.local`.
pub struct OpenTunnel {
    pub forward: Forward,
    /// The task it goes through, and the Session Manager target (`ecs:<cluster>_<task>_<runtime>`).
    pub task: String,
    pub target: String,
    pub session_id: String,
    guard: Child,
}

impl OpenTunnel {
    /// Whether its plugin still runs and its port still accepts.
    pub async fn alive(&mut self) -> bool {
        if !matches!(self.guard.try_wait(), Ok(None)) {
            return false;
        }
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(self.forward.local),
        )
        .await
        .is_ok_and(|c| c.is_ok())
    }

    /// Stops the session: the guard ends the plugin (SIGTERM, then SIGKILL).
    pub async fn close(mut self) {
        // Closing the guard's stdin is its signal to stop the plugin.
        drop(self.guard.stdin.take());
        if tokio::time::timeout(Duration::from_secs(3), self.guard.wait())
            .await
            .is_err()
        {
            let _ = self.guard.kill().await;
        }
    }
}

/// The tunnels open in this process, by the id of the step that opened them. Dropping one
/// (or the process ending) closes it: the guard's stdin closes with it.
#[derive(Clone, Default)]
pub struct Tunnels(Arc<Mutex<BTreeMap<String, OpenTunnel>>>);

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tunnels({:?})", self.open())
    }
}

impl Tunnels {
    pub fn park(&self, step: &str, tunnel: OpenTunnel) -> Option<OpenTunnel> {
        self.0.lock().ok()?.insert(step.to_string(), tunnel)
    }

    pub fn take(&self, step: &str) -> Option<OpenTunnel> {
        self.0.lock().ok()?.remove(step)
    }

    /// The forward of an open tunnel (whether it still works is [`OpenTunnel::alive`]'s to say).
    pub fn forward(&self, step: &str) -> Option<Forward> {
        self.0.lock().ok()?.get(step).map(|t| t.forward.clone())
    }

    /// The ids of the steps whose tunnels are open.
    pub fn open(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Action for Tunnel {
    fn schema(&self) -> &'static ActionSchema {
        &TUNNEL
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let get = |k: &str| params.get(k).and_then(|v| v.as_str()).unwrap_or("?");
        format!(
            "Session Manager port forward through a running task of {}/{} to {}:{} (ECS Exec), kept open for the steps that use it",
            get("cluster"),
            get("service"),
            get("host"),
            params.get("port").and_then(|v| v.as_u64()).unwrap_or(5432)
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        match open_checked(&self.0, &ctx).await {
            Ok(tunnel) => {
                let note = format!(
                    "127.0.0.1:{} → {}:{} through task {}",
                    tunnel.forward.local.port(),
                    tunnel.forward.host,
                    tunnel.forward.port,
                    tunnel.task
                );
                ctx.report.output("task", tunnel.task.clone()).await;
                ctx.report.output("target", tunnel.target.clone()).await;
                ctx.report
                    .output("local_address", tunnel.forward.local.to_string())
                    .await;
                ctx.report
                    .output("session_id", tunnel.session_id.clone())
                    .await;
                if let Some(old) = ctx.tunnels.park(&ctx.step, tunnel) {
                    old.close().await;
                }
                Outcome::Succeeded { note: Some(note) }
            }
            Err(outcome) => outcome,
        }
    }
}

/// Opens the tunnel a step describes and checks PostgreSQL answers through it.
async fn open_checked(session: &Session, ctx: &ActionContext) -> Result<OpenTunnel, Outcome> {
    let (p, config): (Params, _) = prepare(session, ctx).await?;
    let plugin = find_plugin().await.map_err(Outcome::failed)?;
    ctx.report
        .info(format!("session manager plugin: {plugin}"))
        .await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    let (task, target) = tokio::select! {
        found = exec_target(&ecs, &p) => found?,
        () = ctx.cancel.cancelled() => return Err(Outcome::Cancelled),
    };
    ctx.report
        .info(format!(
            "through task {task} (Session Manager target {target})"
        ))
        .await;
    let port = p.port.unwrap_or(5432);
    let local = match p.local_port {
        Some(port) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
        None => free_loopback_port().map_err(Outcome::failed)?,
    };
    let ssm = aws_sdk_ssm::Client::new(&config);
    let started = ssm
        .start_session()
        .target(&target)
        .document_name(DOCUMENT)
        .parameters("host", vec![p.host.clone()])
        .parameters("portNumber", vec![port.to_string()])
        .parameters("localPortNumber", vec![local.port().to_string()])
        .reason(format!("cutover step {}", ctx.step))
        .send()
        .await
        .map_err(|e| Outcome::failed(start_session_error(&e, &target)))?;
    let session_id = started.session_id().unwrap_or_default().to_string();
    let response = serde_json::json!({
        "SessionId": session_id,
        "StreamUrl": started.stream_url().unwrap_or_default(),
        "TokenValue": started.token_value().unwrap_or_default(),
    });
    let request = serde_json::json!({
        "Target": target,
        "DocumentName": DOCUMENT,
        "Parameters": {
            "host": [p.host],
            "portNumber": [port.to_string()],
            "localPortNumber": [local.port().to_string()],
        },
    });
    let region = config
        .region()
        .map(|r| r.as_ref().to_string())
        .unwrap_or_default();
    let endpoint = ctx
        .aws
        .endpoint_url
        .clone()
        .unwrap_or_else(|| format!("https://ssm.{region}.amazonaws.com"));
    ctx.report
        .info(format!(
            "session {session_id}: forwarding 127.0.0.1:{} to {}:{port}",
            local.port(),
            p.host
        ))
        .await;
    let log = ctx.outputs_file.with_extension("session.log");
    let guard = spawn_guarded(
        &plugin,
        &[
            RESPONSE_VAR.to_string(),
            region,
            "StartSession".into(),
            ctx.aws.profile.clone().unwrap_or_default(),
            request.to_string(),
            endpoint,
        ],
        &[(RESPONSE_VAR, response.to_string())],
        &log,
    )
    .map_err(Outcome::failed)?;
    let mut tunnel = OpenTunnel {
        forward: Forward {
            host: p.host.clone(),
            port,
            local,
        },
        task,
        target,
        session_id,
        guard,
    };
    let ready = tokio::select! {
        ready = wait_listening(&mut tunnel) => ready,
        () = ctx.cancel.cancelled() => Err(None),
    };
    match ready {
        Ok(()) => {}
        Err(None) => {
            tunnel.close().await;
            return Err(Outcome::Cancelled);
        }
        Err(Some(why)) => {
            tunnel.close().await;
            let said = last_lines(&log, 5);
            return Err(Outcome::failed(format!(
                "the Session Manager plugin {why}{}",
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            )));
        }
    }
    let ca = p.ca_bundle.as_deref().map(|c| ctx.work_dir.join(c));
    let checked = tokio::select! {
        checked = check_postgres(tunnel.forward.local, &tunnel.forward.host, ca.as_deref()) => checked,
        () = ctx.cancel.cancelled() => Err("cancelled".to_string()),
    };
    match checked {
        Ok(said) => {
            ctx.report.info(said).await;
            Ok(tunnel)
        }
        Err(why) => {
            tunnel.close().await;
            if ctx.cancel.is_cancelled() {
                return Err(Outcome::Cancelled);
            }
            Err(Outcome::failed(format!(
                "the tunnel opened, but {}:{port} did not answer as PostgreSQL over TLS through it: {why}",
                p.host
            )))
        }
    }
}

/// The plugin on PATH and its version, or what to install.
async fn find_plugin() -> Result<String, String> {
    let out = Command::new(PLUGIN)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            format!(
                "the Session Manager plugin (`{PLUGIN}`) is not on PATH ({e}): install it ({PLUGIN_INSTALL}), then re-run. \
                 Only the plugin is needed: cutover starts the session itself"
            )
        })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(if version.is_empty() {
        PLUGIN.to_string()
    } else {
        format!("{PLUGIN} {version}")
    })
}

/// A running task of the service that ECS Exec can reach, and its Session Manager target.
async fn exec_target(ecs: &aws_sdk_ecs::Client, p: &Params) -> Result<(String, String), Outcome> {
    let listed = ecs
        .list_tasks()
        .cluster(&p.cluster)
        .service_name(&p.service)
        .desired_status(DesiredStatus::Running)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ecs:ListTasks", &e)))?;
    if listed.task_arns().is_empty() {
        return Err(Outcome::failed(format!(
            "no running task of service {}/{}: the tunnel goes through one (is the service deployed and its desired count above 0?)",
            p.cluster, p.service
        )));
    }
    let described = ecs
        .describe_tasks()
        .cluster(&p.cluster)
        .set_tasks(Some(listed.task_arns().to_vec()))
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ecs:DescribeTasks", &e)))?;
    let mut why_not = Vec::new();
    for task in described.tasks() {
        match exec_ready(task, p.container.as_deref()) {
            Ok(runtime) => {
                let id = task_id(task);
                return Ok((id.clone(), format!("ecs:{}_{id}_{runtime}", p.cluster)));
            }
            Err(why) => why_not.push(format!("task {}: {why}", task_id(task))),
        }
    }
    Err(Outcome::failed(format!(
        "no task of {}/{} can take a Session Manager session — {}",
        p.cluster,
        p.service,
        why_not.join("; ")
    )))
}

fn task_id(task: &Task) -> String {
    task.task_arn()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The runtime id of the task's container whose ExecuteCommandAgent runs, or why there is none.
pub fn exec_ready(task: &Task, container: Option<&str>) -> Result<String, String> {
    if task.last_status() != Some("RUNNING") {
        return Err(format!(
            "it is {}, not RUNNING",
            task.last_status().unwrap_or("in no state")
        ));
    }
    if !task.enable_execute_command() {
        return Err("ECS Exec is off for it (the service's enable_execute_command is false, or the task started before it was turned on: redeploy)".into());
    }
    let mut said = Vec::new();
    for c in task.containers() {
        let name = c.name().unwrap_or_default();
        if container.is_some_and(|want| want != name) {
            continue;
        }
        let agent = c.managed_agents().iter().find(|a| {
            a.name()
                .is_some_and(|n| n.as_str() == "ExecuteCommandAgent")
        });
        match (agent.and_then(|a| a.last_status()), c.runtime_id()) {
            (Some("RUNNING"), Some(runtime)) => return Ok(runtime.to_string()),
            (Some(status), _) => said.push(format!(
                "container {name}'s ExecuteCommandAgent is {status}"
            )),
            (None, _) => said.push(format!("container {name} has no ExecuteCommandAgent")),
        }
    }
    if said.is_empty() {
        said.push(match container {
            Some(want) => format!("it has no container {want}"),
            None => "it has no container".into(),
        });
    }
    Err(said.join(", "))
}

fn start_session_error<E, R>(error: &aws_sdk_ssm::error::SdkError<E, R>, target: &str) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = match error {
        aws_sdk_ssm::error::SdkError::ServiceError(s) => s.err().code().unwrap_or_default(),
        _ => "",
    };
    match code {
        "AccessDeniedException" | "AccessDenied" => format!(
            "AccessDenied: these credentials may not call ssm:StartSession on {target} — the operator's role needs ssm:StartSession on the cluster's tasks (arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/*) and on the document {DOCUMENT}"
        ),
        "TargetNotConnected" => format!(
            "Session Manager cannot reach {target} (TargetNotConnected): the task's agent is not connected — ECS Exec off for the service, or the task role without the ssmmessages channel permissions ({})",
            explain("ssm:StartSession", error)
        ),
        _ => explain("ssm:StartSession", error),
    }
}

fn free_loopback_port() -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("no free loopback port: {e}"))?;
    listener
        .local_addr()
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Starts `program` under `cutover tunnel-guard`: the guard stops it when its stdin closes,
/// which happens when this process ends, however it ends. Its output goes to `log`.
fn spawn_guarded(
    program: &str,
    args: &[String],
    env: &[(&str, String)],
    log: &Path,
) -> Result<Child, String> {
    let plugin = program.split_whitespace().next().unwrap_or(PLUGIN);
    let me =
        std::env::current_exe().map_err(|e| format!("cannot find cutover's own binary: {e}"))?;
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::File::create(log)
        .map_err(|e| format!("cannot create the session log {}: {e}", log.display()))?;
    let err = file
        .try_clone()
        .map_err(|e| format!("cannot create the session log: {e}"))?;
    Command::new(me)
        .arg("tunnel-guard")
        .arg("--")
        .arg(plugin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(err)
        // Its own group: Ctrl-C at the terminal is cutover's to handle. Not killed on drop:
        // dropping it closes its stdin, and the guard then stops the plugin (a SIGKILL of
        // the guard would leave the plugin running).
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the Session Manager plugin: {e}"))
}

/// Waits until the plugin accepts connections on the local port.
async fn wait_listening(tunnel: &mut OpenTunnel) -> Result<(), Option<String>> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = tunnel.guard.try_wait() {
            return Err(Some(format!("exited ({status}) before listening")));
        }
        if tokio::net::TcpStream::connect(tunnel.forward.local)
            .await
            .is_ok()
        {
            return Ok(());
        }
        if started.elapsed() > READY_WITHIN {
            return Err(Some(format!(
                "did not listen on {} within {}s",
                tunnel.forward.local,
                READY_WITHIN.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Asks what answers on `local` for TLS as a PostgreSQL client does (SSLRequest), and
/// completes a handshake for `host`: with a CA bundle the certificate must be valid for that
/// name. No credentials are sent.
pub async fn check_postgres(
    local: SocketAddr,
    host: &str,
    ca_bundle: Option<&Path>,
) -> Result<String, String> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(local)
            .await
            .map_err(|e| format!("cannot connect to {local}: {e}"))?;
        // SSLRequest: length 8, code 80877103.
        stream
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .map_err(|e| format!("writing to the tunnel: {e}"))?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await.map_err(|e| {
            format!("no answer through the tunnel ({e}): is {host} reachable from the task?")
        })?;
        match answer[0] {
            b'S' => {}
            b'N' => return Err("the server refuses TLS".to_string()),
            other => {
                return Err(format!(
                    "what answered is not PostgreSQL (first byte {other:#04x})"
                ))
            }
        }
        let config = crate::actions::db::tls_client_config(ca_bundle)?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host} is not a valid TLS name: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake for {host}: {e}"))?;
        let version = tls
            .get_ref()
            .1
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        Ok(match ca_bundle {
            Some(ca) => format!(
                "PostgreSQL answers through the tunnel over TLS ({version}), its certificate valid for {host} (CA bundle {})",
                ca.display()
            ),
            None => format!(
                "PostgreSQL answers through the tunnel over TLS ({version}); certificate not verified (no ca_bundle)"
            ),
        })
    };
    tokio::time::timeout(CHECK_WITHIN, work)
        .await
        .map_err(|_| format!("no answer within {}s", CHECK_WITHIN.as_secs()))?
}

/// `cutover tunnel-guard -- PROGRAM ARGS...`: runs the program until it exits or this
/// process's stdin closes (its parent, cutover, ended), then stops it: SIGTERM, SIGKILL after
/// 2 s. Returns the exit code to leave with.
pub fn guard(program: &str, args: &[String]) -> i32 {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::Read;

    let mut child = match std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("cutover tunnel-guard: cannot start {program}: {e}");
            return 127;
        }
    };
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code().unwrap_or(1);
        }
        if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return 0;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
            return 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{Container, ManagedAgent, ManagedAgentName};

    fn task(status: &str, exec: bool, agent: Option<&str>) -> Task {
        let mut container = Container::builder().name("gengar").runtime_id("abc-123");
        if let Some(agent) = agent {
            container = container.managed_agents(
                ManagedAgent::builder()
                    .name(ManagedAgentName::ExecuteCommandAgent)
                    .last_status(agent)
                    .build(),
            );
        }
        Task::builder()
            .task_arn("arn:aws:ecs:us-east-1:123456789012:task/gengar/abc")
            .last_status(status)
            .enable_execute_command(exec)
            .containers(container.build())
            .build()
    }

    #[test]
    fn a_task_takes_a_session_only_with_ecs_exec_and_a_running_agent() {
        assert_eq!(
            exec_ready(&task("RUNNING", true, Some("RUNNING")), None),
            Ok("abc-123".into())
        );
        assert_eq!(
            exec_ready(&task("RUNNING", true, Some("RUNNING")), Some("gengar")),
            Ok("abc-123".into())
        );
        let said = |t: Task, c: Option<&str>| exec_ready(&t, c).unwrap_err();
        assert!(said(task("RUNNING", false, None), None).contains("ECS Exec is off"));
        assert!(said(task("PENDING", true, Some("RUNNING")), None).contains("PENDING, not RUNNING"));
        assert!(said(task("RUNNING", true, Some("PENDING")), None)
            .contains("container gengar's ExecuteCommandAgent is PENDING"));
        assert!(said(task("RUNNING", true, None), None).contains("has no ExecuteCommandAgent"));
        assert!(said(task("RUNNING", true, Some("RUNNING")), Some("worker"))
            .contains("it has no container worker"));
    }

    /// What answers through a tunnel is judged by its reply to PostgreSQL's SSLRequest
    /// (a fake server: the case of a server that is not PostgreSQL, or refuses TLS, cannot be
    /// made with the real one).
    #[tokio::test]
    async fn the_check_tells_what_answered_through_the_tunnel() {
        async fn answering(reply: &'static [u8]) -> SocketAddr {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 8];
                socket.read_exact(&mut request).await.unwrap();
                assert_eq!(request, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
                socket.write_all(reply).await.unwrap();
            });
            addr
        }
        let refused = check_postgres(answering(b"N").await, "db.internal", None).await;
        assert_eq!(refused, Err("the server refuses TLS".to_string()));
        let http = check_postgres(answering(b"HTTP/1.1 400").await, "db.internal", None).await;
        assert!(http
            .unwrap_err()
            .contains("not PostgreSQL (first byte 0x48)"));
        let closed = check_postgres(answering(b"").await, "db.internal", None).await;
        assert!(closed.unwrap_err().contains("no answer through the tunnel"));
    }
}
