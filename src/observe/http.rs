//! The HTTP endpoints: `/healthz` and `/readyz` on `--healthz-ip:--healthz-port`, `/metrics`
//! on `--metrics-ip:--metrics-port`. The only module that knows HTTP (axum); it reads
//! [`Health`] and [`Metrics`], which know nothing of it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use thiserror::Error;

use super::health::Health;
use super::metrics::Metrics;

/// An endpoint could not be served.
#[derive(Debug, Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct HttpError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Serves `/healthz` and `/readyz` in the background.
///
/// # Errors
/// The address cannot be bound (taken, or not on this host).
pub async fn serve_health(addr: SocketAddr, health: Health) -> Result<(), HttpError> {
    let (for_healthz, for_readyz) = (health.clone(), health);
    let app = Router::new()
        .route("/healthz", get(move || async move { status(for_healthz.liveness()) }))
        .route("/readyz", get(move || async move { status(for_readyz.readiness()) }));
    spawn_http(addr, app, "/healthz and /readyz").await
}

/// Serves `/metrics` in the background.
///
/// # Errors
/// The address cannot be bound (taken, or not on this host).
pub async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<(), HttpError> {
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

/// Binds at once (a taken port is a start-up error) and serves `app` in the background.
async fn spawn_http(addr: SocketAddr, app: Router, what: &'static str) -> Result<(), HttpError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError { addr, source })?;
    tracing::info!(%addr, what, "serving");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, what, "HTTP endpoint stopped");
        }
    });
    Ok(())
}
