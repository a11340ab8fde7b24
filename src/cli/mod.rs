//! The command line: every step runs headless from here.

mod completions;
mod exit;
mod printer;
mod rollback;
mod show;
mod state;
mod window;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use cutover::actions::{Outcome, Registry};
use cutover::engine::{Engine, Mark, RunRequest, Target};
use cutover::journal::{self, lock, Journal};
use cutover::redact::Redactor;
use cutover::runbook::Runbook;
use cutover::workspace::Workspace;

use exit::Failure;

static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

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
    Tui {
        /// Scroll and click with the mouse.
        #[arg(long)]
        mouse: bool,
        /// Log lines kept in memory per step (the full log is on disk).
        #[arg(long, default_value_t = 100_000, value_name = "N")]
        log_lines: usize,
    },
    /// Follow the migration read-only while another terminal drives.
    Watch {
        #[arg(long)]
        mouse: bool,
    },
    /// Check the runbook and report every error with file:line:column.
    Validate,
    /// Show every phase and step with its state, who did it and when.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show what each remaining step would do, variables filled and secrets masked.
    Plan {
        /// Instead: a window's steps with a predicted duration each and the total (the write
        /// freeze before `maintenance-on`), from the journal and --history.
        #[arg(long, value_name = "NAME")]
        window: Option<String>,
    },
    /// The whole migration as one document for the change ticket: every step with who, when,
    /// how long and how it ended, the confirmations, the windows predicted against actual, the
    /// journal's final hash.
    Report {
        #[arg(long, value_enum, default_value = "md")]
        format: ReportFormat,
    },
    /// Run one step (by id) or the next ready one, streaming its log.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["step", "next"])))]
    Run {
        /// The step's id.
        step: Option<String>,
        /// Run the first step that can run now.
        #[arg(long)]
        next: bool,
        /// The confirmation phrase of a destructive step, typed exactly.
        #[arg(long, value_name = "PHRASE")]
        confirm: Option<String>,
        /// A note for the journal; required to complete a manual step.
        #[arg(long)]
        note: Option<String>,
        /// Run the step's check instead: if its effect already holds, the step is done.
        #[arg(long)]
        check: bool,
    },
    /// Monthly cost of the target, line by line, against today's Heroku bill.
    Cost {
        #[arg(long)]
        json: bool,
        /// Refresh prices from the AWS Price List API (cached a day under .cutover/).
        #[arg(long)]
        live: bool,
    },
    /// Run a command as a one-off ECS task (what `heroku run` was); exits with its exit code.
    EcsRun {
        /// ECS cluster (default: the runbook's [aws] cluster).
        #[arg(long)]
        cluster: Option<String>,
        /// Service whose network configuration and task definition to use.
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        container: Option<String>,
        /// The command, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show what the `scaffold` step would write (diffs), or write it; files that would change
    /// are overwritten only with --overwrite and the typed phrase.
    Scaffold {
        /// The scaffold step (default: the runbook's first `scaffold` step).
        #[arg(long)]
        step: Option<String>,
        /// Print each file's state and diff; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also write the files that differ from the templates.
        #[arg(long)]
        overwrite: bool,
        /// The phrase, for --overwrite without a terminal: "overwrite N files".
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Undo a done step by running its rollback: its phrase typed (`roll back STEP`), a note
    /// saying why. Steps done after it that rely on it are rolled back first with --chain (each
    /// with its own --confirm), or left needing a re-run with --only.
    Rollback {
        step: String,
        /// Why (journaled with who).
        #[arg(long)]
        note: String,
        /// `roll back STEP`, typed exactly; once per step of a chain.
        #[arg(long, value_name = "PHRASE")]
        confirm: Vec<String>,
        /// Only this step, although done steps rely on it.
        #[arg(long, conflicts_with = "chain")]
        only: bool,
        /// The done steps relying on it first, the last done first.
        #[arg(long)]
        chain: bool,
    },
    /// Set a step's state by hand, with a note saying why.
    Mark {
        step: String,
        #[arg(value_enum)]
        state: MarkState,
        #[arg(long)]
        note: String,
    },
    /// Print a step's log (the latest attempt unless --attempt).
    Log {
        step: String,
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// Add a note to the journal.
    Note {
        text: String,
        /// The step it is about.
        #[arg(long)]
        step: Option<String>,
    },
    /// Clear the holder details left in a lock file (a shared filesystem, where the kernel
    /// lock may not reach): only with their exact id, never while a holder is alive.
    Unlock {
        #[arg(value_name = "LOCK_ID")]
        id: String,
    },
    /// Move a migration's state to S3 (`push`, into an empty prefix) or copy it from there
    /// (`pull`), with --state s3://BUCKET/PREFIX.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Prove the journal was not edited.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the shell completion script: `source <(cutover completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: completions::Shell,
    },
    /// Print the manual page (roff): `cutover man > cutover.1; man ./cutover.1`.
    Man,
    /// Internal: runs a tunnel's Session Manager plugin and stops it when cutover ends.
    #[command(hide = true)]
    TunnelGuard {
        program: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum StateCommand {
    /// Upload a local journal (its chain verified first) to the empty S3 prefix.
    Push {
        /// The local state directory (default: .cutover/ beside the runbook).
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
    },
    /// Bring the local mirror up to S3; with --to, copy the journal there for reading.
    Pull {
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check every line's sequence number and hash chain; name the first bad line.
    Verify,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Md,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum MarkState {
    Done,
    Pending,
    Skipped,
}

pub fn main() -> ExitCode {
    let _ = STARTED.set(std::time::Instant::now());
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
    let registry = Registry::builtin();
    let command = cli.command.take().unwrap_or_else(|| {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
            Command::Tui {
                mouse: false,
                log_lines: 100_000,
            }
        } else {
            Command::Status { json: false }
        }
    });
    if let Command::Validate = command {
        let runbook = load(&cli, &registry)?;
        println!(
            "{}: valid — {} phases, {} steps",
            runbook.source.path.display(),
            runbook.phases.len(),
            runbook.steps.len()
        );
        return Ok(exit::OK);
    }
    match command {
        Command::Completions { shell } => return completions::exec(shell),
        Command::Man => return completions::man(),
        _ => {}
    }
    if let Command::TunnelGuard { program, args } = &command {
        let code = cutover::actions::aws::tunnel::guard(program, args);
        return Ok(u8::try_from(code).unwrap_or(1));
    }
    let local = workspace_of(&cli);
    // The state on S3 when there is one: the runbook (if it loads) may name it and gives the
    // AWS settings; the mirror is brought up to date first (push fills an empty prefix).
    let setup = {
        let runbook = load(&cli, &registry).ok();
        use cutover::state::s3::Reading;
        let reading = match &command {
            Command::State {
                command: StateCommand::Push { .. },
            } => None,
            // Every key and ETag checked: a deleted or replaced event anywhere is named.
            Command::Audit { .. } => Some(Reading::Full),
            _ => Some(Reading::New),
        };
        state::setup(&cli, runbook.as_ref(), local.clone(), reading)?
    };
    let remote = setup.remote.clone();
    let workspace = setup.workspace.clone();
    match command {
        Command::TunnelGuard { .. } | Command::Completions { .. } | Command::Man => Ok(exit::OK),
        Command::State { command } => match command {
            StateCommand::Push { from } => state::push(&setup, from.unwrap_or(local.root)),
            StateCommand::Pull { to } => state::pull(&setup, to),
        },
        Command::Audit {
            command: AuditCommand::Verify,
        } => audit_verify(&workspace),
        Command::Unlock { id } => {
            if let Some(remote) = &remote {
                return state::unlock(remote, &id);
            }
            let info = lock::unlock(&workspace.lock_path(), &id)?;
            println!("cleared the lock details of {}", info.describe());
            Ok(exit::OK)
        }
        Command::Log { step, attempt } => {
            let runbook = load(&cli, &registry)?;
            if let Some(remote) = &remote {
                cutover::state::s3::pull_logs(remote, &workspace.root, &format!("logs/{step}/"))?;
            }
            show::log(&runbook, &workspace, &step, attempt)
        }
        Command::Status { json } => {
            let runbook = load(&cli, &registry)?;
            let history = window::load_history(cli.history.as_deref())?;
            show::status(&runbook, &workspace, json, history.as_ref())
        }
        Command::Plan { window: None } => {
            let runbook = load(&cli, &registry)?;
            show::plan(&runbook, &workspace, &registry)
        }
        Command::Plan { window: Some(name) } => {
            let runbook = load(&cli, &registry)?;
            let history = window::load_history(cli.history.as_deref())?;
            window::plan(&runbook, &workspace, history.as_ref(), &name)
        }
        Command::Report { format } => {
            let runbook = load(&cli, &registry)?;
            let history = window::load_history(cli.history.as_deref())?;
            window::report(&runbook, &workspace, history.as_ref(), format)
        }
        Command::Run {
            step,
            next,
            confirm,
            note,
            check,
        } => {
            let runbook = load(&cli, &registry)?;
            let mut request = RunRequest::new(match (step, next) {
                (Some(id), _) => Target::Step(id),
                (None, _) => Target::Next,
            });
            request.confirm = confirm;
            request.note = note;
            request.check_only = check;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| Failure::new(exit::STEP_FAILED, format!("cannot start: {e}")))?;
            let history = window::load_history(cli.history.as_deref())?;
            runtime.block_on(run(runbook, &setup, registry, request, history))
        }
        Command::Rollback {
            step,
            note,
            confirm,
            only,
            chain,
        } => {
            let runbook = load(&cli, &registry)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| Failure::new(exit::STEP_FAILED, format!("cannot start: {e}")))?;
            let (mut engine, _lock) =
                drive(runbook, &setup, registry, &format!("rollback {step}"))?;
            engine.subscribe(Box::new(printer::Printer::new()));
            runtime.block_on(rollback::rollback(
                &mut engine,
                rollback::Args {
                    step,
                    note,
                    confirm,
                    only,
                    chain,
                },
            ))
        }
        Command::Mark { step, state, note } => {
            let runbook = load(&cli, &registry)?;
            let (mut engine, _lock) = drive(runbook, &setup, registry, &format!("mark {step}"))?;
            let mark = match state {
                MarkState::Done => Mark::Done,
                MarkState::Pending => Mark::Pending,
                MarkState::Skipped => Mark::Skipped,
            };
            engine.mark(&step, mark, &note)?;
            println!("{step}: marked {}", format!("{state:?}").to_lowercase());
            Ok(exit::OK)
        }
        Command::Note { text, step } => {
            let runbook = load(&cli, &registry)?;
            let (mut engine, _lock) = drive(runbook, &setup, registry, "note")?;
            engine.note(step.as_deref(), &text)?;
            Ok(exit::OK)
        }
        Command::Validate => Ok(exit::OK),
        Command::Scaffold {
            step,
            dry_run,
            overwrite,
            confirm,
        } => {
            let runbook = load(&cli, &registry)?;
            scaffold(&runbook, step.as_deref(), dry_run, overwrite, confirm)
        }
        Command::EcsRun {
            cluster,
            service,
            container,
            command,
        } => {
            let runbook = load(&cli, &registry)?;
            ecs_run(runbook, registry, cluster, service, container, command)
        }
        Command::Cost { json, live } => {
            let runbook = load(&cli, &registry)?;
            cost(&runbook, &workspace, json, live)
        }
        Command::Watch { mouse } => tui(&cli, setup, registry, true, mouse, 100_000),
        Command::Tui { mouse, log_lines } => tui(&cli, setup, registry, false, mouse, log_lines),
    }
}

/// `cutover scaffold`: the scaffold step's files, reviewed before anything is overwritten.
fn scaffold(
    runbook: &Runbook,
    step: Option<&str>,
    dry_run: bool,
    overwrite: bool,
    confirm: Option<String>,
) -> Result<u8, Failure> {
    use cutover::actions::scaffold::{plan, ScaffoldParams};
    let invalid = |text: String| Failure::new(exit::INVALID, text);
    let spec = runbook
        .steps
        .iter()
        .find(|s| s.action.kind == "scaffold" && step.is_none_or(|id| s.id == id))
        .ok_or_else(|| {
            invalid(match step {
                Some(id) => format!("no scaffold step `{id}` in the runbook"),
                None => "the runbook has no `scaffold` step".to_string(),
            })
        })?;
    let state = cutover::journal::JournalState::default();
    let scope = cutover::engine::display_scope(runbook, &state);
    let (params, _) = cutover::runbook::render_params(&spec.action, &scope)
        .map_err(|r| invalid(format!("{}: cannot fill {r:?}", spec.id)))?;
    let params: ScaffoldParams = serde_json::from_value(params)
        .map_err(|e| invalid(format!("{}: bad parameters: {e}", spec.id)))?;
    let plan =
        plan(&params, &runbook.base_dir()).map_err(|e| Failure::new(exit::STEP_FAILED, e))?;
    for line in plan.report(true) {
        println!("{line}");
    }
    if dry_run {
        println!("(dry run: nothing written)");
        return Ok(exit::OK);
    }
    let differing = plan.differing().len();
    if differing > 0 {
        if !overwrite {
            return Err(Failure::new(
                exit::REFUSED,
                format!("{differing} file(s) differ from the templates: nothing written; review the diffs above, then `cutover scaffold --overwrite`"),
            ));
        }
        let phrase = format!("overwrite {differing} files");
        let typed = match confirm {
            Some(text) => text,
            None => {
                use std::io::{BufRead, IsTerminal, Write};
                if !std::io::stdin().is_terminal() {
                    return Err(Failure::new(
                        exit::REFUSED,
                        format!("overwriting needs the phrase: --confirm \"{phrase}\""),
                    ));
                }
                print!("Type \"{phrase}\" to overwrite them (only that will be accepted): ");
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                let _ = std::io::stdin().lock().read_line(&mut line);
                line.trim_end_matches(['\r', '\n']).to_string()
            }
        };
        if typed != phrase {
            return Err(Failure::new(
                exit::REFUSED,
                format!("the phrase was not \"{phrase}\": nothing written"),
            ));
        }
    }
    let written = plan
        .apply(overwrite)
        .map_err(|e| Failure::new(exit::STEP_FAILED, e))?;
    println!("{written} file(s) written into {}", plan.repo.display());
    Ok(exit::OK)
}

fn cost(runbook: &Runbook, workspace: &Workspace, json: bool, live: bool) -> Result<u8, Failure> {
    use cutover::cost;
    let Some(spec) = &runbook.cost else {
        return Err(Failure::new(
            exit::INVALID,
            format!("{} has no [cost] section", runbook.source.path.display()),
        ));
    };
    let invalid = |e: cost::CostError| Failure::new(exit::INVALID, e.to_string());
    let cache = workspace.root.join("prices-live.json");
    let estimate = if live {
        workspace.ensure()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::new(exit::STEP_FAILED, format!("cannot start: {e}")))?;
        let (table, source) = runtime
            .block_on(cost::live::prices(&spec.region, &cache))
            .map_err(invalid)?;
        cost::estimate(spec, &table, source).map_err(invalid)?
    } else {
        cost::offline_estimate(spec, &cache).map_err(invalid)?
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&estimate).unwrap_or_default()
        );
    } else {
        print!("{}", cost::report(&estimate));
    }
    if let cost::PriceSource::BundledAfterLiveFailed { .. } = estimate.source {
        eprintln!("cutover: warning: {}", estimate.source.describe());
    }
    Ok(exit::OK)
}

/// Opens the terminal UI: driving when it can take the locks, watching (and holding nothing)
/// when another driver holds one, or with `watch_only`.
fn tui(
    cli: &Cli,
    state: cutover::state::State,
    registry: Registry,
    watch_only: bool,
    mouse: bool,
    log_lines: usize,
) -> Result<u8, Failure> {
    use cutover::tui::{self, Mode, Setup};
    let runbook = match load(cli, &registry) {
        Ok(r) => r,
        Err(failure) => {
            let _ = tui::show_error(&failure.message);
            return Err(failure);
        }
    };
    let workspace = state.workspace.clone();
    workspace.ensure()?;
    // One redactor for the journal, the step logs and tui.log: it learns each secret once read.
    let redactor = Arc::new(Redactor::new());
    init_file_tracing(&workspace, redactor.clone());
    let actor = cutover::actor::current();
    let runbook = Arc::new(runbook);
    // Driving takes every lock (S3's first) or none; refused, the UI watches — an S3 state's
    // mirror following S3 (the journal and the log chunks) every second.
    let driving = if watch_only {
        None
    } else {
        match cutover::state::open_for_driving(&state, &actor, "cutover tui") {
            Ok(driving) => {
                cutover::actions::process::set_driver_lock_fd(Some(driving.hold.driver_lock_fd()));
                Some(driving)
            }
            Err(refused) => match refused.holder() {
                Some(holder) => {
                    tracing::info!(%holder, "the UI watches");
                    None
                }
                None => return Err(refused.into()),
            },
        }
    };
    let (mode, engine, hold, _following) = match driving {
        Some(driving) => {
            let (journal, _warning) = Journal::open(
                driving.store,
                actor.clone(),
                runbook.digest.clone(),
                redactor.clone(),
            )?;
            let mut engine = Engine::new(
                runbook.clone(),
                workspace.clone(),
                journal,
                registry,
                redactor,
            );
            engine.observe(Box::new(window::PredictionRecorder(window::load_history(
                cli.history.as_deref(),
            )?)));
            (Mode::Drive, Some(engine), Some(driving.hold), None)
        }
        None => {
            let following = cutover::state::follow(&state, std::time::Duration::from_secs(1));
            let reason = match (
                cutover::state::s3::followed_driver(&workspace.root),
                lock::read(&workspace.lock_path()).ok().flatten(),
            ) {
                (_, Some(info)) if info.driver_gone() => format!(
                    "a command {}'s driver started still runs and holds the lock",
                    info.holder
                ),
                (_, Some(info)) => format!(
                    "{} drives (pid {}, since {})",
                    info.holder, info.pid, info.started
                ),
                (Some((_, Some(holder))), None) => format!("{holder} drives (following S3)"),
                (Some((_, None)), None) => "nobody drives (following S3)".to_string(),
                (None, None) => "nobody drives".to_string(),
            };
            (Mode::Watch { reason }, None, None, following)
        }
    };
    // A driver that loses the S3 lock stops its step (the lease says why in tui.log: the
    // journal may no longer be its to write).
    let lost = hold.as_ref().and_then(cutover::state::Hold::lost);
    let cost = runbook.cost.as_ref().and_then(|spec| {
        cutover::cost::offline_estimate(spec, &workspace.root.join("prices-live.json")).ok()
    });
    // The header names where AWS work happens; the account is checked before every AWS call.
    let aws = runbook.aws.as_ref().map(|a| {
        [
            a.account_id.as_deref().map(|v| format!("AWS {v}")),
            a.region.clone(),
            a.profile.as_deref().map(|p| format!("profile {p}")),
            a.endpoint_url.as_deref().map(|u| format!("endpoint {u}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · ")
    });
    let setup = Setup {
        aws,
        cost,
        runbook,
        workspace,
        engine,
        mode,
        banner: std::env::var("CUTOVER_BANNER")
            .ok()
            .filter(|b| !b.trim().is_empty()),
        mouse,
        log_capacity: log_lines.max(1000),
        history: window::load_history(cli.history.as_deref())?,
        actor,
        started: STARTED
            .get()
            .copied()
            .unwrap_or_else(std::time::Instant::now),
        lost,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::STEP_FAILED, format!("cannot start: {e}")))?;
    let result = runtime.block_on(tui::run(setup));
    drop(hold);
    result.map_err(|e| Failure::new(exit::STEP_FAILED, format!("terminal error: {e}")))?;
    Ok(exit::OK)
}

/// Diagnostics of the UI go to `.cutover/tui.log`, never to the screen.
/// tui.log's writer: each write passes the same redactor as the journal and the step logs.
struct RedactingFile {
    file: std::sync::Mutex<std::fs::File>,
    redactor: Arc<Redactor>,
}

impl std::io::Write for &RedactingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let masked = self.redactor.redact(&text);
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(masked.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingFile {
    type Writer = &'a RedactingFile;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

fn init_file_tracing(workspace: &Workspace, redactor: Arc<Redactor>) {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(workspace.root.join("tui.log"))
    else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(RedactingFile {
            file: std::sync::Mutex::new(file),
            redactor,
        })
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

/// What the signal handlers of the command that drives need: its S3 lease (lost: the step is
/// cancelled) and its S3 client (Ctrl-C while S3 does not answer).
struct Driving {
    lease: Option<Arc<cutover::state::s3::Lease>>,
    interrupter: Option<cutover::state::s3::Interrupter>,
}

static DRIVING: std::sync::OnceLock<Driving> = std::sync::OnceLock::new();

/// How long S3 gets after Ctrl-C to record the cancelled step (the action's own grace, and
/// then some) before its calls are abandoned; a second Ctrl-C abandons them at once.
const S3_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the locks and opens the journal for writing, through `cutover::state::open_for_driving`:
/// what every command that changes state does. Keep the `Hold` until the command ends.
fn drive(
    runbook: Runbook,
    state: &cutover::state::State,
    registry: Registry,
    command: &str,
) -> Result<(Engine, cutover::state::Hold), Failure> {
    let actor = cutover::actor::current();
    if state.remote.is_some() {
        init_stderr_warnings();
    }
    let driving = cutover::state::open_for_driving(state, &actor, &format!("cutover {command}"))?;
    // The commands its steps run keep the lock if this driver is killed; nothing else does.
    cutover::actions::process::set_driver_lock_fd(Some(driving.hold.driver_lock_fd()));
    let _ = DRIVING.set(Driving {
        lease: driving.hold.lease(),
        interrupter: driving.hold.interrupter(),
    });
    let redactor = Arc::new(Redactor::new());
    let (journal, warning) = Journal::open(
        driving.store,
        actor,
        runbook.digest.clone(),
        redactor.clone(),
    )?;
    if let Some(warning) = warning {
        eprintln!("cutover: warning: {warning}");
    }
    let engine = Engine::new(
        Arc::new(runbook),
        state.workspace.clone(),
        journal,
        registry,
        redactor,
    );
    Ok((engine, driving.hold))
}

/// With an S3 state, what the state's background work has to say (the lease lost, the logs
/// behind) goes to stderr as warnings.
fn init_stderr_warnings() {
    use tracing_subscriber::fmt::{format, FmtContext, FormatEvent, FormatFields};
    struct Warning;
    impl<S, N> FormatEvent<S, N> for Warning
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: format::Writer<'_>,
            event: &tracing::Event<'_>,
        ) -> std::fmt::Result {
            write!(writer, "cutover: warning: ")?;
            ctx.field_format().format_fields(writer.by_ref(), event)?;
            writeln!(writer)
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .event_format(Warning)
        .with_env_filter(tracing_subscriber::EnvFilter::new("cutover::state=warn"))
        .try_init();
}

/// A command that drove and failed: when it lost the S3 lock, or was interrupted while S3 did
/// not answer, that is what it says.
fn stopped(hold: &cutover::state::Hold, failure: Failure) -> Failure {
    if let Some(why) = hold.lost_why() {
        return Failure::new(exit::LOCKED, why);
    }
    if hold.interrupter().is_some_and(|i| i.is_interrupted()) {
        return Failure::new(exit::CANCELLED, format!("cancelled: {}", failure.message));
    }
    failure
}

fn workspace_of(cli: &Cli) -> Workspace {
    match &cli.state_dir {
        Some(dir) => Workspace { root: dir.clone() },
        None => Workspace::for_runbook(&cli.runbook),
    }
}

/// `--vars-file` then `--var`: the later override wins.
fn var_overrides(cli: &Cli) -> Result<Vec<String>, Failure> {
    let mut overrides = Vec::new();
    if let Some(path) = &cli.vars_file {
        let invalid = |why: String| {
            Failure::new(
                exit::INVALID,
                format!("--vars-file {}: {why}", path.display()),
            )
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(e.message().to_string()))?;
        for (name, value) in table {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    value.to_string()
                }
                other => {
                    return Err(invalid(format!(
                        "`{name}` must be a string, number or boolean, found {}",
                        other.type_str()
                    )))
                }
            };
            overrides.push(format!("{name}={value}"));
        }
    }
    overrides.extend(cli.vars.iter().cloned());
    Ok(overrides)
}

/// Loads the runbook with `--vars-file`/`--var` overrides and the AWS flags applied.
fn load(cli: &Cli, registry: &Registry) -> Result<Runbook, Failure> {
    let mut runbook = Runbook::load(&cli.runbook, &var_overrides(cli)?, registry)?;
    if cli.profile.is_some() || cli.region.is_some() || cli.endpoint_url.is_some() {
        let aws = runbook.aws.get_or_insert_with(Default::default);
        if let Some(profile) = &cli.profile {
            aws.profile = Some(profile.clone());
        }
        if let Some(url) = &cli.endpoint_url {
            aws.endpoint_url = Some(url.clone());
        }
        if let Some(region) = &cli.region {
            match &aws.region {
                Some(expected) if expected != region => {
                    return Err(Failure::new(
                        exit::REFUSED,
                        format!("--region {region}: the runbook is for {expected}"),
                    ))
                }
                _ => aws.region = Some(region.clone()),
            }
        }
    }
    Ok(runbook)
}

/// `cutover ecs-run -- CMD...`: the `ecs.run-task` action, outside any step.
fn ecs_run(
    runbook: Runbook,
    registry: Registry,
    cluster: Option<String>,
    service: Option<String>,
    container: Option<String>,
    command: Vec<String>,
) -> Result<u8, Failure> {
    use cutover::actions::{ActionContext, ActionEvent, Reporter, Stream};
    let aws = runbook.aws.clone().unwrap_or_default();
    let missing = |what: &str| {
        Failure::new(
            exit::INVALID,
            format!("no {what}: pass --{what} or set [aws] {what} in the runbook"),
        )
    };
    let cluster = cluster
        .or_else(|| aws.cluster.clone())
        .ok_or_else(|| missing("cluster"))?;
    let service = service
        .or_else(|| aws.service.clone())
        .ok_or_else(|| missing("service"))?;
    let container = container.or_else(|| aws.container.clone());
    let Some(action) = registry.get("ecs.run-task") else {
        return Err(Failure::new(exit::STEP_FAILED, "no ecs.run-task action"));
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::STEP_FAILED, format!("cannot start: {e}")))?;
    runtime.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ncutover: stopping the task...");
                on_signal.cancel();
            }
        });
        let outputs =
            std::env::temp_dir().join(format!("cutover-ecs-run-{}.outputs", std::process::id()));
        let context = ActionContext {
            step: "ecs-run".into(),
            params: serde_json::json!({
                "cluster": cluster,
                "service": service,
                "command": command,
                "container": container,
            }),
            cancel,
            report: Reporter::new(tx),
            work_dir: runbook.base_dir(),
            outputs_file: outputs,
            operator_note: None,
            aws,
            recorded: Default::default(),
            forwards: Vec::new(),
            tunnels: Default::default(),
        };
        let task = tokio::spawn(async move { action.run(context).await });
        let redactor = Redactor::new();
        while let Some(event) = rx.recv().await {
            match event {
                ActionEvent::Log {
                    stream: Stream::Stdout,
                    line,
                } => println!("{}", redactor.redact(&line)),
                ActionEvent::Log { line, .. } => eprintln!("» {}", redactor.redact(&line)),
                ActionEvent::Recorded(ack) => ack.answer(),
                ActionEvent::Output { .. } | ActionEvent::Progress(_) => {}
            }
        }
        let outcome = task
            .await
            .unwrap_or_else(|e| Outcome::failed(e.to_string()));
        match outcome {
            Outcome::Succeeded { .. } => Ok(exit::OK),
            Outcome::Failed { reason, exit_code } => {
                eprintln!("cutover: {reason}");
                Ok(exit_code.map_or(exit::STEP_FAILED, |c| {
                    u8::try_from(c.clamp(1, 255)).unwrap_or(exit::STEP_FAILED)
                }))
            }
            Outcome::Cancelled => Ok(exit::CANCELLED),
        }
    })
}

async fn run(
    runbook: Runbook,
    state: &cutover::state::State,
    registry: Registry,
    request: RunRequest,
    history: Option<journal::JournalState>,
) -> Result<u8, Failure> {
    let label = match &request.target {
        Target::Step(id) => format!("run {id}"),
        Target::Next => "run --next".to_string(),
    };
    let (mut engine, hold) = drive(runbook, state, registry, &label)?;
    engine.observe(Box::new(window::PredictionRecorder(history)));
    tracing::info!(step = %label, "headless run");
    engine.subscribe(Box::new(printer::Printer::new()));
    cancel_on_signals(&request.cancel);
    let result = engine.run(request).await;
    // A tunnel lives as long as the command: this one is over.
    engine.close_tunnels().await;
    let result = match result {
        Ok(result) => result,
        Err(cutover::engine::EngineError::AllDone) => {
            println!("every step is done");
            return Ok(exit::OK);
        }
        Err(e) => return Err(stopped(&hold, e.into())),
    };
    Ok(match result.outcome {
        Outcome::Succeeded { .. } => exit::OK,
        Outcome::Failed { .. } => exit::STEP_FAILED,
        Outcome::Cancelled => exit::CANCELLED,
    })
}

/// Ctrl-C, SIGTERM or a closed terminal (SIGHUP) cancels the running step; the engine
/// records it and returns, and the lock is released.
///
/// With an S3 state: S3 then has [`S3_GRACE`] to record the cancelled step before its calls
/// are abandoned (a second signal abandons them at once), so a network that stopped answering
/// does not hold the command; and a lost S3 lease cancels the step too, saying why.
fn cancel_on_signals(cancel: &tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let driving = DRIVING.get();
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ] {
        if let Ok(mut stream) = signal(kind) {
            let cancel = cancel.clone();
            let interrupter = driving.and_then(|d| d.interrupter.clone());
            tokio::spawn(async move {
                stream.recv().await;
                eprintln!("\ncutover: cancelling the running step...");
                cancel.cancel();
                if let Some(interrupter) = interrupter {
                    tokio::select! {
                        () = tokio::time::sleep(S3_GRACE) => {}
                        _ = stream.recv() => {}
                    }
                    interrupter.interrupt();
                }
            });
        }
    }
    if let Some(lease) = driving.and_then(|d| d.lease.clone()) {
        let cancel = cancel.clone();
        // The lease says why (a warning on stderr); the step stops.
        tokio::spawn(async move {
            lease.lost().cancelled().await;
            cancel.cancel();
        });
    }
}

fn audit_verify(workspace: &Workspace) -> Result<u8, Failure> {
    let path = workspace.journal_path();
    let loaded = show::load_journal(workspace)?;
    match &loaded.integrity {
        journal::Integrity::Broken { line, reason } => Err(Failure::new(
            exit::JOURNAL_DAMAGED,
            format!("{}: line {line} is bad: {reason}", path.display()),
        )),
        integrity => {
            if let journal::Integrity::PartialTail { .. } = integrity {
                if let Some(w) = loaded.warning() {
                    eprintln!("cutover: warning: {w}");
                }
            }
            println!(
                "{}: verified — {} lines, chain intact, last hash {}",
                path.display(),
                loaded.state.lines,
                loaded.state.last_hash
            );
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod redacting_file_tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tui_log_lines_pass_the_redactor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tui.log");
        let redactor = Arc::new(Redactor::new());
        let writer = RedactingFile {
            file: std::sync::Mutex::new(std::fs::File::create(&path).unwrap()),
            redactor: redactor.clone(),
        };
        redactor.add_secret("hunter2-secret");
        (&writer)
            .write_all(b"INFO step failed: bad password hunter2-secret at postgres://u:pw@h/db\n")
            .unwrap();
        (&writer).flush().unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            written,
            "INFO step failed: bad password *** at postgres://u:***@h/db\n"
        );
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
        assert!(matches!(cli.command, Some(super::Command::Mark { .. })));
    }
}
