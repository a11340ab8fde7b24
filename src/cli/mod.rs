//! The command line: every step runs headless from here.

mod exit;
mod printer;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use cutover::actions::{Outcome, Registry};
use cutover::engine::{Engine, Mark, RunRequest, Target};
use cutover::journal::{self, lock, FileStore, Journal};
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
    /// Override a runbook variable (repeatable).
    #[arg(long = "var", global = true, value_name = "KEY=VALUE")]
    vars: Vec<String>,
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
    Plan,
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
    /// Remove a lock left by a driver that is gone; only with its exact id.
    Unlock {
        #[arg(value_name = "LOCK_ID")]
        id: String,
    },
    /// Prove the journal was not edited.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check every line's sequence number and hash chain; name the first bad line.
    Verify,
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
fn dispatch(cli: Cli) -> Result<u8, Failure> {
    let registry = Registry::builtin();
    let command = cli.command.unwrap_or_else(|| {
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
        let runbook = Runbook::load(&cli.runbook, &cli.vars, &registry)?;
        println!(
            "{}: valid — {} phases, {} steps",
            runbook.source.path.display(),
            runbook.phases.len(),
            runbook.steps.len()
        );
        return Ok(exit::OK);
    }
    let workspace = Workspace::for_runbook(&cli.runbook);
    match command {
        Command::Audit {
            command: AuditCommand::Verify,
        } => audit_verify(&workspace),
        Command::Unlock { id } => {
            let info = lock::unlock(&workspace.lock_path(), &id)?;
            println!("removed the lock of {}", info.describe());
            Ok(exit::OK)
        }
        Command::Log { step, attempt } => {
            let runbook = Runbook::load(&cli.runbook, &cli.vars, &registry)?;
            show::log(&runbook, &workspace, &step, attempt)
        }
        Command::Status { json } => {
            let runbook = Runbook::load(&cli.runbook, &cli.vars, &registry)?;
            show::status(&runbook, &workspace, json)
        }
        Command::Plan => {
            let runbook = Runbook::load(&cli.runbook, &cli.vars, &registry)?;
            show::plan(&runbook, &workspace, &registry)
        }
        Command::Run {
            step,
            next,
            confirm,
            note,
            check,
        } => {
            let runbook = Runbook::load(&cli.runbook, &cli.vars, &registry)?;
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
            runtime.block_on(run(runbook, workspace, registry, request))
        }
        Command::Mark { step, state, note } => {
            let runbook = Runbook::load(&cli.runbook, &cli.vars, &registry)?;
            let (mut engine, _lock) = drive(runbook, workspace, registry, &format!("mark {step}"))?;
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
            let runbook = Runbook::load(&cli.runbook, &cli.vars, &registry)?;
            let (mut engine, _lock) = drive(runbook, workspace, registry, "note")?;
            engine.note(step.as_deref(), &text)?;
            Ok(exit::OK)
        }
        Command::Validate => Ok(exit::OK),
        Command::Cost { json, live } => {
            let runbook = Runbook::load(&cli.runbook, &cli.vars, &registry)?;
            cost(&runbook, &workspace, json, live)
        }
        Command::Tui { mouse, log_lines } => {
            tui(&cli.runbook, &cli.vars, registry, false, mouse, log_lines)
        }
        Command::Watch { mouse } => tui(&cli.runbook, &cli.vars, registry, true, mouse, 100_000),
    }
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

/// Opens the terminal UI: driving when the lock is free, watching when another driver holds it.
fn tui(
    path: &std::path::Path,
    vars: &[String],
    registry: Registry,
    watch_only: bool,
    mouse: bool,
    log_lines: usize,
) -> Result<u8, Failure> {
    use cutover::tui::{self, Mode, Setup};
    let runbook = match Runbook::load(path, vars, &registry) {
        Ok(r) => r,
        Err(e) => {
            let failure = Failure::from(e);
            let _ = tui::show_error(&failure.message);
            return Err(failure);
        }
    };
    let workspace = Workspace::for_runbook(path);
    workspace.ensure()?;
    init_file_tracing(&workspace);
    let actor = cutover::actor::current();
    let lock_path = workspace.lock_path();
    let (mode, guard) = if watch_only {
        let reason = match lock::read(&lock_path).ok().flatten() {
            Some(info) => format!("{} drives", info.describe()),
            None => "nobody drives".to_string(),
        };
        (Mode::Watch { reason }, None)
    } else {
        match lock::acquire(&lock_path, &actor, "cutover tui") {
            Ok(guard) => (Mode::Drive, Some(guard)),
            Err(lock::LockError::Held(info)) => (
                Mode::Watch {
                    reason: format!(
                        "{} drives (pid {}, since {})",
                        info.holder, info.pid, info.started
                    ),
                },
                None,
            ),
            Err(lock::LockError::Stale(info)) => (
                Mode::Watch {
                    reason: format!(
                        "stale lock of {}: `cutover unlock {}` to drive",
                        info.holder, info.id
                    ),
                },
                None,
            ),
            Err(other) => return Err(other.into()),
        }
    };
    let redactor = Arc::new(Redactor::new());
    let runbook = Arc::new(runbook);
    let engine = match guard {
        Some(_) => {
            let (journal, _warning) = Journal::open(
                Box::new(FileStore::new(workspace.journal_path())),
                actor.clone(),
                runbook.digest.clone(),
                redactor.clone(),
            )?;
            Some(Engine::new(
                runbook.clone(),
                workspace.clone(),
                journal,
                registry,
                redactor,
            ))
        }
        None => None,
    };
    let cost = runbook.cost.as_ref().and_then(|spec| {
        cutover::cost::offline_estimate(spec, &workspace.root.join("prices-live.json")).ok()
    });
    let setup = Setup {
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
        actor,
        started: STARTED
            .get()
            .copied()
            .unwrap_or_else(std::time::Instant::now),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::STEP_FAILED, format!("cannot start: {e}")))?;
    let result = runtime.block_on(tui::run(setup));
    drop(guard);
    result.map_err(|e| Failure::new(exit::STEP_FAILED, format!("terminal error: {e}")))?;
    Ok(exit::OK)
}

/// Diagnostics of the UI go to `.cutover/tui.log`, never to the screen.
fn init_file_tracing(workspace: &Workspace) {
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
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

/// Takes the lock and opens the journal for writing: what every command that changes state does.
fn drive(
    runbook: Runbook,
    workspace: Workspace,
    registry: Registry,
    command: &str,
) -> Result<(Engine, lock::LockGuard), Failure> {
    workspace.ensure()?;
    let actor = cutover::actor::current();
    let guard = lock::acquire(
        &workspace.lock_path(),
        &actor,
        &format!("cutover {command}"),
    )?;
    let redactor = Arc::new(Redactor::new());
    let (journal, warning) = Journal::open(
        Box::new(FileStore::new(workspace.journal_path())),
        actor,
        runbook.digest.clone(),
        redactor.clone(),
    )?;
    if let Some(warning) = warning {
        eprintln!("cutover: warning: {warning}");
    }
    let engine = Engine::new(Arc::new(runbook), workspace, journal, registry, redactor);
    Ok((engine, guard))
}

async fn run(
    runbook: Runbook,
    workspace: Workspace,
    registry: Registry,
    request: RunRequest,
) -> Result<u8, Failure> {
    let label = match &request.target {
        Target::Step(id) => format!("run {id}"),
        Target::Next => "run --next".to_string(),
    };
    let (mut engine, _lock) = drive(runbook, workspace, registry, &label)?;
    tracing::info!(step = %label, "headless run");
    engine.subscribe(Box::new(printer::Printer::new()));
    let cancel = request.cancel.clone();
    // Ctrl-C, SIGTERM or a closed terminal (SIGHUP) cancels the running step; the engine
    // records it and returns, and the lock is released.
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ] {
        if let Ok(mut stream) = signal(kind) {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                stream.recv().await;
                eprintln!("\ncutover: cancelling the running step...");
                cancel.cancel();
            });
        }
    }
    let result = match engine.run(request).await {
        Ok(result) => result,
        Err(cutover::engine::EngineError::AllDone) => {
            println!("every step is done");
            return Ok(exit::OK);
        }
        Err(e) => return Err(e.into()),
    };
    Ok(match result.outcome {
        Outcome::Succeeded { .. } => exit::OK,
        Outcome::Failed { .. } => exit::STEP_FAILED,
        Outcome::Cancelled => exit::CANCELLED,
    })
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
