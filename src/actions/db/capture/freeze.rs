//! `db.catchup` with `final = true`: the freeze's database part, one step, fail-closed.
//!
//! 1. The freeze point: the source's snapshot (`txid_current_snapshot()`) as the step starts.
//! 2. The catalogs now against the ones `db.capture` recorded: any difference (a column added,
//!    a type changed, a table created…) fails naming it before anything is applied.
//! 3. The log drained (the ordinary batches); then the log's table locked SHARE on the source
//!    (under `lock_timeout`): the lock is granted only once every transaction that logged a
//!    change has ended, and holds off new ones until the step ends; the log drained again.
//!    Any change from a transaction the freeze point's snapshot does not see is a write after
//!    the freeze point: the step fails naming the tables.
//! 4. The tables without a key (locked SHARE too) and, with `large_objects = "freeze"`, the
//!    large objects: copied whole, one target transaction each, checksummed on both sides.
//! 5. Sequences set from the source (never behind the target's), materialized views refreshed
//!    on the target where their rows differ.
//! 6. The check: every distinct key the log holds (every row changed since the capture went
//!    in), source row and target row hashed as `db.verify` hashes rows, in batches; a table
//!    truncated since, whole; exact row counts, index counts and copied columns of every table
//!    the capture knows; the target's guard: any write there by anyone but the catch-up fails
//!    naming the table.
//! 7. The source's baseline for `db.idle` (write counters read with the lock held, the whole
//!    tables' checksums), the guard taken off the target, the lock released.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Client;

use super::apply::{err, key_match, Applier, Until, APPLYING};
use super::catalog::{self, Catalog};
use super::guard;
use crate::actions::db::checksum::{copied_columns, hash_rows, large_objects, Checksum, RowHasher};
use crate::actions::db::common::{col, count_large_objects, identity, literal, query};
use crate::actions::db::connection::{self, DbUrl};
use crate::actions::db::copy::baseline::{self, Baseline};
use crate::actions::db::copy::parallel::{populated_views, read_sequences};
use crate::actions::Outcome;

/// Keys compared per query.
const KEY_BATCH: usize = 2000;

/// The source's snapshot now, as text (`xmin:xmax:xip,…`).
pub async fn freeze_point(source: &Client) -> Result<String, Outcome> {
    let rows = query(
        source,
        "SELECT txid_current_snapshot()::text",
        "taking the freeze point",
    )
    .await?;
    match rows.first() {
        Some(row) => col(row, 0),
        None => Err(Outcome::failed("the source gave no snapshot")),
    }
}

async fn all_rows(url: &DbUrl, side: &str) -> Result<Client, Outcome> {
    url.connect_all_rows()
        .await
        .map_err(|e| Outcome::failed(format!("{side}: {e}")))
}

fn plural(n: i64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    applier: &mut Applier<'_>,
    source_url: &DbUrl,
    target_url: &DbUrl,
    schema: &str,
    point: String,
    recorded: &Catalog,
    lock_timeout: Duration,
    retries: u32,
    keep_guard: bool,
    own_indexes: bool,
) -> Result<Outcome, Outcome> {
    let ctx = applier.ctx;
    let started = Instant::now();
    ctx.report
        .info(format!(
            "freeze point {point}: a change from a transaction this snapshot does not see is a write after the freeze"
        ))
        .await;

    // 2. The catalogs, before anything is applied.
    let now = catalog::read(&applier.source, schema).await?;
    let changed = catalog::differences(recorded, &now);
    if !changed.is_empty() {
        return Err(Outcome::failed(format!(
            "the source's schema changed since the capture was installed: {} (nothing was applied; move the change to the target, then install the capture again and copy again, or undo it)",
            changed.join("; ")
        )));
    }
    let source_objects = count_large_objects(&applier.source).await?;
    if source_objects > 0 && recorded.large_objects != "freeze" {
        return Err(Outcome::failed(format!(
            "the source holds {source_objects} large object(s) and the capture was installed with large_objects = \"refuse\": nothing was applied"
        )));
    }
    ctx.report
        .info(format!(
            "catalog as recorded at install: {} table(s) followed, {} copied whole",
            recorded.followed().count(),
            recorded.whole().count()
        ))
        .await;

    // 3. The drain, the lock, the drain again, the proof that writes stopped.
    applier.drain(Until::Empty).await?;
    let holder = connect_plain(source_url).await?;
    let mut locked = vec![applier.log.clone()];
    locked.extend(recorded.whole().cloned());
    let lock_started = Instant::now();
    let lock = format!(
        "BEGIN; SET LOCAL lock_timeout = '{}ms'; LOCK TABLE {} IN SHARE MODE;",
        lock_timeout.as_millis().max(1),
        locked.join(", ")
    );
    if let Err(e) = holder.batch_execute(&lock).await {
        let _ = holder.batch_execute("ROLLBACK").await;
        let timed_out = e.as_db_error().is_some_and(|d| d.code().code() == "55P03");
        if !timed_out {
            return Err(Outcome::failed(format!(
                "locking the change log: {}",
                connection::explain(&e)
            )));
        }
        let open = open_writers(&holder, &applier.log)
            .await
            .unwrap_or_default();
        return Err(Outcome::failed(format!(
            "a transaction that wrote to the source is still open after {} ms{}: stop the writers and re-run (a re-run takes a new freeze point)",
            lock_started.elapsed().as_millis(),
            if open.is_empty() {
                String::new()
            } else {
                format!(" (it holds {})", open.join(", "))
            }
        )));
    }
    ctx.report
        .info(format!(
            "the change log locked on the source after {} ms: no transaction that logged a change is open, none can start until the check ends",
            lock_started.elapsed().as_millis()
        ))
        .await;
    // The lock waits only for transactions that have logged a change. One in the middle of a
    // write whose trigger has not logged it yet (a row trigger fires at the end of its
    // statement) now waits for the log behind this lock, and would commit once it is released:
    // after the check, never applied.
    let followed: Vec<String> = recorded
        .followed()
        .map(|(name, _)| name)
        .chain(recorded.whole())
        .cloned()
        .collect();
    writers_in_flight(&holder, &applier.log, &followed, &locked).await?;
    // A schema change made while the log drained.
    let changed = catalog::differences(recorded, &catalog::read(&applier.source, schema).await?);
    if !changed.is_empty() {
        return Err(Outcome::failed(format!(
            "the source's schema changed during the drain: {}",
            changed.join("; ")
        )));
    }
    applier.drain(Until::Empty).await?;
    let drained = applier.applied;
    let drain_secs = started.elapsed().as_secs_f64();
    let late = query(
        &applier.source,
        &format!(
            "SELECT tbl, count(*) FROM {log} \
              WHERE xid >= txid_snapshot_xmin('{point}'::txid_snapshot) \
                AND NOT txid_visible_in_snapshot(xid, '{point}'::txid_snapshot) \
              GROUP BY tbl ORDER BY 1",
            log = applier.log
        ),
        "looking for changes after the freeze point",
    )
    .await?;
    if !late.is_empty() {
        let mut named = Vec::new();
        for row in &late {
            let table: String = col(row, 0)?;
            let n: i64 = col(row, 1)?;
            named.push(format!("{table} ({})", plural(n, "change")));
        }
        return Err(Outcome::failed(format!(
            "writes after the freeze point: {} — stop the writers and re-run (a re-run takes a new freeze point)",
            named.join(", ")
        )));
    }
    ctx.report
        .info(format!(
            "drained: {drained} change(s) applied in {drain_secs:.1} s; no change after the freeze point"
        ))
        .await;

    // 4. What no trigger follows, copied whole.
    let reader = all_rows(source_url, "source").await?;
    let target = all_rows(target_url, "target").await?;
    // As the catch-up writes: the target's own triggers and foreign keys off where it may.
    let _ = target
        .batch_execute("SET session_replication_role = replica")
        .await;
    let whole_started = Instant::now();
    let tally = applier.tally().map(str::to_string);
    let mut content = BTreeMap::new();
    let source_columns = copied_columns(&reader).await?;
    let target_columns = copied_columns(&target).await?;
    for table in recorded.whole() {
        ctx.report
            .info(format!("{table}: copying it whole (no key)"))
            .await;
        let Some(columns) = source_columns.get(table) else {
            return Err(Outcome::failed(format!("{table}: gone from the source")));
        };
        if target_columns.get(table) != Some(columns) {
            return Err(Outcome::failed(format!(
                "{table}: its columns on the target are not the source's ({})",
                target_columns
                    .get(table)
                    .map_or("missing on the target", String::as_str)
            )));
        }
        let sum = copy_whole(&reader, &target, table, columns, tally.as_deref()).await?;
        content.insert(table.clone(), sum);
    }
    let objects = if recorded.large_objects == "freeze" {
        let n = copy_large_objects(&reader, &target).await?;
        let (s, t) = (large_objects(&reader).await?, large_objects(&target).await?);
        if s != t {
            return Err(Outcome::failed(format!(
                "large objects: {} on the source, {} on the target after the copy, or their content differs",
                s.0, t.0
            )));
        }
        n
    } else {
        0
    };
    let whole_secs = whole_started.elapsed().as_secs_f64();

    // 5. Sequences (never behind) and materialized views.
    let sequences = set_sequences(&reader, &target, &recorded.left_out).await?;
    let views = refresh_views(ctx, &reader, &target).await?;

    // 6. The check.
    let check_started = Instant::now();
    let mut problems = Vec::new();
    let checked_keys = check_keys(
        applier,
        &reader,
        &target,
        recorded,
        &source_columns,
        &target_columns,
        &mut problems,
    )
    .await?;
    check_tables(
        ctx,
        &reader,
        &target,
        recorded,
        (&source_columns, &target_columns),
        own_indexes,
        &mut problems,
    )
    .await?;
    let writes = guard::writes(&target, schema).await?;
    if !writes.is_empty() {
        // The rows written there are queued on the source's log, to be set again from the
        // source by the next catch-up (and compared by key); a TRUNCATE there cannot be.
        let whole: BTreeSet<String> = recorded.whole().cloned().collect();
        let truncated = requeue(&holder, &target, &applier.log, schema, &whole).await?;
        problems.push(format!(
            "writes on the target by someone other than the catch-up: {} (the app's tasks on the target, or a hand edit: stop them; {})",
            writes
                .iter()
                .map(|(t, n)| format!("{t} ({})", plural(*n, "change")))
                .collect::<Vec<_>>()
                .join(", "),
            if truncated.is_empty() {
                "the rows they wrote are queued to be set again from the source: a re-run sets them and checks them".to_string()
            } else {
                format!(
                    "the rows they wrote are queued to be set again from the source, but a TRUNCATE on the target ({}) cannot be: copy again",
                    truncated.join(", ")
                )
            }
        ));
    }
    let check_secs = check_started.elapsed().as_secs_f64();
    if !problems.is_empty() {
        return Err(Outcome::failed(format!(
            "the target does not hold what the source holds: {}",
            problems.join("; ")
        )));
    }

    // 7. The baseline, the guard off the target, the lock released.
    let id = identity(&reader, "source").await?;
    let counters = baseline::read(&reader).await?;
    let base = Baseline::new(&id, counters, content);
    writers_in_flight(&holder, &applier.log, &followed, &locked).await?;
    holder
        .batch_execute("COMMIT")
        .await
        .map_err(err("releasing the change log's lock"))?;
    if keep_guard {
        // It goes on recording every write on the target by anyone else, each by its key, for
        // the capture installed there next to adopt (`db.capture adopt`): nothing the target
        // takes between this drain and that capture goes unrecorded.
        ctx.report
            .info("the guard stays on the target (`keep_guard`): writes there from now on are recorded by key, for the capture installed there next to adopt")
            .await;
    } else {
        let guard_note = guard::remove(ctx, &target, schema, lock_timeout, retries).await?;
        ctx.report.info(guard_note).await;
    }

    applier.outputs().await;
    let report = &ctx.report;
    report
        .output(
            "source_baseline",
            serde_json::to_string(&base).unwrap_or_default(),
        )
        .await;
    report.output("drained", drained.to_string()).await;
    // What of the step was the drain: the rest (whole tables, large objects, the check) is what
    // the window's prediction takes from a rehearsal.
    report
        .output("drain_secs", format!("{drain_secs:.3}"))
        .await;
    report
        .output("checked_keys", checked_keys.to_string())
        .await;
    report.output("freeze_point", point.clone()).await;
    report.output("backlog", "0").await;
    Ok(Outcome::Succeeded {
        note: Some(format!(
            "drained {drained} change(s) in {drain_secs:.1} s, none after the freeze point; {} whole table(s){} in {whole_secs:.1} s; {sequences} sequence(s) set, {views} view(s) refreshed; {checked_keys} changed key(s) and {} table(s) checked in {check_secs:.1} s; {:.1} s in all{}",
            recorded.whole().count(),
            if objects > 0 {
                format!(" and {objects} large object(s)")
            } else {
                String::new()
            },
            recorded.tables.len(),
            started.elapsed().as_secs_f64(),
            if recorded.left_out.is_empty() {
                String::new()
            } else {
                format!(
                    "; not carried (left out at install: the target has no such table): {}",
                    recorded.left_out.join(", ")
                )
            }
        )),
    })
}

/// The target's recorded writes with a key queued on the source's log (in the transaction that
/// holds its lock, committed here) and taken off the target's record, as are those of tables
/// copied whole; returns the tables truncated on the target (left on its record: no key names
/// what they lost).
async fn requeue(
    holder: &Client,
    target: &Client,
    log: &str,
    schema: &str,
    whole: &BTreeSet<String>,
) -> Result<Vec<String>, Outcome> {
    let entries = guard::entries(target, schema).await?;
    // A table copied whole was copied again above: its writes are mended already.
    let mended: Vec<i64> = entries
        .iter()
        .filter(|(_, t, _)| whole.contains(t))
        .map(|(id, _, _)| *id)
        .collect();
    guard::forget(target, schema, &mended).await?;
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|(_, t, _)| !whole.contains(t))
        .collect();
    let (ids, tables, keys): (Vec<i64>, Vec<String>, Vec<String>) = entries
        .iter()
        .filter_map(|(id, t, k)| k.as_ref().map(|k| (*id, t.clone(), k.clone())))
        .fold((vec![], vec![], vec![]), |mut acc, (id, t, k)| {
            acc.0.push(id);
            acc.1.push(t);
            acc.2.push(k);
            acc
        });
    let truncated: BTreeSet<String> = entries
        .iter()
        .filter(|(_, _, k)| k.is_none())
        .map(|(_, t, _)| t.clone())
        .collect();
    holder
        .execute(
            &format!(
                "INSERT INTO {log} (tbl, key, op) \
                 SELECT t, k::jsonb, 'G' FROM unnest($1::text[], $2::text[]) AS x(t, k)"
            ),
            &[&tables, &keys],
        )
        .await
        .map_err(err("queueing the target's writes on the source's log"))?;
    holder
        .batch_execute("COMMIT")
        .await
        .map_err(err("queueing the target's writes on the source's log"))?;
    guard::forget(target, schema, &ids).await?;
    Ok(truncated.into_iter().collect())
}

async fn connect_plain(url: &DbUrl) -> Result<Client, Outcome> {
    url.connect()
        .await
        .map_err(|e| Outcome::failed(format!("source: {e}")))
}

/// The tables written by the transactions that hold the change log open (row-exclusive).
async fn open_writers(client: &Client, log: &str) -> Result<Vec<String>, Outcome> {
    let rows = query(
        client,
        &format!(
            "SELECT DISTINCT l.relation::regclass::text FROM pg_locks l \
              WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'RowExclusiveLock' \
                AND l.relation <> {log}::regclass AND l.pid <> pg_backend_pid() \
                AND l.relation IN (SELECT oid FROM pg_class WHERE relkind IN ('r', 'p')) \
                AND l.pid IN (SELECT pid FROM pg_locks WHERE locktype = 'relation' AND granted \
                               AND relation = {log}::regclass AND mode = 'RowExclusiveLock') \
              ORDER BY 1",
            log = literal(log)
        ),
        "looking for open writers",
    )
    .await?;
    rows.iter().map(|r| col(r, 0)).collect()
}

/// Fails naming the sessions writing to the source while the change log is locked: holding a
/// write lock on a followed table (a write whose change is not logged yet), or waiting for the
/// log or a table copied whole (a write that would commit once the lock is released).
async fn writers_in_flight(
    holder: &Client,
    log: &str,
    followed: &[String],
    locked: &[String],
) -> Result<(), Outcome> {
    let rows = holder
        .query(
            "SELECT DISTINCT format('%I.%I', n.nspname, c.relname), l.granted, l.pid, \
                    coalesce(nullif(a.application_name, ''), a.usename::text, '?'), \
                    l.relation = $3::text::regclass \
               FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
              WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid() \
                AND ((l.granted AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', \
                                               'ExclusiveLock', 'AccessExclusiveLock') \
                      AND l.relation IN (SELECT to_regclass(t) FROM unnest($1::text[]) t)) \
                  OR (NOT l.granted \
                      AND l.relation IN (SELECT to_regclass(t) FROM unnest($2::text[]) t))) \
              ORDER BY 1, 3",
            &[&followed, &locked, &log],
        )
        .await
        .map_err(err("looking for writes in flight"))?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut named = Vec::new();
    for row in &rows {
        let table: String = col(row, 0)?;
        let granted: bool = col(row, 1)?;
        let pid: i32 = col(row, 2)?;
        let app: String = col(row, 3)?;
        let is_log: bool = col(row, 4)?;
        named.push(if granted {
            format!("{table} (written by {app}, pid {pid}, its change not logged yet)")
        } else if is_log {
            format!("{table} (pid {pid}, {app}, waits to log a change)")
        } else {
            format!("{table} (pid {pid}, {app}, waits to write it)")
        });
    }
    Err(Outcome::failed(format!(
        "writes in flight on the source after the freeze point: {} — stop the writers (every dyno, one-off and scheduler process included) and re-run (a re-run takes a new freeze point)",
        named.join(", ")
    )))
}

/// A table copied whole into the target in one transaction: truncated, filled by COPY from the
/// source's rows (hashed on the way), read back and compared before commit.
async fn copy_whole(
    source: &Client,
    tx: &Client,
    table: &str,
    columns: &str,
    tally: Option<&str>,
) -> Result<Checksum, Outcome> {
    // One target transaction: a failure below leaves the session (dropped) and the table as
    // they were.
    tx.batch_execute("BEGIN")
        .await
        .map_err(err("opening the target's transaction"))?;
    // DELETE, not TRUNCATE: a foreign key referring to the table does not stop it (the
    // session's replication role leaves foreign keys alone where the target allows it).
    let tally_before = match tally {
        Some(_) => Some(guard::pending_counts(tx).await?),
        None => None,
    };
    tx.batch_execute(&format!("{APPLYING}; DELETE FROM ONLY {table}"))
        .await
        .map_err(err(&format!("emptying {table} on the target")))?;
    let mut hasher = RowHasher::default();
    if !columns.is_empty() {
        let out = source
            .copy_out(&format!(
                "COPY (SELECT {columns} FROM ONLY {table}) TO STDOUT"
            ))
            .await
            .map_err(err(&format!("reading {table}")))?;
        let sink = tx
            .copy_in::<_, Bytes>(&format!("COPY {table} ({columns}) FROM STDIN"))
            .await
            .map_err(err(&format!("writing {table}")))?;
        futures_util::pin_mut!(out);
        futures_util::pin_mut!(sink);
        while let Some(chunk) = out.next().await {
            let chunk = chunk.map_err(err(&format!("reading {table}")))?;
            hasher.feed(&chunk);
            sink.send(chunk)
                .await
                .map_err(err(&format!("writing {table}")))?;
        }
        sink.finish()
            .await
            .map_err(err(&format!("writing {table}")))?;
    }
    let sent = hasher
        .finish()
        .map_err(|e| Outcome::failed(format!("{table}: {e}")))?;
    let back = if columns.is_empty() {
        Checksum::default()
    } else {
        hash_rows(tx, &format!("SELECT {columns} FROM ONLY {table}"))
            .await
            .map_err(|e| Outcome::failed(format!("{table}: reading back: {e}")))?
    };
    if back != sent {
        return Err(Outcome::failed(format!(
            "{table}: {} rows copied whole, {} read back, or their content differs",
            sent.rows, back.rows
        )));
    }
    if let (Some(schema), Some(before)) = (tally, &tally_before) {
        guard::add_to_tally(tx, schema, before).await?;
    }
    tx.batch_execute("COMMIT")
        .await
        .map_err(err(&format!("committing {table} on the target")))?;
    Ok(sent)
}

/// The large objects copied whole in one target transaction: the target's unlinked, the
/// source's created again with their OIDs. Returns how many.
async fn copy_large_objects(source: &Client, tx: &Client) -> Result<u64, Outcome> {
    let oids = query(
        source,
        "SELECT oid::bigint FROM pg_catalog.pg_largeobject_metadata ORDER BY 1",
        "listing the large objects",
    )
    .await?;
    tx.batch_execute(&format!(
        "BEGIN; {APPLYING}; SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata"
    ))
    .await
    .map_err(err("removing the target's large objects"))?;
    for row in &oids {
        let oid: i64 = col(row, 0)?;
        let data = source
            .query_one("SELECT pg_catalog.lo_get($1::bigint::oid)", &[&oid])
            .await
            .map_err(err(&format!("reading large object {oid}")))?;
        let bytes: Vec<u8> = col(&data, 0)?;
        tx.execute(
            "SELECT pg_catalog.lo_from_bytea($1::bigint::oid, $2)",
            &[&oid, &bytes],
        )
        .await
        .map_err(err(&format!("writing large object {oid}")))?;
    }
    tx.batch_execute("COMMIT")
        .await
        .map_err(err("committing the large objects on the target"))?;
    Ok(oids.len() as u64)
}

/// Each sequence set on the target from the source's value, unless the target's is ahead
/// (never behind either side). Returns how many were set.
async fn set_sequences(
    source: &Client,
    target: &Client,
    left_out: &[String],
) -> Result<usize, Outcome> {
    // The sequences of the tables the capture left out (the target has no such table) go with
    // them: named already, not carried.
    let theirs: BTreeSet<String> = if left_out.is_empty() {
        BTreeSet::new()
    } else {
        let rows = source
            .query(
                "SELECT format('%I.%I', sn.nspname, s.relname) FROM pg_class s \
                   JOIN pg_namespace sn ON sn.oid = s.relnamespace \
                   JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid \
                    AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') \
                   JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace \
                  WHERE s.relkind = 'S' AND format('%I.%I', tn.nspname, t.relname) = ANY($1)",
                &[&left_out],
            )
            .await
            .map_err(err("finding the sequences of the tables left out"))?;
        rows.iter().map(|r| col(r, 0)).collect::<Result<_, _>>()?
    };
    let mut set = 0;
    for (name, value, called) in read_sequences(source).await? {
        if theirs.contains(&name) {
            continue;
        }
        let now = target
            .query(&format!("SELECT last_value, is_called FROM {name}"), &[])
            .await
            .map_err(err(&format!("reading sequence {name} on the target")))?;
        let Some(now) = now.first() else { continue };
        let (t_value, t_called): (i64, bool) = (col(now, 0)?, col(now, 1)?);
        let ahead = t_value > value || (t_value == value && t_called && !called);
        if ahead {
            continue;
        }
        target
            .query(
                "SELECT setval($1::text::regclass, $2, $3)",
                &[&name, &value, &called],
            )
            .await
            .map_err(err(&format!("setting sequence {name}")))?;
        set += 1;
    }
    Ok(set)
}

/// The materialized views the source has populated, refreshed on the target where their rows
/// differ (or the target's is not populated); a view over another not yet refreshed is tried
/// again after the others. Returns how many were refreshed.
async fn refresh_views(
    ctx: &crate::actions::ActionContext,
    source: &Client,
    target: &Client,
) -> Result<usize, Outcome> {
    let mut refreshed = 0;
    let mut pending = populated_views(source).await?;
    for _ in 0..4 {
        let mut again = Vec::new();
        for view in std::mem::take(&mut pending) {
            let select = format!("SELECT * FROM {view}");
            let want = hash_rows(source, &select)
                .await
                .map_err(|e| Outcome::failed(format!("{view}: {e}")))?;
            let populated: bool = target
                .query_one(
                    "SELECT relispopulated FROM pg_class WHERE oid = $1::text::regclass",
                    &[&view],
                )
                .await
                .map_err(err(&format!("{view} on the target")))
                .and_then(|r| col(&r, 0))?;
            if populated && hash_rows(target, &select).await.ok() == Some(want) {
                continue;
            }
            ctx.report
                .info(format!(
                    "{view}: refreshing it on the target (its rows differ from the source's)"
                ))
                .await;
            if target
                .batch_execute(&format!("REFRESH MATERIALIZED VIEW {view}"))
                .await
                .is_err()
            {
                again.push(view);
                continue;
            }
            let got = hash_rows(target, &select)
                .await
                .map_err(|e| Outcome::failed(format!("{view}: {e}")))?;
            if got != want {
                // The source's view is older than its tables (it is refreshed when the app
                // says): the target's, refreshed, is of the rows both hold now.
                ctx.report
                    .info(format!(
                        "{view}: refreshed on the target, its rows still differ from the source's ({} there, {} on the source): the source's view is older than its tables",
                        got.rows, want.rows
                    ))
                    .await;
            }
            refreshed += 1;
        }
        if again.is_empty() {
            return Ok(refreshed);
        }
        pending = again;
    }
    Err(Outcome::failed(format!(
        "materialized view(s) could not be refreshed on the target: {}",
        pending.join(", ")
    )))
}

/// `key_match` with the keys written in (COPY takes no parameters).
fn key_match_literal(table: &str, key: &[String], keys: &[&String]) -> String {
    let array = format!(
        "[{}]",
        keys.iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    key_match(table, key).replace("$1::text::jsonb", &format!("{}::jsonb", literal(&array)))
}

/// Every key the log holds compared source ↔ target; a table truncated since the capture went
/// in, compared whole. Returns how many keys were compared.
#[allow(clippy::too_many_arguments)]
async fn check_keys(
    applier: &Applier<'_>,
    source: &Client,
    target: &Client,
    recorded: &Catalog,
    source_columns: &BTreeMap<String, String>,
    target_columns: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Result<u64, Outcome> {
    let ctx = applier.ctx;
    let log = &applier.log;
    let truncated: BTreeSet<String> = query(
        &applier.source,
        &format!("SELECT DISTINCT tbl FROM {log} WHERE key IS NULL"),
        "reading the truncated tables",
    )
    .await?
    .iter()
    .map(|r| col(r, 0))
    .collect::<Result<_, _>>()?;
    let tables: Vec<String> = query(
        &applier.source,
        &format!("SELECT DISTINCT tbl FROM {log} ORDER BY 1"),
        "reading the changed tables",
    )
    .await?
    .iter()
    .map(|r| col(r, 0))
    .collect::<Result<_, _>>()?;
    let mut checked = 0u64;
    for table in &tables {
        if !recorded.tables.contains_key(table) {
            continue;
        }
        let Some(columns) = source_columns.get(table) else {
            continue;
        };
        if target_columns.get(table) != Some(columns) {
            // Named by the tables' check.
            continue;
        }
        if columns.is_empty() {
            continue;
        }
        if truncated.contains(table) {
            ctx.report
                .info(format!(
                    "{table}: truncated since the capture went in, compared whole"
                ))
                .await;
            let select = format!("SELECT {columns} FROM ONLY {table}");
            let (s, t) = tokio::join!(hash_rows(source, &select), hash_rows(target, &select));
            let s = s.map_err(|e| Outcome::failed(format!("{table}: {e}")))?;
            let t = t.map_err(|e| Outcome::failed(format!("{table}: {e}")))?;
            if s != t {
                problems.push(format!("{table}: content checksum differs"));
            }
            checked += s.rows;
            continue;
        }
        let keys: Vec<String> = applier
            .source
            .query(
                &format!("SELECT DISTINCT key::text FROM {log} WHERE tbl = $1 AND key IS NOT NULL"),
                &[table],
            )
            .await
            .map_err(err(&format!("reading the changed keys of {table}")))?
            .iter()
            .map(|r| col(r, 0))
            .collect::<Result<_, _>>()?;
        // Keys by the columns they name (one set unless the key changed, which the catalog
        // check refuses).
        let mut by_columns: BTreeMap<Vec<String>, Vec<&String>> = BTreeMap::new();
        for key in &keys {
            let cols: serde_json::Map<String, serde_json::Value> = serde_json::from_str(key)
                .map_err(|e| Outcome::failed(format!("a logged key is not a JSON object: {e}")))?;
            by_columns
                .entry(cols.keys().cloned().collect())
                .or_default()
                .push(key);
        }
        let mut differing = 0;
        let total = keys.len() as u64;
        let mut done = 0u64;
        for (key, keys) in &by_columns {
            for chunk in keys.chunks(KEY_BATCH) {
                let select = format!(
                    "SELECT {columns} FROM ONLY {table} t WHERE {}",
                    key_match_literal(table, key, chunk)
                );
                let (s, t) = tokio::join!(hash_rows(source, &select), hash_rows(target, &select));
                let s = s.map_err(|e| Outcome::failed(format!("{table}: {e}")))?;
                let t = t.map_err(|e| Outcome::failed(format!("{table}: {e}")))?;
                if s != t {
                    differing += 1;
                }
                done += chunk.len() as u64;
                ctx.report
                    .progress(
                        done,
                        Some(total),
                        "keys",
                        Some(format!("checking {table} by key")),
                    )
                    .await;
            }
        }
        if differing > 0 {
            problems.push(format!(
                "{table}: rows changed since the capture differ on the target ({differing} batch(es) of keys)"
            ));
        }
        checked += total;
    }
    Ok(checked)
}

/// Presence, copied columns, exact row counts and index counts of every table the capture
/// knows.
async fn check_tables(
    ctx: &crate::actions::ActionContext,
    source: &Client,
    target: &Client,
    recorded: &Catalog,
    columns: (&BTreeMap<String, String>, &BTreeMap<String, String>),
    own_indexes: bool,
    problems: &mut Vec<String>,
) -> Result<(), Outcome> {
    let total = recorded.tables.len() as u64;
    for (done, table) in recorded.tables.keys().enumerate() {
        ctx.report
            .progress(
                done as u64,
                Some(total),
                "tables",
                Some(format!("counting {table} on both sides")),
            )
            .await;
        let exists: bool = target
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[table])
            .await
            .map_err(err(&format!("looking for {table} on the target")))
            .and_then(|r| col(&r, 0))?;
        if !exists {
            problems.push(format!("{table}: missing on the target"));
            continue;
        }
        if columns.0.get(table) != columns.1.get(table) {
            let named = format!(
                "{table}: columns differ ({} on the source; {} on the target)",
                columns.0.get(table).map_or("none", String::as_str),
                columns.1.get(table).map_or("none", String::as_str)
            );
            if !problems.contains(&named) {
                problems.push(named);
            }
        }
        let sql = format!(
            "SELECT (SELECT count(*) FROM ONLY {table}), \
                    (SELECT count(*) FROM pg_index WHERE indrelid = {}::regclass)",
            literal(table)
        );
        let (s, t) = tokio::join!(source.query_one(&sql, &[]), target.query_one(&sql, &[]));
        let s = s.map_err(err(&format!("counting {table} on the source")))?;
        let t = t.map_err(err(&format!("counting {table} on the target")))?;
        let (s_rows, s_idx): (i64, i64) = (col(&s, 0)?, col(&s, 1)?);
        let (t_rows, t_idx): (i64, i64) = (col(&t, 0)?, col(&t, 1)?);
        if s_rows != t_rows {
            problems.push(format!(
                "{table}: {s_rows} rows on the source, {t_rows} on the target"
            ));
        }
        if s_idx != t_idx && own_indexes {
            // The way back: Heroku keeps its own indexes (an index a migration added on RDS at
            // the cutover is not Heroku's concern); said, not a difference in the data.
            ctx.report
                .info(format!(
                    "{table}: {s_idx} index(es) on the source, {t_idx} on the target — the target keeps its own (`indexes = \"own\"`)"
                ))
                .await;
        } else if s_idx != t_idx {
            problems.push(format!(
                "{table}: {s_idx} index(es) on the source, {t_idx} on the target"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_in_quoted() {
        let a = r#"{"code": "it's"}"#.to_string();
        let sql = key_match_literal("public.t", &["code".to_string()], &[&a]);
        assert!(sql.contains(r#"'[{"code": "it''s"}]'::jsonb"#), "{sql}");
        assert!(!sql.contains("$1"));
    }
}
