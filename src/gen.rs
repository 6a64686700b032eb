//! `hashbuy gen`: a seeded synthetic Twitter v1.1 firehose (JSON lines),
//! with the catalog and accounts its purchase tweets use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use hashbuy_gen::{Generator, Options};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::input;

/// Arguments of `hashbuy gen`.
#[derive(clap::Args)]
pub struct Args {
    /// How many lines (tweets and notices) to write.
    #[arg(long, default_value_t = 10_000)]
    tweets: u64,
    /// Where to write them: a file (`.gz` and `.zst` compress), or `-` for
    /// standard output.
    #[arg(long, default_value = "-")]
    out: PathBuf,
    /// Share of lines that carry a catalog hashtag, between 0 and 1.
    #[arg(long, default_value_t = 0.01, value_parser = fraction)]
    purchase_share: f64,
    /// Share of the lines that do not buy (tweets and notices) whose bytes
    /// hold a hashtag sign (`#`, `＃` or a `\u` escape of either), between
    /// 0 and 1; the others hold none anywhere. The default is the share of
    /// tweets with a hashtag, 10.1% of 74 million (January to March 2010),
    /// in Suh, Hong, Pirolli and Chi, "Want to be Retweeted? Large Scale
    /// Analytics on Factors Impacting Retweet in Twitter Network", IEEE
    /// SocialCom 2010.
    #[arg(long, default_value_t = hashbuy_gen::DEFAULT_HASHTAG_SHARE, value_parser = fraction)]
    hashtag_share: f64,
    /// Seed of the generator: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of offers in the catalog.
    #[arg(long, default_value_t = 10_000)]
    offers: usize,
    /// Number of users with a linked card.
    #[arg(long, default_value_t = 10_000)]
    linked_users: usize,
    /// Share of the offers in confirm mode, between 0 and 1. A purchase
    /// tweet of one is confirmed by its author's tweet with the offer's
    /// confirmation hashtag within 5 minutes of stream time 80% of the
    /// time; the rest expire. 0 writes the stream it wrote before.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    confirm_share: f64,
    /// Write the catalog here (TOML if the name ends in `.toml`, else JSON).
    #[arg(long)]
    catalog_out: Option<PathBuf>,
    /// Write the accounts here (TOML if the name ends in `.toml`, else JSON).
    #[arg(long)]
    accounts_out: Option<PathBuf>,
}

/// Parses a share option (`--purchase-share`, `--hashtag-share`): a number
/// from 0 to 1. One parser for every command that takes a share, so they
/// refuse alike; clap names the flag and the value in its error.
pub(crate) fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction between 0 and 1")),
    }
}

/// Runs `hashbuy gen`.
pub fn run(args: Args) -> Result<()> {
    let mut generator = Generator::new(Options {
        seed: args.seed,
        purchase_share: args.purchase_share,
        hashtag_share: args.hashtag_share,
        offers: args.offers,
        linked_users: args.linked_users,
        confirm_share: args.confirm_share,
        ..Options::default()
    });
    if let Some(path) = &args.catalog_out {
        write_table(path, &generator.catalog())?;
    }
    if let Some(path) = &args.accounts_out {
        write_table(path, &generator.accounts())?;
    }

    let to_stdout = args.out == Path::new("-");
    let progress = if to_stdout {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.tweets).with_style(
            ProgressStyle::with_template(
                "{bar:40} {human_pos}/{human_len} tweets, {per_sec}, ETA {eta}",
            )
            .context("progress template")?,
        )
    };
    let started = Instant::now();
    let mut out = input::create(&args.out)?;
    let mut line = Vec::with_capacity(64 * 1024);
    let mut bytes: u64 = 0;
    for written in 0..args.tweets {
        line.clear();
        generator.write_next(&mut line);
        line.push(b'\n');
        out.write_all(&line)
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        bytes += line.len() as u64;
        if written % 4096 == 0 {
            progress.set_position(written);
        }
    }
    out.finish()
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    progress.finish_and_clear();
    if !to_stdout {
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "wrote {} lines ({:.1} MB) to {} in {:.1} s ({:.0} lines/s)",
            args.tweets,
            bytes as f64 / 1e6,
            args.out.display(),
            seconds,
            args.tweets as f64 / seconds.max(1e-9),
        );
    }
    Ok(())
}

fn write_table<T: Serialize>(path: &Path, table: &T) -> Result<()> {
    let text = if path
        .to_string_lossy()
        .to_ascii_lowercase()
        .ends_with(".toml")
    {
        toml::to_string(table).context("cannot render TOML")?
    } else {
        serde_json::to_string_pretty(table).context("cannot render JSON")? + "\n"
    };
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
