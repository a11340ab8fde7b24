//! Colours and symbols, in one place.

use ratatui::style::{Color, Modifier, Style};

use crate::status::StepState;

pub fn state_symbol(state: &StepState, tick: u64) -> &'static str {
    const SPINNER: [&str; 8] = ["⠋", "⠙", "⠸", "⠴", "⠦", "⠇", "⠏", "⠛"];
    match state {
        StepState::Done => "✓",
        StepState::Skipped => "↷",
        StepState::Ready => "▶",
        StepState::Running => SPINNER[(tick as usize) % SPINNER.len()],
        StepState::Failed { .. } => "✗",
        StepState::Interrupted => "!",
        StepState::Changed => "~",
        StepState::Gated { .. } => "⏸",
        StepState::Blocked { .. } => "·",
        StepState::RolledBack => "↶",
        StepState::Stale { .. } => "↻",
    }
}

pub fn state_style(state: &StepState) -> Style {
    let color = match state {
        StepState::Done => Color::Green,
        StepState::Skipped => Color::DarkGray,
        StepState::Ready => Color::Cyan,
        StepState::Running => Color::Yellow,
        StepState::Failed { .. } => Color::Red,
        StepState::Interrupted => Color::Magenta,
        StepState::Changed => Color::LightMagenta,
        StepState::Gated { .. } => Color::Blue,
        StepState::Blocked { .. } => Color::Gray,
        StepState::RolledBack => Color::LightRed,
        StepState::Stale { .. } => Color::LightYellow,
    };
    Style::new().fg(color)
}

pub fn selected() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

pub fn title() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

pub fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

pub fn danger() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}

pub fn banner() -> Style {
    Style::new()
        .fg(Color::Black)
        .bg(Color::Yellow)
        .add_modifier(Modifier::BOLD)
}

pub fn key() -> Style {
    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
}
