//! `ha-ingestor completions <shell>`: the shell completion script, generated from the command line's own definition.

use std::process::ExitCode;

use std::io::Write as _;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use super::{Cli, report};

/// Arguments of `completions`.
#[derive(clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Prints the completion script of `shell` on standard output.
pub fn main(args: Args) -> ExitCode {
    let mut command = Cli::command();
    // Generated into memory first: the generator panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "ha-ingestor", &mut script);
    let mut out = std::io::stdout().lock();
    report(
        out.write_all(&script)
            .and_then(|()| out.flush())
            .context("cannot write the completion script"),
    )
}
