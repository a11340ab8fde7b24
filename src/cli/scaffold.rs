//! `cutover scaffold`: the scaffold step's files, reviewed before anything is overwritten.

use cutover::runbook::Runbook;
use cutover::state::s3::Reading;

use super::context::Context;
use super::exit::{self, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The scaffold step (default: the runbook's first `scaffold` step).
    #[arg(long)]
    pub step: Option<String>,
    /// Print each file's state and diff; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the files that differ from the templates.
    #[arg(long)]
    pub overwrite: bool,
    /// The phrase, for --overwrite without a terminal: "overwrite N files".
    #[arg(long)]
    pub confirm: Option<String>,
}

pub fn exec(ctx: &Context, args: Args) -> Result<u8, Failure> {
    let _state = ctx.state(Some(Reading::New))?;
    let runbook = ctx.load()?;
    scaffold(
        &runbook,
        args.step.as_deref(),
        args.dry_run,
        args.overwrite,
        args.confirm,
    )
}

fn scaffold(
    runbook: &Runbook,
    step: Option<&str>,
    dry_run: bool,
    overwrite: bool,
    confirm: Option<String>,
) -> Result<u8, Failure> {
    use cutover::actions::scaffold::{plan, ScaffoldParams};
    let invalid = |text: String| Failure::new(exit::INVALID, text);
    let spec = runbook
        .steps
        .iter()
        .find(|s| s.action.kind == "scaffold" && step.is_none_or(|id| s.id == id))
        .ok_or_else(|| {
            invalid(match step {
                Some(id) => format!("no scaffold step `{id}` in the runbook"),
                None => "the runbook has no `scaffold` step".to_string(),
            })
        })?;
    let state = cutover::journal::JournalState::default();
    let scope = cutover::engine::display_scope(runbook, &state);
    let (params, _) = cutover::runbook::render_params(&spec.action, &scope)
        .map_err(|r| invalid(format!("{}: cannot fill {r:?}", spec.id)))?;
    let params: ScaffoldParams = serde_json::from_value(params)
        .map_err(|e| invalid(format!("{}: bad parameters: {e}", spec.id)))?;
    let plan =
        plan(&params, &runbook.base_dir()).map_err(|e| Failure::new(exit::STEP_FAILED, e))?;
    for line in plan.report(true) {
        println!("{line}");
    }
    if dry_run {
        println!("(dry run: nothing written)");
        return Ok(exit::OK);
    }
    let differing = plan.differing().len();
    if differing > 0 {
        if !overwrite {
            return Err(Failure::new(
                exit::REFUSED,
                format!("{differing} file(s) differ from the templates: nothing written; review the diffs above, then `cutover scaffold --overwrite`"),
            ));
        }
        let phrase = format!("overwrite {differing} files");
        let typed = match confirm {
            Some(text) => text,
            None => {
                use std::io::{BufRead, IsTerminal, Write};
                if !std::io::stdin().is_terminal() {
                    return Err(Failure::new(
                        exit::REFUSED,
                        format!("overwriting needs the phrase: --confirm \"{phrase}\""),
                    ));
                }
                print!("Type \"{phrase}\" to overwrite them (only that will be accepted): ");
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                let _ = std::io::stdin().lock().read_line(&mut line);
                line.trim_end_matches(['\r', '\n']).to_string()
            }
        };
        if typed != phrase {
            return Err(Failure::new(
                exit::REFUSED,
                format!("the phrase was not \"{phrase}\": nothing written"),
            ));
        }
    }
    let written = plan
        .apply(overwrite)
        .map_err(|e| Failure::new(exit::STEP_FAILED, e))?;
    println!("{written} file(s) written into {}", plan.repo.display());
    Ok(exit::OK)
}
