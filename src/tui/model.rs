//! The TUI's state and `update`: actions (from keys) and engine events in, effects out.
//! Nothing here touches the terminal; rendering is a pure function of this model.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::actions::{Progress, Registry, Stream};
use crate::engine::{describe_outcome, EngineEvent, Mark};
use crate::journal::{JournalState, Recorded};
use crate::runbook::{ActionCatalog, Runbook};
use crate::status::{step_states, StepState};

use super::logstore::LogStore;

/// Who this instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Holds the lock: may run, mark and confirm.
    Drive,
    /// Another instance drives: follow only.
    Watch { reason: String },
}

/// What a key press means, once overlays are taken into account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    Top,
    Bottom,
    Run,
    Rerun,
    MarkDone,
    Skip,
    /// Roll back the selected done step (its rollback action, a note, its phrase).
    Rollback,
    Search,
    NextMatch,
    PrevMatch,
    ToggleFollow,
    PageUp,
    PageDown,
    ScrollLog(i32),
    Help,
    Quit,
    Escape,
    Enter,
    Char(char),
    Backspace,
    /// Ctrl-U in a text field: clear it, as in a shell.
    ClearInput,
    /// Ctrl-W in a text field: delete the word before the cursor, as in a shell.
    DeleteWord,
    Resize(u16, u16),
    ToggleCost,
    ToggleWindows,
    /// The soak: AWS's figures as charts beside Heroku's baseline.
    ToggleSoak,
    /// A click on a checklist row (mouse mode).
    Select(usize),
}

/// Work for the runtime to do on the model's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Run {
        step: String,
        confirm: Option<String>,
        note: Option<String>,
    },
    Mark {
        step: String,
        mark: Mark,
        note: String,
    },
    /// Cancel the running step.
    Cancel,
    /// Load the log of a step's last attempt from disk.
    LoadLog {
        step: String,
    },
    /// Ask the engine what a destructive step will touch, for its confirmation.
    Preview {
        step: String,
    },
    /// Run a step's rollback (the phrase typed, the operator's reason).
    Rollback {
        step: String,
        confirm: String,
        note: String,
    },
    /// Ask the engine what a rollback will do (and lose), and what relies on the step.
    RollbackPreview {
        step: String,
        note: String,
    },
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotePurpose {
    /// A manual step: the note completes it.
    CompleteManual,
    MarkDone,
    Skip,
    /// Why the step is rolled back: then its phrase.
    Rollback,
}

/// A modal over the main screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    Help,
    Resume(ResumeSummary),
    Confirm {
        step: String,
        phrase: String,
        typed: String,
        /// What will happen, and the way back (or "irreversible").
        consequence: String,
        /// What it will touch, secrets filled in and masked (for a copy: the target's host and
        /// database); read by the engine when the dialog opens, `None` until it answers.
        target: Option<String>,
        error: Option<String>,
        /// Set when the phrase confirms a rollback: the operator's reason.
        rollback: Option<String>,
    },
    Note {
        step: String,
        purpose: NotePurpose,
        text: String,
        error: Option<String>,
    },
    SearchInput {
        text: String,
    },
    QuitWhileRunning,
    /// The monthly estimate and the Heroku comparison.
    Cost,
    /// The windows (the write freeze): each step predicted, and after it closed, predicted
    /// against actual with the copy's throughput.
    Windows,
    /// The soak's evidence as charts (crate::status::soak_picture), the whole screen.
    Soak,
}

/// Shown at start when the journal already has progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeSummary {
    pub done: usize,
    pub total: usize,
    pub last: Option<String>,
    pub interrupted: Vec<String>,
    pub changed: Vec<String>,
    pub failed: Vec<String>,
    pub next: Option<String>,
}

/// The step being run now.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub step: String,
    pub attempt: u32,
    pub started: Instant,
    pub progress: Option<Progress>,
}

/// One row of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub state: StepState,
    /// "ana@laptop 2026-11-28 03:12"
    pub who: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Everything the screen shows.
pub struct Model {
    pub runbook: Arc<Runbook>,
    pub registry: Registry,
    /// Masks credentials written literally into the runbook wherever text is shown.
    pub redactor: crate::redact::Redactor,
    pub journal: JournalState,
    pub rows: Vec<Row>,
    pub mode: Mode,
    pub banner: Option<String>,
    /// "account 123456789012 · us-east-1 · profile default", when known.
    pub aws: Option<String>,
    /// The monthly estimate, when the runbook has a `[cost]` section.
    pub cost: Option<crate::cost::Estimate>,
    /// "ana@laptop (pid 4242)"
    pub driver: Option<String>,
    pub selected: usize,
    pub logs: HashMap<String, LogStore>,
    pub log_capacity: usize,
    pub follow: bool,
    /// First visible log line when not following.
    pub log_top: usize,
    /// Height of the log pane at the last draw, for paging.
    pub log_height: usize,
    pub search: Option<String>,
    pub search_hit: Option<usize>,
    pub running: Option<Running>,
    pub overlay: Option<Overlay>,
    pub message: Option<(String, Level)>,
    pub size: (u16, u16),
    pub now: SystemTime,
    pub tick: u64,
    pub quitting: bool,
    /// When the last overlay opened: a key held since before then cannot act in it.
    pub overlay_opened: Option<Instant>,
    /// An earlier run's journal (`--history`): its durations predict the windows.
    pub history: Option<JournalState>,
    /// The steps inside a window (marked in the checklist): the runbook's, computed once.
    pub windowed: Vec<String>,
}

/// Keys held down repeat every ~30 ms; nothing typed this soon after a modal opened counts.
pub const REPEAT_GUARD: Duration = Duration::from_millis(150);

impl Model {
    pub fn new(
        runbook: Arc<Runbook>,
        journal: JournalState,
        mode: Mode,
        driver_alive: bool,
    ) -> Model {
        let mut model = Model {
            runbook,
            registry: Registry::builtin(),
            redactor: crate::redact::Redactor::new(),
            journal,
            rows: Vec::new(),
            mode,
            banner: None,
            aws: None,
            cost: None,
            driver: None,
            selected: 0,
            logs: HashMap::new(),
            log_capacity: super::logstore::DEFAULT_CAPACITY,
            follow: true,
            log_top: 0,
            log_height: 10,
            search: None,
            search_hit: None,
            running: None,
            overlay: None,
            message: None,
            size: (80, 24),
            now: SystemTime::now(),
            tick: 0,
            quitting: false,
            overlay_opened: None,
            history: None,
            windowed: Vec::new(),
        };
        model.windowed = model
            .runbook
            .windows
            .iter()
            .flat_map(|w| crate::window::inside(&model.runbook, w))
            .collect();
        model.refresh_rows(driver_alive);
        let running = model
            .rows
            .iter()
            .position(|r| r.state == StepState::Running);
        model.selected = running.or_else(|| model.next_actionable()).unwrap_or(0);
        // The summary is for whoever picks the migration up; a watcher sees the live state.
        let summary = model.resume_summary();
        let progress =
            summary.done > 0 || !summary.interrupted.is_empty() || !summary.failed.is_empty();
        if progress && !model.is_watching() {
            model.overlay = Some(Overlay::Resume(summary));
        }
        model
    }

    pub fn is_watching(&self) -> bool {
        matches!(self.mode, Mode::Watch { .. })
    }

    /// Recomputes every step's state from the journal and the clock.
    pub fn refresh_rows(&mut self, driver_alive: bool) {
        let running_here = self.running.as_ref().map(|r| r.step.clone());
        let views = step_states(&self.runbook, &self.journal, driver_alive, self.now);
        self.rows = views
            .iter()
            .map(|v| {
                let mut state = v.state.clone();
                // Our own running step is running whatever the lock says.
                if running_here.as_deref() == Some(v.step.id.as_str()) {
                    state = StepState::Running;
                }
                Row {
                    state,
                    who: v.record.filter(|r| r.status != Recorded::Pending).map(|r| {
                        format!(
                            "{} {}",
                            r.actor,
                            r.since.get(..16).unwrap_or(&r.since).replace('T', " ")
                        )
                    }),
                }
            })
            .collect();
    }

    pub fn replace_journal(&mut self, journal: JournalState, driver_alive: bool) {
        self.journal = journal;
        self.refresh_rows(driver_alive);
    }

    pub fn next_actionable(&self) -> Option<usize> {
        self.rows.iter().position(|r| r.state.is_actionable())
    }

    pub fn resume_summary(&self) -> ResumeSummary {
        let ids = |pred: &dyn Fn(&StepState) -> bool| -> Vec<String> {
            self.rows
                .iter()
                .zip(&self.runbook.steps)
                .filter(|(r, _)| pred(&r.state))
                .map(|(_, s)| s.id.clone())
                .collect()
        };
        ResumeSummary {
            done: self.rows.iter().filter(|r| r.state.is_settled()).count(),
            total: self.rows.len(),
            last: self.journal.last_activity.as_ref().map(|a| {
                format!(
                    "{} {} by {} at {}",
                    a.event,
                    a.step.as_deref().unwrap_or(""),
                    a.actor,
                    a.time.get(..16).unwrap_or(&a.time).replace('T', " ")
                )
            }),
            interrupted: ids(&|s| matches!(s, StepState::Interrupted)),
            changed: ids(&|s| matches!(s, StepState::Changed)),
            failed: ids(&|s| matches!(s, StepState::Failed { .. })),
            next: self
                .next_actionable()
                .map(|i| self.runbook.steps[i].id.clone()),
        }
    }

    pub fn selected_id(&self) -> &str {
        self.runbook
            .steps
            .get(self.selected)
            .map_or("", |s| s.id.as_str())
    }

    pub fn say(&mut self, text: impl Into<String>, level: Level) {
        self.message = Some((text.into(), level));
    }

    fn open(&mut self, overlay: Overlay) {
        self.overlay = Some(overlay);
        self.overlay_opened = Some(Instant::now());
    }

    fn log_len(&self) -> usize {
        self.logs.get(self.selected_id()).map_or(0, LogStore::len)
    }

    fn select(&mut self, index: usize) -> Vec<Effect> {
        if self.runbook.steps.is_empty() {
            return Vec::new();
        }
        self.selected = index.min(self.runbook.steps.len() - 1);
        self.follow = true;
        self.search_hit = None;
        let id = self.selected_id().to_string();
        let has_run = self.journal.step(&id).is_some_and(|r| r.attempts > 0);
        if has_run && !self.logs.contains_key(&id) {
            vec![Effect::LoadLog { step: id }]
        } else {
            Vec::new()
        }
    }

    /// What a key means now; `held` is true when it arrived too soon after a modal opened.
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        if let Action::Resize(w, h) = action {
            self.size = (w, h);
            return Vec::new();
        }
        if self.overlay.is_some() {
            return self.update_overlay(action);
        }
        self.message = None;
        match action {
            Action::Up => self.select(self.selected.saturating_sub(1)),
            Action::Down => self.select(self.selected + 1),
            Action::Top => self.select(0),
            Action::Bottom => self.select(usize::MAX),
            Action::Select(i) => self.select(i),
            Action::Run => self.request_run(false),
            Action::Rerun => self.request_run(true),
            Action::MarkDone => self.request_note(NotePurpose::MarkDone),
            Action::Skip => self.request_note(NotePurpose::Skip),
            Action::Rollback => self.request_rollback(),
            Action::Search => {
                self.open(Overlay::SearchInput {
                    text: self.search.clone().unwrap_or_default(),
                });
                Vec::new()
            }
            Action::NextMatch => self.jump_to_match(true),
            Action::PrevMatch => self.jump_to_match(false),
            Action::ToggleFollow => {
                self.follow = !self.follow;
                if !self.follow {
                    self.log_top = self.log_len().saturating_sub(self.log_height);
                }
                Vec::new()
            }
            Action::PageUp => self.scroll(-(self.log_height.max(2) as i32 - 1)),
            Action::PageDown => self.scroll(self.log_height.max(2) as i32 - 1),
            Action::ScrollLog(n) => self.scroll(n),
            Action::Help => {
                self.open(Overlay::Help);
                Vec::new()
            }
            Action::ToggleWindows => {
                if self.runbook.windows.is_empty() {
                    self.say("the runbook has no [[window]]", Level::Info);
                } else {
                    self.open(Overlay::Windows);
                }
                Vec::new()
            }
            Action::ToggleSoak => {
                if self
                    .runbook
                    .steps
                    .iter()
                    .any(|s| s.action.kind == "soak.gate")
                {
                    self.open(Overlay::Soak);
                } else {
                    self.say("the runbook has no soak.gate step", Level::Info);
                }
                Vec::new()
            }
            Action::ToggleCost => {
                if self.cost.is_some() {
                    self.open(Overlay::Cost);
                } else {
                    self.say("the runbook has no [cost] section", Level::Info);
                }
                Vec::new()
            }
            Action::Quit => {
                if self.running.is_some() {
                    self.open(Overlay::QuitWhileRunning);
                    Vec::new()
                } else {
                    self.quitting = true;
                    vec![Effect::Quit]
                }
            }
            Action::Escape => {
                self.search = None;
                self.search_hit = None;
                Vec::new()
            }
            Action::Enter => self.request_run(false),
            Action::Char(_)
            | Action::Backspace
            | Action::ClearInput
            | Action::DeleteWord
            | Action::Resize(..) => Vec::new(),
        }
    }

    fn scroll(&mut self, delta: i32) -> Vec<Effect> {
        let len = self.log_len();
        let max_top = len.saturating_sub(self.log_height);
        let current = if self.follow { max_top } else { self.log_top };
        let next = (current as i64 + i64::from(delta)).clamp(0, max_top as i64) as usize;
        self.log_top = next;
        self.follow = next >= max_top && delta > 0;
        Vec::new()
    }

    fn jump_to_match(&mut self, forward: bool) -> Vec<Effect> {
        let Some(needle) = self.search.clone() else {
            self.say("no search: press / to search the log", Level::Info);
            return Vec::new();
        };
        let Some(store) = self.logs.get(self.selected_id()) else {
            return Vec::new();
        };
        let from = match (self.search_hit, forward) {
            (Some(hit), true) => hit + 1,
            (Some(hit), false) => hit.saturating_sub(1),
            (None, true) => {
                if self.follow {
                    0
                } else {
                    self.log_top
                }
            }
            (None, false) => store.len().saturating_sub(1),
        };
        let evicted = store.evicted();
        match store.find(&needle, from, forward) {
            Some(hit) => {
                self.search_hit = Some(hit);
                self.follow = false;
                self.log_top = hit.saturating_sub(self.log_height / 2);
                self.say(
                    format!("match at line {}", evicted + hit as u64 + 1),
                    Level::Info,
                );
            }
            None => {
                let scope = if evicted > 0 {
                    format!(
                        " (searched the last {} lines in memory; the full log is on disk)",
                        store.len()
                    )
                } else {
                    String::new()
                };
                self.say(
                    format!(
                        "no {} match for {needle:?}{scope}",
                        if forward { "further" } else { "earlier" }
                    ),
                    Level::Warn,
                );
            }
        }
        Vec::new()
    }

    /// Why the selected step cannot be started, if it cannot.
    fn refusal(&self, rerun: bool) -> Option<String> {
        if let Mode::Watch { reason } = &self.mode {
            return Some(format!("read-only: {reason}"));
        }
        if let Some(r) = &self.running {
            return Some(format!(
                "`{}` is running: wait for it, or press q to cancel and quit",
                r.step
            ));
        }
        let row = self.rows.get(self.selected)?;
        match &row.state {
            StepState::Blocked { waiting_for } => {
                Some(format!("waiting for {}", waiting_for.join(", ")))
            }
            StepState::Gated { .. } => Some(crate::engine::describe_state(&row.state)),
            StepState::Done | StepState::Skipped | StepState::Changed if !rerun => {
                Some(format!("{}: press r to run it again", row.state.label()))
            }
            _ => None,
        }
    }

    fn request_run(&mut self, rerun: bool) -> Vec<Effect> {
        if let Some(reason) = self.refusal(rerun) {
            self.say(reason, Level::Warn);
            return Vec::new();
        }
        let Some(step) = self.runbook.steps.get(self.selected).cloned() else {
            return Vec::new();
        };
        let manual = self
            .registry
            .schema(&step.action.kind)
            .is_some_and(|s| s.needs_operator_note);
        if manual {
            self.open(Overlay::Note {
                step: step.id.clone(),
                purpose: NotePurpose::CompleteManual,
                text: String::new(),
                error: None,
            });
            return Vec::new();
        }
        if step.destructive {
            let consequence = format!(
                "{}\n\nRollback: {}",
                step.title,
                step.rollback.as_ref().map_or_else(
                    || "none — irreversible".to_string(),
                    crate::runbook::Rollback::summary
                )
            );
            self.open(Overlay::Confirm {
                step: step.id.clone(),
                phrase: step.confirm.clone().unwrap_or_default(),
                typed: String::new(),
                consequence,
                target: None,
                error: None,
                rollback: None,
            });
            return vec![Effect::Preview { step: step.id }];
        }
        self.start(step.id, None, None)
    }

    fn start(
        &mut self,
        step: String,
        confirm: Option<String>,
        note: Option<String>,
    ) -> Vec<Effect> {
        if let Some(store) = self.logs.get_mut(&step) {
            store.clear();
        }
        self.follow = true;
        self.running = Some(Running {
            step: step.clone(),
            attempt: 0,
            started: Instant::now(),
            progress: None,
        });
        self.refresh_rows(false);
        vec![Effect::Run {
            step,
            confirm,
            note,
        }]
    }

    /// A done step with a rollback action: first why (a note), then its phrase.
    fn request_rollback(&mut self) -> Vec<Effect> {
        let id = self.selected_id().to_string();
        let Some(step) = self.runbook.step(&id) else {
            return Vec::new();
        };
        let done = self.rows.get(self.selected).is_some_and(|r| {
            matches!(
                r.state,
                StepState::Done | StepState::Stale { .. } | StepState::Changed
            )
        });
        if !done {
            self.say(
                format!("{id} is not done: nothing to roll back"),
                Level::Warn,
            );
            return Vec::new();
        }
        match &step.rollback {
            Some(r) if r.action.is_some() => self.request_note(NotePurpose::Rollback),
            Some(r) => {
                let text = r.summary();
                self.say(
                    format!("{id}: its rollback is by hand: {text}"),
                    Level::Warn,
                );
                Vec::new()
            }
            None => {
                self.say(format!("{id} has no rollback"), Level::Warn);
                Vec::new()
            }
        }
    }

    fn request_note(&mut self, purpose: NotePurpose) -> Vec<Effect> {
        if let Mode::Watch { reason } = &self.mode {
            self.say(format!("read-only: {reason}"), Level::Warn);
            return Vec::new();
        }
        if self
            .running
            .as_ref()
            .is_some_and(|r| r.step == self.selected_id())
        {
            self.say("the step is running", Level::Warn);
            return Vec::new();
        }
        self.open(Overlay::Note {
            step: self.selected_id().to_string(),
            purpose,
            text: String::new(),
            error: None,
        });
        Vec::new()
    }

    fn too_soon(&self) -> bool {
        self.overlay_opened
            .is_some_and(|at| at.elapsed() < REPEAT_GUARD)
    }

    fn update_overlay(&mut self, action: Action) -> Vec<Effect> {
        let Some(overlay) = self.overlay.take() else {
            return Vec::new();
        };
        let too_soon = self.too_soon();
        let keep = |model: &mut Model, overlay: Overlay| {
            model.overlay = Some(overlay);
        };
        match (overlay, action) {
            // Esc always closes, and cancel is the default of every modal.
            (Overlay::QuitWhileRunning, Action::Char('y')) => {
                self.quitting = true;
                vec![Effect::Cancel, Effect::Quit]
            }
            (_, Action::Escape) | (Overlay::QuitWhileRunning, _) => Vec::new(),
            (
                Overlay::Help
                | Overlay::Resume(_)
                | Overlay::Cost
                | Overlay::Windows
                | Overlay::Soak,
                _,
            ) => Vec::new(),
            (
                Overlay::Confirm {
                    step,
                    phrase,
                    typed,
                    consequence,
                    target,
                    rollback,
                    ..
                },
                Action::Enter,
            ) => {
                if typed == phrase && !too_soon {
                    match rollback {
                        Some(note) => {
                            let mut effects = self.start(step.clone(), None, None);
                            effects.clear();
                            effects.push(Effect::Rollback {
                                step,
                                confirm: typed,
                                note,
                            });
                            effects
                        }
                        None => self.start(step, Some(typed), None),
                    }
                } else {
                    let error = if typed.is_empty() {
                        format!("type the phrase first: {phrase}")
                    } else {
                        format!("that is not the phrase. Only '{phrase}' will be accepted.")
                    };
                    keep(
                        self,
                        Overlay::Confirm {
                            step,
                            phrase,
                            typed,
                            consequence,
                            target,
                            error: Some(error),
                            rollback,
                        },
                    );
                    Vec::new()
                }
            }
            (
                Overlay::Confirm {
                    step,
                    phrase,
                    mut typed,
                    consequence,
                    target,
                    rollback,
                    ..
                },
                action,
            ) => {
                edit(&mut typed, &action, too_soon);
                keep(
                    self,
                    Overlay::Confirm {
                        step,
                        phrase,
                        typed,
                        consequence,
                        target,
                        error: None,
                        rollback,
                    },
                );
                Vec::new()
            }
            (
                Overlay::Note {
                    step,
                    purpose,
                    text,
                    ..
                },
                Action::Enter,
            ) => {
                let note = text.trim().to_string();
                if note.is_empty() || too_soon {
                    keep(
                        self,
                        Overlay::Note {
                            step,
                            purpose,
                            text,
                            error: Some("a note is required".into()),
                        },
                    );
                    return Vec::new();
                }
                match purpose {
                    NotePurpose::CompleteManual => self.start(step, None, Some(note)),
                    NotePurpose::MarkDone => vec![Effect::Mark {
                        step,
                        mark: Mark::Done,
                        note,
                    }],
                    NotePurpose::Skip => vec![Effect::Mark {
                        step,
                        mark: Mark::Skipped,
                        note,
                    }],
                    NotePurpose::Rollback => {
                        let phrase = crate::engine::rollback_phrase(&step);
                        self.open(Overlay::Confirm {
                            step: step.clone(),
                            phrase,
                            typed: String::new(),
                            consequence: format!("Roll back {step}. Why: {note}"),
                            target: None,
                            error: None,
                            rollback: Some(note.clone()),
                        });
                        vec![Effect::RollbackPreview { step, note }]
                    }
                }
            }
            (
                Overlay::Note {
                    step,
                    purpose,
                    mut text,
                    error,
                },
                action,
            ) => {
                edit(&mut text, &action, too_soon);
                keep(
                    self,
                    Overlay::Note {
                        step,
                        purpose,
                        text,
                        error,
                    },
                );
                Vec::new()
            }
            (Overlay::SearchInput { text }, Action::Enter) => {
                self.search = Some(text).filter(|t| !t.is_empty());
                self.search_hit = None;
                self.jump_to_match(true)
            }
            (Overlay::SearchInput { mut text }, action) => {
                edit(&mut text, &action, false);
                keep(self, Overlay::SearchInput { text });
                Vec::new()
            }
        }
    }

    /// Takes an engine event into the model.
    /// The engine's answer to [`Effect::Preview`]: shown if that step's dialog is still open.
    /// The engine's answer to a preview: what the step will touch, or that its approvals are
    /// not all in — then no phrase is asked: the dialog closes and the step's detail shows the
    /// request (what a second operator runs).
    pub fn preview_ready(&mut self, for_step: &str, text: Result<String, String>) {
        let Some(Overlay::Confirm { step, target, .. }) = &mut self.overlay else {
            return;
        };
        if step != for_step {
            return;
        }
        match text {
            Ok(text) => *target = Some(text),
            Err(missing) => {
                self.overlay = None;
                let first = missing.lines().next().unwrap_or_default().to_string();
                self.say(
                    format!("awaiting approval: {first} — the step's detail says who asked and what a second operator runs"),
                    Level::Warn,
                );
            }
        }
    }

    pub fn on_engine_event(&mut self, event: EngineEvent) {
        match event {
            EngineEvent::StepStarted {
                step,
                attempt,
                purpose,
                action,
                ..
            } => {
                let store = self.store(&step);
                store.push(&format!("» {}: {action}", purpose.label(attempt)));
                if let Some(r) = self.running.as_mut().filter(|r| r.step == step) {
                    r.attempt = attempt;
                    r.progress = None;
                }
            }
            EngineEvent::Log { step, stream, line } => {
                let store = self.store(&step);
                match stream {
                    Stream::Info => store.push(&format!("» {line}")),
                    _ => store.push(&line),
                }
            }
            EngineEvent::Progress { step, progress } => {
                if let Some(r) = self.running.as_mut().filter(|r| r.step == step) {
                    r.progress = Some(progress);
                }
            }
            EngineEvent::Output { step, name, value } => {
                self.store(&step)
                    .push(&format!("» output {name} = {value}"));
            }
            EngineEvent::Retrying {
                step,
                attempt,
                delay,
                reason,
            } => {
                self.store(&step).push(&format!(
                    "» {reason}; attempt {attempt} in {}",
                    humantime::format_duration(delay)
                ));
            }
            EngineEvent::StepFinished { step, outcome, .. } => {
                self.store(&step)
                    .push(&format!("» {}", describe_outcome(&outcome)));
            }
        }
    }

    /// The run effect ended (the engine returned).
    pub fn run_ended(&mut self, result: Result<String, String>) {
        self.running = None;
        match result {
            Ok(summary) => self.say(summary, Level::Info),
            Err(refusal) => self.say(refusal, Level::Error),
        }
    }

    pub fn store(&mut self, step: &str) -> &mut LogStore {
        let capacity = self.log_capacity;
        self.logs
            .entry(step.to_string())
            .or_insert_with(|| LogStore::with_capacity(capacity))
    }
}

/// Applies a typing action to a text field; a key arriving in the repeat window is ignored.
fn edit(text: &mut String, action: &Action, too_soon: bool) {
    if too_soon {
        return;
    }
    match action {
        Action::Char(c) => text.push(*c),
        Action::Backspace => {
            text.pop();
        }
        Action::ClearInput => text.clear(),
        Action::DeleteWord => {
            // The trailing blanks, then the word before them (readline's unix-word-rubout).
            let kept = text.trim_end_matches(char::is_whitespace).len();
            text.truncate(kept);
            let word_start = text.rfind(char::is_whitespace).map_or(0, |i| {
                i + text[i..].chars().next().map_or(1, char::len_utf8)
            });
            text.truncate(word_start);
        }
        _ => {}
    }
}

#[cfg(test)]
mod edit_tests {
    use super::*;

    #[test]
    fn ctrl_u_clears_and_ctrl_w_deletes_the_last_word() {
        let mut text = "point api.example.com at  ".to_string();
        edit(&mut text, &Action::DeleteWord, false);
        assert_eq!(text, "point api.example.com ");
        edit(&mut text, &Action::DeleteWord, false);
        assert_eq!(text, "point ");
        edit(&mut text, &Action::DeleteWord, false);
        assert_eq!(text, "");
        edit(&mut text, &Action::DeleteWord, false);
        assert_eq!(text, "");
        let mut text = "grüße wörld".to_string();
        edit(&mut text, &Action::DeleteWord, false);
        assert_eq!(text, "grüße ");
        edit(&mut text, &Action::ClearInput, false);
        assert_eq!(text, "");
    }
}
