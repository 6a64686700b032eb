//! `hashbuy inspect`: decode tweets offline and print, one JSON object per
//! input line, what hashbuy makes of each (and, given the tables, what it
//! would decide). It never stops on a bad line: output lines stay aligned
//! with input lines.
//!
//! With confirm-mode offers in the catalog, the file is one partition's
//! stream: its pending purchases and stream time carry from line to line
//! ([`PartitionFlow`]), and each line says the steps of the flow it took
//! (pending, confirmed, expired, cancelled, and why a confirmation
//! confirmed nothing), as the matcher takes them for a partition holding
//! the file's records in its order.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use hashbuy_core::confirm::{takes_part, PartitionFlow, Step};
use hashbuy_core::decode::{decode, Record};
use hashbuy_core::tables::{Accounts, Catalog, Merchants};
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
    decision: Option<DecisionLine>,
}

#[derive(Serialize)]
struct DecisionLine {
    /// What the line produces: its direct purchases, then the pending
    /// purchases it confirmed.
    commands: Vec<PaymentCommand>,
    skip: Option<&'static str>,
    /// The steps of the confirm flow it took, with the expiries its time
    /// caused; left out when the catalog has no confirm-mode offer.
    #[serde(skip_serializing_if = "Option::is_none")]
    flow: Option<Vec<FlowLine>>,
}

/// One step of the confirm flow.
#[derive(Serialize)]
struct FlowLine {
    /// `pending`, `already_pending`, `confirmed`, `expired`, `cancelled`,
    /// or why a confirmation confirmed nothing (`no_pending_purchase`,
    /// `confirmation_before_purchase`, `confirmation_after_window`).
    step: &'static str,
    offer_id: String,
    /// The purchase tweet the step is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    purchase_tweet_id: Option<String>,
    /// Its command's id, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    command_id: Option<String>,
    /// The reply to the buyer, when the step makes one.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<String>,
}

impl FlowLine {
    fn of(step: Step) -> (FlowLine, Option<PaymentCommand>) {
        let name = step.as_str();
        let line = |offer_id: String, purchase: Option<String>, command: Option<String>| FlowLine {
            step: name,
            offer_id,
            purchase_tweet_id: purchase,
            command_id: command,
            reply: None,
        };
        match step {
            Step::Pending(reply) | Step::Expired(reply) | Step::Cancelled(reply) => (
                FlowLine {
                    reply: Some(reply.text),
                    ..line(
                        reply.offer_id,
                        Some(reply.in_reply_to_tweet_id),
                        Some(reply.command_id),
                    )
                },
                None,
            ),
            Step::AlreadyPending {
                offer_id,
                pending_tweet_id,
            } => (line(offer_id, Some(pending_tweet_id), None), None),
            Step::Confirmed(command) => (
                line(
                    command.offer_id.clone(),
                    Some(command.tweet_id.clone()),
                    Some(command.command_id.clone()),
                ),
                Some(command),
            ),
            Step::Unconfirmed { offer_id, .. } => (line(offer_id, None, None), None),
        }
    }
}

/// Runs `hashbuy inspect`.
pub fn run(args: Args) -> Result<()> {
    let tables = match (&args.catalog, &args.accounts) {
        (Some(catalog), Some(accounts)) => Some((load_catalog(catalog)?, load_accounts(accounts)?)),
        _ => None,
    };
    let rules = tables.as_ref().map(|(c, a)| Rules::new(c, a));
    let mut flow = tables
        .as_ref()
        .filter(|(catalog, _)| catalog.has_confirm_offers())
        .map(|_| PartitionFlow::new());
    let mut reader = input::open(args.file.as_deref())?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut line = Vec::new();
    // The line's index stands for its offset in the partition.
    let mut offset = 0i64;
    while input::next_line(&mut *reader, &mut line)? {
        offset += 1;
        let decoded = decode(&line);
        let decision = rules.map(|r| r.decide_decoded(&decoded));
        let decision = decision
            .as_ref()
            .map(|d| decision_line(d, decoded.as_ref().ok(), &line, offset, flow.as_mut()));
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
                decision,
            },
            Err(e) => Line {
                id: None,
                kind: "invalid",
                notice: None,
                hashtags: Vec::new(),
                retweet: false,
                error: Some(e.to_string()),
                decision,
            },
        };
        serde_json::to_writer(&mut out, &output).context("cannot write output")?;
        out.write_all(b"\n").context("cannot write output")?;
    }
    out.flush().context("cannot write output")
}

/// A record's decision, and its steps through `flow` (the file's pending
/// purchases, when the catalog has confirm-mode offers).
fn decision_line(
    decision: &Decision,
    record: Option<&Record<'_>>,
    bytes: &[u8],
    offset: i64,
    flow: Option<&mut PartitionFlow>,
) -> DecisionLine {
    let mut commands = decision.commands().to_vec();
    let mut steps = Vec::new();
    let lines = flow.map(|flow| {
        if let Some(record) = record.filter(|r| takes_part(r, bytes)) {
            flow.record(record, decision, offset, &mut steps);
        }
        steps
            .drain(..)
            .map(|step| {
                let (line, command) = FlowLine::of(step);
                commands.extend(command);
                line
            })
            .collect()
    });
    DecisionLine {
        commands,
        skip: decision.skip().map(|r| r.as_str()),
        flow: lines,
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

/// Loads a merchants table file; errors name the file, line and key.
pub fn load_merchants(path: &std::path::Path) -> Result<Merchants> {
    let text = read_table(path)?;
    Ok(Merchants::from_file_text(
        &path.display().to_string(),
        &text,
    )?)
}

fn read_table(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read table file {}", path.display()))
}
