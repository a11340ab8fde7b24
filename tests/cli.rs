//! The headless CLI end to end: the real binary, real processes, a real journal on disk.

mod common;
use common::{code, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cutover");

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(runbook: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("runbook.toml"), runbook).unwrap();
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env("CUTOVER_ACTOR", "ana@laptop")
            .env_remove("CUTOVER_RUNBOOK")
            .env_remove("CUTOVER_VARS_FILE")
            .env_remove("CUTOVER_STATE_DIR")
            .env_remove("CUTOVER_AWS_ENDPOINT_URL")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn journal(&self) -> String {
        std::fs::read_to_string(self.path().join(".cutover/journal.jsonl")).unwrap_or_default()
    }

    fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }

    fn state_of(&self, step: &str) -> String {
        let status = self.status();
        status["phases"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["steps"].as_array().unwrap().iter())
            .find(|s| s["id"] == step)
            .map(|s| s["state"].as_str().unwrap().to_string())
            .unwrap()
    }

    fn wait_for_file_containing(&self, rel: &str, needle: &str) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if std::fs::read_to_string(self.path().join(rel))
                .unwrap_or_default()
                .contains(needle)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{rel} never contained {needle:?}");
    }
}

const HEAD: &str = r#"
[runbook]
name = "test"
app = "gengar"

[vars]
soak = "1h"

[secrets]
TOKEN = { env = "TEST_TOKEN" }
DB = { command = "echo postgres://app:cmd-pa55@db.internal:5432/gengar" }

[[phase]]
id = "one"
title = "Phase one"
"#;

fn project(steps: &str) -> Project {
    Project::new(&format!("{HEAD}\n{steps}"))
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn validate_reports_every_error_with_file_line_and_column() {
    let p = Project::new(&format!(
        "{HEAD}\n[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"echo ${{undefined_var}}\"\n\n[[phase.step]]\nid = \"b\"\ndo = \"teleport\"\nneeds = [\"a\", \"ghost\"]\n"
    ));
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runbook.toml:20:7: error: undefined variable `${undefined_var}`"),
        "{err}"
    );
    assert!(
        err.contains("runbook.toml:24:6: error: unknown action kind `teleport`"),
        "{err}"
    );
    assert!(
        err.contains("runbook.toml:25:15: error: step `b` needs unknown step `ghost`"),
        "{err}"
    );
    assert!(err.contains("25 | needs = [\"a\", \"ghost\"]"), "{err}");
    assert!(err.contains("3 errors"), "{err}");

    let bad = Project::new("[runbook\nname = 1\n");
    let out = bad.run(&["validate"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("runbook.toml:1:"),
        "{}",
        text(&out)
    );

    let ok = Project::new(&format!(
        "{HEAD}\n[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"true\"\n"
    ));
    let out = ok.run(&["validate"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid — 1 phases, 1 steps"));
}

#[test]
fn bundled_runbook_validates_plans_and_shows_status() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("runbook.toml"), dir.path().join("runbook.toml")).unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    assert_eq!(code(&run(&["validate"])), 0);
    let out = run(&["plan"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("DESTRUCTIVE — runs only with --confirm \"freeze gengar-api\""),
        "{plan}"
    );
    assert!(
        plan.contains(
            "db.copy: parallel COPY on one snapshot, each table read back and compared: *** → ***"
        ),
        "secrets must be masked in plans: {plan}"
    );
    let out = run(&[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("gengar: Heroku → AWS ECS Fargate")
            && String::from_utf8_lossy(&out.stdout).contains(" steps done"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_shell_step_streams_its_output_records_outputs_and_feeds_later_steps() {
    let p = project(
        r#"
[[phase.step]]
id = "make"
do = "shell"
run = "echo building; echo warn >&2; echo snapshot=snap-123 >> $CUTOVER_OUTPUT"
outputs = ["snapshot"]

[[phase.step]]
id = "use"
do = "shell"
run = "echo restoring ${steps.make.outputs.snapshot}"
needs = ["make"]
"#,
    );
    let out = p.run(&["run", "use"]);
    assert_eq!(code(&out), 5, "needs are enforced: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("waiting for: make"),
        "{}",
        text(&out)
    );

    let out = p.run(&["run", "--next"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("building"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warn"));
    let out = p.run(&["run", "--next"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("restoring snap-123"),
        "{}",
        text(&out)
    );
    let out = p.run(&["run", "--next"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("every step is done"));

    let status = p.status();
    assert_eq!(status["progress"]["done"], 2);
    let make = &status["phases"][0]["steps"][0];
    assert_eq!(make["state"], "done");
    assert_eq!(make["actor"], "ana@laptop");
    assert_eq!(make["outputs"]["snapshot"], "snap-123");

    let log = p.run(&["log", "make"]);
    assert_eq!(code(&log), 0);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.contains("building")
            && log.contains("warn")
            && log.contains("output snapshot = snap-123"),
        "{log}"
    );
    assert_eq!(code(&p.run(&["log", "make", "--attempt", "7"])), 5);
    let mode = std::fs::metadata(p.path().join(".cutover")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o700);
}

#[test]
fn a_failing_step_is_retried_then_recorded_failed_with_its_exit_code() {
    let p = project(
        r#"
[[phase.step]]
id = "flaky"
do = "shell"
run = "echo try >> tries.txt; exit 3"
retries = 2
retry_delay = "10ms"

[[phase.step]]
id = "missing"
do = "shell"
run = "definitely-not-a-command-xyz --version"
"#,
    );
    let out = p.run(&["run", "flaky"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(p.path().join("tries.txt"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    let status = p.status();
    let flaky = &status["phases"][0]["steps"][0];
    assert_eq!(flaky["state"], "failed");
    assert_eq!(flaky["attempts"], 3);
    assert_eq!(flaky["note"], "exit code 3");

    let out = p.run(&["run", "missing"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("command not found"),
        "{}",
        text(&out)
    );
}

#[test]
fn killing_cutover_mid_step_leaves_the_step_interrupted_and_the_journal_intact() {
    let p = project(
        r#"
[[phase.step]]
id = "slow"
do = "shell"
run = "echo $$ > child.pid; echo started; sleep 30; echo finished"
"#,
    );
    let mut child = p
        .command(&["run", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    p.wait_for_file_containing(".cutover/logs/slow/1.log", "started");
    child.kill().unwrap(); // SIGKILL: no cleanup at all
    child.wait().unwrap();
    let shell_pid: i32 = std::fs::read_to_string(p.path().join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    assert_eq!(p.state_of("slow"), "interrupted");
    let status = p.status();
    assert_eq!(
        status["driver"]["driver_gone"], true,
        "the killed driver's command still holds the lock: {status}"
    );
    let out = p.run(&["audit", "verify"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verified — 1 lines"),
        "{}",
        text(&out)
    );

    // The killed driver's shell (still sleeping) inherited the kernel lock: nobody drives
    // while it runs, and no `unlock` can take the lock from it.
    let out = p.run(&["run", "slow"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("driver started and that still runs"),
        "{}",
        text(&out)
    );
    let lock_id = status["driver"]["lock_id"].as_str().unwrap().to_string();
    assert_eq!(code(&p.run(&["unlock", &lock_id])), 3);
    // Once it ends, the next driver starts at once: no unlock.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(shell_pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_for_no_driver(&p);

    // The operator can mark it done with a note instead of re-running it.
    let out = p.run(&[
        "mark",
        "slow",
        "done",
        "--note",
        "checked by hand: it had finished",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.state_of("slow"), "done");
    assert_eq!(code(&p.run(&["audit", "verify"])), 0);
}

#[test]
fn a_second_driver_is_refused_with_the_holder_named() {
    let p = project(
        r#"
[[phase.step]]
id = "hold"
do = "shell"
run = "echo holding; sleep 20"

[[phase.step]]
id = "other"
do = "shell"
run = "echo other"
"#,
    );
    let mut first = p
        .command(&["run", "hold"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    p.wait_for_file_containing(".cutover/logs/hold/1.log", "holding");
    let out = p
        .command(&["run", "other"])
        .env("CUTOVER_ACTOR", "bo@desk")
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another driver holds the lock: ana@laptop"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("cutover run hold"), "{err}");
    // Read-only commands still work and show who drives.
    assert_eq!(p.state_of("hold"), "running");
    assert_eq!(p.status()["driver"]["holder"], "ana@laptop");

    // Ctrl-C cancels the running step, kills its process group and records it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(p.state_of("hold"), "failed");
    assert!(p.journal().contains("\"reason\":\"cancelled\""));
    assert!(
        p.status()["driver"].is_null(),
        "the lock is released on exit"
    );
    assert_eq!(code(&p.run(&["run", "other"])), 0);
}

/// Waits until nobody holds the lock (a killed driver's shell, once killed, lets go of it).
fn wait_for_no_driver(p: &Project) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.status()["driver"].is_null() {
        assert!(Instant::now() < deadline, "the lock outlived the shell");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two drivers started at once, a hundred times: the kernel lock lets exactly one drive each
/// time, and the journal never gets two lines with one sequence number.
#[test]
fn two_drivers_started_together_exactly_one_drives_every_time() {
    let p = project(
        r#"
[[phase.step]]
id = "gate"
do = "shell"
run = "while [ ! -f release ]; do sleep 0.01; done; rm -f release"
"#,
    );
    for round in 0..100 {
        let mut a = p
            .command(&["run", "gate"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut b = p
            .command(&["run", "gate"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The loser is refused at once; the winner waits for the release.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (loser, mut winner) = loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: neither driver was refused"
            );
            if let Some(status) = a.try_wait().unwrap() {
                break (status, b);
            }
            if let Some(status) = b.try_wait().unwrap() {
                break (status, a);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            loser.code(),
            Some(3),
            "round {round}: the second driver was not refused"
        );
        std::fs::write(p.path().join("release"), "").unwrap();
        assert_eq!(winner.wait().unwrap().code(), Some(0), "round {round}");
    }
    let out = p.run(&["audit", "verify"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let journal = p.journal();
    let mut seqs: Vec<u64> = journal
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let count = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), count, "no sequence number twice");
    assert_eq!(p.status()["phases"][0]["steps"][0]["attempts"], 100);
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let p = project(
        r#"
[[phase.step]]
id = "hang"
do = "shell"
run = "sleep 60 & echo $! > bg.pid; echo waiting; wait"
timeout = "1s"
"#,
    );
    let out = p.run(&["run", "hang"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out after 1s"),
        "{}",
        text(&out)
    );
    let bg: i32 = std::fs::read_to_string(p.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let start = Instant::now();
    while pid_alive(bg) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pid_alive(bg),
        "the background child of the step must be killed"
    );
}

/// A command that ignores SIGTERM gets SIGKILL: the step ends within 2 s of its timeout
/// (plus this shared machine's slack), its process group gone.
#[test]
fn a_command_ignoring_sigterm_is_killed_within_the_grace() {
    let p = project(
        r#"
[[phase.step]]
id = "stubborn"
do = "shell"
run = "trap '' TERM; sleep 60 & echo $! > bg.pid; echo waiting; wait"
timeout = "1s"
"#,
    );
    let start = Instant::now();
    let out = p.run(&["run", "stubborn"]);
    let took = start.elapsed();
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out after 1s"),
        "{}",
        text(&out)
    );
    assert!(
        took < Duration::from_secs(5),
        "1 s timeout + 2 s to stop, took {took:?}"
    );
    let bg: i32 = std::fs::read_to_string(p.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!pid_alive(bg), "the TERM-ignoring child must be killed");
}

#[test]
fn secrets_and_url_passwords_are_redacted_everywhere() {
    let p = project(
        r#"
[[phase.step]]
id = "leaky"
do = "shell"
run = "echo token=${secret.TOKEN}; echo 'url postgres://admin:inline-pa55@host/db'; echo ${secret.DB}; echo out=${secret.TOKEN} >> $CUTOVER_OUTPUT; exit 4"
outputs = ["out"]
"#,
    );
    let out = p
        .command(&["run", "leaky"])
        .env("TEST_TOKEN", "tok-XYZZY-987")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    let all = format!(
        "{}{}{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        p.journal(),
        std::fs::read_to_string(p.path().join(".cutover/logs/leaky/1.log")).unwrap(),
        String::from_utf8_lossy(&p.run(&["plan"]).stdout),
    );
    for secret in ["tok-XYZZY-987", "inline-pa55", "cmd-pa55"] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
    assert!(all.contains("postgres://admin:***@host/db"), "{all}");
    assert!(all.contains("token=***"), "{all}");

    let out = p.run(&["run", "leaky"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("environment variable TEST_TOKEN is not set"),
        "{}",
        text(&out)
    );
}

#[test]
fn destructive_steps_need_the_exact_phrase() {
    let p = project(
        r#"
[[phase.step]]
id = "drop"
do = "shell"
run = "echo dropped > dropped.txt"
destructive = true
confirm = "drop ${soak} database"
rollback = "restore the snapshot"
"#,
    );
    let out = p.run(&["run", "drop"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--confirm \"drop 1h database\"")
            && err.contains("Rollback: restore the snapshot"),
        "{err}"
    );
    let out = p.run(&["run", "drop", "--confirm", "yes"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Only 'drop 1h database' will be accepted.")
    );
    assert!(!p.path().join("dropped.txt").exists(), "nothing ran");
    assert!(!p.journal().contains("confirmed"));
    let out = p.run(&["run", "--next", "--confirm", "drop 1h database"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(p.path().join("dropped.txt").exists());
    let journal = p.journal();
    let confirmed = journal
        .find("\"confirmed\"")
        .expect("confirmation journaled");
    assert!(
        confirmed < journal.find("\"started\"").unwrap(),
        "confirmed before started"
    );
    assert!(journal.contains("\"actor\":\"ana@laptop\""));
}

#[test]
fn manual_steps_gates_and_changed_definitions() {
    let steps = r#"
[[phase.step]]
id = "by-hand"
do = "manual"
notes = "Update the Stripe webhook"
checklist = ["Stripe", "OAuth"]

[[phase.step]]
id = "later"
do = "shell"
run = "echo decommissioned"
needs = ["by-hand"]
after = { step = "by-hand", at_least = "${soak}" }
"#;
    let p = project(steps);
    let out = p.run(&["run", "by-hand"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Update the Stripe webhook") && err.contains("[ ] OAuth"),
        "{err}"
    );
    assert_eq!(
        code(&p.run(&["run", "by-hand", "--note", "done in the dashboard"])),
        0
    );
    assert_eq!(p.state_of("later"), "gated");
    let out = p.run(&["run", "later"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("left of the wait after `by-hand`"),
        "{}",
        text(&out)
    );
    let out = p.run(&["run", "later", "--var", "soak=0s"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // Editing what a done step does makes it `changed`; --next will not pass over it silently.
    let edited = std::fs::read_to_string(p.path().join("runbook.toml"))
        .unwrap()
        .replace("echo decommissioned", "echo other");
    std::fs::write(p.path().join("runbook.toml"), edited).unwrap();
    assert_eq!(p.state_of("later"), "changed");
    assert_eq!(p.state_of("by-hand"), "done");
    assert_eq!(
        code(&p.run(&[
            "mark",
            "later",
            "pending",
            "--note",
            "redo with the new command"
        ])),
        0
    );
    assert_eq!(p.state_of("later"), "gated");
    assert_eq!(code(&p.run(&["mark", "later", "skipped", "--note", ""])), 5);
}

#[test]
fn http_steps_poll_until_the_expected_answer() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for (n, stream) in listener.incoming().take(3).enumerate() {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let reply = if n < 2 {
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nwait"
            } else {
                "HTTP/1.1 200 OK\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"status\":\"ok\"}"
            };
            stream.write_all(reply.as_bytes()).unwrap();
        }
    });
    let p = project(&format!(
        r#"
[[phase.step]]
id = "health"
do = "http"
url = "http://127.0.0.1:{port}/health"
expect_body = "ok"
deadline = "20s"
interval = "50ms"

[[phase.step]]
id = "down"
do = "http"
url = "http://127.0.0.1:1/health"
deadline = "200ms"
interval = "50ms"
"#
    ));
    let out = p.run(&["run", "health"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("attempt 1: got 503, expected 200") && err.contains("attempt 3: 200"),
        "{err}"
    );
    server.join().unwrap();
    let out = p.run(&["run", "down"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("request failed"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_cut_last_line_is_ignored_and_a_broken_chain_refuses_to_drive() {
    let p = project(
        r#"
[[phase.step]]
id = "a"
do = "shell"
run = "true"

[[phase.step]]
id = "b"
do = "shell"
run = "true"
"#,
    );
    assert_eq!(code(&p.run(&["run", "a"])), 0);
    let journal_path = p.path().join(".cutover/journal.jsonl");
    let good = p.journal();
    std::fs::write(&journal_path, format!("{good}{{\"seq\":3,\"time\":\"2026")).unwrap();
    let out = p.run(&["status"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cut short by a crash"),
        "{}",
        text(&out)
    );
    let out = p.run(&["run", "b"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cut short"),
        "{}",
        text(&out)
    );
    assert_eq!(code(&p.run(&["audit", "verify"])), 0);
    assert!(p.journal().starts_with(&good), "earlier lines are kept");

    // Edit line 2: verification names line 3, and nothing is driven.
    let tampered = p.journal().replacen("\"attempt\":1", "\"attempt\":5", 1);
    std::fs::write(&journal_path, tampered).unwrap();
    let out = p.run(&["audit", "verify"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2 is bad"),
        "{}",
        text(&out)
    );
    let out = p.run(&["run", "b"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert_eq!(code(&p.run(&["status"])), 4);
}

#[test]
fn an_unusable_state_directory_is_a_clear_error() {
    let p = project("[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"true\"\n");
    std::fs::write(p.path().join(".cutover"), "not a directory").unwrap();
    let out = p.run(&["run", "a"]);
    assert_eq!(code(&out), 6, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(".cutover"),
        "{}",
        text(&out)
    );
    let missing = PathBuf::from("/nonexistent/runbook.toml");
    let out = p.run(&["--runbook", missing.to_str().unwrap(), "status"]);
    assert_eq!(code(&out), 6, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read runbook"),
        "{}",
        text(&out)
    );
}

/// A stand-in for the AWS Price List API on loopback: it answers GetProducts with a recorded
/// response for one product (Fargate ARM vCPU at $0.04) and an empty list otherwise, or with
/// HTTP 500 to everything. Moto has no Price List API, so this is the real part we can have.
struct PricingStandIn {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl PricingStandIn {
    fn start(fail: bool) -> PricingStandIn {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut length = 0usize;
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                                return;
                            }
                            if header == "\r\n" {
                                break;
                            }
                            if let Some(v) =
                                header.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0u8; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let body = String::from_utf8_lossy(&body);
                        let (status, reply) = if fail {
                            ("500 Internal Server Error", r#"{"__type":"InternalErrorException","message":"stand-in failure"}"#.to_string())
                        } else if body.contains("USE1-Fargate-ARM-vCPU-Hours:perCPU") {
                            let product = r#"{"product":{"productFamily":"Compute","attributes":{"usagetype":"USE1-Fargate-ARM-vCPU-Hours:perCPU","regionCode":"us-east-1"},"sku":"SKU1"},"serviceCode":"AmazonECS","terms":{"OnDemand":{"SKU1.JRTCKXETXF":{"priceDimensions":{"SKU1.JRTCKXETXF.6YS6EN2CT7":{"unit":"hours","pricePerUnit":{"USD":"0.0400000000"},"description":"AWS Fargate ARM vCPU-hour"}},"sku":"SKU1","effectiveDate":"2026-11-01T00:00:00Z"}}},"version":"20261101","publicationDate":"2026-11-01T00:00:00Z"}"#;
                            ("200 OK", serde_json::json!({"FormatVersion": "aws_v1", "PriceList": [product]}).to_string())
                        } else {
                            (
                                "200 OK",
                                r#"{"FormatVersion":"aws_v1","PriceList":[]}"#.to_string(),
                            )
                        };
                        let response = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{reply}",
                            reply.len()
                        );
                        if writer.write_all(response.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        PricingStandIn { port, requests }
    }

    fn env(&self, command: &mut Command) {
        command
            .env(
                "AWS_ENDPOINT_URL_PRICING",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL");
    }
}

const COST_RUNBOOK: &str = r#"
[runbook]
name = "cost"
app = "gengar"

[cost]
region = "us-east-1"
expected_monthly = 45

[cost.aws]
ecr_gb = 1
log_gb = 5

[cost.heroku]
dynos = { "standard-1x" = 1 }
postgres = "standard-0"

[[phase]]
id = "one"

[[phase.step]]
id = "rds"
do = "shell"
run = "true"
starts_billing = ["rds_instance", "rds_storage"]
"#;

fn fargate_of(json: &serde_json::Value) -> f64 {
    json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "fargate")
        .unwrap()["monthly"]
        .as_f64()
        .unwrap()
}

#[test]
fn cost_prices_the_plan_and_says_what_a_step_starts_billing() {
    let p = Project::new(COST_RUNBOOK);
    let out = p.run(&["cost"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("AWS total                              $61.71"),
        "{report}"
    );
    assert!(report.contains("3 public IPv4 addresses"), "{report}");
    assert!(report.contains("bundled list prices"), "{report}");
    let plan = String::from_utf8_lossy(&p.run(&["plan"]).stdout).into_owned();
    assert!(
        plan.contains("starts billing about $13.98/month (rds_instance, rds_storage)"),
        "{plan}"
    );

    let bad =
        Project::new(&COST_RUNBOOK.replace("region = \"us-east-1\"", "region = \"eu-mars-1\""));
    let out = bad.run(&["cost"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no price table for region `eu-mars-1` (known: us-east-1)"));
    let bad = Project::new(
        &COST_RUNBOOK
            .replace("ecr_gb = 1", "ecr_gb = 1\nrds_clas = \"x\"")
            .replace("\"rds_storage\"]", "\"rds_storge\"]"),
    );
    let out = bad.run(&["validate"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown key `rds_clas` in [cost.aws]")
            && err.contains("did you mean `rds_class`?"),
        "{err}"
    );
    assert!(err.contains("unknown cost line item `rds_storge`"), "{err}");
}

#[test]
fn live_prices_come_from_the_price_list_api_are_cached_and_fall_back_to_bundled() {
    let stand_in = PricingStandIn::start(false);
    let p = Project::new(COST_RUNBOOK);
    let mut command = p.command(&["cost", "--json", "--live"]);
    stand_in.env(&mut command);
    let out = command.output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["source"]["kind"], "live", "{json}");
    assert_eq!(json["source"]["cached"], false);
    // 1 task × (0.5 vCPU × $0.04 (live) + 1 GB × $0.00356 (not listed live: bundled)) × 730 h
    assert!(
        (fargate_of(&json) - (0.5 * 0.04 + 0.00356) * 730.0).abs() < 1e-9,
        "{json}"
    );
    assert!(stand_in.requests.load(std::sync::atomic::Ordering::SeqCst) >= 10);
    assert!(p.path().join(".cutover/prices-live.json").exists());

    // Within a day the cache answers, with no call.
    let before = stand_in.requests.load(std::sync::atomic::Ordering::SeqCst);
    let mut command = p.command(&["cost", "--json", "--live"]);
    stand_in.env(&mut command);
    let json: serde_json::Value =
        serde_json::from_slice(&command.output().unwrap().stdout).unwrap();
    assert_eq!(json["source"]["cached"], true, "{json}");
    assert_eq!(
        stand_in.requests.load(std::sync::atomic::Ordering::SeqCst),
        before
    );

    // A failing API: the bundled table, and a warning that says why.
    let failing = PricingStandIn::start(true);
    let p = Project::new(COST_RUNBOOK);
    let mut command = p.command(&["cost", "--json", "--live"]);
    failing.env(&mut command);
    let out = command.output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["source"]["kind"], "bundled_after_live_failed",
        "{json}"
    );
    assert!((fargate_of(&json) - (0.5 * 0.03238 + 0.00356) * 730.0).abs() < 1e-9);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("live prices failed") && err.contains("GetProducts"),
        "{err}"
    );
}

#[test]
fn an_interrupted_step_can_be_settled_by_its_check() {
    let p = project(
        r#"
[[phase.step]]
id = "write"
do = "shell"
run = "echo $$ > child.pid; echo started; sleep 30"
check = { do = "shell", run = "test -f marker.txt" }
"#,
    );
    let mut child = p
        .command(&["run", "write"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    p.wait_for_file_containing(".cutover/logs/write/1.log", "started");
    child.kill().unwrap();
    child.wait().unwrap();
    // Its orphaned shell holds the lock until it ends; ended, nothing is left to unlock.
    let shell: i32 = std::fs::read_to_string(p.path().join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(shell),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_for_no_driver(&p);
    assert_eq!(p.state_of("write"), "interrupted");
    // The effect does not hold: the check says so and the step stays interrupted.
    let out = p.run(&["run", "write", "--check"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(p.state_of("write"), "interrupted");
    // It holds: the step is done, by its check, without running again.
    std::fs::write(p.path().join("marker.txt"), "").unwrap();
    let out = p.run(&["run", "write", "--check"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.state_of("write"), "done");
    assert_eq!(
        p.status()["phases"][0]["steps"][0]["attempts"],
        1,
        "the action did not run again"
    );
    assert!(
        p.journal().contains("\"checked\":{\"holds\":true"),
        "{}",
        p.journal()
    );
    assert_eq!(
        code(&p.run(&["note", "checked the marker by hand", "--step", "write"])),
        0
    );
    assert!(p.journal().contains("checked the marker by hand"));
    assert_eq!(code(&p.run(&["audit", "verify"])), 0);
}

#[test]
fn a_vars_file_and_a_state_dir_point_the_same_runbook_elsewhere() {
    let p = project(
        r#"
[[phase.step]]
id = "say"
do = "shell"
run = "echo soak is ${soak}"
"#,
    );
    std::fs::write(
        p.path().join("rehearsal.toml"),
        "# the rehearsal's\nsoak = \"3s\"\n",
    )
    .unwrap();
    let state = p.path().join("elsewhere");
    let state_arg = state.to_str().unwrap();
    let out = p.run(&[
        "--vars-file",
        "rehearsal.toml",
        "--state-dir",
        state_arg,
        "run",
        "say",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("soak is 3s"));
    assert!(state.join("journal.jsonl").is_file());
    assert!(
        !p.path().join(".cutover").exists(),
        "nothing beside the runbook"
    );

    // --var wins over the file.
    let out = p.run(&[
        "--vars-file",
        "rehearsal.toml",
        "--var",
        "soak=9s",
        "--state-dir",
        state_arg,
        "run",
        "say",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("soak is 9s"),
        "{}",
        text(&out)
    );

    // The environment does the same (what scripts/rehearse sets).
    let out = p
        .command(&["status", "--json"])
        .env("CUTOVER_VARS_FILE", p.path().join("rehearsal.toml"))
        .env("CUTOVER_STATE_DIR", &state)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["phases"][0]["steps"][0]["attempts"], 2, "{json}");

    // A variable the runbook does not have, or a value that is not a string, is refused.
    std::fs::write(p.path().join("bad.toml"), "sok = \"3s\"\n").unwrap();
    let out = p.run(&["--vars-file", "bad.toml", "status"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sok"),
        "{}",
        text(&out)
    );
    std::fs::write(p.path().join("bad.toml"), "soak = [3]\n").unwrap();
    let out = p.run(&["--vars-file", "bad.toml", "status"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`soak` must be a string, number or boolean"),
        "{}",
        text(&out)
    );
}

/// Values are data: a variable, a step output and a value with quotes and a newline reach the
/// command as the literal text they hold, wherever they stand (bare, in double quotes, in
/// single quotes); none of them is run.
#[test]
fn interpolated_values_reach_bash_as_data_never_as_code() {
    let head = HEAD.replace(
        "soak = \"1h\"",
        "soak = \"1h\"\nevil = \"$(touch PWNED-var)\"\nquoted = \"it's \\\"quoted\\\"\\nsecond line\"",
    );
    let p = Project::new(&format!(
        r#"{head}
[[phase.step]]
id = "produce"
do = "shell"
run = "printf 'value=x; touch PWNED-output\n' >> \"$CUTOVER_OUTPUT\""
outputs = ["value"]

[[phase.step]]
id = "use"
do = "shell"
run = "printf '%s|' ${{evil}} \"${{quoted}}\" '${{steps.produce.outputs.value}}' ${{steps.produce.outputs.value}} > got.txt"
needs = ["produce"]
"#
    ));
    assert_eq!(code(&p.run(&["run", "produce"])), 0);
    let plan = p.run(&["plan"]);
    let shown = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        shown.contains(r#"$ printf '%s|' "${CUTOVER_VAR_evil}" "${CUTOVER_VAR_quoted}" ''"${CUTOVER_OUT_produce_value}"'' "${CUTOVER_OUT_produce_value}" > got.txt"#),
        "the plan shows the command as it runs: {shown}"
    );
    let out = p.run(&["run", "use"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(p.path().join("got.txt")).unwrap(),
        "$(touch PWNED-var)|it's \"quoted\"\nsecond line|x; touch PWNED-output|x; touch PWNED-output|"
    );
    let pwned: Vec<_> = std::fs::read_dir(p.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("PWNED"))
        .collect();
    assert!(pwned.is_empty(), "{pwned:?}");
}

/// A secret reaches a shell step through its environment: no process's command line holds it.
#[test]
fn a_secret_is_never_on_a_command_line() {
    let p = project(
        r#"
[[phase.step]]
id = "uses"
do = "shell"
run = "echo started; sleep 2; test -n ${secret.TOKEN} && echo has-it"
"#,
    );
    let secret = "tok-on-no-argv-4471";
    let mut child = p
        .command(&["run", "uses"])
        .env("TEST_TOKEN", secret)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    p.wait_for_file_containing(".cutover/logs/uses/1.log", "started");
    let mut seen = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            seen += 1;
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(secret),
                "pid {:?} has the secret on its command line",
                entry.file_name()
            );
        }
    }
    assert!(seen > 3, "processes were read");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let log = p.run(&["log", "uses"]);
    assert!(
        String::from_utf8_lossy(&log.stdout).contains("has-it"),
        "{}",
        text(&log)
    );
}

/// Masks apply to values before they are encoded: a note ending in `token=…` is masked inside
/// its own string and cannot swallow the JSON after it; the journal stays valid.
#[test]
fn a_note_ending_in_a_token_pair_keeps_the_journal_valid() {
    let p = project(
        r#"
[[phase.step]]
id = "one"
do = "shell"
run = "echo ok"
"#,
    );
    let out = p.run(&["note", "rotated the key, old token=abc"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.run(&["note", "--step", "one", "password=hunter2&next=1 done"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(code(&p.run(&["run", "one"])), 0);
    let journal = p.journal();
    assert!(
        !journal.contains("abc\"") && !journal.contains("hunter2"),
        "{journal}"
    );
    assert!(journal.contains("token=***"), "{journal}");
    for line in journal.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let out = p.run(&["audit", "verify"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

/// Cancellation lands at once: `db.preflight` against a server that accepts and never answers
/// — Ctrl-C ends the step `cancelled` within 2 s, not at the connection's own 10 s timeout.
#[test]
fn ctrl_c_lands_even_on_an_action_stuck_on_a_stalled_server() {
    // A stand-in for a stalled server (a real PostgreSQL cannot be made to hang at startup on
    // demand): it accepts connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let url = format!("postgres://app:pw-stall@127.0.0.1:{port}/app?sslmode=disable");
    let p = project(&format!(
        "[[phase.step]]\nid = \"preflight\"\ndo = \"db.preflight\"\nsource = \"{url}\"\ntarget = \"{url}\"\n"
    ));
    let mut child = p
        .command(&["run", "preflight"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    p.wait_for_file_containing(".cutover/journal.jsonl", "\"started\"");
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    eprintln!("Ctrl-C to exit: {took:?}");
    assert_eq!(status.code(), Some(130));
    // Within 2 s says the issue; the bound here leaves room for a loaded machine and stays
    // well under the 10 s the connection attempt would otherwise take.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        p.journal().contains("\"reason\":\"cancelled\""),
        "{}",
        p.journal()
    );
}

/// A tunnel's Session Manager plugin runs under `cutover tunnel-guard`, which stops it when its
/// stdin (held by cutover) closes: a SIGKILLed cutover leaves no session running. Here the
/// parent is a small program killed the same way, and the plugin a `sleep`.
#[test]
fn a_tunnel_guard_stops_its_program_when_its_parent_dies() {
    let mut parent = Command::new("python3")
        .args([
            "-c",
            "import subprocess, sys, time\np = subprocess.Popen([sys.argv[1], 'tunnel-guard', '--', 'sleep', '300'], stdin=subprocess.PIPE)\nprint(p.pid, flush=True)\ntime.sleep(300)",
            BIN,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(parent.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let guard: i32 = line.trim().parse().unwrap();
    // The guard's child: the program it runs.
    let start = Instant::now();
    let program = loop {
        let children = std::fs::read_to_string(format!("/proc/{guard}/task/{guard}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            break pid.parse::<i32>().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the guard started nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(pid_alive(program));
    parent.kill().unwrap();
    let _ = parent.wait();
    let start = Instant::now();
    while (pid_alive(program) || pid_alive(guard)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pid_alive(program),
        "the program outlived its guard's parent"
    );
    assert!(!pid_alive(guard), "the guard outlived its parent");
}

/// A window (the write freeze) opens when its first step is done and stays open across a
/// killed driver, from the same moment; `plan --window` predicts it; `report` writes the
/// migration down with the journal's final hash.
#[test]
fn a_window_survives_a_killed_driver_and_the_report_records_it() {
    let p = Project::new(&format!(
        "{HEAD}\n[[window]]\nname = \"freeze\"\nfrom = \"freeze-on\"\nto = \"open-up\"\n\n{}",
        r#"
[[phase.step]]
id = "freeze-on"
do = "shell"
run = "true"

[[phase.step]]
id = "work"
do = "shell"
run = "test -f go || sleep 8"
needs = ["freeze-on"]

[[phase.step]]
id = "open-up"
do = "shell"
run = "true"
needs = ["work"]
"#
    ));
    let window = |p: &Project| p.status()["windows"][0].clone();
    assert_eq!(window(&p)["state"], "pending");
    assert_eq!(code(&p.run(&["run", "freeze-on"])), 0);
    let opened = window(&p)["opened"].as_str().unwrap().to_string();
    assert_eq!(window(&p)["state"], "open");
    // The prediction made as it opened is in the journal.
    assert!(p.journal().contains("window_prediction"), "{}", p.journal());

    let mut driver = p
        .command(&["run", "work"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while p.state_of("work") != "running" {
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    driver.kill().unwrap();
    let _ = driver.wait();
    // Resumed: still open, since the same moment.
    let w = window(&p);
    assert_eq!(w["state"], "open", "{w:#}");
    assert_eq!(w["opened"], opened.as_str());
    let plan = p.run(&["plan", "--window", "freeze"]);
    assert_eq!(code(&plan), 0, "{}", text(&plan));
    let said = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(
        said.contains("window `freeze`: from the end of `freeze-on` to the end of `open-up`"),
        "{said}"
    );
    assert!(said.contains("open for"), "{said}");
    assert!(
        said.contains("  work ") && said.contains("  open-up "),
        "{said}"
    );
    let unknown = p.run(&["plan", "--window", "nope"]);
    assert_eq!(code(&unknown), 2, "{}", text(&unknown));
    assert!(
        text(&unknown).contains("the runbook's: freeze"),
        "{}",
        text(&unknown)
    );

    std::fs::write(p.path().join("go"), "").unwrap();
    // Wait for the killed driver's `sleep` (it holds the lock until it ends).
    let start = Instant::now();
    loop {
        let out = p.run(&["run", "work"]);
        if code(&out) == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "{}", text(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(code(&p.run(&["run", "open-up"])), 0);
    let w = window(&p);
    assert_eq!(w["state"], "closed", "{w:#}");
    assert!(w["measured_secs"].as_f64().unwrap() > 0.0, "{w:#}");
    assert!(
        w["steps"]["work"]["actual_secs"].as_f64().is_some(),
        "{w:#}"
    );

    let report = p.run(&["report", "--format", "json"]);
    assert_eq!(code(&report), 0, "{}", text(&report));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for step in steps {
        assert_eq!(step["state"], "done", "{step:#}");
        assert_eq!(step["actor"], "ana@laptop", "{step:#}");
        assert!(step["took_secs"].as_f64().is_some(), "{step:#}");
    }
    let verified = p.run(&["audit", "verify"]);
    let hash = report["journal"]["final_hash"].as_str().unwrap();
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains(&format!("last hash {hash}")),
        "{}",
        text(&verified)
    );
    assert_eq!(report["windows"][0]["state"], "closed");
    let md = p.run(&["report"]);
    let md = String::from_utf8_lossy(&md.stdout).to_string();
    assert!(md.contains(&format!("final hash `{hash}`")), "{md}");
    assert!(
        md.contains("## Window: freeze") && md.contains("| work | done | ana@laptop |"),
        "{md}"
    );
}

#[test]
fn a_rollback_runs_its_action_confirmed_with_a_reason_and_its_dependants_first() {
    // `freeze` and `point` undo themselves into undone.txt (so the order shows); `smoke` has
    // nothing to undo; `by-hand` can only be undone by hand.
    let p = project(
        r#"
[[phase.step]]
id = "freeze"
do = "shell"
run = "echo on > freeze.txt"
destructive = true
confirm = "freeze it"
rollback = { do = "shell", run = "echo freeze >> undone.txt; rm freeze.txt", notes = "unfreeze" }

[[phase.step]]
id = "point"
do = "shell"
run = "echo aws > record.txt"
rollback = { do = "shell", run = "echo point >> undone.txt; echo heroku > record.txt" }
needs = ["freeze"]

[[phase.step]]
id = "smoke"
do = "shell"
run = "cat record.txt"
needs = ["point"]

[[phase.step]]
id = "by-hand"
do = "shell"
run = "true"
rollback = "call the vendor"
"#,
    );
    let out = p.run(&["run", "freeze", "--confirm", "freeze it"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for step in ["point", "smoke", "by-hand"] {
        let out = p.run(&["run", step]);
        assert_eq!(code(&out), 0, "{step}: {}", text(&out));
    }

    // Not without a reason, not while steps done after it rely on it.
    let out = p.run(&["rollback", "freeze", "--note", " "]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(text(&out).contains("a note is required"), "{}", text(&out));
    let out = p.run(&["rollback", "freeze", "--note", "the app fails on AWS"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("point → freeze") && text(&out).contains("--only"),
        "the chain, last done first (smoke has nothing to undo): {}",
        text(&out)
    );
    // A rollback by hand is said, not run.
    let out = p.run(&["rollback", "by-hand", "--note", "x"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("by hand: call the vendor"),
        "{}",
        text(&out)
    );

    // One step: its phrase missing (exit 5, what it will do), wrong (exit 5), then right.
    let out = p.run(&["rollback", "point", "--note", "back to heroku"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("--confirm \"roll back point\"")
            && text(&out).contains("The rollback will: $ echo point >> undone.txt"),
        "{}",
        text(&out)
    );
    let out = p.run(&[
        "rollback",
        "point",
        "--note",
        "back to heroku",
        "--confirm",
        "roll back freeze",
    ]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("Only 'roll back point' will be accepted"),
        "{}",
        text(&out)
    );
    assert!(!p.path().join("undone.txt").exists(), "nothing ran");
    assert!(!p.journal().contains("rollback"));

    // The chain: without every phrase nothing runs; with them, in order.
    let out = p.run(&[
        "rollback",
        "freeze",
        "--chain",
        "--note",
        "the app fails on AWS",
    ]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("1. point") && text(&out).contains("2. freeze"),
        "{}",
        text(&out)
    );
    assert!(!p.path().join("undone.txt").exists(), "nothing ran");
    let out = p.run(&[
        "rollback",
        "freeze",
        "--chain",
        "--note",
        "the app fails on AWS",
        "--confirm",
        "roll back point",
        "--confirm",
        "roll back freeze",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(p.path().join("undone.txt")).unwrap(),
        "point\nfreeze\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("record.txt")).unwrap(),
        "heroku\n"
    );
    assert!(!p.path().join("freeze.txt").exists());
    assert_eq!(p.state_of("freeze"), "rolled back");
    assert_eq!(p.state_of("point"), "rolled back");
    // Done before what it relied on was undone: never silently "done".
    assert_eq!(p.state_of("smoke"), "needs re-run");
    assert_eq!(p.state_of("by-hand"), "done");
    let journal = p.journal();
    let lines: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rolled: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|l| {
            let note = l["event"]["rolled_back"]["note"].as_str()?;
            Some((l["step"].as_str().unwrap(), note))
        })
        .collect();
    assert_eq!(
        rolled,
        [
            ("point", "the app fails on AWS"),
            ("freeze", "the app fails on AWS")
        ]
    );
    assert!(lines
        .iter()
        .filter(|l| l["event"].get("rollback_started").is_some())
        .all(|l| l["actor"] == "ana@laptop"));
    let out = p.run(&["audit", "verify"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // Again, as fresh attempts; the dependant runs again too.
    let out = p.run(&["run", "freeze", "--confirm", "freeze it"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.state_of("point"), "rolled back");
    assert_eq!(p.state_of("smoke"), "needs re-run");
    let out = p.run(&["run", "smoke"]);
    assert_eq!(code(&out), 5, "after what it needs: {}", text(&out));
    for step in ["point", "smoke"] {
        let out = p.run(&["run", step]);
        assert_eq!(code(&out), 0, "{step}: {}", text(&out));
    }
    assert_eq!(p.state_of("smoke"), "done");
    assert!(p
        .journal()
        .contains("\"attempt\":2,\"log\":\"logs/freeze/2.log\""));
    // Only this step, although a done step relies on it: said, and allowed with --only.
    let out = p.run(&[
        "rollback",
        "freeze",
        "--only",
        "--note",
        "insisting",
        "--confirm",
        "roll back freeze",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.state_of("point"), "needs re-run");
}
