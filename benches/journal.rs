//! Journal replay and `cutover status` timings.
//!
//! Targets (issue 2): replaying and folding a 100,000-event journal ≤ 100 ms; `cutover status`
//! on the bundled runbook ≤ 20 ms wall. Run with `cargo bench --bench journal`.

use std::path::Path;
use std::process::Command;

use cutover::journal;

#[path = "common/synthetic.rs"]
mod synthetic;
use synthetic::synthetic_journal;

fn main() {
    divan::main();
}

#[divan::bench(sample_count = 20)]
fn replay_100k_events(bencher: divan::Bencher) {
    let bytes = synthetic_journal(100_000);
    bencher.bench(|| {
        let loaded = journal::load(divan::black_box(&bytes));
        assert_eq!(loaded.state.lines, 100_000);
        loaded
    });
}

/// The whole `cutover status` process on the bundled runbook with a 10,000-event journal.
#[divan::bench(sample_count = 30)]
fn status_command_wall(bencher: divan::Bencher) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("runbook.toml"), dir.path().join("runbook.toml")).unwrap();
    std::fs::create_dir(dir.path().join(".cutover")).unwrap();
    std::fs::write(
        dir.path().join(".cutover/journal.jsonl"),
        synthetic_journal(10_000),
    )
    .unwrap();
    bencher.bench(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .arg("status")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        out
    });
}
