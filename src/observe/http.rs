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
    #[error("{what} on {addr} stopped: {source}")]
    Serve { what: &'static str, addr: SocketAddr, source: std::io::Error },
}

/// An endpoint bound and ready to serve: the daemon runs it as one of its tasks.
pub type Serving = Pin<Box<dyn Future<Output = Result<(), HttpError>> + Send>>;

/// Binds `/healthz` and `/readyz`; the future returned serves them until it fails.
///
/// # Errors
/// The address cannot be bound (taken, or not on this host).
pub async fn serve_health(addr: SocketAddr, health: Health) -> Result<Serving, HttpError> {
    let (for_healthz, for_readyz) = (health.clone(), health);
    let app = Router::new()
        .route("/healthz", get(move || async move { status(for_healthz.liveness()) }))
        .route("/readyz", get(move || async move { status(for_readyz.readiness()) }));
    spawn_http(addr, app, "/healthz and /readyz").await
}

/// Binds `/metrics`; the future returned serves it until it fails.
///
/// # Errors
/// The address cannot be bound (taken, or not on this host).
pub async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Serving, HttpError> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode()) }
        }),
    );
    spawn_http(addr, app, "/metrics").await
}

/// 200 with the text of a good report, 503 with that of a bad one.
fn status(report: Result<String, String>) -> (StatusCode, String) {
    match report {
        Ok(text) => (StatusCode::OK, text),
        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text),
    }
}

/// Binds at once (a taken port is a start-up error); the future returned serves `app`.
async fn spawn_http(addr: SocketAddr, app: Router, what: &'static str) -> Result<Serving, HttpError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
    tracing::info!(%addr, what, "serving");
    Ok(Box::pin(async move { axum::serve(listener, app).await.map_err(|source| HttpError::Serve { what, addr, source }) }))
}
