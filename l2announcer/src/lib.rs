//! Halyard's L2 announcer (work in progress, issue 6): answers ARP for the LoadBalancer IPs this
//! node owns and announces them with gratuitous ARP. Today: [`arp`] (pure frame logic) and
//! [`responder`] (an AF_PACKET responder per interface). Election between nodes, NDP and the
//! etcd lease backend follow.

pub mod arp;
pub mod ndp;
pub mod responder;
