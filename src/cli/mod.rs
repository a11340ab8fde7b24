//! The command line: every step runs headless from here. One file per command, each with its
//! clap arguments (`Args`) and its `exec`; this file parses and dispatches.

mod approve;
mod audit;
mod completions;
mod context;
mod cost;
mod deny;
mod driving;
mod ecs_run;
mod exit;
mod init;
mod log;
mod logging;
mod man;
mod mark;
mod note;
mod plan;
mod printer;
mod report;
mod rollback;
mod run;
mod scaffold;
mod soak_charts;
mod state;
mod status;
mod tui;
mod tunnel_guard;
mod unlock;
mod validate;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cutover::actions::Registry;

use context::Context;
use exit::Failure;

#[derive(Parser, Debug)]
#[command(
    name = "cutover",
    version,
    about = "A terminal runbook that moves a Heroku app to AWS ECS Fargate",
    long_about = "A terminal runbook that moves a Heroku app to AWS ECS Fargate.\n\n\
        State lives in .cutover/ beside the runbook: an append-only, hash-chained journal \
        (journal.jsonl), the driver's lock, and one log file per step attempt.",
    after_help = exit::HELP
)]
struct Cli {
    /// The runbook to use.
    #[arg(
        long,
        global = true,
        default_value = "runbook.toml",
        env = "CUTOVER_RUNBOOK"
    )]
    runbook: PathBuf,
    /// Override a runbook variable (repeatable; wins over --vars-file).
    #[arg(long = "var", global = true, value_name = "KEY=VALUE")]
    vars: Vec<String>,
    /// A TOML file of `name = "value"` lines overriding the runbook's [vars] (e.g. one per
    /// environment, or the rehearsal's).
    #[arg(long, global = true, value_name = "FILE", env = "CUTOVER_VARS_FILE")]
    vars_file: Option<PathBuf>,
    /// Where the journal, lock and logs live (default: .cutover/ beside the runbook).
    #[arg(long, global = true, value_name = "DIR", env = "CUTOVER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Where the journal, lock and logs live for a team: s3://BUCKET/PREFIX (default: the
    /// runbook's [state] backend, else local). The state directory then holds its mirror.
    #[arg(
        long = "state",
        global = true,
        value_name = "URL",
        env = "CUTOVER_STATE"
    )]
    state_url: Option<String>,
    /// AWS profile (overrides the runbook's [aws] profile).
    #[arg(long, global = true, env = "CUTOVER_AWS_PROFILE")]
    profile: Option<String>,
    /// AWS region (must match the runbook's; overrides it when the runbook has none).
    #[arg(long, global = true)]
    region: Option<String>,
    /// A local AWS API endpoint, e.g. http://127.0.0.1:5000.
    #[arg(long, global = true, env = "CUTOVER_AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// The journal of an earlier run of this runbook (a rehearsal's): its step durations
    /// predict this migration's windows (scaled by the source database's size).
    #[arg(long, global = true, value_name = "JOURNAL", env = "CUTOVER_HISTORY")]
    history: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open the terminal UI (what `cutover` alone does on a terminal).
    Tui(tui::Args),
    /// Follow the migration read-only while another terminal drives.
    Watch(watch::Args),
    /// Check the runbook and report every error with file:line:column.
    Validate(validate::Args),
    /// Show every phase and step with its state, who did it and when.
    Status(status::Args),
    /// Show what each remaining step would do, variables filled and secrets masked.
    Plan(plan::Args),
    /// The whole migration as one document for the change ticket: every step with who, when,
    /// how long and how it ended, the confirmations, the windows predicted against actual, the
    /// journal's final hash.
    Report(report::Args),
    /// Run one step (by id) or the next ready one, streaming its log.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["step", "next"])))]
    Run(run::Args),
    /// Monthly cost of the target, line by line, against today's Heroku bill.
    Cost(cost::Args),
    /// Read a Heroku app (the Platform API, the repository's Procfile) and say what each part
    /// becomes on AWS, every fact with its source; config vars by name only.
    Init(init::Args),
    /// Run a command as a one-off ECS task (what `heroku run` was); exits with its exit code.
    EcsRun(ecs_run::Args),
    /// Show what the `scaffold` step would write (diffs), or write it; files that would change
    /// are overwritten only with --overwrite and the typed phrase.
    Scaffold(scaffold::Args),
    /// Undo a done step by running its rollback: its phrase typed (`roll back STEP`), a note
    /// saying why. Steps done after it that rely on it are rolled back first with --chain (each
    /// with its own --confirm), or left needing a re-run with --only.
    Rollback(rollback::Args),
    /// Set a step's state by hand, with a note saying why.
    Mark(mark::Args),
    /// Approve what a run of a step asked for, as a second operator with your own AWS
    /// credentials: shows what will run; --digest says you read it.
    Approve(approve::Args),
    /// Refuse a step (it cannot run until you --withdraw), as a second operator.
    Deny(deny::Args),
    /// Print a step's log (the latest attempt unless --attempt).
    Log(log::Args),
    /// Add a note to the journal.
    Note(note::Args),
    /// Clear the holder details left in a lock file (a shared filesystem, where the kernel
    /// lock may not reach): only with their exact id, never while a holder is alive.
    Unlock(unlock::Args),
    /// Move a migration's state to S3 (`push`, into an empty prefix) or copy it from there
    /// (`pull`), with --state s3://BUCKET/PREFIX.
    State(state::Args),
    /// Prove the journal was not edited.
    Audit(audit::Args),
    /// Print the shell completion script: `source <(cutover completions bash)`.
    Completions(completions::Args),
    /// Print the manual page (roff): `cutover man > cutover.1; man ./cutover.1`.
    Man(man::Args),
    /// Internal: runs a tunnel's Session Manager plugin and stops it when cutover ends.
    #[command(hide = true)]
    TunnelGuard(tunnel_guard::Args),
}

pub fn main() -> ExitCode {
    let _ = context::STARTED.set(std::time::Instant::now());
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => exit::code(code),
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("cutover: {}", failure.message);
            }
            exit::code(failure.code)
        }
    }
}

/// Read-only commands stay synchronous (fast start); only running a step starts a runtime.
fn dispatch(mut cli: Cli) -> Result<u8, Failure> {
    let command = cli.command.take().unwrap_or_else(|| {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
            Command::Tui(tui::Args {
                mouse: false,
                log_lines: 100_000,
            })
        } else {
            Command::Status(status::Args { json: false })
        }
    });
    let ctx = Context {
        cli,
        registry: Registry::builtin(),
    };
    match command {
        Command::Tui(args) => tui::exec(&ctx, args),
        Command::Watch(args) => watch::exec(&ctx, args),
        Command::Validate(args) => validate::exec(&ctx, args),
        Command::Status(args) => status::exec(&ctx, args),
        Command::Plan(args) => plan::exec(&ctx, args),
        Command::Report(args) => report::exec(&ctx, args),
        Command::Run(args) => run::exec(&ctx, args),
        Command::Cost(args) => cost::exec(&ctx, args),
        Command::Init(args) => init::exec(&ctx, args),
        Command::EcsRun(args) => ecs_run::exec(&ctx, args),
        Command::Scaffold(args) => scaffold::exec(&ctx, args),
        Command::Rollback(args) => rollback::exec(&ctx, args),
        Command::Mark(args) => mark::exec(&ctx, args),
        Command::Approve(args) => approve::exec(&ctx, args),
        Command::Deny(args) => deny::exec(&ctx, args),
        Command::Log(args) => log::exec(&ctx, args),
        Command::Note(args) => note::exec(&ctx, args),
        Command::Unlock(args) => unlock::exec(&ctx, args),
        Command::State(args) => state::exec(&ctx, args),
        Command::Audit(args) => audit::exec(&ctx, args),
        Command::Completions(args) => completions::exec(&ctx, args),
        Command::Man(args) => man::exec(&ctx, args),
        Command::TunnelGuard(args) => tunnel_guard::exec(&ctx, args),
    }
}

#[cfg(test)]
mod definition_tests {
    /// Every argument's id is unique across the global options and every subcommand (a global
    /// `--state` once shadowed `mark STEP STATE`).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
        let cli = <super::Cli as clap::Parser>::try_parse_from([
            "cutover",
            "--state",
            "s3://bucket/p",
            "mark",
            "build",
            "done",
            "--note",
            "x",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.state_url.as_deref(), Some("s3://bucket/p"));
        assert!(matches!(cli.command, Some(super::Command::Mark(_))));
    }
}
