//! The parallel copy engine (`db.copy` with `mode = "parallel"`, the default): pgcopydb's way.
//!
//! 1. One source connection exports a snapshot (`pg_export_snapshot`) and holds it open: every
//!    read below sees that one moment, so the copy is consistent while Heroku still takes writes.
//! 2. The schema, `pg_dump --schema-only --snapshot`, restored `--section=pre-data` (tables,
//!    types, functions; no indexes yet). Heroku's quirks stay handled by the allow-list.
//! 3. The data: `jobs` workers, each a source connection on the snapshot and a target
//!    connection, take the pieces largest first — a whole table, or a block range of a large
//!    one — and pipe `COPY … TO STDOUT` into `COPY … FROM STDIN` through cutover. On the way
//!    each row's text is hashed: the table's row count and order-independent checksum come from
//!    the source's stream itself, so the source is read once.
//! 4. As soon as a table's pieces are in, it is read back from the target and hashed the same way
//!    (overlapping with the rest of the copy); a table whose rows differ fails the step, named.
//! 5. `--section=post-data` (indexes, constraints, triggers) with `index_jobs` in parallel, then
//!    the sequences set to their values in the snapshot.
//! 6. What is not a table's rows: the materialized views populated on the source refreshed on
//!    the target (the schema-only dump creates them empty), and the large objects copied by
//!    `pg_dump --large-objects | pg_restore` on the same snapshot (their comments kept; owners
//!    and grants left to the target's role, as for every other object of the copy).
//!
//! Every source session reads with row-level security off: a table whose rows a policy would
//! hide from the copy's role is an error, never a smaller table (`db.copy` refuses such tables,
//! named, before it writes anything).
//!
//! The text of a row is the same on both servers: both sessions fix the settings that shape it
//! (UTC, ISO dates, shortest exact floats, hex bytea) when they connect.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Client;

use crate::actions::db::checksum::{hash_rows, Checksum, RowHasher, COLUMNS};
use crate::actions::db::common::{
    bytes_human, col, count_large_objects, query, table_oids, CAPTURE_SCHEMA, USER_RELATION,
};
use crate::actions::db::connection::{self, DbUrl};
use crate::actions::db::tools::restore::{
    follow_restore, restore_command, spawn, tool_command, RestoreLog, Totals,
};
use crate::actions::db::tools::Tool;
use crate::actions::process::stop_group;
use crate::actions::{ActionContext, Outcome};

/// A table bigger than this is cut into block ranges copied in parallel.
const SPLIT_BYTES: u64 = 256 << 20;
/// How much is sent to the target in one CopyData message.
const BATCH: usize = 256 << 10;

/// One table of the copy.
#[derive(Debug, Clone)]
struct Table {
    /// `schema.table`, quoted.
    name: String,
    /// The copied columns, quoted and comma-separated (generated columns are not copied).
    columns: String,
    bytes: u64,
    blocks: u64,
}

/// A unit of work: a table, or a block range of one.
#[derive(Debug, Clone)]
struct Piece {
    table: usize,
    range: Option<(u64, Option<u64>)>,
    bytes: u64,
}

/// What the parallel copy did, for the step's outputs.
pub struct Done {
    pub bytes: u64,
    pub tables: u64,
    pub indexes: u64,
    pub tolerated: Vec<String>,
    pub checksums: BTreeMap<String, Checksum>,
    /// The same tables as read back from the target.
    pub target_checksums: BTreeMap<String, Checksum>,
    pub table_secs: BTreeMap<String, f64>,
    /// From the start until the last row was in (schema and data; not the index builds
    /// still running then, nor post-data): the part of the copy that grows with the bytes.
    pub data_secs: f64,
    pub sequences: usize,
    pub throughput: Vec<u64>,
    /// Each copied table's OID on the target: the table the checksums are of.
    pub target_oids: BTreeMap<String, u32>,
    /// Materialized views refreshed on the target (those populated on the source).
    pub materialized_views: usize,
    /// Large objects copied.
    pub large_objects: u64,
}

/// One unit of work.
#[derive(Debug, Clone)]
enum Work {
    /// Copy a table or a block range of it, hashing the source's rows.
    Copy(Piece),
    /// Read back a block range of a table from the target (all of it copied), hashing.
    ReadBack {
        table: usize,
        range: Option<(u64, Option<u64>)>,
    },
}

/// What a worker reports to the copy's loop.
enum Event {
    Verified {
        table: usize,
        source: Checksum,
        target: Checksum,
    },
    /// A table's data is in: its indexes and constraints can be built.
    ReadyToIndex { table: usize },
    /// A table's data is in, not read back (`read_back = false`): its source checksum.
    Copied { table: usize, source: Checksum },
}

/// Everything the workers share.
struct Shared {
    tables: Vec<Table>,
    /// Popped from the end: follow-ups (read-backs, index builds) are pushed there, ahead of
    /// the copies still waiting (sorted smallest first, so the largest go first).
    queue: Mutex<Vec<Work>>,
    /// Items queued or running; a worker with an empty queue waits while this is above zero.
    outstanding: AtomicU64,
    /// Copy pieces left per table; the last one done queues its read-back and index build.
    left: Mutex<HashMap<usize, usize>>,
    source_sums: Mutex<HashMap<usize, Checksum>>,
    /// Read-back pieces left per table, and their sum so far.
    back: Mutex<HashMap<usize, (usize, Checksum)>>,
    started: Mutex<HashMap<usize, Instant>>,
    finished: Mutex<BTreeMap<String, f64>>,
    bytes: AtomicU64,
    rows: AtomicU64,
    /// For the index builds: pg_restore, the schema archive, each table's post-data list.
    restore: Tool,
    target_url: DbUrl,
    memory: String,
    schema: std::path::PathBuf,
    lists: HashMap<usize, std::path::PathBuf>,
    /// Whether each table is read back from the target and compared.
    read_back: bool,
}

impl Shared {
    fn push(&self, items: Vec<Work>) {
        self.outstanding
            .fetch_add(items.len() as u64, Ordering::SeqCst);
        if let Ok(mut queue) = self.queue.lock() {
            queue.extend(items);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn copy(
    ctx: &ActionContext,
    dump: &Tool,
    restore: &Tool,
    source_url: &DbUrl,
    target_url: &DbUrl,
    memory: &str,
    jobs: usize,
    index_jobs: usize,
    read_back: bool,
    allowed: &[regex::Regex],
    totals: &Totals,
) -> Result<Done, Outcome> {
    let started = Instant::now();
    // 1. The snapshot, held for the whole copy.
    let holder = connect_all_rows(source_url, "source").await?;
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| Outcome::failed(format!("source: {}", connection::explain(&e))))?;
    let snapshot: String = col(
        query(
            &holder,
            "SELECT pg_export_snapshot()",
            "exporting a snapshot",
        )
        .await?
        .first()
        .ok_or_else(|| Outcome::failed("the source exported no snapshot"))?,
        0,
    )?;
    ctx.report
        .info(format!(
            "snapshot {snapshot} exported: every read of the source sees this one moment"
        ))
        .await;
    let tables = plan_tables(&holder).await?;
    let sequences = read_sequences(&holder).await?;
    let views = populated_views(&holder).await?;
    let large_objects = count_large_objects(&holder).await?;

    // 2. The schema, as of the snapshot; pre-data first.
    // Beside the step's log (the private state directory); removed when the copy ends.
    let schema = Removed(vec![ctx.outputs_file.with_extension("schema.dump")]);
    let schema = &schema.0[0];
    let mut dump_cmd = tool_command(dump, source_url);
    dump_cmd
        .args(["--format=custom", "--schema-only", "--no-owner", "--no-acl"])
        // The change capture's log, catalog and function stay on the source.
        .arg(format!("--exclude-schema={CAPTURE_SCHEMA}*"))
        .arg(format!("--snapshot={snapshot}"))
        .arg("--file")
        .arg(schema);
    let mut child = spawn(&mut dump_cmd, dump)?;
    let err = child.stderr.take();
    let said =
        crate::actions::process::pump(err, crate::actions::Stream::Stderr, ctx.report.clone());
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| Outcome::failed(format!("pg_dump: {e}")))?,
        () = ctx.cancel.cancelled() => {
            stop_group(&mut child).await;
            return Err(Outcome::Cancelled);
        }
    };
    said.await;
    if !status.success() {
        return Err(Outcome::failed(format!(
            "pg_dump --schema-only failed ({status}); see its lines above"
        )));
    }
    let mut tolerated = Vec::new();
    let pre = restore_section(
        ctx, restore, target_url, memory, schema, None, "pre-data", 1, totals, allowed,
    )
    .await?;
    tolerated.extend(pre.1);
    // The tables the copy fills, as the target names them: the journal ties its checksums to
    // these (a later copy, or a reset, makes new ones).
    let target_oids = table_oids(&connect(target_url, "target").await?).await?;

    // Each table's own post-data entries (its indexes, constraints, triggers), built as soon
    // as its data is in, overlapping the rest of the copy; the rest (foreign keys…) after.
    // …and so do its triggers on the app's tables (they belong to the tables, not its schema).
    let toc: Vec<String> = list_archive(restore, schema)
        .await?
        .into_iter()
        .filter(|line| !capture_trigger(line))
        .collect();
    let owners = index_owners(&holder).await?;
    let (per_table, rest) = split_post_data(&toc, &tables, &owners);
    let mut lists = HashMap::new();
    for (table, lines) in &per_table {
        let path = schema.with_extension(format!("{table}.list"));
        std::fs::write(&path, lines.join("\n") + "\n")
            .map_err(|e| Outcome::failed(format!("cannot write a restore list: {e}")))?;
        lists.insert(*table, path);
    }
    let rest_list = schema.with_extension("rest.list");
    std::fs::write(&rest_list, rest.join("\n") + "\n")
        .map_err(|e| Outcome::failed(format!("cannot write a restore list: {e}")))?;
    let _lists_gone = Removed(lists.values().cloned().chain([rest_list.clone()]).collect());

    // 3 and 4. The data, hashed on the way; each table read back once it is in.
    let mut pieces: Vec<Piece> = Vec::new();
    let mut left = HashMap::new();
    for (i, t) in tables.iter().enumerate() {
        let cut = table_pieces(i, t, jobs);
        left.insert(i, cut.len());
        pieces.extend(cut);
    }
    // Largest first; the queue pops from the end.
    pieces.sort_by_key(|p| p.bytes);
    let total_bytes: u64 = tables.iter().map(|t| t.bytes).sum();
    ctx.report
        .info(format!(
            "{} table(s), {} on disk, in {} piece(s) over {jobs} stream(s); each table's indexes built as soon as it is in",
            tables.len(),
            bytes_human(total_bytes),
            pieces.len()
        ))
        .await;
    let shared = Arc::new(Shared {
        tables,
        outstanding: AtomicU64::new(pieces.len() as u64),
        queue: Mutex::new(pieces.into_iter().map(Work::Copy).collect()),
        left: Mutex::new(left),
        source_sums: Mutex::new(HashMap::new()),
        back: Mutex::new(HashMap::new()),
        started: Mutex::new(HashMap::new()),
        finished: Mutex::new(BTreeMap::new()),
        bytes: AtomicU64::new(0),
        rows: AtomicU64::new(0),
        restore: restore.clone(),
        target_url: target_url.clone(),
        memory: memory.to_string(),
        schema: schema.to_path_buf(),
        lists,
        read_back,
    });
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..jobs.max(1) {
        let shared = shared.clone();
        let source_url = source_url.clone();
        let snapshot = snapshot.clone();
        let events = events_tx.clone();
        workers.spawn(async move { worker(shared, source_url, snapshot, events).await });
    }
    drop(events_tx);
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let data_started = Instant::now();
    let mut checksums = BTreeMap::new();
    let mut target_checksums = BTreeMap::new();
    let mut mismatched = Vec::new();
    let mut indexed = 0usize;
    let mut index_log = RestoreLog::default();
    let mut failure: Option<String> = None;
    let mut indexers = tokio::task::JoinSet::new();
    let mut to_index: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    let mut data_secs: Option<f64> = None;
    // The tables whose indexes are being built, since when: after the data, the copy's tail.
    let mut building: BTreeMap<usize, Instant> = BTreeMap::new();
    loop {
        while indexers.len() < index_jobs.max(1) && failure.is_none() {
            let Some(table) = to_index.pop_front() else {
                break;
            };
            building.insert(table, Instant::now());
            indexers.spawn(index(shared.clone(), table));
        }
        tokio::select! {
            built = indexers.join_next(), if !indexers.is_empty() => {
                match built {
                    None => {}
                    Some(Err(e)) => { failure.get_or_insert(format!("an index build stopped: {e}")); workers.abort_all(); }
                    Some(Ok(Err(e))) => { failure.get_or_insert(e); workers.abort_all(); }
                    Some(Ok(Ok((table, log, status)))) => {
                        indexed += 1;
                        building.remove(&table);
                        let name = &shared.tables[table].name;
                        let (refused, tolerated_now) = log.judge(allowed);
                        for t in &tolerated_now {
                            ctx.report.info(format!("tolerated restore error: {}", t.text())).await;
                            tolerated.push(t.text());
                        }
                        if let Some(first) = refused.first() {
                            failure.get_or_insert(format!("{name}: building its indexes and constraints: {}", first.text()));
                            workers.abort_all();
                        } else if !status.success() && log.ignored != Some(log.errors.len() as u64) {
                            failure.get_or_insert(format!("{name}: pg_restore of its indexes and constraints failed ({status})"));
                            workers.abort_all();
                        } else {
                            ctx.report.info(format!("{name}: {} index(es) and {} constraint(s) built", log.indexes, log.constraints)).await;
                        }
                        index_log.indexes += log.indexes;
                        index_log.constraints += log.constraints;
                    }
                }
            }
            joined = workers.join_next(), if !workers.is_empty() => {
                match joined {
                    Some(Ok(Ok(()))) | None => {}
                    Some(Ok(Err(e))) => { failure.get_or_insert(e); workers.abort_all(); }
                    Some(Err(e)) => { failure.get_or_insert(format!("a copy stream stopped: {e}")); workers.abort_all(); }
                }
            }
            Some(event) = events.recv() => match event {
                Event::Verified { table, source, target } => {
                    let name = shared.tables[table].name.clone();
                    if source == target {
                        ctx.report.info(format!("{name}: {} rows copied and read back, checksums equal", source.rows)).await;
                    } else {
                        ctx.report.info(format!("{name}: DIFFERS — source {} rows, target {} rows, checksum {}", source.rows, target.rows, if source.sum == target.sum { "equal" } else { "different" })).await;
                        mismatched.push(name.clone());
                    }
                    target_checksums.insert(name.clone(), target);
                    checksums.insert(name, source);
                }
                Event::ReadyToIndex { table } => to_index.push_back(table),
                Event::Copied { table, source } => {
                    let name = shared.tables[table].name.clone();
                    ctx.report.info(format!("{name}: {} rows copied (not read back: read_back = false)", source.rows)).await;
                    checksums.insert(name, source);
                }
            },
            _ = tick.tick() => {
                let done = shared.bytes.load(Ordering::Relaxed);
                samples.push(done);
                let secs = data_started.elapsed().as_secs_f64().max(0.001);
                let rate = done as f64 / secs;
                let eta = if rate > 0.0 && total_bytes > done { format!(", about {} left", crate::clock::short(Duration::from_secs_f64((total_bytes - done) as f64 / rate))) } else { String::new() };
                if let (Some(data), false) = (data_secs, building.is_empty()) {
                    // Every row is in: what is left is index builds, said by table and age.
                    let running: Vec<String> = building.iter().map(|(t, since)| format!("{} ({})", shared.tables[*t].name, crate::clock::short(since.elapsed()))).collect();
                    ctx.report.progress(indexed as u64, Some(shared.lists.len().max(1) as u64), "tables indexed", Some(format!(
                        "data in after {}; building the indexes of {}; {}/{} tables indexed",
                        crate::clock::short(Duration::from_secs_f64(data)),
                        running.join(", "),
                        indexed,
                        shared.lists.len()
                    ))).await;
                } else {
                    ctx.report.progress(
                        done.min(total_bytes),
                        Some(total_bytes.max(1)),
                        "bytes",
                        Some(format!(
                            "data: {} of ~{} ({}/s), {} rows, {}/{} tables verified, {}/{} indexed{eta}",
                            bytes_human(done),
                            bytes_human(total_bytes),
                            bytes_human(rate as u64),
                            shared.rows.load(Ordering::Relaxed),
                            checksums.len(),
                            shared.tables.len(),
                            indexed,
                            shared.lists.len()
                        )),
                    ).await;
                }
            }
            () = ctx.cancel.cancelled() => {
                workers.abort_all();
                indexers.abort_all();
                return Err(Outcome::Cancelled);
            }
        }
        if failure.is_some() {
            indexers.abort_all();
        }
        if data_secs.is_none() && workers.is_empty() && events.is_closed() {
            data_secs = Some(started.elapsed().as_secs_f64());
        }
        // Done when every worker and index build has ended and all they said is handled.
        if workers.is_empty()
            && events.is_empty()
            && events.is_closed()
            && indexers.is_empty()
            && (to_index.is_empty() || failure.is_some())
        {
            break;
        }
    }
    samples.push(shared.bytes.load(Ordering::Relaxed));
    if let Some(failure) = failure {
        return Err(Outcome::failed(failure));
    }
    if !mismatched.is_empty() {
        return Err(Outcome::failed(format!(
            "the copy differs from the source in {} table(s): {} (rows or content checksum)",
            mismatched.len(),
            mismatched.join(", ")
        )));
    }
    if checksums.len() != shared.tables.len() {
        return Err(Outcome::failed(format!(
            "only {} of {} tables were copied and read back",
            checksums.len(),
            shared.tables.len()
        )));
    }
    ctx.report
        .info(format!(
            "data: {} in {} ({}/s), every table read back and equal, {} table(s) indexed on the way",
            bytes_human(shared.bytes.load(Ordering::Relaxed)),
            crate::clock::short(data_started.elapsed()),
            bytes_human((shared.bytes.load(Ordering::Relaxed) as f64 / data_started.elapsed().as_secs_f64().max(0.001)) as u64),
            indexed
        ))
        .await;

    // 5. The rest of post-data (foreign keys, …) in parallel, then the sequences.
    let post = restore_section(
        ctx,
        restore,
        target_url,
        memory,
        schema,
        Some(&rest_list),
        "post-data",
        index_jobs,
        totals,
        allowed,
    )
    .await?;
    tolerated.extend(post.1);
    let target = connect(target_url, "target").await?;
    for (name, value, called) in &sequences {
        target
            .query(
                "SELECT setval($1::text::regclass, $2, $3)",
                &[name, value, called],
            )
            .await
            .map_err(|e| {
                Outcome::failed(format!(
                    "setting sequence {name}: {}",
                    connection::explain(&e)
                ))
            })?;
    }
    ctx.report
        .info(format!(
            "{} sequence(s) set to their values in the snapshot",
            sequences.len()
        ))
        .await;

    // 6. What is not a table's rows.
    let refreshed = refresh_views(ctx, &target, &views, memory).await?;
    let copied_objects = if large_objects > 0 {
        copy_large_objects(
            ctx, dump, restore, source_url, target_url, &snapshot, allowed,
        )
        .await?;
        let on_target = count_large_objects(&target).await?;
        if on_target != large_objects {
            return Err(Outcome::failed(format!(
                "large objects: {large_objects} in the snapshot, {on_target} on the target after their restore"
            )));
        }
        ctx.report
            .info(format!("{large_objects} large object(s) copied"))
            .await;
        large_objects
    } else {
        0
    };
    drop(holder);
    ctx.report
        .info(format!(
            "whole copy in {}",
            crate::clock::short(started.elapsed())
        ))
        .await;
    let finished = shared
        .finished
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    Ok(Done {
        bytes: shared.bytes.load(Ordering::Relaxed),
        tables: shared.tables.len() as u64,
        indexes: post.0.indexes + post.0.constraints + index_log.indexes + index_log.constraints,
        tolerated,
        checksums,
        target_checksums,
        table_secs: finished,
        data_secs: data_secs.unwrap_or_else(|| data_started.elapsed().as_secs_f64()),
        sequences: sequences.len(),
        throughput: samples,
        target_oids,
        materialized_views: refreshed,
        large_objects: copied_objects,
    })
}

async fn connect(url: &DbUrl, side: &str) -> Result<Client, Outcome> {
    url.connect()
        .await
        .map_err(|e| Outcome::failed(format!("{side}: {e}")))
}

async fn connect_all_rows(url: &DbUrl, side: &str) -> Result<Client, Outcome> {
    url.connect_all_rows()
        .await
        .map_err(|e| Outcome::failed(format!("{side}: {e}")))
}

/// The materialized views populated on the source, in the snapshot.
pub(crate) async fn populated_views(source: &Client) -> Result<Vec<String>, Outcome> {
    let rows = query(
        source,
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'm' AND c.relispopulated AND {USER_RELATION} ORDER BY 1"
        ),
        "listing the materialized views",
    )
    .await?;
    rows.iter().map(|r| col(r, 0)).collect()
}

/// Refreshes on the target the materialized views the source had populated, once their tables
/// hold the copied rows. A view over another view waits for it: a refresh that finds another
/// view not yet populated is tried again after the others.
async fn refresh_views(
    ctx: &ActionContext,
    target: &Client,
    views: &[String],
    memory: &str,
) -> Result<usize, Outcome> {
    if views.is_empty() {
        return Ok(0);
    }
    target
        .batch_execute(&format!("SET maintenance_work_mem = '{memory}'"))
        .await
        .map_err(|e| Outcome::failed(format!("target: {}", connection::explain(&e))))?;
    let mut pending: Vec<&String> = views.iter().collect();
    let mut refreshed = 0;
    while !pending.is_empty() {
        let mut waiting = Vec::new();
        let mut last = String::new();
        for view in &pending {
            let started = Instant::now();
            let statement = format!("REFRESH MATERIALIZED VIEW {view}");
            let done = tokio::select! {
                done = target.batch_execute(&statement) => done,
                () = ctx.cancel.cancelled() => return Err(Outcome::Cancelled),
            };
            match done {
                Ok(()) => {
                    refreshed += 1;
                    ctx.report
                        .info(format!(
                            "{view}: materialized view refreshed on the target ({})",
                            crate::clock::short(started.elapsed())
                        ))
                        .await;
                }
                Err(e)
                    if e.code()
                        == Some(
                            &tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        ) =>
                {
                    last = connection::explain(&e);
                    waiting.push(*view);
                }
                Err(e) => {
                    return Err(Outcome::failed(format!(
                        "{view}: refreshing the materialized view on the target: {}",
                        connection::explain(&e)
                    )))
                }
            }
        }
        if waiting.len() == pending.len() {
            return Err(Outcome::failed(format!(
                "materialized views {}: cannot be refreshed on the target: {last}",
                waiting
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        pending = waiting;
    }
    ctx.report
        .info(format!(
            "{refreshed} materialized view(s) refreshed from the copied tables"
        ))
        .await;
    Ok(refreshed)
}

/// The large objects, `pg_dump --large-objects --data-only` of no table on the copy's snapshot
/// streamed into `pg_restore` (their comments come along; owners and grants are the target
/// role's, as for everything else the copy restores).
async fn copy_large_objects(
    ctx: &ActionContext,
    dump: &Tool,
    restore: &Tool,
    source_url: &DbUrl,
    target_url: &DbUrl,
    snapshot: &str,
    allowed: &[regex::Regex],
) -> Result<(), Outcome> {
    let mut dump_cmd = tool_command(dump, source_url);
    dump_cmd
        .args([
            "--format=custom",
            "--data-only",
            "--large-objects",
            "--exclude-table-data=*.*",
            "--no-owner",
            "--no-acl",
        ])
        .arg(format!("--snapshot={snapshot}"))
        .stdout(std::process::Stdio::piped());
    let mut dumping = spawn(&mut dump_cmd, dump)?;
    let Some(archive) = dumping
        .stdout
        .take()
        .and_then(|out| out.into_owned_fd().ok())
        .map(std::process::Stdio::from)
    else {
        stop_group(&mut dumping).await;
        return Err(Outcome::failed("lost pg_dump's output"));
    };
    let dump_said = crate::actions::process::pump(
        dumping.stderr.take(),
        crate::actions::Stream::Stderr,
        ctx.report.clone(),
    );
    let mut command = tool_command(restore, target_url);
    command
        .args(["--no-owner", "--no-acl", "--verbose", "--dbname"])
        .arg(&target_url.database)
        .stdin(archive);
    let mut restoring = match spawn(&mut command, restore) {
        Ok(child) => child,
        Err(o) => {
            stop_group(&mut dumping).await;
            return Err(o);
        }
    };
    let Some(stderr) = restoring.stderr.take() else {
        stop_group(&mut dumping).await;
        stop_group(&mut restoring).await;
        return Err(Outcome::failed("lost pg_restore's stderr"));
    };
    let totals = Totals {
        tables: 0,
        indexes: 0,
    };
    let bytes = AtomicU64::new(0);
    let Some(log) = follow_restore(
        ctx,
        stderr,
        &totals,
        &bytes,
        Instant::now(),
        "large objects",
    )
    .await
    else {
        stop_group(&mut dumping).await;
        stop_group(&mut restoring).await;
        return Err(Outcome::Cancelled);
    };
    dump_said.await;
    let dumped = dumping
        .wait()
        .await
        .map_err(|e| Outcome::failed(format!("lost track of pg_dump: {e}")))?;
    let restored = restoring
        .wait()
        .await
        .map_err(|e| Outcome::failed(format!("lost track of pg_restore: {e}")))?;
    if !dumped.success() {
        return Err(Outcome::failed(format!(
            "pg_dump of the large objects failed ({dumped}); see its lines above"
        )));
    }
    let (refused, tolerated) = log.judge(allowed);
    for t in &tolerated {
        ctx.report
            .info(format!("tolerated restore error: {}", t.text()))
            .await;
    }
    if let Some(first) = refused.first() {
        return Err(Outcome::failed(format!(
            "restoring the large objects: {}",
            first.text()
        )));
    }
    if !restored.success() && log.ignored != Some(log.errors.len() as u64) {
        return Err(Outcome::failed(format!(
            "pg_restore of the large objects failed ({restored}); see its lines above"
        )));
    }
    Ok(())
}

/// The source's tables with their copied columns and size, in the snapshot.
async fn plan_tables(source: &Client) -> Result<Vec<Table>, Outcome> {
    let rows = query(
        source,
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname), {COLUMNS}, \
                    pg_relation_size(c.oid)::bigint, \
                    (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'r' AND {USER_RELATION} ORDER BY 1"
        ),
        "listing the tables to copy",
    )
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        let bytes: i64 = col(row, 2)?;
        let blocks: i64 = col(row, 3)?;
        out.push(Table {
            name: col(row, 0)?,
            columns: col(row, 1)?,
            bytes: u64::try_from(bytes).unwrap_or(0),
            blocks: u64::try_from(blocks).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Each sequence's value in the snapshot: `(name, last_value, is_called)`.
pub(crate) async fn read_sequences(source: &Client) -> Result<Vec<(String, i64, bool)>, Outcome> {
    let rows = query(
        source,
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'S' AND {USER_RELATION} ORDER BY 1"
        ),
        "listing sequences",
    )
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        let name: String = col(row, 0)?;
        let value = query(
            source,
            &format!("SELECT last_value, is_called FROM {name}"),
            "reading a sequence",
        )
        .await?;
        let Some(value) = value.first() else { continue };
        out.push((name, col(value, 0)?, col(value, 1)?));
    }
    Ok(out)
}

/// A table as one piece, or block ranges when it is large (the last range open-ended).
fn table_pieces(index: usize, t: &Table, jobs: usize) -> Vec<Piece> {
    if t.bytes <= SPLIT_BYTES || t.blocks < 2 || jobs < 2 {
        return vec![Piece {
            table: index,
            range: None,
            bytes: t.bytes,
        }];
    }
    let parts = (t.bytes / SPLIT_BYTES + 1).max(jobs as u64);
    let size = t.blocks.div_ceil(parts).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < t.blocks {
        let end = start + size;
        out.push(Piece {
            table: index,
            range: Some((start, (end < t.blocks).then_some(end))),
            bytes: t.bytes / parts,
        });
        start = end;
    }
    out
}

fn select_sql(t: &Table, range: Option<(u64, Option<u64>)>) -> String {
    let filter = match range {
        None => String::new(),
        Some((start, None)) => format!(" WHERE ctid >= '({start},0)'::tid"),
        Some((start, Some(end))) => {
            format!(" WHERE ctid >= '({start},0)'::tid AND ctid < '({end},0)'::tid")
        }
    };
    format!("SELECT {} FROM ONLY {}{filter}", t.columns, t.name)
}

/// Takes work until none is left and none is running: copies (COPY out of the source on the
/// snapshot into the target, each row hashed); once a table's copies are in, its read-back
/// ranges and its index build go ahead of the remaining copies.
async fn worker(
    shared: Arc<Shared>,
    source_url: DbUrl,
    snapshot: String,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let source = source_url
        .connect_all_rows()
        .await
        .map_err(|e| format!("source: {e}"))?;
    source
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'"
        ))
        .await
        .map_err(|e| format!("source: joining the snapshot: {}", connection::explain(&e)))?;
    let target = shared
        .target_url
        .connect()
        .await
        .map_err(|e| format!("target: {e}"))?;
    loop {
        let next = shared.queue.lock().ok().and_then(|mut q| q.pop());
        let Some(work) = next else {
            if shared.outstanding.load(Ordering::SeqCst) == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let result = match work {
            Work::Copy(piece) => copied(&shared, &source, &target, piece, &events).await,
            Work::ReadBack { table, range } => {
                read_back_range(&shared, &target, table, range, &events).await
            }
        };
        shared.outstanding.fetch_sub(1, Ordering::SeqCst);
        result?;
    }
}

/// Copies one piece; the last piece of a table queues its read-back and its index build.
async fn copied(
    shared: &Shared,
    source: &Client,
    target: &Client,
    piece: Piece,
    events: &tokio::sync::mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let table = &shared.tables[piece.table];
    if let Ok(mut started) = shared.started.lock() {
        started.entry(piece.table).or_insert_with(Instant::now);
    }
    let sum = copy_piece(source, target, table, piece.range, shared)
        .await
        .map_err(|e| format!("{}: {e}", table.name))?;
    let all_in = {
        let mut sums = shared.source_sums.lock().map_err(|_| "lost a lock")?;
        sums.entry(piece.table).or_default().add(sum);
        let mut left = shared.left.lock().map_err(|_| "lost a lock")?;
        let n = left.entry(piece.table).or_insert(1);
        *n = n.saturating_sub(1);
        *n == 0
    };
    if !all_in {
        return Ok(());
    }
    let copied_in = shared
        .started
        .lock()
        .ok()
        .and_then(|s| s.get(&piece.table).map(|t| t.elapsed().as_secs_f64()))
        .unwrap_or_default();
    if let Ok(mut finished) = shared.finished.lock() {
        finished.insert(table.name.clone(), copied_in);
    }
    if shared.lists.contains_key(&piece.table) {
        let _ = events.send(Event::ReadyToIndex { table: piece.table });
    }
    if !shared.read_back {
        let source_sum = shared
            .source_sums
            .lock()
            .ok()
            .and_then(|s| s.get(&piece.table).copied())
            .unwrap_or_default();
        let _ = events.send(Event::Copied {
            table: piece.table,
            source: source_sum,
        });
        return Ok(());
    }
    // The target's own block ranges: its rows sit elsewhere than on the source.
    let blocks: i64 = target
        .query_one(
            "SELECT (pg_relation_size($1::text::regclass) / current_setting('block_size')::int)::bigint",
            &[&table.name],
        )
        .await
        .map_err(|e| format!("{}: {}", table.name, connection::explain(&e)))?
        .get(0);
    let on_target = Table {
        blocks: u64::try_from(blocks).unwrap_or(0),
        ..table.clone()
    };
    let follow: Vec<Work> = table_pieces(piece.table, &on_target, 2)
        .into_iter()
        .map(|p| Work::ReadBack {
            table: p.table,
            range: p.range,
        })
        .collect();
    if let Ok(mut back) = shared.back.lock() {
        back.insert(piece.table, (follow.len(), Checksum::default()));
    }
    shared.push(follow);
    Ok(())
}

async fn read_back_range(
    shared: &Shared,
    target: &Client,
    table: usize,
    range: Option<(u64, Option<u64>)>,
    events: &tokio::sync::mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let t = &shared.tables[table];
    let sum = if t.columns.is_empty() {
        Checksum::default()
    } else {
        hash_rows(target, &select_sql(t, range))
            .await
            .map_err(|e| format!("{}: reading it back: {e}", t.name))?
    };
    let done = {
        let mut back = shared.back.lock().map_err(|_| "lost a lock")?;
        let entry = back.entry(table).or_insert((1, Checksum::default()));
        entry.1.add(sum);
        entry.0 = entry.0.saturating_sub(1);
        (entry.0 == 0).then_some(entry.1)
    };
    if let Some(target_sum) = done {
        let source_sum = shared
            .source_sums
            .lock()
            .ok()
            .and_then(|s| s.get(&table).copied())
            .unwrap_or_default();
        let _ = events.send(Event::Verified {
            table,
            source: source_sum,
            target: target_sum,
        });
    }
    Ok(())
}

/// One table's post-data entries, by pg_restore with its list (beside the copy streams, as
/// pgcopydb's index jobs are).
async fn index(
    shared: Arc<Shared>,
    table: usize,
) -> Result<(usize, RestoreLog, std::process::ExitStatus), String> {
    let Some(list) = shared.lists.get(&table) else {
        return Err(format!("no restore list for table {table}"));
    };
    let mut command = restore_command(&shared.restore, &shared.target_url, &shared.memory);
    command
        .arg("--section=post-data")
        .arg("--use-list")
        .arg(list)
        .arg(&shared.schema)
        .stderr(std::process::Stdio::piped());
    let out = command
        .output()
        .await
        .map_err(|e| format!("cannot start pg_restore: {e}"))?;
    let mut log = RestoreLog::default();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        log.read(line);
    }
    Ok((table, log, out.status))
}

async fn copy_piece(
    source: &Client,
    target: &Client,
    table: &Table,
    range: Option<(u64, Option<u64>)>,
    shared: &Shared,
) -> Result<Checksum, String> {
    if table.columns.is_empty() {
        return Ok(Checksum::default());
    }
    let out = source
        .copy_out(&format!("COPY ({}) TO STDOUT", select_sql(table, range)))
        .await
        .map_err(|e| connection::explain(&e))?;
    let sink = target
        .copy_in::<_, bytes::Bytes>(&format!(
            "COPY {} ({}) FROM STDIN",
            table.name, table.columns
        ))
        .await
        .map_err(|e| connection::explain(&e))?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    let mut hasher = RowHasher::default();
    let mut batch = bytes::BytesMut::with_capacity(BATCH);
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(|e| connection::explain(&e))?;
        hasher.feed(&chunk);
        shared
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        batch.extend_from_slice(&chunk);
        if batch.len() >= BATCH {
            sink.send(batch.split().freeze())
                .await
                .map_err(|e| connection::explain(&e))?;
        }
    }
    if !batch.is_empty() {
        sink.send(batch.split().freeze())
            .await
            .map_err(|e| connection::explain(&e))?;
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(|e| connection::explain(&e))?;
    let sum = hasher.finish()?;
    shared.rows.fetch_add(sum.rows, Ordering::Relaxed);
    Ok(sum)
}

/// The archive's table of contents (`pg_restore --list`).
async fn list_archive(restore: &Tool, archive: &Path) -> Result<Vec<String>, Outcome> {
    let out = tokio::process::Command::new(&restore.path)
        .arg("--list")
        .arg(archive)
        .env("LC_ALL", "C")
        .output()
        .await
        .map_err(|e| Outcome::failed(format!("pg_restore --list: {e}")))?;
    if !out.status.success() {
        return Err(Outcome::failed(format!(
            "pg_restore --list failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Index `schema.name` → the table it belongs to (`schema.table`, unquoted as the list has it).
async fn index_owners(source: &Client) -> Result<HashMap<String, String>, Outcome> {
    let rows = query(
        source,
        &format!(
            "SELECT n.nspname || '.' || ic.relname, n.nspname || '.' || c.relname \
               FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
               JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'r' AND {USER_RELATION}"
        ),
        "listing the indexes",
    )
    .await?;
    let mut out = HashMap::new();
    for row in &rows {
        out.insert(col(row, 0)?, col(row, 1)?);
    }
    Ok(out)
}

/// Whether a line of the archive's list is one of the change capture's triggers
/// (`ID; CATALOG OID TRIGGER SCHEMA TABLE NAME OWNER`, its name `cutover_capture_…`).
fn capture_trigger(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    matches!(words.get(3..), Some(["TRIGGER", _, _, name, ..]) if name.starts_with(CAPTURE_SCHEMA))
}

/// Post-data entries of the archive's list that belong to one table (its indexes, its
/// constraints but foreign keys, its triggers), by table; every other line goes in the rest.
fn split_post_data(
    toc: &[String],
    tables: &[Table],
    index_owner: &HashMap<String, String>,
) -> (HashMap<usize, Vec<String>>, Vec<String>) {
    // The list names tables unquoted: `schema table`.
    let by_name: HashMap<String, usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.replace('"', ""), i))
        .collect();
    let mut per_table: HashMap<usize, Vec<String>> = HashMap::new();
    let mut rest = Vec::new();
    for line in toc {
        // "ID; CATALOG OID TYPE SCHEMA NAME… OWNER"
        let words: Vec<&str> = line.split_whitespace().collect();
        let owner_of = match words.get(3..).unwrap_or_default() {
            ["INDEX", schema, name, ..] => index_owner.get(&format!("{schema}.{name}")).cloned(),
            ["CONSTRAINT", schema, table, ..] | ["TRIGGER", schema, table, ..] => {
                Some(format!("{schema}.{table}"))
            }
            _ => None,
        };
        match owner_of.and_then(|t| by_name.get(&t)) {
            Some(table) => per_table.entry(*table).or_default().push(line.clone()),
            None => rest.push(line.clone()),
        }
    }
    (per_table, rest)
}

/// Working files (the schema archive, the restore lists), removed however the copy ends.
struct Removed(Vec<std::path::PathBuf>);

impl Drop for Removed {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn restore_section(
    ctx: &ActionContext,
    restore: &Tool,
    target: &DbUrl,
    memory: &str,
    archive: &Path,
    list: Option<&Path>,
    section: &str,
    jobs: usize,
    totals: &Totals,
    allowed: &[regex::Regex],
) -> Result<(RestoreLog, Vec<String>), Outcome> {
    let mut command = restore_command(restore, target, memory);
    command.arg(format!("--section={section}"));
    if let Some(list) = list {
        command.arg("--use-list").arg(list);
    }
    if jobs > 1 {
        command.arg(format!("--jobs={jobs}"));
    }
    command.arg(archive);
    let mut child = spawn(&mut command, restore)?;
    let Some(stderr) = child.stderr.take() else {
        stop_group(&mut child).await;
        return Err(Outcome::failed("lost pg_restore's stderr"));
    };
    let bytes = AtomicU64::new(0);
    let Some(log) = follow_restore(ctx, stderr, totals, &bytes, Instant::now(), section).await
    else {
        stop_group(&mut child).await;
        return Err(Outcome::Cancelled);
    };
    let status = child
        .wait()
        .await
        .map_err(|e| Outcome::failed(format!("lost track of pg_restore: {e}")))?;
    let (refused, tolerated) = log.judge(allowed);
    let tolerated: Vec<String> = tolerated.iter().map(|e| e.text()).collect();
    for t in &tolerated {
        ctx.report
            .info(format!("tolerated restore error: {t}"))
            .await;
    }
    if !refused.is_empty() {
        let first: Vec<String> = refused.iter().take(3).map(|e| e.text()).collect();
        return Err(Outcome::failed(format!(
            "pg_restore --section={section} reported {} error(s) not on the allow-list: {}",
            refused.len(),
            first.join("; ")
        )));
    }
    if !status.success() && log.ignored != Some(log.errors.len() as u64) {
        return Err(Outcome::failed(format!(
            "pg_restore --section={section} failed ({status}); see its lines above"
        )));
    }
    Ok((log, tolerated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tables_post_data_is_its_own_and_foreign_keys_wait() {
        let table = |name: &str| Table {
            name: name.into(),
            columns: "id".into(),
            bytes: 0,
            blocks: 0,
        };
        let tables = [table("public.users"), table("public.documents")];
        let owners = HashMap::from([
            (
                "public.documents_embedding_idx".to_string(),
                "public.documents".to_string(),
            ),
            (
                "heroku_ext.stray_idx".to_string(),
                "heroku_ext.stray".to_string(),
            ),
        ]);
        let toc: Vec<String> = [
            "3310; 2606 16400 CONSTRAINT public users users_pkey postgres",
            "3320; 1259 16410 INDEX public documents_embedding_idx postgres",
            "3330; 2606 16420 FK CONSTRAINT public documents documents_user_id_fkey postgres",
            "3340; 2620 16430 TRIGGER public users users_audit postgres",
            "3350; 1259 16440 INDEX heroku_ext stray_idx postgres",
            "214; 1259 16390 TABLE public users postgres",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (per_table, rest) = split_post_data(&toc, &tables, &owners);
        assert_eq!(per_table[&0], vec![toc[0].clone(), toc[3].clone()]);
        assert_eq!(per_table[&1], vec![toc[1].clone()]);
        assert_eq!(rest, vec![toc[2].clone(), toc[4].clone(), toc[5].clone()]);
    }

    #[test]
    fn large_tables_are_cut_into_block_ranges_with_an_open_end() {
        let t = Table {
            name: "public.events".into(),
            columns: "id".into(),
            bytes: 600 << 20,
            blocks: 76_800,
        };
        let pieces = table_pieces(0, &t, 2);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0].range, Some((0, Some(25_600))));
        assert_eq!(pieces[2].range, Some((51_200, None)));
        assert_eq!(table_pieces(0, &t, 1).len(), 1);
        let small = Table {
            bytes: 1 << 20,
            blocks: 128,
            ..t
        };
        assert_eq!(table_pieces(0, &small, 4).len(), 1);
        assert_eq!(
            select_sql(&small, Some((10, Some(20)))),
            "SELECT id FROM ONLY public.events WHERE ctid >= '(10,0)'::tid AND ctid < '(20,0)'::tid"
        );
    }
}
