//! The `hashbuy` binary, run as a user runs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;

fn hashbuy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(args)
        .output()
        .expect("hashbuy runs")
}

fn hashbuy_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hashbuy starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("input written");
    child.wait_with_output().expect("hashbuy ends")
}

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
        .display()
        .to_string()
}

fn json_lines(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn inspect_decides_every_sample_line() {
    let lines = json_lines(&hashbuy(&[
        "inspect",
        &sample("tweets.jsonl"),
        "--catalog",
        &sample("catalog.toml"),
        "--accounts",
        &sample("accounts.json"),
    ]));
    let input_lines = std::fs::read_to_string(sample("tweets.jsonl"))
        .expect("sample")
        .lines()
        .count();
    assert_eq!(
        lines.len(),
        input_lines,
        "one output line per input line, blank ones too"
    );
    let summary: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let decision = &l["decision"];
            let outcome = match decision["skip"].as_str() {
                Some(reason) => reason.to_owned(),
                None => decision["commands"]
                    .as_array()
                    .expect("commands")
                    .iter()
                    .map(|c| c["offer_id"].as_str().expect("offer id").to_owned())
                    .collect::<Vec<_>>()
                    .join("+"),
            };
            (l["kind"].as_str().expect("kind").to_owned(), outcome)
        })
        .collect();
    let expected = [
        ("tweet", "red-sneakers-42"),
        ("tweet", "red-sneakers-42+cafe-latte"),
        ("tweet", "retweet"),
        ("tweet", "protected_author"),
        ("tweet", "no_catalog_hashtag"),
        ("tweet", "account_not_linked"),
        ("tweet", "offer_inactive"),
        ("delete", "notice"),
        ("limit", "notice"),
        ("other", "notice"),
        ("invalid", "invalid"),
        ("invalid", "invalid"),
        ("tweet", "concert-ticket"),
        ("tweet", "retweet"),
        ("tweet", "cafe-latte"),
        ("tweet", "no_catalog_hashtag"),
        ("other", "notice"),
        ("invalid", "invalid"),
        ("tweet", "red-sneakers-42"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, o)| (k.to_string(), o.to_string()))
        .collect();
    assert_eq!(summary, expected);

    let first = &lines[0];
    assert_eq!(first["id"], "1930000000000000001");
    assert_eq!(first["hashtags"], serde_json::json!(["BuyRedSneakers42"]));
    assert_eq!(first["retweet"], false);
    let command = &first["decision"]["commands"][0];
    assert_eq!(command["amount"], "4200", "64-bit integers are strings");
    assert_eq!(command["currency"], "usd");
    assert_eq!(command["customer_id"], "cus_jane");
    assert_eq!(
        lines[7]["id"], "1930000000000000005",
        "a delete's id is the deleted tweet's"
    );
    assert_eq!(lines[9]["notice"], "scrub_geo");
    assert_eq!(lines[11]["error"], "empty record");
    assert!(lines[10]["error"]
        .as_str()
        .expect("error")
        .starts_with("invalid JSON"));
}

/// With a confirm-mode offer, `inspect` reads the file as one partition
/// and says each step of the flow: pending, confirmed, cancelled, expired.
#[test]
fn inspect_explains_the_confirm_flow_line_by_line() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let catalog = dir.path().join("catalog.toml");
    let read = |name: &str| std::fs::read_to_string(sample(name)).expect("sample");
    std::fs::write(
        &catalog,
        read("catalog.toml") + "\n" + &read("confirm-catalog.toml"),
    )
    .expect("written");
    let lines = json_lines(&hashbuy(&[
        "inspect",
        &sample("confirm.jsonl"),
        "--catalog",
        catalog.to_str().expect("path"),
        "--accounts",
        &sample("accounts.json"),
    ]));
    let steps: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            l["decision"]["flow"]
                .as_array()
                .expect("the flow's steps")
                .iter()
                .map(|s| s["step"].as_str().expect("a step").to_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        steps,
        [
            vec!["pending"],
            vec!["confirmed"],
            vec!["pending"],
            vec!["cancelled"],
            vec!["pending"],
            vec!["expired"]
        ]
    );
    let confirmed = &lines[1]["decision"];
    assert_eq!(confirmed["commands"][0]["offer_id"], "blue-hoodie");
    assert_eq!(
        confirmed["commands"][0]["tweet_id"], lines[0]["id"],
        "the purchase tweet's command"
    );
    assert!(lines[0]["decision"]["flow"][0]["reply"]
        .as_str()
        .expect("the prompt")
        .starts_with("Tweet #ConfirmBlueHoodie within 15 min"));
}

#[test]
fn inspect_without_tables_reads_stdin_and_compressed_files() {
    let plain = std::fs::read(sample("tweets.jsonl")).expect("sample");
    let from_stdin = json_lines(&hashbuy_with_stdin(&["inspect"], &plain));
    assert!(from_stdin.iter().all(|l| l.get("decision").is_none()));
    assert_eq!(from_stdin[2]["retweet"], true);

    let dir = tempfile::tempdir().expect("temp dir");
    let gz = dir.path().join("tweets.jsonl.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&plain).expect("gzip");
    std::fs::write(&gz, encoder.finish().expect("gzip")).expect("write gz");
    let zst = dir.path().join("tweets.jsonl.zst");
    std::fs::write(&zst, zstd::encode_all(plain.as_slice(), 3).expect("zstd")).expect("write zst");
    for file in [gz, zst] {
        let lines = json_lines(&hashbuy(&["inspect", file.to_str().expect("path")]));
        assert_eq!(lines, from_stdin, "{}", file.display());
    }
}

#[test]
fn bad_tables_and_files_are_named_in_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = dir.path().join("catalog.json");
    std::fs::write(&catalog, "{\"offers\": [\n{\"hashtag\": \"BuyX\", \"offer_id\": \"x\", \"merchant_id\": \"m\", \"amount\": 5, \"currency\": \"dollars\"}]}")
        .expect("write");
    let out = hashbuy(&[
        "inspect",
        &sample("tweets.jsonl"),
        "--catalog",
        catalog.to_str().expect("path"),
        "--accounts",
        &sample("accounts.json"),
    ]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains(
            "catalog.json:2: offers[0].currency: \"dollars\" is not a lowercase ISO 4217 code"
        ),
        "{message}"
    );

    let out = hashbuy(&["inspect", "/nonexistent/tweets.jsonl"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot open /nonexistent/tweets.jsonl"),
        "{}",
        stderr(&out)
    );

    let out = hashbuy(&[
        "inspect",
        &sample("tweets.jsonl"),
        "--catalog",
        &sample("catalog.toml"),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--accounts"), "{}", stderr(&out));
}

fn gen(dir: &Path, seed: &str, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let out = dir.join(name);
    let catalog = dir.join(format!("{name}.catalog.toml"));
    let accounts = dir.join(format!("{name}.accounts.json"));
    let result = hashbuy(&[
        "gen",
        "--tweets",
        "3000",
        "--seed",
        seed,
        "--purchase-share",
        "0.05",
        "--offers",
        "200",
        "--linked-users",
        "300",
        "--out",
        out.to_str().expect("path"),
        "--catalog-out",
        catalog.to_str().expect("path"),
        "--accounts-out",
        accounts.to_str().expect("path"),
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("wrote 3000 lines"),
        "{}",
        stderr(&result)
    );
    (out, catalog, accounts)
}

#[test]
fn gen_writes_a_seeded_stream_whose_purchases_inspect_finds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, catalog, accounts) = gen(dir.path(), "9", "first.jsonl");
    let (again, _, _) = gen(dir.path(), "9", "again.jsonl");
    let (other, _, _) = gen(dir.path(), "10", "other.jsonl");
    let bytes = std::fs::read(&first).expect("stream");
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 3000);
    assert_eq!(
        bytes,
        std::fs::read(&again).expect("stream"),
        "same seed, same bytes"
    );
    assert_ne!(bytes, std::fs::read(&other).expect("stream"));

    let lines = json_lines(&hashbuy(&[
        "inspect",
        first.to_str().expect("path"),
        "--catalog",
        catalog.to_str().expect("path"),
        "--accounts",
        accounts.to_str().expect("path"),
    ]));
    let buys = lines
        .iter()
        .filter(|l| l["decision"]["skip"].is_null())
        .count();
    let invalid = lines.iter().filter(|l| l["kind"] == "invalid").count();
    assert_eq!(invalid, 0);
    assert!(
        (60..=150).contains(&buys),
        "about 5% purchase tweets, fewer after the rules: {buys}"
    );
}

#[test]
fn gen_refuses_a_share_outside_zero_to_one() {
    let out = hashbuy(&["gen", "--tweets", "1", "--purchase-share", "1.5"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a fraction between 0 and 1"),
        "{}",
        stderr(&out)
    );
}

/// Both commands that generate tweets refuse a share outside 0..=1 with
/// one message naming the flag and the value, before doing anything else
/// (bench would start a broker).
#[test]
fn gen_and_bench_refuse_shares_outside_zero_to_one_naming_the_flag() {
    for args in [
        ["gen", "--tweets", "1", "--hashtag-share", "1.5"],
        ["gen", "--tweets", "1", "--hashtag-share", "NaN"],
        ["bench", "--tweets", "1", "--hashtag-share", "1.5"],
        ["bench", "--tweets", "1", "--purchase-share", "1.5"],
    ] {
        let out = hashbuy(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(args[3])
                && err.contains(&format!("\"{}\"", args[4]))
                && err.contains("not a fraction between 0 and 1"),
            "{args:?}: {err}"
        );
    }
}

/// A child `hashbuy broker` on a free port, stopped by SIGTERM.
struct BrokerProcess {
    child: std::process::Child,
    port: u16,
}

impl BrokerProcess {
    fn start() -> Self {
        let port = common::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
            .args(["broker", "--port", &port.to_string(), "--partitions", "4"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("broker starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "broker did not listen within 20 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        BrokerProcess { child, port }
    }

    /// Sends SIGTERM and returns the exit status and standard error.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "broker did not stop within 20 s of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().expect("stderr"), &mut err)
            .expect("stderr read");
        (status, err)
    }
}

#[test]
fn broker_serves_its_port_and_stops_on_sigterm() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Message};

    let broker = BrokerProcess::start();
    let bootstrap = format!("127.0.0.1:{}", broker.port);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    producer
        .send(BaseRecord::to("tweets").key("42").payload("hello"))
        .expect("queued");
    producer
        .flush(std::time::Duration::from_secs(10))
        .expect("delivered");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "cli-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["tweets"]).expect("subscribed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let payload = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "record not read back within 20 s"
        );
        if let Some(message) = consumer.poll(std::time::Duration::from_millis(100)) {
            break message.expect("no error").payload().map(<[u8]>::to_vec);
        }
    };
    assert_eq!(payload.as_deref(), Some(&b"hello"[..]));
    // Clients close while the broker is up; closed after it, they wait out
    // their timeouts.
    drop(consumer);
    drop(producer);

    let (status, err) = broker.stop();
    assert!(status.success(), "exit {status}: {err}");
    assert!(
        err.contains("development broker on 127.0.0.1:") && err.contains("deleted silently"),
        "{err}"
    );
}

#[test]
fn broker_on_a_taken_port_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = taken.local_addr().expect("bound").port().to_string();
    let out = hashbuy(&["broker", "--port", &port]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn replay_then_tail_carries_every_record_keyed_by_user() {
    use prost::Message as _;

    let broker = BrokerProcess::start();
    let brokers = format!("127.0.0.1:{}", broker.port);
    let dir = tempfile::tempdir().expect("temp dir");

    // The JSON sample, and two protobuf tweets in a length-delimited file.
    let out = hashbuy(&[
        "replay",
        &sample("tweets.jsonl"),
        "--brokers",
        &brokers,
        "--speed",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("replayed 18 records"),
        "blank lines are skipped: {}",
        stderr(&out)
    );
    let tweets: Vec<hashbuy_proto::v1::Tweet> = (1..=2)
        .map(|i| hashbuy_proto::v1::Tweet {
            id: format!("77{i}"),
            user_id: "12345".into(),
            timestamp_ms: 1_780_315_200_000 + i,
            text: "#BuyCafé".into(),
            ..Default::default()
        })
        .collect();
    let mut delimited = Vec::new();
    for tweet in &tweets {
        tweet
            .encode_length_delimited(&mut delimited)
            .expect("encodes");
    }
    let pb_file = dir.path().join("tweets.pb");
    std::fs::write(&pb_file, delimited).expect("write");
    let out = hashbuy(&[
        "replay",
        pb_file.to_str().expect("path"),
        "--brokers",
        &brokers,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let lines = json_lines(&hashbuy(&[
        "tail",
        "--brokers",
        &brokers,
        "--topic",
        "tweets",
        "--from-beginning",
        "--exit-at-end",
    ]));
    assert_eq!(lines.len(), 20);
    let sample_lines: Vec<Value> = std::fs::read_to_string(sample("tweets.jsonl"))
        .expect("sample")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.to_owned())))
        .collect();
    for expected in &sample_lines {
        assert!(
            lines.iter().any(|l| &l["value"] == expected),
            "missing {expected}"
        );
    }
    let first = lines
        .iter()
        .find(|l| l["value"]["id_str"] == "1930000000000000001")
        .expect("first tweet");
    assert_eq!(first["key"], "12345", "keyed by the author");
    assert!(first["offset"].is_string() && first["partition"].is_number());
    let notice = lines
        .iter()
        .find(|l| l["value"].get("limit").is_some())
        .expect("limit notice");
    assert!(notice["key"].is_null(), "notices have no user");
    let protobuf: Vec<&Value> = lines
        .iter()
        .filter(|l| l["value"]["text"] == "#BuyCafé")
        .collect();
    assert_eq!(protobuf.len(), 2, "protobuf tweets are decoded");
    assert_eq!(
        protobuf[0]["value"]["timestamp_ms"]
            .as_str()
            .map(|t| t.starts_with("178031520000")),
        Some(true)
    );

    // Recording: binary values do not fit lines; length-delimited
    // recordings hold anything and replay as they were.
    let lines_file = dir.path().join("recorded.jsonl");
    let out = hashbuy(&[
        "record",
        "--brokers",
        &brokers,
        "--out",
        lines_file.to_str().expect("path"),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds a line break; record with --format delimited"),
        "{}",
        stderr(&out)
    );
    let recorded = dir.path().join("recorded.pb.zst");
    let recorded = recorded.to_str().expect("path");
    let out = hashbuy(&[
        "record",
        "--brokers",
        &brokers,
        "--out",
        recorded,
        "--format",
        "delimited",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("recorded 20 records of tweets"),
        "{}",
        stderr(&out)
    );
    let out = hashbuy(&[
        "replay",
        recorded,
        "--brokers",
        &brokers,
        "--topic",
        "payment-acks",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let copies = json_lines(&hashbuy(&[
        "tail",
        "--brokers",
        &brokers,
        "--topic",
        "payment-acks",
        "--type",
        "tweet",
        "--from-beginning",
        "--exit-at-end",
    ]));
    let values = |lines: &[Value]| {
        let mut v: Vec<String> = lines.iter().map(|l| l["value"].to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(
        values(&copies),
        values(&lines),
        "record then replay gives the same records"
    );

    let (status, err) = broker.stop();
    assert!(status.success(), "{err}");
}

#[test]
fn tail_names_a_missing_topic_and_an_unreachable_broker() {
    let broker = BrokerProcess::start();
    let out = hashbuy(&[
        "tail",
        "--brokers",
        &format!("127.0.0.1:{}", broker.port),
        "--topic",
        "no-such-topic",
        "--exit-at-end",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("topic \"no-such-topic\" does not exist"),
        "{}",
        stderr(&out)
    );
    let (status, _) = broker.stop();
    assert!(status.success());

    let closed = common::free_port();
    let out = hashbuy(&[
        "tail",
        "--brokers",
        &format!("127.0.0.1:{closed}"),
        "--topic",
        "tweets",
        "--exit-at-end",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("cannot reach Kafka at 127.0.0.1:{closed}")),
        "{}",
        stderr(&out)
    );
}

/// The demo's lines of SETTLED acks (its replies say SETTLED too).
fn settled_acks(out: &str) -> usize {
    out.lines()
        .filter(|l| l.starts_with("  SETTLED ") && !l.contains(" to user "))
        .count()
}

/// The demo runs the whole pipeline on the sample and checks paysim's
/// charges itself; run again on the same ledger, it acks every command
/// again and charges nothing.
#[test]
fn demo_settles_the_sample_and_a_second_run_on_its_ledger_charges_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let ledger = dir.path().join("ledger").display().to_string();
    let args = ["demo", "--latency-ms", "1", "--ledger", &ledger];

    let first = hashbuy(&args);
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{out}\n{}", stderr(&first));
    assert!(
        out.contains("11 payment commands (limited offers' to the reservation step first), 5 replies, 2 dead letters"),
        "{out}"
    );
    assert!(
        out.contains("8 settled, 1 declined, 2 rejected, 0 failed, 11 acks; the reservation step found 1 sold out"),
        "{out}"
    );
    assert_eq!(settled_acks(&out), 8, "{out}");
    assert!(
        out.contains("paysim holds 9 payment intents, 8 of them charged."),
        "{out}"
    );
    assert!(out.contains("invalid JSON at byte 59"), "{out}");
    assert!(out.contains("replies (16 records"), "{out}");
    // The live part: an offer put while the matcher runs buys from its
    // time on, two units and then sold out; one removed stops buying.
    for (tweet, outcome) in [
        ("Is it out yet? #BuyFlashHoodie", "bought nothing"),
        ("Got mine! #BuyFlashHoodie", "SETTLED 6500 usd"),
        ("And one for my brother #BuyFlashHoodie", "SETTLED 6500 usd"),
        ("Why not a third #BuyFlashHoodie", "REJECTED (sold out"),
        ("Last call #BuyCafé", "SETTLED 450 eur"),
        ("Too late? #BuyCafé", "bought nothing"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(tweet) && l.contains(outcome)),
            "{tweet}: {outcome}\n{out}"
        );
    }
    for reply in [
        "CONFIRM_PROMPT to user 1212 on tweet 2061432574571446273: Tweet #ConfirmBlueHoodie \
         within 15 min to buy Blue Hoodie for $39.00",
        "CANCELLED      to user 12345 on tweet 2061432826229686275: Your tweet was deleted",
        "EXPIRED        to user 987654321098765432 on tweet 2061432700400566277: No \
         #ConfirmBlueHoodie within 15 min",
        "SETTLED        to user 1212 on tweet 2061432574571446273: Bought: Blue Hoodie for \
         $39.00. Thank you!",
        "DECLINED       to user 67890 on tweet 1930000000000000015: Café Latte was not \
         bought: your bank declined the payment",
        "REJECTED       to user 12345 on tweet 1930000000000000002: Red Sneakers was not \
         bought: it is one per shopper, and you have it already.",
    ] {
        assert!(out.contains(reply), "{reply}\n{out}");
    }

    let again = hashbuy(&args);
    let out = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{out}\n{}", stderr(&again));
    assert!(
        out.contains("0 settled, 0 declined, 0 rejected, 0 failed, 11 acks; the reservation step found 1 sold out"),
        "{out}"
    );
    assert_eq!(settled_acks(&out), 8, "{out}");
    assert!(
        out.contains("paysim holds 0 payment intents, 0 of them charged."),
        "{out}"
    );
    assert!(
        out.contains("11 commands were already in the ledger"),
        "{out}"
    );
}

#[test]
fn the_readmes_result_tables_are_those_of_the_committed_result_files() {
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    common::succeeds(&["bench-report", "--check", readme]);
    let text = std::fs::read_to_string(readme).expect("README.md");
    assert!(
        text.matches("<!-- results: ").count() >= 5,
        "the README shows the committed results"
    );
}

#[test]
fn a_stale_result_table_is_named() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    let file = results.join("matcher-share-10.json");
    let markdown = dir.path().join("doc.md");
    std::fs::write(
        &markdown,
        format!(
            "<!-- results: {} -->\n| stale |\n<!-- /results -->\n",
            file.display()
        ),
    )
    .expect("written");
    let markdown = markdown.to_str().expect("utf-8");
    let out = hashbuy(&["bench-report", "--check", markdown]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--update"));
    common::succeeds(&["bench-report", "--update", markdown]);
    let updated = std::fs::read_to_string(markdown).expect("readable");
    assert!(updated.contains("| exactly-once |"), "{updated}");
}
