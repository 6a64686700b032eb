//! Helpers the black-box suites share: reading `hashbuy inspect`'s
//! decisions, a local HTTP server's answers, a running matcher's
//! `/metrics`, stopping a child, paysim in the test's process, a topic's
//! protobuf records.
//!
//! Each suite uses some of them.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hashbuy_kafka::client::Connection;
use hashbuy_kafka::reader::{ReadOptions, TopicReader};
use hashbuy_paysim::{Audit, Config as PaysimConfig, Paysim};
use rdkafka::Message;
use serde_json::Value;

/// The command ids in `hashbuy inspect`'s output (one JSON line a record).
pub fn inspected_command_ids(inspect_stdout: &str) -> BTreeSet<String> {
    inspect_stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|v| {
            v["decision"]["commands"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c["command_id"].as_str().map(str::to_owned))
        .collect()
}

/// Runs `hashbuy` with `args`, which must succeed (its stderr is shown
/// if not): its standard output.
pub fn succeeds(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(args)
        .output()
        .expect("hashbuy runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The values of every committed record of `topic` on `brokers`, as
/// `hashbuy tail` prints them.
pub fn tail_values(brokers: &str, topic: &str) -> Vec<Value> {
    succeeds(&[
        "tail",
        "--topic",
        topic,
        "--from-beginning",
        "--exit-at-end",
        "--brokers",
        brokers,
    ])
    .lines()
    .map(|line| {
        let mut record: Value = serde_json::from_str(line).expect("tail prints JSON");
        record["value"].take()
    })
    .collect()
}

/// [`succeeds`], whose output must be one JSON document: the document.
pub fn json_document(args: &[&str]) -> Value {
    serde_json::from_str(&succeeds(args)).expect("stdout is one JSON document")
}

/// GETs `path` from a local HTTP server: status code and body.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The sum of a Prometheus metric's samples (all label sets).
pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends SIGTERM to a child.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// A port free at the time of asking, for a child to listen on.
///
/// Taken below Linux's ephemeral range (32768 and up), never from it: a
/// port the kernel hands out for `:0` is free again once probed, and any
/// outgoing connection (a Kafka client's, say) may take it before the
/// child binds it. Below that range only explicit binds compete; each test
/// process starts at its own place (by pid) and walks on.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % COUNT;
    for _ in 0..COUNT {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + step) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + COUNT);
}

/// Polls a child's `/metrics` on `port` until `done` holds of the body,
/// which is returned, for at most `wait`; `None` if the child exits first.
pub fn poll_metrics(
    port: u16,
    child: &mut Child,
    wait: Duration,
    done: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some((200, body)) = get(port, "/metrics") {
            if done(&body) {
                return Some(body);
            }
        }
        if child.try_wait().expect("child status").is_some() {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "metrics not reached within {} s",
            wait.as_secs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child and returns its exit status and stderr.
pub fn finish(mut child: Child) -> (std::process::ExitStatus, String) {
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut err).expect("stderr read");
    }
    (child.wait().expect("waited"), err)
}

/// Sends a signal (`STOP`, `CONT`) to a child.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for a child that must end on its own within `wait`; its exit
/// status and stderr.
pub fn finish_within(mut child: Child, wait: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + wait;
    while child.try_wait().expect("child status").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let (_, err) = finish(child);
            panic!("still running after {} s: {err}", wait.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    finish(child)
}

/// The low and high watermarks of partition 0 of `topic` on `brokers`.
pub fn watermarks(brokers: &str, topic: &str) -> (i64, i64) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks")
}

/// paysim, served on a port from a runtime of its own.
pub struct Provider {
    /// The simulator, for its audit.
    pub paysim: Paysim,
    /// Where it serves.
    pub url: String,
    /// The runtime serving it.
    pub _runtime: tokio::runtime::Runtime,
}

impl Provider {
    /// paysim with `config`, serving.
    pub fn start(config: PaysimConfig) -> Provider {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let paysim = Paysim::new(config).expect("paysim settings");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let serving = paysim.clone();
        runtime.spawn(async move {
            let _ = serving.serve(listener, std::future::pending()).await;
        });
        Provider {
            paysim,
            url,
            _runtime: runtime,
        }
    }

    /// Every payment intent paysim holds.
    pub fn audit(&self) -> Audit {
        self.paysim.audit()
    }
}

/// Every record of a topic, decoded.
pub fn read_all<T: prost::Message + Default>(brokers: &str, topic: &str) -> Vec<T> {
    let connection = Connection {
        brokers: brokers.to_owned(),
        properties: Vec::new(),
    };
    let mut reader = TopicReader::open(
        &connection,
        topic,
        ReadOptions {
            from_beginning: true,
            exit_at_end: true,
            read_uncommitted: false,
        },
    )
    .expect("reader");
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reader.at_end() {
        assert!(Instant::now() < deadline, "{topic} not read within 60 s");
        if let Some(message) = reader.next(Duration::from_millis(200)) {
            let message = message.expect("no read error");
            all.push(T::decode(message.payload().unwrap_or_default()).expect("decodes"));
        }
    }
    all
}

/// `--max-command-age` for the settlers of the tests: their purchases are
/// dated from 2026 (fixed times, the samples', `hashbuy gen`'s), which the
/// default week's horizon would find stale (`hashbuy demo` does the same,
/// see `RECORDINGS_MAX_COMMAND_AGE`).
pub const RECORDINGS_AGE: [&str; 2] = ["--max-command-age", "36500days"];
