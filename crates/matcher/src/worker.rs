//! A partition's worker: it reads the partition's records in offset order,
//! decides each with the [`Matcher`] (and the partition's pending
//! purchases, which it owns), encodes what they produce, and hands the
//! coordinator chunks of outputs, with the changes to the pending
//! purchases and the offset they reach.

use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use hashbuy_core::confirm::PartitionFlow;
use hashbuy_kafka::client::CONNECT_TIMEOUT;
use hashbuy_kafka::driver::DriverContext;
use hashbuy_kafka::loss::{Continuity, Gap, PartitionOffsets};
use hashbuy_kafka::now_ms;
use hashbuy_kafka::pool::PartitionWork;
use hashbuy_proto::dead_letter;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;

use crate::stage::Matching;
use crate::{Matcher, Output, Sampled, Source};

/// Most records a worker puts in one chunk.
const CHUNK_RECORDS: u64 = 512;

/// What a worker did with a run of records of its partition.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    pub(crate) partition: i32,
    /// One past the last record of the chunk, when it has records.
    pub(crate) next_offset: Option<i64>,
    pub(crate) records: u64,
    pub(crate) outputs: Vec<Produced>,
    /// The changelog records of the partition's pending purchases that
    /// changed with these records, as of `next_offset`: key and value.
    pub(crate) changelog: Vec<(String, Vec<u8>)>,
    /// Records by kind, and decisions (a step of the confirm flow counts
    /// as one), for the metrics.
    pub(crate) kinds: Tally,
    pub(crate) decisions: Tally,
    /// Skimmed records sampled, and the malformed among them
    /// ([`crate::Validation`]).
    pub(crate) sampled: u64,
    pub(crate) malformed_samples: u64,
    /// The worker reached the end of its partition after these records.
    pub(crate) eof: bool,
    /// Records deleted before they were read, found among these.
    pub(crate) gaps: Vec<Gap>,
}

/// An encoded output record.
#[derive(Debug)]
pub(crate) struct Produced {
    pub(crate) to: Destination,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Vec<u8>,
}

/// Which topic an output goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination {
    Commands,
    /// A limited offer's command, to the reservation step.
    StockRequests,
    Replies,
    DeadLetters,
}

/// Counts by a fixed name; a handful of names, so a vector.
#[derive(Debug, Default)]
pub(crate) struct Tally(pub(crate) Vec<(&'static str, u64)>);

impl Tally {
    /// The count of `name`.
    pub(crate) fn get(&self, name: &str) -> u64 {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    }

    fn add(&mut self, name: &'static str) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => self.0.push((name, 1)),
        }
    }
}

/// Where a partition's worker starts.
pub(crate) struct PartitionStart {
    pub(crate) partition: i32,
    /// The offset its next record is expected at (unknown: `None`).
    pub(crate) next: Option<i64>,
    /// Its pending purchases, restored; `None` when the catalog has no
    /// confirm-mode offer.
    pub(crate) flow: Option<PartitionFlow>,
}

/// A partition's worker: turns records into chunks of outputs.
pub(crate) struct Job {
    partition: i32,
    topic: String,
    matcher: Arc<Matcher>,
    /// The partition's next expected offset, to find deleted records.
    continuity: Continuity,
    /// Where the partition's log starts (asked when an offset jumps) and
    /// where the consumer stands at its end.
    offsets: PartitionOffsets<DriverContext<Matching>>,
    /// What a dead letter may take of a record.
    letter_bytes: usize,
    sender: SyncSender<Chunk>,
    /// The chunk being filled.
    chunk: Chunk,
    /// One record's outputs, kept to reuse its allocation.
    outputs: Vec<Output>,
    /// The partition's pending purchases, restored from the changelog;
    /// `None` when the catalog has no confirm-mode offer.
    flow: Option<PartitionFlow>,
}

impl Job {
    /// A worker for `start.partition` of `topic`, sending its chunks to
    /// `sender`.
    pub(crate) fn new(
        matcher: Arc<Matcher>,
        topic: &str,
        start: PartitionStart,
        offsets: PartitionOffsets<DriverContext<Matching>>,
        letter_bytes: usize,
        sender: SyncSender<Chunk>,
    ) -> Self {
        let partition = start.partition;
        Job {
            partition,
            topic: topic.to_owned(),
            matcher,
            continuity: Continuity::new(topic, partition, start.next),
            offsets,
            letter_bytes,
            sender,
            chunk: Chunk {
                partition,
                ..Chunk::default()
            },
            outputs: Vec::new(),
            flow: start.flow,
        }
    }

    /// Hands the chunk to the coordinator, with the changes to the pending
    /// purchases its records made. A failure means the coordinator is
    /// gone, and with it the run: nothing is left to hand over to.
    fn send(&mut self) {
        if let (Some(flow), Some(next)) = (&mut self.flow, self.chunk.next_offset) {
            self.chunk.changelog = flow.take_changes(next);
        }
        let fresh = Chunk {
            partition: self.partition,
            ..Chunk::default()
        };
        let _ = self.sender.send(std::mem::replace(&mut self.chunk, fresh));
    }

    /// Everything queued was read: the next record is expected at the
    /// consumer's position, past any transaction marker
    /// ([`Continuity::reached_end`]).
    fn caught_up(&mut self) {
        if let Some(end) = self.offsets.position() {
            self.continuity.reached_end(end);
        }
    }

    /// Decides one record into the chunk.
    fn record(&mut self, message: &BorrowedMessage<'_>) {
        let offsets = &self.offsets;
        if let Some(gap) = self
            .continuity
            .read(message.offset(), || offsets.log_start(CONNECT_TIMEOUT))
        {
            self.chunk.gaps.push(gap);
        }
        let source = Source {
            topic: &self.topic,
            partition: self.partition,
            offset: message.offset(),
            key: message.key(),
            value: message.payload().unwrap_or_default(),
        };
        self.outputs.clear();
        let handled = self
            .matcher
            .handle(&source, now_ms(), self.flow.as_mut(), &mut self.outputs);
        let chunk = &mut self.chunk;
        chunk.kinds.add(handled.kind);
        for decision in handled.decision.into_iter().chain(handled.steps) {
            chunk.decisions.add(decision);
        }
        match handled.sampled {
            None => {}
            Some(Sampled::Valid) => chunk.sampled += 1,
            Some(Sampled::Malformed(error)) => {
                chunk.sampled += 1;
                chunk.malformed_samples += 1;
                tracing::warn!(
                    partition = self.partition,
                    offset = message.offset(),
                    "a record without a hashtag sign, sampled, is malformed: {error} \
                     (decided no_hashtag_sign; --validate all would dead-letter it)"
                );
            }
        }
        let letter_bytes = self.letter_bytes;
        chunk.outputs.extend(self.outputs.drain(..).map(|output| {
            // Cut to what the producer may send, so a poison record near or
            // over the limit cannot stop the matcher.
            let output = match output {
                Output::DeadLetter(letter) => {
                    Output::DeadLetter(dead_letter::fit(letter, letter_bytes))
                }
                command => command,
            };
            let (key, value) = output.to_record();
            let to = match output {
                Output::Command { command, .. } if command.stock > 0 => Destination::StockRequests,
                Output::Command { .. } => Destination::Commands,
                Output::Reply { .. } => Destination::Replies,
                Output::DeadLetter(_) => Destination::DeadLetters,
            };
            Produced { to, key, value }
        }));
        chunk.next_offset = Some(message.offset() + 1);
        chunk.records += 1;
    }
}

impl PartitionWork for Job {
    fn message(&mut self, message: KafkaResult<BorrowedMessage<'_>>) {
        match message {
            Ok(message) => {
                self.record(&message);
                if self.chunk.records >= CHUNK_RECORDS {
                    self.send();
                }
            }
            Err(KafkaError::PartitionEOF(_)) => {
                self.caught_up();
                self.chunk.eof = true;
                self.send();
            }
            Err(e) => tracing::warn!(partition = self.partition, "consumer: {e}"),
        }
    }

    fn pause(&mut self) {
        self.caught_up();
        // A chunk goes out as soon as the queue runs dry.
        if self.chunk.records > 0 {
            self.send();
        }
    }
}
