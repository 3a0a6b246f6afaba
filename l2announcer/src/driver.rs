//! A thin tokio driver for [`Election`]: one task that feeds it heartbeats, lease and fence
//! results and time, and performs its actions. etcd calls run in spawned tasks and report
//! back through a channel, so a slow etcd never delays heartbeats or self-fencing.
//!
//! ```text
//!   HeartbeatTransport ──recv──▶ ┌──────────────┐ ──send──▶ HeartbeatTransport
//!   candidates (watch) ────────▶ │  run() loop  │ ──set_owned(ips)──▶ responders (sync)
//!   sleep_until(next_deadline) ─▶│  Election    │ ──spawn──▶ LeaseBackend (grant, keep-alive,
//!   completions (mpsc) ◀─────────└──────────────┘            fence, refute, key watch)
//! ```

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use crate::election::{Action, Candidate, Election, ElectionConfig, FenceOutcome, LeaseEvent, LeaseId, NodeId};
use crate::heartbeat::{Heartbeat, HeartbeatSocket};
use crate::lease::{LeaseBackend, NodeKeyEvent};

/// Where heartbeats go and come from (UDP in production, channels in tests).
pub trait HeartbeatTransport: Send + Sync {
    fn send(&self, hb: &Heartbeat) -> impl Future<Output = std::io::Result<()>> + Send;
    fn recv(&self) -> impl Future<Output = std::io::Result<Heartbeat>> + Send;
}

impl HeartbeatTransport for HeartbeatSocket {
    async fn send(&self, hb: &Heartbeat) -> std::io::Result<()> {
        HeartbeatSocket::send(self, hb).await
    }
    async fn recv(&self) -> std::io::Result<Heartbeat> {
        HeartbeatSocket::recv(self).await
    }
}

/// Where the election's decisions go: the responders.
pub trait OwnershipSink: Send {
    /// Answer for exactly these IPs from now on; must take effect before returning.
    fn set_owned(&mut self, ips: &BTreeSet<IpAddr>);
    /// Answer nothing at or after `until` (the lease's validity), whatever the owned set says
    /// (`Responder::set_deadline`).
    fn set_deadline(&mut self, until: Instant) {
        let _ = until;
    }
    /// This node acquired `ip`, `latency` after its view made it the owner.
    fn acquired(&mut self, ip: IpAddr, latency: std::time::Duration) {
        let _ = (ip, latency);
    }
    /// The election's lease: its id and whether it is provably valid right now (`None`: no
    /// lease). Called when either changes.
    fn lease(&mut self, lease: Option<(LeaseId, bool)>) {
        let _ = lease;
    }
}

impl<F: FnMut(&BTreeSet<IpAddr>) + Send> OwnershipSink for F {
    fn set_owned(&mut self, ips: &BTreeSet<IpAddr>) {
        self(ips)
    }
}

enum Completion {
    Lease(LeaseEvent, Option<mpsc::Receiver<NodeKeyEvent>>),
    KeepAlive(LeaseEvent),
    Fence(NodeId, FenceOutcome),
}

/// Runs the election until `shutdown` turns true (then withdraws everything and revokes the
/// lease) or the task is aborted (then the caller must clear the responders itself).
/// `sink.set_owned` is called synchronously whenever the owned set changes, *before* any later
/// heartbeat is sent: it must stop or start answering before it returns
/// (`Responder::set_owned` does); `sink.set_deadline` whenever the lease validity moves.
pub async fn run<B, T>(
    me: NodeId,
    cfg: ElectionConfig,
    backend: Arc<B>,
    transport: Arc<T>,
    mut candidates: watch::Receiver<Vec<Candidate>>,
    mut sink: impl OwnershipSink,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), crate::election::ConfigError>
where
    B: LeaseBackend + 'static,
    T: HeartbeatTransport + 'static,
{
    let seq_start =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let mut el = Election::new(me.clone(), cfg.clone(), Instant::now(), seq_start)?;
    let (done_tx, mut done) = mpsc::channel::<Completion>(64);
    let mut keys: Option<mpsc::Receiver<NodeKeyEvent>> = None;
    let mut published = Published::default();
    // At most one keep-alive in flight: when etcd stalls, skipped renewals simply let the
    // validity run out instead of piling up requests.
    let mut keepalive_busy = false;
    let first = candidates.borrow_and_update().clone();
    let mut actions = el.set_candidates(first, Instant::now());

    loop {
        // Perform the actions, in order.
        for a in actions.drain(..) {
            match a {
                Action::Announce(_) | Action::Withdraw(_) => {
                    publish(&mut el, &mut sink, &mut published);
                }
                Action::SendHeartbeat(hb) => {
                    // Owned-set changes earlier in this batch are already applied.
                    if let Err(e) = transport.send(&hb).await {
                        tracing::debug!(error = %e, "heartbeat send failed");
                    }
                }
                Action::AcquireLease => {
                    let (b, tx, me, ttl) = (backend.clone(), done_tx.clone(), me.clone(), cfg.lease_ttl);
                    tokio::spawn(async move {
                        let sent_at = Instant::now();
                        let ev = match b.grant(&me, ttl).await {
                            Ok(lease) => match b.watch_node(&me).await {
                                Ok(w) => Completion::Lease(LeaseEvent::Granted { lease, sent_at }, Some(w)),
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot watch own key; giving the lease back");
                                    let _ = b.revoke(lease).await;
                                    Completion::Lease(LeaseEvent::GrantFailed, None)
                                }
                            },
                            Err(e) => {
                                tracing::warn!(error = %e, "lease grant failed");
                                Completion::Lease(LeaseEvent::GrantFailed, None)
                            }
                        };
                        let _ = tx.send(ev).await;
                    });
                }
                Action::KeepAlive { .. } if keepalive_busy => {}
                Action::KeepAlive { lease } => {
                    keepalive_busy = true;
                    let (b, tx) = (backend.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let sent_at = Instant::now();
                        let ev = match b.keep_alive(lease).await {
                            Ok(true) => LeaseEvent::Renewed { lease, sent_at },
                            Ok(false) => LeaseEvent::Lost { lease },
                            Err(e) => {
                                tracing::debug!(error = %e, "keep-alive failed");
                                LeaseEvent::RenewFailed { lease }
                            }
                        };
                        let _ = tx.send(Completion::KeepAlive(ev)).await;
                    });
                }
                Action::Fence { node, lease } => {
                    let (b, tx, me, window) = (backend.clone(), done_tx.clone(), me.clone(), cfg.refute_window);
                    tokio::spawn(async move {
                        let out = b.fence(&me, &node, lease, window).await.unwrap_or_else(|e| {
                            tracing::warn!(%node, error = %e, "fence failed");
                            FenceOutcome::Failed
                        });
                        let _ = tx.send(Completion::Fence(node, out)).await;
                    });
                }
                Action::Refute { .. } => {} // handled where the request is seen (needs its key)
            }
        }
        publish(&mut el, &mut sink, &mut published);

        let deadline = tokio::time::Instant::from_std(el.next_deadline());
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    sink.set_owned(&BTreeSet::new());
                    if let Some(l) = el.lease() {
                        let _ = backend.revoke(l).await;
                    }
                    return Ok(());
                }
            }
            Some(c) = done.recv() => {
                let now = Instant::now();
                actions = match c {
                    Completion::Lease(ev, w) => {
                        if w.is_some() {
                            keys = w;
                        }
                        el.on_lease_state(ev, now)
                    }
                    Completion::KeepAlive(ev) => {
                        keepalive_busy = false;
                        el.on_lease_state(ev, now)
                    }
                    Completion::Fence(node, out) => el.on_fence_result(&node, out, now),
                };
            }
            ev = async { keys.as_mut().expect("guarded").recv().await }, if keys.is_some() => {
                let now = Instant::now();
                actions = match (ev, el.lease()) {
                    (Some(NodeKeyEvent::KeyDeleted), Some(lease)) => el.on_lease_state(LeaseEvent::Lost { lease }, now),
                    (Some(NodeKeyEvent::FenceRequested { by, lease, revision }), _) => {
                        let a = el.on_fence_request(lease, now);
                        if a.iter().any(|a| matches!(a, Action::Refute { .. })) {
                            spawn_refute(backend.clone(), me.clone(), by, revision, lease);
                        }
                        a
                    }
                    (None, _) => {
                        keys = None; // watch ended; keep-alives still bound validity
                        Vec::new()
                    }
                    _ => Vec::new(),
                };
            }
            r = transport.recv() => {
                actions = match r {
                    Ok(hb) => el.on_heartbeat(&hb, Instant::now()),
                    Err(e) => {
                        tracing::debug!(error = %e, "heartbeat receive failed");
                        Vec::new()
                    }
                };
            }
            Ok(()) = candidates.changed() => {
                let c = candidates.borrow_and_update().clone();
                actions = el.set_candidates(c, Instant::now());
            }
            _ = tokio::time::sleep_until(deadline) => {
                actions = el.on_tick(Instant::now());
            }
        }
    }
}

/// What the sink was last told.
#[derive(Default)]
struct Published {
    owned: BTreeSet<IpAddr>,
    deadline: Option<Instant>,
    /// `None` until the first call.
    lease: Option<Option<(LeaseId, bool)>>,
}

fn publish(el: &mut Election, sink: &mut impl OwnershipSink, p: &mut Published) {
    for (ip, latency) in el.take_acquisitions() {
        sink.acquired(ip, latency);
    }
    let now = Instant::now();
    let lease = el.lease().map(|l| (l, el.valid_until().is_some_and(|u| u > now)));
    if p.lease != Some(lease) {
        p.lease = Some(lease);
        sink.lease(lease);
    }
    // Deadline first when it shrinks, owned set first when it grows: never answer unfenced.
    let until = el.valid_until().unwrap_or(now);
    if p.deadline != Some(until) && p.deadline.is_some_and(|d| until < d) {
        p.deadline = Some(until);
        sink.set_deadline(until);
    }
    if el.owned_ips() != &p.owned {
        p.owned = el.owned_ips().clone();
        sink.set_owned(&p.owned);
    }
    if p.deadline != Some(until) {
        p.deadline = Some(until);
        sink.set_deadline(until);
    }
}

fn spawn_refute<B: LeaseBackend + 'static>(b: Arc<B>, me: NodeId, by: NodeId, revision: i64, lease: LeaseId) {
    tokio::spawn(async move {
        match b.refute(&me, &by, revision).await {
            Ok(true) => tracing::info!(%by, %lease, "refuted a fence request"),
            Ok(false) => tracing::warn!(%by, %lease, "fence request already decided"),
            Err(e) => tracing::warn!(%by, error = %e, "refute failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::broadcast;

    use super::*;
    use crate::lease::MemoryBackend;

    /// A LAN made of a broadcast channel; `cut` silences a node both ways.
    struct ChanLan {
        me: NodeId,
        tx: broadcast::Sender<Heartbeat>,
        rx: tokio::sync::Mutex<broadcast::Receiver<Heartbeat>>,
        cut: Arc<Mutex<BTreeSet<NodeId>>>,
    }

    impl HeartbeatTransport for ChanLan {
        async fn send(&self, hb: &Heartbeat) -> std::io::Result<()> {
            if !self.cut.lock().unwrap().contains(&self.me) {
                let _ = self.tx.send(hb.clone());
            }
            Ok(())
        }
        async fn recv(&self) -> std::io::Result<Heartbeat> {
            let mut rx = self.rx.lock().await;
            loop {
                match rx.recv().await {
                    Ok(hb) if hb.node != self.me && !self.cut.lock().unwrap().contains(&self.me) => return Ok(hb),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(std::io::ErrorKind::BrokenPipe.into()),
                }
            }
        }
    }

    type Owned = Arc<Mutex<Vec<BTreeSet<IpAddr>>>>;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_nodes_with_memory_backend() {
        // Relaxed timers: this runs in real time on a shared, loaded machine.
        let cfg = ElectionConfig {
            heartbeat_interval: Duration::from_millis(20),
            missed_heartbeats: 5,
            keepalive_interval: Duration::from_millis(15),
            horizon: Duration::from_millis(80),
            clock_margin: Duration::from_millis(5),
            refute_window: Duration::from_millis(20),
            ..ElectionConfig::default()
        };
        let backend = Arc::new(MemoryBackend::new());
        let (tx, _) = broadcast::channel(1024);
        let cut = Arc::new(Mutex::new(BTreeSet::new()));
        let ips: BTreeSet<IpAddr> = (1..=12u8).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        let names: Vec<NodeId> = (0..3).map(|i| NodeId::new(format!("n{i}"))).collect();
        let cands: Vec<Candidate> =
            names.iter().map(|n| Candidate { node: n.clone(), eligible_ips: ips.clone() }).collect();
        let (_cand_tx, cand_rx) = watch::channel(cands);
        let owned: Owned = Arc::new(Mutex::new(vec![BTreeSet::new(); 3]));
        let mut stops = Vec::new();
        let mut tasks = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let lan = Arc::new(ChanLan {
                me: n.clone(),
                tx: tx.clone(),
                rx: tokio::sync::Mutex::new(tx.subscribe()),
                cut: cut.clone(),
            });
            let (stop_tx, stop_rx) = watch::channel(false);
            stops.push(stop_tx);
            let o = owned.clone();
            tasks.push(tokio::spawn(run(
                n.clone(),
                cfg.clone(),
                backend.clone(),
                lan,
                cand_rx.clone(),
                move |s: &BTreeSet<IpAddr>| o.lock().unwrap()[i] = s.clone(),
                stop_rx,
            )));
        }
        let all_once = |o: &Owned| {
            let o = o.lock().unwrap();
            ips.iter().all(|ip| o.iter().filter(|s| s.contains(ip)).count() == 1)
        };
        let no_double = |o: &Owned| {
            let o = o.lock().unwrap();
            ips.iter().all(|ip| o.iter().filter(|s| s.contains(ip)).count() <= 1)
        };
        let wait = |cond: &dyn Fn(&Owned) -> bool, max_ms: u64| {
            let owned = owned.clone();
            {
                let start = std::time::Instant::now();
                loop {
                    assert!(no_double(&owned), "two nodes answer for one IP: {:?}", owned.lock().unwrap());
                    if cond(&owned) {
                        break Some(start.elapsed());
                    }
                    if start.elapsed() > Duration::from_millis(max_ms) {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        let settled = tokio::task::block_in_place(|| wait(&all_once, 3000));
        assert!(settled.is_some(), "never settled: {:?}", owned.lock().unwrap());

        // Stop n0 gracefully: it withdraws and revokes; the others take its IPs.
        stops[0].send(true).unwrap();
        let took = tokio::task::block_in_place(|| {
            wait(
                &|o: &Owned| {
                    o.lock().unwrap()[0].is_empty()
                        && ips.iter().all(|ip| o.lock().unwrap()[1..].iter().any(|s| s.contains(ip)))
                },
                3000,
            )
        });
        assert!(took.is_some(), "no takeover: {:?}", owned.lock().unwrap());
        tasks.remove(0).await.unwrap().unwrap();

        // Cut n1 off the LAN (it keeps etcd): it refutes, keeps its IPs, nobody doubles.
        let before = owned.lock().unwrap()[1].clone();
        cut.lock().unwrap().insert(names[1].clone());
        tokio::task::block_in_place(|| wait(&|_: &Owned| false, 600));
        assert_eq!(owned.lock().unwrap()[1], before);
        cut.lock().unwrap().clear();
        for s in &stops[1..] {
            s.send(true).unwrap();
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(backend.node_lease(&names[1]).is_none() && backend.node_lease(&names[2]).is_none());
    }
}
