//! A mutation fuzzer for the two readers of untrusted bytes: the runbook parser (with
//! validation, diagnostics and every `${...}` template) and the journal loader (hash chain,
//! fold, partial tails). Neither may panic, whatever it is given.
//!
//! cargo-fuzz needs a nightly toolchain, which this project does not use; this is the same idea
//! on stable: seeded, reproducible mutations (byte flips, inserts, deletes, splices of
//! dictionary tokens, duplicated and cut ranges) of real inputs — the bundled runbook and a
//! journal written by the real binary. `scripts/test` runs it for a few seconds;
//! `CUTOVER_FUZZ_SECS=600 cargo test --test fuzz -- --nocapture` for ten minutes. A panic
//! prints the iteration and writes the input to the temporary directory (`fuzz-crash-*`).

mod common;
use common::Project;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use cutover::actions::Registry;
use cutover::runbook::{Runbook, SourceFile};

/// xorshift64*: small, fast, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }
}

const TOKENS: &[&str] = &[
    "${",
    "}",
    "$${",
    "${secret.",
    "${steps.",
    ".outputs.",
    "[[phase]]",
    "[[phase.step]]",
    "[vars]",
    "[secrets]",
    "[aws]",
    "[cost]",
    "=",
    "\"",
    "'''",
    "\"\"\"",
    "\n",
    "[",
    "]",
    "{",
    ",",
    "needs = [",
    "do = \"shell\"",
    "after = { step = ",
    "at_least = \"",
    "7d",
    "-1",
    "\u{0}",
    "\u{feff}",
    "é",
    "\\u0000",
    "{\"seq\":",
    "\"prev\":\"",
    "\"event\":{\"started\":{",
    "null",
    "99999999999999999999",
    "\r\n",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                data.splice(at..at, token.iter().copied());
            }
            2 if !data.is_empty() => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                data.drain(at.min(end)..end);
            }
            3 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(256)).min(data.len());
                let copy = data[start..end].to_vec();
                data.splice(at..at, copy);
            }
            4 => data.truncate(at),
            _ => data.insert(at, rng.next() as u8),
        }
    }
    data
}

fn budget() -> Duration {
    Duration::from_secs(
        std::env::var("CUTOVER_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    )
}

/// Runs `check` on mutations of `seed` until the time budget is spent; panics with the seed,
/// the iteration and a file holding the input when `check` panics.
fn fuzz(name: &str, seed: &[u8], check: impl Fn(&[u8])) -> u64 {
    let started = Instant::now();
    let mut rng = Rng(0x5EED_0000 ^ name.len() as u64);
    let mut runs = 0u64;
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while started.elapsed() < budget() {
        let input = mutate(&mut rng, seed);
        runs += 1;
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            std::panic::set_hook(default_hook);
            let path = std::env::temp_dir().join(format!("fuzz-crash-{name}-{runs}"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "{name}: panic at iteration {runs}; input in {}",
                path.display()
            );
        }
    }
    std::panic::set_hook(default_hook);
    eprintln!("{name}: {runs} inputs in {:?}, no panic", started.elapsed());
    runs
}

#[test]
fn the_runbook_parser_never_panics() {
    let seed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/runbook.toml")).unwrap();
    let registry = Registry::builtin();
    let runs = fuzz("runbook", &seed, |bytes| {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let _ = Runbook::from_source(SourceFile::new("runbook.toml", text), &[], &registry);
    });
    assert!(runs > 10, "the fuzzer ran");
}

#[test]
fn the_journal_loader_never_panics() {
    // A real journal: the binary runs a small runbook (a step with outputs, a note, a failure).
    let p = Project::with_text(
        "[runbook]\nname = \"f\"\napp = \"f\"\n[[phase]]\nid = \"p\"\n[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"echo x=1 >> \\\"$CUTOVER_OUTPUT\\\"\"\noutputs = [\"x\"]\n[[phase.step]]\nid = \"b\"\ndo = \"shell\"\nrun = \"exit 3\"\nneeds = [\"a\"]\n",
    )
    .env("CUTOVER_ACTOR", "fuzz@test");
    for args in [vec!["run", "a"], vec!["note", "a note"], vec!["run", "b"]] {
        let _ = p.run(&args);
    }
    let seed = std::fs::read(p.file(".cutover/journal.jsonl")).unwrap();
    assert!(seed.len() > 200, "the binary wrote a journal");
    let runs = fuzz("journal", &seed, |bytes| {
        let _ = cutover::journal::load(bytes);
    });
    assert!(runs > 10, "the fuzzer ran");
}

/// A crafted `--history` journal (a rehearsal's, handed around) may hold anything where the
/// window prediction reads seconds and sizes: NaN, negative figures, numbers too large for a
/// duration. The check names them; the prediction never panics, checked or not.
#[test]
fn the_window_prediction_never_panics_on_a_crafted_history() {
    use cutover::journal::{Event, FileStore, Journal};
    use cutover::redact::Redactor;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    let (mut journal, _) = Journal::open(
        Box::new(FileStore::new(&path)),
        "fuzz@test".into(),
        "0".into(),
        Arc::new(Redactor::default()),
    )
    .unwrap();
    let builds = r#"[{"index":"public.docs_idx","table":"public.docs","kind":"hnsw","rows":1000,"sample_rows":[250,500,1000],"sample_secs":[0.1,0.3,1.0],"exponent":1.5,"predicted_secs":NaNx,"index_bytes":1,"memory_bytes":2,"spill_factor":null}]"#;
    let checksums = r#"{"public.docs":{"rows":1000,"sum":"1"}}"#;
    let outputs: &[(&str, &[(&str, &str)])] = &[
        (
            "db-preflight",
            &[
                ("source_bytes", "104857600"),
                ("read_mib_s", "80.0"),
                ("write_mib_s", "-40.0"),
                ("predicted_copy_secs", "NaN"),
                ("index_builds", builds),
            ],
        ),
        (
            "db-copy",
            &[("data_secs", "1e300"), ("checksums", checksums)],
        ),
        ("dns-ttl", &[("previous_ttl", "300"), ("ttl", "-60")]),
    ];
    for (step, values) in outputs {
        journal
            .append(
                Some((step, "d")),
                Event::Started {
                    attempt: 1,
                    log: "l".into(),
                },
            )
            .unwrap();
        journal
            .append(
                Some((step, "d")),
                Event::Outputs {
                    values: values
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.replace("NaNx", "-1e308")))
                        .collect(),
                },
            )
            .unwrap();
        journal
            .append(
                Some((step, "d")),
                Event::Succeeded {
                    attempt: 1,
                    note: None,
                },
            )
            .unwrap();
    }
    let seed = std::fs::read(&path).unwrap();
    let crafted = cutover::journal::load(&seed).state;
    assert!(
        cutover::window::check_history(&crafted).is_err(),
        "the crafted figures are named"
    );
    let registry = Registry::builtin();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/runbook.toml")).unwrap();
    let runbook = Runbook::from_source(SourceFile::new("runbook.toml", text), &[], &registry)
        .unwrap_or_else(|e| panic!("the bundled runbook loads: {e:?}"));
    assert!(!runbook.windows.is_empty());
    let runs = fuzz("history", &seed, |bytes| {
        let history = cutover::journal::load(bytes).state;
        let _ = cutover::window::check_history(&history);
        for window in &runbook.windows {
            let _ = cutover::window::predict(&runbook, window, &history, Some(&history));
            let _ = cutover::window::predict(&runbook, window, &crafted, Some(&history));
        }
    });
    assert!(runs > 10, "the fuzzer ran");
}
