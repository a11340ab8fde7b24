//! `terraform`: plan, then apply exactly the plan that was reviewed. `command = "plan"` runs
//! `init` and `plan -out`, logs the summary (to add / change / destroy, and what is destroyed
//! or replaced) and records the saved plan's sha256; `command = "apply"` refuses a plan file
//! that changed since, applies it, and exports `terraform output -json` as step outputs.
//! Terraform's own output streams into the log as it runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::process::Command;

use super::process::{pump, stop_group};
use super::{Action, ActionContext, Outcome, Stream};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Terraform;

const PLAN_FILE: &str = "cutover.tfplan";

static SCHEMA: ActionSchema = ActionSchema {
    kind: "terraform",
    summary:
        "terraform plan (saved, summarised) or apply of exactly that saved plan, outputs exported",
    params: &[
        ParamSpec::required(
            "dir",
            ParamType::String,
            "the Terraform configuration, relative to the runbook",
        ),
        ParamSpec::required("command", ParamType::String, "\"plan\" or \"apply\""),
        ParamSpec::optional(
            "plan_sha256",
            ParamType::String,
            "apply: the plan step's plan_sha256 (the plan that was reviewed)",
        ),
        ParamSpec::optional(
            "vars",
            ParamType::StringMap,
            "input variables (given as TF_VAR_* in the environment, not on the command line)",
        ),
        ParamSpec::optional(
            "binary",
            ParamType::String,
            "the terraform program (default: terraform on PATH)",
        ),
    ],
    outputs: &["add", "change", "destroy", "replace", "plan_sha256"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    dir: String,
    command: String,
    plan_sha256: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    binary: Option<String>,
}

/// What a saved plan does, as `terraform show -json` describes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PlanSummary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    /// Resources destroyed and created again (also counted in add and destroy, as Terraform does).
    pub replaced: Vec<String>,
    pub destroyed: Vec<String>,
}

impl PlanSummary {
    pub fn from_json(plan: &serde_json::Value) -> Result<Self, String> {
        if plan.get("format_version").is_none() {
            return Err("not a `terraform show -json` plan (no format_version)".into());
        }
        let changes = plan
            .get("resource_changes")
            .and_then(|c| c.as_array())
            .map_or(&[][..], Vec::as_slice);
        let mut summary = PlanSummary::default();
        for change in changes {
            let address = change
                .get("address")
                .and_then(|a| a.as_str())
                .unwrap_or("?")
                .to_string();
            let actions: Vec<&str> = change
                .pointer("/change/actions")
                .and_then(|a| a.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            match actions.as_slice() {
                ["create"] => summary.add += 1,
                ["update"] => summary.change += 1,
                ["delete"] => {
                    summary.destroy += 1;
                    summary.destroyed.push(address);
                }
                ["delete", "create"] | ["create", "delete"] => {
                    summary.add += 1;
                    summary.destroy += 1;
                    summary.replaced.push(address);
                }
                _ => {}
            }
        }
        Ok(summary)
    }

    pub fn line(&self) -> String {
        format!(
            "Plan: {} to add, {} to change, {} to destroy{}",
            self.add,
            self.change,
            self.destroy,
            if self.replaced.is_empty() {
                String::new()
            } else {
                format!(" ({} replaced)", self.replaced.len())
            }
        )
    }
}

/// `terraform output -json` as step outputs: strings as they are, other values as JSON;
/// sensitive values are not exported (they would end up in the journal).
pub fn outputs_from_json(outputs: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let map = outputs
        .as_object()
        .ok_or("`terraform output -json` did not print an object")?;
    let mut out = Vec::new();
    for (name, entry) in map {
        if entry.get("sensitive").and_then(|s| s.as_bool()) == Some(true) {
            continue;
        }
        let value = entry.get("value").cloned().unwrap_or_default();
        let text = match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        out.push((name.clone(), text));
    }
    Ok(out)
}

fn sha256_file(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

struct Tf<'a> {
    binary: String,
    dir: std::path::PathBuf,
    vars: &'a BTreeMap<String, String>,
    ctx: &'a ActionContext,
}

impl Tf<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .current_dir(&self.dir)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for (name, value) in self.vars {
            command.env(format!("TF_VAR_{name}"), value);
        }
        crate::actions::process::hand_driver_lock(&mut command);
        command
    }

    fn spawn(&self, args: &[&str]) -> Result<tokio::process::Child, Outcome> {
        self.command(args).spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Outcome::failed(format!(
                    "{} is not installed (not on PATH): install Terraform 1.6 or newer \
                     (https://developer.hashicorp.com/terraform/install) or set the step's `binary`",
                    self.binary
                ))
            } else {
                Outcome::failed(format!("cannot start {}: {e}", self.binary))
            }
        })
    }

    /// Runs with both streams in the log; fails on a non-zero exit.
    async fn streamed(&self, args: &[&str]) -> Result<(), Outcome> {
        self.ctx
            .report
            .info(format!("$ terraform {}", args.join(" ")))
            .await;
        let mut child = self.spawn(args)?;
        let out = pump(child.stdout.take(), Stream::Stdout, self.ctx.report.clone());
        let err = pump(child.stderr.take(), Stream::Stderr, self.ctx.report.clone());
        let status = tokio::select! {
            (_, _, status) = async { tokio::join!(out, err, child.wait()) } => status,
            () = self.ctx.cancel.cancelled() => {
                stop_group(&mut child).await;
                return Err(Outcome::Cancelled);
            }
        };
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(Outcome::failed(format!(
                "terraform {} failed ({s}); see its lines above",
                args.first().copied().unwrap_or("")
            ))),
            Err(e) => Err(Outcome::failed(format!("lost track of terraform: {e}"))),
        }
    }

    /// Runs and returns stdout (JSON), stderr in the log.
    async fn captured(&self, args: &[&str]) -> Result<serde_json::Value, Outcome> {
        let child = self.spawn(args)?;
        let output = tokio::select! {
            o = child.wait_with_output() => o,
            () = self.ctx.cancel.cancelled() => return Err(Outcome::Cancelled),
        }
        .map_err(|e| Outcome::failed(format!("lost track of terraform: {e}")))?;
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            self.ctx.report.line(Stream::Stderr, line).await;
        }
        if !output.status.success() {
            return Err(Outcome::failed(format!(
                "terraform {} failed ({})",
                args.join(" "),
                output.status
            )));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| {
            Outcome::failed(format!("terraform {} printed no JSON: {e}", args.join(" ")))
        })
    }

    async fn summary(&self) -> Result<PlanSummary, Outcome> {
        let json = self.captured(&["show", "-json", PLAN_FILE]).await?;
        let summary = PlanSummary::from_json(&json).map_err(Outcome::failed)?;
        self.ctx.report.info(summary.line()).await;
        for address in &summary.destroyed {
            self.ctx.report.info(format!("  destroys {address}")).await;
        }
        for address in &summary.replaced {
            self.ctx.report.info(format!("  replaces {address}")).await;
        }
        Ok(summary)
    }
}

async fn run(ctx: &ActionContext, p: Params) -> Result<Outcome, Outcome> {
    let dir = ctx.work_dir.join(&p.dir);
    if !dir.is_dir() {
        return Err(Outcome::failed(format!(
            "the Terraform directory {} does not exist (scaffold it first)",
            dir.display()
        )));
    }
    let tf = Tf {
        binary: p.binary.clone().unwrap_or_else(|| "terraform".to_string()),
        dir: dir.clone(),
        vars: &p.vars,
        ctx,
    };
    let plan_path = dir.join(PLAN_FILE);
    match p.command.as_str() {
        "plan" => {
            tf.streamed(&["init", "-input=false", "-no-color"]).await?;
            tf.streamed(&[
                "plan",
                "-input=false",
                "-no-color",
                &format!("-out={PLAN_FILE}"),
            ])
            .await?;
            let summary = tf.summary().await?;
            let sha = sha256_file(&plan_path).map_err(Outcome::failed)?;
            ctx.report.output("add", summary.add.to_string()).await;
            ctx.report
                .output("change", summary.change.to_string())
                .await;
            ctx.report
                .output("destroy", summary.destroy.to_string())
                .await;
            ctx.report
                .output("replace", summary.replaced.len().to_string())
                .await;
            ctx.report.output("plan_sha256", sha).await;
            Ok(Outcome::Succeeded {
                note: Some(summary.line()),
            })
        }
        "apply" => {
            if !plan_path.is_file() {
                return Err(Outcome::failed(format!(
                    "no saved plan at {}: run the plan step first",
                    plan_path.display()
                )));
            }
            let sha = sha256_file(&plan_path).map_err(Outcome::failed)?;
            match &p.plan_sha256 {
                Some(expected) if *expected != sha => {
                    return Err(Outcome::failed(
                        "the saved plan is not the one that was reviewed (its sha256 changed): run the plan step again",
                    ))
                }
                Some(_) => {}
                None => {
                    ctx.report
                        .info("warning: no plan_sha256 given: applying the saved plan as it is")
                        .await
                }
            }
            let summary = tf.summary().await?;
            tf.streamed(&["apply", "-input=false", "-no-color", PLAN_FILE])
                .await?;
            // A saved plan is single-use (and may hold secrets).
            let _ = std::fs::remove_file(&plan_path);
            let outputs = tf.captured(&["output", "-json"]).await?;
            let outputs = outputs_from_json(&outputs).map_err(Outcome::failed)?;
            for (name, value) in &outputs {
                ctx.report.output(name, value.clone()).await;
            }
            Ok(Outcome::Succeeded {
                note: Some(format!(
                    "applied: {}; {} output(s) exported",
                    summary.line().trim_start_matches("Plan: "),
                    outputs.len()
                )),
            })
        }
        other => Err(Outcome::failed(format!(
            "command = {other:?}: expected \"plan\" or \"apply\""
        ))),
    }
}

#[async_trait]
impl Action for Terraform {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let dir = params.get("dir").and_then(|v| v.as_str()).unwrap_or("?");
        match params.get("command").and_then(|v| v.as_str()) {
            Some("apply") => format!("terraform apply {PLAN_FILE} (the reviewed plan) in {dir}"),
            _ => format!("terraform init + plan -out={PLAN_FILE} in {dir}"),
        }
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let params: Params = match ctx.params() {
            Ok(p) => p,
            Err(o) => return o,
        };
        run(&ctx, params).await.unwrap_or_else(|o| o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from `terraform show -json` of a real saved plan (Terraform 1.x format).
    const RECORDED_PLAN: &str = r#"{
      "format_version": "1.2", "terraform_version": "1.9.8",
      "resource_changes": [
        {"address": "aws_vpc.main", "change": {"actions": ["no-op"]}},
        {"address": "aws_ecs_cluster.main", "change": {"actions": ["create"]}},
        {"address": "aws_lb.main", "change": {"actions": ["update"]}},
        {"address": "aws_db_instance.main", "change": {"actions": ["delete", "create"]}},
        {"address": "aws_ssm_parameter.env[\"OLD_KEY\"]", "change": {"actions": ["delete"]}},
        {"address": "data.aws_caller_identity.current", "change": {"actions": ["read"]}}
      ]
    }"#;

    #[test]
    fn a_recorded_plan_is_summarised_as_terraform_counts_it() {
        let plan: serde_json::Value = serde_json::from_str(RECORDED_PLAN).unwrap();
        let summary = PlanSummary::from_json(&plan).unwrap();
        assert_eq!(summary.add, 2);
        assert_eq!(summary.change, 1);
        assert_eq!(summary.destroy, 2);
        assert_eq!(summary.replaced, vec!["aws_db_instance.main"]);
        assert_eq!(
            summary.destroyed,
            vec!["aws_ssm_parameter.env[\"OLD_KEY\"]"]
        );
        assert_eq!(
            summary.line(),
            "Plan: 2 to add, 1 to change, 2 to destroy (1 replaced)"
        );
        assert!(PlanSummary::from_json(&serde_json::json!({"x": 1})).is_err());
    }

    #[test]
    fn recorded_outputs_become_step_outputs_without_sensitive_ones() {
        let outputs: serde_json::Value = serde_json::from_str(
            r#"{
              "alb_dns_name": {"sensitive": false, "type": "string", "value": "gengar-123.us-east-1.elb.amazonaws.com"},
              "ecr_repository_url": {"sensitive": false, "type": "string", "value": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mentionai/gengar"},
              "subnets": {"sensitive": false, "type": ["list", "string"], "value": ["subnet-1", "subnet-2"]},
              "db_password": {"sensitive": true, "type": "string", "value": "hunter22"}
            }"#,
        )
        .unwrap();
        let out = outputs_from_json(&outputs).unwrap();
        assert_eq!(
            out,
            vec![
                (
                    "alb_dns_name".to_string(),
                    "gengar-123.us-east-1.elb.amazonaws.com".to_string()
                ),
                (
                    "ecr_repository_url".to_string(),
                    "123456789012.dkr.ecr.us-east-1.amazonaws.com/mentionai/gengar".to_string()
                ),
                (
                    "subnets".to_string(),
                    "[\"subnet-1\",\"subnet-2\"]".to_string()
                ),
            ]
        );
    }
}
