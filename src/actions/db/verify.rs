//! `db.verify`: proves the target holds what the source holds. Per table, the exact row count
//! and an order-independent checksum (the sum of a 64-bit hash of every row's text, so a
//! changed, swapped, duplicated or deleted row changes it); the same for each materialized
//! view; the large objects' count and a checksum of their contents; then sequences,
//! extensions, index counts and the same exact nearest-neighbour search on both sides. Every
//! read is with row-level security off: a table a policy would filter for this role fails,
//! named, rather than compare fewer rows.
//!
//! The figures a parallel copy recorded (`source_checksums`, `target_checksums`) are used only
//! when they describe what the target holds now: each names the target table it is of (server
//! and OID), and the journal must not say a later copy into this database stopped half-way.
//! Otherwise both databases are read, and the log says why.
//!
//! Because the checksum is a sum, a large table is cut into block ranges (each side by its own
//! layout) whose sums add up: the pieces of all tables are spread over the connections.
//!
//! May import: `connection`, `common`, `checksum`, `extensions`, and the copy's journal records
//! (`copy::target_state`); later, `capture`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::actions::db::checksum::{hash_tables, large_objects, target_table, Checksum, Recorded};
use crate::actions::db::common::{col, db_url, identity, query, table_oids, USER_RELATION};
use crate::actions::db::connection::{self, DbUrl};
use crate::actions::db::copy::target_state::{dirty_since, target_key};
use crate::actions::db::extensions;
use crate::actions::{ActionContext, Outcome};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    connections: Option<u32>,
    chunk_mb: Option<u64>,
    source_checksums: Option<String>,
    target_checksums: Option<String>,
    source: String,
    target: String,
    ca_bundle: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Source,
    Target,
}

/// One table's comparison.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableReport {
    pub table: String,
    pub source_rows: i64,
    pub target_rows: Option<i64>,
    pub checksum_match: bool,
    pub source_indexes: i64,
    pub target_indexes: Option<i64>,
}

impl TableReport {
    pub fn problem(&self) -> Option<String> {
        let Some(target_rows) = self.target_rows else {
            return Some(format!("{}: missing on the target", self.table));
        };
        let mut parts = Vec::new();
        if target_rows != self.source_rows {
            parts.push(format!(
                "{} rows on the source, {target_rows} on the target",
                self.source_rows
            ));
        }
        if !self.checksum_match {
            parts.push("content checksum differs".to_string());
        }
        if self.target_indexes != Some(self.source_indexes) {
            parts.push(format!(
                "{} index(es) on the source, {} on the target",
                self.source_indexes,
                self.target_indexes.unwrap_or(0)
            ));
        }
        (!parts.is_empty()).then(|| format!("{}: {}", self.table, parts.join(", ")))
    }
}

/// The large objects of both sides: how many, and the checksum of their contents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LargeObjects {
    pub source: u64,
    pub target: u64,
    pub checksum_match: bool,
}

impl LargeObjects {
    pub fn problem(&self) -> Option<String> {
        if self.source != self.target {
            Some(format!(
                "large objects: {} on the source, {} on the target",
                self.source, self.target
            ))
        } else if !self.checksum_match {
            Some("large objects: content checksum differs".to_string())
        } else {
            None
        }
    }
}

/// Everything `db.verify` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub tables: Vec<TableReport>,
    /// The materialized views populated on the source, compared as tables are.
    pub views: Vec<TableReport>,
    pub large_objects: LargeObjects,
    /// Sequences, extensions, tables only on the target, the vector search.
    pub other_problems: Vec<String>,
}

impl VerifyReport {
    pub fn problems(&self) -> Vec<String> {
        self.tables
            .iter()
            .chain(&self.views)
            .filter_map(TableReport::problem)
            .chain(self.large_objects.problem())
            .chain(self.other_problems.iter().cloned())
            .collect()
    }

    /// The report table shown in the log.
    pub fn lines(&self) -> Vec<String> {
        let width = self
            .tables
            .iter()
            .chain(&self.views)
            .map(|t| t.table.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut lines = vec![format!(
            "{:<width$}  {:>12}  {:>12}  {:>8}  checksum",
            "table", "source rows", "target rows", "indexes"
        )];
        for (t, kind) in self
            .tables
            .iter()
            .map(|t| (t, ""))
            .chain(self.views.iter().map(|t| (t, " (materialized view)")))
        {
            lines.push(format!(
                "{:<width$}  {:>12}  {:>12}  {:>8}  {}{kind}",
                t.table,
                t.source_rows,
                t.target_rows
                    .map_or_else(|| "missing".to_string(), |r| r.to_string()),
                format!(
                    "{}/{}",
                    t.source_indexes,
                    t.target_indexes
                        .map_or_else(|| "-".to_string(), |i| i.to_string())
                ),
                if t.target_rows.is_none() {
                    "-"
                } else if t.checksum_match {
                    "match"
                } else {
                    "DIFFERS"
                }
            ));
        }
        lines
    }
}

/// A table as one side sees it.
#[derive(Debug, Clone)]
struct TableInfo {
    name: String,
    blocks: u64,
    indexes: i64,
}

/// A piece of work: one side's table, or a block range of it.
#[derive(Debug, Clone)]
struct Piece {
    side: Side,
    table: String,
    range: Option<(u64, Option<u64>)>,
    weight: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Sum {
    rows: i64,
    hash: i128,
}

async fn tables(client: &Client) -> Result<BTreeMap<String, TableInfo>, Outcome> {
    relations(client, "c.relkind = 'r'", "listing tables").await
}

/// The materialized views with data (a view never refreshed cannot be read).
async fn views(client: &Client) -> Result<BTreeMap<String, TableInfo>, Outcome> {
    relations(
        client,
        "c.relkind = 'm' AND c.relispopulated",
        "listing materialized views",
    )
    .await
}

async fn relations(
    client: &Client,
    which: &str,
    what: &str,
) -> Result<BTreeMap<String, TableInfo>, Outcome> {
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, c.relname), \
                (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint, \
                (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid) \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE {which} AND {USER_RELATION} ORDER BY 1"
    );
    let rows = query(client, &sql, what).await?;
    let mut out = BTreeMap::new();
    for row in &rows {
        let name: String = col(row, 0)?;
        let blocks: i64 = col(row, 1)?;
        let indexes: i64 = col(row, 2)?;
        out.insert(
            name.clone(),
            TableInfo {
                name,
                blocks: u64::try_from(blocks).unwrap_or(0),
                indexes,
            },
        );
    }
    Ok(out)
}

async fn supports_tid_ranges(client: &Client) -> bool {
    // TID range scans (PostgreSQL 14): without them every piece would read the whole table.
    match client
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 140000",
            &[],
        )
        .await
    {
        Ok(row) => row.try_get::<_, bool>(0).unwrap_or(false),
        Err(_) => false,
    }
}

fn pieces(
    side: Side,
    tables: &BTreeMap<String, TableInfo>,
    chunk_blocks: Option<u64>,
) -> Vec<Piece> {
    let mut out = Vec::new();
    for t in tables.values() {
        match chunk_blocks {
            Some(size) if size > 0 && t.blocks > size => {
                let mut start = 0;
                while start < t.blocks {
                    let end = start + size;
                    // The last piece is open-ended: rows written after the size was read count too.
                    let range = if end >= t.blocks { None } else { Some(end) };
                    out.push(Piece {
                        side,
                        table: t.name.clone(),
                        range: Some((start, range)),
                        weight: size.min(t.blocks - start),
                    });
                    start = end;
                }
            }
            _ => out.push(Piece {
                side,
                table: t.name.clone(),
                range: None,
                weight: t.blocks.max(1),
            }),
        }
    }
    out
}

fn piece_sql(piece: &Piece) -> String {
    let filter = match piece.range {
        None => String::new(),
        Some((start, None)) => format!(" WHERE r.ctid >= '({start},0)'::tid"),
        Some((start, Some(end))) => {
            format!(" WHERE r.ctid >= '({start},0)'::tid AND r.ctid < '({end},0)'::tid")
        }
    };
    // The row's text form under the session settings fixed at connect time (UTC, ISO dates,
    // shortest exact floats, hex bytea): the same row prints the same on both servers.
    format!(
        "SELECT count(*), coalesce(sum(('x' || substr(md5(ROW(r.*)::text), 1, 16))::bit(64)::bigint), 0)::text \
           FROM ONLY {} r{filter}",
        piece.table
    )
}

async fn run_piece(client: &Client, piece: &Piece) -> Result<Sum, String> {
    let row = client
        .query_one(&piece_sql(piece), &[])
        .await
        .map_err(|e| format!("{}: {}", piece.table, connection::explain(&e)))?;
    let rows: i64 = row.try_get(0).map_err(|e| e.to_string())?;
    let text: String = row.try_get(1).map_err(|e| e.to_string())?;
    let hash = text
        .parse::<i128>()
        .map_err(|e| format!("{}: checksum {text:?}: {e}", piece.table))?;
    Ok(Sum { rows, hash })
}

/// Runs every piece over `connections` workers, each holding one connection per side.
async fn checksums(
    ctx: &ActionContext,
    source: &DbUrl,
    target: &DbUrl,
    mut work: Vec<Piece>,
    connections: usize,
) -> Result<BTreeMap<(Side, String), Sum>, Outcome> {
    // Largest first, so no big piece is left for the end.
    work.sort_by_key(|p| std::cmp::Reverse(p.weight));
    let total = work.len() as u64;
    let queue = Arc::new(Mutex::new(VecDeque::from(work)));
    let (tx, mut rx) = mpsc::channel::<Result<(Piece, Sum), String>>(64);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let queue = queue.clone();
        let tx = tx.clone();
        let urls = (source.clone(), target.clone());
        workers.spawn(async move {
            let mut clients: [Option<Client>; 2] = [None, None];
            loop {
                let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                let Some(piece) = next else {
                    break;
                };
                let slot = match piece.side {
                    Side::Source => 0,
                    Side::Target => 1,
                };
                if clients[slot].is_none() {
                    let url = if slot == 0 { &urls.0 } else { &urls.1 };
                    // `connections` is the whole load put on the databases (the source is
                    // production): no parallel workers behind each query.
                    let connected = match url.connect_all_rows().await {
                        Ok(c) => c
                            .batch_execute("SET max_parallel_workers_per_gather = 0")
                            .await
                            .map(|()| c)
                            .map_err(|e| connection::explain(&e)),
                        Err(e) => Err(e),
                    };
                    match connected {
                        Ok(c) => clients[slot] = Some(c),
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            break;
                        }
                    }
                }
                let Some(client) = clients[slot].as_ref() else {
                    break;
                };
                let result = run_piece(client, &piece).await.map(|sum| (piece, sum));
                let failed = result.is_err();
                if tx.send(result).await.is_err() || failed {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut sums: BTreeMap<(Side, String), Sum> = BTreeMap::new();
    let mut done = 0u64;
    loop {
        let message = tokio::select! {
            m = rx.recv() => m,
            () = ctx.cancel.cancelled() => {
                workers.abort_all();
                return Err(Outcome::Cancelled);
            }
        };
        let Some(message) = message else {
            break;
        };
        let (piece, sum) = message.map_err(|e| {
            workers.abort_all();
            Outcome::failed(format!("checksum: {e}"))
        })?;
        let entry = sums.entry((piece.side, piece.table.clone())).or_default();
        entry.rows += sum.rows;
        entry.hash += sum.hash;
        done += 1;
        ctx.report
            .progress(
                done,
                Some(total),
                "pieces",
                Some(format!("checksummed {} ({:?})", piece.table, piece.side)),
            )
            .await;
    }
    while workers.join_next().await.is_some() {}
    Ok(sums)
}

async fn sequences(client: &Client) -> Result<BTreeMap<String, Option<i64>>, Outcome> {
    let rows = query(
        client,
        "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences WHERE schemaname NOT LIKE 'cutover\\_capture%' ORDER BY 1",
        "reading sequences",
    )
    .await?;
    rows.iter()
        .map(|r| Ok((col::<String>(r, 0)?, col::<Option<i64>>(r, 1)?)))
        .collect()
}

/// Tables with a vector column and a one-column primary key: (table, column, key).
async fn vector_tables(client: &Client) -> Result<Vec<(String, String, String)>, Outcome> {
    let rows = query(
        client,
        "SELECT format('%I.%I', n.nspname, c.relname), quote_ident(a.attname), quote_ident(k.attname) \
           FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
           JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
           JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary AND i.indnkeyatts = 1 \
           JOIN pg_attribute k ON k.attrelid = c.oid AND k.attnum = i.indkey[0] \
          WHERE t.typname = 'vector' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped \
          ORDER BY 1, 2",
        "looking for vector columns",
    )
    .await?;
    rows.iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)))
        .collect()
}

async fn vector_schema(client: &Client) -> Option<String> {
    client
        .query_opt(
            "SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .and_then(|r| r.try_get::<_, String>(0).ok())
}

/// The 10 nearest neighbours of a few probe rows, exactly (no index: an approximate index
/// built in another order may answer differently), ties broken by key.
async fn nearest(
    client: &Client,
    table: &str,
    column: &str,
    key: &str,
    probe: &str,
) -> Result<Vec<String>, String> {
    let schema = vector_schema(client)
        .await
        .ok_or("the vector extension is not installed")?;
    let sql = format!(
        "SELECT r.{key}::text FROM {table} r, (SELECT {column} AS v FROM {table} WHERE {key}::text = $1) q \
          ORDER BY r.{column} OPERATOR({schema}.<->) q.v, r.{key} LIMIT 10"
    );
    client
        .batch_execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
        .await
        .map_err(|e| connection::explain(&e))?;
    let rows = client
        .query(&sql, &[&probe])
        .await
        .map_err(|e| connection::explain(&e));
    let _ = client
        .batch_execute("RESET enable_indexscan; RESET enable_bitmapscan")
        .await;
    rows?
        .iter()
        .map(|r| r.try_get::<_, String>(0).map_err(|e| e.to_string()))
        .collect()
}

async fn vector_spot_check(
    source: &Client,
    target: &Client,
    ctx: &ActionContext,
) -> Result<Vec<String>, Outcome> {
    let mut problems = Vec::new();
    for (table, column, key) in vector_tables(source).await? {
        let probes = query(
            source,
            &format!(
                "SELECT {key}::text FROM {table} WHERE {column} IS NOT NULL ORDER BY {key} LIMIT 3"
            ),
            "choosing probe rows",
        )
        .await?;
        for probe in &probes {
            let probe: String = col(probe, 0)?;
            let want = nearest(source, &table, &column, &key, &probe)
                .await
                .map_err(|e| Outcome::failed(format!("vector search on the source: {e}")))?;
            match nearest(target, &table, &column, &key, &probe).await {
                Ok(got) if got == want => {
                    ctx.report
                        .info(format!(
                            "vector search {table}.{column} near {key}={probe}: same {} ids in the same order",
                            got.len()
                        ))
                        .await;
                }
                Ok(got) => problems.push(format!(
                    "{table}: nearest neighbours of {key}={probe} by {column} differ (source {}, target {})",
                    want.join(","),
                    got.join(",")
                )),
                Err(e) => problems.push(format!("{table}: vector search on the target failed: {e}")),
            }
        }
    }
    Ok(problems)
}

/// The target's tables hashed row by row as a parallel copy hashed the source's stream,
/// against the checksums it recorded: the source's rows are not read again.
async fn against_recorded(
    ctx: &ActionContext,
    target_url: &DbUrl,
    recorded: &BTreeMap<String, Checksum>,
    target_tables: &BTreeMap<String, TableInfo>,
    connections: usize,
) -> Result<BTreeMap<String, Checksum>, Outcome> {
    let wanted: Vec<(u64, String)> = recorded
        .keys()
        .map(|name| {
            (
                target_tables.get(name).map_or(0, |t| t.blocks),
                name.clone(),
            )
        })
        .collect();
    ctx.report
        .info(format!(
            "reading back {} table(s) of the target over {connections} connection(s), against the checksums the copy took from the source's stream",
            wanted.len()
        ))
        .await;
    hash_tables(ctx, target_url, wanted, connections).await
}

/// Connects reading every row (row-level security off), or fails the step naming the side.
async fn connect(url: &DbUrl, side: &str) -> Result<Client, Outcome> {
    url.connect_all_rows()
        .await
        .map_err(|e| Outcome::failed(format!("{side}: {e}")))
}

/// Why recorded figures do not describe what the target holds now, if they do not: the
/// journal says a copy into this database stopped half-way after them, or a figure's target
/// table is not the target's table of that name (a later copy or a reset made a new one;
/// another server; a figure that names none, from an older cutover).
async fn stale_figures(
    ctx: &ActionContext,
    target: &Client,
    figures: &[&BTreeMap<String, Recorded>],
) -> Result<Vec<String>, Outcome> {
    let id = identity(target, "target").await?;
    let mut why = Vec::new();
    if let Some((step, since)) = dirty_since(&ctx.recorded, &target_key(&id)) {
        why.push(format!(
            "the target is dirty: step `{step}` stopped while restoring into it ({since}, says the journal) and no whole copy followed"
        ));
    }
    let now = table_oids(target).await?;
    // By table: the source's and the target's figures of one table say the same.
    let mut other: BTreeMap<&String, String> = BTreeMap::new();
    let mut unnamed: BTreeSet<&String> = BTreeSet::new();
    for (name, figure) in figures.iter().flat_map(|f| f.iter()) {
        let here = now
            .get(name)
            .map(|oid| target_table(&id.system_identifier, *oid));
        match (&figure.target, here) {
            (None, _) => {
                unnamed.insert(name);
            }
            (Some(of), Some(here)) if *of == here => {}
            (Some(of), Some(here)) => {
                other.insert(
                    name,
                    format!("{name} (the figures are of table {of}, the target's is {here})"),
                );
            }
            (Some(of), None) => {
                other.insert(
                    name,
                    format!("{name} (the figures are of table {of}, the target has none)"),
                );
            }
        }
    }
    let other: Vec<String> = other.into_values().collect();
    let unnamed = unnamed.len();
    if !other.is_empty() {
        let more = other.len().saturating_sub(3);
        why.push(format!(
            "the target's tables are not the ones the copy filled: {}{} — a later copy or a reset made them",
            other.into_iter().take(3).collect::<Vec<_>>().join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
    }
    if unnamed > 0 {
        why.push(format!(
            "{unnamed} figure(s) do not name the target table they are of (recorded by an older cutover)"
        ));
    }
    Ok(why)
}

/// Compares two databases. The checks over whole tables run on `connections` connections;
/// with `recorded` checksums (a parallel copy's), only the target's tables are read.
pub async fn compare(
    ctx: &ActionContext,
    source_url: &DbUrl,
    target_url: &DbUrl,
    connections: usize,
    chunk_mb: u64,
    recorded: Option<&BTreeMap<String, Checksum>>,
    read_back: Option<&BTreeMap<String, Checksum>>,
) -> Result<VerifyReport, Outcome> {
    let source = connect(source_url, "source").await?;
    let target = connect(target_url, "target").await?;
    let source_tables = tables(&source).await?;
    let target_tables = tables(&target).await?;
    if let Some(recorded) = recorded {
        let back = match read_back {
            Some(back) => {
                ctx.report
                    .info("tables: as the copy read each one back from the target (not read again)")
                    .await;
                back.clone()
            }
            None => {
                against_recorded(ctx, target_url, recorded, &target_tables, connections).await?
            }
        };
        let mut report = VerifyReport::default();
        for (name, info) in &source_tables {
            let s = recorded.get(name).copied();
            let t = back.get(name).copied();
            if s.is_none() {
                report.other_problems.push(format!(
                    "{name}: the copy recorded no checksum for it (a table created after the copy?)"
                ));
            }
            let s = s.unwrap_or_default();
            report.tables.push(TableReport {
                table: name.clone(),
                source_rows: i64::try_from(s.rows).unwrap_or(i64::MAX),
                target_rows: target_tables
                    .get(name)
                    .map(|_| i64::try_from(t.unwrap_or_default().rows).unwrap_or(i64::MAX)),
                checksum_match: t == Some(s),
                source_indexes: info.indexes,
                target_indexes: target_tables.get(name).map(|t| t.indexes),
            });
        }
        return finish_compare(
            ctx,
            (source_url, &source),
            (target_url, &target),
            &source_tables,
            &target_tables,
            (connections, chunk_mb),
            report,
        )
        .await;
    }
    let chunk_blocks = (chunk_mb.max(1) * 1024 * 1024) / 8192;
    let mut work = pieces(
        Side::Source,
        &source_tables,
        supports_tid_ranges(&source).await.then_some(chunk_blocks),
    );
    let shared: BTreeMap<String, TableInfo> = target_tables
        .iter()
        .filter(|(name, _)| source_tables.contains_key(*name))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    work.extend(pieces(
        Side::Target,
        &shared,
        supports_tid_ranges(&target).await.then_some(chunk_blocks),
    ));
    ctx.report
        .info(format!(
            "checksumming {} table(s) in {} piece(s) over {connections} connection(s)",
            source_tables.len(),
            work.len()
        ))
        .await;
    let sums = checksums(ctx, source_url, target_url, work, connections).await?;

    let mut report = VerifyReport::default();
    for (name, info) in &source_tables {
        let s = sums
            .get(&(Side::Source, name.clone()))
            .copied()
            .unwrap_or_default();
        let t = sums.get(&(Side::Target, name.clone())).copied();
        report.tables.push(TableReport {
            table: name.clone(),
            source_rows: s.rows,
            target_rows: target_tables.get(name).map(|_| t.unwrap_or_default().rows),
            checksum_match: t.is_some_and(|t| t.hash == s.hash && t.rows == s.rows),
            source_indexes: info.indexes,
            target_indexes: target_tables.get(name).map(|t| t.indexes),
        });
    }
    finish_compare(
        ctx,
        (source_url, &source),
        (target_url, &target),
        &source_tables,
        &target_tables,
        (connections, chunk_mb),
        report,
    )
    .await
}

/// The materialized views populated on the source, read on both sides as tables are (a copy
/// refreshes them on the target: it records no figures for them).
async fn compare_views(
    ctx: &ActionContext,
    (source_url, source): (&DbUrl, &Client),
    (target_url, target): (&DbUrl, &Client),
    connections: usize,
    chunk_mb: u64,
) -> Result<(Vec<TableReport>, Vec<String>), Outcome> {
    let source_views = views(source).await?;
    if source_views.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let target_views = views(target).await?;
    let target_all = relations(target, "c.relkind = 'm'", "listing materialized views").await?;
    let chunk_blocks = (chunk_mb.max(1) * 1024 * 1024) / 8192;
    let shared: BTreeMap<String, TableInfo> = target_views
        .iter()
        .filter(|(name, _)| source_views.contains_key(*name))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut work = pieces(
        Side::Source,
        &source_views,
        supports_tid_ranges(source).await.then_some(chunk_blocks),
    );
    work.extend(pieces(
        Side::Target,
        &shared,
        supports_tid_ranges(target).await.then_some(chunk_blocks),
    ));
    ctx.report
        .info(format!(
            "checksumming {} materialized view(s) on both sides",
            source_views.len()
        ))
        .await;
    let sums = checksums(ctx, source_url, target_url, work, connections).await?;
    let mut out = Vec::new();
    let mut unpopulated = Vec::new();
    for (name, info) in &source_views {
        let s = sums
            .get(&(Side::Source, name.clone()))
            .copied()
            .unwrap_or_default();
        let t = sums.get(&(Side::Target, name.clone())).copied();
        if target_all.contains_key(name) && !target_views.contains_key(name) {
            unpopulated.push(format!(
                "{name}: materialized view not populated on the target (REFRESH MATERIALIZED VIEW {name} there)"
            ));
            continue;
        }
        if t.is_some_and(|t| t.hash != s.hash || t.rows != s.rows) {
            ctx.report
                .info(format!(
                    "{name}: the copy refreshed it on the target from the copied tables; if the source's was \
                     refreshed before its tables last changed, REFRESH MATERIALIZED VIEW {name} on the source and verify again"
                ))
                .await;
        }
        out.push(TableReport {
            table: name.clone(),
            source_rows: s.rows,
            target_rows: target_views.get(name).map(|_| t.unwrap_or_default().rows),
            checksum_match: t.is_some_and(|t| t.hash == s.hash && t.rows == s.rows),
            source_indexes: info.indexes,
            target_indexes: target_views.get(name).map(|t| t.indexes),
        });
    }
    Ok((out, unpopulated))
}

/// What both ways of comparing check after the tables' rows: tables on the target only,
/// materialized views, large objects, sequences, extensions, a vector search.
async fn finish_compare(
    ctx: &ActionContext,
    (source_url, source): (&DbUrl, &Client),
    (target_url, target): (&DbUrl, &Client),
    source_tables: &BTreeMap<String, TableInfo>,
    target_tables: &BTreeMap<String, TableInfo>,
    (connections, chunk_mb): (usize, u64),
    mut report: VerifyReport,
) -> Result<VerifyReport, Outcome> {
    // With the change capture installed the source takes writes after the copy's snapshot:
    // what only the source's present can be compared with (sequences, views, large objects,
    // a nearest-neighbour search) is left to the final catch-up, which sets and checks it in
    // the freeze. The tables are compared with the copy's figures (`source_checksums`).
    let live = capture_installed(source).await?;
    let (views, unpopulated) = compare_views(
        ctx,
        (source_url, source),
        (target_url, target),
        connections,
        chunk_mb,
    )
    .await?;
    if live {
        let differ: Vec<String> = views
            .iter()
            .filter_map(|v| v.problem())
            .chain(unpopulated)
            .collect();
        if !differ.is_empty() {
            ctx.report
                .info(format!(
                    "materialized views (the source takes writes; the final catch-up refreshes them): {}",
                    differ.join("; ")
                ))
                .await;
        }
    } else {
        report.views = views;
        report.other_problems.extend(unpopulated);
    }
    let (source_objects, target_objects) =
        tokio::try_join!(large_objects(source), large_objects(target))?;
    report.large_objects = LargeObjects {
        source: source_objects.0,
        target: target_objects.0,
        checksum_match: source_objects == target_objects || live,
    };
    if live && source_objects != target_objects {
        ctx.report
            .info(format!(
                "large objects: {} on the source, {} on the target, or their content differs (the source takes writes; the final catch-up copies them)",
                source_objects.0, target_objects.0
            ))
            .await;
    }
    if source_objects.0 > 0 && source_objects == target_objects {
        ctx.report
            .info(format!(
                "large objects: {} on each side, content checksums equal",
                source_objects.0
            ))
            .await;
    }
    for name in target_tables.keys() {
        if !source_tables.contains_key(name) {
            report
                .other_problems
                .push(format!("{name}: on the target only (not in the source)"));
        }
    }
    let source_seq = sequences(source).await?;
    let target_seq = sequences(target).await?;
    for (name, value) in &source_seq {
        match (value, target_seq.get(name)) {
            (_, None) => report
                .other_problems
                .push(format!("sequence {name}: missing on the target")),
            (Some(s), Some(t)) if live && t.is_none_or(|t| t < *s) => {
                ctx.report
                    .info(format!(
                        "sequence {name}: {} on the target, {s} on the source (the source takes writes; the final catch-up sets it)",
                        t.map_or_else(|| "never used".to_string(), |t| t.to_string())
                    ))
                    .await
            }
            (Some(s), Some(t)) if t.is_none_or(|t| t < *s) => report.other_problems.push(format!(
                "sequence {name}: behind on the target ({} < {s}): new rows would reuse ids",
                t.map_or_else(|| "never used".to_string(), |t| t.to_string())
            )),
            _ => {}
        }
    }

    let source_ext = extensions::installed(source).await?;
    let target_ext = extensions::installed(target).await?;
    for ext in &source_ext {
        match target_ext.iter().find(|t| t.name == ext.name) {
            None => report.other_problems.push(format!(
                "extension {} {}: missing on the target",
                ext.name, ext.version
            )),
            Some(t) if t.version != ext.version => {
                ctx.report
                    .info(format!(
                        "extension {}: source {}, target {}",
                        ext.name, ext.version, t.version
                    ))
                    .await
            }
            Some(_) => {}
        }
    }
    if live {
        ctx.report
            .info("nearest-neighbour search not compared: the source takes writes (the final catch-up compares every changed row)")
            .await;
    } else if target_ext.iter().any(|e| e.name == "vector") {
        report
            .other_problems
            .extend(vector_spot_check(source, target, ctx).await?);
    }
    Ok(report)
}

/// Whether the source holds the change capture's log (`db.capture` installed).
async fn capture_installed(source: &Client) -> Result<bool, Outcome> {
    let rows = query(
        source,
        "SELECT to_regclass('cutover_capture.changes') IS NOT NULL",
        "looking for the change capture",
    )
    .await?;
    match rows.first() {
        Some(row) => col(row, 0),
        None => Ok(false),
    }
}

pub async fn run(ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let p: Params = ctx.params()?;
    let source_url = db_url(&p.source, "source", p.ca_bundle.as_deref(), ctx)?;
    let target_url = db_url(&p.target, "target", p.ca_bundle.as_deref(), ctx)?;
    let connections = usize::try_from(p.connections.unwrap_or(4).clamp(1, 32)).unwrap_or(4);
    let recorded: Option<BTreeMap<String, Recorded>> = match &p.source_checksums {
        None => None,
        Some(text) => Some(serde_json::from_str(text).map_err(|e| {
            Outcome::failed(format!(
                "source_checksums is not a parallel copy's `checksums` output: {e}"
            ))
        })?),
    };
    let read_back: Option<BTreeMap<String, Recorded>> = match (&p.target_checksums, &recorded) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(Outcome::failed(
                "target_checksums goes with source_checksums (both from a parallel db.copy)",
            ))
        }
        (Some(text), Some(_)) => Some(serde_json::from_str(text).map_err(|e| {
            Outcome::failed(format!(
                "target_checksums is not a parallel copy's `target_checksums` output: {e}"
            ))
        })?),
    };
    // Figures of another copy than the one on the target now are not used: both sides are
    // read instead.
    let mut refused = Vec::new();
    if let Some(recorded) = &recorded {
        let target = connect(&target_url, "target").await?;
        let figures: Vec<&BTreeMap<String, Recorded>> = [Some(recorded), read_back.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        refused = stale_figures(ctx, &target, &figures).await?;
        if !refused.is_empty() {
            ctx.report
                .info(format!(
                    "the recorded checksums are not of the copy on the target now: {}; reading both databases instead",
                    refused.join("; ")
                ))
                .await;
        }
    }
    let unpack = |figures: &BTreeMap<String, Recorded>| -> BTreeMap<String, Checksum> {
        figures
            .iter()
            .map(|(name, f)| (name.clone(), f.checksum()))
            .collect()
    };
    let (recorded, read_back) = if refused.is_empty() {
        (
            recorded.as_ref().map(unpack),
            read_back.as_ref().map(unpack),
        )
    } else {
        (None, None)
    };
    let report = compare(
        ctx,
        &source_url,
        &target_url,
        connections,
        p.chunk_mb.unwrap_or(64),
        recorded.as_ref(),
        read_back.as_ref(),
    )
    .await?;
    for line in report.lines() {
        ctx.report.info(line).await;
    }
    let rows: i64 = report.tables.iter().map(|t| t.source_rows).sum();
    ctx.report
        .output("tables", report.tables.len().to_string())
        .await;
    ctx.report.output("rows", rows.to_string()).await;
    ctx.report
        .output(
            "report",
            serde_json::to_string(&report.tables).unwrap_or_default(),
        )
        .await;
    ctx.report
        .output("materialized_views", report.views.len().to_string())
        .await;
    ctx.report
        .output("large_objects", report.large_objects.source.to_string())
        .await;
    let problems = report.problems();
    // Said with the outcome: the figures the runbook names were not the ones used.
    let not_used = if refused.is_empty() {
        String::new()
    } else {
        format!(
            " (both databases read: the recorded checksums are not of the copy on the target now — {})",
            refused.join("; ")
        )
    };
    if problems.is_empty() {
        let mut others = String::new();
        if !report.views.is_empty() {
            others.push_str(&format!(", {} materialized view(s)", report.views.len()));
        }
        if report.large_objects.source > 0 {
            others.push_str(&format!(
                ", {} large object(s)",
                report.large_objects.source
            ));
        }
        Ok(Outcome::Succeeded {
            note: Some(format!(
                "{} tables, {rows} rows{others}: counts, checksums, sequences, extensions and indexes match{not_used}",
                report.tables.len(),
            )),
        })
    } else {
        for problem in &problems {
            ctx.report.info(format!("MISMATCH {problem}")).await;
        }
        Ok(Outcome::failed(format!(
            "{} difference(s): {}{not_used}",
            problems.len(),
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_tables_are_cut_into_ranges_with_an_open_end() {
        let mut tables = BTreeMap::new();
        tables.insert(
            "public.big".to_string(),
            TableInfo {
                name: "public.big".into(),
                blocks: 25,
                indexes: 1,
            },
        );
        tables.insert(
            "public.small".to_string(),
            TableInfo {
                name: "public.small".into(),
                blocks: 3,
                indexes: 0,
            },
        );
        let p = pieces(Side::Source, &tables, Some(10));
        let ranges: Vec<_> = p.iter().map(|p| (p.table.as_str(), p.range)).collect();
        assert_eq!(
            ranges,
            vec![
                ("public.big", Some((0, Some(10)))),
                ("public.big", Some((10, Some(20)))),
                ("public.big", Some((20, None))),
                ("public.small", None),
            ]
        );
        assert!(piece_sql(&p[2]).ends_with("WHERE r.ctid >= '(20,0)'::tid"));
    }

    #[test]
    fn a_report_names_each_difference() {
        let ok = TableReport {
            table: "public.users".into(),
            source_rows: 3,
            target_rows: Some(3),
            checksum_match: true,
            source_indexes: 2,
            target_indexes: Some(2),
        };
        assert_eq!(ok.problem(), None);
        let changed = TableReport {
            checksum_match: false,
            target_rows: Some(2),
            ..ok.clone()
        };
        let text = changed.problem().unwrap();
        assert!(text.contains("public.users") && text.contains("3 rows on the source, 2"));
        assert!(text.contains("checksum differs"));
        let missing = TableReport {
            target_rows: None,
            target_indexes: None,
            checksum_match: false,
            ..ok
        };
        assert!(missing.problem().unwrap().contains("missing on the target"));
    }
}
