//! What `cutover init --out DIR` writes from a shape (issue 29): a runbook for this app, and
//! the templates its scaffold step fills and writes into the app's repository — the Dockerfile
//! (from the app's own build), the Terraform (the bundled files, and for this app's other
//! processes, Scheduler jobs, Redis and other domains the files in assets/init/infra/ with
//! their values in `shape.auto.tfvars.json`), the deploy workflow (the release phase before
//! each deployment, every service deployed) and scripts/ecs-run.sh.
//!
//! The runbook is the bundled one (gengar's) with each part that is gengar's own replaced by
//! what the shape says: every replacement must find its text exactly once, so a change to the
//! bundled runbook that breaks one fails here, loudly. `tests/init.rs` reads the gengar fixture
//! and says exactly where the result differs from the bundled runbook, and why.

use std::collections::BTreeMap;

use super::dockerfile::{self, Generated};
use super::scheduler::Job;
use super::shape::Shape;
use super::sizes::{self, Fargate};
use super::vars::{aws_name, aws_region};

const BUNDLED_RUNBOOK: &str = include_str!("../../runbook.toml");

/// The bundled Terraform, filled by the scaffold step as for gengar.
const BASE_INFRA: &[(&str, &str)] = &[
    (
        "main.tf",
        include_str!("../../assets/templates/infra/main.tf"),
    ),
    (
        "variables.tf",
        include_str!("../../assets/templates/infra/variables.tf"),
    ),
    (
        "outputs.tf",
        include_str!("../../assets/templates/infra/outputs.tf"),
    ),
    (
        "vpc.tf",
        include_str!("../../assets/templates/infra/vpc.tf"),
    ),
    (
        "ecs.tf",
        include_str!("../../assets/templates/infra/ecs.tf"),
    ),
    (
        "rds.tf",
        include_str!("../../assets/templates/infra/rds.tf"),
    ),
    (
        "alb.tf",
        include_str!("../../assets/templates/infra/alb.tf"),
    ),
    (
        "ecr.tf",
        include_str!("../../assets/templates/infra/ecr.tf"),
    ),
    (
        "iam.tf",
        include_str!("../../assets/templates/infra/iam.tf"),
    ),
    (
        "ssm.tf",
        include_str!("../../assets/templates/infra/ssm.tf"),
    ),
];

/// This app's own parts: each driven by shape.auto.tfvars.json, empty by default.
const INIT_INFRA: &[(&str, &str)] = &[
    (
        "processes.tf",
        include_str!("../../assets/init/infra/processes.tf"),
    ),
    (
        "schedules.tf",
        include_str!("../../assets/init/infra/schedules.tf"),
    ),
    ("redis.tf", include_str!("../../assets/init/infra/redis.tf")),
    (
        "domains.tf",
        include_str!("../../assets/init/infra/domains.tf"),
    ),
];

const ECS_RUN: &str = include_str!("../../assets/templates/scripts/ecs-run.sh");

/// The ElastiCache engine the Redis node runs.
const REDIS_ENGINE: &str = "7.1";

/// How the app sits in its repository, and what the operator gave.
#[derive(Debug, Clone)]
pub struct Options {
    /// The app's directory inside the repository ("." for the root).
    pub app_dir: String,
    /// The repository as the runbook names it (`app_repo`: relative to the runbook, or absolute).
    pub app_repo: String,
    /// Heroku Scheduler's jobs, from scheduler.toml (none when the app has no Scheduler).
    pub jobs: Vec<Job>,
    /// What `cutover cost`'s bundled table prices on Heroku's side (the rest is priced from
    /// the API, or named).
    pub priced: Priced,
}

/// The Heroku dyno sizes and Postgres plans the cost table has prices for.
#[derive(Debug, Clone, Default)]
pub struct Priced {
    pub dynos: std::collections::BTreeSet<String>,
    pub postgres: std::collections::BTreeSet<String>,
}

/// One file `init` writes, relative to --out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub text: String,
    pub executable: bool,
}

/// Everything generated, and what the operator must still decide.
#[derive(Debug, Clone)]
pub struct Output {
    pub files: Vec<File>,
    pub decisions: Vec<String>,
    /// What the generator assumed, said once (the Dockerfile's base, versions, …).
    pub assumptions: Vec<String>,
}

fn file(path: impl Into<String>, text: impl Into<String>) -> File {
    File {
        path: path.into(),
        text: text.into(),
        executable: false,
    }
}

/// A process other than web and release, as it runs on ECS.
struct Service {
    kind: String,
    command: String,
    count: u32,
    cpu: u32,
    memory: u32,
}

/// The hosted zone of a host name: the name without its first label.
/// An apex (`example.com`) is its own zone.
fn zone_of(host: &str) -> String {
    if host.matches('.').count() <= 1 {
        return host.to_string();
    }
    host.split_once('.')
        .map(|(_, z)| z.to_string())
        .unwrap_or_else(|| host.to_string())
}

/// Config vars that point at what does not move (the primary database's other names, Heroku
/// Redis's other URLs): never copied to SSM, nor declared for the tasks.
fn skipped_vars(shape: &Shape, redis: bool) -> Vec<String> {
    let primary = shape.primary_postgres();
    let mut skip: Vec<String> = primary
        .map(|a| {
            a.attachments
                .iter()
                .filter(|x| *x != "DATABASE")
                .map(|x| format!("{x}_URL"))
                .collect()
        })
        .unwrap_or_default();
    if redis {
        skip.extend(
            shape
                .addons
                .iter()
                .filter(|a| a.is_redis())
                .flat_map(|a| a.config_vars.iter().filter(|v| *v != "REDIS_URL").cloned()),
        );
    }
    skip
}

fn quoted(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// The app's path inside the repository, joined to `rest` (`"."` vanishes).
fn in_app(app_dir: &str, rest: &str) -> String {
    if app_dir == "." || app_dir.is_empty() {
        rest.to_string()
    } else {
        format!("{app_dir}/{rest}")
    }
}

pub fn generate(shape: &Shape, options: &Options) -> Result<Output, String> {
    let mut decisions = shape.decisions.clone();
    let mut assumptions = Vec::new();
    let name = aws_name(&shape.app);
    let toolchain = shape
        .build
        .as_ref()
        .map(|b| b.toolchain.clone())
        .unwrap_or_default();
    let web = shape.processes.iter().find(|p| p.kind == "web");
    let release = shape
        .processes
        .iter()
        .find(|p| p.kind == "release")
        .and_then(|p| p.command.clone());
    let size_of = |size: Option<&str>| match size.map(sizes::for_dyno) {
        Some(Fargate::Task { cpu, memory }) => (cpu, memory),
        // Larger than any task: Fargate's largest (named in the shape's decisions).
        Some(Fargate::TooLarge { largest, .. }) => (16384, largest),
        // Unknown (named in the shape's decisions) or not scaled: the plan's own size.
        _ => (512, 1024),
    };
    let mut services = Vec::new();
    for p in &shape.processes {
        if matches!(p.kind.as_str(), "web" | "release") {
            continue;
        }
        // The type names the ECS service and stands in the runbook's shell text and the
        // workflow: only a name Heroku allows (letters, digits, `-`, `_`) gets there.
        let allowed = !p.kind.is_empty()
            && p.kind.len() <= 30
            && p.kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !allowed {
            decisions.push(format!(
                "process type {:?} is not a name Heroku allows (letters, digits, `-`, `_`): no service for it",
                p.kind
            ));
            continue;
        }
        let Some(command) = p.command.clone() else {
            decisions.push(format!(
                "`{}` has no command anywhere (API or Procfile): no service for it",
                p.kind
            ));
            continue;
        };
        let (cpu, memory) = size_of(p.size.as_deref());
        let count = p.quantity.unwrap_or(0);
        if count == 0 {
            decisions.push(format!(
                "`{}` is at 0 dynos on Heroku: its service is made with 0 tasks",
                p.kind
            ));
        }
        services.push(Service {
            kind: p.kind.clone(),
            command,
            count,
            cpu,
            memory,
        });
    }
    let redis = shape.addons.iter().find(|a| a.is_redis());
    let redis_node = match redis {
        Some(a) => match sizes::redis_node(&a.plan) {
            Ok((node, memory)) => Some((node.to_string(), memory)),
            Err(why) => {
                decisions.push(why);
                Some(("cache.t4g.small".to_string(), 0))
            }
        },
        None => None,
    };
    if shape.addons.iter().filter(|a| a.is_redis()).count() > 1 {
        decisions
            .push("more than one Heroku Redis: only the first becomes ElastiCache".to_string());
    }
    let has_scheduler = shape.addons.iter().any(|a| a.service == "scheduler");
    if has_scheduler && options.jobs.is_empty() {
        decisions.push(
            "Heroku Scheduler is attached but scheduler.toml lists no job: copy its jobs there (Scheduler has no API) and run init again"
                .to_string(),
        );
    }
    let health_path = match toolchain.framework.as_deref() {
        Some("rails") => {
            assumptions.push("the ALB's health check requests /up: Rails' own health check (config/routes.rb must keep `get \"up\" => \"rails/health#show\"`)".to_string());
            decisions.push("Rails' force_ssl redirects the ALB's plain-HTTP health check (a 301 is unhealthy): exclude /up, e.g. config.ssl_options = { redirect: { exclude: ->(request) { request.path == \"/up\" } } }".to_string());
            "/up"
        }
        _ => {
            decisions.push("the ALB's health check requests /health: the app must answer 200 there (no health endpoint of its own was found); change health_path in infra/shape.auto.tfvars.json and the runbook's smoke-health if it has another".to_string());
            "/health"
        }
    };

    // --- the Dockerfile ---------------------------------------------------------------------
    let mut files = Vec::new();
    match dockerfile::generate(
        &shape.app,
        &toolchain,
        web.and_then(|w| w.command.as_deref()),
    ) {
        Generated::Files {
            dockerfile,
            dockerignore,
            assumptions: a,
        } => {
            files.push(file(
                format!("templates/{}", in_app(&options.app_dir, "Dockerfile")),
                dockerfile,
            ));
            files.push(file(
                format!("templates/{}", in_app(&options.app_dir, ".dockerignore")),
                dockerignore,
            ));
            assumptions.extend(a);
        }
        Generated::Own(f) => assumptions.push(format!(
            "the app's own {f} builds the image: no Dockerfile written"
        )),
        Generated::Unknown(why) => decisions.push(why),
    }

    // --- the Terraform ----------------------------------------------------------------------
    for (n, text) in BASE_INFRA.iter().chain(INIT_INFRA) {
        files.push(file(format!("templates/infra/{n}"), *text));
    }
    let (cpu, memory) = size_of(web.and_then(|w| w.size.as_deref()));
    let mut tfvars = serde_json::Map::new();
    tfvars.insert("health_path".into(), health_path.into());
    tfvars.insert(
        "desired_count".into(),
        web.and_then(|w| w.quantity).unwrap_or(1).into(),
    );
    tfvars.insert("task_cpu".into(), cpu.into());
    tfvars.insert("task_memory".into(), memory.into());
    let arm = shape
        .build
        .as_ref()
        .is_none_or(|b| b.architecture.0 != "x86_64");
    tfvars.insert(
        "cpu_architecture".into(),
        if arm { "ARM64" } else { "X86_64" }.into(),
    );
    tfvars.insert("env_example_path".into(), "heroku-config-vars.env".into());
    // RDS takes letters, digits and underscores for the database and its master user, where
    // an app's name has hyphens ("rails-app"): the template's defaults would be refused.
    let database = db_identifier(&name);
    if database != name {
        tfvars.insert("db_name".into(), database.clone().into());
        tfvars.insert("db_username".into(), format!("{database}_admin").into());
    }
    // The primary Heroku Postgres' plan: the RDS class with its memory, storage autoscaling to
    // its cap, a standby where the plan keeps one.
    let primary = shape.primary_postgres();
    let rds = match primary.map(|a| sizes::rds_for_postgres(&a.plan)) {
        Some(Ok(rds)) => {
            assumptions.push(format!(
                "RDS {}{}, storage growing to {} GB: the Heroku Postgres plan's memory and storage cap",
                rds.class,
                if rds.multi_az { " Multi-AZ (the plan keeps a standby)" } else { "" },
                rds.max_storage_gb
            ));
            Some(rds)
        }
        Some(Err(why)) => {
            decisions.push(why);
            None
        }
        None => {
            decisions.push("no Heroku Postgres is attached as DATABASE: the RDS instance is the plan's db.t4g.micro, and there is no database to move".to_string());
            None
        }
    };
    if let Some(rds) = &rds {
        tfvars.insert("db_instance_class".into(), rds.class.into());
        tfvars.insert("db_max_storage_gb".into(), rds.max_storage_gb.into());
        tfvars.insert("db_multi_az".into(), rds.multi_az.into());
    }
    let processes: serde_json::Map<String, serde_json::Value> = services
        .iter()
        .map(|s| {
            (
                s.kind.clone(),
                serde_json::json!({"command": s.command, "count": s.count, "cpu": s.cpu, "memory": s.memory}),
            )
        })
        .collect();
    tfvars.insert("processes".into(), processes.into());
    let schedules: serde_json::Map<String, serde_json::Value> = options
        .jobs
        .iter()
        .map(|j| {
            (
                j.name.clone(),
                serde_json::json!({"expression": j.expression, "command": j.command}),
            )
        })
        .collect();
    tfvars.insert("schedules".into(), schedules.into());
    tfvars.insert(
        "redis".into(),
        match &redis_node {
            Some((node, _)) => {
                serde_json::json!({"node_type": node, "engine_version": REDIS_ENGINE})
            }
            None => serde_json::Value::Null,
        },
    );
    let extra_domains: BTreeMap<String, String> = shape
        .domains
        .iter()
        .skip(1)
        .map(|d| (d.hostname.clone(), zone_of(&d.hostname)))
        .collect();
    tfvars.insert(
        "extra_domains".into(),
        serde_json::to_value(&extra_domains).unwrap_or_default(),
    );
    files.push(file(
        "templates/infra/shape.auto.tfvars.json",
        format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::Value::Object(tfvars)).unwrap_or_default()
        ),
    ));
    // Every config var Heroku sets, by name: each becomes an SSM SecureString the tasks read.
    let mut keys = format!(
        "# The config vars of {} on Heroku, by name only (`cutover init`): each becomes an SSM\n\
         # SecureString that the tasks read; the runbook's ssm-sync step copies the values.\n",
        shape.app
    );
    let skipped = skipped_vars(shape, redis.is_some());
    let mut names: Vec<String> = shape
        .config_vars
        .iter()
        .filter(|n| !skipped.contains(n))
        .cloned()
        .collect();
    for (needed, wanted) in [("REDIS_URL", redis.is_some()), ("DATABASE_URL", true)] {
        if wanted && !names.iter().any(|n| n == needed) {
            names.push(needed.to_string());
        }
    }
    names.sort();
    for n in names {
        keys.push_str(&format!("{n}=\n"));
    }
    files.push(file("templates/infra/heroku-config-vars.env", keys));

    // --- the workflow and ecs-run.sh --------------------------------------------------------
    files.push(file(
        "templates/.github/workflows/deploy.yml",
        workflow(&options.app_dir, release.as_deref(), &services),
    ));
    files.push(File {
        path: "templates/scripts/ecs-run.sh".to_string(),
        text: ECS_RUN.to_string(),
        executable: true,
    });

    // --- the runbook ------------------------------------------------------------------------
    let parts = Parts {
        name: &name,
        cache_node: redis_node.as_ref().map(|(n, _)| n.as_str()),
        rds: rds.as_ref(),
        health_path,
        release: release.as_deref(),
        services: &services,
        redis: redis_node.is_some(),
        web_size: (cpu, memory),
    };
    let runbook = runbook(shape, options, &parts, &mut decisions)?;
    files.push(file("runbook.toml", runbook));
    Ok(Output {
        files,
        decisions,
        assumptions,
    })
}

/// The deploy workflow: the image built and pushed, the release phase as a one-off task of the
/// new task definition (a failing release stops the deployment), then every service deployed
/// with the new image, then each waited for.
fn workflow(app_dir: &str, release: Option<&str>, services: &[Service]) -> String {
    let context = if app_dir == "." || app_dir.is_empty() {
        ".".to_string()
    } else {
        app_dir.to_string()
    };
    let paths = if context == "." {
        String::new()
    } else {
        format!("    paths: [\"{context}/**\"]\n")
    };
    let release_step = match release {
        Some(command) => format!(
            "
      # Heroku's release phase: a one-off task of the new task definition; a failure stops
      # the deployment here, before any service runs the new image.
      - name: Release phase as a one-off ECS task
        env:
          TASK_DEFINITION: ${{{{ steps.register.outputs.arn }}}}
          RELEASE: {}
        run: |
          network=$(aws ecs describe-services --cluster \"$CLUSTER\" --services \"$SERVICE\" \\
            --query 'services[0].networkConfiguration' --output json)
          overrides=$(jq -n --arg name \"$CONTAINER\" --arg command \"$RELEASE\" \\
            '{{containerOverrides: [{{name: $name, command: [\"/bin/sh\", \"-c\", $command]}}]}}')
          task=$(aws ecs run-task --cluster \"$CLUSTER\" --task-definition \"$TASK_DEFINITION\" \\
            --launch-type FARGATE --network-configuration \"$network\" --overrides \"$overrides\" \\
            --query 'tasks[0].taskArn' --output text)
          # `aws ecs wait tasks-stopped` gives up after 10 minutes: a long migration is waited for.
          for _ in $(seq 360); do
            status=$(aws ecs describe-tasks --cluster \"$CLUSTER\" --tasks \"$task\" \\
              --query 'tasks[0].lastStatus' --output text)
            [ \"$status\" = STOPPED ] && break
            sleep 10
          done
          code=$(aws ecs describe-tasks --cluster \"$CLUSTER\" --tasks \"$task\" \\
            --query 'tasks[0].containers[0].exitCode' --output text)
          echo \"the release phase ended $status with exit code $code\"
          test \"$code\" = \"0\"
",
            // A JSON string is a YAML double-quoted scalar.
            serde_json::Value::String(format!("exec {command}"))
        ),
        None => String::new(),
    };
    let mut deploy_processes = String::new();
    let mut names = vec!["\"$SERVICE\"".to_string()];
    for s in services {
        deploy_processes.push_str(&format!(
            "
      - name: Deploy {kind} (its own task definition, the new image)
        env:
          PROCESS: {kind}
          IMAGE: ${{{{ steps.ecr.outputs.registry }}}}/${{{{ env.ECR_REPOSITORY }}}}:${{{{ github.sha }}}}
        run: |
          family=\"$CONTAINER-$PROCESS\"
          aws ecs describe-task-definition --task-definition \"$family\" --query taskDefinition \\
            | jq --arg image \"$IMAGE\" '.containerDefinitions[0].image = $image
                | del(.taskDefinitionArn, .revision, .status, .requiresAttributes, .compatibilities, .registeredAt, .registeredBy, .deregisteredAt)' \\
            > \"$family.json\"
          arn=$(aws ecs register-task-definition --cli-input-json \"file://$family.json\" \\
            --query taskDefinition.taskDefinitionArn --output text)
          aws ecs update-service --cluster \"$CLUSTER\" --service \"$family\" \\
            --task-definition \"$arn\" --force-new-deployment >/dev/null
",
            kind = s.kind
        ));
        names.push(format!("\"$CONTAINER-{}\"", s.kind));
    }
    let all = names.join(" ");
    // DescribeServices takes at most 10 services at a time.
    let wait: String = names
        .chunks(10)
        .map(|c| {
            format!(
                "          aws ecs wait services-stable --cluster \"$CLUSTER\" --services {}\n",
                c.join(" ")
            )
        })
        .collect();
    format!(
        "# Deploys the app to ECS Fargate on every push to main (replaces the Heroku deploy).
# Written by `cutover init` from what Heroku runs; filled by the runbook's scaffold step.
name: deploy

on:
  push:
    branches: [main]
{paths}  workflow_dispatch:

permissions:
  id-token: write # OIDC: no long-lived AWS keys
  contents: read

concurrency:
  group: deploy
  cancel-in-progress: false

env:
  AWS_REGION: @@aws_region@@
  ECR_REPOSITORY: @@ecr_repository@@
  CLUSTER: @@cluster@@
  SERVICE: @@service@@
  CONTAINER: @@app@@

jobs:
  deploy:
    runs-on: ubuntu-latest
    timeout-minutes: 45
    steps:
      - name: Checkout
        uses: actions/checkout@v4

      - name: AWS credentials (OIDC)
        uses: aws-actions/configure-aws-credentials@v4
        with:
          role-to-assume: ${{{{ secrets.AWS_ROLE_ARN }}}}
          aws-region: ${{{{ env.AWS_REGION }}}}

      - name: Log in to ECR
        id: ecr
        uses: aws-actions/amazon-ecr-login@v2

      - name: Set up QEMU
        uses: docker/setup-qemu-action@v3

      - name: Set up Buildx
        uses: docker/setup-buildx-action@v3

      - name: Build and push (git SHA and latest)
        uses: docker/build-push-action@v6
        with:
          context: {context}
          platforms: @@image_platform@@
          push: true
          tags: |
            ${{{{ steps.ecr.outputs.registry }}}}/${{{{ env.ECR_REPOSITORY }}}}:${{{{ github.sha }}}}
            ${{{{ steps.ecr.outputs.registry }}}}/${{{{ env.ECR_REPOSITORY }}}}:latest

      - name: Task definition with the new image
        id: taskdef
        run: |
          # What DescribeTaskDefinition adds (its ARN, revision, status...) is refused by
          # RegisterTaskDefinition: dropped here, as the deploy action would.
          aws ecs describe-task-definition --task-definition \"$SERVICE\" --query taskDefinition \\
            | jq 'del(.taskDefinitionArn, .revision, .status, .requiresAttributes, .compatibilities,
                .registeredAt, .registeredBy, .deregisteredAt)' > taskdef.json
          echo \"file=taskdef.json\" >> \"$GITHUB_OUTPUT\"

      - name: Render the image into it
        id: render
        uses: aws-actions/amazon-ecs-render-task-definition@v1
        with:
          task-definition: ${{{{ steps.taskdef.outputs.file }}}}
          container-name: ${{{{ env.CONTAINER }}}}
          image: ${{{{ steps.ecr.outputs.registry }}}}/${{{{ env.ECR_REPOSITORY }}}}:${{{{ github.sha }}}}

      - name: Register it
        id: register
        run: |
          arn=$(aws ecs register-task-definition --cli-input-json \"file://${{{{ steps.render.outputs.task-definition }}}}\" \\
            --query taskDefinition.taskDefinitionArn --output text)
          echo \"arn=$arn\" >> \"$GITHUB_OUTPUT\"
{release_step}
      - name: Deploy web (force a new deployment)
        env:
          TASK_DEFINITION: ${{{{ steps.register.outputs.arn }}}}
        run: |
          aws ecs update-service --cluster \"$CLUSTER\" --service \"$SERVICE\" \\
            --task-definition \"$TASK_DEFINITION\" --force-new-deployment >/dev/null
{deploy_processes}
      - name: Wait for stability
        run: |
{wait}
      # A circuit breaker's rollback is \"stable\" too: what runs must be the new image.
      - name: Check the new image runs
        env:
          IMAGE: ${{{{ steps.ecr.outputs.registry }}}}/${{{{ env.ECR_REPOSITORY }}}}:${{{{ github.sha }}}}
        run: |
          set -o pipefail
          for service in {all}; do
            # The rollout may still be finishing when the service is first stable.
            for _ in $(seq 1 30); do
              primary=$(aws ecs describe-services --cluster \"$CLUSTER\" --services \"$service\" \\
                --query \"services[0].deployments[?status=='PRIMARY'] | [0]\" --output json)
              state=$(jq -r '.rolloutState // \"COMPLETED\"' <<<\"$primary\")
              [ \"$state\" = IN_PROGRESS ] || break
              sleep 10
            done
            definition=$(jq -r '.taskDefinition // \"\"' <<<\"$primary\")
            if [ -z \"$definition\" ]; then
              echo \"::error::$service has no PRIMARY deployment\"
              exit 1
            fi
            images=$(aws ecs describe-task-definition --task-definition \"$definition\" \\
              --query 'taskDefinition.containerDefinitions[].image' --output text | tr '\\t' '\\n')
            echo \"$service: $definition, rollout $state\"
            if ! grep -qxF \"$IMAGE\" <<<\"$images\"; then
              echo \"::error::$service runs $(tr '\\n' ' ' <<<\"$images\")and not $IMAGE: ECS rolled the deployment back ($(jq -r '.rolloutStateReason // \"no reason given\"' <<<\"$primary\"))\"
              exit 1
            fi
            if [ \"$state\" != COMPLETED ]; then
              echo \"::error::$service's rollout is $state: $(jq -r '.rolloutStateReason // \"no reason given\"' <<<\"$primary\")\"
              exit 1
            fi
          done
"
    )
}

/// The RDS database name for an app's AWS name: RDS takes a letter first, then letters, digits
/// and underscores (at most 63; the master user adds `_admin`).
pub fn db_identifier(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        id.insert_str(0, "app_");
    }
    id.truncate(57);
    // Names RDS refuses as a database or its master user: PostgreSQL's reserved words and
    // RDS's own roles and databases (an app named "order" or "user" exists on Heroku).
    const RESERVED: &[&str] = &[
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "constraint",
        "create",
        "default",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "having",
        "in",
        "into",
        "leading",
        "limit",
        "not",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "placing",
        "postgres",
        "primary",
        "rdsadmin",
        "references",
        "returning",
        "select",
        "table",
        "template0",
        "template1",
        "then",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "when",
        "where",
        "window",
        "with",
    ];
    if RESERVED.contains(&id.as_str()) {
        id.push_str("_app");
    }
    id
}

/// Replaces `from` (found exactly once) with `to`; `what` names the edit in the error.
fn edit(text: &mut String, what: &str, from: &str, to: &str) -> Result<(), String> {
    match text.matches(from).count() {
        1 => {
            *text = text.replacen(from, to, 1);
            Ok(())
        }
        n => Err(format!(
            "the bundled runbook changed: {what} expects {from:?} once, found it {n} times (src/heroku/generate.rs)"
        )),
    }
}

/// The `[[phase.step]]` block of `id`: its byte range (from its header to the next header,
/// or to the rule before the next phase).
fn step_range(text: &str, id: &str) -> Result<std::ops::Range<usize>, String> {
    let needle = format!("[[phase.step]]\nid = \"{id}\"\n");
    let start = text
        .find(&needle)
        .ok_or_else(|| format!("the bundled runbook has no step {id} (src/heroku/generate.rs)"))?;
    let rest = &text[start + needle.len()..];
    let end = ["\n[[phase.step]]\n", "\n# ----", "\n[[phase]]\n"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .map_or(text.len(), |i| start + needle.len() + i + 1);
    Ok(start..end)
}

/// A block as the runbook lays steps out: no blank line before it, one after it (none at the
/// end of the file).
fn laid_out(block: &str, at_end: bool) -> String {
    let body = block.trim_matches('\n');
    match (body.is_empty(), at_end) {
        (true, _) => String::new(),
        (false, true) => format!("{body}\n"),
        (false, false) => format!("{body}\n\n"),
    }
}

fn replace_step(text: &mut String, id: &str, with: &str) -> Result<(), String> {
    let range = step_range(text, id)?;
    let at_end = range.end == text.len();
    text.replace_range(range, &laid_out(with, at_end));
    Ok(())
}

fn insert_after_step(text: &mut String, id: &str, block: &str) -> Result<(), String> {
    let range = step_range(text, id)?;
    let at_end = range.end == text.len();
    if at_end && !text.ends_with("\n\n") {
        text.push('\n');
    }
    let at = if at_end { text.len() } else { range.end };
    text.insert_str(at, &laid_out(block, at_end));
    Ok(())
}

/// Sets `key` in `[vars]` (its line must be there once).
fn set_var(text: &mut String, key: &str, value: &str) -> Result<(), String> {
    let start = text
        .find("\n[vars]\n")
        .ok_or("the bundled runbook has no [vars]")?;
    let end = text[start..]
        .find("\n[secrets]\n")
        .map_or(text.len(), |e| start + e);
    let prefix = format!("\n{key} = ");
    let at = text[start..end]
        .find(&prefix)
        .map(|i| start + i + 1)
        .ok_or_else(|| format!("the bundled runbook's [vars] has no {key}"))?;
    let line_end = text[at..].find('\n').map_or(text.len(), |e| at + e);
    text.replace_range(at..line_end, &format!("{key} = {}", quoted(value)));
    Ok(())
}

/// What the runbook is generated from, besides the shape.
struct Parts<'a> {
    name: &'a str,
    /// The RDS instance for the primary Heroku Postgres, when its plan is known.
    rds: Option<&'a sizes::Rds>,
    /// The ElastiCache node replacing Heroku Redis.
    cache_node: Option<&'a str>,
    health_path: &'a str,
    release: Option<&'a str>,
    services: &'a [Service],
    redis: bool,
    /// The web service's Fargate CPU units and memory (MiB).
    web_size: (u32, u32),
}

fn runbook(
    shape: &Shape,
    options: &Options,
    parts: &Parts,
    decisions: &mut Vec<String>,
) -> Result<String, String> {
    let Parts {
        name,
        rds,
        cache_node,
        health_path,
        release,
        services,
        redis,
        web_size: (cpu, memory),
    } = *parts;
    let jobs = &options.jobs;
    let mut t = BUNDLED_RUNBOOK.to_string();
    let app_dir = options.app_dir.as_str();
    let toolchain = shape
        .build
        .as_ref()
        .map(|b| b.toolchain.clone())
        .unwrap_or_default();

    // The header and [runbook].
    let header_end = t.find("\n[runbook]\n").ok_or("no [runbook]")?;
    t.replace_range(
        ..header_end,
        &format!(
            "# The migration of {} from Heroku to AWS ECS Fargate, RDS PostgreSQL 16, an ALB and SSM\n\
             # Parameter Store: written by `cutover init --from-heroku {}` from what Heroku runs\n\
             # (shape.json beside it says where each fact came from). `cutover validate` checks this file.\n\
             #\n\
             # Strings may use ${{var}}, ${{secret.NAME}} and ${{steps.ID.outputs.NAME}}; write $${{X}} for a\n\
             # literal (shell) ${{X}}. Shell steps run with bash -e -o pipefail, and every value reaches them\n\
             # as data: each ${{...}} becomes a quoted expansion of an environment variable that holds it\n\
             # (`cutover plan` shows the command as it runs), so no value is ever run as code and no secret\n\
             # is on a command line.\n",
            shape.app, shape.app
        ),
    );
    edit(
        &mut t,
        "[runbook] name",
        "name = \"gengar: Heroku → AWS ECS Fargate\"\napp = \"gengar\"\n",
        &format!(
            "name = {}\napp = {}\n",
            quoted(&format!("{}: Heroku → AWS ECS Fargate", shape.app)),
            quoted(name)
        ),
    )?;

    // [vars]: what the shape says; what it cannot say is set to a value that fails safe and
    // listed as a decision.
    set_var(&mut t, "app", name)?;
    set_var(&mut t, "heroku_app", &shape.app)?;
    match shape.region.as_deref().and_then(aws_region) {
        Some(r) => set_var(&mut t, "aws_region", r)?,
        None => decisions.push(format!(
            "Heroku's region {:?} has no AWS region in cutover's table: set aws_region",
            shape.region
        )),
    }
    set_var(&mut t, "aws_account_id", "000000000000")?;
    decisions.push("set aws_account_id in runbook.toml: every AWS step refuses any other account, and 000000000000 is none".to_string());
    match shape.domains.first() {
        Some(d) => {
            set_var(&mut t, "domain", &d.hostname)?;
            set_var(&mut t, "hosted_zone", &zone_of(&d.hostname))?;
        }
        None => {
            set_var(&mut t, "domain", &format!("{name}.example.invalid"))?;
            set_var(&mut t, "hosted_zone", "example.invalid")?;
            decisions.push("the app has no custom domain on Heroku: set domain and hosted_zone to the name users reach".to_string());
        }
    }
    set_var(&mut t, "app_repo", &options.app_repo)?;
    for key in ["cluster", "service", "rds_instance", "ecr_repository"] {
        set_var(&mut t, key, name)?;
    }
    set_var(&mut t, "local_image", &format!("{name}:local"))?;
    set_var(&mut t, "ssm_prefix", &format!("/{name}/prod/"))?;
    set_var(&mut t, "log_group", &format!("/ecs/{name}"))?;
    set_var(&mut t, "target_group", &format!("{name}-tg"))?;
    if let Some(b) = &shape.build {
        set_var(
            &mut t,
            "image_platform",
            if b.architecture.0 == "x86_64" {
                "linux/amd64"
            } else {
                "linux/arm64"
            },
        )?;
    }
    set_var(&mut t, "s3_bucket", "")?;
    set_var(&mut t, "github_repository", "OWNER/REPOSITORY")?;
    set_var(&mut t, "budget_email", "")?;
    decisions.push("set s3_bucket (the bucket the app uses, if any), github_repository (whose workflow deploys) and budget_email in runbook.toml".to_string());
    edit(
        &mut t,
        "cron_log_pattern",
        "# A line the in-process cron (@nestjs/schedule) writes, to see it running on ECS.\ncron_log_pattern = \"UsageResetService\"\n",
        "",
    )?;

    // [secrets]
    edit(
        &mut t,
        "RDS_DATABASE_URL's database",
        "@RDS_ADDRESS:5432/gengar?",
        &format!("@RDS_ADDRESS:5432/{}?", db_identifier(name)),
    )?;
    if redis {
        edit(
            &mut t,
            "the Redis secret",
            "\n# Every AWS action first checks",
            "ELASTICACHE_REDIS_URL = { command = \"terraform -chdir=${app_repo}/infra output -raw redis_url\", description = \"ElastiCache's rediss:// URL with its AUTH token, as Terraform made it (never in a file)\" }\n\n# Every AWS action first checks",
        )?;
    }

    // [cost]: the formation.
    let web = shape.processes.iter().find(|p| p.kind == "web");
    let arch = if shape
        .build
        .as_ref()
        .is_some_and(|b| b.architecture.0 == "x86_64")
    {
        "x86_64"
    } else {
        "arm64"
    };
    let mut extra = String::new();
    if services.iter().any(|s| s.count > 0) {
        extra.push_str(&format!(
            "# The app's other processes, each an ECS service of its own.\nservices = [{}]\n",
            services
                .iter()
                .filter(|s| s.count > 0)
                .map(|s| format!(
                    "{{ name = {}, tasks = {}, vcpu = {}, memory_gb = {} }}",
                    quoted(&s.kind),
                    s.count,
                    f64::from(s.cpu) / 1024.0,
                    f64::from(s.memory) / 1024.0
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(node) = cache_node {
        extra.push_str(&format!(
            "cache_node = {}\nsecrets = 1           # the Redis AUTH token in Secrets Manager\n",
            quoted(node)
        ));
    }
    if let Some(rds) = rds {
        edit(
            &mut t,
            "[cost.aws] rds_class",
            "rds_class = \"db.t4g.micro\"\n",
            &format!("rds_class = {}\n", quoted(rds.class)),
        )?;
        edit(
            &mut t,
            "[cost.aws] multi_az",
            "multi_az = false\n",
            &format!("multi_az = {}\n", rds.multi_az),
        )?;
    }
    edit(
        &mut t,
        "[cost.aws] tasks",
        "tasks = 1\nvcpu = 0.5\nmemory_gb = 1\narchitecture = \"arm64\"\n",
        &format!(
            "tasks = {}\nvcpu = {}\nmemory_gb = {}\narchitecture = \"{arch}\"\n{extra}",
            web.and_then(|w| w.quantity).unwrap_or(1),
            f64::from(cpu) / 1024.0,
            f64::from(memory) / 1024.0,
        ),
    )?;
    // Heroku's bill: dynos and Postgres at the bundled table's prices (or the API's), every
    // other add-on at what Heroku bills for it; what has no price is named, never guessed.
    let table = &options.priced;
    let mut dynos: BTreeMap<String, u32> = BTreeMap::new();
    let mut dyno_prices: BTreeMap<String, f64> = BTreeMap::new();
    for p in &shape.processes {
        if let (Some(q), Some(size)) = (p.quantity, &p.size) {
            let size = size.to_ascii_lowercase();
            if q == 0 {
                continue;
            }
            if !table.dynos.contains(&size) {
                match shape.dyno_prices.get(&size) {
                    Some(price) => {
                        dyno_prices.insert(size.clone(), *price);
                    }
                    None => {
                        decisions.push(format!("cost: no price for {size} dynos (neither cutover's table nor Heroku's API says): `{}` is left out of the Heroku side", p.kind));
                        continue;
                    }
                }
            }
            *dynos.entry(size).or_default() += q;
        }
    }
    let primary = shape.primary_postgres();
    let plan_of = |a: &super::shape::Addon| sizes::plan_name(&a.plan);
    let postgres = primary.map(plan_of).filter(|p| table.postgres.contains(p));
    let mut addons: BTreeMap<String, f64> = BTreeMap::new();
    for a in &shape.addons {
        let is_table_postgres = primary.is_some_and(|p| p.name == a.name) && postgres.is_some();
        if is_table_postgres {
            continue;
        }
        match a.monthly_usd {
            Some(price) => {
                *addons.entry(a.plan.clone()).or_default() += price;
            }
            None => decisions.push(format!(
                "cost: Heroku's API gives no price for {} ({}): left out of the Heroku side",
                a.name, a.plan
            )),
        }
    }
    let mut heroku = format!(
        "dynos = {{ {} }}\n",
        dynos
            .iter()
            .map(|(s, n)| format!("{} = {n}", quoted(s)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(p) = &postgres {
        heroku.push_str(&format!("postgres = {}\n", quoted(p)));
    }
    let map = |m: &BTreeMap<String, f64>| {
        m.iter()
            .map(|(k, v)| format!("{} = {v:?}", quoted(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !dyno_prices.is_empty() {
        heroku.push_str(&format!(
            "# Dyno sizes cutover's table lacks, priced by Heroku's API.\ndyno_prices = {{ {} }}\n",
            map(&dyno_prices)
        ));
    }
    if !addons.is_empty() {
        heroku.push_str(&format!(
            "# What Heroku bills for each add-on a month (its API's billed_price).\naddons = {{ {} }}\n",
            map(&addons)
        ));
    }
    edit(
        &mut t,
        "[cost.heroku]",
        "dynos = { \"standard-1x\" = 1 }\npostgres = \"standard-0\"\n",
        &heroku,
    )?;
    edit(
        &mut t,
        "expected_monthly",
        "# The plan's own figure; the estimator says where it differs, and why.\nexpected_monthly = 45\n",
        "",
    )?;

    // Phase 1: the scaffold writes this app's templates (beside this runbook).
    edit(
        &mut t,
        "scaffold templates",
        "templates = \"assets/templates\"\napp_module = \"gengar/src/app.module.ts\"\n",
        "templates = \"templates\"\n",
    )?;
    edit(
        &mut t,
        "scaffold notes",
        "notes = \"Files from the reviewed templates in assets/templates/, filled with this runbook's variables: gengar/Dockerfile and .dockerignore, the NestJS health module (app.module.ts gets the import as a patch, shown as a diff), infra/*.tf (with an ACM certificate for ${domain} and HTTPS on the ALB), .github/workflows/deploy-backend.yml, scripts/ecs-run.sh.",
        &format!("notes = \"Files from the templates `cutover init` wrote beside this runbook (templates/), filled with its variables: {}infra/*.tf (with shape.auto.tfvars.json: the web service's size and count, the other processes, Scheduler's jobs, Redis, the other domains), infra/heroku-config-vars.env (the config vars' names), .github/workflows/deploy.yml, scripts/ecs-run.sh.", if toolchain.own_image.is_some() { String::new() } else { format!("{} and .dockerignore (from the app's own build), ", in_app(app_dir, "Dockerfile")) }),
    )?;
    let dir = if app_dir.is_empty() { "." } else { app_dir };
    edit(
        &mut t,
        "docker-build context",
        "-t ${local_image} gengar\"",
        &format!("-t ${{local_image}} {dir}\""),
    )?;
    edit(
        &mut t,
        "docker-run env file",
        "run = \"docker run -d --rm --name ${app}-local --env-file gengar/.env ",
        &format!("run = \"envfile=(); if [ -f {env} ]; then envfile=(--env-file {env}); else echo 'no {env}: the container starts without one' >&2; fi; docker run -d --rm --name ${{app}}-local \\\"$${{envfile[@]}}\\\" ", env = in_app(app_dir, ".env")),
    )?;
    edit(
        &mut t,
        "local-health path",
        "title = \"The container answers on /health\"\ndo = \"http\"\nurl = \"http://127.0.0.1:${port}/health\"",
        &format!("title = \"The container answers on {health_path}\"\ndo = \"http\"\nurl = \"http://127.0.0.1:${{port}}{health_path}\""),
    )?;

    // Phase 2: SSM.
    let skip = skipped_vars(shape, redis);
    let skip_line = format!(
        "skip = [{}]\n",
        skip.iter()
            .map(|s| quoted(s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    edit(
        &mut t,
        "ssm-sync skip",
        "skip = [\"HEROKU_POSTGRESQL_ROSE_URL\"]\n",
        &skip_line,
    )?;
    if redis {
        edit(
            &mut t,
            "ssm-sync REDIS_URL",
            "set = { DATABASE_URL = { value = \"${secret.RDS_DATABASE_URL}\", from = \"RDS\" } }\nskip",
            "set = { DATABASE_URL = { value = \"${secret.RDS_DATABASE_URL}\", from = \"RDS\" }, REDIS_URL = { value = \"${secret.ELASTICACHE_REDIS_URL}\", from = \"ElastiCache\" } }\nskip",
        )?;
    }
    edit(
        &mut t,
        "ssm-verify keys",
        "title = \"Every key of .env.example exists in SSM\"\ndo = \"ssm.verify\"\nprefix = \"${ssm_prefix}\"\nexample_file = \"${app_repo}/gengar/.env.example\"",
        "title = \"Every config var Heroku sets exists in SSM\"\ndo = \"ssm.verify\"\nprefix = \"${ssm_prefix}\"\nexample_file = \"${app_repo}/infra/heroku-config-vars.env\"",
    )?;

    // Phase 3: the workflow.
    let range = step_range(&t, "deploy-workflow")?;
    let block = t[range.clone()].to_string();
    let notes_start = block
        .find("\nnotes = ")
        .ok_or("deploy-workflow has no notes")?;
    let notes_end = block[notes_start + 1..]
        .find('\n')
        .map_or(block.len(), |e| notes_start + 1 + e);
    let mut new_block = block.clone();
    new_block.replace_range(
        notes_start + 1..notes_end,
        &format!(
            "notes = {}",
            quoted(&format!(
                "The scaffold step wrote .github/workflows/deploy.yml: on push to main: checkout; AWS credentials via OIDC; ECR login; build and push ${{image_platform}} tagged with the SHA and latest; {}deploy {}; wait for stability. Review it, run actionlint, commit and push.",
                if release.is_some() { "the release phase as an ECS RunTask of the new task definition (a failure stops the deployment); " } else { "" },
                if services.is_empty() { "the web service".to_string() } else { format!("the web service and {}", services.iter().map(|s| format!("`{}`", s.kind)).collect::<Vec<_>>().join(", ")) }
            ))
        ),
    );
    t.replace_range(range, &new_block);

    // Phase 3: the workflow's name.
    edit(
        &mut t,
        "run-workflow",
        "title = \"Run deploy-backend once and wait for it (builds and pushes the image)\"\ndo = \"shell\"\nrun = \"gh workflow run deploy-backend.yml -R ${github_repository} --ref main && sleep 5 && gh run watch -R ${github_repository} --exit-status \\\"$(gh run list -R ${github_repository} --workflow deploy-backend.yml --limit 1 --json databaseId --jq '.[0].databaseId')\\\"\"",
        "title = \"Run deploy once and wait for it (builds and pushes the image)\"\ndo = \"shell\"\nrun = \"gh workflow run deploy.yml -R ${github_repository} --ref main && sleep 5 && gh run watch -R ${github_repository} --exit-status \\\"$(gh run list -R ${github_repository} --workflow deploy.yml --limit 1 --json databaseId --jq '.[0].databaseId')\\\"\"",
    )?;
    edit(
        &mut t,
        "deploy-workflow title",
        "title = \"Commit the new deploy-backend.yml (ECR + ECS) in place of the Heroku deploy\"",
        "title = \"Commit the new deploy.yml (ECR + ECS) in place of the Heroku deploy\"",
    )?;
    edit(
        &mut t,
        "deploy-workflow checklist",
        "checklist = [\"workflow reviewed and committed\", \"actionlint passes\", \"the Heroku deploy step (akhileshns/heroku-deploy) is gone\"]",
        "checklist = [\"workflow reviewed and committed\", \"actionlint passes\", \"whatever deployed to Heroku (a Heroku Git remote, a pipeline, a workflow step) is gone\"]",
    )?;

    // Phase 4: the release phase inside the freeze, or nothing.
    match release {
        Some(command) => {
            replace_step(&mut t, "migrations-pending", "")?;
            replace_step(
                &mut t,
                "migrations",
                &format!(
                    "[[phase.step]]\nid = \"migrations\"\ntitle = \"Heroku's release phase as an ECS task (on RDS)\"\ndo = \"ecs.run-task\"\ncluster = \"${{cluster}}\"\nservice = \"${{service}}\"\ncommand = [\"/bin/sh\", \"-c\", {}]\nnotes = \"Heroku ran it before each release: here it runs inside the freeze, on RDS, before the domain moves; a failure stops the cutover (the catch-ups have left RDS equal to Heroku: re-run it after the fix).\"\nneeds = [\"db-drain\"]\ntimeout = \"30m\"\n",
                    quoted(&format!("exec {command}"))
                ),
            )?;
        }
        None => {
            replace_step(&mut t, "migrations-pending", "")?;
            replace_step(&mut t, "migrations", "")?;
            edit(
                &mut t,
                "rds-writes-mark needs",
                "needs = [\"db-drain\", \"migrations\"]",
                "needs = [\"db-drain\"]",
            )?;
        }
    }
    edit(
        &mut t,
        "db-catchup-2 needs",
        "needs = [\"deploy-rds\", \"targets-healthy\", \"migrations-pending\"]",
        "needs = [\"deploy-rds\", \"targets-healthy\"]",
    )?;

    // Heroku Scheduler runs its jobs in maintenance mode too: paused before the freeze.
    let mut drain_needs = vec!["maintenance-on".to_string()];
    if !jobs.is_empty() || shape.addons.iter().any(|a| a.service == "scheduler") {
        insert_after_step(
            &mut t,
            "heroku-formation",
            "[[phase.step]]\nid = \"heroku-scheduler-off\"\ntitle = \"Heroku Scheduler's jobs removed (they run even in maintenance mode)\"\ndo = \"manual\"\nchecklist = [\"every job of scheduler.toml is in it, as the dashboard shows it\", \"every job deleted from Heroku Scheduler (`heroku addons:open scheduler -a ${heroku_app}`)\"]\nnotes = \"Heroku Scheduler has no API and no pause: a job it starts during the freeze writes to Heroku's database (db-drain names such a write and fails), and during the soak it would run beside its EventBridge schedule. scheduler.toml keeps every job: they run on AWS from processes-on.\"\nrollback = \"By hand: create each job of scheduler.toml again in Heroku Scheduler's dashboard (after the way back, when Heroku serves again).\"\nneeds = [\"heroku-formation\"]\n",
        )?;
        edit(
            &mut t,
            "maintenance-on needs scheduler",
            "needs = [\"heroku-formation\", \"db-catchup-2\", \"snapshot-after\"]",
            "needs = [\"heroku-formation\", \"db-catchup-2\", \"snapshot-after\", \"heroku-scheduler-off\"]",
        )?;
    }
    // With Redis, the workers empty the queues inside the freeze: maintenance-on stops the web
    // and the clock (nothing enqueues), the queues are seen empty, then the workers stop.
    let workers: Vec<&str> = services
        .iter()
        .filter(|s| s.count > 0 && !matches!(s.kind.as_str(), "clock" | "scheduler"))
        .map(|s| s.kind.as_str())
        .collect();
    if redis && !workers.is_empty() {
        let keep = workers.join(" ");
        edit(
            &mut t,
            "maintenance-on keeps the workers",
            "for d in \"$${dynos[@]}\"; do zero+=(\"$${d%%=*}=0\"); done\nheroku ps:scale \"$${zero[@]}\" -a ${heroku_app}\n\"\"\"\ndestructive = true\nconfirm = \"freeze ${heroku_app}\"\nnotes = \"Maintenance mode only stops Heroku's router: the dynos (web, workers, schedulers) keep running and writing, so every process type of the recorded formation is scaled to 0 as well.\"",
            &format!("# The queues' workers stay up: they empty Heroku Redis (heroku-workers-off stops them).\nkeep=\" {keep} \"\nfor d in \"$${{dynos[@]}}\"; do\n  t=$${{d%%=*}}\n  if [[ \"$keep\" == *\" $t \"* ]]; then continue; fi\n  zero+=(\"$t=0\")\ndone\nheroku ps:scale \"$${{zero[@]}}\" -a ${{heroku_app}}\n\"\"\"\ndestructive = true\nconfirm = \"freeze ${{heroku_app}}\"\nnotes = \"Maintenance mode only stops Heroku's router: the dynos keep running and writing, so every process type of the recorded formation is scaled to 0 as well — but the queues' workers ({}), which empty Heroku Redis first (redis-queues), then stop (heroku-workers-off).\"", workers.join(", ")),
        )?;
        let scale_off: String = workers.iter().map(|w| format!("{w}=0 ")).collect();
        insert_after_step(
            &mut t,
            "maintenance-on",
            &format!(
                "[[phase.step]]\nid = \"redis-queues\"\ntitle = \"Heroku Redis's queues are empty (its data is not moved)\"\ndo = \"manual\"\nchecklist = [\"no job waiting in Heroku Redis (the queue's dashboard, or `heroku redis:cli -a ${{heroku_app}}`)\", \"no scheduled or retrying job left, or each written down to enqueue again on AWS\"]\nnotes = \"Inside the freeze nothing enqueues (the web and the clock are stopped); Heroku's workers ({}) finish what is queued, writing to Heroku's database (db-drain carries it). ElastiCache starts empty: a job still in Heroku Redis after this is not carried to AWS.\"\nneeds = [\"maintenance-on\"]\n\n[[phase.step]]\nid = \"heroku-workers-off\"\ntitle = \"Heroku's workers scaled to 0 (the queues are empty)\"\ndo = \"shell\"\nrun = \"heroku ps:scale {} -a ${{heroku_app}} && heroku ps -a ${{heroku_app}}\"\ndestructive = true\nconfirm = \"stop the workers of ${{heroku_app}}\"\nrollback = {{ do = \"shell\", run = \"\"\"\nread -ra dynos <<< ${{steps.heroku-formation.outputs.formation}}\nkeep=\" {keep} \"\nup=()\nfor d in \"$${{dynos[@]}}\"; do\n  t=$${{d%%=*}}\n  if [[ \"$keep\" == *\" $t \"* ]]; then up+=(\"$d\"); fi\ndone\nheroku ps:scale \"$${{up[@]}}\" -a ${{heroku_app}}\n\"\"\", notes = \"Heroku's workers back to the formation recorded before the freeze.\" }}\nneeds = [\"redis-queues\"]\n",
                workers.join(", "),
                scale_off.trim_end()
            ),
        )?;
        drain_needs = vec![
            "maintenance-on".to_string(),
            "heroku-workers-off".to_string(),
        ];
    } else if redis {
        insert_after_step(
            &mut t,
            "maintenance-on",
            "[[phase.step]]\nid = \"redis-queues\"\ntitle = \"Heroku Redis holds nothing the app still needs (its data is not moved)\"\ndo = \"manual\"\nchecklist = [\"nothing in Heroku Redis that must survive the move (no worker process empties a queue)\"]\nneeds = [\"maintenance-on\"]\n",
        )?;
        drain_needs.push("redis-queues".to_string());
    }
    if drain_needs.len() > 1 {
        let list = drain_needs
            .iter()
            .map(|n| quoted(n))
            .collect::<Vec<_>>()
            .join(", ");
        let range = step_range(&t, "db-drain")?;
        let mut block = t[range.clone()].to_string();
        edit(
            &mut block,
            "db-drain needs",
            "needs = [\"maintenance-on\"]\n",
            &format!("needs = [{list}]\n"),
        )?;
        t.replace_range(range, &block);
    }

    // Phase 5: one-off commands.
    replace_step(
        &mut t,
        "generate-embeddings",
        "[[phase.step]]\nid = \"one-off-commands\"\ntitle = \"The app's one-off commands run as ECS tasks (replacing heroku run)\"\ndo = \"manual\"\nchecklist = [\"every `heroku run` the team uses is written down as `scripts/ecs-run.sh COMMAND`\"]\nnotes = \"scripts/ecs-run.sh (written by the scaffold) runs a command as a task of the service's task definition and streams its log: `scripts/ecs-run.sh bin/rails console` needs ECS Exec instead (`aws ecs execute-command`).\"\nneeds = [\"smoke-health\"]\n",
    )?;
    replace_step(&mut t, "generate-metadata", "")?;

    // The other processes and the schedules start once the domain points at AWS (until then
    // they would write to RDS beside the catch-ups, and run Heroku's jobs twice); on the way
    // back they stop first, before RDS's changes are drained into Heroku.
    let running: Vec<&Service> = services.iter().filter(|s| s.count > 0).collect();
    if !running.is_empty() || !jobs.is_empty() {
        let mut on = String::new();
        let mut off = String::new();
        for s in &running {
            let n = if matches!(s.kind.as_str(), "clock" | "scheduler") {
                s.count.min(1)
            } else {
                s.count
            };
            on.push_str(&format!(
                "aws ecs update-service --region ${{aws_region}} --cluster ${{cluster}} --service \"${{app}}-{k}\" --desired-count {n} >/dev/null\nnow=$(aws ecs describe-services --region ${{aws_region}} --cluster ${{cluster}} --services \"${{app}}-{k}\" --query 'services[0].desiredCount' --output text)\necho \"{k}: $now task(s) wanted\"; test \"$now\" = {n}\n",
                k = s.kind
            ));
            off.push_str(&format!(
                "aws ecs update-service --region ${{aws_region}} --cluster ${{cluster}} --service \"${{app}}-{k}\" --desired-count 0 >/dev/null\n",
                k = s.kind
            ));
        }
        let state = |to: &str| {
            jobs.iter()
                .map(|j| format!(
                    "f=$(mktemp)\naws scheduler get-schedule --region ${{aws_region}} --name \"${{app}}-{n}\" --output json \\\n  | jq '.State = \"{to}\" | del(.Arn, .CreationDate, .LastModificationDate)' > \"$f\"\naws scheduler update-schedule --region ${{aws_region}} --cli-input-json \"file://$f\" >/dev/null\nrm -f \"$f\"\nnow=$(aws scheduler get-schedule --region ${{aws_region}} --name \"${{app}}-{n}\" --query State --output text)\necho \"schedule {n}: $now\"; test \"$now\" = {to}\n",
                    n = j.name
                ))
                .collect::<String>()
        };
        on.push_str(&state("ENABLED"));
        let mut off_all = state("DISABLED");
        off_all.push_str(&off);
        if !jobs.is_empty() {
            // A job a schedule started is still running after the schedule is disabled.
            off_all.push_str("tasks=$(aws ecs list-tasks --region ${aws_region} --cluster ${cluster} --desired-status RUNNING --query taskArns --output text)\nif [ -n \"$tasks\" ] && [ \"$tasks\" != None ]; then\n  # shellcheck disable=SC2086\n  jobs=$(aws ecs describe-tasks --region ${aws_region} --cluster ${cluster} --tasks $tasks --query \"tasks[?group=='${app}-schedule'].taskArn\" --output text)\n  for t in $jobs; do\n    aws ecs stop-task --region ${aws_region} --cluster ${cluster} --task \"$t\" --reason 'cutover: the way back' >/dev/null\n    echo \"stopped a Scheduler job's task: $t\"\n  done\n  # shellcheck disable=SC2086\n  if [ -n \"$jobs\" ]; then aws ecs wait tasks-stopped --region ${aws_region} --cluster ${cluster} --tasks $jobs; fi\nfi\n");
        }
        if !running.is_empty() {
            off_all.push_str("# Every task stopped before anything else is rolled back: none writes to RDS after this.\n");
            // DescribeServices takes at most 10 services at a time.
            for chunk in running.chunks(10) {
                off_all.push_str(&format!(
                    "aws ecs wait services-stable --region ${{aws_region}} --cluster ${{cluster}} --services {}\n",
                    chunk.iter().map(|s| format!("\"${{app}}-{}\"", s.kind)).collect::<Vec<_>>().join(" ")
                ));
            }
        }
        let what = running
            .iter()
            .map(|s| format!("`{}`", s.kind))
            .chain(jobs.iter().map(|j| format!("Scheduler job `{}`", j.name)))
            .collect::<Vec<_>>()
            .join(", ");
        insert_after_step(
            &mut t,
            "dns-cutover",
            &format!(
                "[[phase.step]]\nid = \"processes-on\"\ntitle = \"The other processes and Scheduler's jobs start on AWS\"\ndo = \"shell\"\nrun = \"\"\"\n{on}\"\"\"\nnotes = {}\nrollback = {{ do = \"shell\", run = \"\"\"\n{off_all}\"\"\", first = [{{ do = \"elb.maintenance\", load_balancer = \"${{steps.terraform-apply.outputs.alb_dns_name}}\", mode = \"on\" }}], notes = \"First the ALB answers 503 itself (nothing enqueues any more); then the schedules are disabled, their running jobs stopped, and the services set to 0 and waited for until every task stopped: on the way back nothing on AWS writes to RDS while its changes are drained into Heroku. A job still queued in ElastiCache when the workers stop is not carried to Heroku Redis (its data never moves): look before the phrase. Rolled back alone (not on the way back), the app keeps answering 503 until `cutover run alb-serving`.\" }}\nneeds = [\"dns-cutover\"]\n",
                quoted(&format!("Terraform made them stopped ({what}): until the domain points at AWS they would write to RDS beside the catch-ups and run Heroku's jobs a second time. Each is read back: the services' wanted task counts, the schedules' state. Jobs the AWS web enqueued since the cutover wait in ElastiCache for these seconds."))
            ),
        )?;
    }

    // Phase 6: the other domains, the smoke tests and the decommission.
    for (i, d) in shape.domains.iter().enumerate().skip(1) {
        let id = format!("dns-cutover-{}", i + 1);
        insert_after_step(
            &mut t,
            "dns-cutover",
            &format!(
                "\n[[phase.step]]\nid = \"{id}\"\ntitle = \"Point {host} at the ALB\"\ndo = \"dns.point\"\nzone = {zone}\nname = {hostq}\ntarget = \"${{steps.terraform-apply.outputs.alb_dns_name}}\"\nalias_zone_id = \"${{steps.terraform-apply.outputs.alb_zone_id}}\"\ndestructive = true\nconfirm = {confirm}\nnotes = \"Another of the app's domains on Heroku (its certificate is in infra/domains.tf). After dns-cutover: the database has moved with the first.\"\nrollback = {{ do = \"dns.restore\", zone = {zone}, name = {hostq}, record = \"${{steps.{id}.outputs.previous}}\", expect = \"${{steps.{id}.outputs.current}}\", refuse_after = \"destroy-heroku-app\" }}\nneeds = [\"dns-cutover\"]\nafter = {{ step = \"dns-ttl\", at_least = \"${{dns_ttl_wait}}\" }}\n",
                host = d.hostname,
                hostq = quoted(&d.hostname),
                zone = quoted(&zone_of(&d.hostname)),
                confirm = quoted(&format!("point {} at aws", d.hostname)),
            ),
        )?;
        decisions.push(format!(
            "{}: its zone is taken to be {} (dns-ttl lowers only {}'s TTL: lower this one's by hand)",
            d.hostname,
            zone_of(&d.hostname),
            shape.domains[0].hostname
        ));
    }
    edit(
        &mut t,
        "callback-urls checklist",
        "checklist = [\"FRONTEND_URL in SSM\", \"GitHub OAuth callback\", \"Stripe webhook endpoint\"]",
        "checklist = [\"config vars holding the Heroku URL (in SSM) name ${domain}\", \"OAuth callbacks and webhook endpoints registered with third parties reach ${domain}\"]",
    )?;
    replace_step(
        &mut t,
        "smoke-health",
        &format!(
            "[[phase.step]]\nid = \"smoke-health\"\ntitle = \"${{public_url}}{health_path} answers 200\"\ndo = \"http\"\nurl = \"${{public_url}}{health_path}\"\ndeadline = \"10m\"\ninterval = \"10s\"\nnotes = \"Through the domain, as clients resolve it. It cannot tell which database answered (the bundled gengar runbook's health module reports the server's system identifier; this app has none): rds-writes-mark and db-catchup-back's backlog show RDS taking the writes.\"\nneeds = [\"dns-cutover\", \"db-copy\"]\n"
        ),
    )?;
    let mut proofs = Vec::new();
    for s in services.iter().filter(|s| s.count > 0) {
        proofs.push(format!(
            "`{}` runs on ECS ({} task(s)): its log (stream prefix {}) shows work done",
            s.kind, s.count, s.kind
        ));
    }
    for j in jobs {
        proofs.push(format!(
            "Scheduler job `{}` ({}) ran once: schedule {}-{} has an invocation and its task exited 0",
            j.name, j.every, "${app}", j.name
        ));
    }
    let cron = if proofs.is_empty() {
        String::new()
    } else {
        format!(
            "[[phase.step]]\nid = \"smoke-processes\"\ntitle = \"Every other process and every Scheduler job is seen running on AWS\"\ndo = \"manual\"\nchecklist = [{}]\nneeds = [\"processes-on\"]\n",
            proofs.iter().map(|p| quoted(p)).collect::<Vec<_>>().join(", ")
        )
    };
    replace_step(&mut t, "smoke-cron", &cron)?;
    edit(
        &mut t,
        "smoke-one-off command",
        "command = [\"node\", \"dist/src/console.js\", \"--help\"]",
        "command = [\"/bin/sh\", \"-c\", \"echo a one-off task ran on ECS\"]",
    )?;
    edit(
        &mut t,
        "smoke-flows",
        "checklist = [\"API endpoints via the frontend\", \"a Stripe webhook reached the new endpoint\", \"an OAuth login\"]\nneeds = [\"smoke-health\", \"callback-urls\", \"smoke-cron\", \"smoke-one-off\", \"generate-embeddings\", \"generate-metadata\"]",
        &format!(
            "checklist = [\"the app's main flows through ${{domain}}\", \"a webhook reached the new endpoint\", \"a login\"]\nneeds = [\"smoke-health\", \"callback-urls\"{}, \"smoke-one-off\", \"one-off-commands\"]",
            if cron.is_empty() { "" } else { ", \"smoke-processes\"" }
        ),
    )?;
    edit(
        &mut t,
        "smoke-flows title",
        "title = \"Frontend, Stripe webhooks, OAuth, cron and one-off tasks work\"",
        "title = \"The app's flows, webhooks, logins and one-off tasks work\"",
    )?;
    let node_postbuild = toolchain.ecosystem.as_deref() == Some("Node.js")
        && toolchain.node_build.as_deref() == Some("heroku-postbuild");
    let (title, run, rollback) = if node_postbuild {
        (
            "Remove the heroku-postbuild script and the Procfile",
            format!("rm -f Procfile && npm pkg delete scripts.heroku-postbuild && echo '{} and the heroku-postbuild script removed: commit the change' && if grep -q heroku-postbuild package.json; then echo 'heroku-postbuild is still in package.json' >&2; exit 1; fi", in_app(app_dir, "Procfile")),
            format!("git checkout -- {} {} (before the commit)", in_app(app_dir, "Procfile"), in_app(app_dir, "package.json")),
        )
    } else {
        (
            "Remove the Procfile",
            format!(
                "rm -f Procfile && echo '{} removed: commit the change'",
                in_app(app_dir, "Procfile")
            ),
            format!(
                "git checkout -- {} (before the commit)",
                in_app(app_dir, "Procfile")
            ),
        )
    };
    replace_step(
        &mut t,
        "remove-procfile",
        &format!(
            "[[phase.step]]\nid = \"remove-procfile\"\ntitle = {}\ndo = \"shell\"\nrun = {}\ncwd = {}\nrollback = {}\nneeds = [\"destroy-heroku-app\"]\n",
            quoted(title),
            quoted(&run),
            quoted(&if dir == "." { "${app_repo}".to_string() } else { format!("${{app_repo}}/{dir}") }),
            quoted(&rollback)
        ),
    )?;
    // No run of blank lines where a step went.
    while t.contains("\n\n\n") {
        t = t.replace("\n\n\n", "\n\n");
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heroku::shape::Process;

    fn process(kind: &str, command: &str) -> Process {
        Process {
            kind: kind.to_string(),
            command: Some(command.to_string()),
            quantity: Some(1),
            size: Some("Standard-1X".to_string()),
            from: Vec::new(),
            becomes: String::new(),
            fargate: None,
        }
    }

    #[test]
    fn a_database_name_is_one_rds_takes() {
        assert_eq!(db_identifier("gengar"), "gengar");
        assert_eq!(db_identifier("rails-app"), "rails_app");
        assert_eq!(db_identifier("9lives"), "app_9lives");
        assert_eq!(db_identifier("order"), "order_app");
        assert_eq!(db_identifier("user"), "user_app");
    }

    /// A process type from the API that is no name Heroku allows never reaches the runbook's
    /// shell text, the workflow or Terraform: named, and left out.
    #[test]
    fn a_process_type_that_is_no_name_is_named_and_left_out() {
        let shape = Shape {
            app: "app".into(),
            region: Some("us".into()),
            stack: None,
            buildpacks: Vec::new(),
            processes: vec![
                process("web", "run web"),
                process("worker", "run worker"),
                process("bad\"; rm -rf /", "run it"),
            ],
            config_vars: Vec::new(),
            addons: Vec::new(),
            domains: Vec::new(),
            build: None,
            disagreements: Vec::new(),
            decisions: Vec::new(),
            dyno_prices: Default::default(),
        };
        let options = Options {
            app_dir: ".".into(),
            app_repo: "../app".into(),
            jobs: Vec::new(),
            priced: Priced::default(),
        };
        let out = generate(&shape, &options).unwrap_or_else(|e| panic!("{e}"));
        assert!(out
            .decisions
            .iter()
            .any(|d| d.contains("is not a name Heroku allows")));
        for f in &out.files {
            assert!(!f.text.contains("rm -rf"), "{}", f.path);
        }
        let runbook = out
            .files
            .iter()
            .find(|f| f.path == "runbook.toml")
            .map(|f| f.text.clone())
            .unwrap_or_default();
        assert!(runbook.contains("--service \"${app}-worker\" --desired-count 1"));
    }
}
