//! The accept loop: hyper's connection builder with a timer, so the limits that
//! protect an open port actually run (`axum::serve` builds hyper without one, and
//! then hyper's header-read timeout never fires):
//! - a header-read timeout, which also closes a connection that sends nothing and,
//!   on HTTP/1.1, a keep-alive connection idle for that long (the wait for the next
//!   request's headers counts);
//! - a cap on the size of a request head and on its number of headers;
//! - a cap on concurrent connections: at the cap, new ones wait in the kernel's
//!   accept queue until one closes (never refused by us, never a crash);
//! - accept errors (out of file descriptors) pause the loop instead of ending it;
//! - a graceful-shutdown deadline, after which open connections are dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerSettings;

/// The limits of the accept loop, from `[server]`.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub shutdown_deadline: Duration,
}

impl ConnectionLimits {
    pub fn from_settings(server: &ServerSettings) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            max_header_bytes: server.max_header_bytes,
            max_headers: server.max_headers,
            max_connections: server.max_connections,
            shutdown_deadline: Duration::from_millis(server.shutdown_deadline_ms),
        }
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            // hyper's floor is 8 KiB; the read buffer bounds the request head.
            .max_buf_size(self.max_header_bytes.max(8192))
            .max_headers(self.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(64)
            .keep_alive_interval(Some(self.header_read_timeout))
            .keep_alive_timeout(self.header_read_timeout);
        builder
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then lets requests in
/// flight finish for up to the shutdown deadline and drops what is left.
pub async fn serve(listener: TcpListener, router: Router, limits: ConnectionLimits, shutdown: CancellationToken) {
    let builder = Arc::new(limits.builder());
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    // Fired when connections must finish (graceful), then be dropped (deadline).
    let (finish, drop_now) = (CancellationToken::new(), CancellationToken::new());
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: pause instead of spinning or exiting.
                    tracing::warn!(error = %e, "accept failed; pausing 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let (builder, finish, drop_now) = (builder.clone(), finish.clone(), drop_now.clone());
        let first_byte_timeout = limits.header_read_timeout;
        connections.spawn(async move {
            let _permit = permit;
            // Until the first byte, hyper is still choosing between HTTP/1 and
            // HTTP/2 and no timer of its own runs: a silent connection is closed here.
            // (`peek` waits for a byte; readiness alone can be reported early.)
            let mut first = [0u8; 1];
            if !matches!(tokio::time::timeout(first_byte_timeout, stream.peek(&mut first)).await, Ok(Ok(1..))) {
                return;
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = finish.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = drop_now.cancelled() => {}
            }
        });
    }
    drop(listener);
    finish.cancel();
    connections.close();
    if tokio::time::timeout(limits.shutdown_deadline, connections.wait()).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            deadline_ms = limits.shutdown_deadline.as_millis() as u64,
            "shutdown deadline passed; dropping open connections"
        );
        drop_now.cancel();
        connections.wait().await;
    }
}
