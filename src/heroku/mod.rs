//! The app as Heroku runs it, read for `cutover init` (issue 29): the Platform API (`api`), the
//! repository (`repo`: Procfile, lockfiles, build scripts), Heroku Scheduler's jobs from the
//! operator's file (`scheduler`), and what each part becomes on AWS (`shape`, with the dyno
//! sizes' Fargate equivalents in `sizes`); from it the runbook, the Dockerfile (`dockerfile`),
//! the Terraform and the workflow (`generate`). Every fact says where it came from; where two
//! sources disagree it says so instead of choosing. Config vars are read by name only: a value
//! never leaves `api`.
//!
//! May import: `redact`. Never: actions, engine, journal, runbook, state, status, tui, window.

pub mod api;
pub mod dockerfile;
pub mod generate;
pub mod repo;
pub mod scheduler;
pub mod shape;
pub mod sizes;
pub mod vars;
