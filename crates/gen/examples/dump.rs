//! Prints N lines of the synthetic firehose (default 10) to stdout, one
//! JSON object a line; with `--tables DIR`, also writes `catalog.json` and
//! `accounts.json` there.
//!
//! ```text
//! cargo run -p hashbuy-gen --example dump -- 100 --seed 7 --hashtag-share 0.1 --tables /tmp
//! ```

use std::io::Write;

use hashbuy_gen::{Generator, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut lines = 10u64;
    let mut options = Options::default();
    let mut tables = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => options.seed = args.next().ok_or("--seed N")?.parse()?,
            "--purchase-share" => {
                options.purchase_share = args.next().ok_or("--purchase-share P")?.parse()?
            }
            "--hashtag-share" => {
                options.hashtag_share = args.next().ok_or("--hashtag-share P")?.parse()?
            }
            "--tables" => tables = Some(args.next().ok_or("--tables DIR")?),
            n => lines = n.parse()?,
        }
    }
    let mut generator = Generator::new(options);
    if let Some(dir) = tables {
        std::fs::write(
            format!("{dir}/catalog.json"),
            serde_json::to_string_pretty(&generator.catalog())?,
        )?;
        std::fs::write(
            format!("{dir}/accounts.json"),
            serde_json::to_string_pretty(&generator.accounts())?,
        )?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf = Vec::new();
    for _ in 0..lines {
        buf.clear();
        generator.write_next(&mut buf);
        buf.push(b'\n');
        out.write_all(&buf)?;
    }
    Ok(())
}
