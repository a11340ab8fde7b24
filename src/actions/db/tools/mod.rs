//! The PostgreSQL tools: the local client programs the copy runs (`pg_dump`, `pg_restore`),
//! where they are and which version; `restore`: running `pg_restore` and reading what it says.
//! Imports only `connection` and `common`.

pub mod restore;

use std::path::{Path, PathBuf};

use crate::actions::db::common::version_parts;
use crate::actions::ActionContext;

/// A program found on disk with the major version it reports.
#[derive(Debug, Clone)]
pub struct Tool {
    pub path: PathBuf,
    pub version: String,
    pub major: u64,
}

/// Finds `name` in `bin_dir` (relative to the runbook) or on PATH and asks its version.
pub async fn find(name: &str, bin_dir: Option<&str>, ctx: &ActionContext) -> Result<Tool, String> {
    let path = match bin_dir.filter(|d| !d.trim().is_empty()) {
        Some(dir) => {
            let candidate = ctx.work_dir.join(dir).join(name);
            if !is_executable(&candidate) {
                return Err(format!(
                    "{name} is not in {} (the step's bin_dir)",
                    ctx.work_dir.join(dir).display()
                ));
            }
            candidate
        }
        None => on_path(name).ok_or_else(|| {
            format!(
                "{name} is not installed (not on PATH): install the PostgreSQL 16 client \
                 (Debian/Ubuntu: apt install postgresql-client-16; macOS: brew install libpq) \
                 or set the step's bin_dir"
            )
        })?,
    };
    let output = tokio::process::Command::new(&path)
        .arg("--version")
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .env_remove("LANGUAGE")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    // "pg_dump (PostgreSQL) 16.4 (Debian 16.4-1)"
    let version = text
        .split_whitespace()
        .nth(2)
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .ok_or_else(|| format!("{} --version printed {text:?}", path.display()))?
        .to_string();
    let major = version_parts(&version).first().copied().unwrap_or(0);
    Ok(Tool {
        path,
        version,
        major,
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
