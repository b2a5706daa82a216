//! `/healthz` (alive, and etcd answered recently) and `/readyz` (subnet.env written and the
//! overlay programmed) on `--healthz-ip:--healthz-port`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use thiserror::Error;
use tokio::time::Instant;

use crate::etcd::Registry;

/// How recently etcd must have answered for `/healthz` to say healthy: three missed probes.
pub const ETCD_FRESHNESS: Duration = Duration::from_secs(15);

#[derive(Debug, Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct HealthError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// What the endpoints report, shared between the tasks that observe it and the server.
#[derive(Clone, Default)]
pub struct Health {
    state: Arc<HealthState>,
}

#[derive(Default)]
struct HealthState {
    ready: AtomicBool,
    etcd_answered: Mutex<Option<Instant>>,
}

impl Health {
    /// subnet.env is written and the kernel matches the leases.
    pub fn set_ready(&self) {
        self.state.ready.store(true, Ordering::Relaxed);
    }

    /// etcd just answered a request.
    pub fn etcd_answered(&self) {
        *self.state.etcd_answered.lock().expect("health lock") = Some(Instant::now());
    }

    fn healthz(&self) -> (StatusCode, String) {
        match *self.state.etcd_answered.lock().expect("health lock") {
            Some(at) if at.elapsed() <= ETCD_FRESHNESS => (StatusCode::OK, "ok\n".into()),
            Some(at) => (StatusCode::SERVICE_UNAVAILABLE, format!("etcd last answered {} s ago\n", at.elapsed().as_secs())),
            None => (StatusCode::SERVICE_UNAVAILABLE, "etcd has not answered yet\n".into()),
        }
    }

    fn readyz(&self) -> (StatusCode, String) {
        if self.state.ready.load(Ordering::Relaxed) {
            (StatusCode::OK, "ready\n".into())
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "subnet.env not written yet\n".into())
        }
    }
}

/// Serves `/healthz` and `/readyz` in the background.
pub async fn serve(addr: SocketAddr, health: Health) -> Result<(), HealthError> {
    let (for_healthz, for_readyz) = (health.clone(), health);
    let app = Router::new()
        .route("/healthz", get(move || async move { for_healthz.healthz() }))
        .route("/readyz", get(move || async move { for_readyz.readyz() }));
    spawn_http(addr, app, "/healthz and /readyz").await
}

/// Binds at once (a taken port is a start-up error) and serves `app` in the background.
pub(crate) async fn spawn_http(addr: SocketAddr, app: Router, what: &'static str) -> Result<(), HealthError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HealthError { addr, source })?;
    tracing::info!(%addr, what, "serving");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, what, "HTTP endpoint stopped");
        }
    });
    Ok(())
}

/// Asks etcd a trivial question every `interval`, so `/healthz` knows whether it answers.
pub async fn probe_etcd(registry: Registry, health: Health, interval: Duration) {
    loop {
        if registry.ping().await.is_ok() {
            health.etcd_answered();
        }
        tokio::time::sleep(interval).await;
    }
}
