//! Running `pg_restore` and reading what it says, for both ways the copy restores (the streamed
//! and directory modes, and the parallel engine's schema, index builds and large objects):
//! the command with only this URL's connection in its environment, its `--verbose` lines read
//! into counts and errors, the allow-list that decides which errors are tolerated, and the
//! progress they give. Imports only `connection` and `common`.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use regex::Regex;
use tokio::process::{Child, Command};

use super::Tool;
use crate::actions::db::common::bytes_human;
use crate::actions::db::connection::DbUrl;
use crate::actions::process::LineReader;
use crate::actions::{ActionContext, Outcome, Stream};

/// What Heroku dumps restore with, harmlessly: the extension comment belongs to the extension's
/// owner, and the heroku_ext schema was created before the restore by `db.extensions`.
pub const DEFAULT_ALLOWED_ERRORS: [&str; 2] = [
    r"must be owner of extension \S+ \| COMMENT ON EXTENSION",
    r#"schema "heroku_ext" already exists"#,
];

pub const TICK: Duration = Duration::from_millis(500);

/// One error `pg_restore` reported and carried on after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreError {
    pub message: String,
    pub command: Option<String>,
}

impl RestoreError {
    pub fn text(&self) -> String {
        match &self.command {
            Some(c) => format!("{} | {c}", self.message),
            None => self.message.clone(),
        }
    }
}

/// What `pg_restore --verbose` said, read line by line.
#[derive(Debug, Default)]
pub struct RestoreLog {
    pub tables_created: u64,
    pub tables_loaded: u64,
    pub indexes: u64,
    pub constraints: u64,
    pub errors: Vec<RestoreError>,
    /// "errors ignored on restore: N", when it said so.
    pub ignored: Option<u64>,
    /// Bytes streamed so far at each progress tick: the copy's throughput over time.
    pub bytes_at_ticks: Vec<u64>,
}

impl RestoreLog {
    pub fn read(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("pg_restore: ") else {
            if let Some(command) = line.strip_prefix("Command was: ") {
                if let Some(last) = self.errors.last_mut() {
                    if last.command.is_none() {
                        last.command = Some(command.trim().to_string());
                    }
                }
            }
            return;
        };
        if let Some(message) = rest.strip_prefix("error: ") {
            let message = message
                .trim_start_matches("could not execute query: ")
                .trim()
                .to_string();
            self.errors.push(RestoreError {
                message,
                command: None,
            });
        } else if let Some(n) = rest.strip_prefix("warning: errors ignored on restore: ") {
            self.ignored = n.trim().parse().ok();
        } else if rest.starts_with("creating TABLE ") {
            self.tables_created += 1;
        } else if rest.starts_with("processing data for table ") {
            self.tables_loaded += 1;
        } else if rest.starts_with("creating INDEX ") {
            self.indexes += 1;
        } else if rest.starts_with("creating CONSTRAINT ")
            || rest.starts_with("creating FK CONSTRAINT ")
        {
            self.constraints += 1;
        }
    }

    /// The errors no pattern allows, and the ones it does.
    pub fn judge(&self, allowed: &[Regex]) -> (Vec<&RestoreError>, Vec<&RestoreError>) {
        self.errors
            .iter()
            .partition(|e| !allowed.iter().any(|re| re.is_match(&e.text())))
    }
}

/// How much work the restore has: the source's tables, indexes and foreign keys.
pub struct Totals {
    pub tables: u64,
    pub indexes: u64,
}

/// `maintenance_work_mem` goes into PGOPTIONS, so only a plain size is accepted.
pub fn memory_setting(value: Option<&str>) -> Result<String, Outcome> {
    let value = value.unwrap_or("1GB").trim();
    let valid = Regex::new(r"^[0-9]+\s*(kB|MB|GB|TB)?$").is_ok_and(|re| re.is_match(value));
    if valid {
        Ok(value.replace(' ', ""))
    } else {
        Err(Outcome::failed(format!(
            "maintenance_work_mem = {value:?} is not a size such as \"512MB\" or \"1GB\""
        )))
    }
}

pub fn tool_command(tool: &Tool, url: &DbUrl) -> Command {
    let mut command = Command::new(&tool.path);
    // Only this URL's connection: nothing inherited from the operator's shell.
    for var in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSERVICE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGOPTIONS",
        "PGPASSFILE",
    ] {
        command.env_remove(var);
    }
    for (key, value) in url.libpq_env() {
        command.env(key, value);
    }
    // Their messages are parsed (errors, the allow-list): in English whatever the operator's
    // locale, as `C` gives them.
    command
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .env_remove("LANGUAGE");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // The copy's dump and restore are the step's work: one left running by a killed driver
    // keeps the driver lock while it still writes.
    crate::actions::process::hand_driver_lock(&mut command);
    command
}

pub fn spawn(command: &mut Command, what: &Tool) -> Result<Child, Outcome> {
    command
        .spawn()
        .map_err(|e| Outcome::failed(format!("cannot start {}: {e}", what.path.display())))
}

pub async fn report_progress(
    ctx: &ActionContext,
    log: &RestoreLog,
    totals: &Totals,
    bytes: u64,
    started: Instant,
    phase: &str,
) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let total = totals.tables + totals.indexes;
    if total == 0 {
        // Nothing to count in (the large objects' restore): its lines say how it goes.
        return;
    }
    let done = (log.tables_loaded + log.indexes + log.constraints).min(total);
    ctx.report
        .progress(
            done,
            Some(total),
            "items",
            Some(format!(
                "{phase}: {} streamed ({}/s), tables {}/{}, indexes {}/{}, {:.0}s",
                bytes_human(bytes),
                bytes_human((bytes as f64 / secs) as u64),
                log.tables_loaded.min(totals.tables),
                totals.tables,
                (log.indexes + log.constraints).min(totals.indexes),
                totals.indexes,
                secs
            )),
        )
        .await;
}

/// Reads the restore's stderr to its end: every line to the log, the counters updated, progress
/// every tick. Returns None when cancelled.
pub async fn follow_restore(
    ctx: &ActionContext,
    stderr: tokio::process::ChildStderr,
    totals: &Totals,
    bytes: &AtomicU64,
    started: Instant,
    phase: &str,
) -> Option<RestoreLog> {
    let mut log = RestoreLog::default();
    let mut lines = LineReader::new(stderr);
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Some(line) => {
                    log.read(&line);
                    ctx.report.line(Stream::Stderr, line).await;
                }
                None => break,
            },
            _ = tick.tick() => {
                let now = bytes.load(Ordering::Relaxed);
                log.bytes_at_ticks.push(now);
                report_progress(ctx, &log, totals, now, started, phase).await;
            }
            () = ctx.cancel.cancelled() => return None,
        }
    }
    log.bytes_at_ticks.push(bytes.load(Ordering::Relaxed));
    report_progress(
        ctx,
        &log,
        totals,
        bytes.load(Ordering::Relaxed),
        started,
        phase,
    )
    .await;
    Some(log)
}

pub fn restore_command(restore: &Tool, target: &DbUrl, memory: &str) -> Command {
    let mut command = tool_command(restore, target);
    command
        .env("PGOPTIONS", format!("-c maintenance_work_mem={memory}"))
        .args(["--no-owner", "--no-acl", "--verbose", "--dbname"])
        .arg(&target.database);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &[&str]) -> RestoreLog {
        let mut log = RestoreLog::default();
        for line in lines {
            log.read(line);
        }
        log
    }

    #[test]
    fn heroku_restore_errors_are_tolerated_and_others_are_not() {
        // The lines pg_restore 16 prints for a Heroku dump restored by a non-owner.
        let log = read(&[
            "pg_restore: creating TABLE \"public.users\"",
            "pg_restore: from TOC entry 7; 2615 16385 SCHEMA heroku_ext postgres",
            "pg_restore: error: could not execute query: ERROR:  schema \"heroku_ext\" already exists",
            "Command was: CREATE SCHEMA heroku_ext;",
            "pg_restore: from TOC entry 2826; 0 0 COMMENT EXTENSION vector ",
            "pg_restore: error: could not execute query: ERROR:  must be owner of extension vector",
            "Command was: COMMENT ON EXTENSION vector IS 'vector data type and ivfflat and hnsw access methods';",
            "pg_restore: processing data for table \"public.users\"",
            "pg_restore: creating INDEX \"public.users_email_idx\"",
            "pg_restore: creating CONSTRAINT \"public.users users_pkey\"",
            "pg_restore: error: could not execute query: ERROR:  relation \"users\" already exists",
            "Command was: CREATE TABLE public.users (",
            "pg_restore: warning: errors ignored on restore: 3",
        ]);
        assert_eq!(log.tables_created, 1);
        assert_eq!(log.tables_loaded, 1);
        assert_eq!(log.indexes, 1);
        assert_eq!(log.constraints, 1);
        assert_eq!(log.ignored, Some(3));
        let allowed: Vec<Regex> = DEFAULT_ALLOWED_ERRORS
            .iter()
            .map(|s| Regex::new(s).unwrap())
            .collect();
        let (refused, tolerated) = log.judge(&allowed);
        assert_eq!(tolerated.len(), 2);
        assert_eq!(refused.len(), 1);
        assert!(refused[0]
            .message
            .contains("relation \"users\" already exists"));
    }

    #[test]
    fn memory_setting_accepts_sizes_only() {
        assert_eq!(memory_setting(None).unwrap(), "1GB");
        assert_eq!(memory_setting(Some("512 MB")).unwrap(), "512MB");
        assert!(memory_setting(Some("1GB -c fsync=off")).is_err());
    }
}
