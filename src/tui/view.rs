//! Drawing: a pure function of the model.

use ansi_to_tui::IntoText;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Gauge, Paragraph, Wrap};
use ratatui::Frame;

use crate::engine::{describe_state, display_scope};
use crate::runbook::{self, Template};
use crate::status::{short_duration, StepState};

use super::keys::hints;
use super::model::{Level, Mode, Model, NotePurpose, Overlay};
use super::theme;

/// The smallest terminal the layout works in.
pub const MIN_SIZE: (u16, u16) = (80, 24);

/// Where things landed, for the mouse and for paging.
#[derive(Debug, Default, Clone)]
pub struct Drawn {
    /// Screen row of each visible checklist step, with its index.
    pub checklist_rows: Vec<(u16, usize)>,
    pub log_height: usize,
}

pub fn draw(frame: &mut Frame<'_>, model: &Model) -> Drawn {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let text = format!(
            "The terminal is too small: {}×{}.\nCutover needs at least {}×{}.\nEnlarge it (in tmux, the smallest attached client sets the size).",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        frame.render_widget(
            Paragraph::new(text)
                .alignment(Alignment::Center)
                .wrap(Wrap { trim: true }),
            area,
        );
        return Drawn::default();
    }
    let [header, body, message, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(10),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, model);
    let left_width = (area.width * 2 / 5).clamp(36, 64);
    let [left, right] =
        Layout::horizontal([Constraint::Length(left_width), Constraint::Min(30)]).areas(body);
    let mut drawn = Drawn {
        checklist_rows: draw_checklist(frame, left, model),
        ..Drawn::default()
    };
    let detail_height = (right.height / 3).max(9);
    let [detail, log] =
        Layout::vertical([Constraint::Length(detail_height), Constraint::Min(4)]).areas(right);
    draw_detail(frame, detail, model);
    drawn.log_height = draw_log(frame, log, model);
    draw_message(frame, message, model);
    draw_footer(frame, footer, model);
    if let Some(overlay) = &model.overlay {
        draw_overlay(frame, area, model, overlay);
    }
    drawn
}

fn draw_header(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    frame.render_widget(Paragraph::new(header_line(model, area.width)), area);
}

/// The header, shortened to fit: the runbook's name goes first, then the driver's label, so
/// the banner, who drives and the AWS account (and endpoint) stay on screen.
fn header_line(model: &Model, width: u16) -> Line<'static> {
    let build = |with_name: bool, driver_label: bool| {
        let mut spans = vec![Span::styled(" cutover ", theme::title())];
        if with_name {
            spans.push(Span::raw("· "));
            spans.push(Span::styled(model.runbook.name.clone(), theme::title()));
        }
        if let Some(banner) = &model.banner {
            spans.push(Span::raw("  "));
            spans.push(Span::styled(format!(" {banner} "), theme::banner()));
        }
        // An open window (the write freeze), how long so far against its prediction.
        for view in crate::window::views(&model.runbook, &model.journal) {
            if let crate::window::WindowState::Open { .. } = view.state {
                let elapsed = view.state.elapsed(model.now).unwrap_or_default();
                let predicted = crate::window::predict(
                    &model.runbook,
                    &view.window,
                    &model.journal,
                    model.history.as_ref(),
                )
                .total;
                spans.push(Span::raw("  "));
                spans.push(Span::styled(
                    format!(
                        " {} {} · predicted {} ",
                        view.window.name.to_uppercase(),
                        crate::window::clock(elapsed),
                        crate::window::clock(predicted)
                    ),
                    theme::danger(),
                ));
            }
        }
        match (&model.mode, &model.driver) {
            (Mode::Watch { reason }, _) => {
                spans.push(Span::raw("  │ "));
                spans.push(Span::styled(
                    format!(" WATCHING (read-only): {reason} "),
                    theme::banner(),
                ));
            }
            (Mode::Drive, Some(driver)) if driver_label => {
                spans.push(Span::raw(format!("  │ driving: {driver}")))
            }
            (Mode::Drive, Some(driver)) => spans.push(Span::raw(format!("  │ {driver}"))),
            (Mode::Drive, None) => {}
        }
        if let Some(aws) = &model.aws {
            spans.push(Span::raw(format!("  │ {aws}")));
        }
        Line::from(spans)
    };
    [(true, true), (false, true), (false, false)]
        .into_iter()
        .map(|(name, label)| build(name, label))
        .find(|line| line.width() <= usize::from(width))
        .unwrap_or_else(|| build(false, false))
}

fn elapsed_text(secs: u64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

fn draw_checklist(frame: &mut Frame<'_>, area: Rect, model: &Model) -> Vec<(u16, usize)> {
    let done = model.rows.iter().filter(|r| r.state.is_settled()).count();
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .title(format!(" Steps {done}/{} ", model.rows.len()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    // Lines first (phase headers and steps), then the window that keeps the selection in view.
    let mut lines: Vec<(Line<'_>, Option<usize>)> = Vec::new();
    for (n, phase) in model.runbook.phases.iter().enumerate() {
        let phase_done = model.rows[phase.steps.clone()]
            .iter()
            .filter(|r| r.state.is_settled())
            .count();
        lines.push((
            Line::from(vec![
                Span::styled(format!("{} {}", n + 1, phase.title), theme::title()),
                Span::styled(
                    format!("  {phase_done}/{}", phase.steps.len()),
                    theme::dim(),
                ),
            ]),
            None,
        ));
        for index in phase.steps.clone() {
            let step = &model.runbook.steps[index];
            let row = &model.rows[index];
            let mut spans = vec![
                Span::styled(
                    format!(" {} ", theme::state_symbol(&row.state, model.tick)),
                    theme::state_style(&row.state),
                ),
                Span::raw(step.id.clone()),
            ];
            if step.destructive {
                spans.push(Span::styled(" ⚠", theme::danger()));
            }
            // Steps inside a window (the write freeze): what runs while users wait.
            if model.windowed.contains(&step.id) {
                spans.push(Span::styled(" ⧗", theme::dim()));
            }
            let extra = match &row.state {
                StepState::Running => model
                    .running
                    .as_ref()
                    .filter(|r| r.step == step.id)
                    .map(|r| format!(" {}", elapsed_text(r.started.elapsed().as_secs())))
                    .unwrap_or_else(|| " running".into()),
                StepState::Gated {
                    remaining: Some(left),
                    ..
                } => format!(" {} left", short_duration(*left)),
                StepState::Ready | StepState::Blocked { .. } => String::new(),
                other => format!(" {}", other.label()),
            };
            spans.push(Span::styled(extra, theme::state_style(&row.state)));
            let mut line = Line::from(spans);
            if index == model.selected {
                line = line.style(theme::selected());
            }
            lines.push((line, Some(index)));
        }
    }
    let height = inner.height as usize;
    let selected_line = lines
        .iter()
        .position(|(_, i)| *i == Some(model.selected))
        .unwrap_or(0);
    let top = selected_line
        .saturating_sub(height.saturating_sub(1) / 2)
        .min(lines.len().saturating_sub(height));
    let mut rows = Vec::new();
    let visible: Vec<Line<'_>> = lines
        .into_iter()
        .skip(top)
        .take(height)
        .enumerate()
        .map(|(offset, (line, index))| {
            if let Some(i) = index {
                rows.push((inner.y + offset as u16, i));
            }
            line
        })
        .collect();
    frame.render_widget(Paragraph::new(visible), inner);
    rows
}

fn draw_detail(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let Some(step) = model.runbook.steps.get(model.selected) else {
        return;
    };
    let row = &model.rows[model.selected];
    let scope = display_scope(&model.runbook, &model.journal);
    let render =
        |text: &str| Template::parse(text).map_or_else(|_| text.to_string(), |t| t.display(&scope));
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .title(Span::styled(format!(" {} ", step.title), theme::title()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut lines = vec![Line::from(vec![
        Span::styled(step.id.clone(), theme::dim()),
        Span::raw("  "),
        Span::styled(describe_state(&row.state), theme::state_style(&row.state)),
        Span::styled(
            row.who
                .as_deref()
                .map(|w| format!("  {w}"))
                .unwrap_or_default(),
            theme::dim(),
        ),
    ])];
    if step.destructive {
        lines.push(Line::from(Span::styled(
            format!(
                "DESTRUCTIVE — asks you to type: {}",
                step.confirm.as_deref().unwrap_or_default()
            ),
            theme::danger(),
        )));
    }
    if let Some(policy) = model.runbook.approval_policy(step) {
        lines.extend(approval_lines(model, step, &policy));
    }
    let shown = runbook::display_params(&step.action, &scope);
    let action = model
        .registry
        .get(&step.action.kind)
        .map_or_else(|| step.action.kind.clone(), |a| a.describe(&shown));
    let action = model.redactor.redact(&action).into_owned();
    lines.push(Line::from(vec![
        Span::styled(format!("{}: ", step.action.kind), theme::key()),
        Span::raw(action),
    ]));
    if !step.needs.is_empty() {
        let needs: Vec<Span<'_>> = step
            .needs
            .iter()
            .flat_map(|id| {
                let state = model
                    .runbook
                    .step_index(id)
                    .and_then(|i| model.rows.get(i))
                    .map(|r| r.state.clone());
                let style = state.as_ref().map_or(Style::new(), theme::state_style);
                [Span::styled(id.clone(), style), Span::raw(" ")]
            })
            .collect();
        lines.push(Line::from(
            [vec![Span::styled("needs: ", theme::dim())], needs].concat(),
        ));
    }
    if let Some(via) = &step.via {
        lines.push(Line::from(Span::styled(
            format!("connects through the tunnel `{via}` (opened or re-opened before it runs)"),
            theme::dim(),
        )));
    }
    if let Some(gate) = &step.after {
        lines.push(Line::from(Span::styled(
            format!(
                "after `{}` has been done for {}",
                gate.step,
                humantime::format_duration(gate.at_least)
            ),
            theme::dim(),
        )));
    }
    if let Some(rollback) = &step.rollback {
        lines.push(Line::from(vec![
            Span::styled("rollback: ", theme::dim()),
            Span::raw(render(&rollback.summary()).trim().to_string()),
        ]));
    } else if step.destructive {
        lines.push(Line::from(Span::styled(
            "rollback: none — irreversible",
            theme::danger(),
        )));
    }
    if let Some(monthly) = model
        .cost
        .as_ref()
        .and_then(|c| c.monthly_of(&step.starts_billing))
    {
        lines.push(Line::from(vec![
            Span::styled("cost: ", theme::dim()),
            Span::raw(format!(
                "this step starts about {}/month",
                crate::cost::usd(monthly)
            )),
        ]));
    }
    if let Some(running) = model.running.as_ref().filter(|r| r.step == step.id) {
        let elapsed = elapsed_text(running.started.elapsed().as_secs());
        lines.push(Line::from(Span::styled(
            format!("running: attempt {} · {elapsed}", running.attempt.max(1)),
            Style::new().fg(Color::Yellow),
        )));
    }
    let notes = render(&step.notes);
    if !notes.trim().is_empty() {
        lines.push(Line::from(""));
        lines.extend(notes.lines().map(|l| Line::from(l.to_string())));
    }
    let progress = model
        .running
        .as_ref()
        .filter(|r| r.step == step.id)
        .and_then(|r| r.progress.clone());
    let text_area = if let Some(progress) = progress {
        let [text_area, gauge_area] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        let label = format!(
            "{}{} {}{}",
            progress.done,
            progress.total.map(|t| format!("/{t}")).unwrap_or_default(),
            progress.unit,
            progress
                .message
                .as_deref()
                .map(|m| format!(" · {m}"))
                .unwrap_or_default()
        );
        let gauge = Gauge::default()
            .gauge_style(Style::new().fg(Color::Yellow))
            .ratio(progress.fraction().unwrap_or(0.0))
            .label(label);
        frame.render_widget(gauge, gauge_area);
        text_area
    } else {
        inner
    };
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), text_area);
}

/// Draws the selected step's log; returns the number of visible lines.
fn draw_log(frame: &mut Frame<'_>, area: Rect, model: &Model) -> usize {
    let id = model.selected_id();
    let store = model.logs.get(id);
    let len = store.map_or(0, |s| s.len());
    let evicted = store.map_or(0, |s| s.evicted());
    let mut title = format!(" log: {id} ");
    if let Some(r) = model.running.as_ref().filter(|r| r.step == id) {
        title.push_str(&format!("· attempt {} ", r.attempt.max(1)));
    }
    title.push_str(if model.follow {
        "· following "
    } else {
        "· paused (f to follow) "
    });
    if evicted > 0 {
        title.push_str(&format!(
            "· last {len} lines in memory, {evicted} more in the log file "
        ));
    }
    if let Some(search) = &model.search {
        title.push_str(&format!("· /{search} "));
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let height = inner.height as usize;
    let Some(store) = store else {
        frame.render_widget(
            Paragraph::new(Span::styled("no output yet", theme::dim())),
            inner,
        );
        return height;
    };
    let top = if model.follow {
        len.saturating_sub(height)
    } else {
        model.log_top.min(len.saturating_sub(1))
    };
    let lines: Vec<Line<'_>> = (top..(top + height).min(len))
        .filter_map(|i| store.get(i).map(|text| (i, text)))
        .map(|(i, text)| {
            // Colours the child printed are drawn as colours; never as escape codes.
            let mut line = text
                .into_text()
                .ok()
                .and_then(|t| t.lines.into_iter().next())
                .unwrap_or_else(|| Line::from(text));
            if text.starts_with('»') {
                line = line.style(theme::dim());
            }
            if model.search_hit == Some(i) {
                line = line.style(Style::new().add_modifier(Modifier::REVERSED));
            }
            line
        })
        .collect();
    frame.render_widget(Paragraph::new(Text::from(lines)), inner);
    height
}

fn draw_message(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let line = match &model.message {
        Some((text, level)) => {
            let style = match level {
                Level::Info => Style::new().fg(Color::Green),
                Level::Warn => Style::new().fg(Color::Yellow),
                Level::Error => Style::new().fg(Color::Red),
            };
            Line::from(Span::styled(format!(" {text}"), style))
        }
        None => Line::from(""),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let spans: Vec<Span<'_>> = hints(model)
        .into_iter()
        .flat_map(|(key, what)| {
            [
                Span::styled(format!(" {key}"), theme::key()),
                Span::raw(format!(" {what} ")),
            ]
        })
        .collect();
    frame.render_widget(
        Paragraph::new(Line::from(spans)).style(Style::new().bg(Color::Black)),
        area,
    );
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width.saturating_sub(4));
    let height = height.min(area.height.saturating_sub(2));
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

fn draw_overlay(frame: &mut Frame<'_>, area: Rect, model: &Model, overlay: &Overlay) {
    if let Overlay::Soak = overlay {
        return super::soak::draw(frame, area, model);
    }
    let (title, lines, border): (String, Vec<Line<'_>>, Style) = match overlay {
        Overlay::Help => (
            " Keys ".into(),
            [
                ("j/k ↑/↓", "move between steps"),
                ("g / G", "first / last step"),
                (
                    "Enter",
                    "run the selected step (asks before destructive ones)",
                ),
                ("r", "run it again (done, changed or failed steps)"),
                ("m", "mark done, with a note"),
                ("s", "skip, with a reason"),
                (
                    "u",
                    "roll back a done step (its rollback action, a reason, its phrase)",
                ),
                ("/  n  N", "search the log; next / previous match"),
                ("f", "follow the log / pause"),
                ("c", "monthly cost against Heroku"),
                (
                    "w",
                    "windows: the write freeze predicted, live, then against actual",
                ),
                (
                    "S",
                    "the soak: AWS's figures as charts beside Heroku's baseline",
                ),
                ("PgUp PgDn", "scroll the log"),
                ("?", "this help"),
                ("Esc", "close a dialog; clear the search"),
                ("q", "quit (asks while a step runs)"),
            ]
            .iter()
            .map(|(k, v)| {
                Line::from(vec![
                    Span::styled(format!("{k:<11}"), theme::key()),
                    Span::raw(*v),
                ])
            })
            .collect(),
            Style::new(),
        ),
        Overlay::Resume(summary) => {
            let mut lines = vec![
                Line::from(Span::styled(
                    format!("{}/{} steps done", summary.done, summary.total),
                    theme::title(),
                )),
                Line::from(format!("last: {}", summary.last.as_deref().unwrap_or("-"))),
            ];
            for (label, ids, style) in [
                (
                    "interrupted (re-run, check, or mark): ",
                    &summary.interrupted,
                    theme::state_style(&StepState::Interrupted),
                ),
                (
                    "failed: ",
                    &summary.failed,
                    theme::state_style(&StepState::Failed {
                        reason: String::new(),
                    }),
                ),
                (
                    "changed since they ran: ",
                    &summary.changed,
                    theme::state_style(&StepState::Changed),
                ),
            ] {
                if !ids.is_empty() {
                    lines.push(Line::from(vec![
                        Span::styled(label, style),
                        Span::raw(ids.join(", ")),
                    ]));
                }
            }
            lines.push(Line::from(format!(
                "next: {}",
                summary.next.as_deref().unwrap_or("nothing ready")
            )));
            (" Resuming ".into(), lines, Style::new().fg(Color::Cyan))
        }
        Overlay::Confirm {
            step,
            phrase,
            typed,
            consequence,
            target,
            error,
            rollback,
        } => {
            let mut lines: Vec<Line<'_>> = vec![Line::from(Span::styled(
                if rollback.is_some() {
                    "Rolling this step back undoes its effect."
                } else {
                    "This step is destructive."
                },
                theme::danger(),
            ))];
            let mut consequence = consequence.lines();
            lines.extend(consequence.next().map(|l| Line::from(l.to_string())));
            lines.push(Line::from(vec![
                Span::styled("It will: ", theme::key()),
                match target {
                    Some(text) => Span::raw(text.clone()),
                    None => Span::styled("reading what it will touch…", theme::dim()),
                },
            ]));
            lines.extend(consequence.map(|l| Line::from(l.to_string())));
            lines.push(Line::from(""));
            lines.push(Line::from(vec![
                Span::raw("Type "),
                Span::styled(phrase.clone(), theme::title()),
                Span::raw(if rollback.is_some() {
                    " to roll it back:"
                } else {
                    " to run it:"
                }),
            ]));
            lines.push(Line::from(Span::styled(
                format!("> {typed}▏"),
                Style::new().fg(Color::Yellow),
            )));
            if let Some(error) = error {
                lines.push(Line::from(Span::styled(error.clone(), theme::danger())));
            }
            lines.push(Line::from(Span::styled(
                "Esc cancels (the default).",
                theme::dim(),
            )));
            let title = if rollback.is_some() {
                format!(" Roll back {step}? ")
            } else {
                format!(" Run {step}? ")
            };
            (title, lines, theme::danger())
        }
        Overlay::Note {
            step,
            purpose,
            text,
            error,
        } => {
            let what = match purpose {
                NotePurpose::CompleteManual => "Done by hand? Say what was done",
                NotePurpose::MarkDone => "Mark done: why",
                NotePurpose::Skip => "Skip: why",
                NotePurpose::Rollback => "Roll back: why",
            };
            let mut lines = vec![Line::from(format!("{what} (goes into the journal):"))];
            if let Some(list) = model
                .runbook
                .step(step)
                .and_then(|s| s.action.params.get("checklist"))
                .and_then(|c| c.as_array())
            {
                lines.extend(
                    list.iter()
                        .filter_map(|i| i.as_str())
                        .map(|i| Line::from(format!("  [ ] {i}"))),
                );
            }
            lines.push(Line::from(Span::styled(
                format!("> {text}▏"),
                Style::new().fg(Color::Yellow),
            )));
            if let Some(error) = error {
                lines.push(Line::from(Span::styled(error.clone(), theme::danger())));
            }
            (format!(" {step} "), lines, Style::new().fg(Color::Cyan))
        }
        Overlay::Cost => (
            " Monthly cost ".into(),
            model
                .cost
                .as_ref()
                .map(crate::cost::report)
                .unwrap_or_default()
                .lines()
                .map(|l| Line::from(l.to_string()))
                .collect(),
            Style::new().fg(Color::Cyan),
        ),
        Overlay::Soak => (String::new(), Vec::new(), Style::new()),
        Overlay::Windows => (
            " Windows ".into(),
            windows_lines(model),
            Style::new().fg(Color::Cyan),
        ),
        Overlay::SearchInput { text } => (
            " Search the log ".into(),
            vec![Line::from(format!("/{text}▏"))],
            Style::new(),
        ),
        Overlay::QuitWhileRunning => (
            " Quit? ".into(),
            vec![
                Line::from(format!(
                    "`{}` is running. Cancel it and quit?",
                    model.running.as_ref().map_or("", |r| r.step.as_str())
                )),
                Line::from("y: cancel the step and quit · any other key: stay"),
            ],
            theme::danger(),
        ),
    };
    let width = lines
        .iter()
        .map(Line::width)
        .max()
        .unwrap_or(20)
        .max(title.len()) as u16
        + 4;
    // Lines wider than the screen wrap: count the rows they take at the width they get.
    let inner = usize::from(
        width
            .max(40)
            .min(area.width.saturating_sub(4))
            .saturating_sub(2),
    )
    .max(1);
    let rows: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let rect = centered(
        area,
        width.max(40),
        u16::try_from(rows + 2).unwrap_or(u16::MAX),
    );
    frame.render_widget(Clear, rect);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(border)
        .title(title);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        rect,
    );
}

/// Each window: its state, each step's prediction (and what it took), the timeline once the
/// steps ran, and the copy's throughput.
fn windows_lines(model: &Model) -> Vec<Line<'static>> {
    use crate::window::{self, WindowState};
    let mut lines = Vec::new();
    for view in window::views(&model.runbook, &model.journal) {
        let prediction = window::predict(
            &model.runbook,
            &view.window,
            &model.journal,
            model.history.as_ref(),
        );
        let state = match &view.state {
            WindowState::Pending => {
                format!("not open yet (opens when {} is done)", view.window.from)
            }
            WindowState::Open { .. } => format!(
                "OPEN for {}",
                crate::clock::short(view.state.elapsed(model.now).unwrap_or_default())
            ),
            WindowState::Closed { .. } => format!(
                "closed: it lasted {}",
                crate::clock::short(view.state.elapsed(model.now).unwrap_or_default())
            ),
        };
        lines.push(Line::from(vec![
            Span::styled(view.window.name.clone(), theme::title()),
            Span::raw(format!(
                "  {} → {}  ·  {state}  ·  predicted {}",
                view.window.from,
                view.window.to,
                crate::clock::short(prediction.total)
            )),
        ]));
        lines.push(Line::from(""));
        for line in window::timeline(&prediction, 30) {
            lines.push(Line::from(line));
        }
        lines.push(Line::from(Span::styled(
            format!(
                "DNS caches {}: {}",
                prediction.dns_ttl.map_or("?".into(), crate::clock::short),
                prediction.dns_how
            ),
            theme::dim(),
        )));
        for p in &prediction.steps {
            lines.push(Line::from(Span::styled(
                format!("  {}: {}", p.step, p.how),
                theme::dim(),
            )));
        }
        lines.push(Line::from(""));
    }
    if let Some(samples) = window::copy_throughput(&model.runbook, &model.journal) {
        let peak = samples.iter().copied().fold(0.0_f64, f64::max);
        lines.push(Line::from(format!(
            "copy throughput (MiB/s, peak {peak:.1}): {}",
            window::sparkline(&samples)
        )));
    }
    // The change capture's backlog each way (the way back's too), as the last catch-ups left it.
    for backlog in crate::status::backlogs(&model.runbook, &model.journal) {
        lines.push(Line::from(vec![
            Span::styled("backlog ", theme::title()),
            Span::raw(backlog.describe(model.now)),
        ]));
    }
    lines
}

/// A step that needs approvals: how many, who asked and for which digest, and each verdict the
/// driver has recorded (an approval counts only when the run reads it: `cutover approve` from
/// a second operator's own terminal posts it).
fn approval_lines(
    model: &Model,
    step: &runbook::Step,
    policy: &crate::approval::Policy,
) -> Vec<Line<'static>> {
    let record = model.journal.step(&step.id);
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "needs {} approval(s) from other operators{}",
            policy.count,
            if policy.approvers.is_empty() {
                String::new()
            } else {
                format!(" among {}", policy.approvers.join(", "))
            }
        ),
        theme::key(),
    ))];
    if let Some(q) = record.and_then(|r| r.approval_request.as_ref()) {
        // A request stands while nothing was decided since it was made.
        if q.head == model.journal.decision_head {
            lines.push(Line::from(Span::styled(
                format!(
                    "awaiting approval: asked by {} at {} for digest {} — a second operator runs: cutover approve {} --digest {}",
                    q.by_arn, q.time, q.digest, step.id, q.digest
                ),
                Style::new().fg(Color::Yellow),
            )));
        } else {
            lines.push(Line::from(Span::styled(
                format!(
                    "last asked by {} at {} for digest {}",
                    q.by_arn, q.time, q.digest
                ),
                theme::dim(),
            )));
        }
        for a in record
            .map(|r| r.approvals.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|a| a.digest == q.digest || a.verdict != "approve")
        {
            let who = if a.by_arn.is_empty() {
                format!("{} (unverified)", a.by_actor)
            } else {
                a.by_arn.clone()
            };
            let style = if a.standing == "counted" {
                Style::new().fg(Color::Green)
            } else if a.standing == "denies" {
                theme::danger()
            } else {
                theme::dim()
            };
            lines.push(Line::from(Span::styled(
                format!("  {} by {who}: {}", a.verdict, a.standing),
                style,
            )));
        }
    }
    lines
}
