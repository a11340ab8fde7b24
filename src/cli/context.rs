//! What several commands share: the parsed global options and the actions, loading the runbook
//! with its overrides, opening the state (to read, or to drive: the locks and the journal), the
//! signal handlers of the command that drives, and where diagnostics go (tui.log, stderr).

use std::sync::Arc;

use cutover::actions::Registry;
use cutover::engine::Engine;
use std::path::Path;

use cutover::journal::{self, lock, FileStore, Journal, JournalState, JournalStore, Loaded};
use cutover::redact::Redactor;
use cutover::runbook::Runbook;
use cutover::state::s3::Reading;
use cutover::workspace::Workspace;

use super::exit::{self, Failure};
use super::{state, Cli};

/// When the command started (the TUI's clock).
pub static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// What every command is given: the global options (`--runbook`, `--var`, `--state`, the AWS
/// flags, `--history`) and the action kinds.
pub struct Context {
    pub cli: Cli,
    pub registry: Registry,
}

impl Context {
    /// Loads the runbook with `--vars-file`/`--var` overrides and the AWS flags applied.
    pub fn load(&self) -> Result<Runbook, Failure> {
        load(&self.cli, &self.registry)
    }

    /// The local state directory: `--state-dir`, else .cutover/ beside the runbook.
    pub fn workspace(&self) -> Workspace {
        workspace_of(&self.cli)
    }

    /// The state on S3 when there is one: the runbook (if it loads) may name it and gives the
    /// AWS settings; the mirror is brought up to date first (`None`: not read, as push fills
    /// an empty prefix).
    pub fn state(&self, reading: Option<Reading>) -> Result<cutover::state::State, Failure> {
        let local = self.workspace();
        let runbook = self.load().ok();
        state::setup(&self.cli, runbook.as_ref(), local, reading)
    }

    /// The journal of `--history`, folded.
    pub fn history(&self) -> Result<Option<JournalState>, Failure> {
        load_history(self.cli.history.as_deref())
    }
}

/// A multi-threaded runtime for the commands that drive.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::STEP_FAILED, format!("cannot start: {e}")))
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

pub fn init_file_tracing(workspace: &Workspace, redactor: Arc<Redactor>) {
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
pub fn drive(
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
pub fn stopped(hold: &cutover::state::Hold, failure: Failure) -> Failure {
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

/// Ctrl-C, SIGTERM or a closed terminal (SIGHUP) cancels the running step; the engine
/// records it and returns, and the lock is released.
///
/// With an S3 state: S3 then has [`S3_GRACE`] to record the cancelled step before its calls
/// are abandoned (a second signal abandons them at once), so a network that stopped answering
/// does not hold the command; and a lost S3 lease cancels the step too, saying why.
pub fn cancel_on_signals(cancel: &tokio_util::sync::CancellationToken) {
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

/// The local journal (the mirror, with an S3 state), folded.
pub fn load_journal(workspace: &Workspace) -> Result<Loaded, Failure> {
    let store = FileStore::new(workspace.journal_path());
    Ok(journal::load(&store.read_all()?))
}

/// With an S3 state: the S3 lock's holder, alive while its heartbeat is within the lease
/// (`None` inside: nobody holds it). Set once, before the views are drawn.
type RemoteDriver = Option<(lock::LockInfo, bool)>;
static REMOTE_DRIVER: std::sync::OnceLock<RemoteDriver> = std::sync::OnceLock::new();

pub fn set_remote_driver(info: lock::LockInfo, alive: bool) {
    let _ = REMOTE_DRIVER.set(Some((info, alive)));
}

pub fn set_no_remote_driver() {
    let _ = REMOTE_DRIVER.set(None);
}

/// The lock holder, if any, and whether its process is still alive.
pub fn driver(workspace: &Workspace) -> Option<(lock::LockInfo, bool)> {
    if let Some(remote) = REMOTE_DRIVER.get() {
        return remote.clone();
    }
    lock::read(&workspace.lock_path())
        .ok()
        .flatten()
        .map(|info| {
            let alive = !info.driver_gone();
            (info, alive)
        })
}

/// The journal of an earlier run (`--history`), folded; a damaged one is used up to the damage.
pub fn load_history(path: Option<&Path>) -> Result<Option<JournalState>, Failure> {
    let Some(path) = path else {
        return Ok(None);
    };
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::new(exit::INVALID, format!("--history {}: {e}", path.display())))?;
    let loaded = journal::load(&bytes);
    if let Some(w) = loaded.warning() {
        eprintln!("cutover: --history {}: {w}", path.display());
    }
    cutover::window::check_history(&loaded.state)
        .map_err(|e| Failure::new(exit::INVALID, format!("--history {}: {e}", path.display())))?;
    Ok(Some(loaded.state))
}

/// The window report's observer of the engine: journals a window's prediction when it opens.
pub struct PredictionRecorder(pub Option<JournalState>);

impl cutover::engine::Observer for PredictionRecorder {
    fn on_success(
        &mut self,
        runbook: &Runbook,
        step: &cutover::runbook::Step,
        journal: &JournalState,
    ) -> std::collections::BTreeMap<String, String> {
        cutover::window::predictions_on_success(runbook, step, journal, self.0.as_ref())
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
