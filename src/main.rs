//! `hashbuy`: buy by tweeting. One binary, one subcommand a job; each
//! subcommand lives in its own module with a `run(args)` entry point.

mod broker;
mod gen;
mod input;
mod inspect;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// hashbuy turns purchase hashtags in a tweet stream into payment commands.
#[derive(Parser)]
#[command(name = "hashbuy", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode tweets offline and show what hashbuy would decide for each.
    Inspect(inspect::Args),
    /// Write a synthetic tweet firehose, with a matching catalog and accounts.
    Gen(gen::Args),
    /// Run the embedded development broker (in memory, bounded retention).
    Broker(broker::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Gen(args) => gen::run(args),
        Command::Broker(args) => broker::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if input::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hashbuy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
