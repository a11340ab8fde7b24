//! A project: a runbook built from the parts a test chooses, in a temporary directory, and the
//! binary run there with the project's environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::journal::{self, Journal};
use super::run::{self, Outcome};
use super::wait;

/// A runbook's text from its parts. Each part is rendered as a TOML table after a blank line,
/// in this order: `[runbook]`, `[vars]`, `[secrets]`, `[aws]`, the raw tables ([`table`]), the
/// phase; then a blank line and the steps as given.
///
/// [`table`]: Runbook::table
#[derive(Clone)]
pub struct Runbook {
    name: String,
    app: String,
    vars: Vec<(String, String)>,
    secrets: Vec<(String, String)>,
    aws: Option<Aws>,
    tables: Vec<String>,
    phase: String,
    title: Option<String>,
    steps: String,
}

#[derive(Clone)]
struct Aws {
    account: Option<String>,
    endpoint: String,
}

impl Runbook {
    /// A runbook `name` for the app `gengar`, one phase `one`, no steps yet.
    pub fn new(name: &str) -> Runbook {
        Runbook {
            name: name.to_string(),
            app: "gengar".to_string(),
            vars: Vec::new(),
            secrets: Vec::new(),
            aws: None,
            tables: Vec::new(),
            phase: "one".to_string(),
            title: None,
            steps: String::new(),
        }
    }

    /// A variable, as a TOML string.
    pub fn var(mut self, name: &str, value: &str) -> Runbook {
        self.vars.push((name.to_string(), toml_string(value)));
        self
    }

    /// A secret and where it comes from, as TOML (`{ env = "TEST_TOKEN" }`).
    pub fn secret(mut self, name: &str, source: &str) -> Runbook {
        self.secrets.push((name.to_string(), source.to_string()));
        self
    }

    /// An `[aws]` section for region us-east-1 at `endpoint` (moto, or a proxy in front of it).
    pub fn aws(mut self, endpoint: &str) -> Runbook {
        let account = self.aws.take().and_then(|a| a.account);
        self.aws = Some(Aws {
            account,
            endpoint: endpoint.to_string(),
        });
        self
    }

    /// The account the `[aws]` section names (the account guard checks it).
    pub fn account(mut self, account: &str) -> Runbook {
        let aws = self.aws.get_or_insert_with(|| Aws {
            account: None,
            endpoint: String::new(),
        });
        aws.account = Some(account.to_string());
        self
    }

    /// A table of its own, as TOML text (`[cost]`, `[[window]]`), before the phase.
    pub fn table(mut self, toml: &str) -> Runbook {
        self.tables.push(toml.trim_matches('\n').to_string());
        self
    }

    /// The phase's id and, when given, its title.
    pub fn phase(mut self, id: &str, title: Option<&str>) -> Runbook {
        self.phase = id.to_string();
        self.title = title.map(str::to_string);
        self
    }

    /// Steps (`[[phase.step]]` tables, as TOML text), after those given before.
    pub fn steps(mut self, steps: &str) -> Runbook {
        self.steps.push_str(steps);
        self
    }

    /// The runbook's text.
    pub fn render(&self) -> String {
        let mut text = format!(
            "\n[runbook]\nname = {}\napp = {}\n",
            toml_string(&self.name),
            toml_string(&self.app)
        );
        let pairs = |title: &str, pairs: &[(String, String)]| {
            let mut table = format!("\n[{title}]\n");
            for (key, value) in pairs {
                table.push_str(&format!("{key} = {value}\n"));
            }
            table
        };
        if !self.vars.is_empty() {
            text.push_str(&pairs("vars", &self.vars));
        }
        if !self.secrets.is_empty() {
            text.push_str(&pairs("secrets", &self.secrets));
        }
        if let Some(aws) = &self.aws {
            text.push_str("\n[aws]\n");
            if let Some(account) = &aws.account {
                text.push_str(&format!("account_id = {}\n", toml_string(account)));
            }
            text.push_str("region = \"us-east-1\"\n");
            if !aws.endpoint.is_empty() {
                text.push_str(&format!("endpoint_url = {}\n", toml_string(&aws.endpoint)));
            }
        }
        for table in &self.tables {
            text.push_str(&format!("\n{table}\n"));
        }
        text.push_str(&format!("\n[[phase]]\nid = {}\n", toml_string(&self.phase)));
        if let Some(title) = &self.title {
            text.push_str(&format!("title = {}\n", toml_string(title)));
        }
        text.push('\n');
        text.push_str(&self.steps);
        text
    }
}

/// `value` as a TOML basic string.
fn toml_string(value: &str) -> String {
    let mut quoted = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A temporary directory holding `runbook.toml` (and whatever a test writes beside it), the
/// state under `.cutover/`, and the environment its commands get on top of [`run::cutover`]'s.
pub struct Project {
    dir: tempfile::TempDir,
    env: Vec<(String, OsString)>,
}

impl Project {
    pub fn new(runbook: &Runbook) -> Project {
        Project::with_text(&runbook.render())
    }

    /// A project whose `runbook.toml` is `text` as it is (a broken one, a whole runbook).
    pub fn with_text(text: &str) -> Project {
        let project = Project::empty();
        project.write("runbook.toml", text);
        project
    }

    /// A project with no runbook yet.
    pub fn empty() -> Project {
        Project {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    /// An environment variable every command of this project gets.
    pub fn env(mut self, name: &str, value: impl Into<OsString>) -> Project {
        self.env.push((name.to_string(), value.into()));
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the project.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// Writes a file inside the project, making its directory.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let path = self.file(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Writes an executable script inside the project (a stand-in put on PATH).
    pub fn write_script(&self, rel: &str, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        self.write(rel, text);
        std::fs::set_permissions(self.file(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A file inside the project; a missing one fails the test, naming it.
    pub fn read(&self, rel: &str) -> String {
        let path = self.file(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `cutover ARGS` here, to add to (more environment, PATH, pipes) before running.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = run::cutover(self.path(), args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// `cutover ARGS` here, run to its end.
    pub fn run(&self, args: &[&str]) -> Outcome {
        Outcome(self.command(args).output().unwrap())
    }

    /// `cutover ARGS` here with more environment (a secret's variable, PATH), run to its end.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        Outcome(
            self.command(args)
                .envs(env.iter().copied())
                .output()
                .unwrap(),
        )
    }

    /// `cutover ARGS` here in the background, its output dropped (the journal and the logs
    /// are what a test reads).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Waits until the project's file `rel` holds `needle` (20 s at the most).
    #[track_caller]
    pub fn wait_for(&self, rel: &str, needle: &str) {
        wait::file_contains(&self.file(rel), needle, Duration::from_secs(20));
    }

    /// `cutover ARGS` here, which must exit 0.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Outcome {
        self.run(args).ok()
    }

    /// The journal as the local state holds it (empty before the first line).
    pub fn journal(&self) -> Journal {
        Journal::read(&self.file(".cutover/journal.jsonl"))
    }

    /// `status --json`.
    #[track_caller]
    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.text()))
    }

    /// One step's entry in `status --json`.
    #[track_caller]
    pub fn step(&self, id: &str) -> serde_json::Value {
        journal::step(&self.status(), id).clone()
    }

    /// One step's state, as `status --json` says it.
    #[track_caller]
    pub fn state_of(&self, id: &str) -> String {
        journal::state_of(&self.status(), id)
    }
}
