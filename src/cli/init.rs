//! `cutover init --from-heroku APP`: what cutover reads of a Heroku app, and what each part
//! becomes on AWS (issue 29, its first part: reading and mapping; writing the runbook, the
//! Terraform and the Dockerfile from it is not built yet, and it says so).

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
        println!(
            "\nNothing was written: generating the runbook, the Terraform and the Dockerfile from this shape is not built yet."
        );
    }
    Ok(exit::OK)
}
