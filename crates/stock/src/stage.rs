//! The step's stage of the group driver: reads its partitions' queues in
//! turn, decides each request against the partition's lines, and makes
//! each turn's requests durable as one batch (see the crate docs).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hashbuy_core::stock::{Effects, SavedLine, Stock};
use hashbuy_kafka::client::failed;
use hashbuy_kafka::config::Delivery;
use hashbuy_kafka::driver::{Member, Queue, Stage};
use hashbuy_kafka::group::{committed, moved_on};
use hashbuy_kafka::health::Health;
use hashbuy_kafka::produce::{
    commit_transaction, dead_letter_of, flush_promptly, send_to_partition_waiting, Deliveries,
};
use hashbuy_proto::v1::stock_request::Kind;
use hashbuy_proto::v1::StockRequest;
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::restore::restore;
use crate::run::{Config, RunError, Summary, CALL_TIMEOUT};
use crate::STAGE;

/// How many transactions in a row may abort before the step stops: an
/// abort that keeps coming (a topic the producer may not write, say)
/// is an error to report, not to retry forever.
const ABORTS: u32 = 5;

/// Most requests one partition gives a batch.
const BATCH_REQUESTS: usize = 1000;

/// A partition this member owns.
struct Owned {
    queue: Queue<Reserving>,
    stock: Stock,
    /// The partition's end was reported since its last request.
    at_eof: bool,
}

/// A record to produce.
struct Out {
    topic: String,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

/// A turn's batch: what to produce, and where each partition's reading
/// began and ends.
#[derive(Default)]
struct Batch {
    outputs: Vec<Out>,
    changelog: Vec<Out>,
    /// Per partition: the first offset read, and the next.
    read: HashMap<i32, (i64, i64)>,
    /// The lines the batch touched, as they were before it, to put back
    /// if its transaction is aborted.
    saved: HashMap<(i32, String), SavedLine>,
    counts: Summary,
}

/// The step's stage; see the module docs.
pub(crate) struct Reserving {
    config: Config,
    producer: BaseProducer<Deliveries>,
    /// What a dead letter may take of a record.
    letter_bytes: usize,
    owned: HashMap<i32, Owned>,
    summary: Summary,
    failure: Option<RunError>,
    /// Transactions aborted one after another.
    aborts: u32,
}

impl Reserving {
    pub(crate) fn new(
        config: Config,
        producer: BaseProducer<Deliveries>,
        letter_bytes: usize,
    ) -> Self {
        Reserving {
            config,
            producer,
            letter_bytes,
            owned: HashMap::new(),
            summary: Summary::default(),
            failure: None,
            aborts: 0,
        }
    }

    fn fail(&mut self, error: RunError) {
        tracing::error!("{error}");
        self.failure.get_or_insert(error);
    }

    /// Reads up to [`BATCH_REQUESTS`] requests of each owned partition
    /// into a batch, deciding them.
    fn collect(&mut self) -> Batch {
        let mut batch = Batch::default();
        let Reserving {
            config,
            owned,
            letter_bytes,
            ..
        } = self;
        for (&partition, part) in owned.iter_mut() {
            for _ in 0..BATCH_REQUESTS {
                match part.queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Err(KafkaError::PartitionEOF(_))) => {
                        part.at_eof = true;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(partition, "reading stock requests: {e}");
                        break;
                    }
                    Some(Ok(message)) => {
                        part.at_eof = false;
                        let read = batch
                            .read
                            .entry(partition)
                            .or_insert((message.offset(), message.offset()));
                        read.1 = message.offset() + 1;
                        batch.counts.requests += 1;
                        decide(config, &mut part.stock, &message, *letter_bytes, &mut batch);
                    }
                }
            }
        }
        batch
    }

    /// Makes `batch` durable; `false` if its transaction was aborted (the
    /// lines it touched are put back and its requests read again).
    fn commit(&mut self, member: &Member<Reserving>, batch: Batch) -> Result<bool, RunError> {
        let mut offsets = TopicPartitionList::new();
        for (&partition, &(_, next)) in &batch.read {
            offsets
                .add_partition_offset(
                    &self.config.topics.stock_requests,
                    partition,
                    Offset::Offset(next),
                )
                .map_err(failed("cannot list offsets"))?;
        }
        let committed = match self.config.delivery {
            Delivery::ExactlyOnce => {
                self.producer
                    .begin_transaction()
                    .map_err(failed("cannot begin a transaction"))?;
                for out in batch.outputs.iter().chain(&batch.changelog) {
                    self.send(out)?;
                }
                let metadata = member.group_metadata().ok_or(RunError::NoGroup)?;
                commit_transaction(&self.producer, member, &metadata, &offsets, CALL_TIMEOUT)?
            }
            Delivery::AtLeastOnce => {
                // Outputs, then the lines, then the offsets: see
                // `hashbuy_core::stock`.
                for out in &batch.outputs {
                    self.send(out)?;
                }
                self.deliver()?;
                for out in &batch.changelog {
                    self.send(out)?;
                }
                self.deliver()?;
                match member.commit(&offsets, CommitMode::Sync) {
                    Ok(()) => {}
                    Err(e) if moved_on(&e) => tracing::warn!(
                        "cannot commit offsets: {e}: the group moved on; the partitions' next \
                         owner reads these requests again and finds them decided"
                    ),
                    Err(e) => return Err(failed("cannot commit offsets")(e).into()),
                }
                true
            }
        };
        if committed {
            self.aborts = 0;
            let counts = &batch.counts;
            self.summary.requests += counts.requests;
            self.summary.granted += counts.granted;
            self.summary.sold_out += counts.sold_out;
            self.summary.sold += counts.sold;
            self.summary.released += counts.released;
            self.summary.dead_letters += counts.dead_letters;
            self.summary.batches += 1;
            metrics::counter!("hashbuy_stock_requests_total").increment(counts.requests);
            for (decision, count) in [
                ("granted", counts.granted),
                ("sold_out", counts.sold_out),
                ("sold", counts.sold),
                ("released", counts.released),
            ] {
                metrics::counter!("hashbuy_stock_decisions_total", "decision" => decision)
                    .increment(count);
            }
            metrics::counter!("hashbuy_stock_dead_letters_total").increment(counts.dead_letters);
        } else {
            self.summary.retried_batches += 1;
            metrics::counter!("hashbuy_stock_batches_aborted_total").increment(1);
            // The lines the batch touched go back to what they were
            // (never read back from the changelog, which may hold another
            // member's transaction open before this one's commits), and
            // its requests are read again.
            self.aborts += 1;
            if self.aborts >= ABORTS {
                return Err(RunError::Aborted { times: self.aborts });
            }
            for ((partition, _), saved) in batch.saved {
                if let Some(part) = self.owned.get_mut(&partition) {
                    part.stock.put_back(saved);
                }
            }
            for (&partition, &(first, _)) in &batch.read {
                member
                    .seek(
                        &self.config.topics.stock_requests,
                        partition,
                        Offset::Offset(first),
                        CALL_TIMEOUT,
                    )
                    .map_err(failed("cannot read an aborted batch again"))?;
            }
        }
        Ok(committed)
    }

    fn send(&self, out: &Out) -> Result<(), RunError> {
        send_to_partition_waiting(
            &self.producer,
            &out.topic,
            out.partition,
            out.key.as_deref(),
            &out.value,
            || false,
        )
        .map_err(|e| failed("cannot produce")(e).into())
    }

    /// Waits until everything produced is delivered.
    fn deliver(&self) -> Result<(), RunError> {
        flush_promptly(&self.producer, CALL_TIMEOUT).map_err(failed("cannot deliver the batch"))?;
        match self.producer.context().failures() {
            Some((count, first)) => Err(RunError::Undelivered { count, first }),
            None => Ok(()),
        }
    }
}

/// Decides one request read from `message` against `stock`, adding what it
/// produces to `batch`.
fn decide(
    config: &Config,
    stock: &mut Stock,
    message: &BorrowedMessage<'_>,
    letter_bytes: usize,
    batch: &mut Batch,
) {
    let value = message.payload().unwrap_or_default();
    let effects = match StockRequest::decode(value).map(|r| r.kind) {
        Ok(Some(Kind::Reserve(command))) => {
            save(config, batch, stock, message.partition(), &command.offer_id);
            stock.reserve(command).map_err(|e| e.to_string())
        }
        Ok(Some(Kind::Resolve(resolution))) => {
            save(
                config,
                batch,
                stock,
                message.partition(),
                &resolution.offer_id,
            );
            let effects = stock.resolve(&resolution);
            if let Some(contradiction) = &effects.contradiction {
                tracing::error!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "{contradiction}"
                );
                metrics::counter!("hashbuy_stock_contradictions_total").increment(1);
            } else if effects.is_empty() {
                tracing::debug!(
                    command_id = %resolution.command_id,
                    "a word on a unit not held (said before): nothing to do"
                );
            } else if resolution.sold {
                batch.counts.sold += 1;
            } else {
                batch.counts.released += 1;
            }
            Ok(effects)
        }
        Ok(None) => Err("a StockRequest with neither a reserve nor a resolve".to_owned()),
        Err(e) => Err(format!("not a StockRequest: {e}")),
    };
    match effects {
        Ok(effects) => add(config, message.partition(), effects, batch),
        Err(reason) => {
            tracing::warn!(
                partition = message.partition(),
                offset = message.offset(),
                "{reason}: dead-lettered"
            );
            batch.counts.dead_letters += 1;
            let letter = dead_letter_of(message, reason, STAGE, letter_bytes);
            batch.outputs.push(Out {
                topic: config.topics.dead_letters.clone(),
                partition: None,
                key: letter.key.clone(),
                value: letter.encode_to_vec(),
            });
        }
    }
}

/// Saves the line of `offer_id` in `partition` as it is before the batch
/// first touches it, exactly once (at least once, nothing is undone).
fn save(config: &Config, batch: &mut Batch, stock: &Stock, partition: i32, offer_id: &str) {
    if config.delivery != Delivery::ExactlyOnce {
        return;
    }
    batch
        .saved
        .entry((partition, offer_id.to_owned()))
        .or_insert_with(|| stock.save(offer_id));
}

/// Adds what a decision produces to `batch`: its changelog records go to
/// the same partition of the changelog as the request's.
fn add(config: &Config, partition: i32, effects: Effects, batch: &mut Batch) {
    let topics = &config.topics;
    batch.counts.granted += effects.grants.len() as u64;
    batch.counts.sold_out += effects.sold_out.len() as u64;
    // Keyed by user, as the matcher keys commands: a user's commands
    // settle in order. A granted one names this partition, where the
    // settler's word on its unit must come back to.
    for mut command in effects.grants {
        command.stock_partition = Some(partition);
        batch.outputs.push(Out {
            topic: topics.commands.clone(),
            partition: None,
            key: Some(command.user_id.clone().into_bytes()),
            value: command.encode_to_vec(),
        });
    }
    for command in effects.sold_out {
        batch.outputs.push(Out {
            topic: topics.commands.clone(),
            partition: None,
            key: Some(command.user_id.clone().into_bytes()),
            value: command.encode_to_vec(),
        });
    }
    for (key, hold) in effects.changelog {
        batch.changelog.push(Out {
            topic: topics.stock.clone(),
            partition: Some(partition),
            key: Some(key.into_bytes()),
            value: hold.encode_to_vec(),
        });
    }
}

impl Stage for Reserving {
    type Error = RunError;
    type Output = Summary;

    fn assigned(&mut self, member: &Arc<Member<Self>>, queues: Vec<(i32, Queue<Self>)>) {
        let partitions: Vec<i32> = queues.iter().map(|(p, _)| *p).collect();
        // Fetched first, and stable: a former owner's last transaction is
        // committed or aborted by then, so the changelog read below holds
        // all of it or none, and matches the offsets reading starts from.
        if let Err(e) = committed(
            member.as_ref(),
            &self.config.topics.stock_requests,
            partitions.iter().copied(),
        ) {
            return self.fail(failed("cannot fetch the committed offsets")(e).into());
        }
        let mut lines = match restore(&self.config, &partitions) {
            Ok(lines) => lines,
            Err(e) => return self.fail(e),
        };
        for (partition, queue) in queues {
            let stock = lines.remove(&partition).unwrap_or_default();
            self.owned.insert(
                partition,
                Owned {
                    queue,
                    stock,
                    at_eof: false,
                },
            );
        }
        tracing::info!(partitions = ?partitions, "stock requests assigned");
    }

    fn revoking(&mut self, _member: &Member<Self>, partitions: &[i32]) {
        // Every turn's batch is committed within the turn: nothing is left
        // to make durable.
        for partition in partitions {
            self.owned.remove(partition);
        }
    }

    fn tick(&mut self, member: &Arc<Member<Self>>, _health: &Health) -> Result<(), RunError> {
        let batch = self.collect();
        if batch.read.is_empty() {
            return Ok(());
        }
        self.commit(member, batch)?;
        Ok(())
    }

    fn failure(&mut self) -> Option<RunError> {
        self.failure.take()
    }

    fn poll_timeout(&self) -> Duration {
        Duration::from_millis(10)
    }

    fn at_eof(&self) -> HashSet<i32> {
        self.owned
            .iter()
            .filter(|(_, part)| part.at_eof)
            .map(|(&p, _)| p)
            .collect()
    }

    fn finish(&mut self, _member: &Member<Self>, failed: bool) -> Result<Summary, RunError> {
        if failed && self.config.delivery == Delivery::ExactlyOnce {
            // An open transaction would hold readers of committed records
            // up until the broker's transaction timeout.
            let _ = self.producer.abort_transaction(CALL_TIMEOUT);
        }
        self.owned.clear();
        Ok(self.summary.clone())
    }
}
