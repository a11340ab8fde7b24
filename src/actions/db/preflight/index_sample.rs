//! The preflight's sample of the expensive index builds: a pgvector HNSW graph (or an IVFFlat,
//! GIN or GiST index) does not grow as a sort does. On 1536-dimension embeddings an HNSW build
//! here went from 1.5 s for 3,000 rows to 51 s for 30,000 (n^1.5), and to 157 s when its graph
//! no longer fitted in `maintenance_work_mem` — so the freeze's prediction measures them.
//!
//! For each such index (the four on the largest tables), rows sampled from the source table
//! are copied into a scratch table on the target and the index is built on an eighth, a
//! quarter, a half and all of the sample (twice each), with the copy's `maintenance_work_mem`; the build
//! time's growth `t ∝ n^k` is fitted and carried to the table's rows. The index's size per
//! row says how much memory its whole build needs: an HNSW graph larger than the setting is
//! built on disk, and the sample measures that too (once more, with the setting lowered
//! below the sample's graph). All of it inside one transaction on the target, rolled back:
//! the scratch schema, the table, and any extension the indexes need that the target did not
//! have yet are gone afterwards. Read-only on the source.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_postgres::{Client, Transaction};

use crate::actions::db::common::{bytes_human, ident, USER_RELATION};
use crate::actions::db::connection::{explain, DbUrl};

/// Rows kept from the source per index by default, and the bytes they may take (text COPY).
pub const SAMPLE_ROWS: u64 = 4_000;
const SAMPLE_BYTES: usize = 64 << 20;
/// Fewer rows than this are not worth a fit (the build is instant).
const MIN_ROWS: u64 = 200;
/// Indexes sampled at most (those on the largest tables).
const MAX_INDEXES: i64 = 4;
/// Each size is built this many times (the quickest counts), unless a build takes longer
/// than [`REPEAT_UNDER`].
const REPEATS: usize = 2;
const REPEAT_UNDER: Duration = Duration::from_secs(5);
/// One sample build may take this long at most.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60);

/// What the sample found for one index.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IndexBuild {
    /// `schema.index`.
    pub index: String,
    pub table: String,
    /// The access method: hnsw, ivfflat, gin, gist…
    pub kind: String,
    /// The table's rows on the source.
    pub rows: u64,
    pub sample_rows: Vec<u64>,
    pub sample_secs: Vec<f64>,
    /// `t ∝ n^exponent`, fitted on the sample (between 1 and 2).
    pub exponent: f64,
    /// The whole build's predicted time, spilling included.
    pub predicted_secs: f64,
    /// The index's size for the whole table, from the sample's size per row.
    pub index_bytes: u64,
    /// `maintenance_work_mem` of the builds.
    pub memory_bytes: u64,
    /// For an HNSW graph larger than `memory_bytes` whose sample fitted: how much slower the
    /// sample built on disk. `None` when the sample's own graph did not fit (it measured that).
    pub spill_factor: Option<f64>,
}

impl IndexBuild {
    /// An HNSW graph that does not fit in `maintenance_work_mem` (pgvector then builds on disk).
    pub fn spills(&self) -> bool {
        self.kind == "hnsw" && self.index_bytes > self.memory_bytes
    }

    /// One line for the preflight's report.
    pub fn describe(&self) -> String {
        let sample = |v: &[f64]| {
            v.iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        let rows: Vec<String> = self.sample_rows.iter().map(u64::to_string).collect();
        let mut text = format!(
            "{} ({} on {}, {} rows): about {} (built on {} rows in {}s here: ×n^{:.2}); {} for all rows",
            self.index,
            self.kind,
            self.table,
            self.rows,
            crate::clock::short(Duration::from_secs_f64(self.predicted_secs)),
            rows.join("/"),
            sample(&self.sample_secs),
            self.exponent,
            bytes_human(self.index_bytes),
        );
        if self.spills() {
            let slower = match self.spill_factor {
                Some(factor) => format!("{factor:.1}× slower in the sample"),
                None => "as the sample was".to_string(),
            };
            text.push_str(&format!(
                ", more than maintenance_work_mem ({}): pgvector builds it on disk, {slower} — give db.copy a maintenance_work_mem of at least {}",
                bytes_human(self.memory_bytes),
                bytes_human(self.index_bytes + self.index_bytes / 4),
            ));
        } else if self.kind == "hnsw" {
            text.push_str(&format!(
                ", within maintenance_work_mem ({})",
                bytes_human(self.memory_bytes)
            ));
        }
        text
    }
}

/// `t ∝ n^k` by least squares on the logarithms, `k` kept between 1 (linear) and 2.
pub fn fit_exponent(points: &[(u64, f64)]) -> f64 {
    let logs: Vec<(f64, f64)> = points
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, t)| ((*n as f64).ln(), t.max(0.001).ln()))
        .collect();
    if logs.len() < 2 {
        return 1.0;
    }
    let count = logs.len() as f64;
    let mean_x = logs.iter().map(|p| p.0).sum::<f64>() / count;
    let mean_y = logs.iter().map(|p| p.1).sum::<f64>() / count;
    let covariance: f64 = logs.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let variance: f64 = logs.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if variance <= f64::EPSILON {
        return 1.0;
    }
    (covariance / variance).clamp(1.0, 2.0)
}

/// The build time for `rows`, from the sample's largest build and the fitted exponent.
pub fn extrapolate(rows: u64, sample_rows: u64, sample_secs: f64, exponent: f64) -> f64 {
    if sample_rows == 0 {
        return 0.0;
    }
    let ratio = rows as f64 / sample_rows as f64;
    if ratio <= 1.0 {
        sample_secs * ratio
    } else {
        sample_secs * ratio.powf(exponent)
    }
}

/// The statement that builds `definition` (the source's `pg_get_indexdef`, schema-qualified)
/// on the scratch table instead of `table`: everything from `USING` on is kept (method,
/// columns and operator classes, storage parameters, predicate). `None` when the definition
/// does not have the expected shape.
pub fn probe_statement(definition: &str, table: &str) -> Option<String> {
    let tail = [
        format!(" ON {table} USING "),
        format!(" ON ONLY {table} USING "),
    ]
    .iter()
    .find_map(|on| definition.find(on.as_str()).map(|at| at + on.len()))?;
    Some(format!(
        "CREATE INDEX cutover_probe_idx ON cutover_probe.sample USING {}",
        &definition[tail..]
    ))
}

struct Candidate {
    index: String,
    table: String,
    kind: String,
    definition: String,
    columns: String,
    rows: u64,
    index_oid: u32,
    table_oid: u32,
}

/// Samples the expensive index builds. `memory` is the copy's `maintenance_work_mem` (already
/// validated as a plain size). Each index that cannot be sampled gives its reason instead.
pub async fn sample(
    source_url: &DbUrl,
    target_url: &DbUrl,
    memory: &str,
    rows: u64,
) -> Result<Vec<Result<IndexBuild, String>>, String> {
    let source = source_url.connect().await?;
    let failed = |what: &str, e: tokio_postgres::Error| format!("{what}: {}", explain(&e));
    // Every name qualified, whatever the database's search_path: the definitions and column
    // types are then valid on the target as they are.
    source
        .batch_execute("SET search_path = pg_catalog")
        .await
        .map_err(|e| failed("no index sample", e))?;
    let candidates = candidates(&source)
        .await
        .map_err(|e| failed("listing the indexes", e))?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    // The extensions those indexes need: the owners of their tables' column types, of their
    // operator classes and access methods (pgvector's `vector`, `vector_cosine_ops`, `hnsw`).
    let tables: Vec<u32> = candidates.iter().map(|c| c.table_oid).collect();
    let indexes: Vec<u32> = candidates.iter().map(|c| c.index_oid).collect();
    let extensions: Vec<(String, String)> = source
        .query(
            "SELECT DISTINCT e.extname::text, n.nspname::text FROM pg_extension e \
               JOIN pg_namespace n ON n.oid = e.extnamespace \
               JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.deptype = 'e' \
              WHERE (d.classid = 'pg_type'::regclass AND d.objid IN \
                       (SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0)) \
                 OR (d.classid = 'pg_opclass'::regclass AND d.objid IN \
                       (SELECT unnest(i.indclass::oid[]) FROM pg_index i WHERE i.indexrelid = ANY($2::oid[]))) \
                 OR (d.classid = 'pg_am'::regclass AND d.objid IN \
                       (SELECT c.relam FROM pg_class c WHERE c.oid = ANY($2::oid[]))) \
              ORDER BY 1",
            &[&tables, &indexes],
        )
        .await
        .map_err(|e| failed("listing the extensions", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let mut target = target_url.connect().await?;
    let tx = target
        .transaction()
        .await
        .map_err(|e| failed("no index sample", e))?;
    let mut found = Vec::new();
    let prepared = prepare(&tx, &extensions, memory).await;
    match prepared {
        Err(e) => found.push(Err(failed("no index sample: preparing the target", e))),
        Ok(memory_bytes) => {
            for candidate in &candidates {
                let result = sample_one(&source, &tx, candidate, memory_bytes, rows).await;
                found.push(result.map_err(|why| format!("{}: {why}", candidate.index)));
            }
        }
    }
    // Nothing of the sample stays on the target.
    tx.rollback()
        .await
        .map_err(|e| failed("rolling back the index sample", e))?;
    Ok(found)
}

async fn candidates(source: &Client) -> Result<Vec<Candidate>, tokio_postgres::Error> {
    let rows = source
        .query(
            &format!(
                "SELECT format('%I.%I', ns.nspname, ic.relname), format('%I.%I', n.nspname, c.relname), \
                        am.amname::text, pg_get_indexdef(i.indexrelid), \
                        (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum) \
                           FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), \
                        c.reltuples::float8, i.indexrelid, c.oid \
                   FROM pg_index i \
                   JOIN pg_class ic ON ic.oid = i.indexrelid \
                   JOIN pg_namespace ns ON ns.oid = ic.relnamespace \
                   JOIN pg_am am ON am.oid = ic.relam \
                   JOIN pg_class c ON c.oid = i.indrelid \
                   JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE c.relkind = 'r' AND am.amname NOT IN ('btree', 'hash', 'brin') AND {} \
                  ORDER BY pg_table_size(c.oid) DESC, 1 LIMIT {MAX_INDEXES}",
                USER_RELATION
            ),
            &[],
        )
        .await?;
    let mut found = Vec::new();
    for row in rows {
        let table: String = row.get(1);
        let estimate: f64 = row.get(5);
        // Never analysed (-1): counted.
        let rows = if estimate >= 0.0 {
            estimate as u64
        } else {
            let counted = source
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await?;
            u64::try_from(counted.get::<_, i64>(0)).unwrap_or(0)
        };
        if rows < MIN_ROWS {
            continue;
        }
        found.push(Candidate {
            index: row.get(0),
            table,
            kind: row.get(2),
            definition: row.get(3),
            columns: row.get::<_, Option<String>>(4).unwrap_or_default(),
            rows,
            index_oid: row.get(6),
            table_oid: row.get(7),
        });
    }
    Ok(found)
}

/// The scratch schema, the extensions the sampled indexes need that the target lacks (in the
/// source's schemas), the copy's `maintenance_work_mem`. Returns that setting in bytes.
async fn prepare(
    tx: &Transaction<'_>,
    extensions: &[(String, String)],
    memory: &str,
) -> Result<u64, tokio_postgres::Error> {
    tx.batch_execute("CREATE SCHEMA cutover_probe").await?;
    for (name, schema) in extensions {
        let have = tx
            .query_opt("SELECT 1 FROM pg_extension WHERE extname = $1", &[name])
            .await?;
        if have.is_some() {
            continue;
        }
        // One that cannot be created here leaves the indexes needing it unsampled, with
        // PostgreSQL's reason; the others go on.
        tx.batch_execute("SAVEPOINT cutover_extension").await?;
        let created = tx
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; CREATE EXTENSION IF NOT EXISTS {name} WITH SCHEMA {schema}",
                schema = ident(schema),
                name = ident(name)
            ))
            .await;
        let end = if created.is_ok() {
            "RELEASE SAVEPOINT cutover_extension"
        } else {
            "ROLLBACK TO SAVEPOINT cutover_extension"
        };
        tx.batch_execute(end).await?;
    }
    tx.batch_execute(&format!(
        "SET LOCAL maintenance_work_mem = '{memory}'; SET LOCAL statement_timeout = {}",
        BUILD_TIMEOUT.as_millis()
    ))
    .await?;
    let bytes: i64 = tx
        .query_one(
            "SELECT pg_size_bytes(current_setting('maintenance_work_mem'))",
            &[],
        )
        .await?
        .get(0);
    Ok(u64::try_from(bytes).unwrap_or(0))
}

async fn sample_one(
    source: &Client,
    tx: &Transaction<'_>,
    candidate: &Candidate,
    memory_bytes: u64,
    rows: u64,
) -> Result<IndexBuild, String> {
    let statement = probe_statement(&candidate.definition, &candidate.table).ok_or_else(|| {
        format!(
            "an index definition not understood: {}",
            candidate.definition
        )
    })?;
    let lines = sample_rows(source, candidate, rows).await?;
    let taken = lines.len() as u64;
    if taken < MIN_ROWS {
        return Err(format!("only {taken} row(s) to sample"));
    }
    let db =
        |what: &'static str| move |e: tokio_postgres::Error| format!("{what}: {}", explain(&e));
    tx.batch_execute("SAVEPOINT cutover_index")
        .await
        .map_err(db("a savepoint"))?;
    let result = build_at_sizes(tx, candidate, &statement, &lines, memory_bytes).await;
    // Whatever happened, the next index starts from the empty scratch schema.
    tx.batch_execute("ROLLBACK TO SAVEPOINT cutover_index; RELEASE SAVEPOINT cutover_index")
        .await
        .map_err(db("rolling back to the savepoint"))?;
    result
}

/// Up to `limit` rows of the table (pages sampled when it is larger), as COPY text lines, at
/// most [`SAMPLE_BYTES`] of them.
async fn sample_rows(
    source: &Client,
    candidate: &Candidate,
    limit: u64,
) -> Result<Vec<Vec<u8>>, String> {
    let wanted = limit.min(candidate.rows.max(1));
    let from = if candidate.rows > wanted {
        // Twice the share of pages the wanted rows need: a few pages hold fewer rows.
        let percent = (wanted as f64 / candidate.rows as f64 * 200.0).clamp(0.0001, 100.0);
        format!("{} TABLESAMPLE SYSTEM ({percent:.4})", candidate.table)
    } else {
        candidate.table.clone()
    };
    let stream = source
        .copy_out(&format!(
            "COPY (SELECT * FROM {from} LIMIT {wanted}) TO STDOUT"
        ))
        .await
        .map_err(|e| format!("reading a sample: {}", explain(&e)))?;
    futures_util::pin_mut!(stream);
    let mut buffer: Vec<u8> = Vec::new();
    let mut lines = Vec::new();
    let mut kept = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading a sample: {}", explain(&e)))?;
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            if kept + line.len() <= SAMPLE_BYTES {
                kept += line.len();
                lines.push(line);
            }
        }
    }
    Ok(lines)
}

/// Builds the index on a quarter, a half and all of `lines`, and — for an HNSW graph that will
/// not fit the setting — once more with the setting below the sample's graph.
async fn build_at_sizes(
    tx: &Transaction<'_>,
    candidate: &Candidate,
    statement: &str,
    lines: &[Vec<u8>],
    memory_bytes: u64,
) -> Result<IndexBuild, String> {
    let db =
        |what: &'static str| move |e: tokio_postgres::Error| format!("{what}: {}", explain(&e));
    tx.batch_execute(&format!(
        "CREATE TABLE cutover_probe.sample ({})",
        candidate.columns
    ))
    .await
    .map_err(db("the scratch table"))?;
    let total = lines.len();
    let sizes = [total / 8, total / 4, total / 2, total];
    let mut loaded = 0usize;
    let mut points: Vec<(u64, f64)> = Vec::new();
    let mut index_bytes_at_total = 0u64;
    for size in sizes {
        if size == 0 || (size <= loaded && !points.is_empty()) {
            continue;
        }
        load(tx, &lines[loaded..size]).await?;
        loaded = size;
        // The quicker of two builds: a shared machine's pauses only ever add time, and a
        // tenth of noise on these small builds moves the fitted exponent enough to miss the
        // whole table's build by a fifth.
        let mut secs = f64::INFINITY;
        for _ in 0..REPEATS {
            let took = timed_build(tx, statement).await?;
            index_bytes_at_total = index_size(tx).await?;
            tx.batch_execute("DROP INDEX cutover_probe.cutover_probe_idx")
                .await
                .map_err(db("dropping the sample index"))?;
            secs = secs.min(took);
            if took > REPEAT_UNDER.as_secs_f64() {
                break;
            }
        }
        points.push((size as u64, secs));
    }
    let Some(&(sample_rows, sample_secs)) = points.last() else {
        return Err("no build measured".into());
    };
    let exponent = fit_exponent(&points);
    let per_row = index_bytes_at_total as f64 / sample_rows as f64;
    let index_bytes = (per_row * candidate.rows.max(sample_rows) as f64) as u64;
    let mut build = IndexBuild {
        index: candidate.index.clone(),
        table: candidate.table.clone(),
        kind: candidate.kind.clone(),
        rows: candidate.rows,
        sample_rows: points.iter().map(|p| p.0).collect(),
        sample_secs: points.iter().map(|p| p.1).collect(),
        exponent,
        predicted_secs: extrapolate(candidate.rows, sample_rows, sample_secs, exponent),
        index_bytes,
        memory_bytes,
        spill_factor: None,
    };
    if build.spills() && index_bytes_at_total > 0 && index_bytes_at_total <= memory_bytes {
        // The same build with the setting at a quarter of the sample's graph (at least
        // PostgreSQL's minimum, 1 MB): how much slower pgvector is on disk, here.
        let lowered = (index_bytes_at_total / 4 / 1024).max(1024);
        tx.batch_execute(&format!("SET LOCAL maintenance_work_mem = '{lowered}kB'"))
            .await
            .map_err(db("lowering maintenance_work_mem"))?;
        let spilled = timed_build(tx, statement).await;
        tx.batch_execute(&format!(
            "SET LOCAL maintenance_work_mem = '{}kB'",
            memory_bytes / 1024
        ))
        .await
        .map_err(db("restoring maintenance_work_mem"))?;
        let factor = (spilled? / sample_secs.max(0.001)).max(1.0);
        build.spill_factor = Some(factor);
        build.predicted_secs *= factor;
    }
    Ok(build)
}

async fn load(tx: &Transaction<'_>, lines: &[Vec<u8>]) -> Result<(), String> {
    let failed = |e: tokio_postgres::Error| format!("loading the sample: {}", explain(&e));
    let sink = tx
        .copy_in("COPY cutover_probe.sample FROM STDIN")
        .await
        .map_err(failed)?;
    futures_util::pin_mut!(sink);
    for chunk in lines.chunks(64) {
        sink.send(bytes::Bytes::from(chunk.concat()))
            .await
            .map_err(failed)?;
    }
    sink.as_mut().finish().await.map_err(failed)?;
    Ok(())
}

async fn timed_build(tx: &Transaction<'_>, statement: &str) -> Result<f64, String> {
    let started = Instant::now();
    tx.batch_execute(statement)
        .await
        .map_err(|e| format!("building it on the sample: {}", explain(&e)))?;
    Ok(started.elapsed().as_secs_f64())
}

async fn index_size(tx: &Transaction<'_>) -> Result<u64, String> {
    let bytes: i64 = tx
        .query_one(
            "SELECT pg_relation_size('cutover_probe.cutover_probe_idx')",
            &[],
        )
        .await
        .map_err(|e| format!("the sample index's size: {}", explain(&e)))?
        .get(0);
    Ok(u64::try_from(bytes).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exponent_is_fitted_on_logarithms_and_kept_between_one_and_two() {
        let points = [
            (1000, 1.0),
            (2000, 2.0f64.powf(1.5)),
            (4000, 4.0f64.powf(1.5)),
        ];
        assert!((fit_exponent(&points) - 1.5).abs() < 1e-9);
        // Faster than linear (noise on tiny builds) is read as linear; worse than n² as n².
        assert_eq!(fit_exponent(&[(1000, 1.0), (4000, 1.1)]), 1.0);
        assert_eq!(fit_exponent(&[(1000, 1.0), (2000, 10.0)]), 2.0);
        assert_eq!(fit_exponent(&[(1000, 1.0)]), 1.0);
        // 30,000 rows from a 4,000-row build of 2 s at n^1.5.
        let t = extrapolate(30_000, 4_000, 2.0, 1.5);
        assert!((t - 2.0 * 7.5f64.powf(1.5)).abs() < 1e-9, "{t}");
        // A table smaller than the sample: in proportion.
        assert_eq!(extrapolate(2_000, 4_000, 2.0, 1.5), 1.0);
    }

    #[test]
    fn the_probe_builds_the_same_index_on_the_scratch_table() {
        let def = "CREATE INDEX documents_embedding_idx ON public.documents USING hnsw (embedding heroku_ext.vector_cosine_ops) WITH (m='24')";
        assert_eq!(
            probe_statement(def, "public.documents").as_deref(),
            Some("CREATE INDEX cutover_probe_idx ON cutover_probe.sample USING hnsw (embedding heroku_ext.vector_cosine_ops) WITH (m='24')")
        );
        let partial = "CREATE UNIQUE INDEX \"odd name\" ON ONLY \"my schema\".\"t\" USING gin (doc) WHERE (id > 10)";
        assert_eq!(
            probe_statement(partial, "\"my schema\".\"t\"").as_deref(),
            Some("CREATE INDEX cutover_probe_idx ON cutover_probe.sample USING gin (doc) WHERE (id > 10)")
        );
        assert_eq!(probe_statement(def, "public.other"), None);
    }
}
