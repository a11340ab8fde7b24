//! How the change log is applied to the target (`db.catchup`, and the final catch-up's drain).
//!
//! It reads the log in id order, `batch` changes at a time. For each batch and each table it
//! takes the distinct keys, reads the source's current rows for them (one repeatable-read
//! snapshot for the whole batch, taken after the log was read, so each row is at least as new
//! as its change), and in ONE target transaction deletes those keys and inserts the rows read
//! (generated columns left to the target, identity columns written with `OVERRIDING SYSTEM
//! VALUE`). A TRUNCATE truncates the target's table first; rows inserted after it come as
//! their own changes. Applying a change twice is harmless: it always lands the row as the
//! source has it now.
//!
//! Ids are handed out before commit, so a transaction still open when a batch is read can
//! commit a change with an id below the position later. The position is therefore two numbers:
//! the last id applied and the oldest transaction still open when it was read (the snapshot's
//! xmin, `horizon`): every change with an id up to the position from a transaction older than
//! the horizon has been applied. Each batch also re-reads the changes at or below the
//! position from transactions at or after the horizon (applying them again is harmless).
//! Both are journaled after every batch, before the next one starts, so a re-run after a kill
//! starts there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, IsolationLevel};

use crate::actions::db::common::{col, ident, query};
use crate::actions::db::connection;
use crate::actions::{ActionContext, Outcome};

/// Marks a target transaction as the catch-up's: the target's guard records nothing of it.
pub(super) const APPLYING: &str = "SET LOCAL cutover.applying = 'on'";

/// When the step stops: the log read to its end, or the backlog down to a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Until {
    Empty,
    Backlog(i64),
}

/// One change of the log.
struct Change {
    table: String,
    key: Option<String>,
}

/// What one batch does to one table: truncate it first, and the keys to land again.
#[derive(Default)]
struct Work {
    truncate: bool,
    /// Keys by their column names (an unchanged table has one set).
    keys: BTreeMap<Vec<String>, BTreeSet<String>>,
}

/// A target table's columns: name, generated, identity.
pub(super) struct Columns {
    all: Vec<(String, bool, bool)>,
}

impl Columns {
    fn written(&self) -> impl Iterator<Item = &String> {
        self.all.iter().filter(|c| !c.1).map(|c| &c.0)
    }
    fn identity(&self) -> bool {
        self.all.iter().any(|c| c.2)
    }
}

pub(super) fn err(what: &str) -> impl Fn(tokio_postgres::Error) -> Outcome + '_ {
    move |e| Outcome::failed(format!("{what}: {}", connection::explain(&e)))
}

async fn columns(target: &Client, table: &str) -> Result<Columns, Outcome> {
    let rows = target
        .query(
            "SELECT a.attname::text, a.attgenerated <> '', a.attidentity <> '' \
               FROM pg_attribute a WHERE a.attrelid = $1::text::regclass \
                AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&table],
        )
        .await
        .map_err(err(&format!("reading the target's columns of {table}")))?;
    let mut all = Vec::new();
    for row in &rows {
        all.push((col(row, 0)?, col(row, 1)?, col(row, 2)?));
    }
    Ok(Columns { all })
}

/// The key column names a logged key holds.
fn key_columns(key: &str) -> Result<Vec<String>, Outcome> {
    let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(key)
        .map_err(|e| Outcome::failed(format!("a logged key is not a JSON object: {e}")))?;
    Ok(value.keys().cloned().collect())
}

/// `(t.a, t.b) IN (SELECT a, b FROM jsonb_populate_recordset(NULL::tbl, $1))`: the rows of
/// `table` whose key is among the JSON array `$1`, each key typed as the table types it.
pub(super) fn key_match(table: &str, key: &[String]) -> String {
    let cols: Vec<String> = key.iter().map(|k| ident(k)).collect();
    let qualified: Vec<String> = cols.iter().map(|c| format!("t.{c}")).collect();
    format!(
        "({}) IN (SELECT {} FROM jsonb_populate_recordset(NULL::{table}, $1::text::jsonb))",
        qualified.join(", "),
        cols.join(", ")
    )
}

/// The catch-up's state: both connections, and how far the log is applied.
pub(super) struct Applier<'a> {
    pub ctx: &'a ActionContext,
    pub source: Client,
    pub target: Client,
    /// The log's table, quoted.
    pub log: String,
    pub batch: i64,
    pub position: i64,
    pub horizon: i64,
    /// Changes applied by this run.
    pub applied: u64,
    pub started: Instant,
    tables_cache: BTreeMap<String, Columns>,
}

impl<'a> Applier<'a> {
    pub fn new(
        ctx: &'a ActionContext,
        source: Client,
        target: Client,
        log: String,
        batch: i64,
        (position, horizon): (i64, i64),
    ) -> Self {
        Applier {
            ctx,
            source,
            target,
            log,
            batch,
            position,
            horizon,
            applied: 0,
            started: Instant::now(),
            tables_cache: BTreeMap::new(),
        }
    }

    pub async fn outputs(&self) {
        let report = &self.ctx.report;
        report.output("position", self.position.to_string()).await;
        report.output("horizon", self.horizon.to_string()).await;
        report.output("applied", self.applied.to_string()).await;
        report
            .output("resume", format!("{}:{}", self.position, self.horizon))
            .await;
    }

    /// Applies the log in batches until it is read to its end or the backlog is `until`.
    pub async fn drain(&mut self, until: Until) -> Result<(), Outcome> {
        let ctx = self.ctx;
        let batch = self.batch;
        let log = self.log.clone();
        loop {
            let (backlog, oldest) = backlog(&self.source, &log, self.position).await?;
            let rate = self.applied as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            ctx.report
                .progress(
                    self.applied,
                    Some(self.applied + u64::try_from(backlog).unwrap_or(0)),
                    "changes",
                    Some(format!(
                        "backlog {backlog} change(s), oldest {} old, {rate:.0} changes/s",
                        humantime::format_duration(Duration::from_secs(oldest))
                    )),
                )
                .await;
            if let Until::Backlog(n) = until {
                if backlog <= n {
                    break;
                }
            }
            let position = self.position;
            let horizon = self.horizon;
            let source = &mut self.source;
            let target = &mut self.target;
            let tables_cache = &mut self.tables_cache;
            // The batch and the rows it names, of one source snapshot.
            let tx = source
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(err("opening the source's snapshot"))?;
            let xmin: i64 = match tx
                .query(
                    "SELECT txid_snapshot_xmin(txid_current_snapshot())::bigint",
                    &[],
                )
                .await
                .map_err(err("reading the source's snapshot"))?
                .first()
            {
                Some(row) => col(row, 0)?,
                None => 0,
            };
            let fresh = tx
                .query(
                    &format!(
                        "SELECT id, tbl, key::text FROM {log} WHERE id > $1 ORDER BY id LIMIT $2"
                    ),
                    &[&position, &batch],
                )
                .await
                .map_err(err("reading the change log"))?;
            let late = tx
                .query(
                    &format!(
                        "SELECT id, tbl, key::text FROM {log} WHERE id <= $1 AND xid >= $2 ORDER BY id"
                    ),
                    &[&position, &horizon],
                )
                .await
                .map_err(err("reading the change log"))?;
            if fresh.is_empty() && late.is_empty() {
                tx.commit()
                    .await
                    .map_err(err("closing the source's snapshot"))?;
                break;
            }
            let mut changes = Vec::new();
            for row in late.iter().chain(fresh.iter()) {
                changes.push(Change {
                    table: col(row, 1)?,
                    key: col(row, 2)?,
                });
            }
            let mut work: BTreeMap<String, Work> = BTreeMap::new();
            for change in &changes {
                let entry = work.entry(change.table.clone()).or_default();
                match &change.key {
                    None => entry.truncate = true,
                    Some(key) => {
                        entry
                            .keys
                            .entry(key_columns(key)?)
                            .or_default()
                            .insert(key.clone());
                    }
                }
            }
            // The source's current rows for each table's keys, as the target's row type reads
            // them (generated columns sent as NULL: the target computes its own).
            let mut rows: Vec<(String, Vec<String>, String, Vec<String>)> = Vec::new();
            for (table, w) in &work {
                if !tables_cache.contains_key(table) {
                    tables_cache.insert(table.clone(), columns(target, table).await?);
                }
                let Some(cols) = tables_cache.get(table) else {
                    continue;
                };
                let exprs: Vec<String> = cols
                    .all
                    .iter()
                    .map(|(name, generated, _)| {
                        if *generated {
                            "NULL::text".to_string()
                        } else {
                            format!("t.{}", ident(name))
                        }
                    })
                    .collect();
                for (key, keys) in &w.keys {
                    let array = format!(
                        "[{}]",
                        keys.iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    let found = tx
                        .query(
                            &format!(
                                "SELECT ROW({})::text FROM {table} t WHERE {}",
                                exprs.join(", "),
                                key_match(table, key)
                            ),
                            &[&array],
                        )
                        .await
                        .map_err(err(&format!("reading the changed rows of {table}")))?;
                    let texts: Vec<String> = found
                        .iter()
                        .map(|r| col::<String>(r, 0))
                        .collect::<Result<_, _>>()?;
                    rows.push((table.clone(), key.clone(), array, texts));
                }
            }
            tx.commit()
                .await
                .map_err(err("closing the source's snapshot"))?;

            // One target transaction for the whole batch.
            let ttx = target
                .transaction()
                .await
                .map_err(err("opening the target's transaction"))?;
            // The target's guard does not record the catch-up's own writes.
            ttx.batch_execute(APPLYING)
                .await
                .map_err(err("marking the target's transaction as the catch-up's"))?;
            let truncated: Vec<&str> = work
                .iter()
                .filter(|(_, w)| w.truncate)
                .map(|(t, _)| t.as_str())
                .collect();
            if !truncated.is_empty() {
                ttx.batch_execute(&format!("TRUNCATE {}", truncated.join(", ")))
                    .await
                    .map_err(err(&format!("truncating {}", truncated.join(", "))))?;
            }
            for (table, key, array, texts) in &rows {
                ttx.execute(
                    &format!("DELETE FROM {table} t WHERE {}", key_match(table, key)),
                    &[array],
                )
                .await
                .map_err(err(&format!("deleting the changed rows of {table}")))?;
                if texts.is_empty() {
                    continue;
                }
                let Some(cols) = tables_cache.get(table) else {
                    continue;
                };
                let written: Vec<String> = cols.written().map(|c| ident(c)).collect();
                let picked: Vec<String> = written.iter().map(|c| format!("(v).{c}")).collect();
                ttx.execute(
                    &format!(
                        "INSERT INTO {table} ({}) {} SELECT {} FROM (SELECT r::{table} AS v FROM unnest($1::text[]) r) s",
                        written.join(", "),
                        if cols.identity() { "OVERRIDING SYSTEM VALUE" } else { "" },
                        picked.join(", ")
                    ),
                    &[texts],
                )
                .await
                .map_err(err(&format!("writing the changed rows of {table}")))?;
            }
            ttx.commit()
                .await
                .map_err(err("committing the batch on the target"))?;

            let last = fresh
                .last()
                .map(|r| col::<i64>(r, 0))
                .transpose()?
                .unwrap_or(position);
            self.applied += fresh.len() as u64;
            self.position = position.max(last);
            self.horizon = xmin;
            self.outputs().await;
            // On record before the next batch: a kill from here on re-applies at most this one.
            ctx.report.recorded().await;
            if fresh.is_empty() {
                break;
            }
        }
        Ok(())
    }
}

/// The changes logged after `position` (the log's ids, so rolled-back ids count too: an upper
/// bound, read without a scan) and the age in seconds of the oldest of them.
pub(super) async fn backlog(
    source: &Client,
    log: &str,
    position: i64,
) -> Result<(i64, u64), Outcome> {
    let rows = query(
        source,
        &format!(
            "SELECT coalesce((SELECT max(id) FROM {log}), 0)::bigint, \
                    coalesce(extract(epoch FROM now() - (SELECT at FROM {log} WHERE id > {position} ORDER BY id LIMIT 1)), 0)::bigint"
        ),
        "reading the backlog",
    )
    .await?;
    let Some(row) = rows.first() else {
        return Ok((0, 0));
    };
    let last: i64 = col(row, 0)?;
    let age: i64 = col(row, 1)?;
    Ok(((last - position).max(0), u64::try_from(age).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_matched_by_their_columns() {
        assert_eq!(
            key_columns(r#"{"id": 1, "tenant": "a"}"#).ok(),
            Some(vec!["id".to_string(), "tenant".to_string()])
        );
        assert_eq!(
            key_match("public.t", &["id".to_string()]),
            "(t.\"id\") IN (SELECT \"id\" FROM jsonb_populate_recordset(NULL::public.t, $1::text::jsonb))"
        );
    }
}
