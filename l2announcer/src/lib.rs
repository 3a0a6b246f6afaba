//! Halyard's L2 announcer (issue 6): answers ARP/NDP for the LoadBalancer IPs this node owns and
//! announces them with gratuitous ARP / unsolicited NA.
//!
//! * [`arp`], [`ndp`]: pure frame logic. [`responder`]: an AF_PACKET responder per interface.
//! * [`election`]: who owns which IP across nodes — a sans-IO state machine with explicit time
//!   (rendezvous ranking of live eligible nodes, LAN heartbeats for failure detection, etcd
//!   leases as the fencing authority, self-fencing at a short validity horizon).
//! * [`heartbeat`]: the LAN heartbeat wire format (+ a tokio UDP socket).
//! * [`lease`]: [`lease::LeaseBackend`] with an etcd implementation (one lease and one key
//!   `halyard/l2/nodes/<node>` per node; refutable fences under `halyard/l2/fence/<node>/<by>`),
//!   a Kubernetes `coordination.k8s.io/v1` Lease one ([`lease::kube`]; much slower: every
//!   keep-alive is an API-server write) and an in-memory one.
//! * [`driver`]: a thin tokio task that runs an [`election::Election`] against a backend and a
//!   heartbeat transport.
//!
//! # Timing (defaults, [`election::ElectionConfig`])
//! | | |
//! |---|---|
//! | heartbeat | every 10 ms, and at once when the view changes; peer dead after 3 missed (30 ms) |
//! | keep-alive | every 8 ms on one gRPC stream per node (no etcd write) |
//! | horizon | a node answers until `send time of last acked keep-alive + 25 ms − 2 ms` |
//! | fence | put request, 10 ms refute window, txn, revoke (~16 ms measured on a local etcd) |
//! | successor | announces `25 + 2 ms` after its fence is confirmed |
//!
//! Failover after a node dies ≈ 30 + 16 + 27 ≈ 73 ms (simulated worst case over 20 runs with
//! 0–2 ms LAN/etcd delays: 72 ms; 74 ms with 0–4 ms). etcd's lease TTL (2 s) only cleans up
//! after crashed nodes.
//!
//! # How the agent should drive it (not wired yet; `halyard-agent`'s `l2.rs` still uses the
//! single-node behaviour)
//! 1. Connect once: [`lease::EtcdBackend::connect`] with the agent's etcd endpoints, root
//!    [`lease::DEFAULT_ROOT`] and a request timeout of ~1 s, then
//!    `.with_keepalive_timeout(horizon)` (a keep-alive slower than that is useless anyway).
//! 2. Open the heartbeat socket: [`heartbeat::HeartbeatSocket::bind`] on the announcing LAN
//!    (a multicast group such as 239.255.72.76:7946, or the subnet broadcast address), one per
//!    L2 segment the node announces on. Heartbeats are not authenticated: a forged one (a
//!    copied digest) can make two nodes answer, so the LAN must be trusted or the port
//!    firewalled to cluster nodes (an HMAC field keyed from a cluster secret is future work).
//! 3. Compute candidates from the snapshot on every change: one
//!    [`election::Candidate`] per node that runs the announcer (all Kubernetes nodes; an empty
//!    `eligible_ips` where a node may announce nothing), with the IPs that node may announce:
//!    the policy's node selector matches, the node has an announcing interface with an
//!    address, and for `externalTrafficPolicy: Local` it has a ready local endpoint. Every
//!    agent must compute the same sets from the same model (they do: it is the shared
//!    Kubernetes state); while models disagree, acquisitions wait (the heartbeat digests
//!    differ) but current owners keep answering. Publish them on a `watch` channel.
//! 4. Spawn [`driver::run`] with the node name, an [`election::ElectionConfig`] (same on all
//!    nodes), the backend, the socket, the candidates channel, an [`driver::OwnershipSink`]
//!    and the shutdown channel. The sink's `set_owned(ips)` must, synchronously, narrow each
//!    interface's responder to `desired[iface] ∩ ips` (`Responder::set_owned`; newly owned IPs
//!    get the gratuitous ARP / NA burst), and its `set_deadline(t)` must call
//!    `Responder::set_deadline(Some(t))` on every responder, so a stalled agent runtime cannot
//!    keep the responder threads answering past the lease's validity. In `l2.rs` that means:
//!    keep `desired()` for *where* an IP is answered, intersect with the election's owned set
//!    for *whether*, and share the responders map with the sink (a `Mutex`); responders
//!    started later must get the current owned set and deadline before answering.
//! 5. On shutdown, signal the driver (it withdraws and revokes its lease, so peers take over
//!    after one detection period instead of waiting for the TTL) before stopping responders.
//! 6. Status: `Election::owned_ips`, `live_peers`, `lease` and `valid_until` are what
//!    `halyard l2 announcements` should show next to the rows.
//!
//! Keep-alive round trips above ~`horizon − keepalive_interval` make the node flap (it stops
//! answering, then resumes); raise `horizon` (and so failover time) on slow etcd links.

pub mod arp;
pub mod driver;
pub mod election;
pub mod heartbeat;
pub mod lease;
pub mod ndp;
pub mod responder;
