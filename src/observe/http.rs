//! The HTTP endpoints: `/healthz` and `/readyz` on `--healthz-ip:--healthz-port`, `/metrics`
//! on `--metrics-ip:--metrics-port`. The only module that knows HTTP (axum); it reads
//! [`Health`] and [`Metrics`], which know nothing of it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use thiserror::Error;

use super::health::Health;
use super::metrics::Metrics;

/// An endpoint could not be served.
#[derive(Debug, Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot serve on the socket given: {0}")]
    Socket(#[source] std::io::Error),
    #[error("{what} on {addr} stopped: {source}")]
    Serve { what: &'static str, addr: SocketAddr, source: std::io::Error },
}

/// An endpoint bound and ready to serve: the daemon runs it as one of its tasks.
pub type Serving = Pin<Box<dyn Future<Output = Result<(), HttpError>> + Send>>;

/// `/healthz` and `/readyz` on `listener`; the future returned serves them until it fails.
///
/// # Errors
/// The socket cannot be handed to the runtime.
pub fn serve_health(listener: std::net::TcpListener, health: Health) -> Result<Serving, HttpError> {
    let (for_healthz, for_readyz) = (health.clone(), health);
    let app = Router::new()
        .route("/healthz", get(move || async move { status(for_healthz.liveness()) }))
        .route("/readyz", get(move || async move { status(for_readyz.readiness()) }));
    serving(listener, app, "/healthz and /readyz")
}

/// `/metrics` on `listener`; the future returned serves it until it fails.
///
/// # Errors
/// The socket cannot be handed to the runtime.
pub fn serve_metrics(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> Result<Serving, HttpError> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode()) }
        }),
    );
    serving(listener, app, "/metrics")
}

/// 200 with the text of a good report, 503 with that of a bad one.
fn status(report: Result<String, String>) -> (StatusCode, String) {
    match report {
        Ok(text) => (StatusCode::OK, text),
        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text),
    }
}

/// Binds `addr` (`ip link`-style: a taken port is a start-up error, not a later one), for the
/// caller to hand to [`serve_health`] or [`serve_metrics`]; port 0 picks a free port.
///
/// # Errors
/// The address is taken or not on this host.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, HttpError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(HttpError::Socket)?;
    Ok(listener)
}

/// The future that serves `app` on `listener` until it fails.
fn serving(listener: std::net::TcpListener, app: Router, what: &'static str) -> Result<Serving, HttpError> {
    let listener = tokio::net::TcpListener::from_std(listener).map_err(HttpError::Socket)?;
    let addr = listener.local_addr().map_err(HttpError::Socket)?;
    tracing::info!(%addr, what, "serving");
    Ok(Box::pin(async move { axum::serve(listener, app).await.map_err(|source| HttpError::Serve { what, addr, source }) }))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// `GET path` on `addr`, HTTP/1.0: the status line.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply.lines().next().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn a_socket_bound_on_port_0_serves_readiness_as_it_changes() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let health = Health::default();
        let server = tokio::spawn(serve_health(listener, health.clone()).unwrap());
        assert!(get(addr, "/readyz").await.contains("503"), "not ready before the first pass");
        health.set_ready();
        assert!(get(addr, "/readyz").await.contains("200"));
        server.abort();
    }

    #[test]
    fn a_taken_port_is_an_error_naming_the_address() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let error = bind(addr).unwrap_err().to_string();
        assert!(error.contains(&addr.to_string()), "{error}");
    }
}
