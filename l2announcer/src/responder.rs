//! An ARP/NDP responder on one interface (AF_PACKET through pnet): answers ARP requests (IPv4)
//! and neighbor solicitations (IPv6) for the addresses this node currently owns, with the
//! interface's own MAC, and announces an address when it starts owning it (gratuitous ARP in
//! request and reply forms; an unsolicited NA with Override). It answers nothing else.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use pnet_base::MacAddr;
use pnet_datalink::{Channel, Config, NetworkInterface};

use crate::{arp, ndp};

/// Announcements after the first one, and the interval between them.
const REPEATS: u32 = 4;
const REPEAT_EVERY: Duration = Duration::from_millis(1100);

#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error("interface {0} has no MAC address")]
    NoMac(String),
    #[error("cannot open a packet socket on {iface}: {source} (needs CAP_NET_RAW)")]
    Socket { iface: String, source: std::io::Error },
}

/// A running responder; stops (and joins its thread) on drop.
#[derive(Debug)]
pub struct Responder {
    iface: String,
    mac: MacAddr,
    owned: Arc<RwLock<BTreeSet<IpAddr>>>,
    deadline: Arc<RwLock<Option<std::time::Instant>>>,
    announce: mpsc::Sender<IpAddr>,
    stop: Arc<AtomicBool>,
    replies: Arc<AtomicU64>,
    announcements_sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Network interfaces that can carry ARP (up, not loopback, with a MAC).
pub fn candidate_interfaces() -> Vec<String> {
    pnet_datalink::interfaces()
        .into_iter()
        .filter(|i| !i.is_loopback() && i.mac.is_some_and(|m| m != MacAddr::zero()))
        .map(|i| i.name)
        .collect()
}

impl Responder {
    pub fn start(iface: &str) -> Result<Responder, ResponderError> {
        let ni: NetworkInterface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == iface)
            .ok_or_else(|| ResponderError::NoInterface(iface.to_string()))?;
        let mac = ni.mac.filter(|m| *m != MacAddr::zero()).ok_or_else(|| ResponderError::NoMac(iface.to_string()))?;
        let cfg = Config { read_timeout: Some(Duration::from_millis(50)), ..Config::default() };
        let (mut tx, mut rx) = match pnet_datalink::channel(&ni, cfg) {
            Ok(Channel::Ethernet(tx, rx)) => (tx, rx),
            Ok(_) => {
                return Err(ResponderError::Socket {
                    iface: iface.to_string(),
                    source: std::io::Error::other("not an Ethernet channel"),
                });
            }
            Err(source) => return Err(ResponderError::Socket { iface: iface.to_string(), source }),
        };
        let owned: Arc<RwLock<BTreeSet<IpAddr>>> = Arc::default();
        let deadline: Arc<RwLock<Option<std::time::Instant>>> = Arc::default();
        let dl = deadline.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(AtomicU64::new(0));
        let announcements_sent = Arc::new(AtomicU64::new(0));
        let (announce, announcements) = mpsc::channel::<IpAddr>();
        let (o, s, r, a, name) =
            (owned.clone(), stop.clone(), replies.clone(), announcements_sent.clone(), iface.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("arp-{iface}"))
            .spawn(move || {
                // Announcements are repeated so that switches and clients that missed the first
                // one still move (MetalLB: at once, then every 1.1 s for 5 s).
                let mut schedule: Vec<(std::time::Instant, IpAddr)> = Vec::new();
                while !s.load(Ordering::Relaxed) {
                    let now = std::time::Instant::now();
                    while let Ok(ip) = announcements.try_recv() {
                        schedule.retain(|(_, x)| *x != ip);
                        for k in 0..=REPEATS {
                            schedule.push((now + REPEAT_EVERY * k, ip));
                        }
                    }
                    if !schedule.is_empty() {
                        // Drop repeats for addresses no longer owned.
                        let owned_now = o.read().unwrap_or_else(|e| e.into_inner());
                        schedule.retain(|(_, ip)| owned_now.contains(ip));
                    }
                    let mut due: Vec<IpAddr> = schedule.iter().filter(|(t, _)| *t <= now).map(|(_, ip)| *ip).collect();
                    schedule.retain(|(t, _)| *t > now);
                    if !gate_open(*dl.read().unwrap_or_else(|e| e.into_inner()), std::time::Instant::now()) {
                        due.clear();
                    }
                    for ip in due {
                        let frames: Vec<Vec<u8>> = match ip {
                            IpAddr::V4(v4) => {
                                [false, true].iter().map(|r| arp::gratuitous(v4, mac, *r).to_vec()).collect()
                            }
                            IpAddr::V6(v6) => vec![ndp::unsolicited(v6, mac.octets())],
                        };
                        for f in frames {
                            if let Some(Err(e)) = tx.send_to(&f, None) {
                                tracing::warn!(iface = %name, %ip, "announcement failed: {e}");
                            } else {
                                a.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    let frame = match rx.next() {
                        Ok(f) => f,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                        Err(e) => {
                            tracing::warn!(iface = %name, "ARP responder read failed: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                    // Our own announcements come back on the packet socket: skip them.
                    let answer = if let Some(req) = arp::parse_request(frame) {
                        let ours = o.read().unwrap_or_else(|e| e.into_inner()).contains(&IpAddr::V4(req.target_ip));
                        (ours && req.sender_mac != mac).then(|| arp::reply(&req, mac).to_vec())
                    } else if let Some(ns) = ndp::parse_solicitation(frame) {
                        let ours = o.read().unwrap_or_else(|e| e.into_inner()).contains(&IpAddr::V6(ns.target));
                        (ours && ns.src_mac != mac.octets()).then(|| ndp::advertisement(&ns, mac.octets()))
                    } else {
                        None
                    };
                    // The election's self-fence, enforced here too so that a stalled control
                    // loop cannot keep this thread answering past the lease's validity.
                    let answer = answer.filter(|_| {
                        gate_open(*dl.read().unwrap_or_else(|e| e.into_inner()), std::time::Instant::now())
                    });
                    if let Some(frame) = answer {
                        if let Some(Err(e)) = tx.send_to(&frame, None) {
                            tracing::warn!(iface = %name, "reply failed: {e}");
                        } else {
                            r.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
            .map_err(|source| ResponderError::Socket { iface: iface.to_string(), source })?;
        Ok(Responder {
            iface: iface.to_string(),
            mac,
            owned,
            deadline,
            announce,
            stop,
            replies,
            announcements_sent,
            thread: Some(thread),
        })
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Replaces the set of owned addresses; newly owned ones are announced at once.
    pub fn set_owned(&self, ips: BTreeSet<IpAddr>) {
        let mut owned = self.owned.write().unwrap_or_else(|e| e.into_inner());
        for ip in ips.difference(&owned) {
            let _ = self.announce.send(*ip);
        }
        *owned = ips;
    }

    /// Answers and announcements stop at `until` (the election's lease validity), whatever the
    /// owned set says; `None` (the default, single-node mode) means no deadline.
    pub fn set_deadline(&self, until: Option<std::time::Instant>) {
        *self.deadline.write().unwrap_or_else(|e| e.into_inner()) = until;
    }

    pub fn owned(&self) -> BTreeSet<IpAddr> {
        self.owned.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Gratuitous ARP / unsolicited NA frames sent so far.
    pub fn announcements_sent(&self) -> u64 {
        self.announcements_sent.load(Ordering::Relaxed)
    }

    /// ARP replies and neighbor advertisements sent in answer so far.
    pub fn replies_sent(&self) -> u64 {
        self.replies.load(Ordering::Relaxed)
    }
}

/// Whether a responder with this deadline may answer at `now`.
pub fn gate_open(deadline: Option<std::time::Instant>, now: std::time::Instant) -> bool {
    deadline.is_none_or(|d| now < d)
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_gate() {
        let now = std::time::Instant::now();
        assert!(gate_open(None, now));
        assert!(gate_open(Some(now + Duration::from_millis(1)), now));
        assert!(!gate_open(Some(now), now));
    }
}
