//! `hashbuy bench-e2e`, run as a user runs it: briefly, checking what it
//! reports, never how fast.

mod common;

use common::json_document;

#[test]
fn bench_e2e_acks_every_purchase_it_offers_and_reports_each_stage_as_json() {
    let document = json_document(&[
        "bench-e2e",
        "--seconds",
        "2",
        "--rate",
        "500",
        "--purchase-share",
        "0.05",
        "--latency-ms",
        "5",
        "--partitions",
        "4",
        "--batch-ms",
        "20",
        "--json",
    ]);
    assert_eq!(document["bench"], "e2e", "{document:#}");
    assert!(document["machine"]["cpus"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(document["partitions"], 4);
    assert_eq!(document["latency_ms"], 5);
    assert_eq!(document["batch_ms"], 20);
    assert_eq!(document["delivery"], "exactly-once");
    assert_eq!(document["purchase_share"], 0.05);
    assert_eq!(document["offered"]["tweets"], 1000);
    assert_eq!(document["offered"]["asked_per_second"], 500);

    // Every purchase offered came back as commands, each acked once.
    let purchases = document["purchases"].as_u64().expect("purchases");
    let commands = document["commands"].as_u64().expect("commands");
    assert!(purchases > 0, "{document:#}");
    assert!(commands >= purchases, "{document:#}");
    let acks = &document["acks"];
    assert_eq!(acks["count"], commands, "{document:#}");
    let outcomes: u64 = ["settled", "declined", "rejected", "failed"]
        .iter()
        .map(|o| acks[o].as_u64().expect("an outcome count"))
        .sum();
    assert_eq!(outcomes, commands, "{document:#}");
    assert_eq!(acks["failed"], 0);
    for stage in [
        "tweet_to_command_produced",
        "tweet_to_command",
        "command_to_ack",
        "tweet_to_ack",
    ] {
        let spread = &document["stages"][stage];
        assert_eq!(spread["count"], commands, "{stage}: {document:#}");
        for figure in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
            assert!(spread[figure].as_f64().is_some(), "{stage} {figure}");
        }
    }
    for stage in ["paysim_charge", "ledger_flush", "matcher_commit"] {
        assert!(
            document["stages"][stage]["count"]
                .as_u64()
                .is_some_and(|n| n > 0),
            "{stage}: {document:#}"
        );
    }
    assert!(document["target"]["met"].is_boolean());
    assert!(document["target"]["limit_ms"].as_f64().is_some());
    assert!(document["cpu"]["process_cores"].as_f64().is_some());
    assert_eq!(document["settler"]["acks"], commands);
    assert_eq!(document["matcher"]["commands"], commands);
}
