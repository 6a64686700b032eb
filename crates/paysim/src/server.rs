//! The accept loop and the connections.
//!
//! Connections are served with hyper directly (not `axum::serve`) so that a
//! handler can close its own connection without answering: each connection
//! gets a [`ConnectionHandle`] in its requests' extensions, and the task that
//! drives the connection drops it (closing the socket) when the handle says
//! so. That is how `drop_after_charge` yields a real connection error on the
//! client.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::Error;

/// Lets a request close the connection it arrived on.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionHandle {
    /// Notified once to close the connection at once, without answering.
    close: Arc<Notify>,
}

impl ConnectionHandle {
    /// Closes the connection: the connection task drops it, and with it every
    /// request future still running on it.
    pub(crate) fn close(&self) {
        self.close.notify_one();
    }
}

/// Consecutive accept errors tolerated (with backoff) before giving up.
const MAX_ACCEPT_ERRORS: u32 = 8;

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting, lets every connection finish its in-flight request, and returns.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    // Told to every connection when shutting down.
    let (stop_tx, stop_rx) = watch::channel(false);
    // The connection tasks, reaped as they end.
    let mut connections = JoinSet::new();
    let mut errors = 0u32;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    errors = 0;
                    tracing::trace!(%peer, "paysim: connection");
                    connections.spawn(connection(stream, router.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Mostly per-connection trouble (a peer gone before
                    // accept) or running out of descriptors: back off.
                    errors += 1;
                    if errors > MAX_ACCEPT_ERRORS {
                        return Err(Error::Accept(e));
                    }
                    tracing::warn!(error = %e, "paysim: accept failed");
                    tokio::time::sleep(Duration::from_millis(10 << errors)).await;
                }
            },
        }
    }
    drop(listener);
    // Ignored error: no connection is listening, which is fine.
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    tracing::info!("paysim: stopped");
    Ok(())
}

/// Drives one HTTP/1.1 connection.
async fn connection(stream: TcpStream, router: Router, mut stop: watch::Receiver<bool>) {
    let handle = ConnectionHandle {
        close: Arc::new(Notify::new()),
    };
    let close = Arc::clone(&handle.close);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(handle.clone());
        // Router is always ready (its poll_ready returns Ready), so calling it
        // directly is fine, as in axum's serve-with-hyper example.
        router.clone().call(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut draining = *stop.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "paysim: connection ended with an error");
                }
                return;
            }
            _ = close.notified() => {
                // Returning drops `conn`: the socket closes without an answer.
                return;
            }
            changed = stop.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
