//! `shell`: a command run by bash, its output streamed line by line; the exit code decides.

use std::collections::BTreeMap;
use std::process::Stdio;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use tokio::process::Command;

use super::process::{pump, signal_group, stop_group, KILL_GRACE};
use super::{Action, ActionContext, Outcome, Stream};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Shell;

static SCHEMA: ActionSchema = ActionSchema {
    kind: "shell",
    summary: "runs a bash command (with -e -o pipefail); exit code 0 is success",
    params: &[
        ParamSpec::required("run", ParamType::String, "the command line"),
        ParamSpec::optional(
            "cwd",
            ParamType::String,
            "directory to run in, relative to the runbook",
        ),
        ParamSpec::optional("env", ParamType::StringMap, "extra environment variables"),
        ParamSpec::optional(
            "splice",
            ParamType::StringList,
            "`${var}`s pasted into `run` as shell text (every other value reaches bash as data, through the environment)",
        ),
    ],
    outputs: &[],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    run: String,
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, serde_json::Value>,
}

fn explain_exit(code: i32) -> String {
    match code {
        127 => "exit code 127: command not found (is it installed and on PATH?)".to_string(),
        126 => "exit code 126: command found but not executable".to_string(),
        137 => "exit code 137: killed (SIGKILL, often out of memory)".to_string(),
        _ => format!("exit code {code}"),
    }
}

/// `name=value` lines the command wrote to `$CUTOVER_OUTPUT`.
fn read_outputs(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

#[async_trait]
impl Action for Shell {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let run = params.get("run").and_then(|r| r.as_str()).unwrap_or("");
        let mut text = match params.get("cwd").and_then(|c| c.as_str()) {
            Some(cwd) => format!("$ {run}   (in {cwd})"),
            None => format!("$ {run}"),
        };
        // The values the command reads (secrets shown masked): what it will really run with.
        let values: Vec<String> = params
            .get("env")
            .and_then(|e| e.as_object())
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("CUTOVER_"))
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                )
            })
            .collect();
        if !values.is_empty() {
            text.push_str(&format!("   with {}", values.join(" ")));
        }
        text
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let params: Params = match ctx.params() {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        let cwd = params
            .cwd
            .as_deref()
            .map_or_else(|| ctx.work_dir.clone(), |c| ctx.work_dir.join(c));
        if !cwd.is_dir() {
            return Outcome::failed(format!(
                "working directory {} does not exist",
                cwd.display()
            ));
        }
        let _ = std::fs::remove_file(&ctx.outputs_file);
        let mut command = Command::new("bash");
        command
            .args(["-e", "-o", "pipefail", "-c", &params.run])
            .current_dir(&cwd)
            .env("CUTOVER_OUTPUT", &ctx.outputs_file)
            .env("CUTOVER_STEP", &ctx.step)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so cancel reaches every process the command started.
            .process_group(0)
            .kill_on_drop(true);
        for (key, value) in &params.env {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            command.env(key, value);
        }
        super::process::hand_driver_lock(&mut command);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::failed(format!("cannot start bash: {e}")),
        };
        let pgid = child.id();
        let out = tokio::spawn(pump(
            child.stdout.take(),
            Stream::Stdout,
            ctx.report.clone(),
        ));
        let err = tokio::spawn(pump(
            child.stderr.take(),
            Stream::Stderr,
            ctx.report.clone(),
        ));

        let status = tokio::select! {
            status = child.wait() => Some(status),
            () = ctx.cancel.cancelled() => None,
        };
        let status = match status {
            Some(status) => status,
            None => {
                stop_group(&mut child).await;
                // The group is gone, so are the pipes' writers: the readers end at once.
                let _ = tokio::time::timeout(KILL_GRACE / 4, async {
                    let _ = out.await;
                    let _ = err.await;
                })
                .await;
                return Outcome::Cancelled;
            }
        };
        // Whatever the command left running in the background ends with the step, and with
        // it the pipes, so the readers finish.
        signal_group(pgid, Signal::SIGKILL);
        let _ = out.await;
        let _ = err.await;
        match status {
            Ok(status) if status.success() => {
                for (name, value) in read_outputs(&ctx.outputs_file) {
                    ctx.report.output(&name, value).await;
                }
                let _ = std::fs::remove_file(&ctx.outputs_file);
                Outcome::Succeeded { note: None }
            }
            Ok(status) => match status.code() {
                Some(code) => Outcome::Failed {
                    reason: explain_exit(code),
                    exit_code: Some(code),
                },
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    Outcome::failed(format!(
                        "killed by signal {}",
                        status.signal().unwrap_or_default()
                    ))
                }
            },
            Err(e) => Outcome::failed(format!("lost track of the command: {e}")),
        }
    }
}
