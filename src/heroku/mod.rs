//! The app as Heroku runs it, read for `cutover init` (issue 29, its first part): the Platform
//! API (`api`), the repository's Procfile, and what each part becomes on AWS (`shape`, with the
//! dyno sizes' Fargate equivalents in `sizes`). Every fact says where it came from; where two
//! sources disagree it says so instead of choosing. Config vars are read by name only: a value
//! never leaves `api`.
//!
//! May import: `redact`. Never: actions, engine, journal, runbook, state, status, tui, window.

pub mod api;
pub mod repo;
pub mod shape;
pub mod sizes;
pub mod vars;
