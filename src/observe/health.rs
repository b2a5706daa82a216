//! What `/healthz` (alive, and etcd answered recently) and `/readyz` (subnet.env written and
//! the overlay programmed) report: state only; the `http` module serves it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How recently etcd must have answered for `/healthz` to say healthy: three missed probes.
pub const ETCD_FRESHNESS: Duration = Duration::from_secs(15);

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

    /// Whether the daemon is alive and etcd answered within [`ETCD_FRESHNESS`]; either way
    /// the text to show (one line).
    pub fn liveness(&self) -> Result<String, String> {
        match *self.state.etcd_answered.lock().expect("health lock") {
            Some(at) if at.elapsed() <= ETCD_FRESHNESS => Ok("ok\n".into()),
            Some(at) => Err(format!("etcd last answered {} s ago\n", at.elapsed().as_secs())),
            None => Err("etcd has not answered yet\n".into()),
        }
    }

    /// Whether subnet.env is written and the overlay programmed; either way the text to show.
    pub fn readiness(&self) -> Result<String, String> {
        if self.state.ready.load(Ordering::Relaxed) {
            Ok("ready\n".into())
        } else {
            Err("subnet.env not written yet\n".into())
        }
    }
}

/// Asks `ping` every `interval` whether etcd answers, so `/healthz` knows. The probe is
/// whoever owns etcd's (a closure, so health needs no etcd client).
pub async fn probe<F, Fut>(health: Health, interval: Duration, ping: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if ping().await {
            health.etcd_answered();
        }
        tokio::time::sleep(interval).await;
    }
}
