//! `hashbuy bench-report`: the Markdown tables of benchmark result
//! documents, the `--json` output of `hashbuy bench`, `hashbuy
//! bench-settle` and `hashbuy bench-e2e`.
//!
//! This is the one renderer of those tables: the benches print their table
//! through it, and the README's tables are its output over the result
//! files committed under `benches/results/`, between marker comments
//! (`<!-- results: benches/results/FILE.json -->` … `<!-- /results -->`).
//! `--update README.md` rewrites every marked table from its file, and
//! `--check README.md` fails when one differs, so a figure in the README
//! is always one that was measured and kept, with the machine it was
//! measured on.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench::median;

/// The all-time peak of tweets per second on Twitter (August 2013).
pub(crate) const TWITTER_PEAK: f64 = 143_199.0;

/// Arguments of `hashbuy bench-report`.
#[derive(clap::Args)]
pub struct Args {
    /// Result documents (`hashbuy bench --json`, `bench-settle --json`,
    /// `bench-e2e --json`) to print as tables.
    files: Vec<PathBuf>,
    /// Rewrite the marked tables of this Markdown file from the result
    /// files the markers name (paths relative to the Markdown file).
    #[arg(long, value_name = "MARKDOWN", conflicts_with = "check")]
    update: Option<PathBuf>,
    /// Fail, naming the table, when a marked table of this Markdown file
    /// differs from what its result file renders.
    #[arg(long, value_name = "MARKDOWN")]
    check: Option<PathBuf>,
}

/// Runs `hashbuy bench-report`.
pub fn run(args: Args) -> Result<()> {
    for file in &args.files {
        print!("{}", render(&read(file)?)?);
    }
    if let Some(path) = &args.update {
        let text = read_text(path)?;
        let updated = rewrite(path, &text)?;
        if updated != text {
            std::fs::write(path, updated)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("updated the result tables of {}", path.display());
        }
    }
    if let Some(path) = &args.check {
        let text = read_text(path)?;
        if rewrite(path, &text)? != text {
            bail!(
                "{}: a result table differs from its result file; run `hashbuy bench-report \
                 --update {}`",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read(path: &Path) -> Result<Value> {
    serde_json::from_str(&read_text(path)?)
        .with_context(|| format!("{}: not a result document", path.display()))
}

const OPEN: &str = "<!-- results: ";
const CLOSE: &str = "<!-- /results -->";

/// `text` with every marked table rendered again from its file.
fn rewrite(markdown: &Path, text: &str) -> Result<String> {
    let base = markdown.parent().unwrap_or(Path::new(""));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let line_end = rest[start..]
            .find('\n')
            .map(|i| start + i + 1)
            .with_context(|| format!("{}: a results marker ends the file", markdown.display()))?;
        let marker = &rest[start..line_end];
        let file = marker[OPEN.len()..]
            .trim_end()
            .strip_suffix("-->")
            .map(str::trim)
            .with_context(|| format!("{}: bad results marker {marker:?}", markdown.display()))?;
        let end = rest[line_end..].find(CLOSE).with_context(|| {
            format!(
                "{}: the results marker for {file} has no {CLOSE}",
                markdown.display()
            )
        })? + line_end;
        out.push_str(&rest[..line_end]);
        out.push_str(&render(&read(&base.join(file))?).with_context(|| file.to_owned())?);
        rest = &rest[end..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The table of one result document.
pub(crate) fn render(document: &Value) -> Result<String> {
    match document["bench"].as_str() {
        Some("matcher") => Ok(matcher(document)),
        Some("settler") => Ok(settler(document)),
        Some("e2e") => Ok(crate::bench_e2e::table(document)),
        other => bail!("no table for a result document of bench {other:?}"),
    }
}

/// A number with `digits` decimals, or `-` when absent.
fn number(value: &Value, digits: usize) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// Bytes as megabytes (10^6), or `-` when absent.
fn megabytes(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{:.0}", v / 1e6))
}

/// The machine line under a table.
pub(crate) fn machine(document: &Value) -> String {
    let machine = &document["machine"];
    format!(
        "{} CPUs ({}), {} {}",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or("model unknown"),
        machine["os"].as_str().unwrap_or("?"),
        machine["arch"].as_str().unwrap_or("?"),
    )
}

/// The consumers of a matcher document, in the order the bench runs them.
const CONSUMERS: [&str; 4] = ["ceiling", "plain", "exactly-once", "at-least-once"];

fn matcher(document: &Value) -> String {
    let field = |run: &Value, name: &str| run[name].as_f64();
    let runs = |consumer: &str| -> Vec<Value> {
        document["consumers"][consumer]["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let ceiling = runs("ceiling");
    let mut table = String::from(
        "| consumer | tweets/s | of ceiling | CPU µs/tweet | CPU over ceiling µs/tweet | broker CPU µs/tweet | × Twitter peak (143,199/s) |\n|---|---|---|---|---|---|---|\n",
    );
    for consumer in CONSUMERS {
        let runs = runs(consumer);
        if runs.is_empty() {
            continue;
        }
        let values =
            |name: &str| -> Vec<f64> { runs.iter().filter_map(|r| field(r, name)).collect() };
        let over: Vec<f64> = runs
            .iter()
            .zip(&ceiling)
            .filter_map(|(run, ceiling)| {
                Some(field(run, "cpu_us_per_record")? - field(ceiling, "cpu_us_per_record")?)
            })
            .collect();
        let rate = median(&values("per_second"));
        let broker = values("broker_cpu_us_per_record");
        let broker = if broker.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.2}", median(&broker))
        };
        let _ = writeln!(
            table,
            "| {consumer} | {rate:.0} | {:.0}% | {:.2} | {} | {broker} | {:.2} |",
            median(&values("of_ceiling")) * 100.0,
            median(&values("cpu_us_per_record")),
            if consumer == "ceiling" {
                "-".to_owned()
            } else {
                format!("{:+.2}", median(&over))
            },
            rate / TWITTER_PEAK,
        );
    }
    let share = |name: &str| {
        document[name]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |v| format!("{:.0}%", v * 100.0))
    };
    let records = document["batch_records"]
        .as_u64()
        .map_or_else(String::new, |n| format!(" or {n} records"));
    // Files from before `--confirm-share` have none: every offer direct.
    let confirm = match document["confirm_share"].as_f64() {
        Some(share) if share > 0.0 => format!(", offers in confirm mode {:.0}%", share * 100.0),
        _ => String::new(),
    };
    let _ = writeln!(
        table,
        "\n{} tweets over {} partitions, {} workers, batches of up to {} ms{records}, `--validate \
         {}`; purchase share {}, hashtag share {}{confirm}; medians of {} runs, each run's ratios to its \
         own ceiling. {}.",
        document["tweets"],
        document["partitions"],
        document["workers"],
        document["batch_ms"],
        document["validate"].as_str().unwrap_or("all"),
        share("purchase_share"),
        share("hashtag_share"),
        document["runs"],
        machine(document),
    );
    table
}

fn settler(document: &Value) -> String {
    let settler = &document["settler"];
    let mut table = String::from(
        "| settler | settlements/s | settler CPU µs/settlement | paysim CPU µs/settlement | broker CPU µs/settlement | ratio |\n|---|---|---|---|---|---|\n",
    );
    let _ = writeln!(
        table,
        "| hashbuy settle (--max-in-flight {}, {} partitions) | {} | {} | {} | {} | {}× |",
        document["max_in_flight"],
        document["partitions"],
        number(&settler["per_second"], 0),
        number(&settler["settler_cpu_us_per_settlement"], 0),
        number(&settler["paysim_cpu_us_per_settlement"], 0),
        number(&settler["broker_cpu_us_per_settlement"], 0),
        number(&settler["vs_one_at_a_time"], 0),
    );
    let _ = writeln!(
        table,
        "| one at a time | {} | - | - | - | 1× |",
        number(&document["one_at_a_time"]["per_second"], 1)
    );
    let ledger = &document["ledger"];
    if ledger.is_object() {
        // A restart's or restore's cell: whole, ledgers ready, peak RSS,
        // changelog records read (files from before it have none).
        let run = |of: &Value, name: &str| {
            let read = of[format!("{name}_changelog_read")]
                .as_u64()
                .map_or_else(String::new, |n| format!("; {n} read"));
            format!(
                "{} ({}; {}{read})",
                number(&of[format!("{name}_s")], 2),
                number(&of[format!("{name}_ledgers_ready_s")], 2),
                megabytes(&of[format!("{name}_peak_rss_bytes")]),
            )
        };
        let _ = writeln!(
            table,
            "\n| ledger | bytes on disk | bytes an entry | keys and values an entry | restart with nothing to do: whole, s (ledgers ready after assignment, s; peak RSS, MB; changelog records read) | a new owner's restore: whole, s (ready, s; peak RSS, MB; records read) | entries with work left: by the index, ms | by reading every entry, ms |\n|---|---|---|---|---|---|---|---|\n| {} entries | {} | {} | {} | {} | {} | {} | {} |",
            ledger["encoding"].as_str().unwrap_or("-"),
            ledger["bytes_on_disk"],
            number(&ledger["bytes_per_entry"], 0),
            number(&ledger["live_bytes_per_entry"], 0),
            run(ledger, "restart"),
            run(ledger, "restore"),
            number(&ledger["open_entries_by_index_ms"], 2),
            number(&ledger["open_entries_by_scan_ms"], 1),
        );
        let aged = &document["aged_past_horizon"];
        if aged.is_object() {
            let _ = writeln!(
                table,
                "| aged past the horizon: {} pruned in {} s, {} kept, {} counts ({}); {} s for the broker to compact | {} | - | - | {} | {} | - | - |",
                aged["pruned"],
                number(&aged["pruning_s"], 1),
                aged["entries_left"],
                aged["counts_left"],
                if aged["offer_ended"] == true { "the offer ended" } else { "an offer without an end" },
                number(&aged["compaction_wait_s"], 0),
                aged["bytes_on_disk"],
                run(aged, "restart"),
                run(aged, "restore"),
            );
        }
    }
    let _ = writeln!(
        table,
        "\n{} commands, provider latency {} ms (median). {}.",
        document["commands"],
        document["latency_ms"],
        machine(document),
    );
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher_document() -> Value {
        let run = |rate: f64, cpu: f64| {
            serde_json::json!({"per_second": rate, "of_ceiling": rate / 100_000.0,
                "cpu_us_per_record": cpu, "broker_cpu_us_per_record": 5.0})
        };
        serde_json::json!({
            "bench": "matcher",
            "machine": {"cpus": 2, "cpu_model": "Test CPU", "os": "linux", "arch": "x86_64"},
            "tweets": 1000, "partitions": 4, "workers": 2, "batch_ms": 100,
            "batch_records": 100_000, "purchase_share": 0.01, "hashtag_share": 0.1, "runs": 3,
            "consumers": {
                "ceiling": {"runs": [run(100_000.0, 3.0), run(100_000.0, 4.0), run(100_000.0, 3.5)]},
                "exactly-once": {"runs": [run(90_000.0, 4.0), run(80_000.0, 5.0), run(95_000.0, 3.6)]},
            },
        })
    }

    #[test]
    fn a_matcher_table_gives_medians_and_the_cpu_over_each_runs_ceiling() {
        let table = render(&matcher_document()).expect("renders");
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(
            rows[2],
            "| ceiling | 100000 | 100% | 3.50 | - | 5.00 | 0.70 |"
        );
        // Over their own runs' ceilings: +1.0, +1.0, +0.1.
        assert_eq!(
            rows[3],
            "| exactly-once | 90000 | 90% | 4.00 | +1.00 | 5.00 | 0.63 |"
        );
        assert!(table.contains("hashtag share 10%"), "{table}");
        assert!(
            table.contains("batches of up to 100 ms or 100000 records"),
            "{table}"
        );
        assert!(table.contains("2 CPUs (Test CPU)"), "{table}");
    }

    #[test]
    fn marked_tables_are_rewritten_from_their_files() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("m.json"), matcher_document().to_string()).expect("written");
        let readme = dir.path().join("README.md");
        let text = "before\n<!-- results: m.json -->\nstale\n<!-- /results -->\nafter\n";
        let rewritten = rewrite(&readme, text).expect("rewrites");
        assert!(rewritten.starts_with("before\n<!-- results: m.json -->\n| consumer |"));
        assert!(rewritten.ends_with("<!-- /results -->\nafter\n"));
        assert!(!rewritten.contains("stale"));
        assert_eq!(rewrite(&readme, &rewritten).expect("rewrites"), rewritten);
        let error = rewrite(
            &readme,
            "<!-- results: gone.json -->\nx\n<!-- /results -->\n",
        )
        .expect_err("a missing file");
        assert!(format!("{error:#}").contains("gone.json"), "{error:#}");
    }

    #[test]
    fn a_settler_table_shows_its_ledger_and_the_ledger_aged_past_the_horizon() {
        let document = serde_json::json!({
            "bench": "settler",
            "machine": {"cpus": 2, "cpu_model": "Test CPU", "os": "linux", "arch": "x86_64"},
            "commands": 1000, "partitions": 4, "max_in_flight": 256, "latency_ms": 0,
            "settler": {"per_second": 5000.0},
            "one_at_a_time": {"per_second": 500.0},
            "ledger": {
                "encoding": "protobuf", "bytes_on_disk": 900_000, "bytes_per_entry": 900.0,
                "live_bytes_per_entry": 200.0,
                "restart_s": 1.5, "restart_ledgers_ready_s": 0.1,
                "restart_peak_rss_bytes": 40_000_000, "restart_changelog_read": 4,
                "restore_s": 3.0, "restore_ledgers_ready_s": 2.0,
                "restore_peak_rss_bytes": 90_000_000, "restore_changelog_read": 2000,
            },
            "aged_past_horizon": {
                "pruned": 1000, "pruning_s": 4.0, "entries_left": 4, "counts_left": 996,
                "offer_ended": false, "bytes_on_disk": 950_000,
                "compaction_wait_s": 30.0,
                "restart_s": 1.2, "restart_ledgers_ready_s": 0.2,
                "restart_peak_rss_bytes": 30_000_000, "restart_changelog_read": 4,
                "restore_s": 2.5, "restore_ledgers_ready_s": 0.5,
                "restore_peak_rss_bytes": 60_000_000, "restore_changelog_read": 1004,
            },
        });
        let table = render(&document).expect("renders");
        assert!(
            table.contains("| 1.50 (0.10; 40; 4 read) | 3.00 (2.00; 90; 2000 read) |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| aged past the horizon: 1000 pruned in 4.0 s, 4 kept, 996 counts (an offer \
                 without an end); 30 s for the broker to compact | 950000 | - | - | 1.20 (0.20; 30; 4 read) | 2.50 (0.50; 60; 1004 read) |"
            ),
            "{table}"
        );
    }

    #[test]
    fn unknown_documents_are_refused() {
        assert!(render(&serde_json::json!({"bench": "nope"})).is_err());
    }
}
