//! The terminal UI: the only place that knows ratatui and crossterm.
//!
//! The engine runs on a tokio task and reports through a queue the UI drains once per frame,
//! so a log storm never delays a key; the screen is redrawn on change, at most ~60 times a
//! second, from the model alone.

pub mod keys;
pub mod logstore;
pub mod model;
mod soak;
mod theme;
pub mod view;

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event};
use ratatui::crossterm::execute;
use ratatui::DefaultTerminal;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::actions::lines::LineSplitter;
use crate::actions::Outcome;
use crate::engine::{
    describe_outcome, Engine, EngineError, EngineEvent, RunRequest, Subscriber, Target,
};
use crate::journal::{self, lock, FileStore, JournalStore};
use crate::runbook::Runbook;
use crate::status::StepState;
use crate::workspace::Workspace;

pub use model::{Action, Effect, Mode, Model};

/// The longest the UI waits between frames while something changes.
const FRAME: Duration = Duration::from_millis(16);
/// How often the journal and a followed log file are looked at (watch mode is at most this far behind).
const REFRESH: Duration = Duration::from_millis(250);
/// The most of a past log file read back when a step is selected.
const LOG_READBACK_BYTES: u64 = 32 << 20;

/// Everything the UI needs to start.
pub struct Setup {
    pub runbook: Arc<Runbook>,
    pub workspace: Workspace,
    /// Present when this instance drives (holds the lock).
    pub engine: Option<Engine>,
    pub mode: Mode,
    pub banner: Option<String>,
    pub cost: Option<crate::cost::Estimate>,
    /// "AWS 123456789012 · us-east-1 · profile prod", from the runbook's `[aws]`.
    pub aws: Option<String>,
    pub mouse: bool,
    pub log_capacity: usize,
    /// An earlier run's journal (`--history`): its durations predict the windows.
    pub history: Option<crate::journal::JournalState>,
    pub actor: String,
    /// When the process started, to log the time to the first frame.
    pub started: std::time::Instant,
    /// Fired when this driver loses the S3 lock: the running step is cancelled, and said.
    pub lost: Option<CancellationToken>,
}

/// Engine events waiting for the next frame.
#[derive(Clone, Default)]
struct EventQueue {
    events: Arc<Mutex<VecDeque<EngineEvent>>>,
    wake: Arc<Notify>,
}

impl Subscriber for EventQueue {
    fn on_event(&mut self, event: &EngineEvent) {
        if let Ok(mut q) = self.events.lock() {
            q.push_back(event.clone());
        }
        self.wake.notify_one();
    }
}

impl EventQueue {
    fn drain(&self) -> Vec<EngineEvent> {
        self.events
            .lock()
            .map(|mut q| q.drain(..).collect())
            .unwrap_or_default()
    }
}

/// A log file being followed (watch mode): where we are in it.
struct Tail {
    step: String,
    path: PathBuf,
    offset: u64,
    splitter: LineSplitter,
}

struct App {
    model: Model,
    workspace: Workspace,
    engine: Option<Arc<tokio::sync::Mutex<Engine>>>,
    queue: EventQueue,
    journal_len: Option<u64>,
    tail: Option<Tail>,
    cancel: Option<CancellationToken>,
    run_task: Option<tokio::task::JoinHandle<Result<String, String>>>,
    checklist_rows: Vec<(u16, usize)>,
    /// The engine's answers to [`Effect::Preview`]: (step, what it will touch).
    previews: (
        mpsc::UnboundedSender<Preview>,
        mpsc::UnboundedReceiver<Preview>,
    ),
}

/// A step id and what it will touch, or why its phrase is not asked yet (its approvals are
/// not all in).
type Preview = (String, Result<String, String>);

/// Shows a runbook that does not load, until a key is pressed.
pub fn show_error(text: &str) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> std::io::Result<()> {
        terminal.draw(|frame| {
            let body = format!("The runbook has errors; nothing can run until they are fixed.\n\n{text}\n\nPress any key to quit.");
            frame.render_widget(
                ratatui::widgets::Paragraph::new(body)
                    .wrap(ratatui::widgets::Wrap { trim: false })
                    .block(ratatui::widgets::Block::bordered().title(" cutover: invalid runbook ")),
                frame.area(),
            );
        })?;
        loop {
            if let Event::Key(_) = event::read()? {
                return Ok(());
            }
        }
    })();
    ratatui::restore();
    result
}

/// Runs the UI until the operator quits.
pub async fn run(setup: Setup) -> std::io::Result<()> {
    let loaded = journal::load(
        &FileStore::new(setup.workspace.journal_path())
            .read_all()
            .unwrap_or_default(),
    );
    let driver_alive = driver_alive(&setup.workspace);
    let warning = loaded.warning();
    let mut model = Model::new(
        setup.runbook.clone(),
        loaded.state,
        setup.mode.clone(),
        driver_alive,
    );
    model.banner = setup.banner.clone();
    model.history = setup.history.clone();
    model.cost = setup.cost.clone();
    model.aws = setup.aws.clone().filter(|a| !a.is_empty());
    model.log_capacity = setup.log_capacity;
    model.driver = Some(match &setup.mode {
        Mode::Drive => format!("{} (this terminal)", setup.actor),
        Mode::Watch { reason } => reason.clone(),
    });
    if let Some(warning) = warning {
        model.say(warning, model::Level::Warn);
    }
    let queue = EventQueue::default();
    let engine = setup.engine.map(|mut engine| {
        engine.subscribe(Box::new(queue.clone()));
        Arc::new(tokio::sync::Mutex::new(engine))
    });
    let mut app = App {
        model,
        workspace: setup.workspace,
        engine,
        queue,
        journal_len: None,
        tail: None,
        cancel: None,
        run_task: None,
        checklist_rows: Vec::new(),
        previews: mpsc::unbounded_channel(),
    };
    let initial = app.model.selected_id().to_string();
    app.load_log(&initial);

    let mut terminal = ratatui::try_init()?;
    if setup.mouse {
        execute!(std::io::stdout(), EnableMouseCapture)?;
    }
    let result = app
        .event_loop(&mut terminal, setup.started, setup.lost.unwrap_or_default())
        .await;
    // The operator quits: the tunnels close with the session.
    if let Some(engine) = &app.engine {
        engine.lock().await.close_tunnels().await;
    }
    if setup.mouse {
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
    }
    ratatui::restore();
    result
}

fn driver_alive(workspace: &Workspace) -> bool {
    // A mirror of an S3 state: its S3 lock's holder as the follower last saw it.
    if let Some((alive, _)) = crate::state::s3::followed_driver(&workspace.root) {
        return alive;
    }
    // Held means someone drives: the kernel lock ends with its holders.
    lock::read(&workspace.lock_path()).ok().flatten().is_some()
}

impl App {
    async fn event_loop(
        &mut self,
        terminal: &mut DefaultTerminal,
        started: std::time::Instant,
        lost: CancellationToken,
    ) -> std::io::Result<()> {
        let mut first_frame = true;
        // crossterm's reader blocks: it gets a thread of its own.
        let (term_tx, mut term_rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            while let Ok(ev) = event::read() {
                if term_tx.send(ev).is_err() {
                    break;
                }
            }
        });
        // A closed terminal (SIGHUP) or a kill (SIGTERM) cancels the running step and quits,
        // so the journal records it and the lock is released.
        let hangup = CancellationToken::new();
        for kind in [
            tokio::signal::unix::SignalKind::hangup(),
            tokio::signal::unix::SignalKind::terminate(),
        ] {
            if let Ok(mut signal) = tokio::signal::unix::signal(kind) {
                let hangup = hangup.clone();
                tokio::spawn(async move {
                    signal.recv().await;
                    hangup.cancel();
                });
            }
        }
        let size = terminal.size()?;
        self.model.size = (size.width, size.height);
        let mut frame = tokio::time::interval(FRAME);
        frame.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut dirty = true;
        loop {
            tokio::select! {
                biased;
                Some(ev) = term_rx.recv() => {
                    self.on_terminal_event(ev);
                    dirty = true;
                }
                joined = async { self.run_task.as_mut().map_or_else(|| futures_pending(), |t| Box::pin(async { t.await.unwrap_or_else(|e| Err(e.to_string())) })).await }, if self.run_task.is_some() => {
                    self.run_task = None;
                    self.cancel = None;
                    self.drain_engine();
                    self.model.run_ended(joined);
                    self.reload_journal(true);
                    dirty = true;
                }
                Some((step, text)) = self.previews.1.recv() => {
                    self.model.preview_ready(&step, text);
                    dirty = true;
                }
                _ = frame.tick() => {
                    dirty |= self.drain_engine();
                    if dirty {
                        self.draw(terminal)?;
                        dirty = false;
                        if first_frame {
                            first_frame = false;
                            tracing::info!(ms = started.elapsed().as_millis() as u64, "first frame");
                        }
                    }
                }
                () = lost.cancelled(), if self.engine.is_some() => {
                    // The S3 lock is gone: the step stops, and nothing more can be written.
                    self.apply(Effect::Cancel);
                    self.engine = None;
                    self.model.say(
                        "this instance lost the S3 lock: its step is cancelled and it drives no more (tui.log says why)",
                        model::Level::Error,
                    );
                    dirty = true;
                }
                () = hangup.cancelled(), if !self.model.quitting => {
                    self.apply(Effect::Cancel);
                    self.model.quitting = true;
                }
                _ = refresh.tick() => {
                    self.model.tick += 1;
                    self.reload_journal(false);
                    self.follow_log_file();
                    dirty = true;
                }
            }
            if self.model.quitting && self.run_task.is_none() {
                return Ok(());
            }
        }
    }

    fn draw(&mut self, terminal: &mut DefaultTerminal) -> std::io::Result<()> {
        self.model.now = SystemTime::now();
        let mut drawn = view::Drawn::default();
        terminal.draw(|frame| drawn = view::draw(frame, &self.model))?;
        self.checklist_rows = drawn.checklist_rows;
        if drawn.log_height > 0 {
            self.model.log_height = drawn.log_height;
        }
        Ok(())
    }

    fn drain_engine(&mut self) -> bool {
        let events = self.queue.drain();
        let any = !events.is_empty();
        let mut journal_changed = false;
        for event in events {
            journal_changed |= matches!(
                event,
                EngineEvent::StepStarted { .. }
                    | EngineEvent::Output { .. }
                    | EngineEvent::StepFinished { .. }
            );
            self.model.on_engine_event(event);
        }
        if journal_changed {
            self.reload_journal(true);
        }
        any
    }

    fn on_terminal_event(&mut self, event: Event) {
        let action = match event {
            Event::Key(key) => keys::action_for(&self.model, key),
            Event::Mouse(mouse) => keys::action_for_mouse(&self.model, mouse, &self.checklist_rows),
            Event::Resize(w, h) => Some(Action::Resize(w, h)),
            _ => None,
        };
        if let Some(action) = action {
            let effects = self.model.update(action);
            for effect in effects {
                self.apply(effect);
            }
        }
    }

    /// The engine and a cancel token for a step or rollback about to run (the token kept for
    /// Ctrl-C), or `None` when this instance does not drive (said to the model).
    fn start_task(&mut self) -> Option<(Arc<tokio::sync::Mutex<Engine>>, CancellationToken)> {
        let Some(engine) = self.engine.clone() else {
            self.model
                .run_ended(Err("read-only: this instance does not drive".into()));
            return None;
        };
        let cancel = CancellationToken::new();
        self.cancel = Some(cancel.clone());
        Some((engine, cancel))
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Run {
                step,
                confirm,
                note,
            } => {
                let Some((engine, cancel)) = self.start_task() else {
                    return;
                };
                let mut request = RunRequest::new(Target::Step(step));
                request.confirm = confirm;
                request.note = note;
                request.cancel = cancel;
                self.run_task = Some(tokio::spawn(async move {
                    let mut engine = engine.lock().await;
                    match engine.run(request).await {
                        Ok(result) => Ok(format!(
                            "{}: {}",
                            result.step,
                            describe_outcome(&result.outcome)
                        ))
                        .and_then(|text| match result.outcome {
                            Outcome::Succeeded { .. } => Ok(text),
                            _ => Err(text),
                        }),
                        Err(refusal) => Err(refusal.to_string()),
                    }
                }));
            }
            Effect::Mark { step, mark, note } => {
                let Some(engine) = self.engine.clone() else {
                    self.model.say(
                        "read-only: this instance does not drive",
                        model::Level::Warn,
                    );
                    return;
                };
                let result = match engine.try_lock() {
                    Ok(mut engine) => engine.mark(&step, mark, &note).map_err(|e| e.to_string()),
                    Err(_) => Err("a step is running".to_string()),
                };
                match result {
                    Ok(()) => self.model.say(
                        format!("{step}: marked {mark:?}").to_lowercase(),
                        model::Level::Info,
                    ),
                    Err(e) => self.model.say(e, model::Level::Error),
                }
                self.reload_journal(true);
            }
            Effect::Cancel => {
                if let Some(cancel) = &self.cancel {
                    cancel.cancel();
                }
            }
            Effect::LoadLog { step } => self.load_log(&step),
            Effect::Preview { step } => {
                let Some(engine) = self.engine.clone() else {
                    return;
                };
                let answer = self.previews.0.clone();
                tokio::spawn(async move {
                    let mut engine = engine.lock().await;
                    let text = match engine.approvals_in(&step).await {
                        Ok(()) => Ok(engine.preview(&step).await.unwrap_or_else(|e| e)),
                        Err(missing) => Err(missing),
                    };
                    let _ = answer.send((step, text));
                });
            }
            Effect::Rollback {
                step,
                confirm,
                note,
            } => {
                let Some((engine, cancel)) = self.start_task() else {
                    return;
                };
                let request = crate::engine::RollbackRequest {
                    step,
                    confirm: Some(confirm),
                    note,
                    // The dialog showed what relies on it; the phrase typed insists.
                    only: true,
                    cancel,
                };
                self.run_task = Some(tokio::spawn(async move {
                    let mut engine = engine.lock().await;
                    match engine.rollback(request).await {
                        Ok(result) => match result.outcome {
                            Outcome::Succeeded { .. } => {
                                Ok(format!("{}: rolled back", result.step))
                            }
                            other => Err(format!(
                                "{}: rollback {}",
                                result.step,
                                describe_outcome(&other)
                            )),
                        },
                        Err(refusal) => Err(refusal.to_string()),
                    }
                }));
            }
            Effect::RollbackPreview { step, note } => {
                let Some(engine) = self.engine.clone() else {
                    return;
                };
                let answer = self.previews.0.clone();
                tokio::spawn(async move {
                    let mut engine = engine.lock().await;
                    let ask = |only: bool| crate::engine::RollbackRequest {
                        step: step.clone(),
                        confirm: None,
                        note: note.clone(),
                        only,
                        cancel: CancellationToken::new(),
                    };
                    let mut text = String::new();
                    let mut answer_of = engine.rollback(ask(false)).await;
                    if let Err(EngineError::DependantsDone { chain, .. }) = &answer_of {
                        text.push_str(&format!(
                            "done after it and relying on it: roll them back first, in this order: {} — or type the phrase to roll back only {step}. ",
                            chain.join(" → ")
                        ));
                        answer_of = engine.rollback(ask(true)).await;
                    }
                    match answer_of {
                        Err(EngineError::RollbackConfirmationRequired { consequence, .. }) => text
                            .push_str(
                                &consequence
                                    .trim_start_matches("The rollback will: ")
                                    .replace('\n', " · "),
                            ),
                        Err(EngineError::NothingToUndo { why, .. }) => {
                            text.push_str(&format!("nothing to undo: {why}"))
                        }
                        Err(other) => text.push_str(&format!("refused: {other}")),
                        Ok(_) => text.push_str("(it ran without its phrase)"),
                    }
                    let _ = answer.send((step, Ok(text)));
                });
            }
            Effect::Quit => {}
        }
    }

    /// Re-reads the journal when it grew (or when told to), and recomputes the rows.
    fn reload_journal(&mut self, force: bool) {
        let path = self.workspace.journal_path();
        let len = std::fs::metadata(&path).map(|m| m.len()).ok();
        if !force && len == self.journal_len {
            // States still change with the clock (gates) and the lock (watch mode).
            let alive = self.driver_alive();
            self.model.refresh_rows(alive);
            return;
        }
        self.journal_len = len;
        let loaded = journal::load(&FileStore::new(&path).read_all().unwrap_or_default());
        if let journal::Integrity::Broken { .. } = loaded.integrity {
            if let Some(w) = loaded.warning() {
                self.model.say(w, model::Level::Error);
            }
        }
        let alive = self.driver_alive();
        self.model.replace_journal(loaded.state, alive);
    }

    fn driver_alive(&self) -> bool {
        match self.model.mode {
            // This instance holds the lock; a started step it is not running was interrupted.
            Mode::Drive => false,
            Mode::Watch { .. } => driver_alive(&self.workspace),
        }
    }

    /// Reads the last attempt's log of a step from disk into its store.
    fn load_log(&mut self, step: &str) {
        let Some(attempt) = self
            .model
            .journal
            .step(step)
            .map(|r| r.attempts)
            .filter(|a| *a > 0)
        else {
            return;
        };
        let path = self
            .workspace
            .resolve(&Workspace::log_relative(step, attempt));
        let Ok(mut file) = std::fs::File::open(&path) else {
            return;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(LOG_READBACK_BYTES);
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
            return;
        }
        let store = self.model.store(step);
        store.clear();
        let mut splitter = LineSplitter::default();
        splitter.push(&bytes, &mut |line| store.push(&line));
        splitter.finish(&mut |line| store.push(&line));
    }

    /// Watch mode: follow the running step's log file as the driver writes it.
    fn follow_log_file(&mut self) {
        if !self.model.is_watching() {
            return;
        }
        let running = self
            .model
            .rows
            .iter()
            .zip(self.model.runbook.steps.iter())
            .find(|(row, _)| row.state == StepState::Running)
            .map(|(_, step)| step.id.clone());
        let Some(step) = running else {
            // The step ended: its last lines, written (or, from S3, arrived) just before.
            if let Some(mut tail) = self.tail.take() {
                let mut bytes = Vec::new();
                if let Ok(mut file) = std::fs::File::open(&tail.path) {
                    if file.seek(SeekFrom::Start(tail.offset)).is_ok() {
                        let _ = file.read_to_end(&mut bytes);
                    }
                }
                let store =
                    self.model.logs.entry(tail.step.clone()).or_insert_with(|| {
                        logstore::LogStore::with_capacity(self.model.log_capacity)
                    });
                tail.splitter.push(&bytes, &mut |line| store.push(&line));
                tail.splitter.finish(&mut |line| store.push(&line));
            }
            return;
        };
        let attempt = self.model.journal.step(&step).map_or(0, |r| r.attempts);
        let path = self
            .workspace
            .resolve(&Workspace::log_relative(&step, attempt));
        if self.tail.as_ref().is_none_or(|t| t.path != path) {
            self.model.store(&step).clear();
            self.tail = Some(Tail {
                step: step.clone(),
                path: path.clone(),
                offset: 0,
                splitter: LineSplitter::default(),
            });
        }
        let Some(tail) = self.tail.as_mut() else {
            return;
        };
        let Ok(mut file) = std::fs::File::open(&tail.path) else {
            return;
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(tail.offset)).is_err() || file.read_to_end(&mut bytes).is_err()
        {
            return;
        }
        tail.offset += bytes.len() as u64;
        let store = self
            .model
            .logs
            .entry(tail.step.clone())
            .or_insert_with(|| logstore::LogStore::with_capacity(self.model.log_capacity));
        tail.splitter.push(&bytes, &mut |line| store.push(&line));
    }
}

fn futures_pending(
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>> {
    Box::pin(std::future::pending())
}

#[cfg(test)]
mod tests;
