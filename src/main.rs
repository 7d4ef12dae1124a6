//! The `ha-ingestor` binary: parses the command line, starts the runtime, dispatches to [`ha_ingestor::cli`].

use std::process::ExitCode;

use clap::Parser;
use ha_ingestor::alloc_counter::CountingAllocator;
use ha_ingestor::cli::Cli;

// mimalloc, counting allocations for the `bench` reports (see alloc_counter).
#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn main() -> ExitCode {
    ha_ingestor::alloc_counter::return_freed_memory_at_once();
    let cli = Cli::parse();
    ha_ingestor::ensure_crypto_provider();
    let runtime = match ha_ingestor::runtime::build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("ha-ingestor: {error}");
            return ExitCode::from(2);
        }
    };
    cli.command.run(cli.log_format, &runtime)
}
