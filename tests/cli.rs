//! The headless CLI end to end: the real binary, real processes, a real journal on disk.

mod common;
use common::run::{interrupt, kill_group};
use common::wait::{self, pid_alive, pid_in};
use common::{Project, Runbook, ACTOR, BIN};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The head of most runbooks here: a variable, a secret from the environment and one from a
/// command, one phase.
fn head() -> Runbook {
    Runbook::new("test")
        .var("soak", "1h")
        .secret("TOKEN", r#"{ env = "TEST_TOKEN" }"#)
        .secret(
            "DB",
            r#"{ command = "echo postgres://app:cmd-pa55@db.internal:5432/gengar" }"#,
        )
        .phase("one", Some("Phase one"))
}

fn project(steps: &str) -> Project {
    Project::new(&head().steps(steps))
}

#[test]
fn validate_reports_every_error_with_file_line_and_column() {
    let p = project(
        "[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"echo ${undefined_var}\"\n\n[[phase.step]]\nid = \"b\"\ndo = \"teleport\"\nneeds = [\"a\", \"ghost\"]\n",
    );
    let out = p.run(&["validate"]).expect(2);
    let err = out.stderr();
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

    let bad = Project::with_text("[runbook\nname = 1\n");
    bad.run(&["validate"])
        .expect(2)
        .stderr_has("runbook.toml:1:");

    let ok = project("[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"true\"\n");
    ok.ok(&["validate"]).stdout_has("valid — 1 phases, 1 steps");
}

#[test]
fn bundled_runbook_validates_plans_and_shows_status() {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbook.toml");
    let p = Project::with_text(&std::fs::read_to_string(bundled).unwrap());
    p.ok(&["validate"]);
    let out = p.ok(&["plan"]);
    let plan = out.stdout();
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
    let out = p.ok(&[]);
    assert!(
        out.stdout().starts_with("gengar: Heroku → AWS ECS Fargate"),
        "{}",
        out.text()
    );
    out.stdout_has(" steps done");
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
    // Needs are enforced.
    p.run(&["run", "use"])
        .expect(5)
        .stderr_has("waiting for: make");

    p.ok(&["run", "--next"])
        .stdout_has("building")
        .stderr_has("warn");
    p.ok(&["run", "--next"]).stdout_has("restoring snap-123");
    p.ok(&["run", "--next"]).stdout_has("every step is done");

    let status = p.status();
    assert_eq!(status["progress"]["done"], 2);
    let make = &status["phases"][0]["steps"][0];
    assert_eq!(make["state"], "done");
    assert_eq!(make["actor"], ACTOR);
    assert_eq!(make["outputs"]["snapshot"], "snap-123");

    p.ok(&["log", "make"])
        .stdout_has("building")
        .stdout_has("warn")
        .stdout_has("output snapshot = snap-123");
    p.run(&["log", "make", "--attempt", "7"]).expect(5);
    let mode = std::fs::metadata(p.file(".cutover")).unwrap();
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
    p.run(&["run", "flaky"]).expect(1);
    assert_eq!(p.read("tries.txt").lines().count(), 3);
    let flaky = p.step("flaky");
    assert_eq!(flaky["state"], "failed");
    assert_eq!(flaky["attempts"], 3);
    assert_eq!(flaky["note"], "exit code 3");

    p.run(&["run", "missing"])
        .expect(1)
        .stderr_has("command not found");
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
    let mut child = p.spawn(&["run", "slow"]);
    p.wait_for(".cutover/logs/slow/1.log", "started");
    child.kill().unwrap(); // SIGKILL: no cleanup at all
    child.wait().unwrap();
    let shell_pid = pid_in(&p.file("child.pid"));

    assert_eq!(p.state_of("slow"), "interrupted");
    let status = p.status();
    assert_eq!(
        status["driver"]["driver_gone"], true,
        "the killed driver's command still holds the lock: {status}"
    );
    p.ok(&["audit", "verify"]).stdout_has("verified — 1 lines");

    // The killed driver's shell (still sleeping) inherited the kernel lock: nobody drives
    // while it runs, and no `unlock` can take the lock from it.
    p.run(&["run", "slow"])
        .expect(3)
        .stderr_has("driver started and that still runs");
    let lock_id = status["driver"]["lock_id"].as_str().unwrap().to_string();
    p.run(&["unlock", &lock_id]).expect(3);
    // Once it ends, the next driver starts at once: no unlock.
    kill_group(shell_pid);
    wait_for_no_driver(&p);

    // The operator can mark it done with a note instead of re-running it.
    p.ok(&[
        "mark",
        "slow",
        "done",
        "--note",
        "checked by hand: it had finished",
    ]);
    assert_eq!(p.state_of("slow"), "done");
    p.ok(&["audit", "verify"]);
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
    let mut first = p.spawn(&["run", "hold"]);
    p.wait_for(".cutover/logs/hold/1.log", "holding");
    p.run_with(&["run", "other"], &[("CUTOVER_ACTOR", "bo@desk")])
        .expect(3)
        .stderr_has("another driver holds the lock: ana@laptop")
        .stderr_has(&format!("pid {}", first.id()))
        .stderr_has("cutover run hold");
    // Read-only commands still work and show who drives.
    assert_eq!(p.state_of("hold"), "running");
    assert_eq!(p.status()["driver"]["holder"], ACTOR);

    // Ctrl-C cancels the running step, kills its process group and records it.
    interrupt(first.id());
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(p.state_of("hold"), "failed");
    assert!(p.journal().contains("\"reason\":\"cancelled\""));
    assert!(
        p.status()["driver"].is_null(),
        "the lock is released on exit"
    );
    p.ok(&["run", "other"]);
}

/// Waits until nobody holds the lock (a killed driver's shell, once killed, lets go of it).
fn wait_for_no_driver(p: &Project) {
    wait::until(
        "the lock to be released (it outlived the shell)",
        Duration::from_secs(10),
        || p.status()["driver"].is_null(),
    );
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
        p.write("release", "");
        assert_eq!(winner.wait().unwrap().code(), Some(0), "round {round}");
    }
    p.ok(&["audit", "verify"]);
    let mut seqs: Vec<u64> = p
        .journal()
        .values()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    let count = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), count, "no sequence number twice");
    assert_eq!(p.step("gate")["attempts"], 100);
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
    p.run(&["run", "hang"])
        .expect(1)
        .stderr_has("timed out after 1s");
    let bg = pid_in(&p.file("bg.pid"));
    assert!(
        wait::gone(bg, Duration::from_secs(5)),
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
    out.expect(1).stderr_has("timed out after 1s");
    assert!(
        took < Duration::from_secs(5),
        "1 s timeout + 2 s to stop, took {took:?}"
    );
    let bg = pid_in(&p.file("bg.pid"));
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
        .run_with(&["run", "leaky"], &[("TEST_TOKEN", "tok-XYZZY-987")])
        .expect(1);
    let all = format!(
        "{}{}{}{}{}",
        out.stdout(),
        out.stderr(),
        p.journal(),
        p.read(".cutover/logs/leaky/1.log"),
        p.run(&["plan"]).stdout(),
    );
    for secret in ["tok-XYZZY-987", "inline-pa55", "cmd-pa55"] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
    assert!(all.contains("postgres://admin:***@host/db"), "{all}");
    assert!(all.contains("token=***"), "{all}");

    p.run(&["run", "leaky"])
        .expect(1)
        .stderr_has("environment variable TEST_TOKEN is not set");
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
    p.run(&["run", "drop"])
        .expect(5)
        .stderr_has("--confirm \"drop 1h database\"")
        .stderr_has("Rollback: restore the snapshot");
    p.run(&["run", "drop", "--confirm", "yes"])
        .expect(5)
        .stderr_has("Only 'drop 1h database' will be accepted.");
    assert!(!p.file("dropped.txt").exists(), "nothing ran");
    assert!(!p.journal().contains("confirmed"));
    p.ok(&["run", "--next", "--confirm", "drop 1h database"]);
    assert!(p.file("dropped.txt").exists());
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
    p.run(&["run", "by-hand"])
        .expect(5)
        .stderr_has("Update the Stripe webhook")
        .stderr_has("[ ] OAuth");
    p.ok(&["run", "by-hand", "--note", "done in the dashboard"]);
    assert_eq!(p.state_of("later"), "gated");
    p.run(&["run", "later"])
        .expect(5)
        .stderr_has("left of the wait after `by-hand`");
    p.ok(&["run", "later", "--var", "soak=0s"]);

    // Editing what a done step does makes it `changed`; --next will not pass over it silently.
    let edited = p
        .read("runbook.toml")
        .replace("echo decommissioned", "echo other");
    p.write("runbook.toml", edited);
    assert_eq!(p.state_of("later"), "changed");
    assert_eq!(p.state_of("by-hand"), "done");
    p.ok(&[
        "mark",
        "later",
        "pending",
        "--note",
        "redo with the new command",
    ]);
    assert_eq!(p.state_of("later"), "gated");
    p.run(&["mark", "later", "skipped", "--note", ""]).expect(5);
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
    p.ok(&["run", "health"])
        .stderr_has("attempt 1: got 503, expected 200")
        .stderr_has("attempt 3: 200");
    server.join().unwrap();
    p.run(&["run", "down"])
        .expect(1)
        .stderr_has("request failed");
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
    p.ok(&["run", "a"]);
    let journal = ".cutover/journal.jsonl";
    let good = p.journal();
    p.write(journal, format!("{good}{{\"seq\":3,\"time\":\"2026"));
    p.ok(&["status"]).stdout_has("cut short by a crash");
    p.ok(&["run", "b"]).stderr_has("cut short");
    p.ok(&["audit", "verify"]);
    assert!(
        p.journal().starts_with(good.as_str()),
        "earlier lines are kept"
    );

    // Edit line 2: verification names line 3, and nothing is driven.
    let tampered = p.journal().replacen("\"attempt\":1", "\"attempt\":5", 1);
    p.write(journal, tampered);
    p.run(&["audit", "verify"])
        .expect(4)
        .stderr_has("line 2 is bad");
    p.run(&["run", "b"]).expect(4);
    p.run(&["status"]).expect(4);
}

#[test]
fn an_unusable_state_directory_is_a_clear_error() {
    let p = project("[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"true\"\n");
    p.write(".cutover", "not a directory");
    p.run(&["run", "a"]).expect(6).stderr_has(".cutover");
    p.run(&["--runbook", "/nonexistent/runbook.toml", "status"])
        .expect(6)
        .stderr_has("cannot read runbook");
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

    /// Its URL, for `AWS_ENDPOINT_URL_PRICING`.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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
    let p = Project::with_text(COST_RUNBOOK);
    p.ok(&["cost"])
        .stdout_has("AWS total                              $61.71")
        .stdout_has("3 public IPv4 addresses")
        .stdout_has("bundled list prices");
    p.run(&["plan"])
        .stdout_has("starts billing about $13.98/month (rds_instance, rds_storage)");

    let bad = Project::with_text(
        &COST_RUNBOOK.replace("region = \"us-east-1\"", "region = \"eu-mars-1\""),
    );
    bad.run(&["cost"])
        .expect(2)
        .stderr_has("no price table for region `eu-mars-1` (known: us-east-1)");
    let bad = Project::with_text(
        &COST_RUNBOOK
            .replace("ecr_gb = 1", "ecr_gb = 1\nrds_clas = \"x\"")
            .replace("\"rds_storage\"]", "\"rds_storge\"]"),
    );
    bad.run(&["validate"])
        .expect(2)
        .stderr_has("unknown key `rds_clas` in [cost.aws]")
        .stderr_has("did you mean `rds_class`?")
        .stderr_has("unknown cost line item `rds_storge`");
}

#[test]
fn live_prices_come_from_the_price_list_api_are_cached_and_fall_back_to_bundled() {
    use std::sync::atomic::Ordering::SeqCst;
    let live = ["cost", "--json", "--live"];
    let stand_in = PricingStandIn::start(false);
    let p = Project::with_text(COST_RUNBOOK).env("AWS_ENDPOINT_URL_PRICING", stand_in.url());
    let out = p.ok(&live);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["source"]["kind"], "live", "{json}");
    assert_eq!(json["source"]["cached"], false);
    // 1 task × (0.5 vCPU × $0.04 (live) + 1 GB × $0.00356 (not listed live: bundled)) × 730 h
    assert!(
        (fargate_of(&json) - (0.5 * 0.04 + 0.00356) * 730.0).abs() < 1e-9,
        "{json}"
    );
    assert!(stand_in.requests.load(SeqCst) >= 10);
    assert!(p.file(".cutover/prices-live.json").exists());

    // Within a day the cache answers, with no call.
    let before = stand_in.requests.load(SeqCst);
    let json: serde_json::Value = serde_json::from_slice(&p.run(&live).stdout).unwrap();
    assert_eq!(json["source"]["cached"], true, "{json}");
    assert_eq!(stand_in.requests.load(SeqCst), before);

    // A failing API: the bundled table, and a warning that says why.
    let failing = PricingStandIn::start(true);
    let p = Project::with_text(COST_RUNBOOK).env("AWS_ENDPOINT_URL_PRICING", failing.url());
    let out = p.ok(&live);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["source"]["kind"], "bundled_after_live_failed",
        "{json}"
    );
    assert!((fargate_of(&json) - (0.5 * 0.03238 + 0.00356) * 730.0).abs() < 1e-9);
    out.stderr_has("live prices failed")
        .stderr_has("GetProducts");
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
    let mut child = p.spawn(&["run", "write"]);
    p.wait_for(".cutover/logs/write/1.log", "started");
    child.kill().unwrap();
    child.wait().unwrap();
    // Its orphaned shell holds the lock until it ends; ended, nothing is left to unlock.
    kill_group(pid_in(&p.file("child.pid")));
    wait_for_no_driver(&p);
    assert_eq!(p.state_of("write"), "interrupted");
    // The effect does not hold: the check says so and the step stays interrupted.
    p.run(&["run", "write", "--check"]).expect(1);
    assert_eq!(p.state_of("write"), "interrupted");
    // It holds: the step is done, by its check, without running again.
    p.write("marker.txt", "");
    p.ok(&["run", "write", "--check"]);
    assert_eq!(p.state_of("write"), "done");
    assert_eq!(
        p.step("write")["attempts"],
        1,
        "the action did not run again"
    );
    assert!(
        p.journal().contains("\"checked\":{\"holds\":true"),
        "{}",
        p.journal()
    );
    p.ok(&["note", "checked the marker by hand", "--step", "write"]);
    assert!(p.journal().contains("checked the marker by hand"));
    p.ok(&["audit", "verify"]);
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
    p.write("rehearsal.toml", "# the rehearsal's\nsoak = \"3s\"\n");
    let state = p.file("elsewhere");
    let state_arg = state.to_str().unwrap();
    p.ok(&[
        "--vars-file",
        "rehearsal.toml",
        "--state-dir",
        state_arg,
        "run",
        "say",
    ])
    .stdout_has("soak is 3s");
    assert!(state.join("journal.jsonl").is_file());
    assert!(!p.file(".cutover").exists(), "nothing beside the runbook");

    // --var wins over the file.
    p.run(&[
        "--vars-file",
        "rehearsal.toml",
        "--var",
        "soak=9s",
        "--state-dir",
        state_arg,
        "run",
        "say",
    ])
    .stdout_has("soak is 9s");

    // The environment does the same (what scripts/rehearse sets).
    let vars_file = p.file("rehearsal.toml");
    let out = p.run_with(
        &["status", "--json"],
        &[
            ("CUTOVER_VARS_FILE", vars_file.to_str().unwrap()),
            ("CUTOVER_STATE_DIR", state_arg),
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["phases"][0]["steps"][0]["attempts"], 2, "{json}");

    // A variable the runbook does not have, or a value that is not a string, is refused.
    p.write("bad.toml", "sok = \"3s\"\n");
    p.run(&["--vars-file", "bad.toml", "status"])
        .expect(2)
        .stderr_has("sok");
    p.write("bad.toml", "soak = [3]\n");
    p.run(&["--vars-file", "bad.toml", "status"])
        .expect(2)
        .stderr_has("`soak` must be a string, number or boolean");
}

/// Values are data: a variable, a step output and a value with quotes and a newline reach the
/// command as the literal text they hold, wherever they stand (bare, in double quotes, in
/// single quotes); none of them is run.
#[test]
fn interpolated_values_reach_bash_as_data_never_as_code() {
    let p = Project::new(
        &head()
            .var("evil", "$(touch PWNED-var)")
            .var("quoted", "it's \"quoted\"\nsecond line")
            .steps(
                r#"
[[phase.step]]
id = "produce"
do = "shell"
run = "printf 'value=x; touch PWNED-output\n' >> \"$CUTOVER_OUTPUT\""
outputs = ["value"]

[[phase.step]]
id = "use"
do = "shell"
run = "printf '%s|' ${evil} \"${quoted}\" '${steps.produce.outputs.value}' ${steps.produce.outputs.value} > got.txt"
needs = ["produce"]
"#,
            ),
    );
    p.ok(&["run", "produce"]);
    // The plan shows the command as it runs.
    p.run(&["plan"]).stdout_has(r#"$ printf '%s|' "${CUTOVER_VAR_evil}" "${CUTOVER_VAR_quoted}" ''"${CUTOVER_OUT_produce_value}"'' "${CUTOVER_OUT_produce_value}" > got.txt"#);
    p.ok(&["run", "use"]);
    assert_eq!(
        p.read("got.txt"),
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
    let secret = "tok-on-no-argv-4471";
    let p = project(
        r#"
[[phase.step]]
id = "uses"
do = "shell"
run = "echo started; sleep 2; test -n ${secret.TOKEN} && echo has-it"
"#,
    )
    .env("TEST_TOKEN", secret);
    let mut child = p.spawn(&["run", "uses"]);
    p.wait_for(".cutover/logs/uses/1.log", "started");
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
    p.run(&["log", "uses"]).stdout_has("has-it");
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
    p.ok(&["note", "rotated the key, old token=abc"]);
    p.ok(&["note", "--step", "one", "password=hunter2&next=1 done"]);
    p.ok(&["run", "one"]);
    let journal = p.journal();
    assert!(
        !journal.contains("abc\"") && !journal.contains("hunter2"),
        "{journal}"
    );
    assert!(journal.contains("token=***"), "{journal}");
    // Every line parses.
    journal.values();
    p.ok(&["audit", "verify"]);
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
    let mut child = p.spawn(&["run", "preflight"]);
    p.wait_for(".cutover/journal.jsonl", "\"started\"");
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    interrupt(child.id());
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
    let mut program = 0;
    wait::until(
        "the guard to start its program",
        Duration::from_secs(10),
        || {
            let children = std::fs::read_to_string(format!("/proc/{guard}/task/{guard}/children"))
                .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                program = pid.parse::<i32>().unwrap();
            }
            program != 0
        },
    );
    assert!(pid_alive(program));
    parent.kill().unwrap();
    let _ = parent.wait();
    assert!(
        wait::gone(program, Duration::from_secs(5)),
        "the program outlived its guard's parent"
    );
    assert!(
        wait::gone(guard, Duration::from_secs(5)),
        "the guard outlived its parent"
    );
}

/// A window (the write freeze) opens when its first step is done and stays open across a
/// killed driver, from the same moment; `plan --window` predicts it; `report` writes the
/// migration down with the journal's final hash.
#[test]
fn a_window_survives_a_killed_driver_and_the_report_records_it() {
    let p = Project::new(
        &head()
            .table("[[window]]\nname = \"freeze\"\nfrom = \"freeze-on\"\nto = \"open-up\"")
            .steps(
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
"#,
            ),
    );
    let window = |p: &Project| p.status()["windows"][0].clone();
    assert_eq!(window(&p)["state"], "pending");
    p.ok(&["run", "freeze-on"]);
    let opened = window(&p)["opened"].as_str().unwrap().to_string();
    assert_eq!(window(&p)["state"], "open");
    // The prediction made as it opened is in the journal.
    assert!(p.journal().contains("window_prediction"), "{}", p.journal());

    let mut driver = p.spawn(&["run", "work"]);
    wait::until("work to run", Duration::from_secs(20), || {
        p.state_of("work") == "running"
    });
    driver.kill().unwrap();
    let _ = driver.wait();
    // Resumed: still open, since the same moment.
    let w = window(&p);
    assert_eq!(w["state"], "open", "{w:#}");
    assert_eq!(w["opened"], opened.as_str());
    p.ok(&["plan", "--window", "freeze"])
        .stdout_has("window `freeze`: from the end of `freeze-on` to the end of `open-up`")
        .stdout_has("open for")
        .stdout_has("  work ")
        .stdout_has("  open-up ");
    p.run(&["plan", "--window", "nope"])
        .expect(2)
        .says("the runbook's: freeze");

    p.write("go", "");
    // Wait for the killed driver's `sleep` (it holds the lock until it ends).
    let start = Instant::now();
    loop {
        let out = p.run(&["run", "work"]);
        if out.code() == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "{}", out.text());
        std::thread::sleep(Duration::from_millis(200));
    }
    p.ok(&["run", "open-up"]);
    let w = window(&p);
    assert_eq!(w["state"], "closed", "{w:#}");
    assert!(w["measured_secs"].as_f64().unwrap() > 0.0, "{w:#}");
    assert!(
        w["steps"]["work"]["actual_secs"].as_f64().is_some(),
        "{w:#}"
    );

    let report = p.ok(&["report", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for step in steps {
        assert_eq!(step["state"], "done", "{step:#}");
        assert_eq!(step["actor"], ACTOR, "{step:#}");
        assert!(step["took_secs"].as_f64().is_some(), "{step:#}");
    }
    let hash = report["journal"]["final_hash"].as_str().unwrap();
    p.run(&["audit", "verify"])
        .stdout_has(&format!("last hash {hash}"));
    assert_eq!(report["windows"][0]["state"], "closed");
    p.run(&["report"])
        .stdout_has(&format!("final hash `{hash}`"))
        .stdout_has("## Window: freeze")
        .stdout_has("| work | done | ana@laptop |");
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
    p.ok(&["run", "freeze", "--confirm", "freeze it"]);
    for step in ["point", "smoke", "by-hand"] {
        let out = p.run(&["run", step]);
        assert_eq!(out.code(), 0, "{step}: {}", out.text());
    }

    // Not without a reason, not while steps done after it rely on it.
    p.run(&["rollback", "freeze", "--note", " "])
        .expect(5)
        .says("a note is required");
    // The chain, last done first (smoke has nothing to undo).
    p.run(&["rollback", "freeze", "--note", "the app fails on AWS"])
        .expect(5)
        .says("point → freeze")
        .says("--only");
    // A rollback by hand is said, not run.
    p.run(&["rollback", "by-hand", "--note", "x"])
        .expect(5)
        .says("by hand: call the vendor");

    // One step: its phrase missing (exit 5, what it will do), wrong (exit 5), then right.
    p.run(&["rollback", "point", "--note", "back to heroku"])
        .expect(5)
        .says("--confirm \"roll back point\"")
        .says("The rollback will: $ echo point >> undone.txt");
    p.run(&[
        "rollback",
        "point",
        "--note",
        "back to heroku",
        "--confirm",
        "roll back freeze",
    ])
    .expect(5)
    .says("Only 'roll back point' will be accepted");
    assert!(!p.file("undone.txt").exists(), "nothing ran");
    assert!(!p.journal().contains("rollback"));

    // The chain: without every phrase nothing runs; with them, in order.
    p.run(&[
        "rollback",
        "freeze",
        "--chain",
        "--note",
        "the app fails on AWS",
    ])
    .expect(5)
    .says("1. point")
    .says("2. freeze");
    assert!(!p.file("undone.txt").exists(), "nothing ran");
    p.ok(&[
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
    assert_eq!(p.read("undone.txt"), "point\nfreeze\n");
    assert_eq!(p.read("record.txt"), "heroku\n");
    assert!(!p.file("freeze.txt").exists());
    assert_eq!(p.state_of("freeze"), "rolled back");
    assert_eq!(p.state_of("point"), "rolled back");
    // Done before what it relied on was undone: never silently "done".
    assert_eq!(p.state_of("smoke"), "needs re-run");
    assert_eq!(p.state_of("by-hand"), "done");
    let journal = p.journal();
    let rolled_back = journal.lines_of("rolled_back");
    let rolled: Vec<(&str, &str)> = rolled_back
        .iter()
        .map(|l| {
            (
                l["step"].as_str().unwrap(),
                l["event"]["rolled_back"]["note"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rolled,
        [
            ("point", "the app fails on AWS"),
            ("freeze", "the app fails on AWS")
        ]
    );
    assert!(journal
        .lines_of("rollback_started")
        .iter()
        .all(|l| l["actor"] == ACTOR));
    p.ok(&["audit", "verify"]);

    // Again, as fresh attempts; the dependant runs again too.
    p.ok(&["run", "freeze", "--confirm", "freeze it"]);
    assert_eq!(p.state_of("point"), "rolled back");
    assert_eq!(p.state_of("smoke"), "needs re-run");
    // After what it needs.
    p.run(&["run", "smoke"]).expect(5);
    for step in ["point", "smoke"] {
        let out = p.run(&["run", step]);
        assert_eq!(out.code(), 0, "{step}: {}", out.text());
    }
    assert_eq!(p.state_of("smoke"), "done");
    assert!(p
        .journal()
        .contains("\"attempt\":2,\"log\":\"logs/freeze/2.log\""));
    // Only this step, although a done step relies on it: said, and allowed with --only.
    p.ok(&[
        "rollback",
        "freeze",
        "--only",
        "--note",
        "insisting",
        "--confirm",
        "roll back freeze",
    ]);
    assert_eq!(p.state_of("point"), "needs re-run");
}

/// `only_if`: a step whose condition is false when its turn comes is journaled skipped with
/// the value and the condition, runs nothing, and the steps that need it proceed; true, it
/// runs. `plan` shows the condition; validate refuses one that reads no step output.
#[test]
fn a_step_with_only_if_runs_only_when_its_value_says_so() {
    let steps = |code: &str| {
        format!(
            r#"
[[phase.step]]
id = "pending"
do = "shell"
run = "echo exit_code={code} >> $CUTOVER_OUTPUT"
outputs = ["exit_code"]

[[phase.step]]
id = "migrate"
do = "shell"
run = "echo migrated > migrated.txt"
needs = ["pending"]
destructive = true
confirm = "migrate now"
only_if = {{ value = "${{steps.pending.outputs.exit_code}}", equals = "1", why = "a migration is pending" }}

[[phase.step]]
id = "after"
do = "shell"
run = "echo after > after.txt"
needs = ["migrate"]
"#
        )
    };
    let p = project(&steps("0"));
    p.ok(&["plan"]).stdout_has(
        "only if: runs only when pending's exit_code is 1 (a migration is pending) — not known yet",
    );
    // Its needs still come first.
    p.run(&["run", "migrate"])
        .expect(5)
        .stderr_has("waiting for: pending");
    p.ok(&["run", "--next"]);
    p.ok(&["plan"])
        .stdout_has("(a migration is pending) — now 0: it will be skipped");
    // Skipped before anything is asked: no phrase needed for what will not run.
    p.ok(&["run", "--next"]).stderr_has(
        "not needed: pending's exit_code is 0; runs only when 1 (a migration is pending)",
    );
    assert!(!p.file("migrated.txt").exists(), "the skipped step ran");
    assert_eq!(p.state_of("migrate"), "skipped");
    p.ok(&[])
        .stdout_has("(not needed: pending's exit_code is 0; runs only when 1");
    let skipped = p.journal().events("migrate", "skipped");
    assert_eq!(skipped.len(), 1, "{}", p.journal().as_str());
    assert_eq!(
        skipped[0]["note"],
        "not needed: pending's exit_code is 0; runs only when 1 (a migration is pending)"
    );
    assert!(p.journal().events("migrate", "started").is_empty());
    // What needs it proceeds.
    p.ok(&["run", "--next"]);
    assert_eq!(p.read("after.txt").trim(), "after");
    assert_eq!(p.state_of("after"), "done");

    // The value says so: it runs, by id as by --next.
    let p = project(&steps("1"));
    p.ok(&["run", "pending"]);
    p.run(&["run", "migrate"])
        .expect(5)
        .stderr_has("--confirm \"migrate now\"");
    assert!(!p.file("migrated.txt").exists(), "nothing ran unconfirmed");
    p.ok(&["run", "migrate", "--confirm", "migrate now"]);
    assert_eq!(p.read("migrated.txt").trim(), "migrated");
    assert_eq!(p.state_of("migrate"), "done");

    // A condition must read an output of a step it needs.
    let bad = project(
        "[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"true\"\nonly_if = { value = \"${soak}\", equals = \"1h\" }\n",
    );
    bad.run(&["validate"])
        .expect(2)
        .stderr_has("`only_if` of step `a` reads no step output");
    let unneeded = project(
        "[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"true\"\noutputs = [\"x\"]\n\n[[phase.step]]\nid = \"b\"\ndo = \"shell\"\nrun = \"true\"\nonly_if = { value = \"${steps.a.outputs.x}\", equals = \"1\" }\n",
    );
    unneeded
        .run(&["validate"])
        .expect(2)
        .stderr_has("step `b` uses an output of `a` but does not need it");
}

/// `refuse_after`: once the named step is done, the step may not run again (a copy or a
/// catch-up after the cutover would overwrite the users' writes) — refused before its phrase,
/// naming the step, when and by whom; once that step is rolled back, it may. `validate` names
/// an unknown step.
#[test]
fn a_step_refused_after_another_is_done_runs_again_once_that_one_is_rolled_back() {
    let p = project(
        r#"
[[phase.step]]
id = "copy"
do = "shell"
run = "echo copied >> copies.txt"
destructive = true
confirm = "copy"
refuse_after = "cutover"

[[phase.step]]
id = "cutover"
do = "shell"
run = "echo cut > cut.txt"
rollback = { do = "shell", run = "rm -f cut.txt" }
needs = ["copy"]
"#,
    );
    p.ok(&["run", "copy", "--confirm", "copy"]);
    // Again before the cutover: allowed.
    p.ok(&["run", "copy", "--confirm", "copy"]);
    p.ok(&["run", "cutover"]);
    p.run(&["run", "copy", "--confirm", "copy"])
        .expect(5)
        .stderr_has("step `copy` may not run now: `cutover` was done at ")
        .stderr_has("roll `cutover` back first");
    assert_eq!(
        p.read("copies.txt").lines().count(),
        2,
        "the refused copy ran"
    );
    p.ok(&[
        "rollback",
        "cutover",
        "--note",
        "back",
        "--only",
        "--confirm",
        "roll back cutover",
    ]);
    p.ok(&["run", "copy", "--confirm", "copy"]);
    assert_eq!(p.read("copies.txt").lines().count(), 3);

    let bad = project(
        "[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"true\"\nrefuse_after = \"ghost\"\n",
    );
    bad.run(&["validate"])
        .expect(2)
        .stderr_has("`refuse_after` of step `a` names unknown step `ghost`");
}

/// A journal as cutover writes it (each line chained to the one before by its sha256), of
/// runs that each started and succeeded at the given times: the durations a test needs
/// without waiting them out.
fn journal_of(runs: &[(&str, &str, &str)]) -> String {
    use sha2::Digest;
    let mut out = String::new();
    let mut prev = "0".repeat(64);
    let mut seq = 0;
    for (step, start, end) in runs {
        for (time, event) in [
            (
                start,
                serde_json::json!({"started": {"attempt": 1, "log": format!("logs/{step}/1.log")}}),
            ),
            (end, serde_json::json!({"succeeded": {"attempt": 1}})),
        ] {
            seq += 1;
            let line = serde_json::json!({
                "seq": seq,
                "time": time,
                "actor": ACTOR,
                "runbook": "0000000000000000",
                "step": step,
                "step_digest": "0000000000000000",
                "event": event,
                "prev": prev,
            })
            .to_string();
            prev = format!("{:x}", sha2::Sha256::digest(line.as_bytes()));
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// The prediction on the real day: this migration's own first deployment (150 s on AWS)
/// predicts the freeze's deployment, not the rehearsal's 2 s, which is shown as no evidence.
#[test]
fn the_freeze_is_predicted_from_this_migrations_aws_not_the_rehearsals() {
    let p = Project::new(
        &head()
            .table("[[window]]\nname = \"freeze\"\nfrom = \"maintenance-on\"\nto = \"dns-cutover\"")
            .steps(
                r#"
[[phase.step]]
id = "first-deploy"
do = "elb.health"
target_group = "tg"

[[phase.step]]
id = "maintenance-on"
do = "shell"
run = "true"
needs = ["first-deploy"]

[[phase.step]]
id = "deploy"
do = "ecs.deploy"
cluster = "c"
service = "s"
needs = ["maintenance-on"]

[[phase.step]]
id = "dns-cutover"
do = "shell"
run = "true"
needs = ["deploy"]
"#,
            ),
    );
    p.write(
        "rehearsal.jsonl",
        journal_of(&[
            (
                "first-deploy",
                "2026-11-01T10:00:00.000Z",
                "2026-11-01T10:00:01.000Z",
            ),
            (
                "deploy",
                "2026-11-01T10:02:00.000Z",
                "2026-11-01T10:02:02.000Z",
            ),
        ]),
    );
    let plan = |p: &Project| {
        p.ok(&["plan", "--window", "freeze", "--history", "rehearsal.jsonl"])
            .stdout()
    };
    // Nothing measured on AWS yet: the rehearsal's figure, labelled.
    let before = plan(&p);
    assert!(
        before.contains(
            "  2.0s  the rehearsal's 2.0s: emulated, not evidence — no deployment measured on AWS yet"
        ),
        "{before}"
    );
    // The first deployment on AWS took 150 s.
    p.write(
        ".cutover/journal.jsonl",
        journal_of(&[(
            "first-deploy",
            "2026-11-20T09:00:00.000Z",
            "2026-11-20T09:02:30.000Z",
        )]),
    );
    let after = plan(&p);
    assert!(
        after.contains(
            "2m 30s  this migration's own `first-deploy` (deployment: the same machinery on the same resources, measured on AWS) (the rehearsal's 2.0s: emulated, not evidence)"
        ),
        "{after}"
    );
}

/// A rollback's `first` actions run in order after the phrase and before its own action; the
/// first that fails ends the rollback there, failed, naming it — its own action not run — and
/// the rollback run again runs them all again.
#[test]
fn a_rollbacks_first_actions_run_in_order_and_one_failing_stops_it_before_its_own() {
    let p = project(
        r#"
[[phase.step]]
id = "cutover"
do = "shell"
run = "echo cut > cut.txt"
rollback = { do = "shell", run = "rm cut.txt && echo back >> order.txt", first = [{ do = "shell", run = "echo stop-writes >> order.txt" }, { do = "shell", run = "test -e drained || { echo 'backlog left' >&2; exit 3; }; echo drain >> order.txt" }] }
"#,
    );
    p.ok(&["run", "cutover"]);
    let undo = ["rollback", "cutover", "--note", "the new side fails"];
    // Before the phrase: every part, in order.
    let asked = p.run(&undo).expect(5);
    asked
        .says("The rollback will: ")
        .says("  1. ")
        .says("  2. ")
        .says("  3. ");
    let mut confirmed = undo.to_vec();
    confirmed.extend(["--confirm", "roll back cutover"]);
    p.run(&confirmed)
        .expect(1)
        .says("before the rollback itself, shell (step 2 of 3) failed")
        .says("nothing after it ran; done before it, and left so: 1. shell");
    assert_eq!(p.read("order.txt"), "stop-writes\n");
    assert!(p.file("cut.txt").exists(), "its own action did not run");
    let failed = p.journal().events("cutover", "rollback_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");

    p.write("drained", "");
    p.ok(&confirmed);
    assert_eq!(
        p.read("order.txt"),
        "stop-writes\nstop-writes\ndrain\nback\n",
        "run again, every part again, in order"
    );
    assert!(!p.file("cut.txt").exists());
    assert_eq!(p.journal().events("cutover", "rolled_back").len(), 1);

    let bad = project(
        "[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"true\"\nrollback = { do = \"shell\", run = \"true\", first = { do = \"shell\", run = \"true\" } }\n\n[[phase.step]]\nid = \"b\"\ndo = \"shell\"\nrun = \"true\"\nrollback = { do = \"shell\", run = \"true\", first = [{ do = \"shell\", run = \"true\", via = \"b\" }] }\n",
    );
    bad.run(&["validate"])
        .expect(2)
        .stderr_has("`first` must be a list of actions")
        .stderr_has(
            "`via` of the rollback's `first` action of step `b` must name an `aws.tunnel` step",
        );
}

/// Heroku's baseline from its router's lines (tests/fixtures/heroku-router.log: app and
/// platform lines, an H12 timeout, a 500, the router's own H80, a drain's syslog line in
/// another offset, a line cut off), read from a drain's file and through `heroku logs` (a
/// stand-in printing the same file: the Heroku CLI cannot run here), against a hand
/// computation. Nearest rank: the p-th percentile of n sorted values is the value of rank
/// ⌈p·n/100⌉.
#[test]
fn heroku_baseline_records_the_routers_traffic_per_minute() {
    let log = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/heroku-router.log"),
    )
    .unwrap();
    let p = project(
        r#"
[[phase.step]]
id = "from-drain"
do = "heroku.baseline"
app = "gengar-api"
log_file = "drain.log"
min_requests = 5

[[phase.step]]
id = "from-cli"
do = "heroku.baseline"
app = "gengar-api"
min_requests = 5

[[phase.step]]
id = "too-few"
do = "heroku.baseline"
app = "gengar-api"
log_file = "drain.log"
"#,
    );
    p.write("drain.log", &log);
    p.write("heroku.log", &log);
    p.write_script(
        "bin/heroku",
        "#!/bin/sh\n[ \"$*\" = \"logs --num 1500 -a gengar-api\" ] || { echo \"unexpected: $*\" >&2; exit 2; }\ncat heroku.log\n",
    );
    let path = format!(
        "{}:{}",
        p.file("bin").display(),
        std::env::var("PATH").unwrap()
    );
    p.ok(&["run", "from-drain"])
        .says("8 requests over 2 minute(s), 2 server errors (250.0 per 1,000), service time p50 20 ms · p95 30000 ms · p99 30000 ms")
        .says("1 router line(s) without a time or a status were left out");
    p.run_with(&["run", "from-cli"], &[("PATH", &path)]).ok();
    for id in ["from-drain", "from-cli"] {
        let outputs = &p.step(id)["outputs"];
        // 10:00: 10, 20, 30, 40 and the H12's 30000 ms (503): p50 rank 3, p95 and p99 rank 5.
        // 10:01: 5, the 500's 15, the drain's 25 ms (10:01:45 UTC); H80's 503 (maintenance
        // mode, the operator's answer, not the app's) is left out.
        let buckets: serde_json::Value =
            serde_json::from_str(outputs["buckets"].as_str().unwrap()).unwrap();
        assert_eq!(
            buckets,
            serde_json::json!([
                {"minute": 1_796_292_000u64, "requests": 5, "errors": 1, "p50_ms": 30, "p95_ms": 30000, "p99_ms": 30000},
                {"minute": 1_796_292_060u64, "requests": 3, "errors": 1, "p50_ms": 15, "p95_ms": 25, "p99_ms": 25}
            ]),
            "{id}"
        );
        // All 8 times: 5 10 15 20 25 30 40 30000 → p50 rank 4, p95 and p99 rank 8.
        for (name, value) in [
            ("requests", "8"),
            ("errors", "2"),
            ("errors_per_1000", "250.00"),
            ("p50_ms", "20"),
            ("p95_ms", "30000"),
            ("p99_ms", "30000"),
            ("from", "2026-12-03T10:00:00Z"),
            ("to", "2026-12-03T10:01:00Z"),
            ("minutes", "2"),
        ] {
            assert_eq!(outputs[name], value, "{id}: {name}");
        }
    }
    // A query string's token in a router line reaches no log of cutover's.
    let logs = p.ok(&["log", "from-drain"]);
    assert!(!logs.text().contains("not-in-any-log"), "{}", logs.text());
    // Too few requests is no baseline: named, and the step fails.
    let failed = p.run(&["run", "too-few"]);
    assert_ne!(failed.code(), 0, "{}", failed.text());
    failed.says("only 8 requests in");
    assert_eq!(p.state_of("too-few"), "failed");
}
