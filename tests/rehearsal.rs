//! The whole migration rehearsed end to end with `scripts/rehearse`: the first phase driven
//! through the terminal UI in tmux (the README's first command), quitting it (which stops every
//! stand-in), then the rest resumed and driven headless with `cutover run`, typing each confirm
//! phrase, through the soak gate (shortened by CUTOVER_REHEARSAL_SOAK) to the decommission;
//! then the end state checked (the domain serves from "RDS", the migrations are on RDS and not
//! on Heroku's database, Heroku's database got no write after the freeze) and the rehearsal
//! resumed once more to see the emulated account replayed. A second rehearsal runs a variant of
//! the runbook that never moves the app's DATABASE_URL: it must stop before the decommission.
//! Real parts throughout: Terraform (the scaffolded infra/*.tf applied to moto), moto, two
//! PostgreSQL 16 + pgvector clusters, HTTP, the journal; twin.py runs what AWS would run.
//! Users write through the domain the whole time (scripts/rehearsal/load.py): every write the
//! app acknowledged is on RDS at the end, once — the move is online: the capture, the copy, the
//! catch-ups and the deployment on RDS happen while Heroku serves them. Heroku's and RDS's databases are reached as the
//! real services' roles (Heroku's default credential, RDS's master user), never a superuser.

mod common;
use common::pg::{run_sql, scalar};
use common::{code, journal, text, wait};
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
    ("db-capture", "capture gengar-api"),
    ("db-copy", "copy into gengar"),
    ("maintenance-on", "freeze gengar-api"),
    ("dns-cutover", "point api.example.com at aws"),
    ("rds-capture-remove", "close the way back"),
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

/// The steps of the bundled runbook.
const STEPS: usize = 61;
/// The manual steps: done when the operator says so, with a note.
const MANUAL: &[&str] = &["deploy-workflow", "callback-urls", "smoke-flows"];

/// What the operator types while driving a runbook: each destructive step's phrase, and which
/// steps are manual.
struct Script {
    phrases: &'static [(&'static str, &'static str)],
    manual: &'static [&'static str],
}

const GENGAR: Script = Script {
    phrases: PHRASES,
    manual: MANUAL,
};

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

/// A program run in the rehearsal's environment (env.list) and nothing else of this process's,
/// but for what finding Python and a home needs.
fn in_rehearsal(program: &str, env: &BTreeMap<String, String>) -> Command {
    let mut command = Command::new(program);
    command.env_clear().envs(env).envs(
        ["HOME", "PYENV_ROOT", "LANG"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
    );
    command
}

fn cutover(env: &BTreeMap<String, String>, args: &[&str]) -> Output {
    in_rehearsal(BIN, env)
        .args(args)
        .env("CUTOVER_ACTOR", ACTOR)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn status(env: &BTreeMap<String, String>) -> Vec<serde_json::Value> {
    let out = cutover(env, &["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    journal::steps(&json).into_iter().cloned().collect()
}

/// A temporary directory for one rehearsal, and the rehearsal's directory inside it.
fn rehearsal_home() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    // The clusters run as an unprivileged user when the tests run as root: it must get in.
    std::fs::set_permissions(
        temp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = temp.path().join("rehearsal");
    (temp, dir)
}

#[test]
fn the_whole_migration_rehearses_from_the_tui_to_the_decommission() {
    let (temp, dir) = rehearsal_home();

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
    let screen = tmux.wait_for(pane, &format!("Steps 0/{STEPS}"), Duration::from_secs(600));
    assert!(
        screen.contains("REHEARSAL") && screen.contains("endpoint http://127.0.0.1:"),
        "the banner and the emulated account are on screen:\n{screen}"
    );
    let moto_pid = std::fs::read_to_string(dir.join("pids/moto")).unwrap();
    let edge = edge_port(&dir);
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
    assert!(screen.contains(&format!("Steps 5/{STEPS}")), "{screen}");
    assert!(
        dir.join("gengar-repo/gengar/Dockerfile").is_file()
            && dir.join("gengar-repo/infra/ecs.tf").is_file(),
        "the scaffold wrote into the rehearsal's app repository"
    );
    // Quitting the UI stops every stand-in.
    tmux.keys(pane, &["q"]);
    tmux.wait_for(pane, "REHEARSE-EXITED 0", Duration::from_secs(60));
    wait::until("the stand-ins to stop", Duration::from_secs(30), || {
        !alive(&moto_pid) && std::net::TcpStream::connect(("127.0.0.1", edge)).is_err()
    });
    assert!(!dir.join("env.list").exists());

    // --- the rest, resumed headless ------------------------------------------------------------
    let mut served = serve(&dir, &[], &temp.path().join("serve.log"));
    let env = environment(&dir);
    let serve_log = std::fs::read_to_string(temp.path().join("serve.log")).unwrap();
    assert!(
        serve_log.contains("terraform: real Terraform"),
        "scripts/test provides Terraform and the provider mirror: {serve_log}"
    );
    let steps = status(&env);
    assert_eq!(steps.len(), STEPS);
    assert!(
        steps[..5].iter().all(|s| s["state"] == "done"),
        "phase 1 resumed as done: {steps:#?}"
    );

    let mut ran = drive_until(&env, Some("rds-tunnel"), |id, out| {
        panic!("{id}: {}", text(out))
    })
    .unwrap();
    ran.extend(private_path_to_rds(&dir, &env));
    ran.extend(
        drive_until(&env, Some("callback-urls"), |id, out| {
            panic!("{id}: {}", text(out))
        })
        .unwrap(),
    );
    way_back(&dir, &env);
    ran.extend(drive(&env, |id, out| panic!("{id}: {}", text(out))).unwrap());
    // Every step once; going forward again after the way back ran again what the way back
    // rolled back and what relied on it (from the freeze on), each once more.
    let again = [
        "maintenance-on",
        "db-drain",
        "migrations",
        "rds-writes-mark",
        "rds-capture",
        "dns-cutover",
        "alb-serving",
        "db-capture-remove",
        "db-catchup-back",
    ];
    assert_eq!(ran.len(), STEPS - 5 + again.len(), "{ran:?}");
    for id in again {
        assert_eq!(ran.iter().filter(|r| **r == id).count(), 2, "{id}: {ran:?}");
    }
    let steps = status(&env);
    let step = |id: &str| steps.iter().find(|s| s["id"] == id).unwrap().clone();
    // The second cut over: the drain carried what Heroku took after the way back (a new log on
    // Heroku, read from its start), and the ALB answers again.
    assert!(
        step("alb-serving")["note"]
            .as_str()
            .is_some_and(|n| n.contains("forwards to its targets again")),
        "{:#}",
        step("alb-serving")
    );
    assert!(
        step("rds-capture")["note"]
            .as_str()
            .is_some_and(|n| n.contains("left out (not in the other database): public.migrations")),
        "{:#}",
        step("rds-capture")
    );
    // The database verified: every row of the app-like dataset (323,119) and what the users
    // wrote before the copy (notes, page views), checksums equal.
    let verified: u64 = step("db-verify")["outputs"]["rows"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap();
    assert!(verified > 323_119, "{verified}");
    assert_eq!(step("db-verify")["outputs"]["tables"], "5");
    // Heroku's baseline, from the router lines the twin's Heroku logged for the users' requests
    // (`heroku logs`): minute by minute, in the journal.
    let baseline = &step("heroku-baseline")["outputs"];
    let figure = |name: &str| {
        baseline[name]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name}: {baseline:#}"))
    };
    assert!(figure("requests") >= 100.0, "{baseline:#}");
    assert!(figure("minutes") >= 2.0, "{baseline:#}");
    assert!(figure("p50_ms") <= figure("p99_ms"), "{baseline:#}");
    let buckets: Vec<serde_json::Value> =
        serde_json::from_str(baseline["buckets"].as_str().unwrap()).unwrap();
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["requests"].as_f64().unwrap())
            .sum::<f64>(),
        figure("requests")
    );
    // The soak's go/no-go read the users' requests through the ALB from CloudWatch (the twin
    // publishes what the edge served), and RDS's figures.
    let gate = &step("soak-gate")["outputs"];
    assert_eq!(gate["verdict"], "go", "{gate:#}");
    assert!(
        gate["requests"]
            .as_str()
            .and_then(|r| r.parse::<u64>().ok())
            .is_some_and(|r| r > 0),
        "{gate:#}"
    );
    let seen: serde_json::Value = serde_json::from_str(gate["figures"].as_str().unwrap()).unwrap();
    for figure in ["requests", "healthy", "connections", "free_storage_gib"] {
        let points = seen["figures"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["key"] == figure))
            .and_then(|f| f["points"].as_array())
            .unwrap_or_else(|| panic!("{figure}: {seen:#}"));
        assert!(
            points
                .iter()
                .any(|p| p[1].as_f64().is_some_and(|v| v > 0.0)),
            "{figure}: {seen:#}"
        );
    }
    assert!(step("dns-cutover")["outputs"]["previous"]
        .as_str()
        .is_some_and(|p| p.contains("gengar-api.herokuapp.com")));
    for (id, _) in PHRASES {
        assert_eq!(step(id)["actor"], ACTOR, "{id}");
    }
    end_state(
        &dir,
        &env,
        &step("db-copy")["outputs"],
        &step("db-drain")["outputs"],
    );
    // The database phase went through the tunnel: every connection cutover (and its
    // pg_dump/pg_restore) made to "RDS" came from the task's address through the session's
    // forwarder, none from this machine directly; and no session is left.
    let rds_log = std::fs::read_to_string(dir.join("pg/target/server.log")).unwrap();
    let cutover_lines: Vec<&str> = rds_log
        .lines()
        .filter(|l| l.contains("connection authorized") && l.contains("application_name=cutover"))
        .collect();
    let cutover_hosts: Vec<&str> = cutover_lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(4))
        .collect();
    assert!(cutover_hosts.len() >= 4, "{cutover_hosts:?}");
    assert!(
        cutover_hosts.iter().all(|h| h.starts_with("127.0.1.")),
        "cutover reached RDS only through the tunnel: {cutover_hosts:?}"
    );
    // With the credentials the real services give, never a superuser's: RDS's master user
    // (a member of rds_superuser) on "RDS", Heroku's default credential (the database's
    // owner) on "Heroku" — cutover's connections, pg_dump's and pg_restore's, and the app's.
    assert!(
        cutover_lines
            .iter()
            .all(|l| l.contains("user=gengar_admin ")),
        "{cutover_lines:#?}"
    );
    let heroku_log = std::fs::read_to_string(dir.join("pg/source/server.log")).unwrap();
    let heroku_users: std::collections::BTreeSet<&str> = heroku_log
        .lines()
        .filter(|l| l.contains("connection authorized"))
        .filter(|l| l.contains("application_name=cutover") || l.contains("application_name=gengar"))
        .filter_map(|l| l.split("user=").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(
        heroku_users,
        ["u7rehearsal0heroku"].into_iter().collect(),
        "cutover and the app reach Heroku's database as its default credential"
    );
    let rds_users: std::collections::BTreeSet<&str> = rds_log
        .lines()
        .filter(|l| {
            l.contains("connection authorized")
                && l.contains("database=gengar application_name=gengar")
        })
        .filter_map(|l| l.split("user=").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(
        rds_users,
        ["gengar_admin"].into_iter().collect(),
        "the app's tasks reach RDS's gengar as the master user"
    );
    for (url, role) in [
        (&env["REHEARSAL_SOURCE_URL"], "u7rehearsal0heroku"),
        (&env["REHEARSAL_RDS_URL"], "gengar_admin"),
    ] {
        assert_eq!(
            scalar(
                url,
                &format!("SELECT rolsuper::text FROM pg_roles WHERE rolname = '{role}'")
            ),
            "false",
            "{role}"
        );
    }
    assert_eq!(
        scalar(
            &env["REHEARSAL_RDS_URL"],
            "SELECT string_agg(b.rolname, ',' ORDER BY b.rolname) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles b ON b.oid = m.roleid WHERE r.rolname = 'gengar_admin'"
        ),
        "rds_superuser"
    );
    assert!(
        session_processes(&dir).is_empty(),
        "{:?}",
        session_processes(&dir)
    );
    let out = cutover(&env, &["audit", "verify"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The record of the migration: every step with who ran it and how long it took, the write
    // freeze measured against the prediction journaled when it opened, the journal's hash.
    let report = report_with_soak_charts(&env, &dir);
    let hash = report["journal"]["final_hash"].as_str().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("last hash {hash}")),
        "{}",
        text(&out)
    );
    let reported = report["steps"].as_array().unwrap();
    assert_eq!(reported.len(), STEPS);
    for s in reported {
        assert_eq!(s["state"], "done", "{s:#}");
        assert_eq!(s["actor"], ACTOR, "{s:#}");
        assert!(s["took_secs"].as_f64().is_some(), "{s:#}");
    }
    let freeze = &report["windows"][0];
    assert_eq!(freeze["name"], "write freeze");
    assert_eq!(freeze["state"], "closed", "{freeze:#}");
    let measured = freeze["measured_secs"].as_f64().unwrap();
    let predicted = freeze["predicted_secs"].as_f64().unwrap();
    assert!(measured > 0.0 && predicted > 0.0, "{freeze:#}");
    // The online move: the copy and the AWS work (the deployment, the snapshot) happen before
    // the freeze; inside it, the dynos stopped, the final catch-up, the pending migration, the
    // DNS change.
    for id in [
        "db-drain",
        "migrations",
        "rds-writes-mark",
        "rds-capture",
        "dns-cutover",
    ] {
        assert!(
            freeze["steps"][id]["how"]
                .as_str()
                .is_some_and(|h| h.starts_with("predicted when the window opened")),
            "{id}: {freeze:#}"
        );
        assert!(
            freeze["steps"][id]["actual_secs"].as_f64().is_some(),
            "{id}: {freeze:#}"
        );
    }
    for id in [
        "db-copy",
        "db-verify",
        "snapshot-after",
        "deploy-rds",
        "db-catchup",
    ] {
        assert!(freeze["steps"][id].is_null(), "{id} is outside: {freeze:#}");
    }
    // The freeze's database part predicted from this migration's own catch-ups (their backlog
    // and apply rate), not guessed.
    assert!(
        freeze["steps"]["db-drain"]["how"]
            .as_str()
            .is_some_and(|h| h.contains("the drain: a backlog of")),
        "{freeze:#}"
    );
    assert!(
        report["copy_throughput_mib_s"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{report:#}"
    );
    eprintln!("write freeze (no history): {freeze:#}");
    users_lost_nothing(&dir, &env, freeze, 2);
    let journal = std::fs::read_to_string(dir.join("state/journal.jsonl")).unwrap();
    assert_eq!(
        journal.matches("\"confirmed\"").count(),
        PHRASES.len() + 4,
        "each destructive step was confirmed once, the copy three times (twice killed), the freeze and the DNS cutover twice (the way back, then forward again)"
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

    // The databases' passwords (the superuser's, Heroku's credential's, RDS's master user's)
    // never reached the journal or a log.
    let secrets = std::fs::read_to_string(dir.join("secrets.env")).unwrap();
    let passwords: Vec<&str> = secrets
        .lines()
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.trim()))
        .collect();
    assert_eq!(passwords.len(), 3, "{}", secrets.lines().count());
    assert!(passwords.iter().all(|p| p.len() > 10));
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
        for password in &passwords {
            assert!(
                !content.contains(password),
                "{} holds a password",
                file.display()
            );
        }
    }

    // Ctrl-C on --serve stops everything it started.
    let moto_pid = std::fs::read_to_string(dir.join("pids/moto")).unwrap();
    assert_eq!(served.stop(), Some(143));
    wait::until("moto to stop", Duration::from_secs(30), || {
        !alive(&moto_pid)
    });
    assert!(!dir.join("pg/source/data/postmaster.pid").exists());

    // Resumed once more, the emulated account is as the rehearsal left it (its recorded
    // requests replayed into a new moto): what Terraform built, the SSM keys, the image.
    let mut served = serve(&dir, &[], &temp.path().join("serve-again.log"));
    let env = environment(&dir);
    // The service runs again on the replayed account (its task reads RDS's URL from SSM), and
    // the domain still reaches it.
    for id in [
        "network-check",
        "ssm-verify",
        "image-pushed",
        "targets-healthy",
        "smoke-health",
    ] {
        let out = cutover(&env, &["run", id]);
        assert_eq!(code(&out), 0, "{id} after the replay: {}", text(&out));
    }
    assert_eq!(served.stop(), Some(143));
}

/// `scripts/rehearse --serve` with extra environment, waited for until ready.
fn serve(dir: &Path, extra: &[(&str, &str)], log: &Path) -> Served {
    let file = std::fs::File::create(log).unwrap();
    let mut served = Served {
        child: rehearse(dir, &["--serve"])
            .envs(extra.iter().copied())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    };
    wait::until(
        "the rehearsal to be ready",
        Duration::from_secs(600),
        || {
            if let Ok(Some(status)) = served.child.try_wait() {
                panic!(
                    "scripts/rehearse --serve exited ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            dir.join("ready").exists()
        },
    );
    served
}

/// Runs every step as it becomes ready (typing each destructive step's phrase after seeing it
/// refused without it; notes for the manual steps) until all are done; a step that fails is
/// handed to `failed`, which mends things and returns true to go on, or false to stop there
/// (then `Err(step)`).
fn drive(
    env: &BTreeMap<String, String>,
    failed: impl FnMut(&str, &Output) -> bool,
) -> Result<Vec<String>, String> {
    drive_until(env, None, failed)
}

/// [`drive`], stopping (Ok) when `until` is the next step to run.
fn drive_until(
    env: &BTreeMap<String, String>,
    until: Option<&str>,
    failed: impl FnMut(&str, &Output) -> bool,
) -> Result<Vec<String>, String> {
    drive_with(env, &GENGAR, until, failed)
}

/// [`drive_until`] with the phrases and manual steps of any runbook.
fn drive_with(
    env: &BTreeMap<String, String>,
    script: &Script,
    until: Option<&str>,
    mut failed: impl FnMut(&str, &Output) -> bool,
) -> Result<Vec<String>, String> {
    let phrases: BTreeMap<&str, &str> = script.phrases.iter().copied().collect();
    let mut ran = Vec::new();
    let started = Instant::now();
    loop {
        let steps = status(env);
        if steps
            .iter()
            .all(|s| s["state"] == "done" || s["state"] == "skipped")
        {
            return Ok(ran);
        }
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "the rehearsal did not finish; ran {ran:?}"
        );
        let Some(next) = steps.iter().find(|s| {
            [
                "ready",
                "failed",
                "interrupted",
                "needs re-run",
                "rolled back",
            ]
            .contains(&s["state"].as_str().unwrap_or(""))
        }) else {
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
        if until == Some(id.as_str()) {
            return Ok(ran);
        }
        let mut args = vec!["run", id.as_str()];
        if let Some(phrase) = phrases.get(id.as_str()) {
            let refused = cutover(env, &args);
            assert_eq!(code(&refused), 5, "{id}: {}", text(&refused));
            assert!(
                String::from_utf8_lossy(&refused.stderr).contains(&format!("\"{phrase}\"")),
                "{id}: {}",
                text(&refused)
            );
            args.extend(["--confirm", phrase]);
        }
        if script.manual.contains(&id.as_str()) {
            args.extend(["--note", "rehearsal: checked by hand"]);
        }
        let out = cutover(env, &args);
        if code(&out) != 0 {
            if failed(&id, &out) {
                continue;
            }
            return Err(id);
        }
        ran.push(id);
    }
}

fn edge_port(dir: &Path) -> u16 {
    std::fs::read_to_string(dir.join("ports.env"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("EDGE_PORT="))
        .and_then(|p| p.trim().parse().ok())
        .expect("EDGE_PORT in ports.env")
}

/// One HTTP/1.0 request to 127.0.0.1:port: (status, body).
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: api.example.com\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The emulated account changed behind cutover's back (an operator in the console), through
/// boto3 (installed with moto). Values go in through the environment (`os.environ`), never into
/// the code or onto the command line.
fn aws_python(env: &BTreeMap<String, String>, code: &str, values: &[(&str, &str)]) -> String {
    let out = in_rehearsal("python3", env)
        .args(["-c", &format!("import boto3, os\nssm = boto3.client('ssm', endpoint_url=os.environ['CUTOVER_AWS_ENDPOINT_URL'])\necs = boto3.client('ecs', endpoint_url=os.environ['CUTOVER_AWS_ENDPOINT_URL'])\nelb = boto3.client('elbv2', endpoint_url=os.environ['CUTOVER_AWS_ENDPOINT_URL'])\n{code}")])
        .envs(values.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until the service's target group has `count` targets registered (the twin registers
/// a deployment's new task within about a second).
fn wait_for_targets(env: &BTreeMap<String, String>, count: usize) {
    wait::until("the new task's target", Duration::from_secs(60), || {
        aws_python(
            env,
            "tg = elb.describe_target_groups(Names=['gengar-tg'])['TargetGroups'][0]['TargetGroupArn']\nprint(len(elb.describe_target_health(TargetGroupArn=tg)['TargetHealthDescriptions']))",
            &[],
        ) == count.to_string()
    });
}

/// The pids of the Session Manager plugin stand-ins running now.
/// The pids of this rehearsal's Session Manager plugin stand-ins running now (another
/// rehearsal on the machine, such as the other test, has its own: told apart by the
/// `REHEARSAL_DIR` in their environment).
fn session_processes(dir: &Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", "standin.py session-manager-plugin"])
        .output()
        .unwrap();
    let mine = format!("REHEARSAL_DIR={}", dir.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == mine.as_bytes()))
        })
        .map(str::to_string)
        .collect()
}

/// Whether the service's running tasks all have ECS Exec as `enabled` (at least one runs).
fn tasks_exec(env: &BTreeMap<String, String>, enabled: bool) -> bool {
    aws_python(
        env,
        "arns = ecs.list_tasks(cluster='gengar', serviceName='gengar', desiredStatus='RUNNING')['taskArns']\nts = ecs.describe_tasks(cluster='gengar', tasks=arns)['tasks'] if arns else []\nprint(sorted({t.get('enableExecuteCommand', False) for t in ts}))",
        &[],
    ) == if enabled { "[True]" } else { "[False]" }
}

/// ECS Exec turned on or off on the service, its tasks replaced (as a console change would).
fn set_exec(env: &BTreeMap<String, String>, enabled: bool) {
    aws_python(
        env,
        &format!("ecs.update_service(cluster='gengar', service='gengar', enableExecuteCommand={}, forceNewDeployment=True)", if enabled { "True" } else { "False" }),
        &[],
    );
    wait::until(
        "the service's tasks replaced",
        Duration::from_secs(90),
        || tasks_exec(env, enabled),
    );
}

/// The tunnel to RDS, refused as AWS refuses it, then dropped and killed mid-copy: checked
/// against what the emulated account and the "RDS" cluster see. Leaves `db-copy` to run.
fn private_path_to_rds(dir: &Path, env: &BTreeMap<String, String>) -> Vec<String> {
    // ECS Exec off on the running task: the tunnel step fails saying so.
    set_exec(env, false);
    let out = cutover(env, &["run", "rds-tunnel"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("ECS Exec is off"), "{}", text(&out));
    set_exec(env, true);
    // The task role without the ssmmessages channel permissions: Session Manager refuses.
    let iam = "iam = boto3.client('iam', endpoint_url=os.environ['CUTOVER_AWS_ENDPOINT_URL'])\n";
    let policy = aws_python(
        env,
        &format!("{iam}import json\nprint(json.dumps(iam.get_role_policy(RoleName='gengar-task', PolicyName='app-bucket')['PolicyDocument']))"),
        &[],
    );
    assert!(policy.contains("ssmmessages:OpenDataChannel"), "{policy}");
    aws_python(
        env,
        &format!("{iam}import json\ndoc = json.loads(os.environ['DOC'])\ndoc['Statement'] = [s for s in doc['Statement'] if s.get('Sid') != 'EcsExecChannels']\niam.put_role_policy(RoleName='gengar-task', PolicyName='app-bucket', PolicyDocument=json.dumps(doc))"),
        &[("DOC", &policy)],
    );
    let out = cutover(env, &["run", "rds-tunnel"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("TargetNotConnected"), "{}", text(&out));
    aws_python(
        env,
        &format!("{iam}iam.put_role_policy(RoleName='gengar-task', PolicyName='app-bucket', PolicyDocument=os.environ['DOC'])"),
        &[("DOC", &policy)],
    );
    assert!(
        session_processes(dir).is_empty(),
        "{:?}",
        session_processes(dir)
    );

    // Through to the copy, the tunnel opened by each database step.
    let ran = drive_until(env, Some("db-copy"), |id, out| {
        panic!("{id}: {}", text(out))
    })
    .unwrap();
    let preflight = std::fs::read_to_string(dir.join("state/logs/db-preflight/1.log")).unwrap();
    assert!(
        preflight
            .contains("its certificate valid for gengar.aaaaaaaaaa.us-east-1.rds.amazonaws.com"),
        "{preflight}"
    );
    // The HNSW build timed on "RDS" through the tunnel, for the freeze's prediction.
    assert!(
        preflight.contains("pass  index build")
            && preflight
                .contains("public.documents_embedding_idx (hnsw on public.documents, 3000 rows)")
            && preflight.contains("output index_builds = "),
        "{preflight}"
    );
    let rds = &env["REHEARSAL_RDS_URL"];
    // The copy is quick: to catch it mid-way every time, "RDS" stalls the load of one table
    // (an event trigger adds a statement trigger that sleeps to public.events as the schema is
    // restored). The first deploy's `migrations` table goes first, so this copy does not reset
    // (which would drop the stall).
    run_sql(
        rds,
        "DROP TABLE IF EXISTS public.migrations CASCADE; \
         CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(120); RETURN NULL; END $$; \
         CREATE FUNCTION test_stall_events() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() WHERE object_identity = 'public.events') THEN \
             CREATE TRIGGER test_stall BEFORE INSERT ON public.events FOR EACH STATEMENT EXECUTE FUNCTION public.test_stall(); \
           END IF; END $$; \
         CREATE EVENT TRIGGER test_stall_events ON ddl_command_end WHEN TAG IN ('CREATE TABLE') \
           EXECUTE FUNCTION public.test_stall_events()",
    );
    let copy = |env: &BTreeMap<String, String>| {
        in_rehearsal(BIN, env)
            .args(["run", "db-copy", "--confirm", "copy into gengar"])
            .env("CUTOVER_ACTOR", ACTOR)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // The tunnel dropped mid-copy (its forwarder killed): the copy fails, never succeeds on a
    // broken stream.
    let mut child = copy(env);
    wait::until(
        "the copy to load public.events",
        Duration::from_secs(120),
        || {
            scalar(
            rds,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'gengar' AND query LIKE 'COPY public.events%'",
        ) != "0"
        },
    );
    let forwarders = session_processes(dir);
    assert_eq!(forwarders.len(), 1, "{forwarders:?}");
    let _ = Command::new("kill")
        .args(["-KILL", &forwarders[0]])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let steps = status_of(env, "db-copy");
    assert_eq!(steps["state"], "failed", "{steps:#?}");
    // Its stalled load on "RDS" ends with its session; the stall goes.
    run_sql(
        rds,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'gengar' AND pid <> pg_backend_pid() AND query LIKE 'COPY %'; \
         DROP EVENT TRIGGER test_stall_events; DROP FUNCTION test_stall_events()",
    );
    // cutover killed mid-step, its tunnel open: the session goes with it (the guard sees its
    // stdin close). Held here: Heroku's events table locked, so the copy waits in pg_dump.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (locked_tx, locked) = std::sync::mpsc::channel::<()>();
    let heroku = env["REHEARSAL_SOURCE_URL"].clone();
    let holder = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let (client, conn) = tokio_postgres::connect(&heroku, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client
                    .batch_execute("BEGIN; LOCK TABLE public.events IN ACCESS EXCLUSIVE MODE")
                    .await
                    .unwrap();
                let _ = locked_tx.send(());
                let _ = tokio::task::spawn_blocking(move || held.recv()).await;
                client.batch_execute("COMMIT").await.unwrap();
            });
    });
    locked.recv().unwrap();
    let mut child = copy(env);
    wait::until(
        "the copy to wait in pg_dump",
        Duration::from_secs(120),
        || {
            scalar(
            &env["REHEARSAL_SOURCE_URL"],
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'cutover'",
        ) != "0"
        },
    );
    assert_eq!(session_processes(dir).len(), 1, "the tunnel is open");
    child.kill().unwrap();
    let _ = child.wait();
    wait::until(
        "the session to end with cutover",
        Duration::from_secs(10),
        || session_processes(dir).is_empty(),
    );
    let _ = release.send(());
    holder.join().unwrap();
    // What the killed copy started ends once its connection through the gone tunnel breaks;
    // then the lock is free again.
    wait::until(
        "the killed copy's children to end",
        Duration::from_secs(60),
        || {
            let out = cutover(env, &["status", "--json"]);
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .map(|s| s["driver"].is_null())
                .unwrap_or(false)
        },
    );
    ran
}

/// Issue 28's way back, with the users' load running through the domain the whole time: the
/// app on AWS takes writes, then `cutover rollback maintenance-on --chain` — Heroku's capture
/// installed again, the ALB answering 503 itself, RDS's changes drained into Heroku and checked,
/// the record back, RDS's capture removed, the dynos back and maintenance mode off. Every write
/// acknowledged on AWS is then on Heroku and served from it through the domain; Heroku's
/// sequences are not behind RDS's. (The caller then goes forward again.)
fn way_back(dir: &Path, env: &BTreeMap<String, String>) {
    let edge = edge_port(dir);
    let (status, body) = http(edge, "POST", "/api/after-cutover");
    assert_eq!(status, 200, "the app serves from AWS: {body}");
    // Users write on AWS for a few seconds.
    wait::until(
        "writes acknowledged on AWS",
        Duration::from_secs(60),
        || {
            requests(dir)
                .iter()
                .filter(|r| r.outcome == "acked" && r.side.as_deref() == Some("aws"))
                .count()
                >= 4
        },
    );
    let undo = [
        "rollback",
        "maintenance-on",
        "--chain",
        "--note",
        "rehearsal: the new service fails",
    ];
    // Before the phrases: what each part will do, in order, and what going back carries.
    let out = cutover(env, &undo);
    assert_eq!(code(&out), 5, "{}", text(&out));
    let said = text(&out);
    for needle in [
        "1. db-capture-remove:",
        "2. dns-cutover:",
        "3. rds-capture:",
        "4. maintenance-on:",
        "answers every request with 503 itself",
        "api.example.com back to",
        "gengar-api.herokuapp.com",
        "made on this database since the cutover are not in the old database yet",
        "Not carried (the old database has no such table, the capture left them out): public.migrations — their rows stay on this database only",
        "--confirm \"roll back dns-cutover\"",
    ] {
        assert!(said.contains(needle), "{needle}: {said}");
    }
    let phrases: Vec<String> = [
        "db-capture-remove",
        "dns-cutover",
        "rds-capture",
        "maintenance-on",
    ]
    .iter()
    .map(|step| format!("roll back {step}"))
    .collect();
    let mut right = undo.to_vec();
    for phrase in &phrases {
        right.extend(["--confirm", phrase.as_str()]);
    }
    let started = unix_now();
    let out = cutover(env, &right);
    assert_eq!(code(&out), 0, "{}", text(&out));
    eprintln!("the way back took {:.1} s", unix_now() - started);
    for id in [
        "db-capture-remove",
        "dns-cutover",
        "rds-capture",
        "maintenance-on",
    ] {
        assert_eq!(status_of(env, id)["state"], "rolled back", "{id}");
    }
    let said = text(&out);
    assert!(
        said.contains("1. elb.maintenance: done") && said.contains("2. db.catchup: done"),
        "{said}"
    );

    // The record, read back through Route 53, is the one the cutover journaled as replaced.
    let previous: serde_json::Value = serde_json::from_str(
        status_of(env, "dns-cutover")["outputs"]["previous"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let now: serde_json::Value = serde_json::from_str(&aws_python(
        env,
        "import json
r53 = boto3.client('route53', endpoint_url=os.environ['CUTOVER_AWS_ENDPOINT_URL'])
zone = [z for z in r53.list_hosted_zones()['HostedZones'] if z['Name'] == 'example.com.'][0]['Id']
records = [r for r in r53.list_resource_record_sets(HostedZoneId=zone)['ResourceRecordSets'] if r['Name'] == 'api.example.com.' and r['Type'] in ('A', 'AAAA', 'CNAME')]
print(json.dumps([{'type': r['Type'], 'ttl': r.get('TTL'), 'values': [v['Value'] for v in r.get('ResourceRecords', [])], 'alias': r.get('AliasTarget')} for r in records]))",
        &[],
    ))
    .unwrap();
    assert_eq!(now.as_array().map(Vec::len), Some(1), "{now}");
    assert_eq!(now[0]["type"], previous["type"], "{now} {previous}");
    assert_eq!(now[0]["ttl"], previous["ttl"], "{now} {previous}");
    assert_eq!(now[0]["values"], previous["values"], "{now} {previous}");
    assert!(now[0]["alias"].is_null(), "{now}");

    // Every write acknowledged on AWS is on Heroku, once; Heroku's sequences are not behind.
    let (rds, heroku) = (&env["REHEARSAL_RDS_URL"], &env["REHEARSAL_SOURCE_URL"]);
    let written_on_aws: Vec<(i64, String)> = requests(dir)
        .into_iter()
        .filter(|r| r.outcome == "acked" && r.side.as_deref() == Some("aws") && r.t < started)
        .filter_map(|r| Some((r.id?, r.token?)))
        .collect();
    assert!(written_on_aws.len() >= 4, "{written_on_aws:?}");
    for (id, token) in &written_on_aws {
        assert_eq!(
            scalar(
                heroku,
                &format!("SELECT count(*) FROM notes WHERE id = {id} AND body LIKE '%{token}'")
            ),
            "1",
            "note {id} ({token}), acknowledged on AWS, on Heroku"
        );
    }
    assert_eq!(
        scalar(
            heroku,
            "SELECT count(*) FROM page_views WHERE path = '/api/after-cutover'"
        ),
        "1"
    );
    let sequence = "SELECT last_value FROM notes_id_seq";
    assert!(
        scalar(heroku, sequence).parse::<i64>().unwrap()
            >= scalar(rds, sequence).parse::<i64>().unwrap(),
        "Heroku's notes_id_seq behind RDS's"
    );
    // Through the domain, Heroku serves again — the notes written on AWS included.
    let (id, _) = &written_on_aws[0];
    wait::until("Heroku to serve again", Duration::from_secs(60), || {
        let (status, body) = http(edge, "GET", &format!("/api/notes/{id}"));
        status == 200 && !body.contains("[twin")
    });
    wait::until(
        "writes acknowledged on Heroku again",
        Duration::from_secs(60),
        || {
            requests(dir).iter().any(|r| {
                r.outcome == "acked" && r.side.as_deref() == Some("heroku") && r.t > started
            })
        },
    );
    let journal = std::fs::read_to_string(dir.join("state/journal.jsonl")).unwrap();
    let events: Vec<(String, String)> = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["step"] == "dns-cutover")
        .filter_map(|l| {
            let event = l["event"].as_object()?.keys().next()?.clone();
            ["succeeded", "rollback_started", "rolled_back"]
                .contains(&event.as_str())
                .then(|| (event, l["actor"].as_str().unwrap_or_default().to_string()))
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["succeeded", "rollback_started", "rolled_back"]);
    assert!(events.iter().all(|(_, actor)| actor == ACTOR), "{events:?}");
    assert!(journal.contains("rehearsal: the new service fails"));
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn status_of(env: &BTreeMap<String, String>, id: &str) -> serde_json::Value {
    status(env)
        .into_iter()
        .find(|s| s["id"] == id)
        .unwrap_or_default()
}

/// One request of the rehearsal's users (scripts/rehearsal/load.py, a line of
/// `load/requests.jsonl`).
#[derive(serde::Deserialize, Debug)]
struct Request {
    /// When it was sent (unix time).
    t: f64,
    kind: String,
    outcome: String,
    /// "heroku" or "aws": who answered (the edge's X-Rehearsal-Via).
    side: Option<String>,
    id: Option<i64>,
    token: Option<String>,
    /// Shown when a check fails: the HTTP status and how long the answer took.
    #[allow(dead_code)]
    status: Option<u16>,
    #[allow(dead_code)]
    took: Option<f64>,
}

/// The users' requests recorded so far (a line being written is left out).
fn requests(dir: &Path) -> Vec<Request> {
    std::fs::read_to_string(dir.join("load/requests.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn unix(rfc3339: &serde_json::Value) -> f64 {
    let time = humantime::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap();
    time.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The users' load went on through the whole rehearsal, through the domain: every write the
/// app acknowledged with an id — on Heroku before the freeze, on AWS after the cutover — is on
/// RDS now, with its own content, once; no read of an acknowledged note came back empty; what
/// the freeze refused was refused by Heroku's maintenance mode (503), inside the freeze as the
/// journal measured it. Prints the freeze beside the refused span the users saw.
fn users_lost_nothing(
    dir: &Path,
    env: &BTreeMap<String, String>,
    freeze: &serde_json::Value,
    freezes: usize,
) {
    let seen = requests(dir);
    let acked: Vec<&Request> = seen.iter().filter(|r| r.outcome == "acked").collect();
    let on = |side: &str| {
        acked
            .iter()
            .filter(|r| r.side.as_deref() == Some(side))
            .count()
    };
    assert!(
        on("heroku") > 0 && on("aws") > 0,
        "writes acknowledged on both sides: {} on Heroku, {} on AWS",
        on("heroku"),
        on("aws")
    );
    // RDS as it holds the notes now: id -> body.
    let rds = &env["REHEARSAL_RDS_URL"];
    let notes: BTreeMap<i64, String> = serde_json::from_str::<BTreeMap<String, String>>(&scalar(
        rds,
        "SELECT coalesce(json_object_agg(id, body), '{}') FROM notes",
    ))
    .unwrap()
    .into_iter()
    .map(|(id, body)| (id.parse().unwrap(), body))
    .collect();
    let mut lost = Vec::new();
    for r in &acked {
        let (id, token) = (r.id.unwrap(), r.token.as_deref().unwrap());
        match notes.get(&id) {
            Some(body) if body.ends_with(token) => {}
            other => lost.push(format!("{id} ({token}, {:?}): {other:?}", r.side)),
        }
        let copies = notes.values().filter(|b| b.ends_with(token)).count();
        assert_eq!(copies, 1, "the write {token} is on RDS {copies} times");
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged write(s) not on RDS as acknowledged: {lost:#?}",
        lost.len()
    );
    let missing: Vec<&Request> = seen.iter().filter(|r| r.outcome == "missing").collect();
    assert!(
        missing.is_empty(),
        "reads of acknowledged notes: {missing:#?}"
    );
    let refused: Vec<&Request> = seen.iter().filter(|r| r.outcome == "refused").collect();
    assert!(
        refused.iter().all(|r| r.side.is_some()),
        "only Heroku's maintenance mode and the ALB's maintenance answer (the way back) refuse"
    );
    // The freeze as the journal measured it (maintenance-on started → dns-cutover done), and
    // the span of refused requests the users saw inside it (a request sent up to a second
    // before maintenance mode went on may be answered by it).
    let (opened, closed) = (unix(&freeze["opened"]), unix(&freeze["closed"]));
    let measured = freeze["measured_secs"].as_f64().unwrap_or_default();
    let inside: Vec<f64> = refused
        .iter()
        .map(|r| r.t)
        .filter(|t| *t >= opened - 1.0 && *t <= closed)
        .collect();
    // At 4 requests a second, a freeze of more than 2 s refuses some.
    assert!(
        measured < 2.0 || !inside.is_empty(),
        "no request was refused inside a freeze of {measured} s"
    );
    let first = inside.iter().copied().fold(f64::MAX, f64::min);
    let last = inside.iter().copied().fold(f64::MIN, f64::max);
    // No write was acknowledged by Heroku while maintenance mode was on: from each time
    // maintenance-on succeeded until the way back started rolling it back.
    let journal = common::journal::Journal::read(&dir.join("state/journal.jsonl"));
    let mut frozen: Vec<(f64, f64)> = Vec::new();
    for l in journal.values() {
        if l["step"] != "maintenance-on" {
            continue;
        }
        if l["event"].get("succeeded").is_some() {
            frozen.push((unix(&l["time"]), f64::MAX));
        } else if l["event"].get("rollback_started").is_some() {
            if let Some(last) = frozen.last_mut() {
                last.1 = unix(&l["time"]);
            }
        }
    }
    assert_eq!(
        frozen.len(),
        freezes,
        "frozen {freezes} time(s) (a way back between two): {frozen:?}"
    );
    let late: Vec<&&Request> = acked
        .iter()
        .filter(|r| {
            r.side.as_deref() == Some("heroku")
                && frozen.iter().any(|(from, to)| r.t > *from && r.t < *to)
        })
        .collect();
    assert!(
        late.is_empty(),
        "Heroku acknowledged writes sent while maintenance mode was on: {late:#?}"
    );
    let failed = seen.iter().filter(|r| r.outcome == "failed").count();
    eprintln!(
        "users: {} requests ({} writes acknowledged: {} on Heroku, {} on AWS; {} refused, {} failed); \
         write freeze measured from the journal {:.1} s (maintenance-on start to dns-cutover done), \
         refused span seen by the users {:.1} s ({} requests refused in it)",
        seen.len(),
        acked.len(),
        on("heroku"),
        on("aws"),
        refused.len(),
        failed,
        measured,
        if inside.is_empty() { 0.0 } else { last - first },
        inside.len()
    );
    assert!(seen.iter().any(|r| r.kind == "read" && r.outcome == "read"));
}

/// What the world looks like after the rehearsal: the app moved, not only the data.
fn end_state(
    dir: &Path,
    env: &BTreeMap<String, String>,
    copy_outputs: &serde_json::Value,
    drain_outputs: &serde_json::Value,
) {
    let rds = &env["REHEARSAL_RDS_URL"];
    let heroku = &env["REHEARSAL_SOURCE_URL"];
    let rds_id = scalar(rds, "SELECT system_identifier FROM pg_control_system()");
    let heroku_id = scalar(heroku, "SELECT system_identifier FROM pg_control_system()");
    assert_ne!(rds_id, heroku_id);
    assert_eq!(copy_outputs["target_system_identifier"], rds_id.as_str());

    // Traffic through the domain (as the emulated Route 53 resolves it) is served from RDS,
    // and what it writes lands there.
    let edge = edge_port(dir);
    let (status, body) = http(edge, "GET", "/health");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        health["database"]["system_identifier"],
        rds_id.as_str(),
        "{body}"
    );
    let before = scalar(
        rds,
        "SELECT count(*) FROM page_views WHERE path = '/api/end-state'",
    );
    let (status, body) = http(edge, "POST", "/api/end-state");
    assert_eq!(status, 200, "{body}");
    let after = scalar(
        rds,
        "SELECT count(*) FROM page_views WHERE path = '/api/end-state'",
    );
    assert_eq!(
        after.parse::<i64>().unwrap(),
        before.parse::<i64>().unwrap() + 1
    );
    assert_eq!(
        scalar(
            heroku,
            "SELECT count(*) FROM page_views WHERE path = '/api/end-state'"
        ),
        "0"
    );

    // The migrations ran on RDS, never on Heroku's database.
    assert_eq!(
        scalar(rds, "to_regclass('public.migrations')"),
        "migrations"
    );
    assert!(
        scalar(rds, "SELECT count(*) FROM public.migrations")
            .parse::<i64>()
            .unwrap()
            >= 1
    );
    assert_eq!(scalar(heroku, "to_regclass('public.migrations')"), "");

    // Every note Heroku's database holds is on RDS as Heroku has it: what Heroku took after the
    // way back went forward again. What the users wrote on AWS reached Heroku only through
    // cutover's catch-ups (the way back's drain, db-catchup-back): the decommission guard,
    // below, passed on the write counters against the second freeze's baseline, less
    // cutover's own tally.
    let notes_of = |url: &str| -> BTreeMap<i64, String> {
        serde_json::from_str::<BTreeMap<String, String>>(&scalar(
            url,
            "SELECT coalesce(json_object_agg(id, body), '{}') FROM notes",
        ))
        .unwrap()
        .into_iter()
        .map(|(id, body)| (id.parse().unwrap(), body))
        .collect()
    };
    let (on_heroku, on_rds) = (notes_of(heroku), notes_of(rds));
    assert!(!on_heroku.is_empty());
    for (id, body) in &on_heroku {
        assert_eq!(
            on_rds.get(id),
            Some(body),
            "note {id} is on RDS as on Heroku"
        );
    }
    let written_on_heroku: Vec<String> = requests(dir)
        .into_iter()
        .filter(|r| r.outcome == "acked" && r.side.as_deref() == Some("heroku"))
        .filter_map(|r| r.token)
        .collect();
    assert!(!written_on_heroku.is_empty());
    assert!(
        written_on_heroku.iter().all(|token| on_heroku
            .values()
            .filter(|body| body.ends_with(token.as_str()))
            .count()
            == 1),
        "a write acknowledged on Heroku is not on Heroku's database once"
    );
    let baseline: serde_json::Value =
        serde_json::from_str(drain_outputs["source_baseline"].as_str().unwrap()).unwrap();
    assert!(
        baseline["counters"]
            .as_object()
            .is_some_and(|c| c.contains_key("public.notes")),
        "{baseline:#}"
    );

    // The decommission guard passed before the add-on was removed.
    let journal = std::fs::read_to_string(dir.join("state/journal.jsonl")).unwrap();
    let position = |step: &str, event: &str| {
        journal
            .lines()
            .position(|l| l.contains(&format!("\"step\":\"{step}\"")) && l.contains(event))
            .unwrap_or_else(|| panic!("no {event} of {step}"))
    };
    assert!(
        position("heroku-db-idle", "\"succeeded\"")
            < position("remove-heroku-postgres", "\"started\"")
    );

    // ECS reports a task's exit code as its command's.
    let out = cutover(env, &["ecs-run", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code(&out), 3, "{}", text(&out));

    // A task reads its secrets when it starts: with a DATABASE_URL nothing answers on, the
    // migrations task fails and so does the step; put back, it passes again.
    // (put back as db-database-url set it: RDS's master user, by its private host name)
    let good = env["RDS_DATABASE_URL"].clone();
    aws_python(
        env,
        "ssm.put_parameter(Name='/gengar/prod/DATABASE_URL', Value='postgres://nobody:x@127.0.0.1:9/none?sslmode=disable', Type='SecureString', Overwrite=True)",
        &[],
    );
    let out = cutover(env, &["run", "migrations"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("exit code 1"), "{}", text(&out));

    // A new deployment with that value: its task cannot reach a database, and the target
    // check names it (the old task keeps serving until the new one is healthy).
    aws_python(
        env,
        "ecs.update_service(cluster='gengar', service='gengar', forceNewDeployment=True)",
        &[],
    );
    wait_for_targets(env, 2);
    let check = dir.join("targets-check.toml");
    std::fs::write(
        &check,
        "[runbook]\nname = \"check\"\napp = \"gengar\"\n\n[aws]\naccount_id = \"123456789012\"\nregion = \"us-east-1\"\n\n[[phase]]\nid = \"check\"\n\n[[phase.step]]\nid = \"targets\"\ndo = \"elb.health\"\ntarget_group = \"gengar-tg\"\ndeadline = \"8s\"\ninterval = \"1s\"\n",
    )
    .unwrap();
    let check_state = dir.join("targets-check-state");
    let mut check_env = env.clone();
    check_env.remove("CUTOVER_VARS_FILE");
    check_env.insert("CUTOVER_RUNBOOK".into(), check.display().to_string());
    check_env.insert(
        "CUTOVER_STATE_DIR".into(),
        check_state.display().to_string(),
    );
    let out = cutover(&check_env, &["run", "targets"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("1/2 healthy")
            && text(&out).contains("unhealthy (Target.ResponseCodeMismatch: Health checks failed with these codes: [503])"),
        "{}",
        text(&out)
    );
    assert_eq!(
        http(edge, "GET", "/health").0,
        200,
        "the healthy task still serves"
    );

    aws_python(
        env,
        "ssm.put_parameter(Name='/gengar/prod/DATABASE_URL', Value=os.environ['GOOD_URL'], Type='SecureString', Overwrite=True)\necs.update_service(cluster='gengar', service='gengar', forceNewDeployment=True)",
        &[("GOOD_URL", good.as_str())],
    );
    let out = cutover(env, &["run", "migrations"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The newest deployment's task replaces both.
    wait_for_targets(env, 1);
    let out = cutover(env, &["run", "targets-healthy"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // Terraform again on the same files: nothing to do but what moto does not store.
    let infra = dir.join("gengar-repo/infra");
    let terraform = |args: &[&str]| {
        in_rehearsal("terraform", env)
            .args(args)
            .current_dir(&infra)
            .output()
            .unwrap()
    };
    let out = terraform(&["plan", "-input=false", "-no-color", "-out=second.tfplan"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = terraform(&["show", "-json", "second.tfplan"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut changed: Vec<String> = plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"]["actions"] != serde_json::json!(["no-op"]))
        .filter(|c| c["mode"] == "managed")
        .map(|c| {
            format!(
                "{} {}",
                c["address"].as_str().unwrap(),
                c["change"]["actions"]
            )
        })
        .collect();
    changed.sort();
    // moto keeps neither the parameter group's parameters, the rules' descriptions, the
    // service's grace period, the role policy's exact document nor some RDS settings: the
    // provider sees them as drift. Anything else is a real difference.
    assert_eq!(
        changed,
        [
            "aws_db_instance.main [\"update\"]",
            "aws_db_parameter_group.main [\"update\"]",
            "aws_ecs_service.app [\"update\"]",
            "aws_iam_role_policy.deploy [\"update\"]",
            "aws_vpc_security_group_egress_rule.alb_to_tasks [\"update\"]",
            "aws_vpc_security_group_ingress_rule.fargate_from_alb [\"update\"]",
            "aws_vpc_security_group_ingress_rule.rds_from_fargate [\"update\"]",
        ],
        "a second plan changes only what moto does not store"
    );
    std::fs::remove_file(infra.join("second.tfplan")).unwrap();
}

/// The runbook with the DATABASE_URL switch left out (the app keeps Heroku's database, as a
/// verbatim copy of Heroku's config would do): the smoke test through the domain sees Heroku's
/// database and fails; pushed past it by hand, the decommission guard names the AWS task still
/// connected to Heroku. Heroku's database is never removed.
#[test]
fn a_runbook_that_never_moves_the_app_stops_before_the_decommission() {
    let (temp, dir) = rehearsal_home();
    // The variant beside the templates it scaffolds from.
    let variant_dir = temp.path().join("variant");
    std::fs::create_dir(&variant_dir).unwrap();
    std::os::unix::fs::symlink(repo().join("assets"), variant_dir.join("assets")).unwrap();
    let bundled = std::fs::read_to_string(repo().join("runbook.toml")).unwrap();
    let rds_value = "{ value = \"${secret.RDS_DATABASE_URL}\", from = \"RDS\" }";
    assert_eq!(
        bundled.matches(rds_value).count(),
        2,
        "ssm-sync and db-database-url"
    );
    let smoke = "deadline = \"10m\"\ninterval = \"10s\"\nnotes = \"Through the domain";
    assert_eq!(bundled.matches(smoke).count(), 1);
    let variant = bundled
        .replace(
            rds_value,
            "{ value = \"${secret.HEROKU_DATABASE_URL}\", from = \"Heroku\" }",
        )
        .replace(
            smoke,
            "deadline = \"4s\"\ninterval = \"1s\"\nnotes = \"Through the domain",
        );
    std::fs::write(variant_dir.join("runbook.toml"), variant).unwrap();
    let runbook = variant_dir.join("runbook.toml");

    let mut served = serve(
        &dir,
        &[
            ("CUTOVER_REHEARSAL_RUNBOOK", runbook.to_str().unwrap()),
            ("CUTOVER_REHEARSAL_IDLE", "3s"),
        ],
        &temp.path().join("serve.log"),
    );
    let env = environment(&dir);
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let stopped = drive(&env, |id, out| {
        failures.insert(id.to_string(), text(out));
        match id {
            // The operator, convinced, marks it done: the guard must still hold.
            "smoke-health" => {
                let out = cutover(
                    &env,
                    &["mark", "smoke-health", "done", "--note", "looks fine to me"],
                );
                assert_eq!(code(&out), 0, "{}", text(&out));
                true
            }
            "heroku-db-idle" => false,
            other => panic!("{other} failed unexpectedly: {}", text(out)),
        }
    });
    assert_eq!(stopped, Err("heroku-db-idle".to_string()), "{failures:#?}");

    // The smoke test saw the app answer from Heroku's database, not the copy's.
    let heroku = &env["REHEARSAL_SOURCE_URL"];
    let heroku_id = scalar(heroku, "SELECT system_identifier FROM pg_control_system()");
    let smoke = &failures["smoke-health"];
    assert!(
        smoke.contains(&format!("`database.system_identifier` is \"{heroku_id}\"")),
        "{smoke}"
    );
    // The guard named the AWS task still connected to Heroku (never a query text).
    let guard = &failures["heroku-db-idle"];
    assert!(
        guard.contains("still in use")
            && guard.contains("1 other client(s) connected: gengar from 127.0.1."),
        "{guard}"
    );
    // What it prevented: the migrations went to Heroku's database, the app writes there, and
    // removing it would have lost them. It is still there.
    assert_eq!(
        scalar(heroku, "to_regclass('public.migrations')"),
        "migrations"
    );
    // The users' writes the app acknowledged on AWS after the cutover are in Heroku's
    // database, not on RDS.
    let on_aws: Vec<i64> = requests(&dir)
        .iter()
        .filter(|r| r.outcome == "acked" && r.side.as_deref() == Some("aws"))
        .filter_map(|r| r.id)
        .collect();
    assert!(!on_aws.is_empty());
    let ids = on_aws
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        scalar(
            heroku,
            &format!("SELECT count(*) FROM notes WHERE id IN ({ids})")
        ),
        on_aws.len().to_string()
    );
    let steps = status(&env);
    let state = |id: &str| {
        steps.iter().find(|s| s["id"] == id).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state("remove-heroku-postgres"), "pending");
    assert_eq!(state("destroy-heroku-app"), "pending");
    let heroku_state = std::fs::read_to_string(dir.join("standins/heroku.json")).unwrap();
    assert!(heroku_state.contains("heroku-postgresql"), "{heroku_state}");
    assert_eq!(served.stop(), Some(143));
}

/// The phrases of the runbook `cutover init` writes for scripts/rehearsal/rails-app.
const RAILS_PHRASES: &[(&str, &str)] = &[
    ("terraform-apply", "apply infrastructure for rails-app"),
    ("db-capture", "capture rails-app"),
    ("db-copy", "copy into rails-app"),
    ("maintenance-on", "freeze rails-app"),
    ("heroku-workers-off", "stop the workers of rails-app"),
    ("dns-cutover", "point shop.example.org at aws"),
    ("rds-capture-remove", "close the way back"),
    (
        "remove-heroku-postgres",
        "delete the heroku database of rails-app",
    ),
    ("destroy-heroku-app", "destroy rails-app"),
    ("delete-heroku-secrets", "delete heroku secrets"),
];

const RAILS: Script = Script {
    phrases: RAILS_PHRASES,
    manual: &[
        "deploy-workflow",
        "redis-queues",
        "callback-urls",
        "one-off-commands",
        "smoke-processes",
        "smoke-flows",
    ],
};

/// Every log line the app's tasks wrote to CloudWatch Logs (/ecs/rails-app), stream by stream.
fn rails_logs(env: &BTreeMap<String, String>) -> String {
    aws_python(
        env,
        "logs = boto3.client('logs', endpoint_url=os.environ['CUTOVER_AWS_ENDPOINT_URL'])\nfor s in logs.describe_log_streams(logGroupName='/ecs/rails-app')['logStreams']:\n    for e in logs.get_log_events(logGroupName='/ecs/rails-app', logStreamName=s['logStreamName'])['events']:\n        print(s['logStreamName'] + ': ' + e['message'])",
        &[],
    )
}

/// The task definitions the web service and the worker run now.
fn rails_task_definitions(env: &BTreeMap<String, String>) -> String {
    aws_python(
        env,
        "print(' '.join(s['taskDefinition'].rsplit('/', 1)[1] for s in ecs.describe_services(cluster='rails-app', services=['rails-app', 'rails-app-worker'])['services']))",
        &[],
    )
}

/// One deployment as a developer's push makes it: the repository's own deploy.yml (written by
/// `cutover init`, scaffolded into the app) played by the gh stand-in, its `run:` steps for
/// real with the AWS CLI against the emulated account. (exit code, output)
fn deploy_rails(env: &BTreeMap<String, String>) -> (i32, String) {
    let repo = &env["REHEARSAL_APP_REPO"];
    let gh = |args: &[&str]| {
        in_rehearsal("gh", env)
            .args(args)
            .current_dir(repo)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = gh(&[
        "workflow",
        "run",
        "deploy.yml",
        "-R",
        "rehearsal/rails-app",
        "--ref",
        "main",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let id = gh(&[
        "run",
        "list",
        "-R",
        "rehearsal/rails-app",
        "--workflow",
        "deploy.yml",
        "--limit",
        "1",
        "--json",
        "databaseId",
        "--jq",
        ".[0].databaseId",
    ]);
    assert_eq!(code(&id), 0, "{}", text(&id));
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let out = gh(&[
        "run",
        "watch",
        "-R",
        "rehearsal/rails-app",
        "--exit-status",
        &id,
    ]);
    (code(&out), text(&out))
}

/// The second shape, end to end: a Rails app with a Sidekiq worker, a release phase, Heroku
/// Postgres and Heroku Redis (scripts/rehearsal/rails-app: the Heroku Platform API's answers
/// and the repository). scripts/rehearse runs `cutover init --from-heroku rails-app` against a
/// stand-in of that API, then this drives the runbook it wrote, headless, to the decommission:
/// its Terraform (with the worker's service, ElastiCache, the /up health check) applied to moto,
/// its deploy workflow played for real, the Redis queues drained and Heroku's workers stopped
/// inside the freeze, the worker started on AWS after the cutover. Then two more deployments:
/// a release that migrates runs before the services move; a release that fails stops the
/// deployment, and the services keep what they ran.
#[test]
fn a_rails_app_that_init_read_rehearses_to_the_decommission() {
    let (temp, dir) = rehearsal_home();
    let mut served = serve(
        &dir,
        &[("CUTOVER_REHEARSAL_SHAPE", "rails-app")],
        &temp.path().join("serve.log"),
    );
    let env = environment(&dir);
    // init wrote the runbook the rehearsal drives, said what it left to its user, and no
    // config var's value is in anything it wrote.
    let init = std::fs::read_to_string(dir.join("logs/init.log")).unwrap();
    assert!(
        init.contains("worker     1 × Standard-1X → an ECS service with no load balancer")
            && init.contains("decisions for you"),
        "{init}"
    );
    assert_eq!(
        env["CUTOVER_RUNBOOK"],
        dir.join("init/runbook.toml").to_str().unwrap()
    );
    for root in [
        dir.join("init"),
        dir.join("app-repo"),
        dir.join("logs/init.log"),
    ] {
        let out = Command::new("grep")
            .args(["-rlE", "rehearsal-not-a-(password|secret)"])
            .arg(&root)
            .output()
            .unwrap();
        assert_eq!(code(&out), 1, "a config var's value in {}", text(&out));
    }

    let ran = drive_with(&env, &RAILS, None, |id, out| panic!("{id}: {}", text(out))).unwrap();
    let steps = status(&env);
    assert!(steps.iter().all(|s| s["state"] == "done"), "{steps:#?}");
    assert_eq!(ran.len(), steps.len(), "every step once: {ran:?}");
    let position = |id: &str| ran.iter().position(|r| r == id).unwrap();
    // Inside the freeze, in this order: the queues drained, Heroku's workers stopped, the final
    // drain, the release phase on RDS; the worker starts on AWS after the domain moved.
    assert!(
        position("maintenance-on") < position("redis-queues")
            && position("redis-queues") < position("heroku-workers-off")
            && position("heroku-workers-off") < position("db-drain")
            && position("db-drain") < position("migrations")
            && position("migrations") < position("dns-cutover")
            && position("dns-cutover") < position("processes-on"),
        "{ran:?}"
    );
    let heroku = std::fs::read_to_string(dir.join("standins/heroku.json")).unwrap();
    assert!(heroku.contains("\"worker\": 0"), "{heroku}");

    // The worker: an ECS service of its own with no load balancer, one task running the
    // Sidekiq command on the same image; the ALB's target group holds the web task alone.
    let services = aws_python(
        &env,
        "for s in ecs.describe_services(cluster='rails-app', services=['rails-app', 'rails-app-worker'])['services']:\n    print(s['serviceName'], s['desiredCount'], s['runningCount'], len(s['loadBalancers']))\ntg = elb.describe_target_groups(Names=['rails-app-tg'])['TargetGroups'][0]\nprint('targets', len(elb.describe_target_health(TargetGroupArn=tg['TargetGroupArn'])['TargetHealthDescriptions']), tg['HealthCheckPath'])",
        &[],
    );
    assert_eq!(
        services, "rails-app 1 1 1\nrails-app-worker 1 1 0\ntargets 1 /up",
        "{services}"
    );
    let logs = rails_logs(&env);
    assert!(
        logs.lines()
            .any(|l| l.starts_with("worker/rails-app/") && l.contains("NotesDigestJob done")),
        "{logs}"
    );
    // The release phase ran before the first deployment (on RDS, before the copy) and again
    // inside the freeze, with nothing left to do.
    assert!(
        logs.contains("20261201090000 CreateWidgets: migrated"),
        "{logs}"
    );
    assert!(logs.contains("nothing to migrate"), "{logs}");
    let report = report_with_soak_charts(&env, &dir);
    let freeze = &report["windows"][0];
    assert_eq!(freeze["state"], "closed", "{freeze:#}");
    eprintln!("rails-app write freeze: {freeze:#}");
    users_lost_nothing(&dir, &env, freeze, 1);

    // A push with a migration: the release runs it on RDS, then both services move to the
    // new task definitions.
    let repo = PathBuf::from(&env["REHEARSAL_APP_REPO"]);
    let rds = &env["REHEARSAL_RDS_URL"];
    let before = rails_task_definitions(&env);
    std::fs::write(
        repo.join("db/migrate/20261204100000_add_sku_to_widgets.sql"),
        "ALTER TABLE widgets ADD COLUMN sku text;\n",
    )
    .unwrap();
    let (deployed, out) = deploy_rails(&env);
    assert_eq!(deployed, 0, "{out}");
    assert!(
        out.contains("the release phase ended STOPPED with exit code 0"),
        "{out}"
    );
    let after = rails_task_definitions(&env);
    assert_ne!(before, after);
    assert_eq!(
        scalar(rds, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'widgets' AND column_name = 'sku'"),
        "1"
    );

    // A push whose migration fails on the data (a NOT NULL column on a table with rows): the
    // release task exits 1, the job stops before any service is deployed, and the app serves
    // on as before.
    std::fs::write(
        repo.join("db/migrate/20261204110000_require_note_author.sql"),
        "ALTER TABLE notes ADD COLUMN author text NOT NULL;\n",
    )
    .unwrap();
    let (deployed, out) = deploy_rails(&env);
    assert_ne!(deployed, 0, "{out}");
    assert!(
        out.contains("the release phase ended STOPPED with exit code 1")
            && out.contains("failed at 'Release phase as a one-off ECS task'")
            && !out.contains("Deploy web"),
        "{out}"
    );
    assert_eq!(rails_task_definitions(&env), after);
    assert!(
        rails_logs(&env).contains("contains null values"),
        "the release's own error in its log"
    );
    assert_eq!(
        scalar(
            rds,
            "SELECT count(*) FROM schema_migrations WHERE version = '20261204110000'"
        ),
        "0"
    );
    assert_eq!(
        scalar(rds, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'notes' AND column_name = 'author'"),
        "0"
    );
    let (status, body) = http(edge_port(&dir), "GET", "/up");
    assert_eq!(status, 200, "{body}");
    assert_eq!(served.stop(), Some(143));
}

/// `cutover report --format json --charts`: the soak judged "go", and its pictures drawn from
/// the users' own requests through the ALB, Heroku's baseline beside them. The report, parsed.
fn report_with_soak_charts(env: &BTreeMap<String, String>, dir: &Path) -> serde_json::Value {
    let charts = dir.join("report-charts");
    let report = cutover(
        env,
        &[
            "report",
            "--format",
            "json",
            "--charts",
            charts.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&report), 0, "{}", text(&report));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["soak"]["verdict"], "go", "{:#}", report["soak"]);
    let requests = report["soak"]["figures"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["key"] == "requests"))
        .unwrap();
    assert!(
        !requests["heroku"].as_array().unwrap().is_empty(),
        "{requests:#}"
    );
    let svg = std::fs::read_to_string(charts.join("soak-requests.svg")).unwrap();
    assert!(
        svg.contains("<polyline") && svg.contains("Heroku&apos;s baseline"),
        "{svg}"
    );
    report
}
