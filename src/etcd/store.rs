//! Noticing that etcd's store was replaced under us (wiped, restored from an older backup, or
//! another cluster), from the cluster id and revision of every response.

use etcd_client::ResponseHeader;
use tokio::sync::watch;

/// What this daemon has seen of etcd's store: which cluster, and how far its history got.
/// A store that was wiped or restored from an older backup shows up as a different cluster id
/// or a revision lower than one already seen; watches and leases from before it mean nothing
/// in it, so everything must be listed and our lease asserted again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreView {
    /// `None` until the first response.
    cluster_id: Option<u64>,
    /// The highest revision seen in a response or an event.
    revision: i64,
}

/// How the store changed under us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReplaced {
    /// Another cluster answers (a new cluster, or one restored with other member flags).
    Cluster { was: u64, now: u64 },
    /// The store's history is shorter than what we already saw: wiped, or restored from an
    /// older snapshot.
    Backwards { seen: i64, now: i64 },
}

impl StoreView {
    /// The highest revision seen so far: a linearizable request sent now must answer with at
    /// least this revision, unless the store went backwards.
    pub fn floor(&self) -> i64 {
        self.revision
    }

    /// Records a linearizable response (a range read or a transaction) to a request sent when
    /// [`floor`](Self::floor) was `floor`. Comparing with the floor at send time, not with the
    /// newest revision seen, keeps a write that finished meanwhile from looking like history
    /// lost. Returns how the store was replaced, if it was; the view then follows the new store.
    pub fn observe_response(&mut self, cluster_id: u64, revision: i64, floor: i64) -> Option<StoreReplaced> {
        let replaced = self
            .cluster_changed(cluster_id)
            .or_else(|| (revision < floor).then_some(StoreReplaced::Backwards { seen: floor, now: revision }));
        self.cluster_id = Some(cluster_id).filter(|&id| id != UNTOLD).or(self.cluster_id);
        self.revision = if replaced.is_some() { revision } else { self.revision.max(revision) };
        replaced
    }

    /// Records a watch response: only its cluster id is checked (a watch served by a member
    /// that lags may carry an older header revision), and its newest event raises the revision.
    pub fn observe_watch(&mut self, cluster_id: u64, newest_event: Option<i64>) -> Option<StoreReplaced> {
        let replaced = self.cluster_changed(cluster_id);
        self.cluster_id = Some(cluster_id).filter(|&id| id != UNTOLD).or(self.cluster_id);
        let newest = newest_event.unwrap_or_default();
        self.revision = if replaced.is_some() { newest } else { self.revision.max(newest) };
        replaced
    }

    fn cluster_changed(&self, now: u64) -> Option<StoreReplaced> {
        if now == UNTOLD {
            return None;
        }
        self.cluster_id.filter(|was| *was != now).map(|was| StoreReplaced::Cluster { was, now })
    }
}

/// The cluster id of a header that does not say which cluster answered. etcd's grpc-proxy
/// makes up some watch responses itself with an empty header: the "created" response of a
/// watcher that joins a watch the proxy already shares, and the "canceled" response of one
/// that leaves (etcd's `proxy/grpcproxy`, "todo: fill in ClusterId"). Taken for another
/// cluster, each would have weftd list everything and rewrite its lease, whose new watches
/// bring more such responses.
const UNTOLD: u64 = 0;

/// A [`StoreView`] shared by a registry's clones, and a count of the replacements it saw,
/// which the lease keeper watches.
pub(super) struct StoreTracker {
    view: std::sync::Mutex<StoreView>,
    replacements: watch::Sender<u64>,
}

impl StoreTracker {
    pub(super) fn new() -> Self {
        Self { view: Default::default(), replacements: watch::channel(0).0 }
    }

    /// Changes each time the store was found replaced.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.replacements.subscribe()
    }

    /// See [`StoreView::floor`].
    pub(super) fn floor(&self) -> i64 {
        self.lock().floor()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreView> {
        // The view is two numbers updated together: a panicked holder cannot leave it torn.
        self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a linearizable response's header; see [`StoreView::observe_response`].
    pub(super) fn response(&self, header: Option<&ResponseHeader>, floor: i64) -> Option<StoreReplaced> {
        let header = header?;
        let replaced = self.lock().observe_response(header.cluster_id(), header.revision(), floor);
        self.announce(replaced)
    }

    /// Checks a watch response's header; see [`StoreView::observe_watch`].
    pub(super) fn watch(&self, header: Option<&ResponseHeader>, newest_event: Option<i64>) -> Option<StoreReplaced> {
        let header = header?;
        let replaced = self.lock().observe_watch(header.cluster_id(), newest_event);
        self.announce(replaced)
    }

    fn announce(&self, replaced: Option<StoreReplaced>) -> Option<StoreReplaced> {
        match replaced? {
            StoreReplaced::Cluster { was, now } => tracing::warn!(
                was = format!("{was:x}"),
                now = format!("{now:x}"),
                "etcd answers with another cluster id: the store was replaced; listing again and re-asserting our lease"
            ),
            StoreReplaced::Backwards { seen, now } => tracing::warn!(
                seen,
                now,
                "etcd's revision went backwards: the store was wiped or restored from an older backup; listing again and re-asserting our lease"
            ),
        }
        self.replacements.send_modify(|count| *count += 1);
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_only_moves_forward_is_the_same_store() {
        let mut view = StoreView::default();
        assert_eq!(view.observe_response(7, 10, view.floor()), None);
        assert_eq!(view.observe_watch(7, Some(12)), None);
        assert_eq!(view.observe_watch(7, None), None);
        assert_eq!(view.floor(), 12);
        assert_eq!(view.observe_response(7, 12, view.floor()), None);
    }

    #[test]
    fn a_revision_below_what_was_seen_before_the_request_means_the_store_went_backwards() {
        let mut view = StoreView::default();
        view.observe_response(7, 40, 0);
        assert_eq!(view.observe_response(7, 3, view.floor()), Some(StoreReplaced::Backwards { seen: 40, now: 3 }));
        // The view now follows the new store: its next revisions are not a second replacement.
        assert_eq!(view.floor(), 3);
        assert_eq!(view.observe_response(7, 4, view.floor()), None);
    }

    #[test]
    fn a_write_that_finished_during_a_read_is_not_history_lost() {
        let mut view = StoreView::default();
        view.observe_response(7, 10, 0);
        let floor = view.floor(); // a read is sent now...
        view.observe_response(7, 11, view.floor()); // ...a write finishes meanwhile...
        assert_eq!(view.observe_response(7, 10, floor), None); // ...and the read answers from before it
        assert_eq!(view.floor(), 11);
    }

    #[test]
    fn another_cluster_id_means_another_store_whatever_its_revision() {
        let mut view = StoreView::default();
        view.observe_response(7, 10, 0);
        assert_eq!(view.observe_response(8, 50, view.floor()), Some(StoreReplaced::Cluster { was: 7, now: 8 }));
        assert_eq!(view.observe_watch(9, Some(60)), Some(StoreReplaced::Cluster { was: 8, now: 9 }));
        assert_eq!(view.floor(), 60);
    }

    #[test]
    fn a_header_naming_no_cluster_is_not_another_cluster() {
        let mut view = StoreView::default();
        view.observe_response(7, 10, 0);
        // grpc-proxy's own "created" response for a watcher joining a shared watch.
        assert_eq!(view.observe_watch(UNTOLD, None), None);
        assert_eq!(view.observe_response(UNTOLD, 11, view.floor()), None);
        // The cluster seen before is still the one compared with.
        assert_eq!(view.observe_watch(8, Some(12)), Some(StoreReplaced::Cluster { was: 7, now: 8 }));
    }

    #[test]
    fn a_lagging_watch_header_is_not_a_replacement() {
        let mut view = StoreView::default();
        view.observe_response(7, 10, 0);
        // Only events count for a watch; an empty response of a member behind is harmless.
        assert_eq!(view.observe_watch(7, None), None);
        assert_eq!(view.floor(), 10);
    }
}
