//! Team state on S3 against moto's server (a real S3 API on loopback, started by scripts/test:
//! CUTOVER_TEST_AWS_ENDPOINT): two "machines" are two state directories on one S3 prefix.

mod common;
use common::{code, text};
#[path = "common/proxy.rs"]
mod proxy;
#[path = "common/tmux.rs"]
mod tmux;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::moto::{endpoint, runtime, Moto};
use common::wait;
use common::{journal, Project, Runbook, BIN};

/// A client of moto's S3 (path-style: moto's buckets are not DNS names).
fn s3_client() -> aws_sdk_s3::Client {
    let config = Moto::new().config;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    )
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

/// One "machine" on the shared S3 `state`: a project of its own (runbook, state mirror) whose
/// runbook has `STEPS` and reaches moto directly.
fn machine(state: &str) -> Project {
    machine_at(state, &endpoint())
}

/// A machine that reaches S3 at `endpoint` (moto, or a proxy in front of it).
fn machine_at(state: &str, endpoint: &str) -> Project {
    machine_with(state, endpoint, STEPS)
}

/// A machine whose runbook has these steps (one phase), its actor named after its directory.
/// The project's environment is applied after the runner removes the operator's settings, so
/// its `CUTOVER_STATE` and endpoint win.
fn machine_with(state: &str, endpoint: &str, steps: &str) -> Project {
    let runbook = Runbook::new("s3")
        .var("hold", "0.4")
        .aws(endpoint)
        .steps(steps);
    let p = Project::new(&runbook);
    let actor = format!("op@{}", p.path().display());
    p.env("CUTOVER_STATE", state)
        .env("CUTOVER_ACTOR", actor)
        .env("CUTOVER_AWS_ENDPOINT_URL", endpoint)
}

/// `status --json` on this machine, which must exit 0.
#[track_caller]
fn status(m: &Project) -> serde_json::Value {
    let out = m.ok(&["status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.text()))
}

/// One step's state, as this machine's `status --json` says it.
#[track_caller]
fn state_of(m: &Project, step: &str) -> String {
    journal::state_of(&status(m), step)
}

/// `command` in a 160×40 tmux session `name` in this machine's directory, with its
/// environment (the shared S3 `state`, moto's credentials, its actor).
fn in_tmux(m: &Project, state: &str, tmux: &tmux::TmuxServer, name: &str, command: &str) {
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
    args.push(m.path().display().to_string());
    let actor = format!("op@{}", m.path().display());
    for (k, v) in [
        ("CUTOVER_STATE", state),
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
    let a = machine(&state);
    let b = machine(&state);
    let out = a.run(&["run", "build"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The other machine sees it.
    assert_eq!(state_of(&b, "build"), "done");
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
    assert_eq!(steps_of(&status(&a)), steps_of(&status(&b)));
}

#[test]
fn a_killed_driver_leaves_its_step_interrupted_and_a_stale_lock_that_unlock_frees() {
    let state = format!("s3://{}/gengar/killed", bucket("cutover-team-killed"));
    let a = machine(&state);
    let b = machine(&state);
    assert_eq!(code(&a.run(&["run", "build"])), 0);
    let mut driver = a
        .command(&["run", "hold", "--var", "hold=30"])
        .env("CUTOVER_S3_LEASE_SECS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while state_of(&b, "hold") != "running" {
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
    assert_eq!(state_of(&a, "hold"), "done");
}

#[test]
fn a_live_lock_is_not_unlocked() {
    let state = format!("s3://{}/gengar/live", bucket("cutover-team-live"));
    let a = machine(&state);
    let b = machine(&state);
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
    let local = machine("local");
    for step in ["build", "hold"] {
        let out = local.run(&["run", step]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    let before = steps_of(&status(&local));
    let push = |m: &Project| {
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

    let fresh = machine(&state);
    assert_eq!(steps_of(&status(&fresh)), before);
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
        let a = machine(&state);
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
        for m in [&machine(&state), &a] {
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
    let m = machine_at(&format!("s3://{name}/gengar"), &proxy);
    let out = m.run(&["status"]);
    assert_eq!(code(&out), 6, "{}", text(&out));
    assert!(
        text(&out).contains("ignores conditional writes"),
        "{}",
        text(&out)
    );
    // Through moto itself, the same prefix is accepted.
    let direct = machine(&format!("s3://{name}/gengar"));
    let out = direct.run(&["status"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[test]
fn a_missing_bucket_is_named() {
    let m = machine("s3://cutover-no-such-bucket/gengar");
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
    let a = machine(&state);
    let b = machine(&state);
    let tmux = tmux::TmuxServer::new("s3-watch");
    in_tmux(
        &b,
        &state,
        &tmux,
        "watch",
        &format!("{BIN} watch; sleep 600"),
    );
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
    let a = machine(&state);
    let b = machine(&state);
    let tmux = tmux::TmuxServer::new("s3-tui");
    in_tmux(
        &a,
        &state,
        &tmux,
        "drive",
        &format!("{BIN}; echo TUI-EXITED $?; sleep 600"),
    );
    tmux.wait_for("drive", "Steps 0/4", Duration::from_secs(30));
    tmux.keys("drive", &["Enter"]);
    tmux.wait_for("drive", "✓ build done", Duration::from_secs(30));
    // The other machine sees the step, by its actor; it cannot drive while the UI is open.
    let status = status(&b);
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
    let a = machine(&state);
    let out = a.run(&["run", "build"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(state_of(&a, "build"), "done");
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
    assert_eq!(state_of(&a, "build"), "ready", "S3 decides, not the mirror");
}

// --- when things go wrong ---------------------------------------------------------------------

/// Every key under `prefix/` in the bucket (read from moto directly), in key order.
fn s3_keys(bucket: &str, prefix: &str) -> Vec<String> {
    let client = s3_client();
    runtime().block_on(async {
        let mut keys = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(format!("{prefix}/"))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for o in page.unwrap().contents() {
                keys.push(o.key().unwrap().to_string());
            }
        }
        keys.sort();
        keys
    })
}

fn s3_object(bucket: &str, key: &str) -> Vec<u8> {
    let client = s3_client();
    runtime().block_on(async {
        client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec()
    })
}

/// The events of the S3 journal under `prefix/journal/`, in order (read from moto directly).
fn s3_events(bucket: &str, prefix: &str) -> Vec<serde_json::Value> {
    s3_keys(bucket, &format!("{prefix}/journal"))
        .iter()
        .map(|key| serde_json::from_slice(&s3_object(bucket, key)).unwrap())
        .collect()
}

/// Step `step`'s events of kind `kind` in the S3 journal.
fn s3_has_event(bucket: &str, prefix: &str, step: &str, kind: &str) -> bool {
    s3_events(bucket, prefix)
        .iter()
        .any(|e| e["step"] == step && e["event"].get(kind).is_some())
}

/// A step log as shipped: its chunks under `prefix/logs/<file>/`, in offset order, joined.
fn s3_log(bucket: &str, prefix: &str, file: &str) -> Vec<u8> {
    s3_keys(bucket, &format!("{prefix}/{file}"))
        .iter()
        .flat_map(|key| s3_object(bucket, key))
        .collect()
}

/// Waits for a child until `limit`; kills it past that (and says so with `None`).
fn wait_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// The lock id in a refusal ("… lock id ID)" or "cutover unlock ID").
fn lock_id_in(said: &str) -> Option<String> {
    said.split("lock id ")
        .nth(1)
        .or_else(|| said.split("cutover unlock ").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_alphanumeric()).next())
        .map(str::to_string)
}

const LONG: &str = r#"
[[phase.step]]
id = "long"
do = "shell"
run = "for i in $(seq 1 300); do echo tick-$i; sleep 0.1; done"

[[phase.step]]
id = "other"
do = "shell"
run = "echo other; sleep 2"
"#;

/// Driver A stopped (SIGSTOP) past its 2 s lease; B unlocks the stale lock and drives; A is
/// woken (SIGCONT) while B drives: A stops its step within 2 s, says why, and writes nothing
/// more — no event of A's follows B's first in the bucket, and the journal verifies.
#[test]
fn a_driver_that_lost_its_lease_stops_without_appending() {
    let name = bucket("cutover-team-lapsed");
    let prefix = "gengar/lapsed";
    let state = format!("s3://{name}/{prefix}");
    let a = machine_with(&state, &endpoint(), LONG);
    let b = machine_with(&state, &endpoint(), LONG);
    let lease = [("CUTOVER_S3_LEASE_SECS", "2")];
    let log_a = a.path().join("a.err");
    let mut driver = a
        .command(&["run", "long"])
        .envs(lease)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_a).unwrap())
        .spawn()
        .unwrap();
    wait::until("A's step running", Duration::from_secs(30), || {
        s3_has_event(&name, prefix, "long", "started")
    });
    signal(&driver, nix::sys::signal::Signal::SIGSTOP);
    // B finds the lock stale once the lease is over, and removes it by its id.
    let started = Instant::now();
    loop {
        let out = b.command(&["run", "other"]).envs(lease).output().unwrap();
        assert_eq!(
            code(&out),
            3,
            "B must not drive before unlocking: {}",
            text(&out)
        );
        if text(&out).contains("stale") {
            let id = lock_id_in(&text(&out)).unwrap();
            let out = b.command(&["unlock", &id]).envs(lease).output().unwrap();
            assert_eq!(code(&out), 0, "{}", text(&out));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never stale: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let actor_b = format!("op@{}", b.path().display());
    let second = b
        .command(&["run", "other"])
        .envs(lease)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait::until("B's step running", Duration::from_secs(30), || {
        s3_has_event(&name, prefix, "other", "started")
    });
    signal(&driver, nix::sys::signal::Signal::SIGCONT);
    let woken = Instant::now();
    let status = wait_within(&mut driver, Duration::from_secs(60));
    let stopped_after = woken.elapsed();
    let said_a = std::fs::read_to_string(&log_a).unwrap();
    assert!(status.is_some(), "A never stopped: {said_a}");
    eprintln!("A stopped {stopped_after:?} after it was woken");
    assert!(
        stopped_after < Duration::from_secs(10),
        "A went on for {stopped_after:?} after it was woken: {said_a}"
    );
    assert_ne!(status.unwrap().code(), Some(0), "{said_a}");
    assert!(
        said_a.contains("S3 lock"),
        "A says why it stopped: {said_a}"
    );
    let out = second.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "B drives on: {}", text(&out));

    // The bucket: after B's first event, none of A's.
    let events = s3_events(&name, prefix);
    let first_b = events
        .iter()
        .position(|e| e["actor"] == actor_b.as_str())
        .unwrap();
    let after: Vec<&serde_json::Value> = events[first_b..]
        .iter()
        .filter(|e| e["actor"] != actor_b.as_str())
        .collect();
    assert!(after.is_empty(), "A wrote after B took over: {after:#?}");
    assert!(
        events
            .iter()
            .any(|e| e["step"] == "other" && e["event"].get("succeeded").is_some()),
        "{events:#?}"
    );
    for m in [&a, &b] {
        let out = m.run(&["audit", "verify"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
}

/// S3 answers 409 ConditionalRequestConflict ("retry") to the heartbeat's PUT and to an
/// event's PUT (injected by the test's proxy: moto never says it): both are retried, the
/// heartbeat goes on, and the run succeeds with every event on S3.
#[test]
fn a_409_on_the_heartbeat_and_on_an_append_is_retried() {
    use proxy::{Proxy, Verdict};
    use std::sync::atomic::{AtomicBool, Ordering};
    let name = bucket("cutover-team-conflict");
    let prefix = "gengar/conflict";
    let (beat_refused, event_refused) = (AtomicBool::new(false), AtomicBool::new(false));
    let proxy = Proxy::start(&endpoint(), move |r| {
        if r.is_put() && r.key().ends_with("/lock.json") && r.header("if-match").is_some() {
            if !beat_refused.swap(true, Ordering::SeqCst) {
                return Verdict::Fail {
                    status: 409,
                    code: "ConditionalRequestConflict",
                };
            }
        } else if r.is_put()
            && r.key().contains("/journal/")
            && !event_refused.swap(true, Ordering::SeqCst)
        {
            return Verdict::Fail {
                status: 409,
                code: "ConditionalRequestConflict",
            };
        }
        Verdict::Forward
    });
    let a = machine_at(&format!("s3://{name}/{prefix}"), &proxy.url);
    let out = a.command(&["run", "build"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = a
        .command(&["run", "hold", "--var", "hold=4"])
        .env("CUTOVER_S3_LEASE_SECS", "4")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));

    let seen = proxy.seen();
    let conflict = |r: &proxy::Request, v: &Verdict, lock: bool| {
        matches!(v, Verdict::Fail { status: 409, .. }) && r.key().ends_with("/lock.json") == lock
    };
    let beat = seen
        .iter()
        .position(|(r, v)| conflict(r, v, true))
        .expect("a heartbeat was refused");
    let beats_after = seen[beat + 1..]
        .iter()
        .filter(|(r, v)| {
            *v == Verdict::Forward
                && r.key().ends_with("/lock.json")
                && r.header("if-match").is_some()
        })
        .count();
    assert!(
        beats_after >= 1,
        "the heartbeat went on after the 409: {beats_after}"
    );
    let event = seen
        .iter()
        .position(|(r, v)| conflict(r, v, false))
        .expect("an event was refused");
    let key = seen[event].0.key().to_string();
    assert!(
        seen[event + 1..]
            .iter()
            .any(|(r, v)| *v == Verdict::Forward && r.key() == key),
        "{key} written again after the 409"
    );
    let events = s3_events(&name, prefix);
    for (step, kind) in [
        ("build", "succeeded"),
        ("hold", "started"),
        ("hold", "succeeded"),
    ] {
        assert!(
            events
                .iter()
                .any(|e| e["step"] == step && e["event"].get(kind).is_some()),
            "{step} {kind} on S3: {events:#?}"
        );
    }
    let out = a.run(&["audit", "verify"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

/// A's clock two minutes behind (`CUTOVER_CLOCK_OFFSET_SECS`, the lock's "now"): its lock's
/// times look two minutes old, but staleness is S3's to say, so B neither takes the lock nor
/// unlocks it, before or after a whole lease, and A's step ends as it should.
#[test]
fn a_clock_two_minutes_behind_does_not_make_a_live_lock_stale() {
    let name = bucket("cutover-team-skew");
    let prefix = "gengar/skew";
    let state = format!("s3://{name}/{prefix}");
    let a = machine(&state);
    let b = machine(&state);
    let lease = [("CUTOVER_S3_LEASE_SECS", "3")];
    assert_eq!(code(&a.run(&["run", "build"])), 0);
    let driver = a
        .command(&["run", "hold", "--var", "hold=12"])
        .envs(lease)
        .env("CUTOVER_CLOCK_OFFSET_SECS", "-120")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait::until("A's step running", Duration::from_secs(30), || {
        s3_has_event(&name, prefix, "hold", "started")
    });
    for round in 0..2 {
        let out = b.command(&["run", "build"]).envs(lease).output().unwrap();
        assert_eq!(code(&out), 3, "round {round}: {}", text(&out));
        assert!(
            text(&out).contains("holds the S3 lock") && !text(&out).contains("stale"),
            "round {round}: {}",
            text(&out)
        );
        let id = lock_id_in(&text(&out)).unwrap();
        let out = b.command(&["unlock", &id]).envs(lease).output().unwrap();
        assert_eq!(code(&out), 5, "round {round}: {}", text(&out));
        assert!(text(&out).contains("held and alive"), "{}", text(&out));
        // Past a whole lease: still alive.
        std::thread::sleep(Duration::from_secs(4));
    }
    let out = driver.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let events = s3_events(&name, prefix);
    let actor_b = format!("op@{}", b.path().display());
    assert!(
        events.iter().all(|e| e["actor"] != actor_b.as_str()),
        "B wrote nothing: {events:#?}"
    );
    assert!(s3_has_event(&name, prefix, "hold", "succeeded"));
    let out = b.run(&["audit", "verify"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

const TALK: &str = r#"
[[phase.step]]
id = "talk"
do = "shell"
run = "for i in 1 2 3 4 5 6; do echo talk-$i; sleep 0.4; done"

[[phase.step]]
id = "fails"
do = "shell"
run = "echo 'token=not-for-s3' >> \"$CUTOVER_OUTPUT\"; echo failing; exit 3"
"#;

/// S3 refuses every log chunk (500, from the test's proxy: moto cannot be told to) while a
/// step runs: the step's success is in the S3 journal all the same; once S3 takes chunks
/// again the log arrives whole. Only the step logs are ever shipped: never the `.outputs` a
/// failed shell step leaves, nor a copy's `.dump` and `.list` (planted here beside the log:
/// a parallel db.copy leaves them there, and needs PostgreSQL to make them), nor `.tunnel`.
#[test]
fn failed_log_chunks_never_fail_an_event_and_the_log_catches_up() {
    use proxy::{Proxy, Verdict};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let name = bucket("cutover-team-logfail");
    let prefix = "gengar/logfail";
    let state = format!("s3://{name}/{prefix}");
    let refuse = Arc::new(AtomicBool::new(true));
    let proxy = {
        let refuse = refuse.clone();
        Proxy::start(&endpoint(), move |r| {
            if r.is_put() && r.key().contains("/logs/") && refuse.load(Ordering::SeqCst) {
                Verdict::Fail {
                    status: 500,
                    code: "InternalError",
                }
            } else {
                Verdict::Forward
            }
        })
    };
    let a = machine_with(&state, &proxy.url, TALK);
    let b = machine_with(&state, &endpoint(), TALK);
    let out = a.run(&["status"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let mirror = a.path().join(".cutover/s3").join(&name).join(prefix);
    std::fs::create_dir_all(mirror.join("logs/talk")).unwrap();
    for planted in [
        "1.schema.dump",
        "1.schema.rest.list",
        "1.tunnel",
        "1.session.log",
    ] {
        std::fs::write(mirror.join("logs/talk").join(planted), "not a step log\n").unwrap();
    }
    let out = a.run(&["run", "fails"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        mirror.join("logs/fails/1.outputs").is_file(),
        "the failed step's outputs file"
    );

    let mut driver = a
        .command(&["run", "talk"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait::until(
        "talk's success in the S3 journal",
        Duration::from_secs(60),
        || s3_has_event(&name, prefix, "talk", "succeeded"),
    );
    assert!(
        s3_keys(&name, &format!("{prefix}/logs/talk")).is_empty(),
        "no chunk got through while S3 refused them"
    );
    refuse.store(false, Ordering::SeqCst);
    let out = wait_within(&mut driver, Duration::from_secs(90));
    assert!(out.is_some(), "the driver never ended");
    let out = driver.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("not shipped") || text(&out).contains("log"),
        "a warning says the logs are behind: {}",
        text(&out)
    );
    // The log arrives whole, as written on A.
    let local = std::fs::read(mirror.join("logs/talk/1.log")).unwrap();
    wait::until("talk's log on S3", Duration::from_secs(60), || {
        s3_log(&name, prefix, "logs/talk/1.log") == local
    });
    let out = b.run(&["log", "talk"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("talk-6"),
        "{}",
        text(&out)
    );

    let not_logs = |key: &str| {
        [".dump", ".list", ".outputs", ".tunnel", ".session.log"]
            .iter()
            .any(|suffix| key.contains(suffix))
    };
    let shipped: Vec<String> = proxy
        .seen()
        .iter()
        .filter(|(r, _)| r.is_put() && not_logs(r.key()))
        .map(|(r, _)| r.key().to_string())
        .collect();
    assert!(shipped.is_empty(), "never sent: {shipped:?}");
    let held: Vec<String> = s3_keys(&name, prefix)
        .into_iter()
        .filter(|k| not_logs(k))
        .collect();
    assert!(held.is_empty(), "never in the bucket: {held:?}");
    assert!(s3_has_event(&name, prefix, "fails", "failed"));
}

/// An S3 that accepts connections and never answers: a command fails within its timeout
/// (CUTOVER_S3_TIMEOUT_SECS) naming the call — at start (HeadBucket), and in the middle of a
/// run (the event's PutObject, held by the test's proxy).
#[test]
fn a_silent_s3_fails_the_command_within_its_timeout_naming_the_call() {
    use proxy::{Proxy, Verdict};
    let name = bucket("cutover-team-silent");
    let prefix = "gengar/silent";
    let state = format!("s3://{name}/{prefix}");
    let silent = machine_at(&state, &proxy::silent_endpoint());
    let mut status = silent
        .command(&["status"])
        .env("CUTOVER_S3_TIMEOUT_SECS", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_within(&mut status, Duration::from_secs(60)).is_some(),
        "status hung on a silent S3"
    );
    let out = status.wait_with_output().unwrap();
    assert_eq!(code(&out), 6, "{}", text(&out));
    assert!(
        text(&out).contains("HeadBucket") && text(&out).contains("no answer within 3s"),
        "{}",
        text(&out)
    );

    let proxy = Proxy::start(&endpoint(), |r| {
        if r.is_put() && r.key().ends_with("/journal/0000000002.jsonl") {
            Verdict::Hang
        } else {
            Verdict::Forward
        }
    });
    let a = machine_at(&state, &proxy.url);
    let mut run = a
        .command(&["run", "build"])
        .env("CUTOVER_S3_TIMEOUT_SECS", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_within(&mut run, Duration::from_secs(60)).is_some(),
        "run hung on a silent S3"
    );
    let out = run.wait_with_output().unwrap();
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("s3:PutObject")
            && text(&out).contains("journal/0000000002.jsonl")
            && text(&out).contains("no answer within 3s"),
        "{}",
        text(&out)
    );
    let events = s3_events(&name, prefix);
    assert_eq!(events.len(), 1, "only the start is on S3: {events:#?}");
    assert!(events[0]["event"].get("started").is_some(), "{events:#?}");
}

/// Ctrl-C while an S3 call hangs (the event's PutObject held by the test's proxy; the S3
/// timeout left at its default of 30 s): the command ends promptly, as cancelled.
#[test]
fn ctrl_c_during_a_silent_s3_call_ends_the_command_promptly() {
    use proxy::{Proxy, Verdict};
    let name = bucket("cutover-team-ctrlc");
    let prefix = "gengar/ctrlc";
    let proxy = Proxy::start(&endpoint(), |r| {
        if r.is_put() && r.key().ends_with("/journal/0000000002.jsonl") {
            Verdict::Hang
        } else {
            Verdict::Forward
        }
    });
    let a = machine_at(&format!("s3://{name}/{prefix}"), &proxy.url);
    let mut run = a
        .command(&["run", "build"])
        .env_remove("CUTOVER_S3_TIMEOUT_SECS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait::until("the event's PUT held", Duration::from_secs(30), || {
        proxy.seen().iter().any(|(_, v)| *v == Verdict::Hang)
    });
    signal(&run, nix::sys::signal::Signal::SIGINT);
    let interrupted = Instant::now();
    let ended = wait_within(&mut run, Duration::from_secs(60));
    let took = interrupted.elapsed();
    assert!(ended.is_some(), "Ctrl-C did not end the command");
    eprintln!("ended {took:?} after Ctrl-C");
    assert!(took < Duration::from_secs(15), "Ctrl-C took {took:?}");
    let out = run.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{}", text(&out));
    let events = s3_events(&name, prefix);
    assert_eq!(events.len(), 1, "{events:#?}");
}

/// The terminal UI opened where it cannot drive (here: a command a killed driver started
/// still holds this machine's lock) watches and holds nothing: the S3 lock stays free and
/// another machine drives.
#[test]
fn the_terminal_ui_that_only_watches_holds_no_s3_lock() {
    let name = bucket("cutover-team-tuiwatch");
    let prefix = "gengar/tuiwatch";
    let state = format!("s3://{name}/{prefix}");
    let a = machine(&state);
    let b = machine(&state);
    assert_eq!(code(&a.run(&["status"])), 0);
    let lock = a
        .path()
        .join(".cutover/s3")
        .join(&name)
        .join(prefix)
        .join("lock");
    let mut leftover = Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["sleep", "600"])
        .spawn()
        .unwrap();
    wait::until(
        "the leftover holds the lock",
        Duration::from_secs(10),
        || {
            Command::new("flock")
                .args(["-n", "-x"])
                .arg(&lock)
                .arg("true")
                .status()
                .is_ok_and(|s| !s.success())
        },
    );
    let tmux = tmux::TmuxServer::new("s3-tui-watch");
    in_tmux(&a, &state, &tmux, "ui", &format!("{BIN}; sleep 600"));
    tmux.wait_for("ui", "WATCHING", Duration::from_secs(30));
    let out = b.run(&["run", "build"]);
    let _ = leftover.kill();
    let _ = leftover.wait();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let actor_b = format!("op@{}", b.path().display());
    let events = s3_events(&name, prefix);
    assert!(
        events.iter().any(|e| e["step"] == "build"
            && e["event"].get("succeeded").is_some()
            && e["actor"] == actor_b.as_str()),
        "{events:#?}"
    );
}
