//! A synthetic journal the benchmarks share.

use std::path::Path;

use cutover::actions::Registry;
use cutover::journal::{hash_line, Event, Record, GENESIS};
use cutover::runbook::Runbook;

/// A chained journal of `n` events cycling over the bundled runbook's steps, as a real one
/// would look after many attempts, outputs and notes.
pub fn synthetic_journal(n: u64) -> Vec<u8> {
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
