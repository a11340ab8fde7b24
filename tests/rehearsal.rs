//! The whole migration rehearsed end to end with `scripts/rehearse`: the first phase driven
//! through the terminal UI in tmux (the README's first command), quitting it (which stops every
//! stand-in), then the rest resumed and driven headless with `cutover run`, typing each confirm
//! phrase, through the soak gate (shortened by CUTOVER_REHEARSAL_SOAK) to the decommission;
//! then resumed once more to see the emulated account replayed. Real parts throughout: moto,
//! two PostgreSQL 16 + pgvector clusters, HTTP, the journal.

mod common;
use common::{code, text};
#[path = "common/tmux.rs"]
mod tmux;
use tmux::TmuxServer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cutover");
const ACTOR: &str = "ana@laptop";

/// The phrase each destructive step of the bundled runbook asks for, as an operator types it.
const PHRASES: &[(&str, &str)] = &[
    ("terraform-apply", "apply infrastructure for gengar"),
    ("maintenance-on", "freeze gengar-api"),
    ("db-copy", "copy into gengar"),
    ("dns-cutover", "point api.example.com at aws"),
    (
        "remove-heroku-postgres",
        "delete the heroku database of gengar-api",
    ),
    ("destroy-heroku-app", "destroy gengar-api"),
    ("delete-heroku-secrets", "delete heroku secrets"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rehearse(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(repo().join("scripts/rehearse"));
    command
        .args(args)
        .env("CUTOVER_BIN", BIN)
        .env("CUTOVER_REHEARSAL_DIR", dir)
        .env("CUTOVER_REHEARSAL_SOAK", "3s")
        .env("CUTOVER_ACTOR", ACTOR);
    command
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid.trim()).exists()
}

/// `scripts/rehearse --serve` in the background; stopped (SIGTERM, as Ctrl-C would) on drop.
struct Served {
    child: Child,
}

impl Served {
    fn stop(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The environment scripts/rehearse gives cutover (env.list: NAME=value lines).
fn environment(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("env.list"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn cutover(env: &BTreeMap<String, String>, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env)
        .envs(
            ["HOME", "PYENV_ROOT", "LANG"]
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
        )
        .env("CUTOVER_ACTOR", ACTOR)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn status(env: &BTreeMap<String, String>) -> Vec<serde_json::Value> {
    let out = cutover(env, &["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["steps"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn the_whole_migration_rehearses_from_the_tui_to_the_decommission() {
    let temp = tempfile::tempdir().unwrap();
    // The clusters run as an unprivileged user when the tests run as root: it must get in.
    std::fs::set_permissions(
        temp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = temp.path().join("rehearsal");

    // --- phase 1 in the terminal UI, started the way the README says ---------------------------
    let tmux = TmuxServer::new("rehearsal");
    let pane = "main";
    let command = format!(
        "{} --fresh; echo REHEARSE-EXITED $?; sleep 600",
        repo().join("scripts/rehearse").display()
    );
    let dir_text = dir.to_str().unwrap();
    tmux.tmux(&[
        "new-session",
        "-d",
        "-s",
        "main",
        "-x",
        "200",
        "-y",
        "50",
        "-e",
        &format!("CUTOVER_BIN={BIN}"),
        "-e",
        &format!("CUTOVER_REHEARSAL_DIR={dir_text}"),
        "-e",
        "CUTOVER_REHEARSAL_SOAK=3s",
        "-e",
        &format!("CUTOVER_ACTOR={ACTOR}"),
        "-e",
        "TERM=xterm-256color",
        &command,
    ]);
    let screen = tmux.wait_for(pane, "Steps 0/43", Duration::from_secs(600));
    assert!(
        screen.contains("REHEARSAL") && screen.contains("endpoint http://127.0.0.1:"),
        "the banner and the emulated account are on screen:\n{screen}"
    );
    let moto_pid = std::fs::read_to_string(dir.join("pids/moto")).unwrap();
    let app_pid = std::fs::read_to_string(dir.join("pids/app")).unwrap();
    for (i, step) in [
        "scaffold",
        "docker-build",
        "docker-run",
        "local-health",
        "docker-stop",
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            tmux.keys(pane, &["j"]);
        }
        tmux.keys(pane, &["Enter"]);
        tmux.wait_for(pane, &format!("✓ {step} done"), Duration::from_secs(60));
    }
    let screen = tmux.screen(pane);
    assert!(screen.contains("Steps 5/43"), "{screen}");
    assert!(
        dir.join("gengar-repo/gengar/Dockerfile").is_file()
            && dir.join("gengar-repo/infra/ecs.tf").is_file(),
        "the scaffold wrote into the rehearsal's app repository"
    );
    // Quitting the UI stops every stand-in.
    tmux.keys(pane, &["q"]);
    tmux.wait_for(pane, "REHEARSE-EXITED 0", Duration::from_secs(60));
    wait_until("the stand-ins to stop", Duration::from_secs(30), || {
        !alive(&moto_pid) && !alive(&app_pid)
    });
    assert!(!dir.join("env.list").exists());

    // --- the rest, resumed headless ------------------------------------------------------------
    let log = std::fs::File::create(temp.path().join("serve.log")).unwrap();
    let mut served = Served {
        child: rehearse(&dir, &["--serve"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    };
    wait_until(
        "the rehearsal to be ready",
        Duration::from_secs(600),
        || {
            if let Ok(Some(status)) = served.child.try_wait() {
                panic!(
                    "scripts/rehearse --serve exited ({status}):\n{}",
                    std::fs::read_to_string(temp.path().join("serve.log")).unwrap_or_default()
                );
            }
            dir.join("ready").exists()
        },
    );
    let env = environment(&dir);
    let steps = status(&env);
    assert_eq!(steps.len(), 43);
    assert!(
        steps[..5].iter().all(|s| s["state"] == "done"),
        "phase 1 resumed as done: {steps:#?}"
    );

    let phrases: BTreeMap<&str, &str> = PHRASES.iter().copied().collect();
    let mut ran = Vec::new();
    let started = Instant::now();
    loop {
        let steps = status(&env);
        if steps.iter().all(|s| s["state"] == "done") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the rehearsal did not finish; ran {ran:?}"
        );
        let Some(next) = steps.iter().find(|s| s["state"] == "ready") else {
            // Only the soak gate holds the decommission back: wait it out.
            let waiting: Vec<_> = steps.iter().filter(|s| s["state"] != "done").collect();
            assert!(
                waiting.iter().any(|s| s["state"] == "gated"),
                "nothing is ready and nothing is gated: {waiting:#?}"
            );
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let id = next["id"].as_str().unwrap().to_string();
        let mut args = vec!["run", id.as_str()];
        if let Some(phrase) = phrases.get(id.as_str()) {
            // Without the phrase, a destructive step refuses and says which phrase it wants.
            let refused = cutover(&env, &args);
            assert_eq!(code(&refused), 5, "{id}: {}", text(&refused));
            assert!(
                String::from_utf8_lossy(&refused.stderr).contains(&format!("\"{phrase}\"")),
                "{id}: {}",
                text(&refused)
            );
            args.extend(["--confirm", phrase]);
        }
        // The manual steps: done when the operator says so, with a note.
        if ["deploy-workflow", "callback-urls", "smoke-flows"].contains(&id.as_str()) {
            args.extend(["--note", "rehearsal: checked by hand"]);
        }
        let out = cutover(&env, &args);
        assert_eq!(code(&out), 0, "{id}: {}", text(&out));
        ran.push(id);
    }
    assert_eq!(ran.len(), 38, "{ran:?}");
    let steps = status(&env);
    let step = |id: &str| steps.iter().find(|s| s["id"] == id).unwrap().clone();
    // The database verified: every row of the app-like dataset, checksums equal.
    assert_eq!(step("db-verify")["outputs"]["rows"], "323119");
    assert_eq!(step("db-verify")["outputs"]["tables"], "4");
    assert!(step("dns-cutover")["outputs"]["previous"]
        .as_str()
        .is_some_and(|p| p.contains("gengar-api.herokuapp.com")));
    for (id, _) in PHRASES {
        assert_eq!(step(id)["actor"], ACTOR, "{id}");
    }
    let out = cutover(&env, &["audit", "verify"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let journal = std::fs::read_to_string(dir.join("state/journal.jsonl")).unwrap();
    assert_eq!(
        journal.matches("\"confirmed\"").count(),
        PHRASES.len(),
        "each destructive step was confirmed once"
    );

    // What the stand-ins were asked to do, they did.
    let github = std::fs::read_to_string(dir.join("standins/github.json")).unwrap();
    assert!(
        !github.contains("HEROKU_")
            && github.contains("ROLLBAR_TOKEN")
            && github.contains("AWS_ROLE_ARN"),
        "{github}"
    );
    let package = std::fs::read_to_string(dir.join("gengar-repo/gengar/package.json")).unwrap();
    assert!(!package.contains("heroku-postbuild") && package.contains("\"build\""));
    assert!(!dir.join("gengar-repo/gengar/Procfile").exists());

    // The databases' password never reached the journal or a log.
    let secrets = std::fs::read_to_string(dir.join("secrets.env")).unwrap();
    let password = secrets.trim().trim_start_matches("PG_PASSWORD=");
    assert!(password.len() > 10);
    let mut files = vec![dir.join("state/journal.jsonl")];
    let mut stack = vec![dir.join("state/logs")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    for file in &files {
        let content = std::fs::read_to_string(file).unwrap_or_default();
        assert!(
            !content.contains(password),
            "{} holds the password",
            file.display()
        );
    }

    // Ctrl-C on --serve stops everything it started.
    let moto_pid = std::fs::read_to_string(dir.join("pids/moto")).unwrap();
    assert_eq!(served.stop(), Some(143));
    wait_until("moto to stop", Duration::from_secs(30), || {
        !alive(&moto_pid)
    });
    assert!(!dir.join("pg/source/data/postmaster.pid").exists());

    // Resumed once more, the emulated account is as the rehearsal left it (its recorded
    // requests replayed into a new moto): what Terraform built, the SSM keys, the image.
    let log = std::fs::File::create(temp.path().join("serve-again.log")).unwrap();
    let mut served = Served {
        child: rehearse(&dir, &["--serve"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    };
    wait_until("the resumed rehearsal", Duration::from_secs(300), || {
        dir.join("ready").exists()
    });
    let env = environment(&dir);
    for id in [
        "network-check",
        "ssm-verify",
        "image-pushed",
        "targets-healthy",
    ] {
        let out = cutover(&env, &["run", id]);
        assert_eq!(code(&out), 0, "{id} after the replay: {}", text(&out));
    }
    assert_eq!(served.stop(), Some(143));
}
