//! Terminal UI figures (issue 3): with 1,000,000 lines in a step's log, rendering a 200×60 frame
//! ≤ 2 ms median; ingesting ≥ 1,000,000 lines/s; RSS ≤ 150 MB for 1,000,000 lines of 100 bytes;
//! a key handled within one frame while a child prints 100,000 lines/s; startup to first frame
//! ≤ 100 ms. Run with `cargo bench --bench tui`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover::actions::{Registry, Stream};
use cutover::engine::EngineEvent;
use cutover::journal::JournalState;
use cutover::runbook::Runbook;
use cutover::tui::logstore::LogStore;
use cutover::tui::model::{Action, Mode, Model};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn main() {
    report_memory();
    report_startup();
    divan::main();
}

/// A 100-byte log line with a little colour, like a build's output.
fn line(i: usize) -> String {
    let mut text =
        format!("\u{1b}[32mINFO\u{1b}[0m [{i:>9}] restored table public.documents chunk ");
    while text.len() < 100 {
        text.push('x');
    }
    text
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Resident memory of a process holding 1,000,000 lines of 100 bytes in one step's store.
fn report_memory() {
    let before = rss_bytes();
    let mut store = LogStore::with_capacity(1_000_000);
    let start = Instant::now();
    for i in 0..1_000_000 {
        store.push(&line(i));
    }
    let elapsed = start.elapsed();
    let after = rss_bytes();
    eprintln!(
        "log store: 1,000,000 lines of 100 bytes in {:.0} ms ({:.2} M lines/s, formatting included); \
         RSS {} MB total, +{} MB for the store ({} MB of heap)",
        elapsed.as_secs_f64() * 1000.0,
        1.0 / elapsed.as_secs_f64(),
        after / (1 << 20),
        after.saturating_sub(before) / (1 << 20),
        store.heap_bytes() / (1 << 20),
    );
}

fn runbook() -> Arc<Runbook> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Arc::new(Runbook::load(&root.join("runbook.toml"), &[], &Registry::builtin()).unwrap())
}

fn model_with_log(lines: usize) -> Model {
    let runbook = runbook();
    let mut model = Model::new(runbook, JournalState::new(), Mode::Drive, false);
    model.log_capacity = lines.max(1);
    let id = model.selected_id().to_string();
    let store = model.store(&id);
    for i in 0..lines {
        store.push(&line(i));
    }
    model
}

#[divan::bench(sample_count = 10)]
fn ingest_1m_lines(bencher: divan::Bencher) {
    let lines: Vec<String> = (0..1_000_000).map(line).collect();
    bencher.bench(|| {
        let mut store = LogStore::with_capacity(1_000_000);
        for l in &lines {
            store.push(l);
        }
        store.len()
    });
}

#[divan::bench(sample_count = 200)]
fn render_200x60_with_1m_lines(bencher: divan::Bencher) {
    let model = model_with_log(1_000_000);
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).unwrap();
    bencher.bench_local(|| {
        terminal
            .draw(|frame| {
                cutover::tui::view::draw(frame, &model);
            })
            .map(|_| ())
            .unwrap();
    });
}

/// One frame's work under a storm of 100,000 lines/s: take in 1,667 lines (1/60 s of them),
/// handle a key, draw. It must fit in a frame (16.7 ms) for the key to be handled in one.
#[divan::bench(sample_count = 100)]
fn frame_with_key_under_100k_lines_per_second(bencher: divan::Bencher) {
    let mut model = model_with_log(100_000);
    let id = model.selected_id().to_string();
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).unwrap();
    let mut n = 0usize;
    bencher.bench_local(|| {
        for _ in 0..1_667 {
            n += 1;
            model.on_engine_event(EngineEvent::Log {
                step: id.clone(),
                stream: Stream::Stdout,
                line: line(n),
            });
        }
        let action = if n % 2 == 0 { Action::Down } else { Action::Up };
        model.update(action);
        terminal
            .draw(|frame| {
                cutover::tui::view::draw(frame, &model);
            })
            .map(|_| ())
            .unwrap();
    });
}

/// From process start to the first frame drawn, as the binary itself logs it (`first frame
/// ms=N` in .cutover/tui.log), over ten launches in a real terminal (tmux). Timing the launch
/// from outside would mostly measure tmux.
fn report_startup() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("runbook.toml"), dir.path().join("runbook.toml")).unwrap();
    let socket = format!("cutover-bench-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .output()
    };
    if tmux(&[
        "new-session",
        "-d",
        "-s",
        "b",
        "-x",
        "200",
        "-y",
        "60",
        "sleep 600",
    ])
    .is_err()
    {
        eprintln!("startup: tmux is not installed; skipped");
        return;
    }
    let log = dir.path().join(".cutover/tui.log");
    let mut figures = Vec::new();
    for _ in 0..10 {
        let before = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        let _ = tmux(&[
            "new-window",
            "-t",
            "b:",
            "-n",
            "ui",
            "-c",
            dir.path().to_str().unwrap(),
            env!("CARGO_BIN_EXE_cutover"),
        ]);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(ms) = text
                .lines()
                .skip(before)
                .find_map(|l| l.split("first frame ms=").nth(1))
            {
                figures.push(ms.trim().parse::<u64>().unwrap_or(u64::MAX));
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = tmux(&["send-keys", "-t", "b:ui", "q"]);
        std::thread::sleep(Duration::from_millis(300));
        let _ = tmux(&["kill-window", "-t", "b:ui"]);
    }
    let _ = tmux(&["kill-server"]);
    figures.sort_unstable();
    eprintln!(
        "startup to first frame over {} launches: median {} ms, max {} ms",
        figures.len(),
        figures.get(figures.len() / 2).copied().unwrap_or(0),
        figures.last().copied().unwrap_or(0)
    );
}
