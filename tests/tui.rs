//! The real binary in a real terminal: tmux drives it (send-keys) and reads it (capture-pane).

mod common;
use common::run::shell_line;
use common::Project;
#[path = "common/tmux.rs"]
mod tmux;
use tmux::TmuxServer;

use std::time::Duration;

const RUNBOOK: &str = r#"
[runbook]
name = "tmux rehearsal"
app = "gengar"

[[phase]]
id = "one"
title = "Phase one"

[[phase.step]]
id = "hello"
title = "Say hello"
do = "shell"
run = '''printf '\033[32mgreen hello\033[0m from the step\n' '''

[[phase.step]]
id = "danger"
title = "Destroy something"
do = "shell"
run = "echo destroyed > destroyed.txt; echo destroyed"
destructive = true
confirm = "destroy it"
needs = ["hello"]

[[phase.step]]
id = "slow"
title = "Take a while"
do = "shell"
run = "for i in $(seq 1 40); do echo tick $i; sleep 0.2; done"
"#;

/// A project with the runbook, and a tmux server to run `cutover` in.
struct Tmux {
    server: TmuxServer,
    project: Project,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        Tmux {
            server: TmuxServer::new(name),
            project: Project::with_text(RUNBOOK),
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        self.server.tmux(args)
    }

    /// Starts `cutover` in a new window named `name`.
    fn start(&self, name: &str, first: bool) {
        let command = format!("{}; echo CUTOVER-EXITED $?; sleep 600", shell_line(""));
        let dir = self.project.path().to_str().unwrap();
        let mut args = vec![];
        if first {
            args.extend(["new-session", "-d", "-s", "main", "-x", "120", "-y", "40"]);
        } else {
            args.extend(["new-window", "-t", "main"]);
        }
        args.extend([
            "-n",
            name,
            "-c",
            dir,
            "-e",
            "CUTOVER_ACTOR=ana@laptop",
            "-e",
            "TERM=xterm-256color",
            &command,
        ]);
        self.tmux(&args);
    }

    fn keys(&self, window: &str, keys: &[&str]) {
        self.server.keys(&format!("main:{window}"), keys);
    }

    fn text(&self, window: &str, text: &str) {
        self.server.text(&format!("main:{window}"), text);
    }

    fn wait_for(&self, window: &str, needle: &str) -> String {
        self.server
            .wait_for(&format!("main:{window}"), needle, Duration::from_secs(20))
    }
}

#[test]
fn operator_walks_steps_confirms_resumes_and_a_second_instance_watches() {
    let t = Tmux::new("walk");
    t.start("drive", true);
    let screen = t.wait_for("drive", "Steps 0/3");
    assert!(screen.contains("driving: ana@laptop"), "{screen}");

    // Run a shell step and see its log, colours drawn rather than printed as escapes.
    t.keys("drive", &["Enter"]);
    let screen = t.wait_for("drive", "green hello from the step");
    assert!(
        screen.contains("││green hello from the step"),
        "the log shows text, not escapes:\n{screen}"
    );
    let styled = t.tmux(&["capture-pane", "-p", "-e", "-t", "main:drive"]);
    let line = styled
        .lines()
        .find(|l| l.contains("green hello") && !l.contains("printf"))
        .unwrap_or_default();
    let before = &line[..line.find("green hello").unwrap_or(0)];
    assert!(
        before.ends_with('m') && before.contains("\u{1b}["),
        "the log line is coloured: {line:?}"
    );
    t.wait_for("drive", "✓ hello done");

    // A destructive step: the wrong phrase is refused, the right one runs it.
    t.keys("drive", &["j", "Enter"]);
    t.wait_for("drive", "Type destroy it to run it");
    // Keys that arrive in the first moments of a modal are taken as held down and ignored.
    std::thread::sleep(Duration::from_millis(300));
    t.text("drive", "destroy everything");
    t.keys("drive", &["Enter"]);
    t.wait_for("drive", "Only 'destroy it' will be accepted.");
    assert!(!t.project.file("destroyed.txt").exists());
    t.keys("drive", &["Escape", "Enter"]);
    t.wait_for("drive", "Type destroy it to run it");
    std::thread::sleep(Duration::from_millis(300));
    t.text("drive", "destroy it");
    t.keys("drive", &["Enter"]);
    t.wait_for("drive", "danger ⚠ done");
    assert!(t.project.file("destroyed.txt").exists());

    // Quit, start again: the resume summary.
    t.keys("drive", &["q"]);
    t.wait_for("drive", "CUTOVER-EXITED 0");
    t.start("again", false);
    let screen = t.wait_for("again", "Resuming");
    assert!(
        screen.contains("2/3 steps done") && screen.contains("next: slow"),
        "{screen}"
    );

    // Drive a slow step there, and follow it from a second instance in watch mode.
    t.keys("again", &["Escape"]);
    t.keys("again", &["Enter"]);
    t.wait_for("again", "tick 1");
    t.start("watch", false);
    let screen = t.wait_for("watch", "WATCHING (read-only)");
    assert!(screen.contains("ana@laptop drives"), "{screen}");
    // The watcher opens on the running step.
    t.wait_for("watch", "log: slow");
    t.wait_for("watch", "tick 1");
    // It follows live: a later line shows up while the step still runs.
    let screen = t.wait_for("watch", "tick 12");
    // The header says "(read-only)"; the refusal says "read-only: " — not on screen yet.
    assert!(!screen.contains("read-only: "), "{screen}");
    // And it cannot run anything: `r` on a done step and Enter are refused, and nothing starts.
    t.keys("watch", &["g", "r"]);
    t.wait_for("watch", "read-only: ");
    t.keys("watch", &["Enter"]);
    t.wait_for("again", "slow done");
    let journal = t.project.journal();
    let starts = |step: &str| journal.events(step, "started").len();
    assert_eq!(
        starts("hello"),
        1,
        "the watcher ran hello again:\n{journal}"
    );
    assert_eq!(starts("slow"), 1, "the watcher started slow:\n{journal}");
    t.keys("again", &["q"]);
    t.wait_for("again", "CUTOVER-EXITED 0");
    t.keys("watch", &["q"]);
    t.wait_for("watch", "CUTOVER-EXITED 0");
    let journal = t.project.journal();
    assert!(journal.contains("\"confirmed\""), "{journal}");
    t.project.ok(&["audit", "verify"]);
}

#[test]
fn a_runbook_with_errors_shows_an_error_screen_and_exits_non_zero() {
    let t = Tmux::new("invalid");
    t.project.write("runbook.toml", "[runbook]\nname = \"x\"\napp = \"y\"\n[[phase]]\nid = \"p\"\n[[phase.step]]\nid = \"a\"\ndo = \"teleport\"\n");
    t.start("bad", true);
    let screen = t.wait_for("bad", "invalid runbook");
    assert!(
        screen.contains("unknown action kind `teleport`") && screen.contains("runbook.toml:8:"),
        "{screen}"
    );
    t.keys("bad", &["q"]);
    t.wait_for("bad", "CUTOVER-EXITED 2");
}
