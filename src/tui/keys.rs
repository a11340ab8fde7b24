//! Keys to actions, in the habits of k9s and lazygit.

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use super::model::{Action, Model, Overlay};

/// The action a key stands for now. Text fields take printable keys as text.
pub fn action_for(model: &Model, key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let typing = matches!(
        model.overlay,
        Some(Overlay::Confirm { .. } | Overlay::Note { .. } | Overlay::SearchInput { .. })
    );
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return match key.code {
            KeyCode::Char('c') => Some(Action::Quit),
            // In a text field, Ctrl-U and Ctrl-W edit as in every shell.
            KeyCode::Char('u') if typing => Some(Action::ClearInput),
            KeyCode::Char('w') if typing => Some(Action::DeleteWord),
            KeyCode::Char('d') => Some(Action::PageDown),
            KeyCode::Char('u') => Some(Action::PageUp),
            _ => None,
        };
    }
    if typing {
        return match key.code {
            KeyCode::Esc => Some(Action::Escape),
            KeyCode::Enter => Some(Action::Enter),
            KeyCode::Backspace => Some(Action::Backspace),
            KeyCode::Char(c) => Some(Action::Char(c)),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Char('j') | KeyCode::Down => Action::Down,
        KeyCode::Char('k') | KeyCode::Up => Action::Up,
        KeyCode::Char('g') | KeyCode::Home => Action::Top,
        KeyCode::Char('G') | KeyCode::End => Action::Bottom,
        KeyCode::Enter => Action::Enter,
        KeyCode::Char('r') => Action::Rerun,
        KeyCode::Char('m') => Action::MarkDone,
        KeyCode::Char('s') => Action::Skip,
        KeyCode::Char('u') => Action::Rollback,
        KeyCode::Char('/') => Action::Search,
        KeyCode::Char('n') => Action::NextMatch,
        KeyCode::Char('N') => Action::PrevMatch,
        KeyCode::Char('f') => Action::ToggleFollow,
        KeyCode::Char('c') => Action::ToggleCost,
        KeyCode::Char('w') => Action::ToggleWindows,
        KeyCode::Char('S') => Action::ToggleSoak,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Esc => Action::Escape,
        KeyCode::Char(c) => Action::Char(c),
        KeyCode::Backspace => Action::Backspace,
        _ => return None,
    })
}

/// Mouse wheel scrolls the log; a click on the checklist selects (only with --mouse).
pub fn action_for_mouse(
    model: &Model,
    mouse: MouseEvent,
    checklist_rows: &[(u16, usize)],
) -> Option<Action> {
    match mouse.kind {
        MouseEventKind::ScrollUp => Some(Action::ScrollLog(-3)),
        MouseEventKind::ScrollDown => Some(Action::ScrollLog(3)),
        MouseEventKind::Down(_) if model.overlay.is_none() => checklist_rows
            .iter()
            .find(|(row, _)| *row == mouse.row)
            .map(|(_, step)| Action::Select(*step)),
        _ => None,
    }
}

/// The keys that apply now, for the footer.
pub fn hints(model: &Model) -> Vec<(&'static str, &'static str)> {
    match &model.overlay {
        Some(Overlay::Confirm { .. }) => vec![
            ("type", "the phrase"),
            ("Enter", "confirm"),
            ("Esc", "cancel"),
        ],
        Some(Overlay::Note { .. }) => {
            vec![("type", "a note"), ("Enter", "save"), ("Esc", "cancel")]
        }
        Some(Overlay::SearchInput { .. }) => vec![("Enter", "search"), ("Esc", "cancel")],
        Some(Overlay::QuitWhileRunning) => {
            vec![("y", "cancel the step and quit"), ("any key", "stay")]
        }
        Some(
            Overlay::Help | Overlay::Resume(_) | Overlay::Cost | Overlay::Windows | Overlay::Soak,
        ) => {
            vec![("any key", "close")]
        }
        None if model.is_watching() => vec![
            ("j/k", "move"),
            ("/", "search"),
            ("f", "follow"),
            ("c", "cost"),
            ("?", "help"),
            ("q", "quit"),
        ]
        .into_iter()
        .chain((!model.runbook.windows.is_empty()).then_some(("w", "windows")))
        .chain(soak(model).then_some(("S", "soak")))
        .collect(),
        None => vec![
            ("j/k", "move"),
            ("Enter", "run"),
            ("r", "re-run"),
            ("m", "mark done"),
            ("s", "skip"),
            ("/", "search"),
            ("f", "follow"),
            ("c", "cost"),
            ("?", "help"),
            ("q", "quit"),
        ]
        .into_iter()
        .chain((!model.runbook.windows.is_empty()).then_some(("w", "windows")))
        .chain(soak(model).then_some(("S", "soak")))
        .collect(),
    }
}

fn soak(model: &Model) -> bool {
    model
        .runbook
        .steps
        .iter()
        .any(|s| s.action.kind == "soak.gate")
}
