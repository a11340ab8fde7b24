//! `cutover completions SHELL` and `cutover man`: generated from the same clap definitions the
//! command line is parsed with, so they never disagree with it.

use clap::CommandFactory;

use super::context::Context;
use super::exit::{self, Failure};
use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells `cutover completions` writes a script for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Prints the completion script for `shell` on stdout.
pub fn exec(_ctx: &Context, args: Args) -> Result<u8, Failure> {
    let shell = args.shell;
    let mut command = Cli::command();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut command, "cutover", &mut std::io::stdout());
    Ok(exit::OK)
}

/// Prints the man page (roff) on stdout: `cutover man > cutover.1`.
pub fn man() -> Result<u8, Failure> {
    let page = clap_mangen::Man::new(Cli::command());
    match page.render(&mut std::io::stdout()) {
        // `cutover man | head`: the reader had enough.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::new(
            exit::STEP_FAILED,
            format!("cannot write the man page: {e}"),
        )),
        _ => Ok(exit::OK),
    }
}
