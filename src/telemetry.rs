//! What a running service tells its operators: logs (`tracing`, to
//! stderr, filtered by `HASHBUY_LOG`), and on `--metrics-addr` an HTTP
//! endpoint with Prometheus metrics at `/metrics`, liveness at `/healthz`
//! and readiness at `/readyz`.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use hashbuy_kafka::health::Health;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// What services log by default: hashbuy's informational messages and
/// librdkafka's warnings.
pub const SERVICE_LOGS: &str = "info,librdkafka=warn";

/// Logs to stderr. `HASHBUY_LOG` takes `tracing` filter directives
/// (`debug`, `hashbuy_matcher=debug,librdkafka=info`); without it,
/// `default` applies. Colours only on a terminal: a log file or a
/// collector gets plain text.
pub fn init_logs(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HASHBUY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Installs the Prometheus recorder and serves it with the health checks
/// on `addr`, on a thread of its own. The address is bound before this
/// returns, so a taken port is an error at start-up.
pub fn serve(addr: &str, health: Health) -> Result<SocketAddr> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--metrics-addr {addr:?} is not host:port"))?;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let bound = listener.local_addr().context("no local address")?;
    listener
        .set_nonblocking(true)
        .context("cannot set up the metrics listener")?;
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 100.0,
            1000.0, 10000.0,
        ])
        .context("bad histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("a metrics recorder is installed already")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the metrics runtime")?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("metrics endpoint: {e}"),
                };
                if let Err(e) = axum::serve(listener, router(handle, health)).await {
                    tracing::error!("metrics endpoint stopped: {e}");
                }
            })
        })
        .context("cannot start the metrics thread")?;
    tracing::info!("metrics on http://{bound}/metrics, health on /healthz and /readyz");
    Ok(bound)
}

fn router(handle: PrometheusHandle, health: Health) -> Router {
    let live = health.clone();
    Router::new()
        .route("/metrics", get(move || async move { handle.render() }))
        .route(
            "/healthz",
            get(move || async move {
                let liveness = live.liveness();
                let status = if liveness.is_alive() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, format!("{liveness}\n"))
            }),
        )
        .route(
            "/readyz",
            get(move || async move {
                if health.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: joining the group\n",
                    )
                }
            }),
        )
}
