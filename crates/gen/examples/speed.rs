//! Measures generation speed: writes N lines (default 1,000,000) into a
//! reused buffer and reports lines/s, MB/s and the average line length.
//!
//! ```text
//! cargo run --release -p hashbuy-gen --example speed -- 1000000
//! ```

use std::time::Instant;

use hashbuy_gen::{Generator, Options};

fn main() {
    let lines: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let built = Instant::now();
    let mut generator = Generator::new(Options::default());
    let setup = built.elapsed();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut bytes = 0u64;
    let started = Instant::now();
    for _ in 0..lines {
        generator.write_next(&mut buf);
        buf.push(b'\n');
        if buf.len() > (1 << 20) - 64 * 1024 {
            bytes += buf.len() as u64;
            std::hint::black_box(&buf);
            buf.clear();
        }
    }
    bytes += buf.len() as u64;
    std::hint::black_box(&buf);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "setup {:.3} s; {lines} lines, {:.1} MB in {secs:.2} s: {:.0} lines/s, {:.0} MB/s, {:.0} bytes/line",
        setup.as_secs_f64(),
        bytes as f64 / 1e6,
        lines as f64 / secs,
        bytes as f64 / 1e6 / secs,
        bytes as f64 / lines as f64,
    );
}
