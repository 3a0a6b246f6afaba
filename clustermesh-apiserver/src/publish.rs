//! Publishing the [`export`](crate::export) map into this cluster's etcd.
//!
//! ```text
//!  Model ──export()──▶ desired map ──diff(published, desired)──▶ txns of ≤128 ops ──▶ etcd
//!                                                   lease keep-alive task (TTL/3) ──▶ etcd
//!                                                   heartbeat / synced canaries   ──▶ etcd
//! ```
//!
//! Behaviour copied from Cilium (`pkg/kvstore/store/syncstore.go`, `pkg/kvstore/etcd.go`,
//! `heartbeat/heartbeat.go`; reference `clustermesh.md` §1.2, §1.4, §1.7, §6.2):
//! * state keys are attached to one lease (default TTL 15 min, renewed every TTL/3), so they go
//!   away if the publisher dies; the cluster config is **not** leased (cilium/cilium#37701:
//!   a leased config vanishes during writer outages);
//! * unchanged values are not rewritten;
//! * canaries `cilium/synced/<cluster>/<prefix>` and `cilium/.heartbeat` hold an RFC 3339 time;
//! * at start the publisher lists what is already under its own prefixes, so the first
//!   [`Publisher::apply`] also deletes stale keys of an earlier run, and re-attaches the keys it
//!   keeps to its own lease.
//!
//! etcd limits a txn to 128 operations by default (`--max-txn-ops`), hence the chunking.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use etcd_client::{Client, GetOptions, PutOptions, Txn, TxnOp};
use tokio::task::JoinHandle;

use crate::export::{Diff, Exported, diff};
use crate::keys::{self, Resource};

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// Cilium's kvstore lease TTL (`defaults.KVstoreLeaseTTL`).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15 * 60);
/// Heartbeat period (`kvstore.HeartbeatWriteInterval`).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("invalid cluster name: {0}")]
    ClusterName(String),
}

/// Writes one cluster's exported state. Dropping it stops the lease keep-alive; the leased keys
/// then expire after the TTL (call [`Publisher::revoke`] to remove them at once).
pub struct Publisher {
    client: Client,
    cluster: String,
    lease_id: i64,
    published: Exported,
    /// Published keys still attached to another lease (see `read_owned`).
    foreign_lease: BTreeSet<String>,
    keepalive: JoinHandle<()>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("cluster", &self.cluster)
            .field("lease_id", &self.lease_id)
            .field("published", &self.published.len())
            .finish()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

impl Publisher {
    /// Grants the lease, starts its keep-alive and reads what is already published under this
    /// cluster's prefixes.
    pub async fn new(mut client: Client, cluster: &str, lease_ttl: Duration) -> Result<Publisher, PublishError> {
        keys::validate_cluster_name(cluster).map_err(PublishError::ClusterName)?;
        let ttl = lease_ttl.as_secs().max(1) as i64;
        let lease_id = client.lease_grant(ttl, None).await?.id();
        let keepalive = tokio::spawn(keep_alive(client.clone(), lease_id, lease_ttl / 3));
        let mut p = Publisher {
            client,
            cluster: cluster.to_string(),
            lease_id,
            published: Exported::new(),
            foreign_lease: BTreeSet::new(),
            keepalive,
        };
        p.published = p.read_owned().await?;
        Ok(p)
    }

    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }

    /// What this publisher believes is in etcd.
    pub fn published(&self) -> &Exported {
        &self.published
    }

    /// Keys this cluster owns exclusively: its services, its nodes, its config, and (since a
    /// cluster's etcd holds only that cluster's endpoints) every identity and ipcache entry.
    fn owned_prefixes(&self) -> [String; 4] {
        [
            Resource::Services.watch_prefix(&self.cluster),
            Resource::Nodes.watch_prefix(&self.cluster),
            Resource::Identities.watch_prefix(&self.cluster),
            Resource::Ip.watch_prefix(&self.cluster),
        ]
    }

    /// What is in etcd under our prefixes. Leased keys attached to another lease (an earlier
    /// run's, or ours before etcd lost it) are noted, so the next [`Publisher::apply`] rewrites
    /// them under the current lease even when unchanged; otherwise they would vanish when the
    /// old lease expires.
    async fn read_owned(&mut self) -> Result<Exported, PublishError> {
        let mut out = Exported::new();
        for prefix in self.owned_prefixes() {
            let resp = self.client.get(prefix, Some(GetOptions::new().with_prefix())).await?;
            for kv in resp.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                if kv.lease() != self.lease_id {
                    self.foreign_lease.insert(key.clone());
                }
                out.insert(key, kv.value().to_vec());
            }
        }
        let cfg_key = keys::cluster_config_key(&self.cluster);
        if let Some(kv) = self.client.get(cfg_key.clone(), None).await?.kvs().first() {
            out.insert(cfg_key, kv.value().to_vec());
        }
        Ok(out)
    }

    /// Makes etcd hold `desired` (for the keys this publisher writes); returns what changed.
    pub async fn apply(&mut self, desired: &Exported) -> Result<Diff, PublishError> {
        let mut d = diff(&self.published, desired);
        for k in &self.foreign_lease {
            if let Some(v) = desired.get(k) {
                d.upserts.insert(k.clone(), v.clone());
            }
        }
        let cfg_key = keys::cluster_config_key(&self.cluster);
        let mut ops: Vec<TxnOp> = Vec::with_capacity(d.upserts.len() + d.deletes.len());
        for (k, v) in &d.upserts {
            let opts = (*k != cfg_key).then(|| PutOptions::new().with_lease(self.lease_id));
            ops.push(TxnOp::put(k.clone(), v.clone(), opts));
        }
        for k in &d.deletes {
            ops.push(TxnOp::delete(k.clone(), None));
        }
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(MAX_TXN_OPS));
            self.client.txn(Txn::new().and_then(ops)).await?;
            ops = rest;
        }
        self.published = desired.clone();
        self.foreign_lease.clear();
        Ok(d)
    }

    /// Writes the sync canaries, once the first [`Publisher::apply`] has succeeded.
    pub async fn write_synced_canaries(&mut self, resources: &[Resource]) -> Result<(), PublishError> {
        let now = rfc3339(SystemTime::now());
        for r in resources {
            let opts = PutOptions::new().with_lease(self.lease_id);
            self.client.put(keys::synced_key(&self.cluster, *r), now.clone(), Some(opts)).await?;
        }
        Ok(())
    }

    /// Writes `cilium/.heartbeat` once.
    pub async fn heartbeat(&mut self) -> Result<(), PublishError> {
        let opts = PutOptions::new().with_lease(self.lease_id);
        self.client.put(keys::HEARTBEAT_KEY, rfc3339(SystemTime::now()), Some(opts)).await?;
        Ok(())
    }

    /// Writes the heartbeat every `interval` until the handle is aborted.
    pub fn spawn_heartbeat(&self, interval: Duration) -> JoinHandle<()> {
        let mut client = self.client.clone();
        let lease = self.lease_id;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let opts = PutOptions::new().with_lease(lease);
                if let Err(e) = client.put(keys::HEARTBEAT_KEY, rfc3339(SystemTime::now()), Some(opts)).await {
                    tracing::warn!(error = %e, "clustermesh heartbeat write failed");
                }
            }
        })
    }

    /// Revokes the lease: every leased key (state, canaries, heartbeat) goes at once.
    pub async fn revoke(mut self) -> Result<(), PublishError> {
        self.keepalive.abort();
        self.client.lease_revoke(self.lease_id).await?;
        Ok(())
    }
}

async fn keep_alive(mut client: Client, lease_id: i64, period: Duration) {
    let period = period.max(Duration::from_millis(500));
    let (mut keeper, mut stream) = match client.lease_keep_alive(lease_id).await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(lease_id, error = %e, "clustermesh lease keep-alive could not start");
            return;
        }
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Err(e) = keeper.keep_alive().await {
            tracing::error!(lease_id, error = %e, "clustermesh lease keep-alive failed");
            return;
        }
        match stream.message().await {
            Ok(Some(r)) if r.ttl() > 0 => {}
            Ok(_) => {
                tracing::error!(lease_id, "clustermesh lease expired");
                return;
            }
            Err(e) => {
                tracing::error!(lease_id, error = %e, "clustermesh lease keep-alive stream failed");
                return;
            }
        }
    }
}

/// RFC 3339 UTC time with second precision, as Go's `time.RFC3339` prints a UTC time.
pub use halyard_model::time::rfc3339;

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "2023-11-14T22:13:20Z");
    }
}
