//! An etcd outage: logged once when it starts and once when it ends, with retries paced.

use std::future::Future;
use std::time::Duration;

use super::RegistryError;

/// Logs an etcd outage once when it starts and once when it ends, and paces retries.
#[derive(Default)]
pub struct Outage {
    failures: u32,
}

impl Outage {
    pub fn failed(&mut self, error: &RegistryError) {
        if self.failures == 0 && error.member_unreachable() {
            tracing::warn!(%error, "etcd unavailable; keeping the current overlay and retrying");
        } else if self.failures == 0 {
            // etcd answers, but not with what we can use: say why rather than "unavailable".
            tracing::warn!(%error, "etcd request failed; keeping the current overlay and retrying");
        } else {
            tracing::debug!(%error, failures = self.failures, "etcd still unavailable");
        }
        self.failures += 1;
    }

    /// Returns whether this ends an outage.
    pub fn recovered(&mut self) -> bool {
        let was_out = self.failures > 0;
        if was_out {
            tracing::info!(failures = self.failures, "etcd reachable again");
        }
        self.failures = 0;
        was_out
    }

    /// 0 after success; then 200 ms doubling up to 3.2 s. The cap bounds how long after etcd
    /// answers again a daemon notices (a replaced store must be re-asserted within 5 s).
    pub fn backoff(&self) -> Duration {
        match self.failures {
            0 => Duration::ZERO,
            n => Duration::from_millis(200u64 << (n - 1).min(4)),
        }
    }
}

/// Retries an etcd operation until it succeeds, logging the outage once and backing off
/// (see [`Outage::backoff`]). `what` names the operation in debug logs.
///
/// # Errors
/// The first error only the operator can fix (see [`RegistryError::needs_operator`]).
pub async fn retry<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    let mut outage = Outage::default();
    loop {
        match attempt().await {
            Ok(value) => {
                outage.recovered();
                return Ok(value);
            }
            Err(e) if e.needs_operator() => return Err(e),
            Err(e) => {
                tracing::debug!(what, "etcd operation failed");
                outage.failed(&e);
            }
        }
        tokio::time::sleep(outage.backoff()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_backoff_grows_then_caps() {
        let mut outage = Outage::default();
        assert_eq!(outage.backoff(), Duration::ZERO);
        let error = RegistryError::Timeout { op: "test" };
        let delays: Vec<_> = (0..8)
            .map(|_| {
                outage.failed(&error);
                outage.backoff().as_millis()
            })
            .collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 3200, 3200, 3200]);
        outage.recovered();
        assert_eq!(outage.backoff(), Duration::ZERO);
    }
}
