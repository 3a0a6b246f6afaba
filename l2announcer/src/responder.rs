//! An ARP responder on one interface (AF_PACKET through pnet): answers requests for the IPv4
//! addresses this node currently owns, with the interface's own MAC, and sends gratuitous ARP
//! (request and reply forms) when it starts owning an address. It answers nothing else.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use pnet_base::MacAddr;
use pnet_datalink::{Channel, Config, NetworkInterface};

use crate::arp;

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
    owned: Arc<RwLock<BTreeSet<Ipv4Addr>>>,
    announce: mpsc::Sender<Ipv4Addr>,
    stop: Arc<AtomicBool>,
    replies: Arc<AtomicU64>,
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
        let owned: Arc<RwLock<BTreeSet<Ipv4Addr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(AtomicU64::new(0));
        let (announce, announcements) = mpsc::channel::<Ipv4Addr>();
        let (o, s, r, name) = (owned.clone(), stop.clone(), replies.clone(), iface.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("arp-{iface}"))
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    while let Ok(ip) = announcements.try_recv() {
                        for as_reply in [false, true] {
                            if let Some(Err(e)) = tx.send_to(&arp::gratuitous(ip, mac, as_reply), None) {
                                tracing::warn!(iface = %name, %ip, "gratuitous ARP failed: {e}");
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
                    let Some(req) = arp::parse_request(frame) else { continue };
                    // Our own gratuitous requests come back on the packet socket: skip them.
                    if req.sender_mac == mac {
                        continue;
                    }
                    let ours = o.read().unwrap_or_else(|e| e.into_inner()).contains(&req.target_ip);
                    if ours {
                        if let Some(Err(e)) = tx.send_to(&arp::reply(&req, mac), None) {
                            tracing::warn!(iface = %name, "ARP reply failed: {e}");
                        } else {
                            r.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
            .map_err(|source| ResponderError::Socket { iface: iface.to_string(), source })?;
        Ok(Responder { iface: iface.to_string(), mac, owned, announce, stop, replies, thread: Some(thread) })
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Replaces the set of owned addresses; newly owned ones are announced at once.
    pub fn set_owned(&self, ips: BTreeSet<Ipv4Addr>) {
        let mut owned = self.owned.write().unwrap_or_else(|e| e.into_inner());
        for ip in ips.difference(&owned) {
            let _ = self.announce.send(*ip);
        }
        *owned = ips;
    }

    pub fn owned(&self) -> BTreeSet<Ipv4Addr> {
        self.owned.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// ARP replies sent so far.
    pub fn replies_sent(&self) -> u64 {
        self.replies.load(Ordering::Relaxed)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
