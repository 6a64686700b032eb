//! `hashbuy paysim` serves the simulated provider: a charge retried under
//! its idempotency key charges once, and SIGTERM stops it cleanly. (The
//! binary-wide choice of memory pages is tried here too, on paysim as a
//! process that runs until stopped.)

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// POSTs a form with an API key and an idempotency key: status and body.
fn post(port: u16, path: &str, key: &str, form: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("paysim answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout set");
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer sk_test_cli\r\n\
         Idempotency-Key: {key}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

#[test]
fn paysim_charges_once_per_idempotency_key_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(["paysim", "--port", "0", "--seed", "7"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("hashbuy paysim starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut banner = String::new();
    stderr.read_line(&mut banner).expect("a start-up line");
    let port: u16 = banner
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {banner:?}"));

    let form = "amount=4200&currency=usd&customer=cus_1&payment_method=pm_card_visa\
                &confirm=true&off_session=true&metadata[command_id]=c-1";
    let (first, first_body) = post(port, "/v1/payment_intents", "c-1", form);
    let (again, again_body) = post(port, "/v1/payment_intents", "c-1", form);
    assert_eq!((first, again), (200, 200), "{first_body}");
    assert_eq!(first_body, again_body, "the retry replays the first answer");

    let (status, audit) = common::get(port, "/_paysim/audit").expect("audit answers");
    assert_eq!(status, 200);
    let audit: serde_json::Value = serde_json::from_str(&audit).expect("audit is JSON");
    let intents = audit["payment_intents"].as_array().expect("a list");
    assert_eq!(intents.len(), 1, "one charge: {audit}");
    assert_eq!(intents[0]["command_id"], "c-1");
    assert_eq!(intents[0]["status"], "succeeded");

    common::sigterm(&child);
    let status = child.wait().expect("paysim exits");
    assert!(status.success(), "SIGTERM stops paysim cleanly: {status}");
}

/// Whether the kernel may give a running `hashbuy paysim` transparent huge
/// pages, as its `/proc/<pid>/status` says, with `MIMALLOC_ALLOW_THP` set
/// to `allow` (or unset).
#[cfg(target_os = "linux")]
fn huge_pages_enabled(allow: Option<&str>) -> bool {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hashbuy"));
    command
        .args(["paysim", "--port", "0"])
        .env_remove("MIMALLOC_ALLOW_THP")
        .stderr(Stdio::piped());
    if let Some(allow) = allow {
        command.env("MIMALLOC_ALLOW_THP", allow);
    }
    let mut child = command.spawn().expect("hashbuy paysim starts");
    let mut banner = String::new();
    BufReader::new(child.stderr.take().expect("stderr piped"))
        .read_line(&mut banner)
        .expect("a start-up line");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .expect("the process's status");
    common::sigterm(&child);
    child.wait().expect("paysim exits");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled in {status}"));
    line.trim() == "1"
}

/// mimalloc's huge pages made every thread's first allocation a 2 MiB
/// resident page: hashbuy turns them off unless mimalloc is told either
/// way.
#[cfg(target_os = "linux")]
#[test]
fn hashbuy_runs_without_transparent_huge_pages_unless_told_otherwise() {
    assert!(!huge_pages_enabled(None), "off by default");
    assert!(
        huge_pages_enabled(Some("1")),
        "MIMALLOC_ALLOW_THP=1 keeps them"
    );
}
