//! Helpers of the suites that run `hashbuy` processes against a real
//! broker process (`tests/real_broker.rs`, `tests/chaos.rs`): the broker
//! and its client properties from the environment, `hashbuy` commands
//! pointed at it, and paysim as a child process.
//!
//! The broker is named by `HASHBUY_TEST_BROKERS` (host:port); extra
//! librdkafka properties go in `HASHBUY_TEST_KAFKA_PROPERTIES` as
//! space-separated KEY=VALUE pairs. A suite using this module declares `mod
//! common;` too.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The broker under test.
pub fn brokers() -> String {
    std::env::var("HASHBUY_TEST_BROKERS")
        .expect("set HASHBUY_TEST_BROKERS=host:port to a running broker (see this suite's docs)")
}

/// The extra librdkafka properties of `HASHBUY_TEST_KAFKA_PROPERTIES`.
pub fn kafka_properties() -> Vec<String> {
    std::env::var("HASHBUY_TEST_KAFKA_PROPERTIES")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Whether `HASHBUY_TEST_TRANSACTIONS=1` says the broker has transactions
/// with `read_committed`.
pub fn transactions() -> bool {
    std::env::var("HASHBUY_TEST_TRANSACTIONS").is_ok_and(|v| v == "1")
}

/// The `hashbuy` binary this suite was built with.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hashbuy"))
}

/// `hashbuy` with `--brokers` and the test's -X properties appended.
pub fn command(args: &[&str]) -> Command {
    command_at(bin(), args)
}

/// [`command`] running the binary at `bin` (a copy that other builds in
/// the same target directory cannot replace mid-run).
pub fn command_at(bin: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command.args(args).args(["--brokers", &brokers()]);
    for property in kafka_properties() {
        command.args(["-X", &property]);
    }
    command
}

pub fn hashbuy(args: &[&str]) -> Output {
    command(args).output().expect("hashbuy runs")
}

/// The standard output of a command that succeeded; panics with its
/// standard error otherwise.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// paysim as a child process on a free port, stopped when dropped.
pub struct Paysim {
    pub child: Child,
    pub port: u16,
}

impl Paysim {
    /// paysim without faults, its output discarded.
    pub fn start() -> Paysim {
        let mut command = Command::new(bin());
        command.stdout(Stdio::null()).stderr(Stdio::null());
        Paysim::start_with(command, &[])
    }

    /// paysim started by `command` (a `hashbuy` binary with its output
    /// and environment set up) with `args` (faults, seed, ...).
    pub fn start_with(mut command: Command, args: &[&str]) -> Paysim {
        let port = crate::common::free_port();
        let mut child = command
            .args(["paysim", "--port", &port.to_string()])
            .args(args)
            .spawn()
            .expect("paysim starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().expect("paysim status") {
                panic!("paysim exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "paysim not listening on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Paysim { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every payment intent of paysim's audit, with its status,
    /// idempotency key and command id.
    pub fn audit(&self) -> Vec<Value> {
        let (status, body) =
            crate::common::get(self.port, "/_paysim/audit").expect("audit answers");
        assert_eq!(status, 200, "{body}");
        let audit: Value = serde_json::from_str(&body).expect("audit JSON");
        audit["payment_intents"]
            .as_array()
            .expect("intents")
            .clone()
    }

    /// Successful charges per command id, from paysim's audit.
    pub fn charges(&self) -> BTreeMap<String, Vec<String>> {
        let mut charges: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for intent in self.audit() {
            if intent["status"] == "succeeded" {
                charges
                    .entry(
                        intent["command_id"]
                            .as_str()
                            .expect("command id")
                            .to_owned(),
                    )
                    .or_default()
                    .push(intent["id"].as_str().expect("intent id").to_owned());
            }
        }
        charges
    }
}

impl Drop for Paysim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
