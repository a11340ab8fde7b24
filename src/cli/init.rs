//! `cutover init --from-heroku APP`: what cutover reads of a Heroku app, and what each part
//! becomes on AWS; with `--out DIR`, a runbook for it (validated before anything is written)
//! and the templates its scaffold step writes into the app's repository: the Dockerfile from
//! the app's own build, the Terraform, the deploy workflow (issue 29). Heroku Scheduler's jobs
//! come from DIR/scheduler.toml, which it writes as a template the first time.

use super::context::{self, Context};
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Heroku app to read (its name or id).
    #[arg(long = "from-heroku", value_name = "APP")]
    pub from_heroku: String,
    /// The app's repository (its Procfile is compared with what Heroku runs).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: std::path::PathBuf,
    /// The app's directory inside the repository (a monorepo's `api/`, say).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub app_dir: String,
    /// The repository as the written runbook names it (`app_repo`; relative to --out, or
    /// absolute). Default: --repo, absolute.
    #[arg(long, value_name = "PATH")]
    pub app_repo: Option<String>,
    /// The shape as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the runbook, its templates (templates/), shape.json and vars.toml (the bundled
    /// runbook's variables for this app) here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// Overwrite files in --out that differ (without it they are shown as a diff and kept).
    #[arg(long, requires = "out")]
    pub force: bool,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    use cutover::heroku::{api::Api, generate, scheduler, shape};
    let api = Api::from_env().map_err(|e| Failure::new(exit::INVALID, e.to_string()))?;
    let runtime = context::runtime()?;
    let app_path = args.repo.join(&args.app_dir);
    if !app_path.is_dir() {
        return Err(Failure::new(
            exit::INVALID,
            format!("{}: no such directory", app_path.display()),
        ));
    }
    let shape = runtime
        .block_on(shape::read(&api, &args.from_heroku, Some(&app_path)))
        .map_err(|e| Failure::new(exit::STEP_FAILED, e.to_string()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&shape).unwrap_or_default()
        );
    } else {
        print!("{}", shape.describe());
    }
    let Some(out) = &args.out else {
        if !args.json {
            println!(
                "\nNothing was written: --out DIR writes the runbook, the Dockerfile, the Terraform and the workflow for this app."
            );
        }
        return Ok(exit::OK);
    };
    // Scheduler's jobs: the operator's file, read when it is there; its template otherwise.
    let jobs_path = out.join("scheduler.toml");
    let found_cron = shape
        .build
        .as_ref()
        .map(|b| b.cron.clone())
        .unwrap_or_default();
    let wants_jobs =
        shape.addons.iter().any(|a| a.service == "scheduler") || !found_cron.is_empty();
    let (jobs, jobs_template) = match std::fs::read_to_string(&jobs_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Failure::new(
                exit::INVALID,
                format!("{}: {e}", jobs_path.display()),
            ))
        }
        Ok(text) => (
            scheduler::parse(&text).map_err(|e| {
                Failure::new(exit::INVALID, format!("{}: {e}", jobs_path.display()))
            })?,
            None,
        ),
        Err(_) if wants_jobs => {
            let text = scheduler::template(&shape.app, &found_cron);
            let jobs = scheduler::parse(&text)
                .map_err(|e| Failure::new(exit::STEP_FAILED, format!("app.json's cron: {e}")))?;
            (jobs, Some(text))
        }
        Err(_) => (Vec::new(), None),
    };
    let app_repo = match &args.app_repo {
        Some(r) => r.clone(),
        None => std::path::absolute(&args.repo)
            .map_err(|e| Failure::new(exit::INVALID, format!("{}: {e}", args.repo.display())))?
            .display()
            .to_string(),
    };
    // Heroku's prices are the same in every region: the bundled table's.
    let table = cutover::cost::PriceTable::bundled("us-east-1")
        .map_err(|e| Failure::new(exit::STEP_FAILED, e.to_string()))?;
    let options = generate::Options {
        app_dir: args.app_dir.trim_end_matches('/').to_string(),
        app_repo,
        jobs,
        priced: generate::Priced {
            dynos: table.heroku.dynos.keys().cloned().collect(),
            postgres: table.heroku.postgres.keys().cloned().collect(),
        },
    };
    let generated =
        generate::generate(&shape, &options).map_err(|e| Failure::new(exit::STEP_FAILED, e))?;
    let mut files: Vec<generate::File> = vec![
        generate::File {
            path: "shape.json".to_string(),
            text: format!(
                "{}\n",
                serde_json::to_string_pretty(&shape).unwrap_or_default()
            ),
            executable: false,
        },
        generate::File {
            path: "vars.toml".to_string(),
            text: cutover::heroku::vars::vars_file(&shape),
            executable: false,
        },
    ];
    if let Some(text) = jobs_template {
        files.push(generate::File {
            path: "scheduler.toml".to_string(),
            text,
            executable: false,
        });
    }
    files.extend(generated.files);
    // Validated before it is written: the runbook as `cutover validate` reads it.
    if let Some(runbook) = files.iter().find(|f| f.path == "runbook.toml") {
        let source =
            cutover::runbook::SourceFile::new(out.join("runbook.toml"), runbook.text.clone());
        cutover::runbook::Runbook::from_source(source, &[], &ctx.registry).map_err(|e| {
            Failure::new(
                exit::STEP_FAILED,
                format!("the runbook init generated does not validate (a bug in cutover: nothing was written): {e}"),
            )
        })?;
    }
    // With --json, stdout holds the shape alone: the rest goes to stderr.
    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    if !generated.assumptions.is_empty() {
        say("\nassumed (review the files):".to_string());
        for a in &generated.assumptions {
            say(format!("  - {a}"));
        }
    }
    let code = write_all(out, &files, args.force, &say)?;
    let decisions: Vec<&String> = generated
        .decisions
        .iter()
        .filter(|d| !shape.decisions.contains(d))
        .collect();
    if !decisions.is_empty() {
        say("\ndecisions for you (the runbook cannot make them):".to_string());
        for d in decisions {
            say(format!("  - {d}"));
        }
    }
    say(format!(
        "\nNext: review {dir}/runbook.toml and {dir}/templates/, then `cutover --runbook {dir}/runbook.toml validate` and `… run scaffold`.",
        dir = out.display()
    ));
    Ok(code)
}

/// Writes every file or none: one that exists and differs is shown as a diff and, without
/// `force`, refuses them all.
fn write_all(
    dir: &std::path::Path,
    files: &[cutover::heroku::generate::File],
    force: bool,
    say: &dyn Fn(String),
) -> Result<u8, Failure> {
    let mut differing = Vec::new();
    for f in files {
        let (name, text) = (&f.path, &f.text);
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // There, but not readable as text: it differs, and is never overwritten unasked.
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                differing.push(path.display().to_string());
            }
            Ok(now) if &now != text => {
                let diff = similar::TextDiff::from_lines(now.as_str(), text.as_str());
                eprintln!(
                    "{}",
                    diff.unified_diff().header(
                        &format!("{} (now)", path.display()),
                        &format!("{} (init)", path.display())
                    )
                );
                differing.push(path.display().to_string());
            }
            Ok(_) => {}
        }
    }
    if !differing.is_empty() && !force {
        return Err(Failure::new(
            exit::REFUSED,
            format!(
                "{} exist(s) and differ(s) from what init writes (the diff above): nothing was written; --force overwrites",
                differing.join(", ")
            ),
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::new(exit::STEP_FAILED, format!("{}: {e}", dir.display())))?;
    for f in files {
        let (name, text) = (&f.path, &f.text);
        let path = dir.join(name);
        let same = std::fs::read_to_string(&path).is_ok_and(|now| &now == text);
        if same {
            say(format!("{}: unchanged", path.display()));
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                Failure::new(exit::STEP_FAILED, format!("{}: {e}", parent.display()))
            })?;
        }
        // Written beside, then renamed: a crash leaves the old file or the new one.
        let failed =
            |e: std::io::Error| Failure::new(exit::STEP_FAILED, format!("{}: {e}", path.display()));
        let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
        temp_name.push(".cutover-tmp");
        let temp = path.with_file_name(temp_name);
        std::fs::write(&temp, text).map_err(failed)?;
        if f.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))
                .map_err(failed)?;
        }
        std::fs::rename(&temp, &path).map_err(failed)?;
        say(format!("{}: written", path.display()));
    }
    Ok(exit::OK)
}
