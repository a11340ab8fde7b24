//! `cutover init --from-heroku APP`: what cutover reads of a Heroku app, and what each part
//! becomes on AWS (issue 29, its first part: reading and mapping; with `--out`, the shape and
//! the bundled runbook's variables written; the runbook, the Terraform and the Dockerfile from
//! it are not built yet, and it says so).

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
    /// The shape as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write shape.json and vars.toml (the bundled runbook's variables for this app) here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// Overwrite files in --out that differ (without it they are shown as a diff and kept).
    #[arg(long, requires = "out")]
    pub force: bool,
}

pub fn exec(_ctx: &Context, args: Args) -> Result<u8, Failure> {
    use cutover::heroku::{api::Api, shape};
    let api = Api::from_env().map_err(|e| Failure::new(exit::INVALID, e.to_string()))?;
    let runtime = context::runtime()?;
    let shape = runtime
        .block_on(shape::read(&api, &args.from_heroku, Some(&args.repo)))
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
                "\nNothing was written (--out DIR writes shape.json and vars.toml); generating the runbook, the Terraform and the Dockerfile from this shape is not built yet."
            );
        }
        return Ok(exit::OK);
    };
    let files = [
        (
            "shape.json",
            format!(
                "{}\n",
                serde_json::to_string_pretty(&shape).unwrap_or_default()
            ),
        ),
        ("vars.toml", cutover::heroku::vars::vars_file(&shape)),
    ];
    write_all(out, &files, args.force)
}

/// Writes every file or none: one that exists and differs is shown as a diff and, without
/// `force`, refuses them all.
fn write_all(dir: &std::path::Path, files: &[(&str, String)], force: bool) -> Result<u8, Failure> {
    let mut differing = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        if let Ok(now) = std::fs::read_to_string(&path) {
            if &now != text {
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
    for (name, text) in files {
        let path = dir.join(name);
        let same = std::fs::read_to_string(&path).is_ok_and(|now| &now == text);
        if same {
            println!("{}: unchanged", path.display());
            continue;
        }
        std::fs::write(&path, text)
            .map_err(|e| Failure::new(exit::STEP_FAILED, format!("{}: {e}", path.display())))?;
        println!("{}: written", path.display());
    }
    Ok(exit::OK)
}
