//! Team state on S3 against a local S3 API (moto; `scripts/bench-s3` starts it and sets
//! CUTOVER_TEST_AWS_ENDPOINT).
//!
//! Targets (issue: team state on S3): `cutover status` against an S3 journal of 10,000 events,
//! first load (an empty mirror: every event fetched) and cached load (the keys listed, nothing
//! fetched); one event appended (a conditional PUT and the head); the delay a watcher on another
//! machine sees (its follow interval plus one cached pull). Compare with the local journal's
//! `status_command_wall` in benches/journal.rs, run beside it.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cutover::journal::{Event, Journal};
use cutover::redact::Redactor;
use cutover::runbook::AwsSettings;
use cutover::state::s3;

#[path = "common/synthetic.rs"]
mod synthetic;

const BUCKET: &str = "cutover-bench-state";

fn main() {
    if std::env::var("CUTOVER_TEST_AWS_ENDPOINT").is_err() {
        eprintln!("CUTOVER_TEST_AWS_ENDPOINT is not set: run scripts/bench-s3, which starts moto");
        return;
    }
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    setup();
    divan::main();
}

fn endpoint() -> String {
    std::env::var("CUTOVER_TEST_AWS_ENDPOINT").unwrap_or_default()
}

fn settings() -> AwsSettings {
    AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint()),
        ..Default::default()
    }
}

fn remote(prefix: &str) -> s3::Remote {
    s3::Remote::connect(BUCKET, prefix, &settings()).unwrap()
}

/// The bucket, and 10,000 events pushed to `big/` once.
fn setup() {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("import boto3; boto3.client('s3', endpoint_url='{}', region_name='us-east-1').create_bucket(Bucket='{BUCKET}')", endpoint()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let big = remote("big/");
    s3::push(&big, &synthetic::synthetic_journal(10_000)).unwrap();
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runbook = std::fs::read_to_string(root.join("runbook.toml")).unwrap();
    std::fs::write(dir.path().join("runbook.toml"), runbook).unwrap();
    dir
}

fn status(dir: &Path) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["status", "--state", &format!("s3://{BUCKET}/big/")])
        .env("CUTOVER_AWS_ENDPOINT_URL", endpoint())
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `cutover status` with an empty mirror: the 10,000 events fetched.
#[divan::bench(sample_count = 5)]
fn status_10k_first_load(bencher: divan::Bencher) {
    bencher
        .with_inputs(project)
        .bench_values(|dir| status(dir.path()));
}

/// `cutover status` with the mirror up to date: the keys listed, nothing fetched.
#[divan::bench(sample_count = 10)]
fn status_10k_cached(bencher: divan::Bencher) {
    let dir = project();
    status(dir.path());
    bencher.bench(|| status(dir.path()));
}

/// One event appended: the lease checked (renewed when half of it is gone), its conditional
/// PUT, then the head's (`If-Match`).
#[divan::bench(sample_count = 50)]
fn append_one_event(bencher: divan::Bencher) {
    let remote = Arc::new(remote(&format!("append-{}/", std::process::id())));
    let dir = tempfile::tempdir().unwrap();
    // Appends go out under the S3 lock's lease, as a driver's do.
    let lock = s3::acquire(remote.clone(), "bench@host", "bench").unwrap();
    let store = s3::S3Store::open(remote, &dir.path().join("journal.jsonl"), lock.lease()).unwrap();
    let (mut journal, _) = Journal::open(
        Box::new(store),
        "bench@host".into(),
        "digest".into(),
        Arc::new(Redactor::new()),
    )
    .unwrap();
    bencher.bench_local(|| {
        journal
            .append(
                None,
                Event::Note {
                    text: "bench".into(),
                },
            )
            .unwrap()
    });
}

/// What a watcher elsewhere adds to its follow interval: one pull of an up-to-date mirror of
/// 10,000 events after one more was appended.
#[divan::bench(sample_count = 10)]
fn watcher_pull_after_an_append(bencher: divan::Bencher) {
    let prefix = format!("watch-{}/", std::process::id());
    let writer = Arc::new(remote(&prefix));
    s3::push(&writer, &synthetic::synthetic_journal(10_000)).unwrap();
    let write_dir = tempfile::tempdir().unwrap();
    let lock = s3::acquire(writer.clone(), "bench@host", "bench").unwrap();
    let store = s3::S3Store::open(
        writer.clone(),
        &write_dir.path().join("journal.jsonl"),
        lock.lease(),
    )
    .unwrap();
    let (mut journal, _) = Journal::open(
        Box::new(store),
        "bench@host".into(),
        "digest".into(),
        Arc::new(Redactor::new()),
    )
    .unwrap();
    let reader = remote(&prefix);
    let read_dir = tempfile::tempdir().unwrap();
    let mirror = read_dir.path().join("journal.jsonl");
    s3::pull(&reader, &mirror).unwrap();
    bencher.bench_local(|| {
        journal
            .append(
                None,
                Event::Note {
                    text: "bench".into(),
                },
            )
            .unwrap();
        s3::pull(&reader, &mirror).unwrap()
    });
}
