//! The `remem` command line.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    remem::heap::keep_freed_memory();
    let args = cli::Cli::parse();
    match remem::threads::run_on_pool(|| cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
