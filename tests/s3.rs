//! Team state on S3 against moto's server (a real S3 API on loopback, started by scripts/test:
//! CUTOVER_TEST_AWS_ENDPOINT): two "machines" are two state directories on one S3 prefix.

mod common;
use common::{code, text};
#[path = "common/tmux.rs"]
mod tmux;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cutover");

fn endpoint() -> String {
    std::env::var("CUTOVER_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!("CUTOVER_TEST_AWS_ENDPOINT is not set: run scripts/test, which starts moto")
    })
}

fn s3_client() -> aws_sdk_s3::Client {
    runtime().block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint())
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        )
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bucket(name: &str) -> String {
    let client = s3_client();
    runtime().block_on(async {
        let _ = client.create_bucket().bucket(name).send().await;
    });
    name.to_string()
}

const STEPS: &str = r#"
[[phase.step]]
id = "build"
do = "shell"
run = "echo built"

[[phase.step]]
id = "hold"
do = "shell"
run = "sleep ${hold}"
needs = ["build"]

[[phase.step]]
id = "after"
do = "shell"
run = "echo after"
needs = ["hold"]

[[phase.step]]
id = "chatty"
do = "shell"
run = "for i in 1 2 3 4 5 6 7 8; do echo line-$i; sleep 0.5; done"
"#;

/// One "machine": its own directory (runbook, state mirror), the shared S3 state.
struct Machine {
    dir: tempfile::TempDir,
    state: String,
    endpoint: String,
}

impl Machine {
    fn new(state: &str) -> Machine {
        Self::with_endpoint(state, &endpoint())
    }

    fn with_endpoint(state: &str, endpoint: &str) -> Machine {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("runbook.toml"),
            format!(
                "[runbook]\nname = \"s3\"\napp = \"gengar\"\n\n[vars]\nhold = \"0.4\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\n\n[[phase]]\nid = \"one\"\n{STEPS}"
            ),
        )
        .unwrap();
        Machine {
            dir,
            state: state.to_string(),
            endpoint: endpoint.to_string(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env("CUTOVER_STATE", &self.state)
            .env("CUTOVER_ACTOR", format!("op@{}", self.path().display()))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("CUTOVER_AWS_ENDPOINT_URL", &self.endpoint)
            .env_remove("AWS_PROFILE")
            .env_remove("CUTOVER_STATE_DIR")
            .env_remove("CUTOVER_RUNBOOK")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `command` in a 160×40 tmux session `name` in this machine's directory, with its
    /// environment (the shared S3 state, moto's credentials, its actor).
    fn in_tmux(&self, tmux: &tmux::TmuxServer, name: &str, command: &str) {
        let mut args: Vec<String> = [
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "160",
            "-y",
            "40",
            "-c",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(self.path().display().to_string());
        let actor = format!("op@{}", self.path().display());
        for (k, v) in [
            ("CUTOVER_STATE", self.state.as_str()),
            ("CUTOVER_ACTOR", actor.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("TERM", "xterm-256color"),
        ] {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.push(command.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tmux.tmux(&args);
    }

    fn state_of(&self, step: &str) -> String {
        self.status()["phases"][0]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == step)
            .map(|s| s["state"].as_str().unwrap().to_string())
            .unwrap()
    }
}

fn steps_of(status: &serde_json::Value) -> Vec<(String, String, String)> {
    status["phases"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
                s["actor"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn two_machines_share_one_journal_and_only_one_drives_at_a_time() {
    let state = format!("s3://{}/gengar/race", bucket("cutover-team-race"));
    let a = Machine::new(&state);
    let b = Machine::new(&state);
    let out = a.run(&["run", "build"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The other machine sees it.
    assert_eq!(b.state_of("build"), "done");
    let rounds: usize = std::env::var("CUTOVER_TEST_S3_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100);
    for round in 0..rounds {
        // Started together: exactly one drives (the other is refused naming the holder).
        let first = a
            .command(&["run", "hold"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let second = b
            .command(&["run", "hold"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let outs = [
            first.wait_with_output().unwrap(),
            second.wait_with_output().unwrap(),
        ];
        let codes: Vec<i32> = outs.iter().map(code).collect();
        let drove = codes.iter().filter(|c| **c == 0).count();
        assert_eq!(
            drove,
            1,
            "round {round}: exactly one drives: {}\n{}",
            text(&outs[0]),
            text(&outs[1])
        );
        let refused = outs.iter().find(|o| code(o) != 0).unwrap();
        assert_eq!(code(refused), 3, "round {round}: {}", text(refused));
        assert!(
            text(refused).contains("holds the S3 lock") || text(refused).contains("wrote event"),
            "{}",
            text(refused)
        );
        // The journal verifies after every round, from either machine.
        let verify = if round % 2 == 0 { &a } else { &b };
        let out = verify.run(&["audit", "verify"]);
        assert_eq!(code(&out), 0, "round {round}: {}", text(&out));
    }
    assert_eq!(steps_of(&a.status()), steps_of(&b.status()));
}

#[test]
fn a_killed_driver_leaves_its_step_interrupted_and_a_stale_lock_that_unlock_frees() {
    let state = format!("s3://{}/gengar/killed", bucket("cutover-team-killed"));
    let a = Machine::new(&state);
    let b = Machine::new(&state);
    assert_eq!(code(&a.run(&["run", "build"])), 0);
    let mut driver = a
        .command(&["run", "hold", "--var", "hold=30"])
        .env("CUTOVER_S3_LEASE_SECS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while b.state_of("hold") != "running" {
        assert!(started.elapsed() < Duration::from_secs(20), "never running");
        std::thread::sleep(Duration::from_millis(100));
    }
    driver.kill().unwrap();
    driver.wait().unwrap();
    // After the lease, the other machine sees the lock stale and the step interrupted.
    std::thread::sleep(Duration::from_secs(3));
    let lease = [("CUTOVER_S3_LEASE_SECS", "2")];
    let out = b
        .command(&["status", "--json"])
        .envs(lease)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hold = status["phases"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "hold")
        .unwrap();
    assert_eq!(hold["state"], "interrupted", "{status:#}");
    let out = b.command(&["run", "hold"]).envs(lease).output().unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("the S3 lock is stale"), "{said}");
    let id = said
        .split("cutover unlock ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    // A wrong id removes nothing; the right one frees it.
    let out = b.command(&["unlock", "nope"]).envs(lease).output().unwrap();
    assert_eq!(code(&out), 5, "{}", text(&out));
    let out = b.command(&["unlock", &id]).envs(lease).output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = b.run(&["run", "hold"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(a.state_of("hold"), "done");
}

#[test]
fn a_live_lock_is_not_unlocked() {
    let state = format!("s3://{}/gengar/live", bucket("cutover-team-live"));
    let a = Machine::new(&state);
    let b = Machine::new(&state);
    let mut driver = a
        .command(&["run", "build", "--var", "hold=1"])
        .spawn()
        .unwrap();
    let _ = driver.wait();
    let mut holding = a
        .command(&["run", "hold", "--var", "hold=5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let id = loop {
        let out = b.run(&["run", "hold"]);
        if code(&out) == 3 {
            let said = text(&out);
            break said
                .split("lock id ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_alphanumeric()).next())
                .unwrap()
                .to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = b.run(&["unlock", &id]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(text(&out).contains("held and alive"), "{}", text(&out));
    holding.wait().unwrap();
}

#[test]
fn a_local_journal_pushed_to_s3_reads_the_same_from_a_fresh_machine() {
    let state = format!("s3://{}/gengar/pushed", bucket("cutover-team-push"));
    // Driven locally first (no S3 state).
    let local = Machine::new("local");
    for step in ["build", "hold"] {
        let out = local.run(&["run", step]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    let before = steps_of(&local.status());
    let push = |m: &Machine| {
        m.command(&["state", "push"])
            .env("CUTOVER_STATE", &state)
            .output()
            .unwrap()
    };
    let out = push(&local);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("event(s) pushed"), "{}", text(&out));
    // Never into a prefix that already has a journal.
    let out = push(&local);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("already holds a journal"),
        "{}",
        text(&out)
    );

    let fresh = Machine::new(&state);
    assert_eq!(steps_of(&fresh.status()), before);
    let out = fresh.run(&["audit", "verify"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // And it drives on from there.
    let out = fresh.run(&["run", "after"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = fresh.run(&["state", "pull", "--to", "copy"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(fresh.path().join("copy/journal.jsonl").is_file());
}

#[test]
fn a_deleted_middle_event_and_a_cut_off_tail_are_reported() {
    let name = bucket("cutover-team-damage");
    let client = s3_client();
    for (prefix, damage) in [("gengar/middle", "middle"), ("gengar/tail", "tail")] {
        let state = format!("s3://{name}/{prefix}");
        let a = Machine::new(&state);
        for step in ["build", "hold", "after"] {
            let out = a.run(&["run", step]);
            assert_eq!(code(&out), 0, "{}", text(&out));
        }
        let out = a.run(&["audit", "verify"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let listed: Vec<String> = runtime().block_on(async {
            client
                .list_objects_v2()
                .bucket(&name)
                .prefix(format!("{prefix}/journal/"))
                .send()
                .await
                .unwrap()
                .contents()
                .iter()
                .map(|o| o.key().unwrap().to_string())
                .collect()
        });
        assert!(listed.len() >= 6, "{listed:?}");
        let doomed: Vec<String> = match damage {
            "middle" => vec![listed[2].clone()],
            _ => listed[listed.len() - 2..].to_vec(),
        };
        runtime().block_on(async {
            for key in &doomed {
                client
                    .delete_object()
                    .bucket(&name)
                    .key(key)
                    .send()
                    .await
                    .unwrap();
            }
        });
        // From a fresh machine (nothing cached) and from the one that wrote it (cached).
        for m in [&Machine::new(&state), &a] {
            let out = m.run(&["audit", "verify"]);
            assert_eq!(code(&out), 4, "{damage}: {}", text(&out));
            let said = text(&out);
            match damage {
                "middle" => assert!(said.contains("event 3 is missing"), "{said}"),
                _ => assert!(
                    said.contains(&format!("ends at event {}", listed.len() - 2))
                        && said.contains("cut off"),
                    "{said}"
                ),
            }
        }
    }
}

/// A test double: moto honours `If-None-Match`, so to show a store that ignores it, this proxy
/// in front of moto drops that header from every request.
fn header_dropping_proxy() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = endpoint()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let _ = proxy_connection(client, &upstream);
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn proxy_connection(mut client: std::net::TcpStream, upstream: &str) -> std::io::Result<()> {
    loop {
        // One request: its head, without If-None-Match, and its body.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if client.read(&mut byte)? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let mut length = 0usize;
        let mut kept = Vec::new();
        for line in head.split("\r\n").filter(|l| !l.is_empty()) {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("if-none-match:") || lower.starts_with("connection:") {
                continue;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            kept.push(line.to_string());
        }
        let mut body = vec![0u8; length];
        client.read_exact(&mut body)?;
        let mut server = std::net::TcpStream::connect(upstream)?;
        server
            .write_all(format!("{}\r\nConnection: close\r\n\r\n", kept.join("\r\n")).as_bytes())?;
        server.write_all(&body)?;
        let mut response = Vec::new();
        server.read_to_end(&mut response)?;
        client.write_all(&response)?;
    }
}

#[test]
fn a_store_that_ignores_conditional_writes_is_refused() {
    let name = bucket("cutover-team-unconditional");
    let proxy = header_dropping_proxy();
    let m = Machine::with_endpoint(&format!("s3://{name}/gengar"), &proxy);
    let out = m.run(&["status"]);
    assert_eq!(code(&out), 6, "{}", text(&out));
    assert!(
        text(&out).contains("ignores conditional writes"),
        "{}",
        text(&out)
    );
    // Through moto itself, the same prefix is accepted.
    let direct = Machine::new(&format!("s3://{name}/gengar"));
    let out = direct.run(&["status"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[test]
fn a_missing_bucket_is_named() {
    let m = Machine::new("s3://cutover-no-such-bucket/gengar");
    let out = m.run(&["status"]);
    assert_eq!(code(&out), 6, "{}", text(&out));
    assert!(
        text(&out).contains("the state bucket cutover-no-such-bucket does not exist"),
        "{}",
        text(&out)
    );
}

/// The step log from another machine: while the step runs (its chunks shipped as it grows),
/// and whole once it ended; and `cutover watch` there follows the journal and the log.
#[test]
fn another_machine_reads_the_running_steps_log_and_watches_it() {
    let state = format!("s3://{}/gengar/logs", bucket("cutover-team-logs"));
    let a = Machine::new(&state);
    let b = Machine::new(&state);
    let tmux = tmux::TmuxServer::new("s3-watch");
    b.in_tmux(&tmux, "watch", &format!("{BIN} watch; sleep 600"));
    tmux.wait_for("watch", "WATCHING", Duration::from_secs(30));

    let mut driver = a
        .command(&["run", "chatty"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // While it runs: the lines so far, not yet the last.
    let started = Instant::now();
    loop {
        let out = b.run(&["log", "chatty"]);
        let log = String::from_utf8_lossy(&out.stdout).to_string();
        if log.contains("line-2") {
            assert!(!log.contains("line-8"), "read while it runs: {log}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the log never reached the other machine: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The watcher follows the journal and the log: the step running (its lines), then done.
    tmux.wait_for("watch", "running", Duration::from_secs(15));
    tmux.keys("watch", &["G"]);
    tmux.wait_for("watch", "line-", Duration::from_secs(15));
    driver.wait().unwrap();
    tmux.wait_for("watch", "✓ chatty", Duration::from_secs(15));
    tmux.wait_for("watch", "line-8", Duration::from_secs(15));
    let out = b.run(&["log", "chatty"]);
    let log = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        log.contains("line-8") && log.contains("succeeded"),
        "the whole log after it ended: {log}"
    );
}

/// The terminal UI drives an S3 state: it takes the S3 lock (another machine is refused while
/// it is open), its steps land in the S3 journal, and quitting releases the lock.
#[test]
fn the_terminal_ui_drives_an_s3_state_and_holds_its_lock() {
    let state = format!("s3://{}/gengar/tui", bucket("cutover-team-tui"));
    let a = Machine::new(&state);
    let b = Machine::new(&state);
    let tmux = tmux::TmuxServer::new("s3-tui");
    a.in_tmux(
        &tmux,
        "drive",
        &format!("{BIN}; echo TUI-EXITED $?; sleep 600"),
    );
    tmux.wait_for("drive", "Steps 0/4", Duration::from_secs(30));
    tmux.keys("drive", &["Enter"]);
    tmux.wait_for("drive", "✓ build done", Duration::from_secs(30));
    // The other machine sees the step, by its actor; it cannot drive while the UI is open.
    let status = b.status();
    let build = &status["phases"][0]["steps"][0];
    assert_eq!(build["state"], "done", "{status:#}");
    assert_eq!(
        build["actor"],
        format!("op@{}", a.path().display()),
        "{status:#}"
    );
    let out = b.run(&["run", "hold"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("cutover tui"), "{}", text(&out));
    tmux.keys("drive", &["q"]);
    tmux.wait_for("drive", "TUI-EXITED 0", Duration::from_secs(30));
    let out = b.run(&["run", "hold"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

/// A mirror that holds more than S3 does (the prefix emptied and begun again) is not trusted:
/// it is read again from S3.
#[test]
fn a_mirror_of_an_emptied_prefix_is_read_again() {
    let name = bucket("cutover-team-emptied");
    let state = format!("s3://{name}/gengar");
    let a = Machine::new(&state);
    let out = a.run(&["run", "build"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(a.state_of("build"), "done");
    let client = s3_client();
    runtime().block_on(async {
        let listed = client
            .list_objects_v2()
            .bucket(&name)
            .prefix("gengar/")
            .send()
            .await
            .unwrap();
        for o in listed.contents() {
            client
                .delete_object()
                .bucket(&name)
                .key(o.key().unwrap())
                .send()
                .await
                .unwrap();
        }
    });
    assert_eq!(a.state_of("build"), "ready", "S3 decides, not the mirror");
}
