//! `cutover cost`: the target's monthly cost, line by line, against today's Heroku bill.

use cutover::runbook::Runbook;
use cutover::state::s3::Reading;
use cutover::workspace::Workspace;

use super::context::Context;
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
    /// Refresh prices from the AWS Price List API (cached a day under .cutover/).
    #[arg(long)]
    pub live: bool,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let state = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    cost(&runbook, &state.workspace, args.json, args.live)
}

fn cost(runbook: &Runbook, workspace: &Workspace, json: bool, live: bool) -> Result<u8, Failure> {
    use cutover::cost;
    let Some(spec) = &runbook.cost else {
        return Err(Failure::new(
            exit::INVALID,
            format!("{} has no [cost] section", runbook.source.path.display()),
        ));
    };
    let invalid = |e: cost::CostError| Failure::new(exit::INVALID, e.to_string());
    let cache = workspace.root.join("prices-live.json");
    let estimate = if live {
        workspace.ensure()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::new(exit::STEP_FAILED, format!("cannot start: {e}")))?;
        let (table, source) = runtime
            .block_on(cost::live::prices(&spec.region, &cache))
            .map_err(invalid)?;
        cost::estimate(spec, &table, source).map_err(invalid)?
    } else {
        cost::offline_estimate(spec, &cache).map_err(invalid)?
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&estimate).unwrap_or_default()
        );
    } else {
        print!("{}", cost::report(&estimate));
    }
    if let cost::PriceSource::BundledAfterLiveFailed { .. } = estimate.source {
        eprintln!("cutover: warning: {}", estimate.source.describe());
    }
    Ok(exit::OK)
}
