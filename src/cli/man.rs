//! `ha-ingestor man`: the man page, generated from the command line's own definition.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::{Cli, report};

/// Arguments of `man`.
#[derive(clap::Args)]
pub struct Args {
    /// Write `ha-ingestor.1` and one page per subcommand (`ha-ingestor-run.1`, …) into this folder instead of printing the main page.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

/// Prints the main page (roff) on standard output, or writes every page into `--out-dir`.
pub fn main(args: Args) -> ExitCode {
    report(write(args))
}

fn write(args: Args) -> anyhow::Result<()> {
    let command = Cli::command();
    match args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .context("cannot write the man page")
        }
    }
}
