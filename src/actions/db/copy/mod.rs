//! `db.copy`: the step — both servers' identities read first (a target that is the source is
//! refused), a source whose rows a policy would hide refused, a dirty or non-empty target
//! refused or reset, the source's baseline read, the target marked dirty on record — then the
//! data moved by one of three modes, and what the copy did journaled.
//!
//! - `parallel`: the default, pgcopydb's way (COPY streams on one snapshot, verified on the
//!   stream);
//! - `stream`: `pg_dump` and `pg_restore` alone, streamed or through a work directory;
//! - `target_state`: the journal's record of a target being written (dirty) or whole;
//! - `baseline`: what the copy records of its source for the decommission guard.
//!
//! May import: `connection`, `tools`, `common`, `checksum`, `extensions`.

pub mod baseline;
pub mod parallel;
pub mod stream;
pub mod target_state;

use std::time::{Duration, Instant};

use regex::Regex;
use tokio_postgres::Client;

use crate::actions::db::common::{
    bytes_human, col, connect, db_url, identity, query, server_version, user_tables,
    CAPTURE_SCHEMA, USER_RELATION,
};
use crate::actions::db::connection::{self, DbUrl};
use crate::actions::db::tools::restore::{memory_setting, Totals, DEFAULT_ALLOWED_ERRORS, TICK};
use crate::actions::db::{checksum, common, extensions, tools};
use crate::actions::{ActionContext, Outcome};
use baseline::Baseline;
use target_state::{dirty_since, target_key, TargetState, TARGET_STATE};

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
    let tx = target
        .transaction()
        .await
        .map_err(|e| Outcome::failed(format!("reset: {}", connection::explain(&e))))?;
    for statement in &statements {
        tx.batch_execute(statement).await.map_err(|e| {
            Outcome::failed(format!(
                "reset: {statement}: {} (nothing was dropped)",
                connection::explain(&e)
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
                connection::explain(&e)
            ))
        })?
        .get(0);
    tx.commit()
        .await
        .map_err(|e| Outcome::failed(format!("reset: {}", connection::explain(&e))))?;
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
    let objects = common::count_large_objects(&target).await?;
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
                serde_json::to_string(&checksum::recorded(
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
                    serde_json::to_string(&checksum::recorded(
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
            stream::stream_copy(
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
            let result = stream::directory_copy(
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
    let outcome = stream::finish(ctx, result, &allowed, elapsed).await?;
    // pg_restore alone cannot leave out the change capture's triggers on the app's tables: its
    // schema (empty: its rows were not dumped) goes from the target with them.
    connect(&target_url, "target")
        .await?
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {CAPTURE_SCHEMA} CASCADE"))
        .await
        .map_err(|e| {
            Outcome::failed(format!(
                "removing the change capture's schema the dump carried: {}",
                connection::explain(&e)
            ))
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_mib_per_second_from_the_ticks() {
        let mib = 1024 * 1024;
        // Ticks every 500 ms: one figure per second, the bytes of that second.
        let ticks = [mib, 3 * mib, 4 * mib, 10 * mib, 10 * mib];
        assert_eq!(throughput(&ticks, Duration::from_millis(500)), "3.0,7.0");
        assert_eq!(throughput(&[], Duration::from_millis(500)), "");
        assert_eq!(throughput(&[2 * mib], Duration::from_secs(1)), "2.0");
    }
}
