//! `hashbuy`: buy by tweeting. One binary, one subcommand a job; each
//! subcommand lives in its own module with a `run(args)` entry point.

mod bench;
mod bench_e2e;
mod bench_plain;
mod bench_report;
mod bench_settle;
mod broker;
mod config;
mod demo;
mod gen;
mod input;
mod inspect;
mod kafka_args;
mod ledger_cmd;
mod matching;
mod paysim;
mod record;
mod replay;
mod settling;
mod stock_cmd;
mod tables_cmd;
mod tail;
mod telemetry;
mod topics;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator: the settler allocates and frees
/// across many threads (HTTP, ledger, Kafka), where glibc's arenas spent a
/// quarter of its CPU (measured with `hashbuy bench-settle`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for the process (and the children it
/// starts), as mimalloc itself does when `MIMALLOC_ALLOW_THP=0`, unless
/// that variable is set either way.
///
/// mimalloc asks for huge pages on its arenas, and on a kernel that grants
/// them on request (`madvise`, Debian's default) every thread's first
/// small allocation then makes a 2 MiB page resident: a settler restart
/// with nothing to do peaked at 379 MB with them and 49 MB without
/// (`hashbuy bench-settle --commands 20000`, the same binary), and the
/// settler settled 12 to 14% more commands a second without them (README:
/// "The ledger on disk", Memory). The kernel checks the flag at every
/// fault, so the arena mimalloc set up before `main` is covered too.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no
        // memory of the process; a failure (an old kernel) changes nothing.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

/// hashbuy turns purchase hashtags in a tweet stream into payment commands.
#[derive(Parser)]
#[command(name = "hashbuy", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline in one process on the bundled sample:
    /// embedded broker, matcher, simulated Stripe, settler.
    Demo(demo::Args),
    /// Decode tweets offline and show what hashbuy would decide for each.
    Inspect(inspect::Args),
    /// Write a synthetic tweet firehose, with a matching catalog and accounts.
    Gen(gen::Args),
    /// Match tweets on Kafka: produce payment commands and dead letters.
    Match(matching::Args),
    /// Run the embedded development broker (in memory, bounded retention).
    Broker(broker::Args),
    /// Produce recorded tweet streams to a topic, keyed by user id.
    Replay(replay::Args),
    /// Write a topic back to a recording that replay reads.
    Record(record::Args),
    /// Print a topic as JSON lines, decoding hashbuy's messages.
    Tail(tail::Args),
    /// Manage hashbuy's topics on a real broker.
    Topics(topics::Args),
    /// Measure the matcher on Kafka against a consume-only ceiling.
    Bench(bench::Args),
    /// Measure the settler's throughput against paysim at a given latency.
    BenchSettle(bench_settle::Args),
    /// Measure end-to-end latency, tweet to ack, at a fixed offered rate.
    BenchE2e(bench_e2e::Args),
    /// Print benchmark result files as tables, and keep a README's in step.
    BenchReport(bench_report::Args),
    /// Run the simulated, Stripe-compatible payment provider.
    Paysim(paysim::Args),
    /// Settle payment commands through the payment provider, with a ledger.
    Settle(settling::Args),
    /// Reserve limited offers' stock: send each of their commands on to
    /// the settler with a unit held, keep it in line, or reject it as sold
    /// out.
    Stock(stock_cmd::Args),
    /// Look into the settler's ledger, and resolve stuck entries by hand.
    Ledger(ledger_cmd::Args),
    /// Change the live catalog (the `catalog` topic the matcher follows).
    Catalog(tables_cmd::CatalogArgs),
    /// Change the live account links (the `account-links` topic).
    Accounts(tables_cmd::AccountsArgs),
    /// Change the live merchants table (the `merchants` topic the settler
    /// follows in Connect mode).
    Merchants(tables_cmd::MerchantsArgs),
}

fn main() -> ExitCode {
    without_huge_pages();
    let cli = Cli::parse();
    // The demo tells its story on stdout, and bench-e2e shows its progress
    // on stderr; their services' progress messages would bury both.
    telemetry::init_logs(match cli.command {
        Command::Demo(_) | Command::BenchE2e(_) => "warn",
        _ => telemetry::SERVICE_LOGS,
    });
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Gen(args) => gen::run(args),
        Command::Broker(args) => broker::run(args),
        Command::Match(args) => matching::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Record(args) => record::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Topics(args) => topics::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Paysim(args) => paysim::run(args),
        Command::BenchSettle(args) => bench_settle::run(args),
        Command::BenchE2e(args) => bench_e2e::run(args),
        Command::BenchReport(args) => bench_report::run(args),
        Command::Settle(args) => settling::run(args),
        Command::Stock(args) => stock_cmd::run(args),
        Command::Ledger(args) => ledger_cmd::run(args),
        Command::Catalog(args) => tables_cmd::run_catalog(args),
        Command::Accounts(args) => tables_cmd::run_accounts(args),
        Command::Merchants(args) => tables_cmd::run_merchants(args),
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
