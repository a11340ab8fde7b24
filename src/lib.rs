//! `cutover`: a terminal runbook that moves a Heroku app to AWS ECS Fargate.
//!
//! The library holds everything but the command line: the runbook model and its
//! validation, the journal (the only state), the lock, the engine that runs one
//! step, the actions, and the terminal UI (feature `tui`). ARCHITECTURE.md maps it.

pub mod actions;
pub mod actor;
pub mod approval;
pub mod aws_error;
pub mod clock;
pub mod cost;
pub mod engine;
pub mod heroku;
pub mod journal;
pub mod redact;
pub mod runbook;
pub mod soak;
pub mod state;
pub mod status;
#[cfg(feature = "tui")]
pub mod tui;
pub mod window;
pub mod workspace;
