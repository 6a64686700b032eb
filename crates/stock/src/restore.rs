//! Restoring newly assigned partitions' lines from the `stock-holds`
//! changelog, before their first request is read.

use std::collections::HashMap;
use std::time::Instant;

use hashbuy_core::stock::Stock;
use hashbuy_kafka::reader::{read_to_end, ReadOptions, ReadToEnd, TopicReader};
use rdkafka::Message;

use crate::run::{Config, RunError};

/// The lines of `partitions`, read from the changelog to its end (only
/// committed transactions).
pub(crate) fn restore(
    config: &Config,
    partitions: &[i32],
) -> Result<HashMap<i32, Stock>, RunError> {
    let began = Instant::now();
    let topic = &config.topics.stock;
    let mut lines: HashMap<i32, Stock> = partitions.iter().map(|&p| (p, Stock::new())).collect();
    if partitions.is_empty() {
        return Ok(lines);
    }
    let mut reader = TopicReader::open_partitions(
        &config.connection,
        topic,
        Some(partitions),
        ReadOptions {
            from_beginning: true,
            exit_at_end: true,
            read_uncommitted: false,
        },
    )?;
    // Compaction keeps every key's last record from offset 0 on; a later
    // start means deletion, and with it units held or sold.
    if let Some((&partition, &first)) = reader.first_offsets().iter().find(|(_, &f)| f > 0) {
        metrics::counter!("hashbuy_stock_changelog_gaps_total").increment(1);
        return Err(RunError::ChangelogGap {
            topic: topic.clone(),
            partition,
            first,
        });
    }
    let mut records = 0u64;
    let read = read_to_end(&mut reader, "the stock changelog", |message| {
        records += 1;
        let (Some(stock), Some(value)) = (lines.get_mut(&message.partition()), message.payload())
        else {
            return Ok::<(), RunError>(());
        };
        if let Err(e) = stock.restore(value) {
            // Only hashbuy writes the changelog: a record it cannot read is
            // a bug or a foreign writer.
            tracing::error!(
                partition = message.partition(),
                offset = message.offset(),
                "{e}: left out of the restore"
            );
            metrics::counter!("hashbuy_stock_changelog_unreadable_total").increment(1);
        }
        Ok(())
    });
    match read {
        Ok(()) => {}
        Err(ReadToEnd::Record(e)) => return Err(e),
        Err(ReadToEnd::Stalled { waited, last_error }) => {
            return Err(RunError::RestoreStalled {
                topic: topic.clone(),
                partitions: partitions.to_vec(),
                waited,
                last_error,
            })
        }
    }
    tracing::info!(
        partitions = ?partitions,
        records,
        "restored the stock lines in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    Ok(lines)
}
