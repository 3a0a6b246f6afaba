//! The fencing authority of the election: a [`LeaseBackend`] (etcd in production,
//! [`MemoryBackend`] in tests, or Kubernetes `coordination.k8s.io/v1` Leases:
//! [`KubeLeaseBackend`], see [`kube`] for its object layout and its much higher cost).
//!
//! # etcd key layout (under a configurable root, default `halyard/l2`)
//! ```text
//! halyard/l2/nodes/<node>        value "<lease id, hex>"  attached to <node>'s lease
//! halyard/l2/fence/<node>/<by>   value "<lease id, hex>"  no lease; <by>'s pending request
//!                                                         to fence <node>
//! ```
//! * **One lease and one key per node**, never per IP: steady-state etcd load is one keep-alive
//!   stream per node (a keep-alive every `ElectionConfig::keepalive_interval`; etcd renews
//!   leases on its leader in memory — "keepalives don't go through raft", etcd commit
//!   2e157530 — and a follower forwards them to the leader over its peer link, one extra hop),
//!   independent of the number of services. Raft writes happen only on lease grant, fences
//!   and refutations.
//! * **Fence** of node N (by a successor that stopped hearing N's heartbeats):
//!   1. resolve N's lease: the one `nodes/<N>` is attached to *now* (the lease from N's last
//!      heartbeat may be stale — N may hold a newer one it could still refute with), else the
//!      given one; none → nothing to fence;
//!   2. put `fence/<N>/<by>` = `"<lease>"` at revision R (one key per fencer, so successors
//!      fencing the same node at once do not overwrite each other's requests);
//!   3. wait `refute_window`; a live N that still holds its lease watches `fence/<N>/` and
//!      refutes by deleting the request (`txn if mod_revision == R then delete`);
//!   4. `txn if mod_revision(fence/<N>/<by>) == R then delete`: fails → **refuted** (N is alive
//!      and holds etcd; do not take over); succeeds → **revoke** N's lease (also deleting
//!      `nodes/<N>`), "lease not found" counting as done.
//!
//!   A revoked node learns it from its key watch or its next keep-alive (TTL 0); if it cannot
//!   reach etcd at all, it stops by itself at its validity horizon, which the successor waits
//!   out after the fence before announcing.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::mpsc;

use crate::election::{FenceOutcome, LeaseId, NodeId};

pub mod kube;
pub use kube::{KubeConfig, KubeError, KubeLeaseBackend};

pub const DEFAULT_ROOT: &str = "halyard/l2";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("backend closed")]
    Closed,
    #[error("kubernetes API: {0}")]
    Kube(#[from] KubeError),
}

/// What a node learns from watching its own keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKeyEvent {
    /// `nodes/<me>` was deleted (revoked, expired or deleted): stop answering
    /// (`LeaseEvent::Lost`).
    KeyDeleted,
    /// Someone asks to fence `lease`; refute with [`LeaseBackend::refute`] at `revision` if
    /// `Election::on_fence_request` says so.
    FenceRequested { by: NodeId, lease: LeaseId, revision: i64 },
}

/// etcd as the fencing authority. All methods are cancel-safe single requests except
/// [`LeaseBackend::fence`], which takes about `refute_window`.
pub trait LeaseBackend: Send + Sync {
    /// Grants a lease of `ttl` and puts `nodes/<node>` under it.
    fn grant(&self, node: &NodeId, ttl: Duration) -> impl Future<Output = Result<LeaseId, LeaseError>> + Send;
    /// One keep-alive: `Ok(true)` renewed, `Ok(false)` the lease is gone.
    fn keep_alive(&self, lease: LeaseId) -> impl Future<Output = Result<bool, LeaseError>> + Send;
    /// Revokes a lease (ours on shutdown); a missing lease is not an error.
    fn revoke(&self, lease: LeaseId) -> impl Future<Output = Result<(), LeaseError>> + Send;
    /// Events about `nodes/<node>` and `fence/<node>`.
    fn watch_node(
        &self,
        node: &NodeId,
    ) -> impl Future<Output = Result<mpsc::Receiver<NodeKeyEvent>, LeaseError>> + Send;
    /// Fences `target` (see the module docs): the lease its key is attached to now, or `lease`
    /// (the one from its last heartbeat) if it has no key; `Err` means "could not tell" (treat
    /// as Failed).
    fn fence(
        &self,
        by: &NodeId,
        target: &NodeId,
        lease: Option<LeaseId>,
        refute_window: Duration,
    ) -> impl Future<Output = Result<FenceOutcome, LeaseError>> + Send;
    /// Refutes `by`'s fence request (at `revision`) against `node`; `Ok(true)` if it was still
    /// pending.
    fn refute(
        &self,
        node: &NodeId,
        by: &NodeId,
        revision: i64,
    ) -> impl Future<Output = Result<bool, LeaseError>> + Send;
}

/// The watches behind [`LeaseBackend::watch_node`] for etcd: this node's key (deleted ⇒ lease
/// lost) and the fence requests against it.
struct NodeWatch {
    client: Client,
    node_key: String,
    fence_prefix: String,
    timeout: Duration,
}

type NodeStreams = (etcd_client::WatchStream, etcd_client::WatchStream);

impl NodeWatch {
    async fn t<T>(&self, f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, LeaseError> {
        Ok(tokio::time::timeout(self.timeout, f).await.map_err(|_| LeaseError::Timeout(self.timeout))??)
    }

    /// Opens both watches. With `after` (the last revision seen), first reads what changed
    /// meanwhile: a missing node key is reported as deleted and pending fence requests as
    /// requested, then the watches start right after that read, so nothing falls in between.
    async fn open(&self, after: Option<i64>) -> Result<(NodeStreams, Vec<NodeKeyEvent>), LeaseError> {
        let mut c = self.client.clone();
        let mut events = Vec::new();
        let mut start = None;
        if after.is_some() {
            let node = self.t(c.get(self.node_key.clone(), None)).await?;
            let rev = node.header().map(|h| h.revision()).unwrap_or(0);
            if node.kvs().is_empty() {
                events.push(NodeKeyEvent::KeyDeleted);
            }
            let opts = GetOptions::new().with_prefix().with_revision(rev);
            let fences = self.t(c.get(self.fence_prefix.clone(), Some(opts))).await?;
            events.extend(fences.kvs().iter().filter_map(|kv| self.fence_event(kv)));
            start = Some(rev + 1);
        }
        let opts = |prefix: bool| {
            let o = if prefix { WatchOptions::new().with_prefix() } else { WatchOptions::new() };
            match start {
                Some(r) => o.with_start_revision(r),
                None => o,
            }
        };
        let nodes = self.t(c.watch(self.node_key.clone(), Some(opts(false)))).await?;
        let fences = self.t(c.watch(self.fence_prefix.clone(), Some(opts(true)))).await?;
        Ok(((nodes, fences), events))
    }

    fn fence_event(&self, kv: &etcd_client::KeyValue) -> Option<NodeKeyEvent> {
        let by = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&self.fence_prefix)?;
        Some(NodeKeyEvent::FenceRequested {
            by: NodeId::new(by),
            lease: parse_lease(kv.value())?,
            revision: kv.mod_revision(),
        })
    }

    /// Forwards events until a watch ends; returns the last revision seen, or `None` when the
    /// receiver is gone.
    async fn pump(&self, (nodes, fences): &mut NodeStreams, tx: &mpsc::Sender<NodeKeyEvent>) -> Option<i64> {
        let mut last = 0;
        loop {
            let (msg, from_fence) = tokio::select! {
                m = nodes.message() => (m, false),
                m = fences.message() => (m, true),
            };
            let resp = match msg {
                Ok(Some(r)) if !r.canceled() => r,
                _ => return Some(last),
            };
            if let Some(h) = resp.header() {
                last = last.max(h.revision());
            }
            for ev in resp.events() {
                let out = match (from_fence, ev.event_type(), ev.kv()) {
                    (false, EventType::Delete, _) => Some(NodeKeyEvent::KeyDeleted),
                    (true, EventType::Put, Some(kv)) => self.fence_event(kv),
                    _ => None,
                };
                if let Some(out) = out
                    && tx.send(out).await.is_err()
                {
                    return None;
                }
            }
        }
    }
}

fn parse_lease(v: &[u8]) -> Option<LeaseId> {
    let s = std::str::from_utf8(v).ok()?;
    let hex = s.split_whitespace().next()?;
    i64::from_str_radix(hex, 16).ok().filter(|l| *l > 0).map(LeaseId)
}

// ===== etcd =====

/// [`LeaseBackend`] over `etcd-client`.
pub struct EtcdBackend {
    client: Client,
    root: String,
    timeout: Duration,
    keepalive_timeout: Duration,
    keeper: tokio::sync::Mutex<Option<(i64, etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>>,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend").field("root", &self.root).field("timeout", &self.timeout).finish()
    }
}

impl EtcdBackend {
    /// `timeout` bounds every request (a keep-alive that takes longer is a failure; validity
    /// then lapses by itself).
    pub async fn connect(endpoints: &[String], root: &str, timeout: Duration) -> Result<EtcdBackend, LeaseError> {
        let client = tokio::time::timeout(timeout.max(Duration::from_secs(2)), Client::connect(endpoints, None))
            .await
            .map_err(|_| LeaseError::Timeout(timeout))??;
        Ok(EtcdBackend::with_client(client, root, timeout))
    }

    pub fn with_client(client: Client, root: &str, timeout: Duration) -> EtcdBackend {
        EtcdBackend {
            client,
            root: root.trim_end_matches('/').to_string(),
            timeout,
            keepalive_timeout: timeout,
            keeper: tokio::sync::Mutex::new(None),
        }
    }

    /// A shorter bound for keep-alives alone: one slower than `horizon − keepalive_interval`
    /// cannot extend validity anyway, and the driver sends the next only after it returns.
    pub fn with_keepalive_timeout(mut self, t: Duration) -> EtcdBackend {
        self.keepalive_timeout = t;
        self
    }

    /// `<root>/nodes/<node>`.
    pub fn node_key(&self, node: &NodeId) -> String {
        format!("{}/nodes/{}", self.root, node)
    }

    /// `<root>/fence/<node>/<by>`.
    pub fn fence_key(&self, node: &NodeId, by: &NodeId) -> String {
        format!("{}/fence/{}/{}", self.root, node, by)
    }

    async fn t<T>(&self, f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, LeaseError> {
        Ok(tokio::time::timeout(self.timeout, f).await.map_err(|_| LeaseError::Timeout(self.timeout))??)
    }

    fn is_not_found(e: &etcd_client::Error) -> bool {
        match e {
            etcd_client::Error::GRpcStatus(s) => s.message().contains("not found"),
            etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
            _ => false,
        }
    }
}

impl LeaseBackend for EtcdBackend {
    async fn grant(&self, node: &NodeId, ttl: Duration) -> Result<LeaseId, LeaseError> {
        let mut c = self.client.clone();
        let secs = ttl.as_secs().max(1) as i64;
        let id = self.t(c.lease_grant(secs, None)).await?.id();
        let put = c.put(self.node_key(node), format!("{id:x}"), Some(PutOptions::new().with_lease(id)));
        if let Err(e) = self.t(put).await {
            let _ = self.t(c.lease_revoke(id)).await;
            return Err(e);
        }
        Ok(LeaseId(id))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, LeaseError> {
        let mut k = self.keeper.lock().await;
        if k.as_ref().is_none_or(|(id, _, _)| *id != lease.0) {
            let mut c = self.client.clone();
            // etcd-client opens the stream with a first keep-alive and reports a missing lease
            // as an error.
            let (keeper, stream) = match self.t(c.lease_keep_alive(lease.0)).await {
                Ok(ks) => ks,
                Err(LeaseError::Etcd(e)) if Self::is_not_found(&e) => return Ok(false),
                Err(e) => return Err(e),
            };
            *k = Some((lease.0, keeper, stream));
        }
        let (_, keeper, stream) = k.as_mut().expect("set above");
        let r = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        match tokio::time::timeout(self.keepalive_timeout, r).await {
            Ok(Ok(Some(resp))) => Ok(resp.ttl() > 0),
            Ok(Ok(None)) => {
                *k = None;
                Err(LeaseError::Closed)
            }
            Ok(Err(e)) => {
                *k = None;
                Err(e.into())
            }
            Err(_) => {
                // The stream may now be out of step (a late answer); start a fresh one.
                *k = None;
                Err(LeaseError::Timeout(self.keepalive_timeout))
            }
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), LeaseError> {
        let mut c = self.client.clone();
        match self.t(c.lease_revoke(lease.0)).await {
            Ok(_) => Ok(()),
            Err(LeaseError::Etcd(e)) if Self::is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn watch_node(&self, node: &NodeId) -> Result<mpsc::Receiver<NodeKeyEvent>, LeaseError> {
        let watch = NodeWatch {
            client: self.client.clone(),
            node_key: self.node_key(node),
            fence_prefix: format!("{}/fence/{}/", self.root, node),
            timeout: self.timeout,
        };
        // The first watch is opened here, so that a failure reaches the caller.
        let (first, initial) = watch.open(None).await?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            for ev in initial {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            let mut streams = first;
            loop {
                let Some(rev) = watch.pump(&mut streams, &tx).await else { return };
                // The watch ended (etcd restarted, connection lost): open it again from where it
                // stopped, for as long as someone listens. Without this, fence requests after an
                // etcd blip would go unseen and never be refuted.
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if tx.is_closed() {
                        return;
                    }
                    match watch.open(Some(rev)).await {
                        Ok((s, evs)) => {
                            for ev in evs {
                                if tx.send(ev).await.is_err() {
                                    return;
                                }
                            }
                            streams = s;
                            break;
                        }
                        Err(e) => tracing::debug!(error = %e, "re-opening the node key watch"),
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn fence(
        &self,
        by: &NodeId,
        target: &NodeId,
        lease: Option<LeaseId>,
        refute_window: Duration,
    ) -> Result<FenceOutcome, LeaseError> {
        let mut c = self.client.clone();
        // The lease the target's key is attached to *now*: the hint comes from its last
        // heartbeat and may be stale (it may hold a newer lease we never heard of, which must
        // get the chance to refute). A stale hint that still exists is revoked as well.
        let r = self.t(c.get(self.node_key(target), None)).await?;
        let current = r.kvs().first().map(|kv| kv.lease()).filter(|l| *l > 0).map(LeaseId);
        if let (Some(h), Some(cur)) = (lease, current)
            && h != cur
        {
            self.revoke(h).await?;
        }
        let Some(lease) = current.or(lease) else { return Ok(FenceOutcome::Fenced { lease: None }) };
        let fence_key = self.fence_key(target, by);
        let put = self.t(c.put(fence_key.clone(), format!("{:x}", lease.0), None)).await?;
        let rev = put.header().map(|h| h.revision()).unwrap_or_default();
        tokio::time::sleep(refute_window).await;
        let txn = Txn::new()
            .when([Compare::mod_revision(fence_key.clone(), CompareOp::Equal, rev)])
            .and_then([TxnOp::delete(fence_key, None)]);
        if !self.t(c.txn(txn)).await?.succeeded() {
            return Ok(FenceOutcome::Refused);
        }
        self.revoke(lease).await?;
        Ok(FenceOutcome::Fenced { lease: Some(lease) })
    }

    async fn refute(&self, node: &NodeId, by: &NodeId, revision: i64) -> Result<bool, LeaseError> {
        let mut c = self.client.clone();
        let key = self.fence_key(node, by);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
            .and_then([TxnOp::delete(key, None)]);
        Ok(self.t(c.txn(txn)).await?.succeeded())
    }
}

/// Reads every node key: node name → lease (for status and debugging).
pub async fn list_nodes(b: &EtcdBackend) -> Result<BTreeMap<String, LeaseId>, LeaseError> {
    let mut c = b.client.clone();
    let prefix = format!("{}/nodes/", b.root);
    let r = b.t(c.get(prefix.clone(), Some(GetOptions::new().with_prefix()))).await?;
    Ok(r.kvs()
        .iter()
        .filter_map(|kv| {
            let name = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&prefix)?.to_string();
            Some((name, LeaseId(kv.lease())))
        })
        .collect())
}

// ===== in memory =====

#[derive(Debug, Default)]
struct Mem {
    revision: i64,
    next_lease: i64,
    /// lease → (holder, expiry).
    leases: BTreeMap<i64, (NodeId, tokio::time::Instant, Duration)>,
    /// node → (lease, mod revision).
    nodes: BTreeMap<NodeId, i64>,
    /// (target, by) → (lease, mod revision).
    fences: BTreeMap<(NodeId, NodeId), (i64, i64)>,
    watchers: Vec<(NodeId, mpsc::Sender<NodeKeyEvent>)>,
    /// Simulated outage: every call fails.
    down: bool,
}

/// An in-memory etcd with the same semantics (TTL expiry on access, revoke deletes the key,
/// refutable fences). Clone it to share one "cluster" between nodes.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend(Arc<Mutex<Mem>>);

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// Makes every call fail (`true`) or work again.
    pub fn set_down(&self, down: bool) {
        self.0.lock().expect("poisoned").down = down;
    }

    /// The lease `node`'s key is attached to, if the key exists.
    pub fn node_lease(&self, node: &NodeId) -> Option<LeaseId> {
        let mut m = self.0.lock().expect("poisoned");
        m.expire();
        m.nodes.get(node).map(|l| LeaseId(*l))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Mem) -> T) -> Result<T, LeaseError> {
        let mut m = self.0.lock().expect("poisoned");
        if m.down {
            return Err(LeaseError::Closed);
        }
        m.expire();
        Ok(f(&mut m))
    }
}

impl Mem {
    fn expire(&mut self) {
        let now = tokio::time::Instant::now();
        let gone: Vec<i64> = self.leases.iter().filter(|(_, (_, e, _))| *e <= now).map(|(l, _)| *l).collect();
        for l in gone {
            self.revoke(l);
        }
    }

    fn revoke(&mut self, lease: i64) {
        if let Some((node, _, _)) = self.leases.remove(&lease)
            && self.nodes.get(&node) == Some(&lease)
        {
            self.nodes.remove(&node);
            self.revision += 1;
            self.notify(&node, NodeKeyEvent::KeyDeleted);
        }
    }

    fn notify(&mut self, node: &NodeId, ev: NodeKeyEvent) {
        self.watchers.retain(|(n, tx)| n != node || tx.try_send(ev.clone()).is_ok());
    }
}

impl LeaseBackend for MemoryBackend {
    async fn grant(&self, node: &NodeId, ttl: Duration) -> Result<LeaseId, LeaseError> {
        self.with(|m| {
            m.next_lease += 1;
            let id = 0x1000 + m.next_lease;
            m.leases.insert(id, (node.clone(), tokio::time::Instant::now() + ttl, ttl));
            m.nodes.insert(node.clone(), id);
            m.revision += 1;
            LeaseId(id)
        })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, LeaseError> {
        self.with(|m| match m.leases.get_mut(&lease.0) {
            Some((_, exp, ttl)) => {
                *exp = tokio::time::Instant::now() + *ttl;
                true
            }
            None => false,
        })
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), LeaseError> {
        self.with(|m| m.revoke(lease.0))
    }

    async fn watch_node(&self, node: &NodeId) -> Result<mpsc::Receiver<NodeKeyEvent>, LeaseError> {
        let (tx, rx) = mpsc::channel(16);
        self.with(|m| m.watchers.push((node.clone(), tx)))?;
        Ok(rx)
    }

    async fn fence(
        &self,
        by: &NodeId,
        target: &NodeId,
        lease: Option<LeaseId>,
        refute_window: Duration,
    ) -> Result<FenceOutcome, LeaseError> {
        let req = self.with(|m| {
            let current = m.nodes.get(target).copied();
            if let (Some(h), Some(cur)) = (lease, current)
                && h.0 != cur
            {
                m.revoke(h.0);
            }
            let lease = current.or(lease.map(|l| l.0))?;
            m.revision += 1;
            let rev = m.revision;
            m.fences.insert((target.clone(), by.clone()), (lease, rev));
            m.notify(target, NodeKeyEvent::FenceRequested { by: by.clone(), lease: LeaseId(lease), revision: rev });
            Some((lease, rev))
        })?;
        let Some((lease, rev)) = req else { return Ok(FenceOutcome::Fenced { lease: None }) };
        tokio::time::sleep(refute_window).await;
        self.with(|m| {
            let key = (target.clone(), by.clone());
            if m.fences.get(&key).map(|f| f.1) != Some(rev) {
                return FenceOutcome::Refused;
            }
            m.fences.remove(&key);
            m.revoke(lease);
            FenceOutcome::Fenced { lease: Some(LeaseId(lease)) }
        })
    }

    async fn refute(&self, node: &NodeId, by: &NodeId, revision: i64) -> Result<bool, LeaseError> {
        self.with(|m| {
            let key = (node.clone(), by.clone());
            if m.fences.get(&key).map(|f| f.1) == Some(revision) {
                m.fences.remove(&key);
                m.revision += 1;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId::new(s)
    }

    #[tokio::test]
    async fn memory_grant_keepalive_expiry() {
        let b = MemoryBackend::new();
        let l = b.grant(&n("a"), Duration::from_millis(100)).await.unwrap();
        assert_eq!(b.node_lease(&n("a")), Some(l));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(b.keep_alive(l).await.unwrap());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(b.keep_alive(l).await.unwrap());
        tokio::time::sleep(Duration::from_millis(110)).await;
        assert!(!b.keep_alive(l).await.unwrap());
        assert_eq!(b.node_lease(&n("a")), None);
    }

    #[tokio::test]
    async fn memory_fence_unrefuted_revokes() {
        let b = MemoryBackend::new();
        let l = b.grant(&n("a"), Duration::from_secs(2)).await.unwrap();
        let mut w = b.watch_node(&n("a")).await.unwrap();
        let out = b.fence(&n("b"), &n("a"), None, Duration::from_millis(10)).await.unwrap();
        assert_eq!(out, FenceOutcome::Fenced { lease: Some(l) });
        assert!(matches!(w.recv().await, Some(NodeKeyEvent::FenceRequested { lease, .. }) if lease == l));
        assert_eq!(w.recv().await, Some(NodeKeyEvent::KeyDeleted));
        assert!(!b.keep_alive(l).await.unwrap());
        // Fencing a node with no key (or an old lease) is a no-op success.
        assert_eq!(
            b.fence(&n("b"), &n("a"), None, Duration::ZERO).await.unwrap(),
            FenceOutcome::Fenced { lease: None }
        );
    }

    #[tokio::test]
    async fn memory_fence_refuted() {
        let b = MemoryBackend::new();
        let l = b.grant(&n("a"), Duration::from_secs(2)).await.unwrap();
        let mut w = b.watch_node(&n("a")).await.unwrap();
        let b2 = b.clone();
        let refuter = tokio::spawn(async move {
            if let Some(NodeKeyEvent::FenceRequested { by, revision, .. }) = w.recv().await {
                assert_eq!(by, n("b"));
                assert!(b2.refute(&n("a"), &by, revision).await.unwrap());
            }
        });
        let out = b.fence(&n("b"), &n("a"), Some(l), Duration::from_millis(10)).await.unwrap();
        assert_eq!(out, FenceOutcome::Refused);
        refuter.await.unwrap();
        assert!(b.keep_alive(l).await.unwrap());
        b.set_down(true);
        assert!(b.keep_alive(l).await.is_err());
    }

    #[test]
    fn parses_key_values() {
        assert_eq!(parse_lease(b"1f"), Some(LeaseId(0x1f)));
        assert_eq!(parse_lease(b"1f node-b"), Some(LeaseId(0x1f)));
        assert_eq!(parse_lease(b"zz"), None);
        assert_eq!(parse_lease(b""), None);
        assert_eq!(parse_lease(b"0"), None);
    }
}
