//! Model and update without a terminal: keys → actions → effects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::keys::action_for;
use super::model::{Effect, Level, Mode, Model, NotePurpose, Overlay};
use crate::actions::Registry;
use crate::engine::{EngineEvent, Mark};
use crate::journal::{Event, JournalState, LineMeta};
use crate::runbook::{Runbook, SourceFile};

pub(crate) const RUNBOOK: &str = r#"
[runbook]
name = "gengar: Heroku → AWS ECS Fargate"
app = "gengar"

[cost]
region = "us-east-1"
expected_monthly = 45

[cost.heroku]
dynos = { "standard-1x" = 1 }
postgres = "standard-0"

[[phase]]
id = "local"
title = "Dockerfile and local checks"

[[phase.step]]
id = "build"
title = "Build the image"
do = "shell"
run = "docker build -t gengar ."

[[phase.step]]
id = "review"
title = "Review the Dockerfile"
do = "manual"
checklist = ["non-root user", "arm64"]
needs = ["build"]

[[phase]]
id = "cutover"
title = "DNS cutover"

[[phase.step]]
id = "dns"
title = "Point the domain at the ALB"
do = "shell"
run = "echo cutover"
destructive = true
confirm = "point api at aws"
rollback = { do = "shell", run = "echo back", notes = "point it back at Heroku" }
needs = ["build"]
starts_billing = ["rds_instance", "rds_storage"]
"#;

pub(crate) fn runbook() -> Arc<Runbook> {
    Arc::new(
        Runbook::from_source(
            SourceFile::new("runbook.toml", RUNBOOK.to_string()),
            &[],
            &Registry::builtin(),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A journal in which `done` steps succeeded, at fixed times.
pub(crate) fn journal(runbook: &Runbook, done: &[&str]) -> JournalState {
    let mut state = JournalState::new();
    let mut seq = 0;
    for id in done {
        let digest = runbook
            .step(id)
            .map(|s| s.digest.clone())
            .unwrap_or_default();
        for event in [
            Event::Started {
                attempt: 1,
                log: format!("logs/{id}/1.log").into(),
            },
            Event::Succeeded {
                attempt: 1,
                note: None,
            },
        ] {
            seq += 1;
            let meta = LineMeta {
                seq,
                time: "2026-11-20T09:30:00.000Z",
                actor: "ana@laptop",
                step: Some(id),
                step_digest: Some(&digest),
            };
            state.apply(&meta, &event);
            state.set_last_activity(&meta, &event);
        }
    }
    state
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// Presses keys as a person would: through the key map, with time for the repeat guard.
fn press(model: &mut Model, codes: &[KeyCode]) -> Vec<Effect> {
    let mut effects = Vec::new();
    for code in codes {
        if let Some(action) = action_for(model, key(*code)) {
            effects.extend(model.update(action));
        }
    }
    effects
}

fn type_text(model: &mut Model, text: &str) {
    let codes: Vec<KeyCode> = text.chars().map(KeyCode::Char).collect();
    press(model, &codes);
}

fn settle(model: &mut Model) {
    model.overlay_opened = model
        .overlay_opened
        .map(|_| Instant::now() - Duration::from_secs(1));
}

#[test]
fn navigation_moves_the_selection_and_enter_runs_a_ready_step() {
    let rb = runbook();
    let mut model = Model::new(rb.clone(), JournalState::new(), Mode::Drive, false);
    assert!(
        model.overlay.is_none(),
        "no resume summary on a fresh journal"
    );
    assert_eq!(model.selected_id(), "build");
    press(&mut model, &[KeyCode::Char('j'), KeyCode::Char('j')]);
    assert_eq!(model.selected_id(), "dns");
    press(&mut model, &[KeyCode::Char('g')]);
    assert_eq!(model.selected_id(), "build");
    press(&mut model, &[KeyCode::Char('G')]);
    assert_eq!(model.selected_id(), "dns");
    let effects = press(&mut model, &[KeyCode::Enter]);
    assert!(effects.is_empty());
    assert_eq!(
        model.message.as_ref().map(|m| m.0.as_str()),
        Some("waiting for build")
    );
    press(&mut model, &[KeyCode::Char('g')]);
    let effects = press(&mut model, &[KeyCode::Enter]);
    assert_eq!(
        effects,
        vec![Effect::Run {
            step: "build".into(),
            confirm: None,
            note: None
        }]
    );
    assert_eq!(
        model.running.as_ref().map(|r| r.step.as_str()),
        Some("build")
    );
    // While it runs, nothing else starts.
    press(&mut model, &[KeyCode::Char('G')]);
    assert!(press(&mut model, &[KeyCode::Enter]).is_empty());
    assert!(model
        .message
        .as_ref()
        .is_some_and(|m| m.0.contains("is running")));
}

#[test]
fn destructive_steps_need_the_typed_phrase_and_cancel_is_the_default() {
    let rb = runbook();
    let mut model = Model::new(rb.clone(), journal(&rb, &["build"]), Mode::Drive, false);
    model.overlay = None;
    press(&mut model, &[KeyCode::Char('G')]);
    // Opening the dialog asks the engine what the step will touch; it shows once answered.
    assert_eq!(
        press(&mut model, &[KeyCode::Enter]),
        vec![Effect::Preview { step: "dns".into() }]
    );
    assert!(matches!(
        model.overlay,
        Some(Overlay::Confirm { target: None, .. })
    ));
    model.preview_ready("other-step", Ok("not this one".into()));
    assert!(matches!(
        model.overlay,
        Some(Overlay::Confirm { target: None, .. })
    ));
    model.preview_ready(
        "dns",
        Ok("point api.example.com at the load balancer".into()),
    );
    assert!(
        matches!(&model.overlay, Some(Overlay::Confirm { target: Some(t), .. }) if t.contains("api.example.com"))
    );
    // A key held since before the modal opened types nothing and confirms nothing.
    type_text(&mut model, "point");
    assert!(matches!(&model.overlay, Some(Overlay::Confirm { typed, .. }) if typed.is_empty()));
    settle(&mut model);
    // Empty and wrong phrases do nothing but say so; `q` and `j` are text here.
    assert!(press(&mut model, &[KeyCode::Enter]).is_empty());
    assert!(
        matches!(&model.overlay, Some(Overlay::Confirm { error: Some(e), .. }) if e.contains("type the phrase"))
    );
    type_text(&mut model, "point api at azure");
    assert!(press(&mut model, &[KeyCode::Enter]).is_empty());
    assert!(
        matches!(&model.overlay, Some(Overlay::Confirm { error: Some(e), .. }) if e.contains("Only 'point api at aws' will be accepted"))
    );
    press(&mut model, &[KeyCode::Esc]);
    assert!(model.overlay.is_none(), "Esc cancels");
    assert!(model.running.is_none());
    // The right phrase runs it.
    press(&mut model, &[KeyCode::Enter]);
    settle(&mut model);
    type_text(&mut model, "point api at aws");
    let effects = press(&mut model, &[KeyCode::Enter]);
    assert_eq!(
        effects,
        vec![Effect::Run {
            step: "dns".into(),
            confirm: Some("point api at aws".into()),
            note: None
        }]
    );
}

#[test]
fn a_step_awaiting_approval_asks_no_phrase() {
    let mut model = quiet_model(&["build"]);
    press(&mut model, &[KeyCode::Char('j'), KeyCode::Char('j')]);
    assert_eq!(model.selected_id(), "dns");
    let effects = press(&mut model, &[KeyCode::Enter]);
    assert_eq!(effects, [Effect::Preview { step: "dns".into() }]);
    model.preview_ready(
        "dns",
        Err("0 of 1 approval(s) in\nAsked by arn:aws:iam::1:user/ana".into()),
    );
    assert_eq!(model.overlay, None, "no phrase asked");
    let (text, _) = model.message.clone().unwrap();
    assert!(
        text.starts_with("awaiting approval: 0 of 1 approval(s) in"),
        "{text}"
    );
}

#[test]
fn manual_steps_marks_and_skips_take_a_note() {
    let rb = runbook();
    let mut model = Model::new(rb.clone(), journal(&rb, &["build"]), Mode::Drive, false);
    model.overlay = None;
    assert_eq!(model.selected_id(), "review");
    press(&mut model, &[KeyCode::Enter]);
    assert!(matches!(
        model.overlay,
        Some(Overlay::Note {
            purpose: NotePurpose::CompleteManual,
            ..
        })
    ));
    settle(&mut model);
    assert!(
        press(&mut model, &[KeyCode::Enter]).is_empty(),
        "an empty note is refused"
    );
    type_text(&mut model, "checked both");
    let effects = press(&mut model, &[KeyCode::Enter]);
    assert_eq!(
        effects,
        vec![Effect::Run {
            step: "review".into(),
            confirm: None,
            note: Some("checked both".into())
        }]
    );
    model.run_ended(Ok("ok".into()));
    press(&mut model, &[KeyCode::Char('s')]);
    settle(&mut model);
    type_text(&mut model, "not needed");
    assert_eq!(
        press(&mut model, &[KeyCode::Enter]),
        vec![Effect::Mark {
            step: "review".into(),
            mark: Mark::Skipped,
            note: "not needed".into()
        }]
    );
    press(&mut model, &[KeyCode::Char('m')]);
    settle(&mut model);
    type_text(&mut model, "done by hand");
    assert_eq!(
        press(&mut model, &[KeyCode::Enter]),
        vec![Effect::Mark {
            step: "review".into(),
            mark: Mark::Done,
            note: "done by hand".into()
        }]
    );
}

#[test]
fn watch_mode_cannot_run_mark_or_confirm() {
    let rb = runbook();
    let mut model = Model::new(
        rb.clone(),
        JournalState::new(),
        Mode::Watch {
            reason: "ana@laptop drives".into(),
        },
        true,
    );
    for code in [
        KeyCode::Enter,
        KeyCode::Char('r'),
        KeyCode::Char('m'),
        KeyCode::Char('s'),
    ] {
        assert!(press(&mut model, &[code]).is_empty());
        assert!(model.overlay.is_none());
        assert_eq!(model.message.as_ref().map(|m| m.1), Some(Level::Warn));
        assert!(model
            .message
            .as_ref()
            .is_some_and(|m| m.0.contains("read-only")));
    }
}

#[test]
fn resume_summary_opens_when_there_is_progress_and_selects_the_next_step() {
    let rb = runbook();
    let model = Model::new(rb.clone(), journal(&rb, &["build"]), Mode::Drive, false);
    match &model.overlay {
        Some(Overlay::Resume(summary)) => {
            assert_eq!((summary.done, summary.total), (1, 3));
            assert_eq!(summary.next.as_deref(), Some("review"));
            assert!(summary
                .last
                .as_deref()
                .is_some_and(|l| l.contains("ana@laptop")));
        }
        other => panic!("expected the resume summary, got {other:?}"),
    }
    assert_eq!(model.selected_id(), "review");
}

#[test]
fn quitting_while_a_step_runs_asks_first() {
    let rb = runbook();
    let mut model = Model::new(rb, JournalState::new(), Mode::Drive, false);
    press(&mut model, &[KeyCode::Enter]);
    assert!(press(&mut model, &[KeyCode::Char('q')]).is_empty());
    assert_eq!(model.overlay, Some(Overlay::QuitWhileRunning));
    press(&mut model, &[KeyCode::Char('n')]);
    assert!(
        model.overlay.is_none() && !model.quitting,
        "any other key stays"
    );
    press(&mut model, &[KeyCode::Char('q')]);
    assert_eq!(
        press(&mut model, &[KeyCode::Char('y')]),
        vec![Effect::Cancel, Effect::Quit]
    );
    let mut idle = Model::new(runbook(), JournalState::new(), Mode::Drive, false);
    assert_eq!(press(&mut idle, &[KeyCode::Char('q')]), vec![Effect::Quit]);
}

#[test]
fn log_search_follow_and_paging() {
    let rb = runbook();
    let mut model = Model::new(rb, JournalState::new(), Mode::Drive, false);
    model.log_height = 10;
    for i in 0..100 {
        model.on_engine_event(EngineEvent::Log {
            step: "build".into(),
            stream: crate::actions::Stream::Stdout,
            line: if i % 30 == 7 {
                format!("line {i}: ERROR disk full")
            } else {
                format!("line {i}")
            },
        });
    }
    assert!(model.follow);
    press(&mut model, &[KeyCode::PageUp]);
    assert!(!model.follow);
    assert_eq!(model.log_top, 81);
    press(&mut model, &[KeyCode::Char('f')]);
    assert!(model.follow);
    press(&mut model, &[KeyCode::Char('/')]);
    type_text(&mut model, "ERROR");
    press(&mut model, &[KeyCode::Enter]);
    assert_eq!(model.search_hit, Some(7));
    press(&mut model, &[KeyCode::Char('n')]);
    assert_eq!(model.search_hit, Some(37));
    press(&mut model, &[KeyCode::Char('N')]);
    assert_eq!(model.search_hit, Some(7));
    press(&mut model, &[KeyCode::Char('N')]);
    assert!(model
        .message
        .as_ref()
        .is_some_and(|m| m.0.contains("no earlier match")));
}

#[test]
fn a_log_storm_does_not_change_what_a_key_does() {
    let rb = runbook();
    let mut model = Model::new(rb, JournalState::new(), Mode::Drive, false);
    for i in 0..200_000 {
        model.on_engine_event(EngineEvent::Log {
            step: "build".into(),
            stream: crate::actions::Stream::Stdout,
            line: format!("{i}"),
        });
    }
    let start = Instant::now();
    press(&mut model, &[KeyCode::Char('j')]);
    assert_eq!(model.selected_id(), "review");
    assert!(start.elapsed() < Duration::from_secs(1));
    let kept = model.logs["build"].len();
    assert!(
        (100_000..=100_000 + 12_500).contains(&kept),
        "bounded in memory: {kept}"
    );
}

// ---- whole screens, drawn by the real view into ratatui's TestBackend --------------------------

fn screen(model: &Model, width: u16, height: u16) -> (String, ratatui::buffer::Buffer) {
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height))
        .unwrap_or_else(|e| panic!("{e}"));
    terminal
        .draw(|frame| {
            super::view::draw(frame, model);
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let buffer = terminal.backend().buffer().clone();
    let text = (0..height)
        .map(|y| {
            (0..width)
                .map(|x| buffer.cell((x, y)).map_or(" ", |c| c.symbol()))
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    (text, buffer)
}

fn quiet_model(done: &[&str]) -> Model {
    let rb = runbook();
    let mut model = Model::new(rb.clone(), journal(&rb, done), Mode::Drive, false);
    model.overlay = None;
    model.driver = Some("ana@laptop (this terminal)".into());
    model.cost = model.runbook.cost.as_ref().map(|spec| {
        let table =
            crate::cost::PriceTable::bundled(&spec.region).unwrap_or_else(|e| panic!("{e}"));
        let source = crate::cost::PriceSource::Bundled {
            read_on: table.read_on(),
        };
        crate::cost::estimate(spec, &table, source).unwrap_or_else(|e| panic!("{e}"))
    });
    model
}

#[test]
fn snapshot_cost_panel_and_what_a_step_starts_billing() {
    let mut model = quiet_model(&["build"]);
    press(&mut model, &[KeyCode::Char('G')]);
    let (text, _) = screen(&model, 120, 40);
    assert!(
        text.contains("this step starts about $13.98/month"),
        "{text}"
    );
    press(&mut model, &[KeyCode::Char('c')]);
    let (text, _) = screen(&model, 120, 40);
    assert!(
        text.contains("Heroku total") && text.contains("public IPv4"),
        "{text}"
    );
    insta::assert_snapshot!(text);
    press(&mut model, &[KeyCode::Char('x')]);
    assert!(model.overlay.is_none());
}

#[test]
fn snapshot_checklist_and_detail() {
    let mut model = quiet_model(&["build"]);
    model.aws = Some("account 123456789012 · us-east-1 · profile prod".into());
    insta::assert_snapshot!(screen(&model, 100, 28).0);
}

#[test]
fn snapshot_resume_summary() {
    let rb = runbook();
    let mut model = Model::new(rb.clone(), journal(&rb, &["build"]), Mode::Drive, false);
    model.banner = Some("REHEARSAL".into());
    insta::assert_snapshot!(screen(&model, 100, 28).0);
}

#[test]
fn snapshot_log_with_ansi_colours_drawn_as_colours() {
    let mut model = quiet_model(&[]);
    for line in [
        "\u{1b}[32mPASS\u{1b}[0m health check",
        "\u{1b}[1;31mERROR\u{1b}[0m connection refused",
        "plain line",
    ] {
        model.on_engine_event(EngineEvent::Log {
            step: "build".into(),
            stream: crate::actions::Stream::Stdout,
            line: line.into(),
        });
    }
    let (text, buffer) = screen(&model, 100, 28);
    assert!(
        !text.contains('\u{1b}') && !text.contains("[32m"),
        "escape codes must not be shown:\n{text}"
    );
    let (x, y) = find(&text, "ERROR").unwrap_or_else(|| panic!("no ERROR in\n{text}"));
    let cell = buffer.cell((x, y)).unwrap_or_else(|| panic!("no cell"));
    assert_eq!(cell.fg, ratatui::style::Color::Red);
    assert!(cell.modifier.contains(ratatui::style::Modifier::BOLD));
    let (x, y) = find(&text, "PASS").unwrap_or_else(|| panic!("no PASS"));
    assert_eq!(
        buffer.cell((x, y)).map(|c| c.fg),
        Some(ratatui::style::Color::Green)
    );
    insta::assert_snapshot!(text);
}

fn find(text: &str, needle: &str) -> Option<(u16, u16)> {
    text.lines().enumerate().find_map(|(y, line)| {
        line.find(needle)
            .map(|byte| (line[..byte].chars().count() as u16, y as u16))
    })
}

#[test]
fn snapshot_confirmation_modal() {
    let mut model = quiet_model(&["build"]);
    press(&mut model, &[KeyCode::Char('G'), KeyCode::Enter]);
    settle(&mut model);
    model.preview_ready("dns", Ok("run `echo cutover` (bash)".into()));
    type_text(&mut model, "point api");
    press(&mut model, &[KeyCode::Enter]);
    insta::assert_snapshot!(screen(&model, 100, 28).0);
}

#[test]
fn a_done_step_rolls_back_with_a_reason_then_its_phrase() {
    // Not done: nothing to roll back.
    let mut model = quiet_model(&["build"]);
    press(&mut model, &[KeyCode::Char('G'), KeyCode::Char('u')]);
    assert!(model.overlay.is_none());
    assert!(model
        .message
        .as_ref()
        .is_some_and(|(m, _)| m.contains("not done")));

    let mut model = quiet_model(&["build", "dns"]);
    press(&mut model, &[KeyCode::Char('G'), KeyCode::Char('u')]);
    settle(&mut model);
    // The reason first: required.
    assert!(press(&mut model, &[KeyCode::Enter]).is_empty());
    type_text(&mut model, "503s on AWS");
    let effects = press(&mut model, &[KeyCode::Enter]);
    assert_eq!(
        effects,
        vec![Effect::RollbackPreview {
            step: "dns".into(),
            note: "503s on AWS".into()
        }]
    );
    settle(&mut model);
    model.preview_ready(
        "dns",
        Ok("$ echo back · WARNING: 12 row(s) changed on this database since the cutover".into()),
    );
    type_text(&mut model, "roll back dn");
    assert!(
        press(&mut model, &[KeyCode::Enter]).is_empty(),
        "wrong phrase"
    );
    insta::assert_snapshot!(screen(&model, 100, 28).0);
    type_text(&mut model, "s");
    let effects = press(&mut model, &[KeyCode::Enter]);
    assert_eq!(
        effects,
        vec![Effect::Rollback {
            step: "dns".into(),
            confirm: "roll back dns".into(),
            note: "503s on AWS".into()
        }]
    );
}

#[test]
fn snapshot_help() {
    let mut model = quiet_model(&[]);
    press(&mut model, &[KeyCode::Char('?')]);
    insta::assert_snapshot!(screen(&model, 100, 28).0);
}

#[test]
fn snapshot_watch_mode() {
    let rb = runbook();
    let mut model = Model::new(
        rb,
        JournalState::new(),
        Mode::Watch {
            reason: "ana@laptop drives (pid 4242)".into(),
        },
        true,
    );
    model.driver = Some("ana@laptop drives (pid 4242)".into());
    insta::assert_snapshot!(screen(&model, 100, 28).0);
}

#[test]
fn snapshot_too_small_and_every_size_from_80x24_draws() {
    let model = quiet_model(&["build"]);
    insta::assert_snapshot!(screen(&model, 79, 20).0);
    for (w, h) in [
        (80, 24),
        (81, 25),
        (120, 40),
        (200, 60),
        (80, 60),
        (200, 24),
    ] {
        let (text, _) = screen(&model, w, h);
        assert!(
            text.contains("Steps 1/3") && text.contains("log: review"),
            "{w}×{h}:\n{text}"
        );
    }
}

const FREEZE: &str = r#"
[runbook]
name = "gengar: the write freeze"
app = "gengar"

[[window]]
name = "write freeze"
from = "maintenance-on"
to = "dns-cutover"

[[phase]]
id = "database"
title = "Database move"

[[phase.step]]
id = "maintenance-on"
do = "shell"
run = "heroku maintenance:on"

[[phase.step]]
id = "db-copy"
do = "db.copy"
source = "postgres://u:p@heroku.example/d"
target = "postgres://u:p@rds.example/d"
needs = ["maintenance-on"]

[[phase.step]]
id = "deploy"
do = "shell"
run = "true"
needs = ["db-copy"]

[[phase.step]]
id = "dns-cutover"
do = "dns.point"
zone = "example.com"
name = "api.example.com"
target = "alb.example"
needs = ["deploy"]

[[phase.step]]
id = "smoke"
do = "http"
url = "https://api.example.com/health"
needs = ["dns-cutover"]
"#;

use crate::journal::testing::Run;

/// A journal where each (step, start, end, outputs) ran once and succeeded.
fn timed(runbook: &Runbook, runs: &[Run<'_>]) -> JournalState {
    crate::journal::testing::timed(runs, |id| {
        runbook
            .step(id)
            .map(|s| s.digest.clone())
            .unwrap_or_default()
    })
}

fn freeze_model(runs: &[Run<'_>], now: &str) -> Model {
    let rb = Arc::new(
        Runbook::from_source(
            SourceFile::new("runbook.toml", FREEZE.to_string()),
            &[],
            &Registry::builtin(),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let journal = timed(&rb, runs);
    let mut model = Model::new(rb, journal, Mode::Drive, false);
    model.overlay = None;
    model.driver = Some("ana@laptop (this terminal)".into());
    model.now = crate::clock::parse_time(now).unwrap();
    model
}

#[test]
fn snapshot_an_open_write_freeze() {
    let model = freeze_model(
        &[
            (
                "maintenance-on",
                "2026-11-30T02:00:00.000Z",
                "2026-11-30T02:00:01.000Z",
                &[],
            ),
            (
                "db-copy",
                "2026-11-30T02:00:02.000Z",
                "2026-11-30T02:04:02.000Z",
                &[],
            ),
        ],
        "2026-11-30T02:06:13.000Z",
    );
    let (text, _) = screen(&model, 110, 26);
    assert!(text.contains("WRITE FREEZE 06:12 · predicted"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn snapshot_the_write_freeze_after_it_closed() {
    // What the engine journaled when the freeze opened, from a rehearsal's history.
    let recorded = serde_json::json!({"write freeze": {
        "total_secs": 410.0, "dns_ttl_secs": 60.0,
        "dns_how": "the record's TTL after `dns-ttl` (resolvers keep the old answer that long)",
        "steps": [
            {"step": "db-copy", "secs": 230.0, "how": "history 23.0s, ×10.00 for the source's size (21.9 MiB then, 219.0 MiB now)"},
            {"step": "deploy", "secs": 100.0, "how": "history 1m 40s"},
            {"step": "dns-cutover", "secs": 20.0, "how": "history 20.0s"},
        ]}})
    .to_string();
    let mut model = freeze_model(
        &[
            (
                "maintenance-on",
                "2026-11-30T02:00:00.000Z",
                "2026-11-30T02:00:01.000Z",
                &[("window_prediction", recorded.as_str())],
            ),
            (
                "db-copy",
                "2026-11-30T02:00:02.000Z",
                "2026-11-30T02:04:02.000Z",
                &[("throughput_mib_s", "2.0,8.5,12.0,11.5,3.0")],
            ),
            (
                "deploy",
                "2026-11-30T02:04:05.000Z",
                "2026-11-30T02:06:05.000Z",
                &[],
            ),
            (
                "dns-cutover",
                "2026-11-30T02:06:10.000Z",
                "2026-11-30T02:06:40.000Z",
                &[],
            ),
        ],
        "2026-11-30T03:00:00.000Z",
    );
    press(&mut model, &[KeyCode::Char('w')]);
    assert!(matches!(model.overlay, Some(Overlay::Windows)));
    let (text, _) = screen(&model, 110, 24);
    assert!(
        !text.contains("WRITE FREEZE"),
        "closed: no longer in the header\n{text}"
    );
    assert!(text.contains("closed: it lasted 6m 39s"), "{text}");
    assert!(
        text.contains("predicted 6m 50s"),
        "the prediction made when it opened\n{text}"
    );
    insta::assert_snapshot!(text);
}

const SOAK: &str = r#"
[runbook]
name = "gengar: Heroku → AWS ECS Fargate"
app = "gengar"

[[phase]]
id = "cutover"
title = "DNS cutover and soak"

[[phase.step]]
id = "heroku-baseline"
do = "heroku.baseline"
app = "gengar"

[[phase.step]]
id = "dns-cutover"
do = "dns.point"
zone = "example.com"
name = "api.example.com"
target = "alb.example"
needs = ["heroku-baseline"]

[[phase.step]]
id = "deploy-rds"
do = "ecs.deploy"
cluster = "gengar"
service = "gengar"
needs = ["dns-cutover"]

[[phase.step]]
id = "soak-gate"
do = "soak.gate"
load_balancer = "alb.example"
target_group = "gengar"
rds_instance = "gengar"
cluster = "gengar"
service = "gengar"
heroku_errors_per_1000 = "2.00"
heroku_p99_ms = "120"
needs = ["deploy-rds"]
"#;

/// A soak of an hour after a cutover at 02:00:30: a deployment at 02:30, then a 5xx burst
/// and slow answers from 02:44 to 02:46 until the circuit breaker rolled back at 02:46:20.
/// The figures are made up here (CloudWatch's are read in tests/aws.rs); the view draws what
/// soak.gate keeps.
fn soak_model() -> Model {
    use crate::soak::gate::{evidence, minutes, Database, Figures, Heroku, Thresholds};
    let rb = Arc::new(
        Runbook::from_source(
            SourceFile::new("runbook.toml", SOAK.to_string()),
            &[],
            &Registry::builtin(),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let from = 1_796_004_060; // 2026-11-30T02:01:00Z
    let to = from + 59 * 60;
    let mut f = Figures::default();
    for (i, m) in minutes(from, to).enumerate() {
        let burst = (43..=45).contains(&i);
        f.requests.insert(m, 100.0 + (i % 7) as f64 * 10.0);
        f.errors.insert(m, if burst { 30.0 } else { 0.0 });
        f.p99_ms.insert(
            m,
            if burst {
                900.0
            } else {
                80.0 + (i % 5) as f64 * 10.0
            },
        );
        f.healthy.insert(m, if burst { 1.0 } else { 2.0 });
        f.connections.insert(m, 10.0 + (i % 4) as f64);
        f.free_storage.insert(m, 15.0 * 1024f64.powi(3));
        f.cpu.insert(m, 20.0 + (i % 9) as f64);
        f.memory.insert(m, 41.0);
    }
    f.window_p99_ms = Some(900.0);
    let heroku = Heroku {
        errors_per_1000: 2.0,
        p99_ms: 120.0,
    };
    let db = Database {
        allocated_bytes: 20.0 * 1024f64.powi(3),
        max_connections: 112.0,
    };
    let kept = evidence(&f, &heroku, &db, &Thresholds::default(), from, to);
    let figures = serde_json::to_string(&kept).unwrap();
    let buckets: Vec<crate::soak::Bucket> = (0..30)
        .map(|i| crate::soak::Bucket {
            minute: 1_796_000_400 + i * 60, // from 2026-11-30T01:00:00Z
            requests: 90 + (i % 6) * 12,
            errors: u64::from(i % 10 == 0),
            p50_ms: Some(40),
            p95_ms: Some(90),
            p99_ms: Some(100 + (i % 4) * 10),
        })
        .collect();
    let buckets = serde_json::to_string(&buckets).unwrap();
    let marks = serde_json::json!([
        {"at": from + 29 * 60 + 40, "kind": "task", "label": "(service gengar) has started 1 tasks: (task 1)."},
        {"at": from + 45 * 60 + 20, "kind": "rollback", "label": "(service gengar) (deployment ecs-svc/2) deployment failed: ECS deployment circuit breaker: rolling back."},
    ])
    .to_string();
    let breaches = serde_json::json!([
        {"figure": "5xx rate (ALB target + ELB 5xx / RequestCount)", "minute": from + 43 * 60,
         "value": "1.16% (90 of 7740; the most, 30, in this minute)", "limit": "≤ 0.70%"},
        {"figure": "p99 response time (ALB TargetResponseTime)", "minute": from + 43 * 60,
         "value": "900 ms over the window", "limit": "≤ 180 ms"},
    ])
    .to_string();
    let journal = timed(
        &rb,
        &[
            (
                "heroku-baseline",
                "2026-11-30T01:30:00.000Z",
                "2026-11-30T01:30:05.000Z",
                &[("buckets", &buckets), ("p99_ms", "130")],
            ),
            (
                "dns-cutover",
                "2026-11-30T02:00:20.000Z",
                "2026-11-30T02:00:30.000Z",
                &[],
            ),
            (
                "deploy-rds",
                "2026-11-30T02:28:00.000Z",
                "2026-11-30T02:30:10.000Z",
                &[],
            ),
            (
                "soak-gate",
                "2026-11-30T03:05:00.000Z",
                "2026-11-30T03:05:02.000Z",
                &[
                    ("figures", &figures),
                    ("marks", &marks),
                    ("verdict", "no-go"),
                    ("breaches", &breaches),
                ],
            ),
        ],
    );
    let mut model = Model::new(rb, journal, Mode::Drive, false);
    model.overlay = None;
    model.driver = Some("ana@laptop (this terminal)".into());
    model.now = crate::clock::parse_time("2026-11-30T03:06:00.000Z").unwrap();
    model
}

#[test]
fn snapshot_the_soak_view_charts_aws_beside_herokus_baseline() {
    let mut model = soak_model();
    press(&mut model, &[KeyCode::Char('S')]);
    assert_eq!(model.overlay, Some(Overlay::Soak));
    let (text, buffer) = screen(&model, 140, 44);
    for needle in [
        "Soak: AWS against Heroku's baseline",
        "2026-11-30 02:01 → 2026-11-30 03:00 UTC (60 min) · the gate: NO-GO",
        "Heroku's baseline 2026-11-30 01:00 → 2026-11-30 01:29 UTC",
        "no-go: 5xx rate (ALB target + ELB 5xx / RequestCount): 1.16%",
        "5xx rate",
        "judged 1.2% limit ≤ 0.70",
        "judged 900 ms limit ≤ 180",
        "Heroku 0.20",
        "p99 response time",
        "limit ≤ 180",
        "healthy targets",
        "RDS free storage",
        "limit > 4 ",
        "RDS CPU",
        "no data point in the window",
        "ECS service CPU",
    ] {
        assert!(text.contains(needle), "{needle}\n{text}");
    }
    // Charts in braille, and Heroku's minutes as a sparkline beside three of them.
    assert!(
        text.chars()
            .filter(|c| ('\u{2801}'..='\u{28ff}').contains(c))
            .count()
            > 300
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("│Heroku")).count(),
        2,
        "a row of two cells with Heroku's sparkline, then the requests' row: {text}"
    );
    // The marks under the axis: the cutover (C, 02:00:30, in the minute before the first one
    // judged: at its start), the deployment (D, 02:30:10), the task it started and the
    // rollback (R, 02:46:20); the axis's ends and top on the cell's border.
    let axis = text
        .lines()
        .find(|l| l.starts_with("││C─"))
        .unwrap_or_else(|| panic!("no axis with its marks\n{text}"));
    assert!(
        axis.find('C') < axis.find('D') && axis.find('D') < axis.find('R'),
        "{axis}"
    );
    assert!(text.contains("└ 02:01 · top 990 ─"), "{text}");
    // The rollback's mark is drawn in its colour.
    let (x, y) = find(&text, "─R─").map(|(x, y)| (x + 1, y)).unwrap();
    assert_eq!(
        buffer.cell((x, y)).map(|c| c.fg),
        Some(ratatui::style::Color::LightRed)
    );
    insta::assert_snapshot!(text);
    // Any key closes it.
    press(&mut model, &[KeyCode::Char('x')]);
    assert_eq!(model.overlay, None);
}

#[test]
fn the_soak_view_on_a_small_terminal_is_a_line_per_figure() {
    let mut model = soak_model();
    press(&mut model, &[KeyCode::Char('S')]);
    let (text, _) = screen(&model, 80, 24);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains('▁') || l.contains('█'))
        .collect();
    assert!(lines.len() >= 8, "{text}");
    assert!(
        text.contains("5xx rate") && text.contains("limit ≤ 0.70"),
        "{text}"
    );
}

#[test]
fn the_soak_view_says_why_it_is_empty() {
    let rb = Arc::new(
        Runbook::from_source(
            SourceFile::new("runbook.toml", SOAK.to_string()),
            &[],
            &Registry::builtin(),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut model = Model::new(rb, JournalState::new(), Mode::Drive, false);
    model.overlay = None;
    press(&mut model, &[KeyCode::Char('S')]);
    let (text, _) = screen(&model, 100, 28);
    assert!(
        text.contains("no evidence yet: `soak-gate` reads CloudWatch's figures when it runs"),
        "{text}"
    );
    // A runbook without a gate has no soak view.
    let mut model = quiet_model(&[]);
    press(&mut model, &[KeyCode::Char('S')]);
    assert_eq!(model.overlay, None);
    assert!(model
        .message
        .as_ref()
        .is_some_and(|(m, _)| m.contains("no soak.gate step")));
}
