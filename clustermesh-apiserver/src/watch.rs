//! Following a remote cluster's etcd: list-then-watch per prefix, typed decoding, readiness.
//!
//! ```text
//!  remote etcd ──paged get @rev──▶ WatchCache ──KvEvent──▶ decode() ──RemoteEvent──▶ consumer
//!              ──watch rev+1────▶     │ (one list-watch task per prefix, plus the canaries)
//!   error/compaction ⇒ back-off, re-list, synthesize deletes for keys not seen again
//! ```
//!
//! Behaviour from Cilium `pkg/kvstore/etcd.go` and `pkg/clustermesh/common/remote_cluster.go`
//! (reference `clustermesh.md` §1.4, §1.7, §6.2):
//! * list pages of 256 keys, later pages pinned to the first page's revision, continuing at
//!   `last_key + "\0"`; then one `ListDone`; then watch from `revision + 1`;
//! * a compacted or cancelled watch ⇒ re-list from scratch, and keys that were not listed
//!   again get a synthesized delete;
//! * other errors (connection lost, etcd restarted on its data) ⇒ resume the watch from the last
//!   revision applied; Cilium re-lists here, which costs a full list per blip at 250k keys. A
//!   resume first checks that etcd still has the same history (cluster id, revision not behind),
//!   since a watch from a revision an etcd restored empty has not reached yet would wait silently;
//! * list errors back off exponentially from 50 ms to 1 min, with jitter;
//! * the cluster config is read first (polling until it exists); with `syncedCanaries` a
//!   resource counts as synced only once its canary `cilium/synced/<cluster>/<prefix>` exists;
//! * values that do not decode or validate are reported ([`RemoteEvent::Malformed`]) and
//!   skipped, never fatal;
//! * while disconnected, the last state is kept; if a `stale_ttl` is set and the outage lasts
//!   longer, every key is deleted (Cilium's `clustermesh-cache-ttl`, default never).
//!
//! Difference from Cilium: watchers start at once and readiness waits for the canaries, instead
//! of starting each watcher when its canary appears. The visible result is the same.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::keys::{self, Key, Resource};
use crate::types::{CiliumClusterConfig, ClusterService, IpIdentityPair, LabelSet, Node, from_json};

/// Tuning of the list-watch loop.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub page_size: i64,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Delete everything of a remote that stays unreachable this long; `None` = keep forever.
    pub stale_ttl: Option<Duration>,
}

impl Default for WatchConfig {
    fn default() -> WatchConfig {
        WatchConfig {
            page_size: 256,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(60),
            stale_ttl: None,
        }
    }
}

// ===== sans-IO cache =====

/// A raw change of one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvEvent {
    Upsert {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// The (re-)list is complete; everything before reflects the revision listed.
    ListDone,
}

/// The last known content of one prefix; turns lists and watch events into [`KvEvent`]s.
#[derive(Clone, Debug, Default)]
pub struct WatchCache {
    entries: BTreeMap<String, Vec<u8>>,
    seen: Option<BTreeSet<String>>,
}

impl WatchCache {
    pub fn new() -> WatchCache {
        WatchCache::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Starts a (re-)list: keys not listed before [`WatchCache::end_list`] get deleted then.
    pub fn begin_list(&mut self) {
        self.seen = Some(BTreeSet::new());
    }

    /// A key from a list page.
    pub fn listed(&mut self, key: String, value: Vec<u8>) -> Option<KvEvent> {
        if let Some(seen) = &mut self.seen {
            seen.insert(key.clone());
        }
        self.put(key, value)
    }

    /// Ends the list: deletes for keys that were not listed, then `ListDone`.
    pub fn end_list(&mut self) -> Vec<KvEvent> {
        let seen = self.seen.take().unwrap_or_default();
        let gone: Vec<String> = self.entries.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        let mut out: Vec<KvEvent> = gone.into_iter().filter_map(|k| self.delete(&k)).collect();
        out.push(KvEvent::ListDone);
        out
    }

    /// A put from the watch (or a list); nothing when the value is unchanged.
    pub fn put(&mut self, key: String, value: Vec<u8>) -> Option<KvEvent> {
        if self.entries.get(&key) == Some(&value) {
            return None;
        }
        self.entries.insert(key.clone(), value.clone());
        Some(KvEvent::Upsert { key, value })
    }

    pub fn delete(&mut self, key: &str) -> Option<KvEvent> {
        self.entries.remove(key).map(|_| KvEvent::Delete { key: key.to_string() })
    }

    /// Deletes everything (stale remote).
    pub fn drain(&mut self) -> Vec<KvEvent> {
        std::mem::take(&mut self.entries).into_keys().map(|key| KvEvent::Delete { key }).collect()
    }
}

// ===== typed events =====

/// A decoded change of a remote cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum RemoteEvent {
    /// The remote's config was read (first event).
    Config(CiliumClusterConfig),
    ServiceUpsert(Box<ClusterService>),
    ServiceDelete {
        namespace: String,
        name: String,
    },
    NodeUpsert(Box<Node>),
    NodeDelete {
        name: String,
    },
    IdentityUpsert {
        id: u32,
        labels: LabelSet,
    },
    IdentityDelete {
        id: u32,
    },
    IpUpsert(IpIdentityPair),
    IpDelete {
        prefix: IpNet,
    },
    /// The first full list of a resource is in (and its canary exists, if the remote has them).
    Synced(Resource),
    /// All resources are synced.
    Ready,
    /// A key or value that does not decode or validate; skipped.
    Malformed {
        key: String,
        error: String,
    },
}

/// Decodes one raw change of `resource` from remote `cluster` (pure).
pub fn decode(cluster: &str, cluster_id: Option<u32>, resource: Resource, ev: &KvEvent) -> Option<RemoteEvent> {
    let (key, value) = match ev {
        KvEvent::ListDone => return None,
        KvEvent::Upsert { key, value } => (key, Some(value)),
        KvEvent::Delete { key } => (key, None),
    };
    let malformed = |error: String| Some(RemoteEvent::Malformed { key: key.clone(), error });
    let parsed = match Key::parse(key) {
        Ok(k) => k,
        Err(e) => return malformed(e.to_string()),
    };
    match (resource, parsed, value) {
        (Resource::Services, Key::Service { cluster: c, namespace, name }, v) if c == cluster => match v {
            None => Some(RemoteEvent::ServiceDelete { namespace, name }),
            Some(v) => match from_json::<ClusterService>(key, v)
                .and_then(|s| s.validate(key, cluster, &namespace, &name, cluster_id).map(|_| s))
            {
                Ok(s) => Some(RemoteEvent::ServiceUpsert(Box::new(s))),
                Err(e) => malformed(e.to_string()),
            },
        },
        (Resource::Nodes, Key::Node { cluster: c, name }, v) if c == cluster => match v {
            None => Some(RemoteEvent::NodeDelete { name }),
            Some(v) => match from_json::<Node>(key, v) {
                Ok(n) if n.name == name && n.cluster == cluster => Some(RemoteEvent::NodeUpsert(Box::new(n))),
                Ok(n) => malformed(format!("node {}/{} does not match its key", n.cluster, n.name)),
                Err(e) => malformed(e.to_string()),
            },
        },
        (Resource::Identities, Key::Identity { id }, v) => match v {
            None => Some(RemoteEvent::IdentityDelete { id }),
            Some(v) => match std::str::from_utf8(v).map_err(|e| e.to_string()).and_then(LabelSet::parse) {
                Ok(labels) => Some(RemoteEvent::IdentityUpsert { id, labels }),
                Err(e) => malformed(format!("invalid label list: {e}")),
            },
        },
        (Resource::Ip, Key::Ip { prefix, .. }, v) => match v {
            None => Some(RemoteEvent::IpDelete { prefix }),
            Some(v) => match from_json::<IpIdentityPair>(key, v) {
                Ok(p) if p.ip.map(IpNet::from).map(|n| n.addr()) == Some(prefix.addr()) => {
                    Some(RemoteEvent::IpUpsert(p))
                }
                Ok(p) => malformed(format!("IP {:?} does not match its key", p.ip.map(|i: IpAddr| i.to_string()))),
                Err(e) => malformed(e.to_string()),
            },
        },
        _ => malformed(format!("unexpected key under {resource}")),
    }
}

// ===== list-watch loop =====

#[derive(Debug, thiserror::Error)]
enum LoopError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("watch canceled (compact revision {0})")]
    Canceled(i64),
    #[error("watch stream closed")]
    Closed,
    #[error("receiver gone")]
    Stopped,
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Exponential back-off with ±25 % jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { next: min, min, max }
    }

    /// The next delay (jittered), doubling the base up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(0.75 + fastrand::f64() * 0.5)
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

async fn send(tx: &mpsc::Sender<KvEvent>, ev: KvEvent) -> Result<(), LoopError> {
    tx.send(ev).await.map_err(|_| LoopError::Stopped)
}

/// Where a list-watch resumes after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resume {
    /// Every event up to this revision is in the cache.
    revision: i64,
    /// The etcd cluster those revisions belong to (`ResponseHeader.cluster_id`).
    cluster_id: u64,
}

async fn list_then_watch(
    client: &mut Client,
    prefix: &str,
    cfg: &WatchConfig,
    cache: &mut WatchCache,
    tx: &mpsc::Sender<KvEvent>,
    resume: &mut Option<Resume>,
) -> Result<(), LoopError> {
    cache.begin_list();
    let mut rev = 0;
    let mut cluster_id = 0;
    let mut start = prefix.as_bytes().to_vec();
    loop {
        let mut opts = GetOptions::new().with_range(prefix_end(prefix)).with_limit(cfg.page_size).with_serializable();
        if rev > 0 {
            opts = opts.with_revision(rev);
        }
        let resp = client.get(start.clone(), Some(opts)).await?;
        if rev == 0 {
            rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            cluster_id = resp.header().map(|h| h.cluster_id()).unwrap_or(0);
        }
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if let Some(ev) = cache.listed(key, kv.value().to_vec()) {
                send(tx, ev).await?;
            }
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    for ev in cache.end_list() {
        send(tx, ev).await?;
    }
    *resume = Some(Resume { revision: rev, cluster_id });
    watch_from(client, prefix, cache, tx, resume).await
}

/// Whether the etcd behind `client` still has the history `resume` points into: the same
/// cluster, and a current revision not below it. An etcd restored empty (or replaced) starts
/// its revisions again, and a watch from a future revision would wait silently for it.
async fn can_resume(client: &mut Client, prefix: &str, resume: Resume) -> Result<bool, LoopError> {
    let resp = client.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await?;
    let header = resp.header();
    let revision = header.map(|h| h.revision()).unwrap_or(0);
    let cluster_id = header.map(|h| h.cluster_id()).unwrap_or(0);
    Ok(cluster_id == resume.cluster_id && revision >= resume.revision)
}

/// Watches `prefix` from `resume.revision + 1`, advancing `resume` with every event applied.
async fn watch_from(
    client: &mut Client,
    prefix: &str,
    cache: &mut WatchCache,
    tx: &mpsc::Sender<KvEvent>,
    resume: &mut Option<Resume>,
) -> Result<(), LoopError> {
    let Some(from) = *resume else { return Err(LoopError::Closed) };
    let opts = WatchOptions::new().with_prefix().with_start_revision(from.revision + 1);
    let mut stream = client.watch(prefix, Some(opts)).await?;
    loop {
        let Some(resp) = stream.message().await? else { return Err(LoopError::Closed) };
        if resp.canceled() || resp.compact_revision() > 0 {
            return Err(LoopError::Canceled(resp.compact_revision()));
        }
        for e in resp.events() {
            let Some(kv) = e.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let ev = match e.event_type() {
                EventType::Put => cache.put(key, kv.value().to_vec()),
                EventType::Delete => cache.delete(&key),
            };
            if let Some(ev) = ev {
                send(tx, ev).await?;
            }
            if let Some(r) = resume.as_mut() {
                r.revision = r.revision.max(kv.mod_revision());
            }
        }
    }
}

/// Lists and watches `prefix` until `tx` is closed. After a transient error (connection lost,
/// etcd restarted on its data) the watch resumes from the last revision applied, so nothing is
/// listed again; a compacted revision, a cancelled watch or an etcd with another history
/// (restored empty) leads to a full re-list with synthesized deletes.
pub async fn run_list_watch(mut client: Client, prefix: String, cfg: WatchConfig, tx: mpsc::Sender<KvEvent>) {
    let mut cache = WatchCache::new();
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    let mut down_since: Option<Instant> = None;
    let mut resume: Option<Resume> = None;
    loop {
        let before = resume;
        let mut reached = false;
        let r = match resume {
            Some(at) => match can_resume(&mut client, &prefix, at).await {
                Ok(true) => {
                    reached = true;
                    watch_from(&mut client, &prefix, &mut cache, &tx, &mut resume).await
                }
                Ok(false) => {
                    tracing::warn!(prefix = %prefix, revision = at.revision, "remote etcd has a different history (restored or replaced); re-listing");
                    resume = None;
                    list_then_watch(&mut client, &prefix, &cfg, &mut cache, &tx, &mut resume).await
                }
                Err(e) => Err(e),
            },
            None => list_then_watch(&mut client, &prefix, &cfg, &mut cache, &tx, &mut resume).await,
        };
        // Progress (a list, an event, or a resumable etcd) means the remote was reachable.
        if reached || resume != before {
            backoff.reset();
            down_since = None;
        }
        match r {
            Err(LoopError::Stopped) | Ok(()) => return,
            Err(LoopError::Canceled(compacted)) => {
                tracing::warn!(prefix = %prefix, compacted, "clustermesh watch cancelled (revision compacted); re-listing");
                resume = None;
            }
            Err(e) => tracing::warn!(prefix = %prefix, error = %e, "clustermesh watch failed; resuming"),
        }
        let since = *down_since.get_or_insert_with(Instant::now);
        if let Some(ttl) = cfg.stale_ttl
            && since.elapsed() >= ttl
            && !cache.is_empty()
        {
            tracing::warn!(prefix = %prefix, "remote unreachable past the stale TTL; removing its state");
            resume = None;
            for ev in cache.drain() {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Reads `cilium/cluster-config/<cluster>`, retrying with back-off until it exists and decodes.
/// Malformed configs are reported through `tx` and retried.
async fn read_cluster_config(
    client: &mut Client,
    cluster: &str,
    cfg: &WatchConfig,
    tx: &mpsc::Sender<RemoteEvent>,
) -> Option<CiliumClusterConfig> {
    let key = keys::cluster_config_key(cluster);
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    loop {
        match client.get(key.clone(), None).await {
            Ok(resp) => match resp.kvs().first().map(|kv| from_json::<CiliumClusterConfig>(&key, kv.value())) {
                Some(Ok(c)) => return Some(c),
                Some(Err(e)) => {
                    let ev = RemoteEvent::Malformed { key: key.clone(), error: e.to_string() };
                    tx.send(ev).await.ok()?;
                }
                None => tracing::debug!(cluster, "no cluster config yet"),
            },
            Err(e) => tracing::warn!(cluster, error = %e, "reading the cluster config failed"),
        }
        if tx.is_closed() {
            return None;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Follows one remote cluster; events arrive on the returned receiver. Dropping the receiver
/// stops the tasks (each notices at its next event); aborting the handle stops them at once.
pub fn watch_remote(
    client: Client,
    cluster: String,
    cfg: WatchConfig,
) -> (JoinHandle<()>, mpsc::Receiver<RemoteEvent>) {
    let (tx, rx) = mpsc::channel(1024);
    let handle = tokio::spawn(run_remote(client, cluster, cfg, tx));
    (handle, rx)
}

/// Aborts the per-prefix tasks when the remote task ends (or is aborted).
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

async fn run_remote(mut client: Client, cluster: String, cfg: WatchConfig, tx: mpsc::Sender<RemoteEvent>) {
    let Some(config) = read_cluster_config(&mut client, &cluster, &cfg, &tx).await else { return };
    let cluster_id = (config.id != 0).then_some(config.id);
    let canaries = config.capabilities.synced_canaries;
    if tx.send(RemoteEvent::Config(config)).await.is_err() {
        return;
    }

    // One list-watch task per resource plus the canaries; `None` tags the canary prefix.
    let (raw_tx, mut raw_rx) = mpsc::channel::<(Option<Resource>, KvEvent)>(1024);
    let mut tasks = AbortOnDrop(Vec::new());
    let prefixes = Resource::ALL.into_iter().map(|r| (Some(r), r.watch_prefix(&cluster)));
    for (tag, prefix) in prefixes.chain([(None, keys::synced_prefix(&cluster))]) {
        let (ptx, mut prx) = mpsc::channel(256);
        tasks.0.push(tokio::spawn(run_list_watch(client.clone(), prefix, cfg.clone(), ptx)));
        let raw_tx = raw_tx.clone();
        tasks.0.push(tokio::spawn(async move {
            while let Some(ev) = prx.recv().await {
                if raw_tx.send((tag, ev)).await.is_err() {
                    return;
                }
            }
        }));
    }
    drop(raw_tx);

    let mut listed: BTreeSet<Resource> = BTreeSet::new();
    let mut canary: BTreeSet<Resource> = BTreeSet::new();
    let mut synced: BTreeSet<Resource> = BTreeSet::new();
    while let Some((tag, ev)) = raw_rx.recv().await {
        let mut out = Vec::new();
        match (tag, &ev) {
            (None, KvEvent::Upsert { key, .. }) => {
                if let Some(r) = Resource::ALL.into_iter().find(|r| *key == keys::synced_key(&cluster, *r)) {
                    canary.insert(r);
                }
            }
            (None, _) => {}
            (Some(r), KvEvent::ListDone) => {
                listed.insert(r);
            }
            (Some(r), ev) => out.extend(decode(&cluster, cluster_id, r, ev)),
        }
        for r in Resource::ALL {
            if listed.contains(&r) && (!canaries || canary.contains(&r)) && synced.insert(r) {
                out.push(RemoteEvent::Synced(r));
                if synced.len() == Resource::ALL.len() {
                    out.push(RemoteEvent::Ready);
                }
            }
        }
        for e in out {
            if let RemoteEvent::Malformed { key, error } = &e {
                tracing::warn!(cluster = %cluster, key = %key, error = %error, "skipping malformed clustermesh entry");
            }
            if tx.send(e).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(k: &str, v: &str) -> KvEvent {
        KvEvent::Upsert { key: k.into(), value: v.as_bytes().to_vec() }
    }

    #[test]
    fn relist_synthesizes_deletes_and_skips_unchanged() {
        let mut c = WatchCache::new();
        c.begin_list();
        assert_eq!(c.listed("a".into(), b"1".to_vec()), Some(up("a", "1")));
        assert_eq!(c.listed("b".into(), b"2".to_vec()), Some(up("b", "2")));
        assert_eq!(c.end_list(), vec![KvEvent::ListDone]);
        assert_eq!(c.put("c".into(), b"3".to_vec()), Some(up("c", "3")));
        assert_eq!(c.put("c".into(), b"3".to_vec()), None);
        // Compaction: re-list sees a (unchanged) and b (changed); c vanished meanwhile.
        c.begin_list();
        assert_eq!(c.listed("a".into(), b"1".to_vec()), None);
        assert_eq!(c.listed("b".into(), b"22".to_vec()), Some(up("b", "22")));
        assert_eq!(c.end_list(), vec![KvEvent::Delete { key: "c".into() }, KvEvent::ListDone]);
        assert_eq!(c.delete("zz"), None);
        assert_eq!(c.drain(), vec![KvEvent::Delete { key: "a".into() }, KvEvent::Delete { key: "b".into() }]);
        assert!(c.is_empty());
    }

    #[test]
    fn decoding() {
        let svc = r#"{"cluster":"c1","namespace":"ns","name":"web","frontends":{},"backends":{},"labels":{},"selector":{},"includeExternal":true,"shared":true,"clusterID":7}"#;
        let k = "cilium/state/services/v1/c1/ns/web";
        assert!(matches!(decode("c1", Some(7), Resource::Services, &up(k, svc)), Some(RemoteEvent::ServiceUpsert(_))));
        assert!(matches!(decode("c1", Some(8), Resource::Services, &up(k, svc)), Some(RemoteEvent::Malformed { .. })));
        assert!(matches!(
            decode("c1", Some(7), Resource::Services, &up("cilium/state/services/v1/c1/ns/other", svc)),
            Some(RemoteEvent::Malformed { .. })
        ));
        assert_eq!(
            decode("c1", None, Resource::Services, &KvEvent::Delete { key: k.into() }),
            Some(RemoteEvent::ServiceDelete { namespace: "ns".into(), name: "web".into() })
        );
        let Some(RemoteEvent::Malformed { key, error }) = decode("c1", None, Resource::Services, &up(k, "{oops"))
        else {
            panic!()
        };
        assert_eq!(key, k);
        assert!(error.contains("invalid JSON"), "{error}");
        assert!(matches!(
            decode("c1", None, Resource::Identities, &up("cilium/state/identities/v1/id/5", "k8s:a=b;")),
            Some(RemoteEvent::IdentityUpsert { id: 5, .. })
        ));
        assert!(matches!(
            decode("c1", None, Resource::Identities, &up("cilium/state/identities/v1/id/5", "garbage")),
            Some(RemoteEvent::Malformed { .. })
        ));
        let ip = r#"{"IP":"10.0.0.1","HostIP":"","ID":5,"Key":0,"Metadata":""}"#;
        assert!(matches!(
            decode("c1", None, Resource::Ip, &up("cilium/state/ip/v1/default/10.0.0.1", ip)),
            Some(RemoteEvent::IpUpsert(_))
        ));
        assert!(matches!(
            decode("c1", None, Resource::Ip, &up("cilium/state/ip/v1/default/10.0.0.2", ip)),
            Some(RemoteEvent::Malformed { .. })
        ));
        assert!(matches!(
            decode("c1", None, Resource::Nodes, &up("cilium/state/nodes/v1/c1/n1", r#"{"Name":"n1","Cluster":"c1"}"#)),
            Some(RemoteEvent::NodeUpsert(_))
        ));
        assert!(matches!(
            decode("c1", None, Resource::Nodes, &up("cilium/state/nodes/v1/c2/n1", "{}")),
            Some(RemoteEvent::Malformed { .. })
        ));
        assert_eq!(decode("c1", None, Resource::Nodes, &KvEvent::ListDone), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_micros(37_500) && d[0] <= Duration::from_micros(62_500));
        assert!(d[7] <= Duration::from_millis(1250) && d[7] >= Duration::from_millis(750));
        b.reset();
        assert!(b.next_delay() <= Duration::from_micros(62_500));
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("a/"), b"a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
