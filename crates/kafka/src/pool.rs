//! A few threads that read many partitions' queues.
//!
//! A group member gets each partition's own queue ([`crate::driver`]). A
//! thread per queue is the simple way to read them, but with the many
//! partitions a firehose topic has (and the embedded broker needs) on a
//! few cores, switching between those threads costs more than reading the
//! records: `hashbuy bench` measured the same consumer at 4.2 µs of CPU a
//! tweet over 16 partitions and 6.9 µs over 128.
//!
//! So a [`Pool`] has a fixed number of threads, and each partition is
//! given to one of them, the one with the fewest. librdkafka calls a
//! queue's non-empty callback when records arrive in a queue that was
//! empty; the callback wakes the owning thread, which reads the queue
//! without waiting until it runs dry, at most [`STEP`] records at a time
//! before it turns to its other ready partitions.
//!
//! A partition's records are handed to its [`PartitionWork`] one at a
//! time, in offset order, always on the same thread. The work may block
//! (on a bounded channel, say): that thread's other partitions wait, and
//! librdkafka stops fetching for queues that fill up, which is the
//! backpressure.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;

/// Most records read from one queue before the thread turns to its other
/// ready partitions.
pub const STEP: usize = 512;

/// What is done with one partition's records.
pub trait PartitionWork: Send + 'static {
    /// A record of the partition, or what its queue reported instead (the
    /// end of the partition, an error).
    fn message(&mut self, message: KafkaResult<BorrowedMessage<'_>>);

    /// The queue has nothing more for now, or the partition is being
    /// stopped: hand over what was done.
    fn pause(&mut self);
}

/// A pool thread died: a [`PartitionWork`] panicked.
#[derive(Debug, thiserror::Error)]
#[error("a partition reader thread panicked")]
pub struct ThreadLost;

enum Event<C: ConsumerContext + 'static, W> {
    Add(i32, PartitionQueue<C>, W),
    /// A queue has records (or had: a late wake-up finds it empty).
    Ready(i32),
    /// Stop these partitions, then answer.
    Stop(Vec<i32>, Sender<()>),
    Shutdown,
}

struct Thread<C: ConsumerContext + 'static, W> {
    inbox: Sender<Event<C, W>>,
    handle: Option<JoinHandle<()>>,
}

/// Threads reading partition queues; see the module docs.
pub struct Pool<C: ConsumerContext + 'static, W: PartitionWork> {
    threads: Vec<Thread<C, W>>,
    /// The thread of each partition.
    owners: Mutex<HashMap<i32, usize>>,
}

impl<C: ConsumerContext + 'static, W: PartitionWork> Pool<C, W> {
    /// Starts `threads` threads (at least one), named `NAME-i`.
    pub fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        let threads = (0..threads.max(1))
            .map(|i| {
                let (inbox, events) = channel();
                let handle = std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || serve(events))?;
                Ok(Thread {
                    inbox,
                    handle: Some(handle),
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Pool {
            threads,
            owners: Mutex::new(HashMap::new()),
        })
    }

    fn owners(&self) -> MutexGuard<'_, HashMap<i32, usize>> {
        crate::lock(&self.owners)
    }

    /// Starts reading a partition's queue into `work`, on the thread with
    /// the fewest partitions.
    pub fn add(&self, partition: i32, mut queue: PartitionQueue<C>, work: W) {
        let mut owners = self.owners();
        let mut load = vec![0usize; self.threads.len()];
        for &thread in owners.values() {
            load[thread] += 1;
        }
        let thread = (0..load.len()).min_by_key(|&t| load[t]).unwrap_or(0);
        let inbox = self.threads[thread].inbox.clone();
        // Runs on a librdkafka thread holding the queue's lock: only a send.
        queue.set_nonempty_callback(move || {
            let _ = inbox.send(Event::Ready(partition));
        });
        owners.insert(partition, thread);
        let _ = self.threads[thread]
            .inbox
            .send(Event::Add(partition, queue, work));
    }

    /// Stops the given partitions (all when `None`): each one's work is
    /// paused one last time, then dropped with its queue. Wait for that
    /// with [`Stopping::finished`].
    pub fn stop(&self, partitions: Option<&[i32]>) -> Stopping {
        let mut owners = self.owners();
        let chosen = crate::chosen(&owners, partitions);
        let mut by_thread: HashMap<usize, Vec<i32>> = HashMap::new();
        for &partition in &chosen {
            if let Some(thread) = owners.remove(&partition) {
                by_thread.entry(thread).or_default().push(partition);
            }
        }
        let replies = by_thread
            .into_iter()
            .map(|(thread, partitions)| {
                let (reply, answer) = channel();
                let _ = self.threads[thread]
                    .inbox
                    .send(Event::Stop(partitions, reply));
                answer
            })
            .collect();
        Stopping {
            partitions: chosen,
            replies,
        }
    }

    /// How many partitions the pool reads.
    pub fn len(&self) -> usize {
        self.owners().len()
    }

    /// Whether the pool reads no partition.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<C: ConsumerContext + 'static, W: PartitionWork> Drop for Pool<C, W> {
    fn drop(&mut self) {
        // Events, not a closed channel, end the threads: each queue's
        // callback holds a sender of its thread's inbox.
        for thread in &self.threads {
            let _ = thread.inbox.send(Event::Shutdown);
        }
        // A pool thread never joins itself (it would, were it to drop the
        // consumer's last reference with a queue).
        let me = std::thread::current().id();
        for thread in &mut self.threads {
            if let Some(handle) = thread.handle.take() {
                if handle.thread().id() != me {
                    let _ = handle.join();
                }
            }
        }
    }
}

/// Partitions being stopped; from [`Pool::stop`].
#[must_use = "stopping partitions is finished only when `finished` says so"]
pub struct Stopping {
    partitions: Vec<i32>,
    replies: Vec<Receiver<()>>,
}

impl Stopping {
    /// The partitions being stopped.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Whether every partition has stopped; never blocks.
    pub fn finished(&mut self) -> Result<bool, ThreadLost> {
        let mut lost = false;
        self.replies.retain(|reply| match reply.try_recv() {
            Ok(()) => false,
            Err(TryRecvError::Empty) => true,
            Err(TryRecvError::Disconnected) => {
                lost = true;
                false
            }
        });
        if lost {
            return Err(ThreadLost);
        }
        Ok(self.replies.is_empty())
    }
}

struct Slot<C: ConsumerContext + 'static, W> {
    queue: PartitionQueue<C>,
    work: W,
    /// In the ready list already.
    ready: bool,
}

/// A pool thread: takes events, reads ready queues in turn.
fn serve<C: ConsumerContext + 'static, W: PartitionWork>(events: Receiver<Event<C, W>>) {
    let mut slots: HashMap<i32, Slot<C, W>> = HashMap::new();
    let mut ready: VecDeque<i32> = VecDeque::new();
    loop {
        let event = if ready.is_empty() {
            match events.recv() {
                Ok(event) => event,
                Err(_) => return,
            }
        } else {
            match events.try_recv() {
                Ok(event) => event,
                Err(TryRecvError::Empty) => {
                    if let Some(partition) = ready.pop_front() {
                        if step(&mut slots, partition) {
                            ready.push_back(partition);
                        }
                    }
                    continue;
                }
                Err(TryRecvError::Disconnected) => return,
            }
        };
        match event {
            Event::Add(partition, queue, work) => {
                // Records may have arrived before the callback was set.
                slots.insert(
                    partition,
                    Slot {
                        queue,
                        work,
                        ready: true,
                    },
                );
                ready.push_back(partition);
            }
            Event::Ready(partition) => {
                if let Some(slot) = slots.get_mut(&partition) {
                    if !slot.ready {
                        slot.ready = true;
                        ready.push_back(partition);
                    }
                }
            }
            Event::Stop(partitions, reply) => {
                for partition in partitions {
                    if let Some(mut slot) = slots.remove(&partition) {
                        slot.work.pause();
                    }
                    ready.retain(|&p| p != partition);
                }
                let _ = reply.send(());
            }
            Event::Shutdown => return,
        }
    }
}

/// Reads up to [`STEP`] records of a partition; whether it has more.
fn step<C: ConsumerContext + 'static, W: PartitionWork>(
    slots: &mut HashMap<i32, Slot<C, W>>,
    partition: i32,
) -> bool {
    let Some(slot) = slots.get_mut(&partition) else {
        return false;
    };
    for _ in 0..STEP {
        match slot.queue.poll(Duration::ZERO) {
            Some(message) => slot.work.message(message),
            None => {
                // Cleared before the work runs, so records arriving from
                // here on wake the thread again.
                slot.ready = false;
                slot.work.pause();
                return false;
            }
        }
    }
    true
}
