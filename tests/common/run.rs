//! The `cutover` binary as the tests run it, and what a run ended with.

use std::ops::Deref;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cutover");

/// Who the tests say they are (`CUTOVER_ACTOR`), as the journal records it.
pub const ACTOR: &str = "ana@laptop";

/// The operator's settings the binary reads from its environment: a test never inherits them
/// from the shell it was started in (a developer with `CUTOVER_STATE` set would otherwise
/// drive a shared state from the tests).
pub const OPERATOR_VARS: &[&str] = &[
    "CUTOVER_RUNBOOK",
    "CUTOVER_VARS_FILE",
    "CUTOVER_STATE_DIR",
    "CUTOVER_STATE",
    "CUTOVER_AWS_PROFILE",
    "CUTOVER_AWS_ENDPOINT_URL",
    "CUTOVER_HISTORY",
    "CUTOVER_S3_LEASE_SECS",
    "CUTOVER_BANNER",
];

/// `cutover ARGS` in `dir`, as every test runs it: its actor, no stdin, none of the operator's
/// settings, and AWS set up for moto only ([`dummy_aws`]).
pub fn cutover(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env("CUTOVER_ACTOR", ACTOR)
        .stdin(Stdio::null());
    for var in OPERATOR_VARS {
        command.env_remove(var);
    }
    dummy_aws(&mut command);
    command
}

/// `cutover ARGS` as a shell command line (for a terminal: tmux runs it through a shell), with
/// [`cutover`]'s actor and none of the operator's settings.
pub fn shell_line(args: &str) -> String {
    let unset: String = OPERATOR_VARS.iter().map(|v| format!("-u {v} ")).collect();
    format!("env {unset}CUTOVER_ACTOR={ACTOR} {BIN} {args}")
        .trim_end()
        .to_string()
}

/// Moto's dummy credentials and nothing of the machine's AWS set-up (profile, config files,
/// endpoint, instance metadata): a test can never reach a real account.
pub fn dummy_aws(command: &mut Command) -> &mut Command {
    command
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
}

/// This process's PATH with `dir` first (stand-ins, or the tools of a version the test needs).
pub fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// SIGKILL to the process group `pid` leads (a step's shell and all it started); nothing if it
/// is gone already.
pub fn kill_group(pid: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// SIGINT to `pid`, as Ctrl-C in its terminal.
pub fn interrupt(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
}

/// A finished command as a failure message shows it.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The exit code, or -1 when a signal ended it.
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// What a run of the binary ended with. It derefs to the [`Output`] (`code(&out)`,
/// `text(&out)`, `out.stdout` keep working); its checks fail with the whole run shown.
pub struct Outcome(pub Output);

impl Deref for Outcome {
    type Target = Output;

    fn deref(&self) -> &Output {
        &self.0
    }
}

impl Outcome {
    pub fn code(&self) -> i32 {
        code(&self.0)
    }

    /// Exit code, stdout and stderr, for a failure message.
    pub fn text(&self) -> String {
        text(&self.0)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Fails unless it exited with `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Outcome {
        assert_eq!(self.code(), code, "{}", self.text());
        self
    }

    /// Fails unless it exited 0.
    #[track_caller]
    pub fn ok(self) -> Outcome {
        self.expect(0)
    }

    /// Fails unless its stdout holds `needle`.
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Outcome {
        self.check(self.stdout().contains(needle), "stdout lacks", needle)
    }

    /// Fails unless its stderr holds `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Outcome {
        self.check(self.stderr().contains(needle), "stderr lacks", needle)
    }

    /// Fails when its stderr holds `needle`.
    #[track_caller]
    pub fn stderr_lacks(&self, needle: &str) -> &Outcome {
        self.check(!self.stderr().contains(needle), "stderr has", needle)
    }

    /// Fails unless its stdout or stderr holds `needle`.
    #[track_caller]
    pub fn says(&self, needle: &str) -> &Outcome {
        let holds = self.text().contains(needle);
        self.check(holds, "neither stdout nor stderr has", needle)
    }

    /// Fails unless `holds`, saying what is wrong and showing the whole run.
    #[track_caller]
    fn check(&self, holds: bool, wrong: &str, needle: &str) -> &Outcome {
        assert!(holds, "{wrong} {needle:?}: {}", self.text());
        self
    }
}
