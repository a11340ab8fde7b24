//! The database move's speed, against two local PostgreSQL 16 + pgvector clusters.
//!
//! Targets (issue 5), on the same data in one run:
//! - `db.copy` (streamed through cutover) ≥ 0.95× a bare `pg_dump -Fc | pg_restore` pipe;
//! - directory mode with `-j 2` faster than the pipe on a multi-table database;
//! - `db.verify` over 1,000,000 rows in parallel ≥ 1.5× faster than one table after another.
//!
//! Run `scripts/bench-db`: it starts the clusters, loads the data and runs
//! `cargo bench --profile dev --bench db` (the time is spent in PostgreSQL, pg_dump and
//! pg_restore, so cutover's own optimisation level does not move these figures).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use cutover::actions::{ActionContext, Outcome, Registry, Reporter};
use divan::Bencher;

fn main() {
    if std::env::var("CUTOVER_BENCH_PG_SOURCE").is_err() {
        eprintln!("benches/db.rs needs the clusters: run scripts/bench-db");
        return;
    }
    divan::main();
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

/// Runs one action to its end through the library, as the engine would.
fn run_action(kind: &str, params: serde_json::Value) {
    let registry = Registry::builtin();
    let action = registry.get(kind).unwrap();
    let work = tempfile::tempdir().unwrap();
    let outcome = runtime().block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
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
        let _ = drain.await;
        outcome
    });
    assert!(
        matches!(outcome, Outcome::Succeeded { .. }),
        "{kind}: {outcome:?}"
    );
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
                serde_json::json!({ "source": source(), "target": target, "bin_dir": pg_bin() }),
            )
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
            )
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
        )
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
        )
    });
}
