//! Black-box specs of the provider client against an in-process paysim on
//! port 0, with fixed seeds.

mod common;

use std::time::{Duration, Instant};

use common::{a_minute_ago, charge, config_for, Sim};
use hashbuy_paysim::Config;
use hashbuy_provider::{
    ChargeOutcome, IntentStatus, NewCustomer, Provider, ProviderError, RetryCause, SecretString,
    TransportCause,
};

/// Calls `find_charge` until it answers something other than a 500 (paysim's
/// `fail_500` hits reads too), as the settler would retry a reconciliation.
async fn find_through_500s(
    p: &Provider,
    customer: &str,
    command_id: &str,
) -> Option<hashbuy_provider::FoundCharge> {
    for _ in 0..60 {
        match p.find_charge(customer, command_id, a_minute_ago()).await {
            Ok(found) => return found,
            Err(ProviderError::Api { status: 500, .. }) => continue,
            Err(e) => panic!("find_charge: {e}"),
        }
    }
    panic!("find_charge kept failing with 500s");
}

#[tokio::test]
async fn a_charge_succeeds_and_is_found() {
    let sim = Sim::start(Config::default()).await;
    let p = sim.provider();
    p.check().await.expect("check");
    let o = p
        .charge(&charge("c-ok", "cus_ok", "pm_card_visa"), "c-ok:1")
        .await;
    let ChargeOutcome::Succeeded {
        payment_intent,
        replayed,
    } = o
    else {
        panic!("{o:?}")
    };
    assert!(payment_intent.starts_with("pi_"));
    assert!(!replayed);
    let audit = sim.charges_for("c-ok");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].id, payment_intent);
    assert_eq!(audit[0].status, "succeeded");
    assert_eq!(audit[0].idempotency_key.as_deref(), Some("c-ok:1"));
    assert_eq!(audit[0].amount, 4200);

    let found = p
        .find_charge("cus_ok", "c-ok", a_minute_ago())
        .await
        .expect("list")
        .expect("found");
    assert_eq!(found.payment_intent, payment_intent);
    assert_eq!(found.status, IntentStatus::Succeeded);
    assert_eq!((found.matches, found.succeeded), (1, 1));
    assert_eq!(found.decline_code, None);
    // Another command, another customer: nothing.
    assert_eq!(
        p.find_charge("cus_ok", "c-other", a_minute_ago())
            .await
            .expect("list"),
        None
    );
    assert_eq!(
        p.find_charge("cus_other", "c-ok", a_minute_ago())
            .await
            .expect("list"),
        None
    );
    // Created after the charge: nothing.
    assert_eq!(
        p.find_charge("cus_ok", "c-ok", a_minute_ago() + 3600)
            .await
            .expect("list"),
        None
    );
}

#[tokio::test]
async fn decline_cards_are_declined_with_their_codes() {
    let sim = Sim::start(Config::default()).await;
    let p = sim.provider();
    for (pm, code) in [
        ("pm_card_chargeDeclined", "generic_decline"),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
        ),
        ("pm_card_chargeCustomerFail", "generic_decline"),
    ] {
        let command = format!("c-{pm}");
        let o = p.charge(&charge(&command, "cus_d", pm), &command).await;
        let ChargeOutcome::Declined {
            payment_intent,
            decline_code,
            message,
        } = &o
        else {
            panic!("{pm}: {o:?}")
        };
        assert_eq!(decline_code, code, "{pm}");
        assert!(!message.is_empty());
        assert!(o.is_terminal());
        let audit = sim.charges_for(&command);
        assert_eq!(audit.len(), 1, "{pm}");
        assert_eq!(audit[0].status, "requires_payment_method");
        assert_eq!(payment_intent.as_deref(), Some(audit[0].id.as_str()));

        let found = p
            .find_charge("cus_d", &command, a_minute_ago())
            .await
            .expect("list")
            .expect("found");
        assert_eq!(found.status, IntentStatus::RequiresPaymentMethod);
        assert_eq!(found.decline_code.as_deref(), Some(code));
    }
}

#[tokio::test]
async fn an_unknown_payment_method_is_invalid() {
    let sim = Sim::start(Config::default()).await;
    let p = sim.provider();
    let o = p.charge(&charge("c-pm", "cus_1", "pm_nope"), "c-pm").await;
    assert!(
        matches!(
            &o,
            ChargeOutcome::Invalid { status: 400, code: Some(c), param: Some(param), .. }
                if c == "resource_missing" && param == "payment_method"
        ),
        "{o:?}"
    );
    assert!(sim.charges_for("c-pm").is_empty());
    let mut bad = charge("c-amount", "cus_1", "pm_card_visa");
    bad.amount = 0;
    assert!(matches!(
        p.charge(&bad, "c-amount").await,
        ChargeOutcome::Invalid { status: 400, .. }
    ));
}

#[tokio::test]
async fn a_500_after_the_charge_is_indeterminate_and_reconciles_to_the_charge() {
    // Half of all requests fail with a 500; every failing POST fails after
    // executing (the intent is created, charged, and the 500 saved).
    let sim = Sim::start(Config {
        fail_500: 0.5,
        fail_500_after: 1.0,
        seed: 11,
        ..Config::default()
    })
    .await;
    let p = sim.provider();
    let mut hit = None;
    for i in 0..40 {
        let command = format!("c-after-{i}");
        let o = p
            .charge(&charge(&command, "cus_a", "pm_card_visa"), &command)
            .await;
        if let ChargeOutcome::Indeterminate {
            status, replayed, ..
        } = o
        {
            assert_eq!(status, 500);
            assert!(!replayed);
            hit = Some(command);
            break;
        }
    }
    let command = hit.expect("some charge fails with a 500 (seeded)");
    // The key replays the saved 500: retrying it cannot resolve anything.
    let again = p
        .charge(&charge(&command, "cus_a", "pm_card_visa"), &command)
        .await;
    assert!(
        matches!(
            again,
            ChargeOutcome::Indeterminate {
                status: 500,
                replayed: true,
                ..
            }
        ),
        "{again:?}"
    );
    let found = find_through_500s(&p, "cus_a", &command)
        .await
        .expect("the charge happened");
    assert_eq!(found.status, IntentStatus::Succeeded);
    let audit = sim.charges_for(&command);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].id, found.payment_intent);
}

#[tokio::test]
async fn a_500_before_the_charge_reconciles_to_nothing_and_a_new_key_succeeds() {
    let sim = Sim::start(Config {
        fail_500: 0.5,
        fail_500_after: 0.0,
        seed: 12,
        ..Config::default()
    })
    .await;
    let p = sim.provider();
    let mut hit = None;
    for i in 0..40 {
        let command = format!("c-before-{i}");
        let o = p
            .charge(
                &charge(&command, "cus_b", "pm_card_visa"),
                &format!("{command}:1"),
            )
            .await;
        if matches!(o, ChargeOutcome::Indeterminate { status: 500, .. }) {
            hit = Some(command);
            break;
        }
    }
    let command = hit.expect("some charge fails with a 500 (seeded)");
    assert_eq!(find_through_500s(&p, "cus_b", &command).await, None);
    assert!(sim.charges_for(&command).is_empty());
    // A new key per attempt, as the settler derives them.
    let mut settled = None;
    for attempt in 2..40 {
        let mut req = charge(&command, "cus_b", "pm_card_visa");
        req.attempt = attempt;
        match p.charge(&req, &format!("{command}:{attempt}")).await {
            ChargeOutcome::Succeeded { payment_intent, .. } => {
                settled = Some(payment_intent);
                break;
            }
            ChargeOutcome::Indeterminate { status: 500, .. } => {
                assert_eq!(find_through_500s(&p, "cus_b", &command).await, None);
            }
            other => panic!("{other:?}"),
        }
    }
    let pi = settled.expect("a new key succeeds");
    let audit = sim.charges_for(&command);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].id, pi);
    assert_eq!(audit[0].status, "succeeded");
}

#[tokio::test]
async fn a_429_is_retried_after_the_header() {
    let sim = Sim::start(Config {
        fail_429: 1.0,
        ..Config::default()
    })
    .await;
    let p = sim.provider();
    let o = p
        .charge(&charge("c-429", "cus_1", "pm_card_visa"), "c-429")
        .await;
    assert_eq!(
        o,
        ChargeOutcome::Retry {
            cause: RetryCause::RateLimited,
            after: Some(Duration::from_secs(1))
        }
    );
    assert!(sim.charges_for("c-429").is_empty());
    assert!(matches!(
        p.find_charge("cus_1", "c-429", a_minute_ago()).await,
        Err(ProviderError::RateLimited {
            retry_after: Some(_)
        })
    ));
}

#[tokio::test]
async fn a_dropped_connection_is_retried_with_the_same_key_and_charges_once() {
    let sim = Sim::start(Config {
        drop_after_charge: 1.0,
        ..Config::default()
    })
    .await;
    let p = sim.provider();
    let req = charge("c-drop", "cus_1", "pm_card_visa");
    let o = p.charge(&req, "c-drop:1").await;
    assert_eq!(
        o,
        ChargeOutcome::Retry {
            cause: RetryCause::Connection,
            after: None
        }
    );
    let audit = sim.charges_for("c-drop");
    assert_eq!(audit.len(), 1, "the charge happened before the drop");
    // paysim never drops a replay.
    let o = p.charge(&req, "c-drop:1").await;
    assert_eq!(
        o,
        ChargeOutcome::Succeeded {
            payment_intent: audit[0].id.clone(),
            replayed: true
        }
    );
    assert_eq!(sim.charges_for("c-drop").len(), 1);
}

#[tokio::test]
async fn one_key_with_two_requests_is_key_misuse() {
    let sim = Sim::start(Config::default()).await;
    let p = sim.provider();
    let req = charge("c-misuse", "cus_1", "pm_card_visa");
    assert!(matches!(
        p.charge(&req, "c-misuse").await,
        ChargeOutcome::Succeeded { .. }
    ));
    let mut other = req.clone();
    other.amount = 4300;
    let o = p.charge(&other, "c-misuse").await;
    assert!(matches!(o, ChargeOutcome::KeyMisuse { .. }), "{o:?}");
    assert_eq!(sim.charges_for("c-misuse").len(), 1);
    // A key that cannot be sent at all is refused before sending.
    assert!(matches!(
        p.charge(&req, "not a key").await,
        ChargeOutcome::KeyMisuse { .. }
    ));
}

#[tokio::test]
async fn a_key_still_in_flight_is_a_conflict_to_retry() {
    let sim = Sim::start(Config {
        latency_ms: 400,
        latency_sigma: 0.0,
        ..Config::default()
    })
    .await;
    let p = sim.provider();
    let req = charge("c-409", "cus_1", "pm_card_visa");
    let spawn = |delay: u64| {
        let p = p.clone();
        let req = req.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            p.charge(&req, "c-409").await
        })
    };
    let (a, b) = (spawn(0), spawn(150));
    let mut outcomes = vec![a.await.expect("task"), b.await.expect("task")];
    // Whichever reached paysim first executed; the other found the key in use.
    outcomes.sort_by_key(|o| o.kind());
    assert_eq!(
        outcomes[0],
        ChargeOutcome::Retry {
            cause: RetryCause::Conflict,
            after: None
        }
    );
    assert!(
        matches!(
            outcomes[1],
            ChargeOutcome::Succeeded {
                replayed: false,
                ..
            }
        ),
        "{outcomes:?}"
    );
    assert!(matches!(
        p.charge(&req, "c-409").await,
        ChargeOutcome::Succeeded { replayed: true, .. }
    ));
    assert_eq!(sim.charges_for("c-409").len(), 1);
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized() {
    let sim = Sim::start(Config {
        api_key: Some("sk_test_the_right_one".into()),
        ..Config::default()
    })
    .await;
    let p = Provider::new(config_for(&sim.base, "sk_test_the_wrong_one")).expect("provider");
    let o = p
        .charge(&charge("c-401", "cus_1", "pm_card_visa"), "c-401")
        .await;
    let ChargeOutcome::Unauthorized { status, message } = &o else {
        panic!("{o:?}")
    };
    assert_eq!(*status, 401);
    assert!(!message.contains("wrong_one"), "{message}");
    assert!(matches!(
        p.find_charge("cus_1", "c-401", a_minute_ago()).await,
        Err(ProviderError::Unauthorized { status: 401, .. })
    ));
    assert!(matches!(
        p.check().await,
        Err(ProviderError::Unauthorized { .. })
    ));
    let right = Provider::new(config_for(&sim.base, "sk_test_the_right_one")).expect("provider");
    right.check().await.expect("the right key works");
}

#[tokio::test]
async fn a_slow_provider_times_out_to_a_retry() {
    let sim = Sim::start(Config {
        latency_ms: 3000,
        latency_sigma: 0.0,
        ..Config::default()
    })
    .await;
    let mut config = sim.config();
    config.request_timeout = Duration::from_millis(300);
    let p = Provider::new(config).expect("provider");
    let started = Instant::now();
    let o = p
        .charge(&charge("c-slow", "cus_1", "pm_card_visa"), "c-slow")
        .await;
    let took = started.elapsed();
    assert_eq!(
        o,
        ChargeOutcome::Retry {
            cause: RetryCause::Timeout,
            after: None
        }
    );
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let started = Instant::now();
    assert!(matches!(
        p.find_charge("cus_1", "c-slow", a_minute_ago()).await,
        Err(ProviderError::Transport {
            cause: TransportCause::Timeout,
            ..
        })
    ));
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn an_unreachable_provider_is_a_connection_retry() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut config = config_for(&format!("http://127.0.0.1:{port}"), common::KEY);
    config.connect_timeout = Duration::from_millis(500);
    let p = Provider::new(config).expect("provider");
    let started = Instant::now();
    let o = p
        .charge(&charge("c-down", "cus_1", "pm_card_visa"), "c-down")
        .await;
    assert_eq!(
        o,
        ChargeOutcome::Retry {
            cause: RetryCause::Connection,
            after: None
        }
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    let e = p
        .find_charge("cus_1", "c-down", a_minute_ago())
        .await
        .expect_err("unreachable");
    assert!(
        matches!(
            e,
            ProviderError::Transport {
                cause: TransportCause::Connection,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("refused"), "{e}");
}

#[tokio::test]
async fn reconciliation_prefers_the_success_after_a_decline() {
    let sim = Sim::start(Config::default()).await;
    let p = sim.provider();
    let declined = p
        .charge(
            &charge("c-two", "cus_two", "pm_card_chargeDeclined"),
            "c-two:1",
        )
        .await;
    assert!(matches!(declined, ChargeOutcome::Declined { .. }));
    let mut retry = charge("c-two", "cus_two", "pm_card_visa");
    retry.attempt = 2;
    let ChargeOutcome::Succeeded { payment_intent, .. } = p.charge(&retry, "c-two:2").await else {
        panic!("second attempt")
    };
    let found = p
        .find_charge("cus_two", "c-two", a_minute_ago())
        .await
        .expect("list")
        .expect("found");
    assert_eq!(found.payment_intent, payment_intent);
    assert_eq!(found.status, IntentStatus::Succeeded);
    assert_eq!((found.matches, found.succeeded), (2, 1));
}

#[tokio::test]
async fn reconciliation_follows_pages() {
    let sim = Sim::start(Config::default()).await;
    let p = sim.provider();
    // The command's charge is the oldest of 131: on the second page of 100.
    let ChargeOutcome::Succeeded { payment_intent, .. } = p
        .charge(&charge("c-old", "cus_busy", "pm_card_visa"), "c-old")
        .await
    else {
        panic!("first charge")
    };
    for i in 0..130 {
        let command = format!("c-filler-{i}");
        let o = p
            .charge(&charge(&command, "cus_busy", "pm_card_visa"), &command)
            .await;
        assert!(matches!(o, ChargeOutcome::Succeeded { .. }), "{o:?}");
    }
    let found = p
        .find_charge("cus_busy", "c-old", a_minute_ago())
        .await
        .expect("list")
        .expect("found on page 2");
    assert_eq!(found.payment_intent, payment_intent);
}

#[tokio::test]
async fn the_client_side_rate_limit_spaces_requests() {
    let sim = Sim::start(Config::default()).await;
    let mut config = sim.config();
    config.rate_limit = Some(10.0);
    let p = Provider::new(config).expect("provider");
    assert_eq!(p.rate_limit(), Some(10.0));
    let started = Instant::now();
    for i in 0..6 {
        let command = format!("c-rate-{i}");
        let o = p
            .charge(&charge(&command, "cus_1", "pm_card_visa"), &command)
            .await;
        assert!(matches!(o, ChargeOutcome::Succeeded { .. }));
    }
    // One reconciliation read waits its turn too.
    p.find_charge("cus_1", "c-rate-0", a_minute_ago())
        .await
        .expect("list");
    // 7 requests at 10/s with a burst of 1: at least 6 intervals of 100 ms.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(580), "{took:?}");
    // Unlimited by default on a local URL.
    assert_eq!(sim.provider().rate_limit(), None);
}

#[tokio::test]
async fn customers_can_be_created() {
    let sim = Sim::start(Config::default()).await;
    let p = sim.provider();
    let c = p
        .create_customer(
            &NewCustomer {
                email: Some("shopper@example.com".into()),
                payment_method: Some("pm_card_visa".into()),
                ..NewCustomer::default()
            },
            Some("customer-12345"),
        )
        .await
        .expect("customer");
    assert!(c.id.starts_with("cus_"), "{c:?}");
    let o = p
        .charge(&charge("c-cus", &c.id, "pm_card_visa"), "c-cus")
        .await;
    assert!(matches!(o, ChargeOutcome::Succeeded { .. }), "{o:?}");
}

#[tokio::test]
async fn live_keys_need_allow_live() {
    let mut config = config_for("http://127.0.0.1:1", "sk_live_abcdef123");
    let e = Provider::new(config.clone()).expect_err("refused");
    assert!(matches!(e, ProviderError::LiveKeyRefused), "{e}");
    assert!(!e.to_string().contains("abcdef123"));
    config.allow_live = true;
    let p = Provider::new(config).expect("allowed");
    assert_eq!(p.key_mode(), hashbuy_provider::KeyMode::Live);
    let e = Provider::new(config_for("http://127.0.0.1:1", "pk_test_abcdef123"))
        .expect_err("publishable");
    assert!(matches!(e, ProviderError::MalformedKey { .. }));
    let mut stripe = hashbuy_provider::ProviderConfig::new(SecretString::from("sk_live_abc"));
    stripe.allow_live = true;
    assert_eq!(
        Provider::new(stripe).expect("stripe").rate_limit(),
        Some(90.0)
    );
    let stripe = hashbuy_provider::ProviderConfig::new(SecretString::from("sk_test_abc"));
    assert_eq!(
        Provider::new(stripe).expect("stripe").rate_limit(),
        Some(25.0)
    );
}
