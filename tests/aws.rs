//! AWS actions against moto's server: a real AWS API on loopback, started by scripts/test
//! (CUTOVER_TEST_AWS_ENDPOINT). Resources are created through the Rust SDK; each test uses its
//! own names. Outcomes moto cannot produce are unit-tested beside the actions.

mod common;
use common::moto::{endpoint, Moto, ACCOUNT};
use common::run::path_with;
use common::{Project, Runbook};
#[path = "common/proxy.rs"]
mod proxy;
#[path = "common/tmux.rs"]
mod tmux;
use proxy::{Proxy, Verdict};

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A runbook for moto's account in us-east-1 at `endpoint` (moto, or a proxy in front of it),
/// with the given steps.
fn runbook(endpoint: &str, steps: &str) -> Runbook {
    Runbook::new("aws")
        .aws(endpoint)
        .account(ACCOUNT)
        .phase("aws", None)
        .steps(steps)
}

/// A project whose runbook reaches moto at `endpoint`.
fn project_at(endpoint: &str, steps: &str) -> Project {
    Project::new(&runbook(endpoint, steps))
}

/// A project whose runbook reaches moto.
fn project(steps: &str) -> Project {
    project_at(&endpoint(), steps)
}

#[test]
fn the_account_guard_passes_the_runbook_account_and_refuses_another() {
    let step = "[[phase.step]]\nid = \"who\"\ndo = \"aws.identity\"\n";
    let p = project(step);
    p.ok(&["run", "who"]);
    assert!(
        p.journal().contains(&format!("\"account\":\"{ACCOUNT}\"")),
        "{}",
        p.journal()
    );

    let wrong = Project::new(&runbook(&endpoint(), step).account("999999999999"));
    wrong.run(&["run", "who"]).expect(1).stderr_has(
        "wrong AWS account: the runbook is for 999999999999, the credentials in use are for 123456789012",
    );

    // An endpoint nobody answers: a failed step with a hint; fixed, the same step runs.
    let down = project_at("http://127.0.0.1:9", step);
    down.run(&["run", "who"])
        .expect(1)
        .stderr_has("cannot reach the AWS endpoint");
    down.ok(&["run", "who", "--endpoint-url", &endpoint()]);
}

/// A cluster, a task definition logging to CloudWatch, and a service in the default VPC.
fn ecs_fixture(aws: &Moto, name: &str) -> (aws_sdk_ecs::Client, aws_sdk_cloudwatchlogs::Client) {
    use aws_sdk_ecs::types::{
        Compatibility, ContainerDefinition, LogConfiguration, LogDriver, NetworkMode,
    };
    let ec2 = aws_sdk_ec2::Client::new(&aws.config);
    let ecs = aws_sdk_ecs::Client::new(&aws.config);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&aws.config);
    aws.block_on(async {
        let subnets: Vec<String> = ec2
            .describe_subnets()
            .send()
            .await
            .unwrap()
            .subnets()
            .iter()
            .filter_map(|s| s.subnet_id().map(str::to_string))
            .take(2)
            .collect();
        let group = ec2
            .describe_security_groups()
            .send()
            .await
            .unwrap()
            .security_groups()[0]
            .group_id()
            .unwrap()
            .to_string();
        ecs.create_cluster()
            .cluster_name(name)
            .send()
            .await
            .unwrap();
        let log_group = format!("/ecs/{name}");
        let _ = logs
            .create_log_group()
            .log_group_name(&log_group)
            .send()
            .await;
        ecs.register_task_definition()
            .family(name)
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu("512")
            .memory("1024")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("gengar")
                    .image("123456789012.dkr.ecr.us-east-1.amazonaws.com/mentionai/gengar:abc")
                    .memory(1024)
                    .log_configuration(
                        LogConfiguration::builder()
                            .log_driver(LogDriver::Awslogs)
                            .options("awslogs-group", &log_group)
                            .options("awslogs-stream-prefix", "ecs")
                            .options("awslogs-region", "us-east-1")
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        create_service(&ecs, name, subnets, &group).await;
    });
    (ecs, logs)
}

/// A Fargate service `name` of one task of the task definition `name`, in the cluster `name`,
/// in these subnets with this security group and a public IP.
async fn create_service(ecs: &aws_sdk_ecs::Client, name: &str, subnets: Vec<String>, group: &str) {
    use aws_sdk_ecs::types::{AssignPublicIp, AwsVpcConfiguration, NetworkConfiguration};
    ecs.create_service()
        .cluster(name)
        .service_name(name)
        .task_definition(name)
        .desired_count(1)
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(
                    AwsVpcConfiguration::builder()
                        .set_subnets(Some(subnets))
                        .security_groups(group)
                        .assign_public_ip(AssignPublicIp::Enabled)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// Writes `lines` to a new stream of the log group, as a container's log driver does.
async fn put_log_lines(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    lines: &[&str],
) {
    logs.create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut put = logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream);
    for (i, line) in lines.iter().enumerate() {
        put = put.log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now + i as i64)
                .message(*line)
                .build()
                .unwrap(),
        );
    }
    put.send().await.unwrap();
}

/// Plays the container: once the task exists, writes its log lines to its stream.
async fn write_task_log(
    ecs: &aws_sdk_ecs::Client,
    logs: &aws_sdk_cloudwatchlogs::Client,
    cluster: &str,
    lines: &[&str],
) -> String {
    let start = Instant::now();
    let arn = loop {
        let listed = ecs.list_tasks().cluster(cluster).send().await.unwrap();
        if let Some(arn) = listed.task_arns().first() {
            break arn.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no task was started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let id = arn.rsplit('/').next().unwrap().to_string();
    put_log_lines(
        logs,
        &format!("/ecs/{cluster}"),
        &format!("ecs/gengar/{id}"),
        lines,
    )
    .await;
    arn
}

/// How many tasks the cluster has.
fn task_count(aws: &Moto, ecs: &aws_sdk_ecs::Client, cluster: &str) -> usize {
    aws.block_on(async {
        ecs.list_tasks()
            .cluster(cluster)
            .send()
            .await
            .unwrap()
            .task_arns()
            .len()
    })
}

#[test]
fn run_task_streams_the_container_log_and_reports_the_exit_code() {
    let cluster = "run-task-test";
    let aws = Moto::new();
    let (ecs, logs) = ecs_fixture(&aws, cluster);
    let p = project(&format!(
        "[[phase.step]]\nid = \"migrate\"\ndo = \"ecs.run-task\"\ncluster = \"{cluster}\"\nservice = \"{cluster}\"\ncommand = [\"yarn\", \"migration:run\"]\n"
    ));
    let child = p
        .command(&["run", "migrate"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let arn = aws.block_on(write_task_log(
        &ecs,
        &logs,
        cluster,
        &[
            "Migration 1700000000000-AddVector has been executed",
            "migrations done",
        ],
    ));
    common::Outcome(child.wait_with_output().unwrap())
        .ok()
        .stdout_has("AddVector has been executed")
        .stdout_has("migrations done");
    let journal = p.journal();
    assert!(
        journal.contains(&format!("\"task_arn\":\"{arn}\""))
            && journal.contains("\"exit_code\":\"0\""),
        "{journal}"
    );
    // The task ran with the service's network and the override.
    let task = aws.block_on(async {
        ecs.describe_tasks()
            .cluster(cluster)
            .tasks(&arn)
            .send()
            .await
            .unwrap()
    });
    let overrides = task.tasks()[0].overrides().unwrap().container_overrides()[0]
        .command()
        .to_vec();
    assert_eq!(overrides, vec!["yarn", "migration:run"]);

    // Too large an override is refused before anything starts.
    let huge = "x".repeat(9000);
    let p = project(&format!(
        "[[phase.step]]\nid = \"huge\"\ndo = \"ecs.run-task\"\ncluster = \"{cluster}\"\nservice = \"{cluster}\"\ncommand = [\"echo\", \"{huge}\"]\n"
    ));
    let before = task_count(&aws, &ecs, cluster);
    p.run(&["run", "huge"])
        .expect(1)
        .stderr_has("RunTask accepts at most 8192: nothing was started");
    assert_eq!(task_count(&aws, &ecs, cluster), before);
}

/// `exit_codes`: the codes that count as success. moto's containers always exit 0, so the
/// accepted 1 of `migration:show` is judged in the unit tests beside the action (over SDK
/// values); here a real task: 0 within [0, 1] succeeds and 0 outside [1] fails, and both
/// record the container's code as `exit_code`.
#[test]
fn run_task_accepts_the_listed_exit_codes_and_records_the_code() {
    let cluster = "run-task-codes";
    let aws = Moto::new();
    let (ecs, _) = ecs_fixture(&aws, cluster);
    let step = |id: &str, codes: &str| {
        format!(
            "[[phase.step]]\nid = \"{id}\"\ndo = \"ecs.run-task\"\ncluster = \"{cluster}\"\nservice = \"{cluster}\"\ncommand = [\"yarn\", \"migration:show\"]\nexit_codes = {codes}\n"
        )
    };
    let p = project(&(step("pending", "[0, 1]") + &step("only-one", "[1]") + &step("none", "[]")));
    p.ok(&["run", "pending"])
        .stderr_has("exit code 0 (accepted: 0, 1)");
    let journal = p.journal();
    assert!(journal.contains("\"exit_code\":\"0\""), "{journal}");
    assert_eq!(task_count(&aws, &ecs, cluster), 1);

    p.run(&["run", "only-one"])
        .expect(1)
        .stderr_has("exit code 0, not one of the accepted 1");
    // The failure is on record, and so is the code the container exited with.
    let journal = p.journal();
    assert!(
        journal.contains("exit code 0, not one of the accepted 1")
            && journal.matches("\"exit_code\":\"0\"").count() == 2,
        "{journal}"
    );
    assert_eq!(task_count(&aws, &ecs, cluster), 2);

    // An empty list could never succeed: refused before a task starts.
    p.run(&["run", "none"])
        .expect(1)
        .stderr_has("`exit_codes` is empty");
    assert_eq!(task_count(&aws, &ecs, cluster), 2);
}

#[test]
fn ecs_run_replaces_heroku_run_and_exits_with_the_container_code() {
    let cluster = "ecs-run-test";
    let aws = Moto::new();
    let (ecs, logs) = ecs_fixture(&aws, cluster);
    let p = project("");
    let child = p
        .command(&[
            "ecs-run",
            "--cluster",
            cluster,
            "--service",
            cluster,
            "--",
            "node",
            "dist/src/console.js",
            "generate-embeddings",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    aws.block_on(write_task_log(
        &ecs,
        &logs,
        cluster,
        &["embedded 42 documents"],
    ));
    let started = Instant::now();
    common::Outcome(child.wait_with_output().unwrap())
        .ok()
        .stdout_has("embedded 42 documents");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The task definition the service runs now.
fn service_revision(aws: &Moto, ecs: &aws_sdk_ecs::Client, cluster: &str) -> String {
    aws.block_on(async {
        ecs.describe_services()
            .cluster(cluster)
            .services(cluster)
            .send()
            .await
            .unwrap()
            .services()[0]
            .task_definition()
            .unwrap()
            .to_string()
    })
}

#[test]
fn deploy_succeeds_when_the_deployment_it_started_completes() {
    let cluster = "deploy-test";
    let aws = Moto::new();
    let (ecs, _) = ecs_fixture(&aws, cluster);
    let p = project(&format!(
        "[[phase.step]]\nid = \"deploy\"\ndo = \"ecs.deploy\"\ncluster = \"{cluster}\"\nservice = \"{cluster}\"\nimage = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/mentionai/gengar:def\"\ninterval = \"200ms\"\ndeadline = \"30s\"\n"
    ));
    p.ok(&["run", "deploy"])
        .stderr_has("registered")
        .stderr_has(":2 with image")
        .stderr_has("completed with 1 running");
    assert!(service_revision(&aws, &ecs, cluster).ends_with(&format!("{cluster}:2")));
}

/// An RDS PostgreSQL 16.3 instance `name` as the plan sizes it, to add to and send.
fn postgres_instance(
    rds: &aws_sdk_rds::Client,
    name: &str,
) -> aws_sdk_rds::operation::create_db_instance::builders::CreateDBInstanceFluentBuilder {
    rds.create_db_instance()
        .db_instance_identifier(name)
        .db_instance_class("db.t4g.micro")
        .engine("postgres")
        .engine_version("16.3")
        .allocated_storage(20)
        .master_username("gengar")
        .master_user_password("not-a-real-password")
}

#[test]
fn rds_wait_checks_the_engine_and_snapshot_records_its_id() {
    let aws = Moto::new();
    let rds = aws_sdk_rds::Client::new(&aws.config);
    aws.block_on(async {
        postgres_instance(&rds, "gengar-rds-test")
            .send()
            .await
            .unwrap();
    });
    let p = project(
        "[[phase.step]]\nid = \"wait\"\ndo = \"rds.wait\"\ninstance = \"gengar-rds-test\"\nengine_major = \"16\"\ninterval = \"100ms\"\n\n\
         [[phase.step]]\nid = \"wrong\"\ndo = \"rds.wait\"\ninstance = \"gengar-rds-test\"\nengine_major = \"15\"\n\n\
         [[phase.step]]\nid = \"snap\"\ndo = \"rds.snapshot\"\ninstance = \"gengar-rds-test\"\ninterval = \"100ms\"\n",
    );
    p.ok(&["run", "wait"]);
    assert!(
        p.journal().contains("\"engine_version\":\"16.3\""),
        "{}",
        p.journal()
    );
    p.run(&["run", "wrong"])
        .expect(1)
        .stderr_has("the runbook expects major version 15");
    p.ok(&["run", "snap"]);
    assert!(
        p.journal()
            .contains("\"snapshot_id\":\"gengar-rds-test-snap-"),
        "{}",
        p.journal()
    );
}

/// The parameter `name` as SSM holds it (decrypted), if it exists.
fn parameter(aws: &Moto, name: &str) -> Option<aws_sdk_ssm::types::Parameter> {
    aws.block_on(async {
        aws_sdk_ssm::Client::new(&aws.config)
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .ok()
            .and_then(|o| o.parameter().cloned())
    })
}

/// Writes the parameter `name` (a SecureString), as someone at the console would.
fn put_parameter(aws: &Moto, name: &str, value: &str) {
    aws.block_on(async {
        aws_sdk_ssm::Client::new(&aws.config)
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    })
}

#[test]
fn ssm_sync_shows_a_masked_diff_and_verify_names_missing_keys() {
    let aws = Moto::new();
    let p = project(
        "[[phase.step]]\nid = \"sync\"\ndo = \"ssm.sync\"\nprefix = \"/gengar-test/prod\"\nenv_file = \"app.env\"\n\n\
         [[phase.step]]\nid = \"verify\"\ndo = \"ssm.verify\"\nprefix = \"/gengar-test/prod/\"\nexample_file = \".env.example\"\n",
    );
    p.write(
        "app.env",
        "DATABASE_URL=postgres://gengar:s3cret-pw@db/gengar\nSTRIPE_KEY=sk_live_abcdef123456\n",
    );
    p.write(
        ".env.example",
        "DATABASE_URL=\nSTRIPE_KEY=\nROLLBAR_TOKEN=\n",
    );
    p.ok(&["run", "sync"])
        .stderr_has("+ DATABASE_URL = ***")
        .stderr_has("+ STRIPE_KEY = ***");
    p.run(&["run", "verify"])
        .expect(1)
        .stderr_has("1 of 3 keys missing under /gengar-test/prod/: ROLLBAR_TOKEN");

    p.write("app.env", "DATABASE_URL=postgres://gengar:s3cret-pw@db/gengar\nSTRIPE_KEY=sk_live_changed999\nROLLBAR_TOKEN=rb-token-777\n");
    p.ok(&["run", "sync"])
        .stderr_has("~ STRIPE_KEY = *** (changed)")
        .stderr_has("+ ROLLBAR_TOKEN = ***")
        // Unchanged: not in the diff (the first sync's write stays in `versions`).
        .stderr_lacks("DATABASE_URL = ");
    p.ok(&["run", "verify"]);
    // Every attempt's log (both syncs wrote secrets' keys) and the journal.
    let mut everything = p.journal().to_string();
    for attempt in ["1.log", "2.log"] {
        let log = p.read(&format!(".cutover/logs/sync/{attempt}"));
        assert!(log.contains("DATABASE_URL") || attempt == "2.log", "{log}");
        everything.push_str(&log);
    }
    for secret in [
        "s3cret-pw",
        "sk_live_changed999",
        "rb-token-777",
        "sk_live_abcdef123456",
    ] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
    let param = parameter(&aws, "/gengar-test/prod/STRIPE_KEY").unwrap();
    assert_eq!(param.value(), Some("sk_live_changed999"));
    assert_eq!(
        param.r#type(),
        Some(&aws_sdk_ssm::types::ParameterType::SecureString)
    );
}

/// Heroku's add-on variables (DATABASE_URL, HEROKU_POSTGRESQL_<COLOR>_URL) point at Heroku's
/// database: ssm.sync never copies them. Unmapped, the step refuses before writing anything;
/// mapped, the mapped value lands in SSM and Heroku's never does.
#[test]
fn ssm_sync_never_copies_herokus_database_urls() {
    const HEROKU_DB: &str =
        "postgres://u:heroku-db-pass@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d8f";
    const RDS_DB: &str = "postgres://gengar:rds-pass-42@gengar.rds.amazonaws.com:5432/gengar";
    let aws = Moto::new();
    let config = serde_json::json!({
        "DATABASE_URL": HEROKU_DB,
        "HEROKU_POSTGRESQL_ROSE_URL": HEROKU_DB,
        "JWT_SECRET": "jwt-secret-value-9",
    });
    let unmapped = "[[phase.step]]\nid = \"unmapped\"\ndo = \"ssm.sync\"\nprefix = \"/heroku-map/prod/\"\nheroku_json = \"heroku.json\"\n\n";
    let mapped = "[[phase.step]]\nid = \"mapped\"\ndo = \"ssm.sync\"\nprefix = \"/heroku-map/prod/\"\nheroku_json = \"heroku.json\"\nset = { DATABASE_URL = { value = \"${secret.RDS}\", from = \"RDS\" } }\nskip = [\"HEROKU_POSTGRESQL_ROSE_URL\"]\n\n";
    // The streamed form: `heroku config --json` read straight from the CLI, no file.
    let streamed = "[[phase.step]]\nid = \"streamed\"\ndo = \"ssm.sync\"\nprefix = \"/heroku-stream/prod/\"\nheroku_app = \"gengar-api\"\nset = { DATABASE_URL = { value = \"${secret.RDS}\", from = \"RDS\" } }\nskip = [\"HEROKU_POSTGRESQL_ROSE_URL\"]\n";
    // The secret comes from the environment, as RDS_DATABASE_URL does in the runbook.
    let p = Project::new(
        &runbook(&endpoint(), &format!("{unmapped}{mapped}{streamed}"))
            .secret("RDS", r#"{ env = "T_RDS_URL" }"#),
    )
    .env("T_RDS_URL", RDS_DB);
    p.write("heroku.json", config.to_string());

    p.run(&["run", "unmapped"])
        .expect(1)
        .says("DATABASE_URL, HEROKU_POSTGRESQL_ROSE_URL managed by a Heroku add-on")
        .says("nothing was written");

    p.ok(&["run", "mapped"])
        .stderr_has("+ DATABASE_URL = *** (set from RDS, not Heroku's value)")
        .stderr_has("HEROKU_POSTGRESQL_ROSE_URL skipped")
        .stderr_has("+ JWT_SECRET = ***");

    // A stand-in `heroku` on PATH (a test double: Heroku cannot be reached from here) prints the
    // config; nothing of it may be left on disk.
    p.write_script(
        "bin/heroku",
        &format!("#!/bin/sh\ntest \"$*\" = \"config --json -a gengar-api\" || exit 9\ncat <<'JSON'\n{config}\nJSON\n"),
    );
    let bin = p.file("bin");
    p.run_with(&["run", "streamed"], &[("PATH", &path_with(&bin))])
        .ok();

    let read = |path: &str| {
        aws.block_on(async {
            aws_sdk_ssm::Client::new(&aws.config)
                .get_parameters_by_path()
                .path(path)
                .with_decryption(true)
                .send()
                .await
                .unwrap()
                .parameters()
                .iter()
                .map(|p| {
                    (
                        p.name().unwrap().to_string(),
                        p.value().unwrap().to_string(),
                    )
                })
                .collect::<std::collections::BTreeMap<_, _>>()
        })
    };
    for prefix in ["/heroku-map/prod/", "/heroku-stream/prod/"] {
        let stored = read(prefix);
        assert_eq!(
            stored
                .get(&format!("{prefix}DATABASE_URL"))
                .map(String::as_str),
            Some(RDS_DB),
            "{stored:?}"
        );
        assert!(
            !stored.contains_key(&format!("{prefix}HEROKU_POSTGRESQL_ROSE_URL")),
            "{stored:?}"
        );
        assert!(!stored.values().any(|v| v == HEROKU_DB), "{stored:?}");
    }
    // Heroku's URL and the secrets reach neither the journal nor the logs; the streamed config
    // left no file behind (the only config file is the one this test wrote).
    let mut files = vec![p.file(".cutover/journal.jsonl")];
    files.extend(walk(&p.file(".cutover/logs")));
    for file in &files {
        let content = std::fs::read_to_string(file).unwrap();
        for secret in ["heroku-db-pass", "rds-pass-42", "jwt-secret-value-9"] {
            assert!(!content.contains(secret), "{secret} in {}", file.display());
        }
    }
    let holding: Vec<_> = walk(p.path())
        .into_iter()
        .filter(|f| !f.starts_with(&bin))
        .filter(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("jwt-secret-value-9")))
        .collect();
    assert_eq!(holding, vec![p.file("heroku.json")], "{holding:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn logs_search_finds_the_cron_line_or_fails() {
    let aws = Moto::new();
    aws.block_on(async {
        let logs = aws_sdk_cloudwatchlogs::Client::new(&aws.config);
        logs.create_log_group()
            .log_group_name("/ecs/search-test")
            .send()
            .await
            .unwrap();
        put_log_lines(
            &logs,
            "/ecs/search-test",
            "ecs/gengar/1",
            &["[Nest] UsageService monthly usage reset ran"],
        )
        .await;
    });
    let p = project(
        "[[phase.step]]\nid = \"cron\"\ndo = \"logs.search\"\nlog_group = \"/ecs/search-test\"\npattern = \"usage\"\nsince = \"1h\"\n\n\
         [[phase.step]]\nid = \"absent\"\ndo = \"logs.search\"\nlog_group = \"/ecs/search-test\"\npattern = \"nonexistentword\"\n",
    );
    p.ok(&["run", "cron"]).stdout_has("monthly usage reset ran");
    p.run(&["run", "absent"])
        .expect(1)
        .stderr_has("0 line(s) match");

    // logs.tail shows what the group received, for as long as asked.
    let p = project(
        "[[phase.step]]\nid = \"tail\"\ndo = \"logs.tail\"\nlog_group = \"/ecs/search-test\"\nfor = \"1s\"\nsince = \"10m\"\n",
    );
    let started = Instant::now();
    p.ok(&["run", "tail"]).stdout_has("monthly usage reset ran");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it follows for the time asked"
    );
}

/// The plan's network built in moto: a VPC with 2 public subnets (routed to an internet
/// gateway) and 2 private ones, the three security groups, the service and the RDS instance.
async fn plan_network(config: &aws_config::SdkConfig, name: &str) -> (aws_sdk_ec2::Client, String) {
    use aws_sdk_ec2::types::{
        IpPermission, IpRange, ResourceType, Tag, TagSpecification, UserIdGroupPair,
    };
    let ec2 = aws_sdk_ec2::Client::new(config);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.42.0.0/16")
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Vpc)
                .tags(Tag::builder().key("Name").value(name).build())
                .build(),
        )
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    let igw = ec2
        .create_internet_gateway()
        .send()
        .await
        .unwrap()
        .internet_gateway()
        .unwrap()
        .internet_gateway_id()
        .unwrap()
        .to_string();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let public_table = ec2
        .create_route_table()
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();
    ec2.create_route()
        .route_table_id(&public_table)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw)
        .send()
        .await
        .unwrap();
    let mut public = Vec::new();
    let mut private = Vec::new();
    for (i, (az, is_public)) in [
        ("us-east-1a", true),
        ("us-east-1b", true),
        ("us-east-1a", false),
        ("us-east-1b", false),
    ]
    .iter()
    .enumerate()
    {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.42.{i}.0/24"))
            .availability_zone(*az)
            .send()
            .await
            .unwrap()
            .subnet()
            .unwrap()
            .subnet_id()
            .unwrap()
            .to_string();
        if *is_public {
            ec2.associate_route_table()
                .route_table_id(&public_table)
                .subnet_id(&subnet)
                .send()
                .await
                .unwrap();
            public.push(subnet);
        } else {
            private.push(subnet);
        }
    }
    let group = |n: &str| {
        let ec2 = ec2.clone();
        let vpc = vpc.clone();
        let n = format!("{name}-{n}");
        async move {
            ec2.create_security_group()
                .group_name(&n)
                .description(&n)
                .vpc_id(&vpc)
                .send()
                .await
                .unwrap()
                .group_id()
                .unwrap()
                .to_string()
        }
    };
    let (alb, fargate, db) = (
        group("alb").await,
        group("fargate").await,
        group("rds").await,
    );
    for port in [80, 443] {
        ec2.authorize_security_group_ingress()
            .group_id(&alb)
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(port)
                    .to_port(port)
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let from = |port: i32, source: &str| {
        IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(port)
            .to_port(port)
            .user_id_group_pairs(UserIdGroupPair::builder().group_id(source).build())
            .build()
    };
    ec2.authorize_security_group_ingress()
        .group_id(&fargate)
        .ip_permissions(from(3000, &alb))
        .send()
        .await
        .unwrap();
    ec2.authorize_security_group_ingress()
        .group_id(&db)
        .ip_permissions(from(5432, &fargate))
        .send()
        .await
        .unwrap();

    let ecs = aws_sdk_ecs::Client::new(config);
    ecs.create_cluster()
        .cluster_name(name)
        .send()
        .await
        .unwrap();
    ecs.register_task_definition()
        .family(name)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("gengar")
                .image("x")
                .memory(1024)
                .build(),
        )
        .send()
        .await
        .unwrap();
    create_service(&ecs, name, public.clone(), &fargate).await;
    let rds = aws_sdk_rds::Client::new(config);
    rds.create_db_subnet_group()
        .db_subnet_group_name(name)
        .db_subnet_group_description("private")
        .set_subnet_ids(Some(private))
        .send()
        .await
        .unwrap();
    postgres_instance(&rds, name)
        .db_subnet_group_name(name)
        .vpc_security_group_ids(&db)
        .publicly_accessible(false)
        .send()
        .await
        .unwrap();
    (ec2, public[0].clone())
}

#[test]
fn network_verify_passes_the_plans_shape_and_names_each_broken_rule() {
    let name = "netcheck";
    let aws = Moto::new();
    let (ec2, public_subnet) = aws.block_on(plan_network(&aws.config, name));
    let p = project(&format!(
        "[[phase.step]]\nid = \"network\"\ndo = \"network.verify\"\nvpc = \"{name}\"\nalb_security_group = \"{name}-alb\"\ncluster = \"{name}\"\nservice = \"{name}\"\nrds_instance = \"{name}\"\n"
    ));
    let out = p.ok(&["run", "network"]);
    for rule in [
        "pass 2 public subnets across 2 AZs",
        "pass 2 private subnets across 2 AZs",
        "pass no NAT gateway",
        "pass ALB security group open to the internet on 80",
        "pass ALB security group open to the internet on 443",
        "reachable only from the ALB's",
        "pass RDS is not publicly accessible",
        "allows 5432 only from the Fargate group",
        "pass the service's tasks get a public IP",
    ] {
        out.stderr_has(rule);
    }
    // A NAT gateway appears: that rule fails, by name.
    aws.block_on(async {
        let eip = ec2
            .allocate_address()
            .send()
            .await
            .unwrap()
            .allocation_id()
            .unwrap()
            .to_string();
        ec2.create_nat_gateway()
            .subnet_id(&public_subnet)
            .allocation_id(eip)
            .send()
            .await
            .unwrap();
    });
    p.run(&["run", "network"])
        .expect(1)
        .stderr_has("FAIL no NAT gateway (found 1)");
}

#[test]
fn elb_health_waits_for_healthy_targets_and_names_an_empty_group() {
    let aws = Moto::new();
    aws.block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&aws.config);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&aws.config);
        let vpc = ec2.describe_vpcs().send().await.unwrap().vpcs()[0]
            .vpc_id()
            .unwrap()
            .to_string();
        for name in ["health-test", "health-empty"] {
            let arn = elb
                .create_target_group()
                .name(name)
                .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
                .port(3000)
                .vpc_id(&vpc)
                .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
                .health_check_path("/health")
                .send()
                .await
                .unwrap()
                .target_groups()[0]
                .target_group_arn()
                .unwrap()
                .to_string();
            if name == "health-test" {
                elb.register_targets()
                    .target_group_arn(arn)
                    .targets(
                        aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                            .id("10.0.0.5")
                            .port(3000)
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
        }
    });
    let p = project(
        "[[phase.step]]\nid = \"healthy\"\ndo = \"elb.health\"\ntarget_group = \"health-test\"\n\n\
         [[phase.step]]\nid = \"empty\"\ndo = \"elb.health\"\ntarget_group = \"health-empty\"\ndeadline = \"1s\"\ninterval = \"200ms\"\n",
    );
    p.ok(&["run", "healthy"]).stderr_has("1/1 healthy");
    p.run(&["run", "empty"])
        .expect(1)
        .stderr_has("no targets are registered");
}

#[test]
fn ecr_image_needs_the_tag_and_a_linux_arm64_image() {
    let index = |arch: &str| {
        serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "a".repeat(64)), "size": 100,
             "platform": {"os": "linux", "architecture": arch}}]})
        .to_string()
    };
    let aws = Moto::new();
    aws.block_on(async {
        let ecr = aws_sdk_ecr::Client::new(&aws.config);
        ecr.create_repository()
            .repository_name("mentionai/gengar-test")
            .send()
            .await
            .unwrap();
        for (tag, arch) in [("arm", "arm64"), ("amd", "amd64")] {
            ecr.put_image()
                .repository_name("mentionai/gengar-test")
                .image_manifest(index(arch))
                .image_manifest_media_type("application/vnd.oci.image.index.v1+json")
                .image_tag(tag)
                .send()
                .await
                .unwrap();
        }
    });
    let step = |id: &str, tag: &str| {
        format!("[[phase.step]]\nid = \"{id}\"\ndo = \"ecr.image\"\nrepository = \"mentionai/gengar-test\"\ntag = \"{tag}\"\n\n")
    };
    let p = project(&format!(
        "{}{}{}",
        step("arm", "arm"),
        step("amd", "amd"),
        step("missing", "nope")
    ));
    p.ok(&["run", "arm"]);
    p.run(&["run", "amd"])
        .expect(1)
        .stderr_has("has no linux/arm64 image (it has: linux/amd64)");
    p.run(&["run", "missing"])
        .expect(1)
        .stderr_has("is not in ECR");
}

/// A hosted zone holding `record` as a CNAME to Heroku (TTL 300), as before a cutover; its id.
fn zone_with_heroku_cname(aws: &Moto, zone: &str, record: &str) -> String {
    use aws_sdk_route53::types::{ChangeAction, ResourceRecord, ResourceRecordSet, RrType};
    let r53 = aws_sdk_route53::Client::new(&aws.config);
    aws.block_on(async {
        let zone = r53
            .create_hosted_zone()
            .name(zone)
            .caller_reference(format!("cutover-{zone}"))
            .send()
            .await
            .unwrap()
            .hosted_zone()
            .unwrap()
            .id()
            .trim_start_matches("/hostedzone/")
            .to_string();
        let record = ResourceRecordSet::builder()
            .name(record)
            .r#type(RrType::Cname)
            .ttl(300)
            .resource_records(
                ResourceRecord::builder()
                    .value("gengar-api.herokuapp.com")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        change_record(&r53, &zone, ChangeAction::Create, record).await;
        zone
    })
}

/// One change to one record of the zone, as its own batch.
async fn change_record(
    r53: &aws_sdk_route53::Client,
    zone: &str,
    action: aws_sdk_route53::types::ChangeAction,
    record: aws_sdk_route53::types::ResourceRecordSet,
) {
    use aws_sdk_route53::types::{Change, ChangeBatch};
    r53.change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(action)
                        .resource_record_set(record)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// The records of one name in a zone, as Route 53 holds them.
fn name_records(
    aws: &Moto,
    zone: &str,
    name: &str,
) -> Vec<aws_sdk_route53::types::ResourceRecordSet> {
    aws.block_on(async {
        aws_sdk_route53::Client::new(&aws.config)
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .send()
            .await
            .unwrap()
            .resource_record_sets()
            .iter()
            .filter(|r| r.name() == name)
            .cloned()
            .collect()
    })
}

#[test]
fn dns_point_is_confirmed_keeps_the_previous_record_and_waits_for_insync() {
    let aws = Moto::new();
    let zone = zone_with_heroku_cname(&aws, "gengar-test.example.", "api.gengar-test.example.");
    let p = project(
        "[[phase.step]]\nid = \"dns\"\ndo = \"dns.point\"\nzone = \"gengar-test.example\"\nname = \"api.gengar-test.example\"\ntarget = \"gengar-alb-123.us-east-1.elb.amazonaws.com\"\nttl = 60\ndestructive = true\nconfirm = \"point api at aws\"\nrollback = \"point it back: ${steps.dns.outputs.previous}\"\n",
    );
    // Destructive: needs the phrase.
    p.run(&["run", "dns"]).expect(5);
    p.ok(&["run", "dns", "--confirm", "point api at aws"])
        .stderr_has("in sync; CNAME, TTL 60s");
    assert!(
        p.journal().contains("gengar-api.herokuapp.com"),
        "the replaced record is journaled: {}",
        p.journal()
    );
    let api = name_records(&aws, &zone, "api.gengar-test.example.");
    assert_eq!(
        api[0].resource_records()[0].value(),
        "gengar-alb-123.us-east-1.elb.amazonaws.com"
    );
}

/// The cutover proper: a CNAME to Heroku replaced by an alias A record to the ALB, in one
/// batch, and read back from the zone (not only "INSYNC").
#[test]
fn dns_point_replaces_a_cname_with_an_alias_and_reads_it_back() {
    let aws = Moto::new();
    let zone = zone_with_heroku_cname(&aws, "alias-test.example.", "api.alias-test.example.");
    let p = project(
        "[[phase.step]]\nid = \"dns\"\ndo = \"dns.point\"\nzone = \"alias-test.example\"\nname = \"api.alias-test.example\"\ntarget = \"gengar-1.us-east-1.elb.amazonaws.com\"\nalias_zone_id = \"Z35SXDOTRQ7X7K\"\ndestructive = true\nconfirm = \"cut over\"\n",
    );
    let out = p.ok(&["run", "dns", "--confirm", "cut over"]);
    assert!(
        out.stderr().lines().any(|l| l.contains("read back:")
            && l.contains("\"type\":\"A\"")
            && l.contains("gengar-1.us-east-1.elb.amazonaws.com")
            && !l.contains("CNAME")),
        "{}",
        out.text()
    );
    let api = name_records(&aws, &zone, "api.alias-test.example.");
    assert_eq!(api.len(), 1, "the CNAME went in the same batch: {api:?}");
    assert_eq!(api[0].r#type(), &aws_sdk_route53::types::RrType::A);
    assert_eq!(
        api[0]
            .alias_target()
            .map(|a| a.dns_name().trim_end_matches('.')),
        Some("gengar-1.us-east-1.elb.amazonaws.com")
    );
    assert!(
        p.journal().contains("gengar-api.herokuapp.com"),
        "the replaced CNAME is journaled"
    );
}

#[test]
fn budget_ensure_creates_the_monthly_budget_once() {
    let aws = Moto::new();
    let p = project(
        "[[phase.step]]\nid = \"budget\"\ndo = \"budget.ensure\"\nname = \"gengar-test-monthly\"\namount = \"60\"\nemail = \"ops@example.com\"\n",
    );
    p.ok(&["run", "budget"]).stderr_has("created budget gengar-test-monthly: $60.00/month, alert to ops@example.com at 80% of actual spend");
    // Idempotent.
    p.ok(&["run", "budget"])
        .stderr_has("budget gengar-test-monthly is already $60.00/month");
    let limit = aws.block_on(async {
        aws_sdk_budgets::Client::new(&aws.config)
            .describe_budget()
            .account_id(ACCOUNT)
            .budget_name("gengar-test-monthly")
            .send()
            .await
            .unwrap()
    });
    let amount: f64 = limit
        .budget()
        .unwrap()
        .budget_limit()
        .unwrap()
        .amount()
        .parse()
        .unwrap();
    assert!((amount - 60.0).abs() < 1e-9);
}

#[test]
fn what_terraform_created_is_checked_repository_and_log_group_retention() {
    let aws = Moto::new();
    aws.block_on(async {
        aws_sdk_ecr::Client::new(&aws.config)
            .create_repository()
            .repository_name("mentionai/created-test")
            .image_scanning_configuration(
                aws_sdk_ecr::types::ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let logs = aws_sdk_cloudwatchlogs::Client::new(&aws.config);
        for (group, days) in [("/ecs/kept-30", Some(30)), ("/ecs/kept-forever", None)] {
            logs.create_log_group()
                .log_group_name(group)
                .send()
                .await
                .unwrap();
            if let Some(days) = days {
                logs.put_retention_policy()
                    .log_group_name(group)
                    .retention_in_days(days)
                    .send()
                    .await
                    .unwrap();
            }
        }
    });
    let p = project(
        "[[phase.step]]\nid = \"repo\"\ndo = \"ecr.repository\"\nrepository = \"mentionai/created-test\"\n\n\
         [[phase.step]]\nid = \"no-repo\"\ndo = \"ecr.repository\"\nrepository = \"mentionai/never-created\"\n\n\
         [[phase.step]]\nid = \"kept\"\ndo = \"logs.group\"\nlog_group = \"/ecs/kept-30\"\nretention_days = 30\n\n\
         [[phase.step]]\nid = \"forever\"\ndo = \"logs.group\"\nlog_group = \"/ecs/kept-forever\"\nretention_days = 30\n\n\
         [[phase.step]]\nid = \"prefix-only\"\ndo = \"logs.group\"\nlog_group = \"/ecs/kept\"\n",
    );
    p.ok(&["run", "repo"])
        .stderr_has("dkr.ecr.us-east-1.amazonaws.com/mentionai/created-test: scan on push on");
    p.run(&["run", "no-repo"])
        .expect(1)
        .stderr_has("the ECR repository mentionai/never-created does not exist");
    p.ok(&["run", "kept"]);
    p.run(&["run", "forever"])
        .expect(1)
        .stderr_has("/ecs/kept-forever keeps its lines forever, not the 30 days expected");
    // A name that only prefixes existing groups is not a group.
    p.run(&["run", "prefix-only"])
        .expect(1)
        .stderr_has("the log group /ecs/kept does not exist");
}

/// The TTL lowered ahead of the cutover: the same CNAME with 60 s, read back; the old TTL is
/// an output (the cutover's time gate waits at least that long); a second run changes nothing.
#[test]
fn dns_ttl_lowers_the_record_and_says_the_old_ttl() {
    let aws = Moto::new();
    let zone = zone_with_heroku_cname(&aws, "ttl-test.example.", "api.ttl-test.example.");
    let p = project(
        "[[phase.step]]\nid = \"ttl\"\ndo = \"dns.ttl\"\nzone = \"ttl-test.example\"\nname = \"api.ttl-test.example\"\nttl = 60\n",
    );
    p.ok(&["run", "ttl"]).stderr_has("TTL 300s → 60s");
    let api = name_records(&aws, &zone, "api.ttl-test.example.");
    assert_eq!(api.len(), 1, "{api:?}");
    assert_eq!(api[0].ttl(), Some(60));
    assert_eq!(
        api[0].resource_records()[0].value(),
        "gengar-api.herokuapp.com",
        "the same record, only its TTL lower"
    );
    let outputs = &p.step("ttl")["outputs"];
    assert_eq!(outputs["previous_ttl"], "300");
    assert_eq!(outputs["ttl"], "60");
    p.ok(&["run", "ttl"]).stderr_has("nothing to change");
}

/// Someone repoints `name` by hand, to another load balancer.
fn repoint_by_hand(aws: &Moto, zone: &str, name: &str) {
    use aws_sdk_route53::types::{AliasTarget, ChangeAction, ResourceRecordSet, RrType};
    let record = ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::A)
        .alias_target(
            AliasTarget::builder()
                .dns_name("someone-else.elb.amazonaws.com")
                .hosted_zone_id("Z35SXDOTRQ7X7K")
                .evaluate_target_health(false)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let r53 = aws_sdk_route53::Client::new(&aws.config);
    aws.block_on(change_record(&r53, zone, ChangeAction::Upsert, record));
}

/// The DNS rollback: the record put back exactly as the cutover found it (a CNAME with its
/// TTL, after an alias replaced it), read back through Route 53; refused, touching nothing,
/// when the name no longer holds what the cutover set.
#[test]
fn dns_rollback_puts_the_record_back_exactly_and_only_over_what_the_cutover_set() {
    let aws = Moto::new();
    let name = "api.undo-test.example.";
    let zone = zone_with_heroku_cname(&aws, "undo-test.example.", name);
    let step = "[[phase.step]]\nid = \"dns\"\ndo = \"dns.point\"\nzone = \"undo-test.example\"\nname = \"api.undo-test.example\"\ntarget = \"gengar-1.us-east-1.elb.amazonaws.com\"\nalias_zone_id = \"Z35SXDOTRQ7X7K\"\ndestructive = true\nconfirm = \"cut over\"\nrollback = { do = \"dns.restore\", zone = \"undo-test.example\", name = \"api.undo-test.example\", record = \"${steps.dns.outputs.previous}\", expect = \"${steps.dns.outputs.current}\" }\n";
    let p = project(step);
    let records = || name_records(&aws, &zone, name);
    let before = records();
    p.ok(&["run", "dns", "--confirm", "cut over"]);
    assert_ne!(records(), before);

    p.ok(&[
        "rollback",
        "dns",
        "--note",
        "503s on AWS",
        "--confirm",
        "roll back dns",
    ]);
    let after = records();
    assert_eq!(after, before, "exactly as it was: type, value, TTL");
    assert_eq!(after[0].ttl(), Some(300));

    // Cut over again; then someone repoints the name by hand: the rollback is refused and
    // the record stays as they left it.
    p.ok(&["run", "dns", "--confirm", "cut over"]);
    repoint_by_hand(&aws, &zone, name);
    let theirs = records();
    p.run(&[
        "rollback",
        "dns",
        "--note",
        "again",
        "--confirm",
        "roll back dns",
    ])
    .expect(1)
    .says("neither what the cutover set")
    .says("someone-else");
    assert_eq!(records(), theirs, "nothing touched");
    assert!(p.journal().contains("\"rollback_failed\""));
}

/// The SSM rollback: each key the sync wrote back to the version it replaced (a key it added,
/// deleted); refused while a key holds another version than the one the sync wrote.
#[test]
fn ssm_rollback_puts_back_the_replaced_versions() {
    let aws = Moto::new();
    let prefix = "/undo-ssm/prod/";
    let put = |key: &str, value: &str| put_parameter(&aws, &format!("{prefix}{key}"), value);
    let get = |key: &str| {
        parameter(&aws, &format!("{prefix}{key}")).and_then(|p| p.value().map(str::to_string))
    };
    put("DATABASE_URL", "postgres://heroku-db/x");
    let p = project(&format!(
        "[[phase.step]]\nid = \"sync\"\ndo = \"ssm.sync\"\nprefix = \"{prefix}\"\nset = {{ DATABASE_URL = \"postgres://rds-db/x\", NEW_KEY = \"fresh\" }}\nrollback = {{ do = \"ssm.restore\", prefix = \"{prefix}\", versions = \"${{steps.sync.outputs.versions}}\" }}\n"
    ));
    p.ok(&["run", "sync"]);
    assert_eq!(get("DATABASE_URL").as_deref(), Some("postgres://rds-db/x"));
    let undo = [
        "rollback",
        "sync",
        "--note",
        "back",
        "--confirm",
        "roll back sync",
    ];

    // Someone wrote it since: refused, nothing touched.
    put("DATABASE_URL", "postgres://by-hand/x");
    p.run(&undo).expect(1).says("it changed since");
    assert_eq!(get("NEW_KEY").as_deref(), Some("fresh"), "nothing touched");

    // As before the sync, then the sync again (new versions), then the rollback.
    put("DATABASE_URL", "postgres://heroku-db/x");
    aws.block_on(async {
        aws_sdk_ssm::Client::new(&aws.config)
            .delete_parameter()
            .name(format!("{prefix}NEW_KEY"))
            .send()
            .await
            .unwrap();
    });
    p.ok(&["run", "sync"]);
    let out = p.ok(&undo);
    assert_eq!(
        get("DATABASE_URL").as_deref(),
        Some("postgres://heroku-db/x")
    );
    assert_eq!(get("NEW_KEY"), None, "added by the sync: deleted");
    for secret in ["heroku-db", "rds-db", "fresh"] {
        assert!(
            !out.text().contains(secret),
            "no value shown: {}",
            out.text()
        );
        assert!(!p.journal().contains(secret), "no value journaled");
    }
}

fn is_get_change(r: &proxy::Request) -> bool {
    r.method == "GET" && r.path.contains("/change/")
}

/// The record to go back to is the one before the first change: an attempt that changed the
/// record and then failed, a re-run that finds the ALB, and a reset and run again never replace
/// it. A rollback cut off after its change went through is retried, finds the record as before,
/// and ends rolled back.
#[test]
fn dns_rollback_goes_back_to_the_record_before_the_first_change_and_survives_its_own_interruption()
{
    let aws = Moto::new();
    let name = "api.rerun-test.example.";
    let zone = zone_with_heroku_cname(&aws, "rerun-test.example.", name);
    let proxy = Proxy::start(&aws.endpoint, |_| Verdict::Forward);
    let p = project_at(
        &proxy.url,
        "[[phase.step]]\nid = \"dns\"\ndo = \"dns.point\"\nzone = \"rerun-test.example\"\nname = \"api.rerun-test.example\"\ntarget = \"gengar-2.us-east-1.elb.amazonaws.com\"\nalias_zone_id = \"Z35SXDOTRQ7X7K\"\ndestructive = true\nconfirm = \"cut over\"\ntimeout = \"15s\"\nrollback = { do = \"dns.restore\", zone = \"rerun-test.example\", name = \"api.rerun-test.example\", record = \"${steps.dns.outputs.previous}\", expect = \"${steps.dns.outputs.current}\" }\n",
    );
    let before = name_records(&aws, &zone, name);
    assert_eq!(before[0].r#type().as_str(), "CNAME");

    // Attempt 1 changes the record, then Route 53 fails when asked whether it is in sync.
    proxy.set(|r| {
        if is_get_change(r) {
            Verdict::Fail {
                status: 500,
                code: "InternalFailure",
            }
        } else {
            Verdict::Forward
        }
    });
    p.run(&["run", "dns", "--confirm", "cut over"]).expect(1);
    let alb = name_records(&aws, &zone, name);
    assert_eq!(
        alb[0].r#type().as_str(),
        "A",
        "the first attempt changed it"
    );
    proxy.clear();

    // Attempt 2 finds the ALB already there; a reset and a third run find it too.
    p.ok(&["run", "dns", "--confirm", "cut over"]);
    p.ok(&["mark", "dns", "pending", "--note", "redo it"]);
    p.ok(&["run", "dns", "--confirm", "cut over"]);
    let log = p.read(".cutover/logs/dns/3.log");
    assert!(
        log.contains("the record to go back to stays the one that attempt found")
            && log.contains("herokuapp.com"),
        "{log}"
    );
    let journal = p.journal();
    let previous: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("\"previous\""))
        .collect::<Vec<_>>();
    assert_eq!(previous.len(), 3, "one per attempt: {previous:?}");
    assert!(
        previous
            .iter()
            .all(|l| l.contains("gengar-api.herokuapp.com") && !l.contains("gengar-2")),
        "every attempt journaled Heroku's record, never the ALB: {previous:?}"
    );

    // The rollback's change goes through; Route 53 then never answers: the step's time limit
    // cuts it off. The record is Heroku's, but the rollback is not recorded as done.
    proxy.set(|r| {
        if is_get_change(r) {
            Verdict::Hang
        } else {
            Verdict::Forward
        }
    });
    let undo = [
        "rollback",
        "dns",
        "--note",
        "5xx on AWS",
        "--confirm",
        "roll back dns",
    ];
    let out = p.run(&undo);
    assert_ne!(out.code(), 0, "{}", out.text());
    assert_eq!(
        name_records(&aws, &zone, name),
        before,
        "its change went through"
    );
    assert!(p.journal().contains("\"rollback_failed\""));
    proxy.clear();

    // Retried: the name already holds what it held before — done, not refused.
    p.ok(&undo).says("dns: rolled back");
    assert_eq!(name_records(&aws, &zone, name), before);
    assert!(p.journal().contains("\"rolled_back\""));
    let status = p.status();
    assert_eq!(
        status["phases"][0]["steps"][0]["state"], "rolled back",
        "{status}"
    );
}

/// The same for a deployment: the revision to go back to is the one the service ran before
/// the first attempt, though that attempt changed it and failed, and the re-run found its own.
#[test]
fn ecs_deploy_rollback_goes_back_to_the_revision_before_the_first_attempt() {
    let cluster = "redeploy-test";
    let aws = Moto::new();
    let (ecs, _) = ecs_fixture(&aws, cluster);
    let revision = || service_revision(&aws, &ecs, cluster);
    let first = revision();
    assert!(first.ends_with(&format!("{cluster}:1")), "{first}");
    let proxy = Proxy::start(&aws.endpoint, |_| Verdict::Forward);
    let p = project_at(
        &proxy.url,
        &format!(
            "[[phase.step]]\nid = \"deploy\"\ndo = \"ecs.deploy\"\ncluster = \"{cluster}\"\nservice = \"{cluster}\"\nimage = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/mentionai/gengar:new\"\ninterval = \"200ms\"\ndeadline = \"30s\"\nrollback = {{ do = \"ecs.deploy\", cluster = \"{cluster}\", service = \"{cluster}\", task_definition = \"${{steps.deploy.outputs.previous_task_definition}}\", expect = \"${{steps.deploy.outputs.task_definition}}\", interval = \"200ms\", deadline = \"30s\" }}\n"
        ),
    );
    // Once the service is updated, ECS stops answering: attempt 1 fails after its change.
    let updated = Arc::new(AtomicBool::new(false));
    {
        let updated = updated.clone();
        proxy.set(move |r| {
            if r.is("UpdateService") {
                updated.store(true, SeqCst);
            }
            if r.is("DescribeServices") && updated.load(SeqCst) {
                Verdict::Fail {
                    status: 500,
                    code: "ServerException",
                }
            } else {
                Verdict::Forward
            }
        });
    }
    p.run(&["run", "deploy"]).expect(1);
    assert!(revision().ends_with(":2"), "the first attempt changed it");
    proxy.clear();
    p.ok(&["run", "deploy"]);
    assert!(revision().ends_with(":3"));
    let undo = [
        "rollback",
        "deploy",
        "--note",
        "bad image",
        "--confirm",
        "roll back deploy",
    ];
    // CI deploys revision :2 by hand in between: not the deployment's, refused untouched.
    let ci = format!("{}:2", first.trim_end_matches(":1"));
    aws.block_on(async {
        ecs.update_service()
            .cluster(cluster)
            .service(cluster)
            .task_definition(&ci)
            .send()
            .await
            .unwrap();
    });
    p.run(&undo)
        .expect(1)
        .says("neither the revision the deployment set");
    assert_eq!(revision(), ci, "nothing touched");
    // Back on the deployment's revision: the rollback goes back to the one before attempt 1.
    aws.block_on(async {
        ecs.update_service()
            .cluster(cluster)
            .service(cluster)
            .task_definition(format!("{}:3", first.trim_end_matches(":1")))
            .send()
            .await
            .unwrap();
    });
    p.ok(&undo);
    assert_eq!(
        revision(),
        first,
        "back on the revision before the first attempt"
    );
    // Deployed again, then put back by hand: the rollback finds it already done.
    p.ok(&["run", "deploy"]);
    aws.block_on(async {
        ecs.update_service()
            .cluster(cluster)
            .service(cluster)
            .task_definition(&first)
            .send()
            .await
            .unwrap();
    });
    p.ok(&undo).says("already runs");
    assert_eq!(revision(), first);
}

/// What the bundled runbook does with DATABASE_URL: `ssm-sync` sets it from RDS, so the later
/// `db-database-url` changes nothing — and its rollback says there is nothing to undo instead
/// of reporting a rollback. A sync that fails after a write keeps what it replaced on record,
/// and a rollback interrupted after its change is retried to the end.
#[test]
fn ssm_rollbacks_do_what_they_say_and_finish_after_a_failure() {
    let aws = Moto::new();
    let prefix = "/bundled-ssm/prod/";
    let param = |key: &str| {
        parameter(&aws, &format!("{prefix}{key}"))
            .map(|p| (p.value().unwrap_or_default().to_string(), p.version()))
    };
    put_parameter(&aws, &format!("{prefix}STRIPE_KEY"), "sk-before");
    let proxy = Proxy::start(&aws.endpoint, |_| Verdict::Forward);
    let restore = format!(
        "{{ do = \"ssm.restore\", prefix = \"{prefix}\", versions = \"${{steps.X.outputs.versions}}\" }}"
    );
    let p = project_at(
        &proxy.url,
        &format!(
            "[[phase.step]]\nid = \"ssm-sync\"\ndo = \"ssm.sync\"\nprefix = \"{prefix}\"\nset = {{ DATABASE_URL = \"postgres://rds-db/x\", STRIPE_KEY = \"sk-after\", NEW_KEY = \"fresh\" }}\ntimeout = \"15s\"\nrollback = {}\n\n[[phase.step]]\nid = \"db-database-url\"\ndo = \"ssm.sync\"\nprefix = \"{prefix}\"\nset = {{ DATABASE_URL = \"postgres://rds-db/x\" }}\nrollback = {}\nneeds = [\"ssm-sync\"]\n",
            restore.replace("X", "ssm-sync"),
            restore.replace("X", "db-database-url")
        ),
    );
    // The sync writes DATABASE_URL, then SSM fails the next write: the step fails after a
    // change, and what that change replaced is on record.
    let writes = Arc::new(AtomicUsize::new(0));
    {
        let writes = writes.clone();
        proxy.set(move |r| {
            if r.is("PutParameter") && writes.fetch_add(1, SeqCst) >= 1 {
                Verdict::Fail {
                    status: 500,
                    code: "InternalServerError",
                }
            } else {
                Verdict::Forward
            }
        });
    }
    p.run(&["run", "ssm-sync"]).expect(1);
    assert_eq!(
        param("DATABASE_URL").map(|p| p.0).as_deref(),
        Some("postgres://rds-db/x")
    );
    proxy.clear();
    p.ok(&["run", "ssm-sync"]);
    assert_eq!(
        param("STRIPE_KEY").map(|p| p.0).as_deref(),
        Some("sk-after")
    );

    // db-database-url finds DATABASE_URL as ssm-sync left it: nothing changes, and its
    // rollback has nothing to undo — said, run nowhere, recorded nowhere.
    p.ok(&["run", "db-database-url"]);
    let url_before = param("DATABASE_URL");
    let lines = p.journal().lines().count();
    p.ok(&[
        "rollback",
        "db-database-url",
        "--note",
        "back",
        "--confirm",
        "roll back db-database-url",
    ])
    .says("nothing to undo");
    assert_eq!(param("DATABASE_URL"), url_before, "SSM untouched");
    assert_eq!(p.journal().lines().count(), lines, "nothing recorded");
    let status = p.status();
    assert_eq!(status["phases"][0]["steps"][1]["state"], "done", "{status}");

    // ssm-sync's rollback covers the key the failed attempt wrote (DATABASE_URL: added) as
    // well as the re-run's. It is cut off after its first change (SSM stops answering).
    let puts = Arc::new(AtomicUsize::new(0));
    {
        let puts = puts.clone();
        proxy.set(move |r| {
            let n = if r.is("PutParameter") || r.is("DeleteParameter") {
                puts.fetch_add(1, SeqCst)
            } else {
                0
            };
            if n >= 1 {
                Verdict::Hang
            } else {
                Verdict::Forward
            }
        });
    }
    let undo = [
        "rollback",
        "ssm-sync",
        "--only",
        "--note",
        "back",
        "--confirm",
        "roll back ssm-sync",
    ];
    let out = p.run(&undo);
    assert_ne!(out.code(), 0, "{}", out.text());
    assert!(p.journal().contains("\"rollback_failed\""));
    assert_eq!(param("DATABASE_URL"), None, "its first change went through");
    proxy.clear();
    let out = p.ok(&undo);
    assert_eq!(
        param("STRIPE_KEY").map(|p| p.0).as_deref(),
        Some("sk-before")
    );
    assert_eq!(
        param("DATABASE_URL"),
        None,
        "added by the failed attempt: deleted"
    );
    assert_eq!(param("NEW_KEY"), None, "added by the re-run: deleted");
    for secret in ["rds-db", "sk-before", "sk-after", "fresh"] {
        assert!(!out.text().contains(secret), "no value shown");
        assert!(!p.journal().contains(secret), "no value journaled");
    }
}

/// The DNS rollback is for when AWS is what failed: with no task to tunnel through, or no
/// Session Manager plugin, the rows RDS took cannot be counted — that is said as unknown, with
/// the reason, and the record still goes back to Heroku's.
#[test]
fn dns_rollback_runs_when_its_warning_cannot_reach_rds() {
    let cluster = "no-tasks-test";
    let aws = Moto::new();
    let (ecs, _) = ecs_fixture(&aws, cluster);
    aws.block_on(async {
        ecs.update_service()
            .cluster(cluster)
            .service(cluster)
            .desired_count(0)
            .send()
            .await
            .unwrap();
    });
    let name = "api.warn-test.example.";
    let zone = zone_with_heroku_cname(&aws, "warn-test.example.", name);
    let p = project(&format!(
        "[[phase.step]]\nid = \"tunnel\"\ndo = \"aws.tunnel\"\ncluster = \"{cluster}\"\nservice = \"{cluster}\"\nhost = \"gengar.internal\"\n\n[[phase.step]]\nid = \"mark\"\ndo = \"shell\"\nrun = \"echo 'counters={{}}' >> \\\"$CUTOVER_OUTPUT\\\"\"\noutputs = [\"counters\"]\n\n[[phase.step]]\nid = \"dns\"\ndo = \"dns.point\"\nzone = \"warn-test.example\"\nname = \"api.warn-test.example\"\ntarget = \"gengar-3.us-east-1.elb.amazonaws.com\"\nalias_zone_id = \"Z35SXDOTRQ7X7K\"\ndestructive = true\nconfirm = \"cut over\"\nneeds = [\"mark\"]\nrollback = {{ do = \"dns.restore\", zone = \"warn-test.example\", name = \"api.warn-test.example\", record = \"${{steps.dns.outputs.previous}}\", expect = \"${{steps.dns.outputs.current}}\", warn = {{ do = \"db.writes\", url = \"${{secret.RDS_DATABASE_URL}}\", since = \"${{steps.mark.outputs.counters}}\", via = \"tunnel\" }} }}\n\n[secrets]\nRDS_DATABASE_URL = {{ env = \"RDS_DATABASE_URL\" }}\n"
    ))
    .env(
        "RDS_DATABASE_URL",
        "postgres://app:secret-pw@gengar.internal:5432/gengar",
    );
    let before = name_records(&aws, &zone, name);
    // No plugin on PATH (a directory holding only what the steps run).
    let path_without_plugin = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !Path::new(d).join("session-manager-plugin").exists())
        .collect::<Vec<_>>()
        .join(":");
    let run = |args: &[&str], path: &str| p.run_with(args, &[("PATH", path)]);
    run(&["run", "mark"], &path_without_plugin).ok();
    run(
        &["run", "dns", "--confirm", "cut over"],
        &path_without_plugin,
    )
    .ok();
    assert_ne!(name_records(&aws, &zone, name), before);
    // The phrase first.
    run(
        &["rollback", "dns", "--note", "5xx on AWS"],
        &path_without_plugin,
    )
    .expect(5)
    .says("what going back loses is unknown")
    .says("session-manager-plugin")
    .says("not on PATH");
    let out = run(
        &[
            "rollback",
            "dns",
            "--note",
            "5xx on AWS",
            "--confirm",
            "roll back dns",
        ],
        &path_without_plugin,
    )
    .ok();
    assert_eq!(name_records(&aws, &zone, name), before, "back to Heroku's");
    assert!(!out.text().contains("secret-pw"));

    // Again with the plugin on PATH, and the service at 0 running tasks.
    p.write_script("bin/session-manager-plugin", "#!/bin/sh\necho 1.2.0\n");
    let with_plugin = format!("{}:{path_without_plugin}", p.file("bin").display());
    run(&["run", "dns", "--confirm", "cut over"], &with_plugin).ok();
    run(
        &[
            "rollback",
            "dns",
            "--note",
            "crash loop",
            "--confirm",
            "roll back dns",
        ],
        &with_plugin,
    )
    .ok()
    .says("what going back loses is unknown")
    .says("no running task");
    assert_eq!(name_records(&aws, &zone, name), before, "back to Heroku's");
}

/// A private zone of the same name (split-horizon DNS) is not the one the world resolves:
/// the cutover changes the public zone, whichever was created first; names are compared as
/// resolvers compare them, without case.
#[test]
fn dns_point_changes_the_public_zone_of_a_split_horizon_name() {
    let aws = Moto::new();
    let private = aws.block_on(async {
        let vpc = aws_sdk_ec2::Client::new(&aws.config)
            .describe_vpcs()
            .send()
            .await
            .unwrap()
            .vpcs()[0]
            .vpc_id()
            .unwrap()
            .to_string();
        let zone = aws_sdk_route53::Client::new(&aws.config)
            .create_hosted_zone()
            .name("split-test.example.")
            .caller_reference("cutover-split-private")
            .vpc(
                aws_sdk_route53::types::Vpc::builder()
                    .vpc_id(vpc)
                    .vpc_region(aws_sdk_route53::types::VpcRegion::UsEast1)
                    .build(),
            )
            .hosted_zone_config(
                aws_sdk_route53::types::HostedZoneConfig::builder()
                    .private_zone(true)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        zone.hosted_zone()
            .unwrap()
            .id()
            .trim_start_matches("/hostedzone/")
            .to_string()
    });
    let public = zone_with_heroku_cname(&aws, "split-test.example.", "api.split-test.example.");
    let p = project(
        "[[phase.step]]\nid = \"dns\"\ndo = \"dns.point\"\nzone = \"split-test.example\"\nname = \"API.Split-Test.example\"\ntarget = \"gengar-4.us-east-1.elb.amazonaws.com\"\nalias_zone_id = \"Z35SXDOTRQ7X7K\"\n",
    );
    p.ok(&["run", "dns"]);
    let now = name_records(&aws, &public, "api.split-test.example.");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(
        now[0].alias_target().map(|a| a.dns_name()),
        Some("gengar-4.us-east-1.elb.amazonaws.com")
    );
    assert!(
        p.journal().contains("gengar-api.herokuapp.com"),
        "the record it replaced, found under another case, is kept for the rollback"
    );
    assert!(
        name_records(&aws, &private, "api.split-test.example.").is_empty(),
        "the private zone untouched"
    );
}

/// Opening a step's tunnel is part of the step's time limit: a Session Manager plugin that
/// never answers cannot hold the step past its `timeout`.
#[test]
fn a_tunnel_that_never_opens_fails_its_step_within_the_time_limit() {
    let p = project(
        "[[phase.step]]\nid = \"tunnel\"\ndo = \"aws.tunnel\"\ncluster = \"c\"\nservice = \"s\"\nhost = \"gengar.internal\"\n\n[[phase.step]]\nid = \"count\"\ndo = \"db.writes\"\nurl = \"postgres://app:pw-1234@gengar.internal:5432/gengar\"\nvia = \"tunnel\"\nneeds = [\"tunnel\"]\ntimeout = \"3s\"\n",
    );
    // A plugin that hangs when asked its version: a stand-in for one stuck on a dead network.
    p.write_script("bin/session-manager-plugin", "#!/bin/sh\nexec sleep 60\n");
    p.ok(&[
        "mark",
        "tunnel",
        "done",
        "--note",
        "opened earlier; the step re-opens it",
    ]);
    let started = Instant::now();
    let path = path_with(&p.file("bin"));
    p.run_with(&["run", "count"], &[("PATH", path.as_str())])
        .expect(1)
        .says("could not be opened")
        .says("timed out after 3s");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the step ended with its time limit (and the grace), not the plugin: {:?}",
        started.elapsed()
    );
    let journal = p.journal();
    assert!(journal.contains("\"failed\""), "{journal}");
}

/// What a rollback goes back to is what the name held before this step's own change: an attempt
/// that recorded it and was refused before changing anything, then a change by hand, then a
/// re-run — the rollback goes back to the hand-made record, not the older one.
#[test]
fn dns_point_records_a_change_by_hand_made_before_its_own() {
    let aws = Moto::new();
    let name = "api.hand-test.example.";
    let zone = zone_with_heroku_cname(&aws, "hand-test.example.", name);
    let proxy = Proxy::start(&aws.endpoint, |_| Verdict::Forward);
    let p = project_at(
        &proxy.url,
        "[[phase.step]]\nid = \"dns\"\ndo = \"dns.point\"\nzone = \"hand-test.example\"\nname = \"api.hand-test.example\"\ntarget = \"gengar-5.us-east-1.elb.amazonaws.com\"\nalias_zone_id = \"Z35SXDOTRQ7X7K\"\nrollback = { do = \"dns.restore\", zone = \"hand-test.example\", name = \"api.hand-test.example\", record = \"${steps.dns.outputs.previous}\", expect = \"${steps.dns.outputs.current}\" }\n",
    );
    // Route 53 refuses the change: the attempt recorded the Heroku CNAME and changed nothing.
    proxy.set(|r| {
        if r.method == "POST" && r.path.ends_with("/rrset") {
            Verdict::Fail {
                status: 500,
                code: "InternalFailure",
            }
        } else {
            Verdict::Forward
        }
    });
    p.run(&["run", "dns"]).expect(1);
    proxy.clear();
    // Someone points the name elsewhere by hand; the re-run replaces that.
    repoint_by_hand(&aws, &zone, name);
    let by_hand = name_records(&aws, &zone, name);
    p.ok(&["run", "dns"]);
    p.ok(&[
        "rollback",
        "dns",
        "--note",
        "back",
        "--confirm",
        "roll back dns",
    ]);
    assert_eq!(
        name_records(&aws, &zone, name),
        by_hand,
        "back to what the name held right before this step's change"
    );
}

/// A key rolled back and then rotated by hand is the world as it is: a re-run's rollback
/// goes back to the rotated value, not to the value before the first sync.
#[test]
fn ssm_rollback_after_a_rotation_by_hand_keeps_the_rotation() {
    let aws = Moto::new();
    let prefix = "/rotate-ssm/prod/";
    let value = |key: &str| {
        parameter(&aws, &format!("{prefix}{key}")).and_then(|p| p.value().map(str::to_string))
    };
    put_parameter(&aws, &format!("{prefix}API_KEY"), "key-v1");
    let p = project(&format!(
        "[[phase.step]]\nid = \"sync\"\ndo = \"ssm.sync\"\nprefix = \"{prefix}\"\nset = {{ API_KEY = \"key-from-sync\" }}\nrollback = {{ do = \"ssm.restore\", prefix = \"{prefix}\", versions = \"${{steps.sync.outputs.versions}}\" }}\n"
    ));
    let undo = [
        "rollback",
        "sync",
        "--note",
        "back",
        "--confirm",
        "roll back sync",
    ];
    p.ok(&["run", "sync"]);
    p.ok(&undo);
    assert_eq!(value("API_KEY").as_deref(), Some("key-v1"));
    // Rotated on purpose after the rollback; the sync runs again and is rolled back again.
    put_parameter(&aws, &format!("{prefix}API_KEY"), "key-v2-rotated");
    p.ok(&["run", "sync"]);
    assert_eq!(value("API_KEY").as_deref(), Some("key-from-sync"));
    p.ok(&undo);
    assert_eq!(
        value("API_KEY").as_deref(),
        Some("key-v2-rotated"),
        "the rotation is kept"
    );
}

/// `elb.maintenance`: the ALB answers every request with a fixed 503 through a rule of its own
/// (priority 1, every path) on each listener that does not redirect, read back; again, it says
/// there is nothing to change; `off` takes the rule away and leaves the listeners as they were.
/// A priority 1 held by another rule is named, and nothing is created.
#[test]
fn elb_maintenance_answers_503_itself_then_forwards_again() {
    use aws_sdk_elasticloadbalancingv2::types::{
        Action, ActionTypeEnum, FixedResponseActionConfig, ProtocolEnum, RedirectActionConfig,
        RedirectActionStatusCodeEnum, RuleCondition,
    };
    let aws = Moto::new();
    let (dns, forward, redirect) = aws.block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&aws.config);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&aws.config);
        let vpc = ec2.describe_vpcs().send().await.unwrap().vpcs()[0]
            .vpc_id()
            .unwrap()
            .to_string();
        let subnets: Vec<String> = ec2
            .describe_subnets()
            .send()
            .await
            .unwrap()
            .subnets()
            .iter()
            .filter(|s| s.vpc_id() == Some(vpc.as_str()))
            .filter_map(|s| s.subnet_id().map(str::to_string))
            .take(2)
            .collect();
        let lb = elb
            .create_load_balancer()
            .name("maint-test")
            .set_subnets(Some(subnets))
            .send()
            .await
            .unwrap()
            .load_balancers()[0]
            .clone();
        let tg = elb
            .create_target_group()
            .name("maint-test")
            .protocol(ProtocolEnum::Http)
            .port(3000)
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap()
            .target_groups()[0]
            .target_group_arn()
            .unwrap()
            .to_string();
        let forward = elb
            .create_listener()
            .load_balancer_arn(lb.load_balancer_arn().unwrap())
            .protocol(ProtocolEnum::Http)
            .port(8080)
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(&tg)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .listeners()[0]
            .listener_arn()
            .unwrap()
            .to_string();
        let redirect = elb
            .create_listener()
            .load_balancer_arn(lb.load_balancer_arn().unwrap())
            .protocol(ProtocolEnum::Http)
            .port(80)
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Redirect)
                    .redirect_config(
                        RedirectActionConfig::builder()
                            .port("443")
                            .protocol("HTTPS")
                            .status_code(RedirectActionStatusCodeEnum::Http301)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .listeners()[0]
            .listener_arn()
            .unwrap()
            .to_string();
        // The app's own catch-all at the end (a 404 for every other path): not the maintenance
        // rule, never touched by it.
        elb.create_rule()
            .listener_arn(&forward)
            .priority(50000)
            .conditions(
                RuleCondition::builder()
                    .field("path-pattern")
                    .values("/*")
                    .build(),
            )
            .actions(
                Action::builder()
                    .r#type(ActionTypeEnum::FixedResponse)
                    .fixed_response_config(
                        FixedResponseActionConfig::builder()
                            .status_code("404")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        (lb.dns_name().unwrap().to_string(), forward, redirect)
    });
    // (priority, status) of each listener's rules but the default.
    let all_rules = |listener: &str| -> Vec<(String, Option<String>)> {
        aws.block_on(async {
            let elb = aws_sdk_elasticloadbalancingv2::Client::new(&aws.config);
            elb.describe_rules()
                .listener_arn(listener)
                .send()
                .await
                .unwrap()
                .rules()
                .iter()
                .filter(|r| r.is_default() != Some(true))
                .map(|r| {
                    (
                        r.priority().unwrap_or_default().to_string(),
                        r.actions()
                            .first()
                            .and_then(|a| a.fixed_response_config())
                            .and_then(|f| f.status_code().map(str::to_string)),
                    )
                })
                .collect()
        })
    };
    // The same, the app's own 404 left out (and checked to be there still).
    let rules = |listener: &str| -> Vec<(String, Option<String>)> {
        let mut all = all_rules(listener);
        let app = ("50000".to_string(), Some("404".to_string()));
        assert!(
            listener != forward || all.contains(&app),
            "the app's own rule is still there: {all:?}"
        );
        all.retain(|r| *r != app);
        all
    };
    let p = project(&format!(
        "[[phase.step]]\nid = \"on\"\ndo = \"elb.maintenance\"\nload_balancer = \"{dns}\"\nmode = \"on\"\n\n\
         [[phase.step]]\nid = \"off\"\ndo = \"elb.maintenance\"\nload_balancer = \"maint-test\"\nmode = \"off\"\n"
    ));
    p.ok(&["run", "on"])
        .stderr_has("port 8080: every request answered 503")
        .says("answers every request with 503 on port(s) 8080");
    assert_eq!(
        rules(&forward),
        [("1".to_string(), Some("503".to_string()))]
    );
    assert!(rules(&redirect).is_empty(), "the redirect stays as it is");
    p.ok(&["run", "on"]).says("nothing to change");
    assert_eq!(rules(&forward).len(), 1, "one rule, not two");

    p.ok(&["run", "off"])
        .says("forwards to its targets again on port(s) 8080");
    assert!(rules(&forward).is_empty());
    p.ok(&["run", "off"]).says("nothing to change");

    // Another rule at priority 1: named, nothing created.
    aws.block_on(async {
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&aws.config);
        elb.create_rule()
            .listener_arn(&forward)
            .priority(1)
            .conditions(
                RuleCondition::builder()
                    .field("path-pattern")
                    .values("/admin/*")
                    .build(),
            )
            .actions(
                Action::builder()
                    .r#type(ActionTypeEnum::FixedResponse)
                    .fixed_response_config(
                        FixedResponseActionConfig::builder()
                            .status_code("403")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
    });
    p.run(&["run", "on"])
        .expect(1)
        .says("priority 1 on the listener of port 8080 is taken by another rule");
    assert_eq!(
        rules(&forward),
        [("1".to_string(), Some("403".to_string()))]
    );
}

/// An ALB `name` with a target group `name`-tg and an RDS instance `name`-db, and CloudWatch's
/// figures for them over the last quarter hour (and the next two minutes: a minute may turn
/// while the test runs): 100 requests a minute answered in 20–80 ms, two healthy targets,
/// 15 GiB of 20 free, 10 connections. `burst` adds 5xx in the minute 3 minutes ago; `gap`
/// leaves that minute without any ALB data point.
fn soak_fixture(aws: &Moto, name: &str, burst: f64, gap: bool) -> (String, i64) {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
    aws.block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&aws.config);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&aws.config);
        let rds = aws_sdk_rds::Client::new(&aws.config);
        let cw = aws_sdk_cloudwatch::Client::new(&aws.config);
        let subnets: Vec<String> = ec2.describe_subnets().send().await.unwrap().subnets()[..2]
            .iter()
            .map(|s| s.subnet_id().unwrap().to_string())
            .collect();
        let vpc = ec2.describe_vpcs().send().await.unwrap().vpcs()[0]
            .vpc_id()
            .unwrap()
            .to_string();
        let lb = elb
            .create_load_balancer()
            .name(name)
            .set_subnets(Some(subnets))
            .send()
            .await
            .unwrap()
            .load_balancers()[0]
            .clone();
        let tg = elb
            .create_target_group()
            .name(format!("{name}-tg"))
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(3000)
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap()
            .target_groups()[0]
            .target_group_arn()
            .unwrap()
            .to_string();
        postgres_instance(&rds, &format!("{name}-db"))
            .send()
            .await
            .unwrap();
        let lb_dim = lb
            .load_balancer_arn()
            .unwrap()
            .split_once(":loadbalancer/")
            .unwrap()
            .1
            .to_string();
        let tg_dim = tg.rsplit_once(':').unwrap().1.to_string();
        let dim = |n: &str, v: &str| Dimension::builder().name(n).value(v).build();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            / 60
            * 60;
        for minute in -15..=2i64 {
            let at = aws_sdk_cloudwatch::primitives::DateTime::from_secs(now + minute * 60 + 30);
            let datum = |metric: &str, value: f64, dims: Vec<Dimension>| {
                MetricDatum::builder()
                    .metric_name(metric)
                    .value(value)
                    .timestamp(at)
                    .set_dimensions(Some(dims))
                    .build()
            };
            let mut alb = Vec::new();
            if !(gap && minute == -3) {
                alb.push(datum(
                    "RequestCount",
                    100.0,
                    vec![dim("LoadBalancer", &lb_dim)],
                ));
                for ms in [20.0, 40.0, 80.0] {
                    alb.push(datum(
                        "TargetResponseTime",
                        ms / 1000.0,
                        vec![dim("LoadBalancer", &lb_dim)],
                    ));
                }
                alb.push(datum(
                    "HealthyHostCount",
                    2.0,
                    vec![dim("TargetGroup", &tg_dim), dim("LoadBalancer", &lb_dim)],
                ));
                if minute == -3 && burst > 0.0 {
                    alb.push(datum(
                        "HTTPCode_Target_5XX_Count",
                        burst,
                        vec![dim("LoadBalancer", &lb_dim)],
                    ));
                }
            }
            cw.put_metric_data()
                .namespace("AWS/ApplicationELB")
                .set_metric_data(Some(alb))
                .send()
                .await
                .unwrap();
            let db = vec![dim("DBInstanceIdentifier", &format!("{name}-db"))];
            cw.put_metric_data()
                .namespace("AWS/RDS")
                .metric_data(datum(
                    "FreeStorageSpace",
                    15.0 * 1024f64.powi(3),
                    db.clone(),
                ))
                .metric_data(datum("DatabaseConnections", 10.0, db.clone()))
                .metric_data(datum("CPUUtilization", 12.5, db))
                .send()
                .await
                .unwrap();
        }
        (lb.dns_name().unwrap().to_string(), now - 3 * 60)
    })
}

fn gate_step(dns: &str, name: &str) -> String {
    format!(
        "[[phase.step]]\nid = \"gate\"\ndo = \"soak.gate\"\nload_balancer = \"{dns}\"\ntarget_group = \"{name}-tg\"\nrds_instance = \"{name}-db\"\nwindow = \"10m\"\ndelay = \"0s\"\nhealthy_window = \"10m\"\nheroku_errors_per_1000 = \"2\"\nheroku_p99_ms = \"100\"\n"
    )
}

/// The soak's go/no-go on CloudWatch's figures (moto's, put by the test; moto computes no
/// percentile, scripts/moto_server.py gives it CloudWatch's nearest rank): a healthy soak is a
/// go; a 5xx burst is a no-go naming the figure and its minute; a minute with no ALB data
/// point is no request and no healthy target.
#[test]
fn the_soak_gate_judges_cloudwatchs_figures_against_herokus_baseline() {
    let aws = Moto::new();
    let minute_text = |unix: i64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap()),
        )
        .to_string()
    };

    let (dns, _) = soak_fixture(&aws, "soak-ok", 0.0, false);
    let p = project(&gate_step(&dns, "soak-ok"));
    p.ok(&["run", "gate"]).says("go: every threshold held");
    let outputs = &p.step("gate")["outputs"];
    assert_eq!(outputs["verdict"], "go");
    // p99 of 20, 40, 80 ms repeated: 80 ms; 10 or 11 minutes of 100 requests.
    assert_eq!(outputs["p99_ms"], "80");
    assert!(
        ["1000", "1100"].contains(&outputs["requests"].as_str().unwrap()),
        "{outputs:#}"
    );
    let kept: serde_json::Value =
        serde_json::from_str(outputs["figures"].as_str().unwrap()).unwrap();
    let figure = |kept: &serde_json::Value, key: &str| {
        kept["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {kept:#}"))
            .clone()
    };
    assert!(
        figure(&kept, "requests")["points"]
            .as_array()
            .unwrap()
            .len()
            >= 10,
        "{kept:#}"
    );
    assert_eq!(
        figure(&kept, "rds_cpu")["points"][0][1],
        12.5,
        "RDS's CPU kept to be drawn"
    );

    // 1,000 requests; Heroku's 0.2% + 0.5 points = 0.7%: 30 5xx are 2.7% or more.
    let (dns, burst) = soak_fixture(&aws, "soak-5xx", 30.0, false);
    let p = project(&gate_step(&dns, "soak-5xx"));
    let out = p.run(&["run", "gate"]);
    assert_eq!(out.code(), 1, "{}", out.text());
    out.says(&format!(
        "no-go: 5xx rate (ALB target + ELB 5xx / RequestCount) at {}",
        minute_text(burst)
    ))
    .says("limit ≤ 0.70% (Heroku's 0.20% + 0.5 points)")
    .says("cutover rollback maintenance-on --chain");
    assert_eq!(p.step("gate")["outputs"]["verdict"], "no-go");
    // The report: the soak's figures in the JSON, an SVG chart per figure, and the no-go.
    let charts = p.path().join("charts");
    let out = p.ok(&[
        "report",
        "--format",
        "json",
        "--charts",
        charts.to_str().unwrap(),
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(doc["soak"]["verdict"], "no-go", "{:#}", doc["soak"]);
    let rate = figure(&doc["soak"], "error_pct");
    assert_eq!(rate["limit"]["kind"], "at_most");
    assert!(
        rate["points"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p[1].as_f64().unwrap() > 2.5),
        "the burst's minute: 30 5xx of 100 requests {rate:#}"
    );
    assert!(doc["soak"]["breaches"][0]
        .as_str()
        .unwrap()
        .starts_with("5xx rate (ALB target + ELB 5xx / RequestCount)"));
    let files = doc["soak"]["charts"].as_array().unwrap();
    assert_eq!(files.len(), 10, "{files:?}");
    let svg = std::fs::read_to_string(charts.join("soak-error_pct.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{svg}");
    assert!(
        svg.contains("5xx rate (%)") && svg.contains("limit ≤ 0.70%"),
        "{svg}"
    );
    assert!(svg.contains("<polyline"), "a line drawn: {svg}");
    let md = p.ok(&["report"]).stdout();
    assert!(
        md.contains("## Soak") && md.contains("judged: **no-go**"),
        "{md}"
    );
    assert!(
        md.contains("| 5xx rate (%) |") && md.contains("- no-go: 5xx rate"),
        "{md}"
    );
    // The soak view in a real terminal (tmux): the TUI draws the journal's evidence as charts.
    let t = ui_in_tmux("soak", &p, &[]);
    // The resume summary first (the journal has progress): any key closes it.
    t.keys("main", &["Escape", "S"]);
    let screen = t.wait_for(
        "main",
        "Soak: AWS against Heroku's baseline",
        Duration::from_secs(20),
    );
    for needle in [
        "the gate: NO-GO",
        "no-go: 5xx rate",
        "5xx rate",
        "limit ≤ 0.70",
        "RDS CPU 12.5%",
    ] {
        assert!(screen.contains(needle), "{needle}\n{screen}");
    }
    let braille = screen
        .chars()
        .filter(|c| ('\u{2801}'..='\u{28ff}').contains(c))
        .count();
    assert!(braille > 100, "charts in braille: {screen}");
    t.keys("main", &["Escape", "q"]);

    let (dns, gap) = soak_fixture(&aws, "soak-gap", 0.0, true);
    let p = project(&gate_step(&dns, "soak-gap"));
    p.run(&["run", "gate"]).expect(1).says(&format!(
        "no-go: healthy targets (HealthyHostCount) at {}: no data point",
        minute_text(gap)
    ));
}

/// IAM users with keys of their own and two sessions of one role, made in moto through boto3
/// (the tests' SDK set has no IAM client): `{name: [key, secret, token?, user_id?]}`.
fn approvers(aws: &Moto, prefix: &str) -> serde_json::Value {
    let script = format!(
        r#"
import boto3, json, os
E = os.environ["E"]
iam = boto3.client("iam", endpoint_url=E, region_name="us-east-1")
out = {{}}
for name in ["ana", "bea", "cal"]:
    user = iam.create_user(UserName="{prefix}-" + name)["User"]
    key = iam.create_access_key(UserName="{prefix}-" + name)["AccessKey"]
    out[name] = [key["AccessKeyId"], key["SecretAccessKey"], "", user["UserId"]]
iam.create_role(RoleName="{prefix}-deployer", AssumeRolePolicyDocument="{{}}")
sts = boto3.client("sts", endpoint_url=E, region_name="us-east-1",
                   aws_access_key_id=out["cal"][0], aws_secret_access_key=out["cal"][1])
for session in ["cal-one", "cal-two"]:
    c = sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/{prefix}-deployer",
                        RoleSessionName=session)["Credentials"]
    out[session] = [c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], ""]
print(json.dumps(out))
"#
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("E", &aws.endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `cutover ARGS` in `p` as the operator `who` (their own keys, their own `user@host`).
fn as_operator(p: &Project, keys: &serde_json::Value, who: &str, args: &[&str]) -> common::Outcome {
    let k = &keys[who];
    let mut env = vec![
        ("AWS_ACCESS_KEY_ID", k[0].as_str().unwrap()),
        ("AWS_SECRET_ACCESS_KEY", k[1].as_str().unwrap()),
    ];
    let actor = format!("{who}@laptop");
    env.push(("CUTOVER_ACTOR", &actor));
    if let Some(token) = k[2].as_str().filter(|t| !t.is_empty()) {
        env.push(("AWS_SESSION_TOKEN", token));
    }
    p.run_with(args, &env)
}

/// The digest a refused run asks approval for (`cutover approve STEP --digest D`).
fn asked_digest(out: &common::Outcome) -> String {
    let text = out.text();
    text.split("--digest ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest asked for: {text}"))
        .to_string()
}

fn approval_steps() -> String {
    let mut steps = String::new();
    for (id, n) in [
        ("apply", 1),
        ("pair", 2),
        ("edited", 1),
        ("denied", 1),
        ("late", 1),
        ("glass", 1),
        ("down", 1),
    ] {
        steps.push_str(&format!(
            "[[phase.step]]\nid = \"{id}\"\ndo = \"shell\"\nrun = \"echo {id} ${{what}} >> applied.txt\"\ndestructive = true\nconfirm = \"run {id}\"\napprovals = {n}\n\n"
        ));
    }
    steps
}

/// A second operator approves a destructive step, proven by STS (moto's: IAM users with keys of
/// their own; moto checks no signature, so a forged proof is refused only by real STS — here,
/// what is checked is that the identity is read from the signer's credential, and that the
/// binding holds). The requester's own approval never counts; two sessions of one role count
/// once; an edited variable voids an approval; so does time; a deny blocks until withdrawn;
/// break glass runs and is listed for review; the journal and the report hold who approved
/// what, with their ARN, UserId and STS request id.
#[test]
fn a_second_operator_approves_with_their_own_aws_identity_bound_to_what_will_run() {
    let aws = Moto::new();
    let keys = approvers(&aws, "appr");
    let text = runbook(&endpoint(), &approval_steps())
        .var("what", "v1")
        .render();
    let p = Project::with_text(&text);
    let ana = |args: &[&str]| as_operator(&p, &keys, "ana", args);
    let bea = |args: &[&str]| as_operator(&p, &keys, "bea", args);

    // Ana asks: nothing runs, the request names what approvers run.
    let out = ana(&["run", "apply", "--confirm", "run apply"]);
    assert_eq!(out.code(), 5, "{}", out.text());
    out.says("step `apply` awaits approval: 0 of 1 approval(s) in");
    let digest = asked_digest(&out);
    assert!(!p.file("applied.txt").exists());
    let asked = p.journal().events("apply", "approval_requested");
    assert_eq!(asked.len(), 1, "{}", p.journal().as_str());
    assert!(asked[0]["by_arn"]
        .as_str()
        .unwrap()
        .ends_with(":user/appr-ana"));
    assert_eq!(asked[0]["by_user_id"], keys["ana"][3]);

    // Her own approval is refused; Bea sees what she approves before she can.
    ana(&["approve", "apply", "--digest", &digest])
        .expect(5)
        .says("you asked for it");
    let out = bea(&["approve", "apply"]);
    assert_eq!(out.code(), 5, "{}", out.text());
    out.stdout_has("It will: ")
        .stdout_has(&format!("Digest: {digest}"));
    out.says(&format!("cutover approve apply --digest {digest}"));
    bea(&["approve", "apply", "--digest", "0000"])
        .expect(5)
        .says("is not what was asked for");
    bea(&[
        "approve",
        "apply",
        "--digest",
        &digest,
        "--note",
        "read the plan",
    ])
    .ok()
    .says("approved `apply`");

    // Ana runs it, with its phrase; the journal holds Bea's ARN, UserId and STS's request id.
    ana(&["run", "apply", "--confirm", "run apply"]).ok();
    assert_eq!(p.read("applied.txt"), "apply v1\n");
    let counted = p.journal().events("apply", "approval_considered");
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert!(counted[0]["by_arn"]
        .as_str()
        .unwrap()
        .ends_with(":user/appr-bea"));
    assert_eq!(counted[0]["by_user_id"], keys["bea"][3]);
    assert_eq!(counted[0]["standing"], "counted");
    assert_eq!(counted[0]["digest"], digest.as_str());
    assert!(!counted[0]["sts_request_id"].as_str().unwrap().is_empty());
    // The proof itself (a presigned URL: a session's token, a signature) is not journaled.
    assert!(!p.journal().contains("X-Amz-Signature"));

    // Two sessions of one role are one principal: with Bea's approval, two.
    let out = ana(&["run", "pair", "--confirm", "run pair"]);
    let digest = asked_digest(&out);
    for session in ["cal-one", "cal-two"] {
        as_operator(
            &p,
            &keys,
            session,
            &["approve", "pair", "--digest", &digest],
        )
        .ok();
    }
    let out = ana(&["run", "pair", "--confirm", "run pair"]);
    assert_eq!(out.code(), 5, "{}", out.text());
    out.says("1 of 2 approval(s) in")
        .says("superseded by a later approval of the same principal");
    bea(&["approve", "pair", "--digest", &digest]).ok();
    ana(&["run", "pair", "--confirm", "run pair"]).ok();

    // Approved, then a variable edited: what would run is not what was approved.
    let out = ana(&["run", "edited", "--confirm", "run edited"]);
    let digest = asked_digest(&out);
    bea(&["approve", "edited", "--digest", &digest]).ok();
    let out = ana(&[
        "--var",
        "what=v2",
        "run",
        "edited",
        "--confirm",
        "run edited",
    ]);
    assert_eq!(out.code(), 5, "{}", out.text());
    out.says(&format!(
        "what will run changed since it was approved (approved {digest}, now "
    ));
    assert!(!p.read("applied.txt").contains("edited"));

    // A deny wins until its author withdraws it.
    let out = ana(&["run", "denied", "--confirm", "run denied"]);
    let digest = asked_digest(&out);
    bea(&["deny", "denied", "--note", "not during the sale"]).ok();
    as_operator(
        &p,
        &keys,
        "cal",
        &["approve", "denied", "--digest", &digest],
    )
    .ok();
    ana(&["run", "denied", "--confirm", "run denied"])
        .expect(5)
        .says("a deny is in force until withdrawn");
    bea(&["deny", "denied", "--withdraw"]).ok();
    ana(&["run", "denied", "--confirm", "run denied"]).ok();

    // An approval expires (approval_ttl 3 s, a project of its own): void, named, and kept in
    // the record.
    let short =
        Project::with_text(&text.replacen("[runbook]\n", "[runbook]\napproval_ttl = \"3s\"\n", 1));
    let out = as_operator(
        &short,
        &keys,
        "ana",
        &["run", "late", "--confirm", "run late"],
    );
    let digest = asked_digest(&out);
    as_operator(
        &short,
        &keys,
        "bea",
        &["approve", "late", "--digest", &digest],
    )
    .ok();
    std::thread::sleep(Duration::from_secs(5));
    as_operator(
        &short,
        &keys,
        "ana",
        &["run", "late", "--confirm", "run late"],
    )
    .expect(5)
    .says("expired at");
    assert!(short
        .journal()
        .events("late", "approval_considered")
        .iter()
        .any(|e| e["standing"]
            .as_str()
            .unwrap()
            .starts_with("void: it expired at")));

    // STS out of reach: no approval can be checked, so nothing runs and nothing is asked;
    // break glass still runs, and records that it could not tell who.
    let dead = ["--endpoint-url", "http://127.0.0.1:9"];
    ana(&[&dead[..], &["run", "down", "--confirm", "run down"]].concat())
        .expect(5)
        .says("who asks cannot be told");
    assert!(!p.read("applied.txt").contains("down"));
    assert!(p.journal().events("down", "approval_requested").is_empty());
    ana(&[
        &dead[..],
        &[
            "run",
            "down",
            "--break-glass",
            "--note",
            "STS is down",
            "--confirm",
            "run down",
        ],
    ]
    .concat())
    .ok();
    assert!(p.read("applied.txt").contains("down v1"));
    let glass = p.journal().events("down", "break_glass");
    assert!(
        glass[0]["by_arn"]
            .as_str()
            .unwrap()
            .starts_with("(STS did not say: "),
        "{glass:?}"
    );

    // Break glass: recorded only when it runs (its phrase typed), with a reason.
    ana(&[
        "run",
        "glass",
        "--break-glass",
        "--note",
        "sev1, alone on call",
    ])
    .expect(5)
    .says("type its phrase");
    assert!(p.journal().events("glass", "break_glass").is_empty());
    ana(&[
        "run",
        "glass",
        "--break-glass",
        "--note",
        " ",
        "--confirm",
        "run glass",
    ])
    .expect(5)
    .says("a note is required");
    // Break glass: no approvals, a reason, the phrase; listed for review.
    ana(&[
        "run",
        "glass",
        "--break-glass",
        "--note",
        "sev1, alone on call",
        "--confirm",
        "run glass",
    ])
    .ok();
    let report = ana(&["report"]).stdout();
    assert!(report.contains("## Approvals"), "{report}");
    // Exactly what was approved: the request's digest and what it said the step will run.
    assert!(
        report.contains("approval(s) needed; it will: $ echo apply"),
        "{report}"
    );
    assert!(
        report.contains("approve by arn:aws:iam::123456789012:user/appr-bea (UserId "),
        "{report}"
    );
    // moto answered for STS here, and the record says so.
    assert!(
        report.contains(&format!("from {}/, not AWS's STS", endpoint())),
        "{report}"
    );
    // The proof (its signature; a session's token) is never journaled, refused or not.
    assert!(
        !p.journal().contains("X-Amz-Signature") && !p.journal().contains("X-Amz-Security-Token")
    );
    assert!(report.contains("### Break glass: to review"), "{report}");
    assert!(
        report.contains(
            "`glass`: run without its approvals by arn:aws:iam::123456789012:user/appr-ana"
        ),
        "{report}"
    );
    assert!(report.contains("“sev1, alone on call”"), "{report}");
}

/// On an S3 state, the approver on another machine (another state directory) reads the request
/// from S3 and posts there; the driver reads it at its next run.
#[test]
fn an_approval_from_another_machine_reaches_the_driver_through_s3() {
    let aws = Moto::new();
    let keys = approvers(&aws, "appr-s3");
    aws.block_on(async {
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&aws.config)
                .force_path_style(true)
                .build(),
        );
        let _ = s3.create_bucket().bucket("approvals-state").send().await;
    });
    let text = runbook(&endpoint(), &approval_steps())
        .var("what", "v1")
        .table("[state]\nbackend = \"s3://approvals-state/team\"")
        .render();
    let driver = Project::with_text(&text);
    let approver = Project::with_text(&text);
    let out = as_operator(
        &driver,
        &keys,
        "ana",
        &["run", "apply", "--confirm", "run apply"],
    );
    assert_eq!(out.code(), 5, "{}", out.text());
    let digest = asked_digest(&out);
    as_operator(
        &approver,
        &keys,
        "bea",
        &["approve", "apply", "--digest", &digest],
    )
    .ok()
    .says("Posted to s3://approvals-state/team/approvals/apply/");
    as_operator(
        &driver,
        &keys,
        "ana",
        &["run", "apply", "--confirm", "run apply"],
    )
    .ok();
    assert_eq!(driver.read("applied.txt"), "apply v1\n");
}

/// In the UI (a real terminal, tmux): Enter on a step awaiting approval asks no phrase and
/// shows who asked and what a second operator runs; once they approved (from their own
/// terminal and credentials), Enter asks for the phrase and the step runs.
#[test]
fn the_ui_asks_for_the_phrase_only_once_the_approval_is_in() {
    let aws = Moto::new();
    let keys = approvers(&aws, "appr-tui");
    let p = Project::new(&runbook(&endpoint(), &approval_steps()).var("what", "v1"));
    let key = |i: usize| keys["ana"][i].as_str().unwrap().to_string();
    let t = ui_in_tmux(
        "approvals",
        &p,
        &[
            format!("AWS_ACCESS_KEY_ID={}", key(0)),
            format!("AWS_SECRET_ACCESS_KEY={}", key(1)),
            "AWS_CONFIG_FILE=/nonexistent".to_string(),
            "AWS_SHARED_CREDENTIALS_FILE=/nonexistent".to_string(),
            "AWS_EC2_METADATA_DISABLED=true".to_string(),
        ],
    );
    t.keys("main", &["Enter"]);
    let screen = t.wait_for(
        "main",
        "awaiting approval: asked by arn:aws:iam::123456789012:user/appr-tui-ana",
        Duration::from_secs(30),
    );
    assert!(
        !screen.contains("to run it:"),
        "no phrase asked yet:\n{screen}"
    );
    assert!(
        screen.contains("cutover approve apply --digest"),
        "{screen}"
    );
    assert!(!p.file("applied.txt").exists());
    let digest = p.journal().events("apply", "approval_requested")[0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    as_operator(&p, &keys, "bea", &["approve", "apply", "--digest", &digest]).ok();
    t.keys("main", &["Enter"]);
    t.wait_for("main", "to run it:", Duration::from_secs(30));
    // Keys typed the instant a dialog opens do not count (a held key's repeat guard).
    std::thread::sleep(Duration::from_millis(400));
    t.text("main", "run apply");
    t.keys("main", &["Enter"]);
    let screen = t.wait_for(
        "main",
        "approve by arn:aws:iam::123456789012:user/appr-tui-bea: counted",
        Duration::from_secs(30),
    );
    p.wait_for("applied.txt", "apply v1");
    assert!(screen.contains("needs 1 approval(s)"), "{screen}");
    t.keys("main", &["q"]);
}

/// `cutover` (its UI) in a 140×44 tmux session `main` in the project's directory, with more
/// environment (`NAME=value`), once its checklist shows.
fn ui_in_tmux(name: &str, p: &Project, env: &[String]) -> tmux::TmuxServer {
    let t = tmux::TmuxServer::new(name);
    let command = format!("{}; sleep 600", common::run::shell_line(""));
    let mut args = vec![
        "new-session",
        "-d",
        "-s",
        "main",
        "-x",
        "140",
        "-y",
        "44",
        "-c",
        p.path().to_str().unwrap(),
        "-e",
        "TERM=xterm-256color",
    ];
    for e in env {
        args.extend(["-e", e.as_str()]);
    }
    args.push(&command);
    t.tmux(&args);
    t.wait_for("main", "Steps", Duration::from_secs(20));
    t
}
