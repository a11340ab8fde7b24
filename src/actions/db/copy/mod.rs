//! `db.copy`: `pg_dump -Fc` streamed into `pg_restore` through cutover (bytes counted, no
//! temporary file), or a directory-format dump with `-j N` on both sides. The restore's
//! `--verbose` lines give the progress; its errors are tolerated only when an allow-list
//! names them, and each tolerated one is shown.

pub mod baseline;
pub mod parallel;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_postgres::Client;

use crate::actions::db::tools::Tool;
use crate::actions::db::{
    bytes_human, col, connect, db_url, extensions, identity, query, server_version, tools,
    user_tables, DbUrl, Identity, USER_RELATION,
};
use crate::actions::process::{pump, stop_group, LineReader};
use crate::actions::{ActionContext, Outcome, Stream};
use baseline::Baseline;

/// What Heroku dumps restore with, harmlessly: the extension comment belongs to the extension's
/// owner, and the heroku_ext schema was created before the restore by `db.extensions`.
pub const DEFAULT_ALLOWED_ERRORS: [&str; 2] = [
    r"must be owner of extension \S+ \| COMMENT ON EXTENSION",
    r#"schema "heroku_ext" already exists"#,
];

const TICK: Duration = Duration::from_millis(500);

/// Pipe buffer between pg_dump, cutover and pg_restore (Linux's default is 64 KiB).
const PIPE_BYTES: i32 = 1 << 20;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    bin_dir: Option<String>,
    work_dir: Option<String>,
    jobs: Option<u32>,
    index_jobs: Option<u32>,
    read_back: Option<bool>,
    mode: Option<String>,
    on_existing: Option<String>,
    maintenance_work_mem: Option<String>,
    allow_errors: Option<Vec<String>>,
    source: String,
    target: String,
    ca_bundle: Option<String>,
}

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
pub(super) struct Totals {
    pub tables: u64,
    pub indexes: u64,
}

async fn totals(source: &Client) -> Result<Totals, Outcome> {
    let rows = query(
        source,
        &format!(
            "WITH t AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE c.relkind = 'r' AND {USER_RELATION}) \
             SELECT (SELECT count(*) FROM t), \
                    (SELECT count(*) FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM t)) \
                  + (SELECT count(*) FROM pg_constraint k WHERE k.contype = 'f' AND k.conrelid IN (SELECT oid FROM t))"
        ),
        "counting the source's tables and indexes",
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| Outcome::failed("the source did not answer"))?;
    let tables: i64 = col(row, 0)?;
    let indexes: i64 = col(row, 1)?;
    Ok(Totals {
        tables: u64::try_from(tables).unwrap_or(0),
        indexes: u64::try_from(indexes).unwrap_or(0),
    })
}

/// The reset policy: drops every user object (tables, views, sequences, routines, types and
/// schemas holding no extension) so the restore starts from empty. Extensions stay. One
/// transaction: it happens whole or not at all.
pub async fn reset_target(target: &mut Client) -> Result<usize, Outcome> {
    let statements = query(
        target,
        "WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') \
                       AND nspname NOT LIKE 'pg_toast%' AND nspname NOT LIKE 'pg_temp%'), \
              ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e') \
         SELECT 1, format('DROP %s IF EXISTS %I.%I CASCADE', \
                          CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' \
                               WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, \
                          ns.nspname, c.relname) \
           FROM pg_class c JOIN ns ON ns.oid = c.relnamespace \
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') \
            AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_class'::regclass AND ext.objid = c.oid) \
         UNION ALL \
         SELECT 2, format('DROP ROUTINE IF EXISTS %I.%I(%s) CASCADE', ns.nspname, p.proname, \
                          pg_get_function_identity_arguments(p.oid)) \
           FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace \
          WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_proc'::regclass AND ext.objid = p.oid) \
         UNION ALL \
         SELECT 3, format('DROP %s IF EXISTS %I.%I CASCADE', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, \
                          ns.nspname, t.typname) \
           FROM pg_type t JOIN ns ON ns.oid = t.typnamespace \
          WHERE t.typtype IN ('e', 'd', 'r', 'c') \
            AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c') \
            AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_type'::regclass AND ext.objid = t.oid) \
         UNION ALL \
         SELECT 4, format('DROP SCHEMA IF EXISTS %I CASCADE', ns.nspname) FROM ns \
          WHERE ns.nspname <> 'public' AND NOT EXISTS (SELECT 1 FROM pg_extension e WHERE e.extnamespace = ns.oid) \
         ORDER BY 1",
        "listing what to drop from the target",
    )
    .await?;
    let statements: Vec<String> = statements
        .iter()
        .map(|r| col(r, 1))
        .collect::<Result<_, _>>()?;
    let tx = target.transaction().await.map_err(|e| {
        Outcome::failed(format!(
            "reset: {}",
            crate::actions::db::connection::explain(&e)
        ))
    })?;
    for statement in &statements {
        tx.batch_execute(statement).await.map_err(|e| {
            Outcome::failed(format!(
                "reset: {statement}: {} (nothing was dropped)",
                crate::actions::db::connection::explain(&e)
            ))
        })?;
    }
    // Large objects are not in any schema: unlinked one by one, in the same transaction.
    let unlinked: i64 = tx
        .query_one(
            "SELECT count(pg_catalog.lo_unlink(oid)) FROM pg_catalog.pg_largeobject_metadata",
            &[],
        )
        .await
        .map_err(|e| {
            Outcome::failed(format!(
                "reset: unlinking the large objects: {} (nothing was dropped)",
                crate::actions::db::connection::explain(&e)
            ))
        })?
        .get(0);
    tx.commit().await.map_err(|e| {
        Outcome::failed(format!(
            "reset: {}",
            crate::actions::db::connection::explain(&e)
        ))
    })?;
    Ok(statements.len() + usize::try_from(unlinked).unwrap_or(0))
}

/// Refuses a source whose tables this role cannot read whole: row-level security applies to it
/// there (a table it owns with FORCE ROW LEVEL SECURITY, or one it neither owns nor bypasses).
/// With `row_security = off` PostgreSQL would raise an error mid-copy; with it on, it would
/// quietly hand over the rows a policy shows, and both sides' checksums would agree.
async fn refuse_hidden_rows(source: &Client, url: &DbUrl) -> Result<(), Outcome> {
    let rows = query(
        source,
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relforcerowsecurity, \
                    pg_has_role(c.relowner, 'USAGE') \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND {USER_RELATION} \
                AND row_security_active(c.oid) ORDER BY 1"
        ),
        "looking for tables under row-level security",
    )
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut hidden = Vec::new();
    for row in &rows {
        let table: String = col(row, 0)?;
        let forced: bool = col(row, 1)?;
        let owned: bool = col(row, 2)?;
        hidden.push(if owned && forced {
            format!("{table} (FORCE ROW LEVEL SECURITY on a table it owns)")
        } else {
            format!("{table} (not its owner, and no BYPASSRLS)")
        });
    }
    Err(Outcome::failed(format!(
        "the source role {} cannot read every row of {} table(s): {} — their row-level security policies \
         would hide rows from the copy. Give the role BYPASSRLS, or ALTER TABLE … NO FORCE ROW LEVEL SECURITY \
         on a table it owns, or copy as a role that bypasses row-level security; nothing was written",
        url.user,
        hidden.len(),
        hidden.join(", ")
    )))
}

/// `maintenance_work_mem` goes into PGOPTIONS, so only a plain size is accepted.
pub(super) fn memory_setting(value: Option<&str>) -> Result<String, Outcome> {
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

pub(super) fn tool_command(tool: &Tool, url: &DbUrl) -> Command {
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
    command
}

pub(super) fn spawn(command: &mut Command, what: &Tool) -> Result<Child, Outcome> {
    command
        .spawn()
        .map_err(|e| Outcome::failed(format!("cannot start {}: {e}", what.path.display())))
}

struct Run {
    restore: RestoreLog,
    dump_status: std::process::ExitStatus,
    restore_status: std::process::ExitStatus,
    bytes: u64,
}

pub async fn run(ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let p: Params = ctx.params()?;
    let source_url = db_url(&p.source, "source", p.ca_bundle.as_deref(), ctx)?;
    let target_url = db_url(&p.target, "target", p.ca_bundle.as_deref(), ctx)?;
    let memory = memory_setting(p.maintenance_work_mem.as_deref())?;
    let allowed: Vec<Regex> = match &p.allow_errors {
        Some(list) => list
            .iter()
            .map(|s| Regex::new(s))
            .collect::<Result<_, _>>()
            .map_err(|e| Outcome::failed(format!("allow_errors: {e}")))?,
        None => DEFAULT_ALLOWED_ERRORS
            .iter()
            .filter_map(|s| Regex::new(s).ok())
            .collect(),
    };
    let reset = match p.on_existing.as_deref().unwrap_or("fail") {
        "fail" => false,
        "reset" => true,
        other => {
            return Err(Outcome::failed(format!(
                "on_existing = {other:?}: expected \"fail\" or \"reset\""
            )))
        }
    };
    let jobs = p.jobs.unwrap_or(2).clamp(1, 64);
    let index_jobs = p.index_jobs.unwrap_or(jobs).clamp(1, 64) as usize;
    let mode = match (p.mode.as_deref(), &p.work_dir) {
        (Some("parallel") | None, None) => Mode::Parallel,
        (Some("stream"), None) => Mode::Stream,
        (Some("directory") | None, Some(dir)) => Mode::Directory(dir.clone()),
        (Some("directory"), None) => {
            return Err(Outcome::failed("mode = \"directory\" needs work_dir"))
        }
        (Some(other), _) => {
            return Err(Outcome::failed(format!(
                "mode = {other:?}: expected \"parallel\" (the default), \"stream\" or \"directory\" (with work_dir)"
            )))
        }
    };
    let dump = tools::find("pg_dump", p.bin_dir.as_deref(), ctx)
        .await
        .map_err(Outcome::failed)?;
    let restore = tools::find("pg_restore", p.bin_dir.as_deref(), ctx)
        .await
        .map_err(Outcome::failed)?;
    if restore.major < dump.major {
        return Err(Outcome::failed(format!(
            "pg_restore {} is older than pg_dump {}: it cannot read the archive",
            restore.version, dump.version
        )));
    }

    let source = connect(&source_url, "source").await?;
    let (_, source_major) = server_version(&source).await?;
    if dump.major < source_major {
        return Err(Outcome::failed(format!(
            "pg_dump {} ({}) is older than the source server ({source_major}): install pg_dump {source_major} or newer, or set bin_dir",
            dump.version,
            dump.path.display()
        )));
    }
    let mut target = connect(&target_url, "target").await?;
    // What each side is, before anything is written: host names can differ for one server.
    let source_id = identity(&source, "source").await?;
    let target_id = identity(&target, "target").await?;
    if source_id.same_database(&target_id) {
        return Err(Outcome::failed(format!(
            "the target is the source: both reach database {:?} (oid {}) of the server with system identifier {} — \
             check the target URL; nothing was written",
            target_id.database, target_id.database_oid, target_id.system_identifier
        )));
    }
    ctx.report
        .info(format!(
            "source: {} (database {:?}, server {}); target: {} (database {:?}, server {})",
            source_url.display(),
            source_id.database,
            source_id.system_identifier,
            target_url.display(),
            target_id.database,
            target_id.system_identifier
        ))
        .await;
    ctx.report
        .output(
            "source_system_identifier",
            source_id.system_identifier.clone(),
        )
        .await;
    ctx.report
        .output(
            "target_system_identifier",
            target_id.system_identifier.clone(),
        )
        .await;
    ctx.report
        .output("target_database", target_id.database.clone())
        .await;
    // Every row or nothing: the copy reads with row-level security off, and a table whose rows
    // a policy hides from this role is refused here, before anything is written.
    refuse_hidden_rows(&source, &source_url).await?;
    let existing = user_tables(&target).await?;
    let objects = parallel::count_large_objects(&target).await?;
    let target_key = target_key(&target_id);
    // An earlier copy (this step's or another's) that stopped mid-restore left this very
    // database half-written: it may hold schemas, functions or types but no table, so
    // counting tables is not enough.
    let dirty = dirty_since(&ctx.recorded, &target_key);
    if let Some((step, since)) = &dirty {
        if !reset {
            return Err(Outcome::failed(format!(
                "the target {} is dirty: step `{step}` stopped while restoring into it ({since}, says the journal). \
                 Set on_existing = \"reset\" on this step to drop what it left and copy again",
                target_url.display()
            )));
        }
    }
    let dirty = dirty.is_some();
    if existing.is_empty() && objects > 0 && !reset {
        return Err(Outcome::failed(format!(
            "the target already holds {objects} large object(s): a previous copy? Set on_existing = \"reset\" \
             on this step to drop them and copy again"
        )));
    }
    if !existing.is_empty() || dirty || objects > 0 {
        let shown: Vec<&str> = existing.iter().take(5).map(String::as_str).collect();
        if !reset {
            return Err(Outcome::failed(format!(
                "the target already holds {} table(s) ({}{}): a previous copy? Set on_existing = \"reset\" \
                 on this step to drop them and copy again",
                existing.len(),
                shown.join(", "),
                if existing.len() > 5 { ", …" } else { "" }
            )));
        }
        ctx.report
            .info(if dirty {
                format!(
                    "reset: an earlier attempt left {} half-restored ({} table(s)); dropping every user object first",
                    target_url.display(),
                    existing.len()
                )
            } else {
                format!(
                    "reset: the target holds {} table(s) ({}); dropping every user object first",
                    existing.len(),
                    shown.join(", ")
                )
            })
            .await;
        // Cancellable: the connection closes and the server rolls the reset back.
        let dropped = tokio::select! {
            dropped = reset_target(&mut target) => dropped?,
            () = ctx.cancel.cancelled() => return Err(Outcome::Cancelled),
        };
        ctx.report
            .info(format!(
                "reset: {dropped} object(s) dropped; extensions kept"
            ))
            .await;
    }
    extensions::ensure(&source, &target, ctx).await?;
    let totals = totals(&source).await?;
    // The source's write counters just before the dump (read before the snapshot: a write in
    // between looks like a write after it, never the other way round), with when the
    // statistics began: `db.idle` compares against them before the source is deleted.
    let counters = baseline::read(&source).await?;
    ctx.report
        .output(
            "source_writes",
            serde_json::to_string(&counters.counters).unwrap_or_default(),
        )
        .await;
    drop(source);
    drop(target);
    // On record before the restore writes its first byte: if this attempt fails, is cancelled
    // or cutover dies, the next one knows the target is dirty.
    ctx.report
        .output(TARGET_STATE, TargetState::now(&target_key, true).encode())
        .await;
    ctx.report.recorded().await;

    let started = Instant::now();
    if mode == Mode::Parallel {
        let done = parallel::copy(
            ctx,
            &dump,
            &restore,
            &source_url,
            &target_url,
            &memory,
            jobs as usize,
            index_jobs,
            p.read_back.unwrap_or(true),
            &allowed,
            &totals,
        )
        .await?;
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let report = &ctx.report;
        report.output("bytes", done.bytes.to_string()).await;
        report.output("tables", done.tables.to_string()).await;
        report.output("indexes", done.indexes.to_string()).await;
        report
            .output("tolerated_errors", done.tolerated.len().to_string())
            .await;
        report
            .output("throughput_mib_s", throughput(&done.throughput, TICK))
            .await;
        // Each figure names the target table it is of: db.verify uses none that does not
        // describe what the target holds.
        let server = &target_id.system_identifier;
        report
            .output(
                "checksums",
                serde_json::to_string(&parallel::recorded(
                    &done.checksums,
                    server,
                    &done.target_oids,
                ))
                .unwrap_or_default(),
            )
            .await;
        if !done.target_checksums.is_empty() {
            report
                .output(
                    "target_checksums",
                    serde_json::to_string(&parallel::recorded(
                        &done.target_checksums,
                        server,
                        &done.target_oids,
                    ))
                    .unwrap_or_default(),
                )
                .await;
        }
        let baseline = Baseline::new(&source_id, counters, done.checksums.clone());
        report
            .output(
                "source_baseline",
                serde_json::to_string(&baseline).unwrap_or_default(),
            )
            .await;
        report
            .output(
                "table_secs",
                serde_json::to_string(&done.table_secs).unwrap_or_default(),
            )
            .await;
        report
            .output("data_secs", format!("{:.3}", done.data_secs))
            .await;
        report
            .output(TARGET_STATE, TargetState::now(&target_key, false).encode())
            .await;
        let rows: u64 = done.checksums.values().map(|c| c.rows).sum();
        let mut others = String::new();
        if done.materialized_views > 0 {
            others.push_str(&format!(
                ", {} materialized view(s) refreshed",
                done.materialized_views
            ));
        }
        if done.large_objects > 0 {
            others.push_str(&format!(", {} large object(s)", done.large_objects));
        }
        return Ok(Outcome::Succeeded {
            note: Some(format!(
                "{} tables ({rows} rows, {}), {} indexes and constraints, {} sequences{others}, {} in {:.1}s ({}/s){}",
                done.tables,
                if done.target_checksums.is_empty() {
                    "not read back: run db.verify"
                } else {
                    "each read back and equal"
                },
                done.indexes,
                done.sequences,
                bytes_human(done.bytes),
                secs,
                bytes_human((done.bytes as f64 / secs) as u64),
                if done.tolerated.is_empty() {
                    String::new()
                } else {
                    format!(", {} tolerated error(s)", done.tolerated.len())
                }
            )),
        });
    }
    let result = match &mode {
        Mode::Parallel | Mode::Stream => {
            stream_copy(
                ctx,
                &dump,
                &restore,
                &source_url,
                &target_url,
                &memory,
                &totals,
            )
            .await?
        }
        Mode::Directory(dir) => {
            let dir = ctx.work_dir.join(dir).join(format!("{}.dump", ctx.step));
            let result = directory_copy(
                ctx,
                &dump,
                &restore,
                &source_url,
                &target_url,
                &memory,
                &totals,
                jobs,
                &dir,
            )
            .await;
            // The dump holds the production data: it does not stay behind.
            let _ = tokio::fs::remove_dir_all(&dir).await;
            result?
        }
    };
    let elapsed = started.elapsed();
    let outcome = finish(ctx, result, &allowed, elapsed).await?;
    // No content figures from pg_dump: the guard has the counters alone.
    let baseline = Baseline::new(&source_id, counters, Default::default());
    ctx.report
        .output(
            "source_baseline",
            serde_json::to_string(&baseline).unwrap_or_default(),
        )
        .await;
    // Whole and accepted: clean again.
    ctx.report
        .output(TARGET_STATE, TargetState::now(&target_key, false).encode())
        .await;
    Ok(outcome)
}

/// How the data moves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Table-parallel COPY through cutover on one snapshot, verified on the stream.
    Parallel,
    /// `pg_dump -Fc | pg_restore`, streamed.
    Stream,
    /// `pg_dump -Fd -j` into a directory, then `pg_restore -j`.
    Directory(String),
}

/// MiB/s per second of the copy, from the bytes streamed at each tick: "12.5,30.1,…".
fn throughput(bytes_at_ticks: &[u64], tick: Duration) -> String {
    let per_second = (1.0 / tick.as_secs_f64()).round().max(1.0) as usize;
    let mut previous = 0u64;
    bytes_at_ticks
        .iter()
        .skip(per_second.saturating_sub(1))
        .step_by(per_second)
        .map(|now| {
            let delta = now.saturating_sub(previous);
            previous = *now;
            format!("{:.1}", delta as f64 / (1024.0 * 1024.0))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The output recording whether a copy's target is dirty (a restore began and has not
/// finished) or clean again.
pub const TARGET_STATE: &str = "target_state";

/// One record of [`TARGET_STATE`]: which database, dirty or not, since when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetState {
    pub target: String,
    pub dirty: bool,
    /// RFC 3339 with milliseconds: the latest record for a target, from any step, decides.
    pub at: String,
}

impl TargetState {
    fn now(target: &str, dirty: bool) -> Self {
        TargetState {
            target: target.to_string(),
            dirty,
            at: crate::journal::now_rfc3339(),
        }
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// How the journal names a target database: its server and OID, which no host alias changes.
pub(super) fn target_key(id: &Identity) -> String {
    format!(
        "server {} database oid {} ({})",
        id.system_identifier, id.database_oid, id.database
    )
}

/// The step whose unfinished restore left `target` dirty, and since when: the latest record
/// of that target across every step decides (a later whole copy by another step cleans it).
pub fn dirty_since(
    recorded: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    target: &str,
) -> Option<(String, String)> {
    recorded
        .iter()
        .filter_map(|(step, outputs)| {
            let state: TargetState = serde_json::from_str(outputs.get(TARGET_STATE)?).ok()?;
            (state.target == target).then_some((step, state))
        })
        .max_by(|a, b| a.1.at.cmp(&b.1.at))
        .filter(|(_, state)| state.dirty)
        .map(|(step, state)| (step.clone(), state.at))
}

async fn finish(
    ctx: &ActionContext,
    run: Run,
    allowed: &[Regex],
    elapsed: Duration,
) -> Result<Outcome, Outcome> {
    if !run.dump_status.success() {
        return Err(Outcome::failed(format!(
            "pg_dump failed ({}); see its lines above",
            run.dump_status
        )));
    }
    let (refused, tolerated) = run.restore.judge(allowed);
    for error in &tolerated {
        ctx.report
            .info(format!("tolerated restore error: {}", error.text()))
            .await;
    }
    let counted = run.restore.errors.len() as u64;
    if !refused.is_empty() {
        let first: Vec<String> = refused.iter().take(3).map(|e| e.text()).collect();
        return Err(Outcome::failed(format!(
            "pg_restore reported {} error(s) not on the allow-list: {}",
            refused.len(),
            first.join("; ")
        )));
    }
    if !run.restore_status.success() && run.restore.ignored != Some(counted) {
        return Err(Outcome::failed(format!(
            "pg_restore failed ({}) and its errors could not all be read; see its lines above",
            run.restore_status
        )));
    }
    let secs = elapsed.as_secs_f64().max(0.001);
    ctx.report.output("bytes", run.bytes.to_string()).await;
    ctx.report
        .output("tables", run.restore.tables_loaded.to_string())
        .await;
    ctx.report
        .output("indexes", run.restore.indexes.to_string())
        .await;
    ctx.report
        .output("tolerated_errors", tolerated.len().to_string())
        .await;
    ctx.report
        .output(
            "throughput_mib_s",
            throughput(&run.restore.bytes_at_ticks, TICK),
        )
        .await;
    Ok(Outcome::Succeeded {
        note: Some(format!(
            "{} tables, {} indexes, {} in {:.1}s ({}/s){}",
            run.restore.tables_loaded,
            run.restore.indexes,
            bytes_human(run.bytes),
            secs,
            bytes_human((run.bytes as f64 / secs) as u64),
            if tolerated.is_empty() {
                String::new()
            } else {
                format!(", {} tolerated error(s)", tolerated.len())
            }
        )),
    })
}

async fn report_progress(
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
pub(super) async fn follow_restore(
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

pub(super) fn restore_command(restore: &Tool, target: &DbUrl, memory: &str) -> Command {
    let mut command = tool_command(restore, target);
    command
        .env("PGOPTIONS", format!("-c maintenance_work_mem={memory}"))
        .args(["--no-owner", "--no-acl", "--verbose", "--dbname"])
        .arg(&target.database);
    command
}

async fn stream_copy(
    ctx: &ActionContext,
    dump_tool: &Tool,
    restore_tool: &Tool,
    source: &DbUrl,
    target: &DbUrl,
    memory: &str,
    totals: &Totals,
) -> Result<Run, Outcome> {
    ctx.report
        .info(format!(
            "pg_dump -Fc {} | pg_restore {} (streamed, maintenance_work_mem={memory})",
            source.display(),
            target.display()
        ))
        .await;
    let mut dump = spawn(
        tool_command(dump_tool, source)
            .args(["--format=custom", "--no-owner", "--no-acl"])
            .stdout(Stdio::piped()),
        dump_tool,
    )?;
    let mut restore = match spawn(
        restore_command(restore_tool, target, memory).stdin(Stdio::piped()),
        restore_tool,
    ) {
        Ok(child) => child,
        Err(o) => {
            stop_group(&mut dump).await;
            return Err(o);
        }
    };
    let bytes = Arc::new(AtomicU64::new(0));
    let (Some(mut from), Some(mut into), Some(restore_err)) = (
        dump.stdout.take(),
        restore.stdin.take(),
        restore.stderr.take(),
    ) else {
        stop_group(&mut dump).await;
        stop_group(&mut restore).await;
        return Err(Outcome::failed("lost the pipes of pg_dump and pg_restore"));
    };
    // Bigger pipes: fewer wake-ups of the three processes sharing two cores with the servers.
    for fd in [from.as_raw_fd(), into.as_raw_fd()] {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
    }
    let counter = bytes.clone();
    let carry = tokio::spawn(async move {
        let mut buf = vec![0u8; PIPE_BYTES as usize];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if into.write_all(&buf[..n]).await.is_err() {
                break;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        // Dropping stdin tells pg_restore the archive is complete.
        let _ = into.shutdown().await;
    });
    let dump_err = tokio::spawn(pump(dump.stderr.take(), Stream::Stderr, ctx.report.clone()));
    let started = Instant::now();
    let Some(log) = follow_restore(ctx, restore_err, totals, &bytes, started, "copy").await else {
        stop_group(&mut dump).await;
        stop_group(&mut restore).await;
        carry.abort();
        return Err(Outcome::Cancelled);
    };
    let _ = carry.await;
    let _ = dump_err.await;
    let dump_status = dump
        .wait()
        .await
        .map_err(|e| Outcome::failed(format!("lost track of pg_dump: {e}")))?;
    let restore_status = restore
        .wait()
        .await
        .map_err(|e| Outcome::failed(format!("lost track of pg_restore: {e}")))?;
    Ok(Run {
        restore: log,
        dump_status,
        restore_status,
        bytes: bytes.load(Ordering::Relaxed),
    })
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
async fn directory_copy(
    ctx: &ActionContext,
    dump_tool: &Tool,
    restore_tool: &Tool,
    source: &DbUrl,
    target: &DbUrl,
    memory: &str,
    totals: &Totals,
    jobs: u32,
    dir: &PathBuf,
) -> Result<Run, Outcome> {
    if dir.exists() {
        // Left by an interrupted attempt of this step: a dump is only good whole.
        tokio::fs::remove_dir_all(dir)
            .await
            .map_err(|e| Outcome::failed(format!("cannot clear {}: {e}", dir.display())))?;
    }
    if let Some(parent) = dir.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Outcome::failed(format!("cannot create {}: {e}", parent.display())))?;
    }
    ctx.report
        .info(format!(
            "pg_dump -Fd -j {jobs} {} → {} (maintenance_work_mem={memory})",
            source.display(),
            dir.display()
        ))
        .await;
    let started = Instant::now();
    let mut dump = spawn(
        tool_command(dump_tool, source)
            .args(["--format=directory", "--no-owner", "--no-acl", "--jobs"])
            .arg(jobs.to_string())
            .arg("--file")
            .arg(dir),
        dump_tool,
    )?;
    let dump_err = tokio::spawn(pump(dump.stderr.take(), Stream::Stderr, ctx.report.clone()));
    let empty = RestoreLog::default();
    let mut tick = tokio::time::interval(TICK);
    let dump_status = loop {
        tokio::select! {
            status = dump.wait() => break status.map_err(|e| Outcome::failed(format!("lost track of pg_dump: {e}")))?,
            _ = tick.tick() => {
                let size = dir_size(dir);
                report_progress(ctx, &empty, totals, size, started, "dump").await;
            }
            () = ctx.cancel.cancelled() => {
                stop_group(&mut dump).await;
                return Err(Outcome::Cancelled);
            }
        }
    };
    let _ = dump_err.await;
    let bytes = dir_size(dir);
    if !dump_status.success() {
        return Ok(Run {
            restore: RestoreLog::default(),
            dump_status,
            restore_status: dump_status,
            bytes,
        });
    }
    ctx.report
        .info(format!(
            "pg_dump wrote {}; pg_restore -j {jobs} into {}",
            bytes_human(bytes),
            target.display()
        ))
        .await;
    let mut restore = spawn(
        restore_command(restore_tool, target, memory)
            .arg("--jobs")
            .arg(jobs.to_string())
            .arg(dir),
        restore_tool,
    )?;
    let Some(restore_err) = restore.stderr.take() else {
        stop_group(&mut restore).await;
        return Err(Outcome::failed("lost pg_restore's output"));
    };
    let counter = AtomicU64::new(bytes);
    let Some(log) = follow_restore(ctx, restore_err, totals, &counter, started, "restore").await
    else {
        stop_group(&mut restore).await;
        return Err(Outcome::Cancelled);
    };
    let restore_status = restore
        .wait()
        .await
        .map_err(|e| Outcome::failed(format!("lost track of pg_restore: {e}")))?;
    Ok(Run {
        restore: log,
        dump_status,
        restore_status,
        bytes,
    })
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
    fn the_latest_record_of_a_target_decides_whether_it_is_dirty() {
        use std::collections::BTreeMap;
        let record = |target: &str, dirty: bool, at: &str| {
            BTreeMap::from([(
                TARGET_STATE.to_string(),
                TargetState {
                    target: target.into(),
                    dirty,
                    at: at.into(),
                }
                .encode(),
            )])
        };
        let mut recorded = BTreeMap::new();
        assert_eq!(dirty_since(&recorded, "rds"), None);
        recorded.insert(
            "a".to_string(),
            record("rds", true, "2026-11-30T10:00:00.000Z"),
        );
        recorded.insert(
            "b".to_string(),
            record("other", false, "2026-11-30T11:00:00.000Z"),
        );
        assert_eq!(
            dirty_since(&recorded, "rds"),
            Some(("a".into(), "2026-11-30T10:00:00.000Z".into()))
        );
        assert_eq!(dirty_since(&recorded, "other"), None);
        // Another step's later whole copy into the same target cleans it.
        recorded.insert(
            "c".to_string(),
            record("rds", false, "2026-11-30T10:30:00.000Z"),
        );
        assert_eq!(dirty_since(&recorded, "rds"), None);
        // A record that does not parse is not a clean bill: it is ignored, the others decide.
        recorded.insert(
            "d".to_string(),
            BTreeMap::from([(TARGET_STATE.to_string(), "garbage".to_string())]),
        );
        recorded.insert(
            "e".to_string(),
            record("rds", true, "2026-11-30T12:00:00.000Z"),
        );
        assert_eq!(dirty_since(&recorded, "rds").map(|d| d.0), Some("e".into()));
    }

    #[test]
    fn throughput_is_mib_per_second_from_the_ticks() {
        let mib = 1024 * 1024;
        // Ticks every 500 ms: one figure per second, the bytes of that second.
        let ticks = [mib, 3 * mib, 4 * mib, 10 * mib, 10 * mib];
        assert_eq!(throughput(&ticks, Duration::from_millis(500)), "3.0,7.0");
        assert_eq!(throughput(&[], Duration::from_millis(500)), "");
        assert_eq!(throughput(&[2 * mib], Duration::from_secs(1)), "2.0");
    }

    #[test]
    fn memory_setting_accepts_sizes_only() {
        assert_eq!(memory_setting(None).unwrap(), "1GB");
        assert_eq!(memory_setting(Some("512 MB")).unwrap(), "512MB");
        assert!(memory_setting(Some("1GB -c fsync=off")).is_err());
    }
}
