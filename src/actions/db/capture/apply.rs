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
//!
//! That is the batch on a target whose triggers and foreign keys are off for the catch-up's
//! session (`session_replication_role = replica`, which RDS's master user may set). On a
//! target that refuses it (Heroku, the reverse catch-up of issue 28) they stay live, and a
//! batch is applied in the order of the target's foreign keys instead (`live_batch`: children's
//! deletes first, parents' upserts first, the batch closed over the foreign keys in its source
//! snapshot, a cycle named before anything is written; the order itself is in `order`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, IsolationLevel};

use super::guard;
use super::order::{self, ForeignKey};
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

/// A target table's columns: name, generated, identity, identity `GENERATED ALWAYS`.
pub(super) struct Columns {
    all: Vec<(String, bool, bool, bool)>,
}

impl Columns {
    /// The source's row as the batch reads it (alias `t`), one expression a column in the
    /// target's order: a generated column as NULL (the target computes it).
    fn read_exprs(&self) -> Vec<String> {
        self.all
            .iter()
            .map(|(name, generated, _, _)| {
                if *generated {
                    "NULL::text".to_string()
                } else {
                    format!("t.{}", ident(name))
                }
            })
            .collect()
    }
    fn written(&self) -> impl Iterator<Item = &String> {
        self.all.iter().filter(|c| !c.1).map(|c| &c.0)
    }
    fn identity(&self) -> bool {
        self.all.iter().any(|c| c.2)
    }
    /// What an upsert sets again: the written columns but those an UPDATE may not write
    /// (identity `GENERATED ALWAYS`). The key's columns too: a value equal to the target's but
    /// spelled otherwise (citext 'abc' → 'ABC', numeric 1.0 → 1.00) lands as the source has it.
    fn updated(&self) -> Vec<String> {
        self.all
            .iter()
            .filter(|c| !c.1 && !c.3)
            .map(|c| c.0.clone())
            .collect()
    }
}

pub(super) fn err(what: &str) -> impl Fn(tokio_postgres::Error) -> Outcome + '_ {
    move |e| Outcome::failed(format!("{what}: {}", connection::explain(&e)))
}

async fn columns(target: &Client, table: &str) -> Result<Columns, Outcome> {
    let rows = target
        .query(
            "SELECT a.attname::text, a.attgenerated <> '', a.attidentity <> '', a.attidentity = 'a' \
               FROM pg_attribute a WHERE a.attrelid = $1::text::regclass \
                AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&table],
        )
        .await
        .map_err(err(&format!("reading the target's columns of {table}")))?;
    let mut all = Vec::new();
    for row in &rows {
        all.push((col(row, 0)?, col(row, 1)?, col(row, 2)?, col(row, 3)?));
    }
    Ok(Columns { all })
}

/// The key column names a logged key holds, in jsonb's order (shortest name first).
fn key_columns(key: &str) -> Result<Vec<String>, Outcome> {
    let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(key)
        .map_err(|e| Outcome::failed(format!("a logged key is not a JSON object: {e}")))?;
    Ok(value.keys().cloned().collect())
}

/// A logged key's columns in the catalog's order (the key's index order), when they are the
/// catalog's key: the keys the foreign keys add to a live batch are filed under that order, and
/// one table's keys must be filed under one order (one upsert per table: a row and the parent
/// it references in one statement).
fn in_catalog_order(cols: Vec<String>, catalog: Option<&Vec<String>>) -> Vec<String> {
    match catalog {
        Some(key) if key.len() == cols.len() && key.iter().all(|k| cols.contains(k)) => key.clone(),
        _ => cols,
    }
}

/// `(t.a, t.b) IN (SELECT a, b FROM jsonb_populate_recordset(NULL::tbl, $1))`: the rows of
/// `table` whose key is among the JSON array `$1`, each key typed as the table types it.
pub(super) fn key_match(table: &str, key: &[String]) -> String {
    key_match_as("t", table, key)
}

/// `key_match` for the table under another alias.
fn key_match_as(alias: &str, table: &str, key: &[String]) -> String {
    let cols: Vec<String> = key.iter().map(|k| ident(k)).collect();
    let qualified: Vec<String> = cols.iter().map(|c| format!("{alias}.{c}")).collect();
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
    /// Which change log the position is of (its table's OID): a log removed and installed
    /// again starts its ids over, and a position of the old one means nothing in it.
    pub log_id: Option<i64>,
    pub batch: i64,
    pub position: i64,
    pub horizon: i64,
    /// Changes applied by this run.
    pub applied: u64,
    pub started: Instant,
    tables_cache: BTreeMap<String, Columns>,
    /// The target keeps its triggers and foreign keys on (see `live_batch`).
    live: Option<Live>,
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
            log_id: None,
            batch,
            position,
            horizon,
            applied: 0,
            started: Instant::now(),
            tables_cache: BTreeMap::new(),
            live: None,
        }
    }

    /// The target refused `session_replication_role = replica`: its foreign keys and triggers
    /// stay on, and each batch is applied in their order (`live_batch`). `keys`: each table's
    /// key as the capture records it (the source's catalog).
    pub fn live_target(&mut self, keys: BTreeMap<String, Vec<String>>, tally: Option<String>) {
        self.live = Some(Live {
            keys,
            foreign: None,
            said: BTreeSet::new(),
            arbiter: BTreeMap::new(),
            tally,
        });
    }

    /// The schema of a live target's tally of the catch-up's writes, if it is kept (see `Live`).
    pub fn tally(&self) -> Option<&str> {
        self.live.as_ref().and_then(|l| l.tally.as_deref())
    }

    pub async fn outputs(&self) {
        let report = &self.ctx.report;
        report.output("position", self.position.to_string()).await;
        report.output("horizon", self.horizon.to_string()).await;
        report.output("applied", self.applied.to_string()).await;
        let resume = match self.log_id {
            Some(id) => {
                report.output("log_id", id.to_string()).await;
                format!("{}:{}:{id}", self.position, self.horizon)
            }
            None => format!("{}:{}", self.position, self.horizon),
        };
        report.output("resume", resume).await;
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
            // A step that finds a backlog applies at least one batch, even one already under
            // `until`: its apply rate is what the freeze's prediction divides the backlog by.
            if let Until::Backlog(n) = until {
                if backlog <= n && (self.applied > 0 || backlog == 0) {
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
                        let catalog = self.live.as_ref().and_then(|l| l.keys.get(&change.table));
                        entry
                            .keys
                            .entry(in_catalog_order(key_columns(key)?, catalog))
                            .or_default()
                            .insert(key.clone());
                    }
                }
            }
            match self.live.as_mut() {
                Some(live) => {
                    live_batch(
                        ctx,
                        tx,
                        target,
                        tables_cache,
                        live,
                        &log,
                        position,
                        &fresh,
                        work,
                    )
                    .await?
                }
                None => replica_batch(tx, target, tables_cache, &work).await?,
            }

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

/// One batch into a target whose triggers and foreign keys are off for the session (or that
/// has none): each table's keys deleted and its rows inserted again, in one transaction.
async fn replica_batch(
    tx: tokio_postgres::Transaction<'_>,
    target: &mut Client,
    tables_cache: &mut BTreeMap<String, Columns>,
    work: &BTreeMap<String, Work>,
) -> Result<(), Outcome> {
    // The source's current rows for each table's keys, as the target's row type reads
    // them (generated columns sent as NULL: the target computes its own).
    let mut rows: Vec<(String, Vec<String>, String, Vec<String>)> = Vec::new();
    for (table, w) in work {
        if !tables_cache.contains_key(table) {
            tables_cache.insert(table.clone(), columns(target, table).await?);
        }
        let Some(cols) = tables_cache.get(table) else {
            continue;
        };
        let exprs = cols.read_exprs();
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
    Ok(())
}

/// What the applier knows of a target whose foreign keys and triggers stay on.
pub(super) struct Live {
    /// Each table's key as the capture records it.
    keys: BTreeMap<String, Vec<String>>,
    /// The target's foreign keys, read at the first batch (once per step).
    foreign: Option<Vec<ForeignKey>>,
    /// The plan's notes already said in this step.
    said: BTreeSet<String>,
    /// Whether a table's key (by its columns) has a unique index `ON CONFLICT` can use on the
    /// target (not when its constraint is DEFERRABLE, or there is none there), learnt at its
    /// first upsert.
    arbiter: BTreeMap<(String, Vec<String>), bool>,
    /// The guard's schema on the target, when it is guarded: each batch adds its own writes to
    /// the tally there before it commits (see `guard::add_to_tally`).
    tally: Option<String>,
}

/// Whether `table` has on the target a unique index on exactly `key` that `ON CONFLICT` can use
/// as its arbiter (valid, not partial, no expression, not DEFERRABLE): `Ok(None)` when it has;
/// else why not, for the step's log.
async fn no_arbiter(
    target: &tokio_postgres::Transaction<'_>,
    table: &str,
    key: &[String],
) -> Result<Option<String>, Outcome> {
    let key: Vec<String> = key.to_vec();
    let rows = target
        .query(
            "SELECT coalesce(bool_or(i.indimmediate), false), count(*) > 0 FROM pg_index i \
              WHERE i.indrelid = $1::text::regclass \
                AND i.indisunique AND i.indisvalid AND i.indpred IS NULL \
                AND i.indexprs IS NULL AND i.indnkeyatts = cardinality($2::text[]) \
                AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) \
                       FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, ord) \
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n \
                      WHERE k.ord <= i.indnkeyatts) \
                    = (SELECT array_agg(x ORDER BY x) FROM unnest($2::text[]) x)",
            &[&table, &key],
        )
        .await
        .map_err(err(&format!(
            "reading the target's unique indexes of {table} (key {})",
            key.join(", ")
        )))?;
    let (immediate, any): (bool, bool) = match rows.first() {
        Some(row) => (col(row, 0)?, col(row, 1)?),
        None => (false, false),
    };
    Ok(match (immediate, any) {
        (true, _) => None,
        (false, true) => Some(format!(
            "{table}: its key ({}) is a DEFERRABLE constraint on the target, which ON CONFLICT cannot use",
            key.join(", ")
        )),
        (false, false) => Some(format!(
            "{table}: the target has no unique index on its key ({}), which ON CONFLICT needs",
            key.join(", ")
        )),
    })
}

/// Keys by table, then by their column names.
type Keys = BTreeMap<String, BTreeMap<Vec<String>, BTreeSet<String>>>;

/// What one table of a live batch holds: the source's rows for the keys it still has (key →
/// row), the keys it no longer has, and whether the table was truncated.
#[derive(Default)]
struct Landing {
    present: BTreeMap<Vec<String>, BTreeMap<String, String>>,
    gone: BTreeMap<Vec<String>, BTreeSet<String>>,
    truncate: bool,
}

impl Landing {
    fn knows(&self, key_cols: &[String], key: &str) -> bool {
        self.present
            .get(key_cols)
            .is_some_and(|p| p.contains_key(key))
            || self.gone.get(key_cols).is_some_and(|g| g.contains(key))
    }
}

/// `jsonb_build_object('a', x."a", …)`: a key as the log writes it (its text is jsonb's).
fn key_object(alias: &str, cols: &[String]) -> String {
    format!(
        "jsonb_build_object({})",
        cols.iter()
            .map(|c| format!("'{}', {alias}.{}", c.replace('\'', "''"), ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `c."a" = p."x" AND …`: a foreign key's join.
fn joined(fk: &ForeignKey) -> String {
    fk.child_cols
        .iter()
        .zip(&fk.parent_cols)
        .map(|(c, p)| format!("c.{} = p.{}", ident(c), ident(p)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn json_array<'k>(keys: impl Iterator<Item = &'k String>) -> String {
    format!(
        "[{}]",
        keys.map(String::as_str).collect::<Vec<_>>().join(",")
    )
}

/// A few keys, for an error.
/// Deletes a table's keys gone from the source, in the batch's target transaction; `when`
/// completes the error's words.
async fn delete_gone(
    ttx: &tokio_postgres::Transaction<'_>,
    table: &str,
    key_cols: &[String],
    keys: &[String],
    when: &str,
) -> Result<(), Outcome> {
    ttx.execute(
        &format!("DELETE FROM {table} t WHERE {}", key_match(table, key_cols)),
        &[&json_array(keys.iter())],
    )
    .await
    .map_err(|e| {
        Outcome::failed(format!(
            "deleting the rows of {table} gone from the source{when} (key {}): {}",
            some_keys(keys.iter()),
            connection::explain(&e)
        ))
    })?;
    Ok(())
}

fn some_keys<'k>(keys: impl Iterator<Item = &'k String>) -> String {
    let all: Vec<&String> = keys.collect();
    let shown: Vec<&str> = all.iter().take(3).map(|k| k.as_str()).collect();
    if all.len() > shown.len() {
        format!("{} and {} more", shown.join(", "), all.len() - shown.len())
    } else {
        shown.join(", ")
    }
}

fn add(keys: &mut Keys, table: &str, cols: &[String], key: String) {
    keys.entry(table.to_string())
        .or_default()
        .entry(cols.to_vec())
        .or_default()
        .insert(key);
}

/// One batch into a target whose foreign keys and the app's triggers stay on (issue 28: the
/// reverse catch-up into Heroku, where cutover's role may not set `session_replication_role`).
/// Every foreign key holds at every statement (or, deferred, at the commit), in one target
/// transaction:
///
/// 1. The batch's keys are read in the batch's source snapshot: a key the source still has is a
///    row to land, one it no longer has is a row to delete.
/// 2. The batch is closed over the foreign keys, in the same snapshot (the batch boundary may
///    split a transaction, and the rows are read as they are now, not as they were logged):
///    - a key gone from the source whose row still has children on the target: those
///      children's keys join the batch (read from the source: gone too — a cascade on the
///      source whose children's deletes are logged in a later batch — or moved to another
///      parent), and so on down;
///    - a row to land referencing a parent the target does not hold (a parent inserted after
///      this batch's last change, whose insert is logged in a later batch): the parent's key
///      joins the batch, and so on up.
///
///    Chosen over extending the batch to the end of its transactions: that still lands rows
///    read as they are now, referencing parents of later transactions. The keys that join are
///    logged too and are applied again in their own batch: harmless, as every apply is.
/// 3. The tables ordered parents first (`order::plan`; a cycle that cannot be deferred fails
///    the step here, before anything is written).
/// 4. In the target's transaction: the gone keys deleted, children first (one statement per
///    table); the truncated tables emptied with `DELETE` (TRUNCATE of a referenced table fails
///    on a live target), children first, after checking that no table left out of the
///    truncation references them; the rows to land upserted, parents first, one statement per
///    table (`INSERT … ON CONFLICT (key) DO UPDATE`, the key's columns set too: a delete and an
///    insert would cascade to, or fail on, the children on the target; a key whose constraint is
///    DEFERRABLE cannot be ON CONFLICT's arbiter: then `WITH … UPDATE … FROM` the rows by key and
///    `INSERT … WHERE NOT EXISTS`, still one statement); last, the gone keys whose rows were
///    still referenced by rows that land (children moved to another parent), children first.
///
/// Keys are compared as text: each table's key columns in the catalog's order (`in_catalog_order`),
/// and a key found through a foreign key keeps the text it was asked with (a timestamptz key
/// logged in the app's time zone reads otherwise once built again in UTC). The closure has no
/// cap on its rounds (each key joins once), and says its progress every 100 rounds.
///
/// A TRUNCATE … CASCADE logs each table it empties: the tables emptied by the same transactions
/// as this batch's TRUNCATEs join it, wherever the batch ends. Not handled: a foreign key
/// referencing a parent's unique columns other than its key, changed on a parent whose
/// children on the target are not in the batch (fails naming the table), and a unique value
/// moved between two keys of one batch (fails naming the table and the keys: a smaller
/// `batch` rarely helps, the same keys meet again).
#[allow(clippy::too_many_arguments)]
async fn live_batch(
    ctx: &ActionContext,
    tx: tokio_postgres::Transaction<'_>,
    target: &mut Client,
    tables_cache: &mut BTreeMap<String, Columns>,
    live: &mut Live,
    log: &str,
    position: i64,
    fresh: &[tokio_postgres::Row],
    mut work: BTreeMap<String, Work>,
) -> Result<(), Outcome> {
    // The tables a TRUNCATE of this batch's transactions emptied with it, logged after it.
    if let Some(last) = fresh.last() {
        let last: i64 = col(last, 0)?;
        let more = tx
            .query(
                &format!(
                    "SELECT DISTINCT tbl FROM {log} WHERE key IS NULL AND id > $1 AND xid IN \
                       (SELECT xid FROM {log} WHERE key IS NULL AND id > $2 AND id <= $1)"
                ),
                &[&last, &position],
            )
            .await
            .map_err(err("reading the change log's truncations"))?;
        for row in &more {
            work.entry(col(row, 0)?).or_default().truncate = true;
        }
    }
    if live.foreign.is_none() {
        live.foreign = Some(order::foreign_keys(target).await?);
    }
    let foreign: &[ForeignKey] = live.foreign.as_deref().unwrap_or(&[]);

    let mut landing: BTreeMap<String, Landing> = BTreeMap::new();
    let mut pending: Keys = BTreeMap::new();
    for (table, w) in work {
        landing.entry(table.clone()).or_default().truncate = w.truncate;
        pending.insert(table, w.keys);
    }
    // (child, its key) referenced (parent, its gone key) on the target.
    let mut refs: Vec<((String, String), (String, String))> = Vec::new();
    let mut joined_keys = 0usize;
    // No cap on the rounds: a key joins the batch once (`knows`, `pending`), so they end; a
    // cascading chain deeper than any cap would otherwise fail every re-run.
    let mut rounds = 0u64;
    while !pending.is_empty() {
        rounds += 1;
        if rounds % 100 == 0 {
            ctx.report
                .info(format!(
                    "the batch's foreign keys lead on: round {rounds} of parents and children, {joined_keys} key(s) joined so far"
                ))
                .await;
        }
        let mut new_gone: Keys = BTreeMap::new();
        let mut new_present: Keys = BTreeMap::new();
        for (table, sets) in std::mem::take(&mut pending) {
            if !tables_cache.contains_key(&table) {
                tables_cache.insert(table.clone(), columns(target, &table).await?);
            }
            let Some(cols) = tables_cache.get(&table) else {
                continue;
            };
            let exprs = cols.read_exprs();
            let entry = landing.entry(table.clone()).or_default();
            for (key_cols, keys) in sets {
                let keys: Vec<String> = keys
                    .into_iter()
                    .filter(|k| !entry.knows(&key_cols, k))
                    .collect();
                if keys.is_empty() {
                    continue;
                }
                // Each row with the very text of the key that found it (a key built again
                // from the row could read otherwise: a timestamptz in another time zone).
                let same: Vec<String> = key_cols
                    .iter()
                    .map(|c| format!("t.{c} = r.{c}", c = ident(c)))
                    .collect();
                let found = tx
                    .query(
                        &format!(
                            "SELECT k.x::text, ROW({})::text FROM jsonb_array_elements($1::text::jsonb) k(x) \
                               CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, k.x) r \
                               JOIN {table} t ON {}",
                            exprs.join(", "),
                            same.join(" AND ")
                        ),
                        &[&json_array(keys.iter())],
                    )
                    .await
                    .map_err(err(&format!("reading the changed rows of {table}")))?;
                let mut rows = BTreeMap::new();
                for row in &found {
                    rows.insert(col::<String>(row, 0)?, col::<String>(row, 1)?);
                }
                for key in keys {
                    match rows.remove(&key) {
                        Some(row) => {
                            add(&mut new_present, &table, &key_cols, key.clone());
                            entry
                                .present
                                .entry(key_cols.clone())
                                .or_default()
                                .insert(key, row);
                        }
                        None => {
                            add(&mut new_gone, &table, &key_cols, key.clone());
                            entry.gone.entry(key_cols.clone()).or_default().insert(key);
                        }
                    }
                }
            }
        }
        // Children on the target of the keys gone from the source.
        for (parent, sets) in &new_gone {
            for fk in foreign.iter().filter(|k| &k.parent == parent) {
                let Some(child_key) = live.keys.get(&fk.child).filter(|k| !k.is_empty()) else {
                    continue;
                };
                if !fk.indexed {
                    let note = format!(
                        "{child} has no index on the columns of its foreign key {name} ({cols}) to {parent}: each round that follows rows of {parent} gone from the source scans {child} (an index on ({cols}) on the target avoids it)",
                        child = fk.child,
                        name = fk.name,
                        cols = fk.child_cols.join(", "),
                    );
                    if live.said.insert(note.clone()) {
                        ctx.report.info(note).await;
                    }
                }
                for (key_cols, keys) in sets {
                    // The gone key with the very text it was logged with (built again from the
                    // target's row it could read otherwise: a timestamptz in another time zone).
                    let same: Vec<String> = key_cols
                        .iter()
                        .map(|c| format!("p.{c} = r.{c}", c = ident(c)))
                        .collect();
                    let found = target
                        .query(
                            &format!(
                                "SELECT {}::text, k.x::text FROM jsonb_array_elements($1::text::jsonb) k(x) \
                                   CROSS JOIN LATERAL jsonb_populate_record(NULL::{parent}, k.x) r \
                                   JOIN {parent} p ON {} JOIN {child} c ON {}",
                                key_object("c", child_key),
                                same.join(" AND "),
                                joined(fk),
                                child = fk.child,
                            ),
                            &[&json_array(keys.iter())],
                        )
                        .await
                        .map_err(err(&format!(
                            "reading the target's rows of {} referencing rows of {parent} gone from the source",
                            fk.child
                        )))?;
                    for row in &found {
                        let (child, key): (String, String) = (col(row, 0)?, col(row, 1)?);
                        let known = landing
                            .get(&fk.child)
                            .is_some_and(|l| l.knows(child_key, &child));
                        if !known {
                            joined_keys += 1;
                            add(&mut pending, &fk.child, child_key, child.clone());
                        }
                        refs.push(((fk.child.clone(), child), (parent.clone(), key)));
                    }
                }
            }
        }
        // Parents the rows to land reference and the target does not hold.
        for (child, sets) in &new_present {
            for fk in foreign.iter().filter(|k| &k.child == child) {
                let Some(parent_key) = live.keys.get(&fk.parent).filter(|k| !k.is_empty()) else {
                    continue;
                };
                for (key_cols, keys) in sets {
                    let found = tx
                        .query(
                            &format!(
                                "SELECT DISTINCT {}::text, {}::text FROM {child} c JOIN {parent} p ON {} WHERE {}",
                                key_object("p", parent_key),
                                key_object("p", &fk.parent_cols),
                                joined(fk),
                                key_match_as("c", child, key_cols),
                                parent = fk.parent,
                            ),
                            &[&json_array(keys.iter())],
                        )
                        .await
                        .map_err(err(&format!(
                            "reading the source's rows of {} the changed rows of {child} reference",
                            fk.parent
                        )))?;
                    let (mut keys, mut referenced) = (Vec::new(), Vec::new());
                    for row in &found {
                        let key: String = col(row, 0)?;
                        let queued = pending
                            .get(&fk.parent)
                            .and_then(|s| s.get(parent_key))
                            .is_some_and(|s| s.contains(&key));
                        let known = landing
                            .get(&fk.parent)
                            .is_some_and(|l| l.knows(parent_key, &key));
                        if !queued && !known {
                            keys.push(key);
                            referenced.push(col::<String>(row, 1)?);
                        }
                    }
                    if keys.is_empty() {
                        continue;
                    }
                    let same: Vec<String> = fk
                        .parent_cols
                        .iter()
                        .map(|c| format!("p.{c} = x.{c}", c = ident(c)))
                        .collect();
                    let missing = target
                        .query(
                            &format!(
                                "SELECT u.k FROM unnest($1::text[], $2::text[]) u(k, r) \
                                  WHERE NOT EXISTS (SELECT 1 FROM {parent} p, \
                                        jsonb_populate_record(NULL::{parent}, u.r::jsonb) x WHERE {})",
                                same.join(" AND "),
                                parent = fk.parent,
                            ),
                            &[&keys, &referenced],
                        )
                        .await
                        .map_err(err(&format!(
                            "looking on the target for the rows of {} the changed rows of {child} reference",
                            fk.parent
                        )))?;
                    for row in &missing {
                        joined_keys += 1;
                        add(&mut pending, &fk.parent, parent_key, col(row, 0)?);
                    }
                }
            }
        }
    }
    tx.commit()
        .await
        .map_err(err("closing the source's snapshot"))?;

    // Gone keys still referenced by rows that land (children moved to another parent) are
    // deleted last, and so is every gone key above one of them.
    let is_present = |(table, key): &(String, String)| {
        landing
            .get(table)
            .is_some_and(|l| l.present.values().any(|p| p.contains_key(key)))
    };
    let mut late: BTreeSet<(String, String)> = refs
        .iter()
        .filter(|(child, _)| is_present(child))
        .map(|(_, parent)| parent.clone())
        .collect();
    loop {
        let more: Vec<(String, String)> = refs
            .iter()
            .filter(|(child, parent)| late.contains(child) && !late.contains(parent))
            .map(|(_, parent)| parent.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        late.extend(more);
    }

    let tables: BTreeSet<String> = landing.keys().cloned().collect();
    let plan = order::plan(&tables, foreign)?;
    for note in &plan.notes {
        if live.said.insert(note.clone()) {
            ctx.report.info(note.clone()).await;
        }
    }
    if joined_keys > 0 {
        ctx.report
            .info(format!(
                "{joined_keys} key(s) joined the batch through the target's foreign keys (parents it lacks, children of rows gone)"
            ))
            .await;
    }

    let ttx = target
        .transaction()
        .await
        .map_err(err("opening the target's transaction"))?;
    ttx.batch_execute(APPLYING)
        .await
        .map_err(err("marking the target's transaction as the catch-up's"))?;
    let tally_before = match &live.tally {
        Some(_) => Some(guard::pending_counts(&ttx).await?),
        None => None,
    };
    if plan.defer {
        ttx.batch_execute("SET CONSTRAINTS ALL DEFERRED")
            .await
            .map_err(err("deferring the target's deferrable foreign keys"))?;
    }
    let delete = |late_ones: bool| {
        let mut out: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
        for table in plan.tables.iter().rev() {
            let Some(l) = landing.get(table) else {
                continue;
            };
            for (key_cols, keys) in &l.gone {
                let keys: Vec<String> = keys
                    .iter()
                    .filter(|k| late.contains(&(table.clone(), (*k).clone())) == late_ones)
                    .cloned()
                    .collect();
                if !keys.is_empty() {
                    out.push((table.clone(), key_cols.clone(), keys));
                }
            }
        }
        out
    };
    // The gone keys, children first.
    for (table, key_cols, keys) in delete(false) {
        delete_gone(&ttx, &table, &key_cols, &keys, "").await?;
    }
    // The truncated tables, children first; none referenced from a table left out.
    let truncated: Vec<&String> = plan
        .tables
        .iter()
        .rev()
        .filter(|t| landing.get(*t).is_some_and(|l| l.truncate))
        .collect();
    for table in &truncated {
        for fk in foreign
            .iter()
            .filter(|k| &&k.parent == table && !truncated.contains(&&k.child))
        {
            let shown = match live.keys.get(&fk.child).filter(|k| !k.is_empty()) {
                Some(key) => format!("{}::text", key_object("c", key)),
                None => "c::text".to_string(),
            };
            let not_null: Vec<String> = fk
                .child_cols
                .iter()
                .map(|c| format!("c.{} IS NOT NULL", ident(c)))
                .collect();
            let rows = ttx
                .query(
                    &format!(
                        "SELECT {shown} FROM {} c WHERE {} LIMIT 1",
                        fk.child,
                        not_null.join(" AND ")
                    ),
                    &[],
                )
                .await
                .map_err(err(&format!(
                    "looking for rows of {} referencing {table}",
                    fk.child
                )))?;
            if let Some(row) = rows.first() {
                let key: String = col(row, 0)?;
                return Err(Outcome::failed(format!(
                    "{table} was truncated on the source, but {} (not truncated) still references its rows on the target: the row {key} ({}); nothing of this batch was written",
                    fk.child, fk.name
                )));
            }
        }
        ttx.execute(&format!("DELETE FROM {table}"), &[])
            .await
            .map_err(err(&format!("emptying {table} (truncated on the source)")))?;
    }
    // The rows to land, parents first.
    for table in &plan.tables {
        let (Some(l), Some(cols)) = (landing.get(table), tables_cache.get(table)) else {
            continue;
        };
        let written: Vec<String> = cols.written().map(|c| ident(c)).collect();
        let picked: Vec<String> = written.iter().map(|c| format!("(v).{c}")).collect();
        for (key_cols, rows) in &l.present {
            if rows.is_empty() {
                continue;
            }
            let updated: Vec<String> = cols
                .updated()
                .iter()
                .map(|c| format!("{c} = EXCLUDED.{c}", c = ident(c)))
                .collect();
            // One row once (a key logged in two spellings finds it twice).
            let texts: Vec<&String> = rows
                .values()
                .collect::<BTreeSet<&String>>()
                .into_iter()
                .collect();
            let overriding = if cols.identity() {
                "OVERRIDING SYSTEM VALUE"
            } else {
                ""
            };
            let arbiter = match live.arbiter.get(&(table.clone(), key_cols.clone())) {
                Some(known) => *known,
                None => {
                    let why = no_arbiter(&ttx, table, key_cols).await?;
                    if let Some(why) = &why {
                        ctx.report
                            .info(format!(
                                "{why}: its rows are updated by key, and those it lacks inserted, in one statement"
                            ))
                            .await;
                    }
                    live.arbiter
                        .insert((table.clone(), key_cols.clone()), why.is_none());
                    why.is_none()
                }
            };
            let statement = if arbiter {
                let action = if updated.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    format!("DO UPDATE SET {}", updated.join(", "))
                };
                format!(
                    "INSERT INTO {table} ({}) {overriding} SELECT {} FROM (SELECT r::{table} AS v FROM unnest($1::text[]) r) s \
                     ON CONFLICT ({}) {action}",
                    written.join(", "),
                    picked.join(", "),
                    key_cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", "),
                )
            } else {
                // A data-modifying WITH: one statement (a row and the parent it references
                // checked at its end, as with ON CONFLICT), whose INSERT sees the table as it was
                // before the UPDATE.
                let matched: Vec<String> = key_cols
                    .iter()
                    .map(|c| format!("t.{c} = (s.v).{c}", c = ident(c)))
                    .collect();
                let set: Vec<String> = cols
                    .updated()
                    .iter()
                    .map(|c| format!("{c} = (s.v).{c}", c = ident(c)))
                    .collect();
                let update = if set.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", u AS (UPDATE {table} t SET {} FROM s WHERE {} RETURNING 1)",
                        set.join(", "),
                        matched.join(" AND ")
                    )
                };
                format!(
                    "WITH s AS (SELECT r::{table} AS v FROM unnest($1::text[]) r){update} \
                     INSERT INTO {table} ({}) {overriding} SELECT {} FROM s \
                      WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {})",
                    written.join(", "),
                    picked.join(", "),
                    matched.join(" AND ")
                )
            };
            ttx.execute(&statement, &[&texts]).await.map_err(|e| {
                Outcome::failed(format!(
                    "writing the changed rows of {table} (key {}): {}",
                    some_keys(rows.keys()),
                    connection::explain(&e)
                ))
            })?;
        }
    }
    // The gone keys rows that landed referenced, children first.
    for (table, key_cols, keys) in delete(true) {
        delete_gone(
            &ttx,
            &table,
            &key_cols,
            &keys,
            ", after their children moved",
        )
        .await?;
    }
    if let (Some(schema), Some(before)) = (&live.tally, &tally_before) {
        guard::add_to_tally(&ttx, schema, before).await?;
    }
    ttx.commit().await.map_err(|e| {
        Outcome::failed(format!(
            "committing the batch on the target (tables {}): {}",
            plan.tables.join(", "),
            connection::explain(&e)
        ))
    })?;
    Ok(())
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

    #[test]
    fn logged_keys_take_the_catalogs_column_order() {
        let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let logged = key_columns(r#"{"id": 1, "tenant": "a"}"#).unwrap_or_default();
        assert_eq!(
            in_catalog_order(logged.clone(), Some(&v(&["tenant", "id"]))),
            v(&["tenant", "id"])
        );
        // Another key than the catalog's (or none known): the logged order stays.
        assert_eq!(
            in_catalog_order(logged.clone(), Some(&v(&["tenant"]))),
            v(&["id", "tenant"])
        );
        assert_eq!(in_catalog_order(logged, None), v(&["id", "tenant"]));
    }
}
