//! What several commands share: the parsed global options and the actions, the runbook loaded
//! with its overrides, the state opened for reading (`--state s3://BUCKET/PREFIX`, or the
//! runbook's `[state] backend`: the journal and the lock on S3, mirrored in a state directory
//! of their own), the journal and `--history` folded. Driving is in driving.rs, where
//! diagnostics go in logging.rs.

use std::path::Path;

use cutover::actions::Registry;
use cutover::journal::lock::{self, LockInfo};
use cutover::journal::{self, FileStore, JournalState, JournalStore, Loaded};
use cutover::runbook::{AwsSettings, Runbook};
use cutover::state::s3::Reading;
use cutover::state::{Backend, State};
use cutover::workspace::Workspace;

use super::exit::{self, Failure};
use super::Cli;

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
        setup(&self.cli, runbook.as_ref(), local, reading)
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

/// The backend: `--state`/`CUTOVER_STATE`, else the runbook's `[state] backend`.
fn backend(cli: &Cli, runbook: Option<&cutover::runbook::Runbook>) -> Result<Backend, Failure> {
    let text = cli
        .state_url
        .clone()
        .or_else(|| runbook.and_then(|r| r.state.clone()));
    match text {
        None => Ok(Backend::Local),
        Some(text) => Backend::parse(&text).map_err(|e| Failure::new(exit::INVALID, e)),
    }
}

/// Opens this command's state (`cutover::state::open_for_reading`): the local workspace, or
/// the S3 state with its mirror brought up to it as `reading` says (not at all for a push).
pub fn setup(
    cli: &Cli,
    runbook: Option<&cutover::runbook::Runbook>,
    local: Workspace,
    reading: Option<Reading>,
) -> Result<State, Failure> {
    let backend = backend(cli, runbook)?;
    let mut aws: AwsSettings = runbook.and_then(|r| r.aws.clone()).unwrap_or_default();
    if cli.endpoint_url.is_some() {
        aws.endpoint_url = cli.endpoint_url.clone();
    }
    if cli.profile.is_some() {
        aws.profile = cli.profile.clone();
    }
    if cli.region.is_some() {
        aws.region = cli.region.clone();
    }
    let state = cutover::state::open_for_reading(local, &backend, &aws, reading)?;
    if state.remote.is_some() {
        // Status shows the S3 lock's holder: alive while S3 has seen it renewed within its lease.
        match &state.driver {
            Some(holder) => set_remote_driver(
                LockInfo {
                    id: holder.id.clone(),
                    holder: holder.holder.clone(),
                    host: holder.host.clone(),
                    pid: holder.pid,
                    pid_start: None,
                    command: holder.command.clone(),
                    started: holder.started.clone(),
                },
                !holder.is_stale(),
            ),
            None => set_no_remote_driver(),
        }
    }
    Ok(state)
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
