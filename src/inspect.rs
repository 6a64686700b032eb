//! `hashbuy inspect`: decode tweets offline and print, one JSON object per
//! input line, what hashbuy makes of each (and, given the tables, what it
//! would decide). It never stops on a bad line: output lines stay aligned
//! with input lines.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use hashbuy_core::decode::{decode, Record};
use hashbuy_core::tables::{Accounts, Catalog};
use hashbuy_core::{Decision, Rules};
use hashbuy_proto::v1::PaymentCommand;
use serde::Serialize;

use crate::input;

/// Arguments of `hashbuy inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// JSON lines of tweets (v1.1 or v2 API), plain, gzip or zstd; standard
    /// input when absent or `-`.
    file: Option<PathBuf>,
    /// Catalog table file (TOML or JSON) to decide purchases against;
    /// needs --accounts.
    #[arg(long, requires = "accounts")]
    catalog: Option<PathBuf>,
    /// Accounts table file (TOML or JSON) to decide purchases against;
    /// needs --catalog.
    #[arg(long, requires = "catalog")]
    accounts: Option<PathBuf>,
}

/// One output line.
#[derive(Serialize)]
struct Line<'a> {
    id: Option<&'a str>,
    kind: &'static str,
    /// The notice's name, for notices of kind `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    notice: Option<&'static str>,
    hashtags: Vec<&'a str>,
    retweet: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<DecisionLine<'a>>,
}

#[derive(Serialize)]
struct DecisionLine<'a> {
    commands: &'a [PaymentCommand],
    skip: Option<&'static str>,
}

/// Runs `hashbuy inspect`.
pub fn run(args: Args) -> Result<()> {
    let tables = match (&args.catalog, &args.accounts) {
        (Some(catalog), Some(accounts)) => Some((load_catalog(catalog)?, load_accounts(accounts)?)),
        _ => None,
    };
    let rules = tables.as_ref().map(|(c, a)| Rules::new(c, a));
    let mut reader = input::open(args.file.as_deref())?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut line = Vec::new();
    while input::next_line(&mut *reader, &mut line)? {
        let decoded = decode(&line);
        let decision = rules.map(|r| r.decide_decoded(&decoded));
        let output = match &decoded {
            Ok(record) => Line {
                id: record.id(),
                kind: record.kind(),
                notice: match record {
                    Record::Notice(n) if record.kind() == "other" => Some(n.name()),
                    _ => None,
                },
                hashtags: match record {
                    Record::Tweet(t) => t.hashtags.iter().map(|h| h.as_ref()).collect(),
                    _ => Vec::new(),
                },
                retweet: matches!(record, Record::Tweet(t) if t.retweet),
                error: None,
                decision: decision.as_ref().map(decision_line),
            },
            Err(e) => Line {
                id: None,
                kind: "invalid",
                notice: None,
                hashtags: Vec::new(),
                retweet: false,
                error: Some(e.to_string()),
                decision: decision.as_ref().map(decision_line),
            },
        };
        serde_json::to_writer(&mut out, &output).context("cannot write output")?;
        out.write_all(b"\n").context("cannot write output")?;
    }
    out.flush().context("cannot write output")
}

fn decision_line(decision: &Decision) -> DecisionLine<'_> {
    DecisionLine {
        commands: decision.commands(),
        skip: decision.skip().map(|r| r.as_str()),
    }
}

/// Loads a catalog table file; errors name the file, line and key.
pub fn load_catalog(path: &std::path::Path) -> Result<Catalog> {
    let text = read_table(path)?;
    Ok(Catalog::from_file_text(&path.display().to_string(), &text)?)
}

/// Loads an accounts table file; errors name the file, line and key.
pub fn load_accounts(path: &std::path::Path) -> Result<Accounts> {
    let text = read_table(path)?;
    Ok(Accounts::from_file_text(
        &path.display().to_string(),
        &text,
    )?)
}

fn read_table(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read table file {}", path.display()))
}
