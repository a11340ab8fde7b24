//! The database move's speed, against two local PostgreSQL 16 + pgvector clusters, on one
//! source of about 1 GB (the app-like fixture with its vector table, two jsonb archive tables
//! and a large narrow table), every variant in the same run:
//!
//! - `pgcopydb clone --table-jobs 2 --index-jobs 2` (Debian's pgcopydb), the reference;
//! - `db.copy` in its parallel mode (two COPY streams on one snapshot, each table read back and
//!   compared on the way, indexes with two jobs) — target: no slower than pgcopydb;
//! - the same copy followed by `db.verify` against the checksums it took from the source's
//!   stream, reading the target again, and as the bundled runbook runs it (against both of the
//!   copy's checksum sets: no table read again) — target: copy + verification ≤ 1.3× pgcopydb's
//!   copy alone;
//! - `db.copy` streamed (`pg_dump -Fc | pg_restore`), the bare pipe and directory mode, as
//!   before, and `db.verify` reading both sides.
//!
//! Before the benchmarks, the source's `tup_returned` is read around one parallel copy with its
//! verification, and around a streamed copy with a verification that reads both sides: how many
//! times each way reads the source.
//!
//! Run `scripts/bench-db`: it starts the clusters, loads the data, installs pgcopydb and runs
//! `cargo bench --profile dev --bench db` (the time is spent in PostgreSQL, pg_dump,
//! pg_restore and the COPY streams, which the dev profile's optimised dependencies carry).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use std::collections::BTreeMap;

use cutover::actions::{ActionContext, ActionEvent, Outcome, Registry, Reporter};
use divan::Bencher;

fn main() {
    if std::env::var("CUTOVER_BENCH_PG_SOURCE").is_err() {
        eprintln!("benches/db.rs needs the clusters: run scripts/bench-db");
        return;
    }
    source_reads();
    divan::main();
}

/// Rows the source has handed out so far (`pg_stat_database.tup_returned`), once the
/// statistics of finished sessions are in.
fn tup_returned() -> i64 {
    std::thread::sleep(std::time::Duration::from_secs(2));
    runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(&source(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query_one(
                "SELECT tup_returned FROM pg_stat_database WHERE datname = 'bench_src'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    })
}

/// How many rows each way reads from the source, against how many it has.
fn source_reads() {
    let rows: i64 = runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(&source(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query_one(
                "SELECT sum(n_live_tup)::bigint FROM pg_stat_user_tables",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    });
    let before = tup_returned();
    parallel_copy_and_verify("bench_reads_parallel");
    let parallel = tup_returned() - before;
    let before = tup_returned();
    let target = with_extensions("bench_reads_stream");
    run_action(
        "db.copy",
        serde_json::json!({ "source": source(), "target": target, "bin_dir": pg_bin(), "mode": "stream" }),
    );
    run_action(
        "db.verify",
        serde_json::json!({ "source": source(), "target": target, "connections": 4 }),
    );
    let stream = tup_returned() - before;
    eprintln!(
        "source rows read (pg_stat_database.tup_returned; the source holds {rows} rows): \
         parallel copy + verification against its checksums {parallel} ({:.2}×), \
         streamed copy + verification reading both sides {stream} ({:.2}×)",
        parallel as f64 / rows as f64,
        stream as f64 / rows as f64
    );
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// The cluster's URL with another database name (keeping `?sslmode=...`).
fn url_for(cluster: &str, database: &str) -> String {
    let base = env(cluster);
    let (prefix, rest) = base.rsplit_once('/').unwrap_or((&base, ""));
    let query = rest
        .split_once('?')
        .map_or(String::new(), |(_, q)| format!("?{q}"));
    format!("{prefix}/{database}{query}")
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn sql(cluster: &str, database: &str, statements: &str) {
    runtime().block_on(async {
        let (client, conn) =
            tokio_postgres::connect(&url_for(cluster, database), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        // One statement at a time: DROP/CREATE DATABASE refuse to run in a transaction block.
        for statement in statements.split(';').filter(|s| !s.trim().is_empty()) {
            client.batch_execute(statement).await.unwrap();
        }
    });
}

fn fresh_target(name: &str) -> String {
    sql(
        "CUTOVER_BENCH_PG_TARGET",
        "postgres",
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE); CREATE DATABASE {name}"),
    );
    url_for("CUTOVER_BENCH_PG_TARGET", name)
}

fn source() -> String {
    url_for("CUTOVER_BENCH_PG_SOURCE", "bench_src")
}

/// Runs one action to its end through the library, as the engine would; its outputs.
fn run_action(kind: &str, params: serde_json::Value) -> BTreeMap<String, String> {
    let registry = Registry::builtin();
    let action = registry.get(kind).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (outcome, outputs) = runtime().block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let drain = tokio::spawn(async move {
            let mut outputs = BTreeMap::new();
            while let Some(event) = rx.recv().await {
                match event {
                    ActionEvent::Output { name, value } => {
                        outputs.insert(name, value);
                    }
                    ActionEvent::Recorded(ack) => ack.answer(),
                    _ => {}
                }
            }
            outputs
        });
        let ctx = ActionContext {
            step: "bench".into(),
            params,
            cancel: tokio_util::sync::CancellationToken::new(),
            report: Reporter::new(tx),
            work_dir: work.path().to_path_buf(),
            outputs_file: work.path().join("outputs"),
            operator_note: None,
            aws: Default::default(),
            recorded: Default::default(),
            forwards: Vec::new(),
            tunnels: Default::default(),
        };
        let outcome = action.run(ctx).await;
        (outcome, drain.await.unwrap_or_default())
    });
    assert!(
        matches!(outcome, Outcome::Succeeded { .. }),
        "{kind}: {outcome:?}"
    );
    outputs
}

fn pg_bin() -> PathBuf {
    PathBuf::from(env("CUTOVER_BENCH_PG_BIN"))
}

/// The bare pipe, with the connection in the environment exactly as cutover gives it.
fn bare_pipe(target_db: &str) {
    let src = url::Url::parse(&source()).unwrap();
    let tgt = url::Url::parse(&url_for("CUTOVER_BENCH_PG_TARGET", target_db)).unwrap();
    let bin = pg_bin();
    let script = format!(
        "set -o pipefail; \
         PGHOST={} PGPORT={} PGUSER={} PGPASSWORD={} PGDATABASE={} {}/pg_dump -Fc --no-owner --no-acl \
         | PGHOST={} PGPORT={} PGUSER={} PGPASSWORD={} PGOPTIONS='-c maintenance_work_mem=1GB' {}/pg_restore --no-owner --no-acl -d {}",
        src.host_str().unwrap(),
        src.port().unwrap(),
        src.username(),
        src.password().unwrap(),
        "bench_src",
        bin.display(),
        tgt.host_str().unwrap(),
        tgt.port().unwrap(),
        tgt.username(),
        tgt.password().unwrap(),
        bin.display(),
        target_db,
    );
    let status = Command::new("bash").args(["-c", &script]).status().unwrap();
    // Heroku-style errors (the heroku_ext schema exists) make pg_restore exit 1; the data is in.
    assert!(status.code().is_some_and(|c| c <= 1), "{status}");
}

/// The target gets the extensions first in every variant, as db.extensions would do.
fn with_extensions(name: &str) -> String {
    let url = fresh_target(name);
    sql(
        "CUTOVER_BENCH_PG_TARGET",
        name,
        "CREATE SCHEMA heroku_ext; CREATE EXTENSION vector WITH SCHEMA heroku_ext",
    );
    url
}

/// The parallel copy (verified on its stream), then db.verify against its checksums.
fn parallel_copy_and_verify(name: &str) {
    let target = with_extensions(name);
    let outputs = parallel_copy(&target);
    run_action(
        "db.verify",
        serde_json::json!({
            "source": source(), "target": target, "connections": 2,
            "source_checksums": outputs["checksums"],
        }),
    );
}

fn parallel_copy(target: &str) -> BTreeMap<String, String> {
    run_action(
        "db.copy",
        serde_json::json!({
            "source": source(), "target": target, "bin_dir": pg_bin(),
            "mode": "parallel", "jobs": 2, "index_jobs": 2,
        }),
    )
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn copy_pgcopydb_table_jobs_2_index_jobs_2(bencher: Bencher) {
    bencher
        .with_inputs(|| {
            let target = fresh_target("bench_pgcopydb");
            let dir = tempfile::tempdir().unwrap();
            (target, dir)
        })
        .bench_values(|(target, dir)| {
            let path = format!(
                "{}:{}",
                pg_bin().display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let out = Command::new("pgcopydb")
                .args(["clone", "--source", &source(), "--target", &target])
                .args([
                    "--table-jobs",
                    "2",
                    "--index-jobs",
                    "2",
                    "--no-owner",
                    "--no-acl",
                ])
                .arg("--dir")
                .arg(dir.path().join("work"))
                .env("PATH", path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "pgcopydb: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn copy_cutover_parallel_jobs_2(bencher: Bencher) {
    bencher
        .with_inputs(|| with_extensions("bench_parallel"))
        .bench_values(|target| parallel_copy(&target));
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn copy_cutover_parallel_then_verify_recorded(bencher: Bencher) {
    bencher.bench(|| parallel_copy_and_verify("bench_parallel_verify"));
}

/// The copy alone, each table not read back (what pgcopydb does): the engine's own speed.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn copy_cutover_parallel_without_read_back(bencher: Bencher) {
    bencher
        .with_inputs(|| with_extensions("bench_parallel_bare"))
        .bench_values(|target| {
            run_action(
                "db.copy",
                serde_json::json!({
                    "source": source(), "target": target, "bin_dir": pg_bin(),
                    "mode": "parallel", "jobs": 2, "index_jobs": 2, "read_back": false,
                }),
            );
        });
}

/// As the bundled runbook runs it: the copy, then db.verify with both of its checksum sets
/// (no table read again; sequences, extensions, indexes and a vector search checked).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn copy_cutover_parallel_then_verify_as_bundled(bencher: Bencher) {
    bencher
        .with_inputs(|| with_extensions("bench_bundled"))
        .bench_values(|target| {
            let outputs = parallel_copy(&target);
            run_action(
                "db.verify",
                serde_json::json!({
                    "source": source(), "target": target, "connections": 2,
                    "source_checksums": outputs["checksums"],
                    "target_checksums": outputs["target_checksums"],
                }),
            );
        });
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn copy_bare_pipe(bencher: Bencher) {
    bencher
        .with_inputs(|| with_extensions("bench_pipe"))
        .bench_values(|_| bare_pipe("bench_pipe"));
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn copy_cutover_streamed(bencher: Bencher) {
    bencher
        .with_inputs(|| with_extensions("bench_stream"))
        .bench_values(|target| {
            run_action(
                "db.copy",
                serde_json::json!({ "source": source(), "target": target, "bin_dir": pg_bin(), "mode": "stream" }),
            );
        });
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn copy_cutover_directory_j2(bencher: Bencher) {
    bencher
        .with_inputs(|| with_extensions("bench_dir"))
        .bench_values(|target| {
            run_action(
                "db.copy",
                serde_json::json!({
                    "source": source(), "target": target, "bin_dir": pg_bin(),
                    "work_dir": "dump", "jobs": 2
                }),
            );
        });
}

fn verified_target() -> String {
    static READY: OnceLock<String> = OnceLock::new();
    READY
        .get_or_init(|| {
            let url = with_extensions("bench_verify");
            bare_pipe("bench_verify");
            url
        })
        .clone()
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn verify_parallel_4(bencher: Bencher) {
    let target = verified_target();
    bencher.bench(|| {
        run_action(
            "db.verify",
            serde_json::json!({ "source": source(), "target": target, "connections": 4 }),
        );
    });
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn verify_one_table_after_another(bencher: Bencher) {
    let target = verified_target();
    bencher.bench(|| {
        run_action(
            "db.verify",
            serde_json::json!({
                "source": source(), "target": target, "connections": 1, "chunk_mb": 1_000_000
            }),
        );
    });
}
