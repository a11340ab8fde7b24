//! Reads secret values right before a step uses them; they live only in memory.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::redact::Redactor;
use crate::runbook::{Runbook, SecretSource};

/// The longest a `command` secret may take (a `heroku config:get` is slow, not this slow).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Resolves the named secrets and teaches the redactor their values.
pub async fn resolve(
    runbook: &Runbook,
    names: &[String],
    redactor: &Redactor,
) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for name in names {
        let Some(source) = runbook.secrets.get(name) else {
            return Err(format!("secret `{name}` is not declared under [secrets]"));
        };
        let value = match source {
            SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                format!("secret `{name}`: environment variable {var} is not set (export it, then re-run)")
            })?,
            SecretSource::Command { script, env } => {
                run_command(name, script, env, runbook).await?
            }
        };
        if value.is_empty() {
            return Err(format!("secret `{name}` resolved to an empty value"));
        }
        if value.trim().chars().count() < crate::redact::MIN_SECRET_LEN {
            return Err(format!(
                "secret `{name}` is shorter than {} characters: too short to be masked safely wherever it appears; nothing ran",
                crate::redact::MIN_SECRET_LEN
            ));
        }
        redactor.add_secret(&value);
        values.insert(name.clone(), value);
    }
    Ok(values)
}

async fn run_command(
    name: &str,
    command: &str,
    env: &BTreeMap<String, String>,
    runbook: &Runbook,
) -> Result<String, String> {
    let output = tokio::process::Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", command])
        .envs(env)
        .current_dir(runbook.base_dir())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(COMMAND_TIMEOUT, output)
        .await
        .map_err(|_| {
            format!(
                "secret `{name}`: its command took longer than {}s",
                COMMAND_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("secret `{name}`: cannot run its command: {e}"))?;
    if !output.status.success() {
        // Only the first stderr line, redacted: a failing command may still echo what it read.
        let first = String::from_utf8_lossy(&output.stderr)
            .lines()
            .next()
            .map(|l| Redactor::new().redact(l).into_owned())
            .unwrap_or_default();
        return Err(format!(
            "secret `{name}`: its command failed ({}){}",
            output.status,
            if first.is_empty() {
                String::new()
            } else {
                format!(": {first}")
            }
        ));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|_| format!("secret `{name}`: its command printed bytes that are not UTF-8"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}
