//! `hashbuy paysim`: the simulated, Stripe-compatible payment provider
//! (`hashbuy_paysim`) on a port, until Ctrl-C or SIGTERM.

use std::time::Duration;

use anyhow::{Context, Result};
use hashbuy_paysim::{Config, Paysim};

use crate::broker::shutdown_signal;

/// Arguments of `hashbuy paysim`.
#[derive(clap::Args)]
pub struct Args {
    /// Port to serve on (0 picks a free one, printed at start).
    #[arg(long, default_value_t = 12111)]
    port: u16,
    /// Address to listen on: 127.0.0.1 serves this machine only; 0.0.0.0
    /// serves other hosts too (a settler in another container). paysim
    /// accepts any `sk_test_` key unless --api-key is given.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Median latency of every API request, in milliseconds (jittered,
    /// log-normal); 0 adds none.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of requests answered 500: half before executing (nothing
    /// created or saved), half after (charged, and the 500 saved under the
    /// idempotency key, as Stripe does).
    #[arg(long, default_value_t = 0.0)]
    fail_500: f64,
    /// Share of requests answered 429 with `Retry-After`, not saved.
    #[arg(long, default_value_t = 0.0)]
    fail_429: f64,
    /// Share of charges whose connection is dropped without an answer after
    /// the charge happened and its success was saved under the key.
    #[arg(long, default_value_t = 0.0)]
    drop_after_charge: f64,
    /// Most API requests per second (beyond: 429 with `Retry-After`)
    /// [default: unlimited].
    #[arg(long)]
    rps: Option<f64>,
    /// Seed of every random decision (faults, latencies, ids).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How long a response is kept under its idempotency key, in seconds.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    key_ttl_s: u64,
    /// Accept only this API key [default: any `sk_test_` key]. Prefer the
    /// environment variable: a flag shows in the process list.
    #[arg(long, env = "HASHBUY_PAYSIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Seconds the simulated provider's clock runs ahead of this machine's
    /// (negative: behind) in the `created` times of its objects, as a real
    /// provider's clock may disagree with its clients'.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    clock_skew_s: i64,
    /// A Stripe Connect account (`acct_` then letters and digits) that
    /// exists, so payment intents may name it as `transfer_data[destination]`
    /// (a destination charge) or `on_behalf_of` (repeatable). An account not
    /// listed answers 400 "No such destination" as Stripe does; with none
    /// listed, every destination charge is refused.
    #[arg(long = "connected-account", value_name = "ACCT")]
    connected_accounts: Vec<String>,
}

/// Runs `hashbuy paysim`.
pub fn run(args: Args) -> Result<()> {
    let paysim = Paysim::new(Config {
        latency_ms: args.latency_ms,
        fail_500: args.fail_500,
        fail_429: args.fail_429,
        drop_after_charge: args.drop_after_charge,
        rps_limit: args.rps,
        seed: args.seed,
        key_ttl: Duration::from_secs(args.key_ttl_s),
        api_key: args.api_key,
        clock_skew_s: args.clock_skew_s,
        connected_accounts: args.connected_accounts.into_iter().collect(),
        ..Config::default()
    })
    .context("bad paysim settings")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let address = std::net::SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen on {address} (try another --port)"))?;
        let local = listener
            .local_addr()
            .context("cannot read the listening address")?;
        eprintln!(
            "hashbuy paysim: simulated payment provider on http://{local} \
             (Stripe's API subset; audit at /_paysim/audit). Ctrl-C stops it."
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = paysim.serve(listener, async {
            let _ = stopped.await;
        });
        tokio::pin!(server);
        tokio::select! {
            served = &mut server => served.context("paysim failed"),
            signal = shutdown_signal() => {
                let _ = stop.send(());
                server.await.context("paysim failed")?;
                signal
            }
        }
    })
}

/// paysim serving on a free loopback port, on a runtime of one thread of
/// its own named `thread_name` (so its CPU time can be told apart), for
/// commands that settle against it in process.
pub(crate) struct InProcess {
    /// Runs paysim; also there for the caller's own async work.
    pub runtime: tokio::runtime::Runtime,
    /// The simulator, for its audit.
    pub paysim: Paysim,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

/// Starts [`InProcess`] paysim answering in about `latency_ms`.
pub(crate) fn in_process(latency_ms: u64, thread_name: &str) -> Result<InProcess> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(thread_name)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let paysim = Paysim::new(Config {
        latency_ms,
        seed: 1,
        ..Config::default()
    })
    .context("bad paysim settings")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("no free port for paysim")?;
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .context("cannot read paysim's address")?
    );
    let serving = paysim.clone();
    runtime.spawn(async move {
        if let Err(e) = serving.serve(listener, std::future::pending()).await {
            tracing::error!("paysim stopped: {e}");
        }
    });
    Ok(InProcess {
        runtime,
        paysim,
        url,
    })
}
