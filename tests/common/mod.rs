//! The harness the end-to-end test binaries share, one module a concern:
//!
//! - [`project`]: a runbook built from the parts a test chooses (`[runbook]`, `[vars]`,
//!   `[secrets]`, `[aws]`, raw tables, one phase and its steps), written into a temporary
//!   directory, and the `cutover` binary run there;
//! - [`run`]: the binary's command with the environment every test gives it (its actor, moto's
//!   dummy credentials, none of the operator's `CUTOVER_*` settings), and what it ended with;
//! - [`journal`]: the journal's lines as JSON values, events by step and name, the steps of
//!   `status --json`;
//! - [`wait`]: waiting for a condition, a file holding a needle, a process to be gone;
//! - [`moto`]: the AWS endpoint scripts/test starts, an SDK config for it, a runtime;
//! - [`pg`]: the two PostgreSQL clusters scripts/test starts, and a few queries.
//!
//! `proxy.rs` (a fault-injecting proxy in front of moto) and `tmux.rs` (a terminal) are
//! included by path by the binaries that use them (`#[path = "common/tmux.rs"] mod tmux;`).
//!
//! Each test binary is a crate of its own and uses a part of this harness; what one binary
//! does not use would be dead code in it. Rather than a `#[path]` include per module and
//! binary (which still warns for the unused half of each module, and would make each binary
//! list the modules it needs), the harness allows dead code as a whole: the lint cannot tell
//! "unused by this binary" from "unused by all". Every item is used by some binary, itself or
//! through another item.
//! `cargo clippy --all-targets` still checks everything else.
#![allow(dead_code)]

pub mod journal;
pub mod moto;
pub mod pg;
pub mod project;
pub mod run;
pub mod wait;

// What most binaries use, at the top (a binary that uses only a part leaves the rest unused).
#[allow(unused_imports)]
pub use project::{Project, Runbook};
#[allow(unused_imports)]
pub use run::{code, text, Outcome, ACTOR, BIN};

/// A variable scripts/test exports (where the services it started are); unset, the test
/// fails saying so.
#[track_caller]
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test, which starts the services the tests need")
    })
}

/// Set by scripts/test, which installs the tool; elsewhere the check runs when the tool is
/// found, and says so when it is not.
pub fn tool_from_env(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            eprintln!("{var} is not set: {what} not run (scripts/test installs it)");
            None
        }
    }
}
