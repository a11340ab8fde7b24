//! Journal replay and `cutover status` timings.
//!
//! Targets (issue 2): replaying and folding a 100,000-event journal ≤ 100 ms; `cutover status`
//! on the bundled runbook ≤ 20 ms wall. Run with `cargo bench --bench journal`.

use std::path::Path;
use std::process::Command;

use cutover::actions::Registry;
use cutover::journal::{self, hash_line, Event, Record, GENESIS};
use cutover::runbook::Runbook;

fn main() {
    divan::main();
}

/// A chained journal of `n` events cycling over the bundled runbook's steps, as a real one
/// would look after many attempts, outputs and notes.
fn synthetic_journal(n: u64) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runbook = Runbook::load(&root.join("runbook.toml"), &[], &Registry::builtin()).unwrap();
    let mut out = Vec::with_capacity(n as usize * 420);
    let mut prev = GENESIS.to_string();
    for seq in 1..=n {
        let step = &runbook.steps[(seq / 4) as usize % runbook.steps.len()];
        let attempt = (seq / 4 / runbook.steps.len() as u64) as u32 + 1;
        let event = match seq % 4 {
            0 => Event::Started {
                attempt,
                log: format!("logs/{}/{attempt}.log", step.id).into(),
            },
            1 => Event::Outputs {
                values: [("snapshot".to_string(), format!("snap-{seq}"))].into(),
            },
            2 => Event::Progress {
                message: "restored 12 of 40 tables".into(),
            },
            _ => Event::Succeeded {
                attempt,
                note: None,
            },
        };
        let record = Record {
            seq,
            time: "2026-11-28T03:45:22.123Z".to_string(),
            actor: "ana@laptop".to_string(),
            runbook: runbook.digest.clone(),
            step: Some(step.id.clone()),
            step_digest: Some(step.digest.clone()),
            event,
            prev: prev.clone(),
        };
        let line = serde_json::to_vec(&record).unwrap();
        prev = hash_line(&line);
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out
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
