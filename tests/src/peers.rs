//! Real third-party routing daemons run as peers inside test network namespaces.
//!
//! Each peer kind has a config builder that renders a config file from the common
//! [`BgpNeighbor`] description, and a handle that starts the daemon in the foreground with
//! [`Netns::spawn`] (so the PID is the daemon's and it is killed on drop), talks to it over a
//! unix control socket in the peer's own temporary directory (no `setns` needed), and exposes
//! its log for failure messages. Implemented: BIRD 2 ([`Bird`], [`BirdConfig`]), FRR
//! ([`Frr`], [`FrrConfig`]: zebra + bgpd), GoBGP ([`Gobgp`], [`GobgpConfig`]) and ExaBGP
//! ([`Exabgp`], [`ExabgpConfig`]: sends hand-crafted UPDATEs). New kinds follow the same shape
//! (`XxxConfig::render`, `Xxx::start(ns, &config)`, a CLI wrapper, and an impl of [`Peer`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::netns::{ChildGuard, Netns, find_program, poll_until};

/// What every peer daemon handle offers, whatever the implementation.
pub trait Peer {
    /// Short name of the implementation (`"bird"`, …), for messages.
    fn kind(&self) -> &'static str;
    /// PID of the daemon (killed by PID when the handle is dropped).
    fn pid(&self) -> u32;
    /// The daemon's log so far (stdout and stderr).
    fn log(&self) -> String;
    /// The peer's private temporary directory (config, control socket, log).
    fn dir(&self) -> &Path;
}

/// One BGP session as seen from the peer daemon: the neighbor is usually the Halyard speaker
/// under test. Shared by all peer config builders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpNeighbor {
    /// Protocol/peer name in the daemon's config; `None` → `peerN` (N = position, from 1).
    pub name: Option<String>,
    /// The neighbor's address (IPv4 or IPv6).
    pub address: String,
    /// The neighbor's TCP port; `None` → 179.
    pub port: Option<u16>,
    /// The peer's own source address for the session; `None` → chosen by the kernel.
    pub local_address: Option<String>,
    /// The peer daemon's own AS.
    pub local_as: u32,
    /// The neighbor's AS.
    pub peer_as: u32,
    /// Only accept connections, never connect out.
    pub passive: bool,
    /// Proposed hold time in seconds; `None` → the daemon's default.
    pub hold_time: Option<u16>,
    /// `Some(ttl)` → eBGP multihop with that TTL (`Some(0)` → the daemon's default multihop TTL).
    pub multihop: Option<u8>,
    /// TCP-MD5 password (the kernel has `TCP_MD5SIG`).
    pub password: Option<String>,
    /// Track the session with BFD (BIRD only: `bfd on;`, which also needs a `protocol bfd`,
    /// see [`BirdConfig::bfd`]). BIRD takes the BGP session down when BFD goes down.
    pub bfd: bool,
    /// GTSM (RFC 5082): BIRD `ttl security on;` (expecting the neighbor [`Self::multihop`] hops
    /// away, 1 when unset), FRR `ttl-security hops N` (instead of `ebgp-multihop`).
    pub ttl_security: bool,
    /// Graceful restart (RFC 4724) as the receiving (helper) speaker: keep the neighbor's routes,
    /// marked stale, when its session drops without a NOTIFICATION, until it comes back and
    /// sends End-of-RIB. GoBGP: `graceful-restart` plus `mp-graceful-restart` per family; FRR:
    /// `neighbor X graceful-restart-helper`. BIRD is a helper by default (`graceful restart
    /// aware`), so it renders nothing.
    pub graceful_restart: bool,
}

impl BgpNeighbor {
    pub fn new(address: &str, local_as: u32, peer_as: u32) -> BgpNeighbor {
        BgpNeighbor {
            name: None,
            address: address.to_string(),
            port: None,
            local_address: None,
            local_as,
            peer_as,
            passive: false,
            hold_time: None,
            multihop: None,
            password: None,
            bfd: false,
            ttl_security: false,
            graceful_restart: false,
        }
    }

    /// Graceful-restart helper on this session (see [`BgpNeighbor::graceful_restart`]).
    pub fn graceful_restart(mut self, on: bool) -> Self {
        self.graceful_restart = on;
        self
    }

    /// GTSM on this session (see [`BgpNeighbor::ttl_security`]).
    pub fn ttl_security(mut self, on: bool) -> Self {
        self.ttl_security = on;
        self
    }

    /// BFD on this session (BIRD only).
    pub fn bfd(mut self, on: bool) -> Self {
        self.bfd = on;
        self
    }

    /// Name of the protocol (letters, digits and `_`, starting with a letter).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn local_address(mut self, address: &str) -> Self {
        self.local_address = Some(address.to_string());
        self
    }

    pub fn passive(mut self, passive: bool) -> Self {
        self.passive = passive;
        self
    }

    pub fn hold_time(mut self, seconds: u16) -> Self {
        self.hold_time = Some(seconds);
        self
    }

    pub fn multihop(mut self, ttl: u8) -> Self {
        self.multihop = Some(ttl);
        self
    }

    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_string());
        self
    }
}

/// A fresh private directory for one peer daemon (`/tmp/halyard-KIND-XXXX`).
fn peer_dir(kind: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("halyard-{kind}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory for {kind}: {e}"))
}

/// Full path of a peer's program, or a panic naming the Debian package (tests check first with
/// [`crate::netns::require_program`]).
fn program(name: &str, package: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| panic!("`{name}` is not installed (Debian package {package})"))
}

// ---------------------------------------------------------------------------------------------
// BIRD 2
// ---------------------------------------------------------------------------------------------

/// Builder for a BIRD 2 config: `router id`, `protocol device`, and one `protocol bgp` per
/// neighbor with IPv4 and IPv6 channels that import everything into `master4`/`master6` and
/// export nothing — so a test reads what the neighbor sent with [`Bird::routes`]. No kernel
/// protocol: nothing is installed in the namespace's FIB. Timers are short (connect delay 1 s,
/// connect retry 1 s, error wait 1–5 s), as BIRD's 5 s default connect delay slows tests down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdConfig {
    pub router_id: String,
    pub neighbors: Vec<BgpNeighbor>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Raw config text appended at the end (static protocols, filters, …).
    pub extra: Vec<String>,
}

impl BirdConfig {
    /// A config with this router id (an IPv4 address), both channels on, and no neighbors.
    pub fn new(router_id: &str) -> BirdConfig {
        BirdConfig {
            router_id: router_id.to_string(),
            neighbors: Vec::new(),
            ipv4: true,
            ipv6: true,
            extra: Vec::new(),
        }
    }

    pub fn neighbor(mut self, neighbor: BgpNeighbor) -> Self {
        self.neighbors.push(neighbor);
        self
    }

    /// Which address families each BGP protocol carries (both by default).
    pub fn channels(mut self, ipv4: bool, ipv6: bool) -> Self {
        self.ipv4 = ipv4;
        self.ipv6 = ipv6;
        self
    }

    /// Appends raw BIRD config text.
    pub fn extra(mut self, text: &str) -> Self {
        self.extra.push(text.to_string());
        self
    }

    /// Adds `protocol bfd` on every interface with these timers (milliseconds), for neighbors
    /// with [`BgpNeighbor::bfd`].
    pub fn bfd(self, min_rx_ms: u32, min_tx_ms: u32, multiplier: u8) -> Self {
        self.extra(&format!(
            "protocol bfd {{\n  interface \"*\" {{\n    min rx interval {min_rx_ms} ms;\n    min tx interval {min_tx_ms} ms;\n    multiplier {multiplier};\n  }};\n}}"
        ))
    }

    /// The BIRD protocol name of the `index`-th neighbor (0-based).
    pub fn protocol_name(&self, index: usize) -> String {
        self.neighbors[index].name.clone().unwrap_or_else(|| format!("peer{}", index + 1))
    }

    /// The config file text.
    pub fn render(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "log stderr all;");
        let _ = writeln!(c, "router id {};", self.router_id);
        // Unambiguous `Since` column in `show protocols` (see `parse_protocols`).
        let _ = writeln!(c, "timeformat protocol iso long;");
        let _ = writeln!(c, "protocol device {{ }}");
        for (i, n) in self.neighbors.iter().enumerate() {
            let _ = writeln!(c, "protocol bgp {} {{", self.protocol_name(i));
            let _ = writeln!(c, "  debug {{ states, events }};");
            match &n.local_address {
                Some(addr) => _ = writeln!(c, "  local {addr} as {};", n.local_as),
                None => _ = writeln!(c, "  local as {};", n.local_as),
            }
            match n.port {
                Some(port) => _ = writeln!(c, "  neighbor {} port {port} as {};", n.address, n.peer_as),
                None => _ = writeln!(c, "  neighbor {} as {};", n.address, n.peer_as),
            }
            if n.passive {
                let _ = writeln!(c, "  passive on;");
            }
            if let Some(hold) = n.hold_time {
                let _ = writeln!(c, "  hold time {hold};");
            }
            match n.multihop {
                Some(0) => _ = writeln!(c, "  multihop;"),
                Some(ttl) => _ = writeln!(c, "  multihop {ttl};"),
                None => {}
            }
            if let Some(pw) = &n.password {
                // BIRD strings have no escapes: a `"` or newline cannot be written.
                assert!(!pw.contains(['"', '\n']), "BIRD cannot take a password containing '\"' or a newline");
                let _ = writeln!(c, "  password \"{pw}\";");
            }
            if n.bfd {
                let _ = writeln!(c, "  bfd on;");
            }
            if n.ttl_security {
                let _ = writeln!(c, "  ttl security on;");
            }
            let _ = writeln!(c, "  connect delay time 1;");
            let _ = writeln!(c, "  connect retry time 1;");
            let _ = writeln!(c, "  error wait time 1, 5;");
            if self.ipv4 {
                let _ = writeln!(c, "  ipv4 {{ import all; export none; }};");
            }
            if self.ipv6 {
                let _ = writeln!(c, "  ipv6 {{ import all; export none; }};");
            }
            let _ = writeln!(c, "}}");
        }
        for text in &self.extra {
            let _ = writeln!(c, "{text}");
        }
        c
    }
}

/// One row of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdProtocol {
    pub name: String,
    /// `BGP`, `Device`, …
    pub proto: String,
    pub table: String,
    /// BIRD's generic state: `up`, `start`, `down`, …
    pub state: String,
    /// The rest of the line; for BGP it starts with the session state (`Active`, `Connect`,
    /// `Established`, …).
    pub info: String,
}

/// Parses `show protocols` output (after the banner): columns Name, Proto, Table, State, Since
/// (one or two date/time tokens), Info.
pub fn parse_protocols(text: &str) -> Vec<BirdProtocol> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Name ") && !l.starts_with("BIRD "))
        .filter_map(|l| {
            let mut t = l.split_whitespace();
            let (name, proto, table, state) = (t.next()?, t.next()?, t.next()?, t.next()?);
            let rest: Vec<&str> = t.collect();
            let since = rest.iter().take_while(|w| w.chars().all(|c| c.is_ascii_digit() || ":-.".contains(c))).count();
            Some(BirdProtocol {
                name: name.to_string(),
                proto: proto.to_string(),
                table: table.to_string(),
                state: state.to_string(),
                info: rest[since..].join(" "),
            })
        })
        .collect()
}

/// BIRD 2 running in a namespace: `bird -f -c CONF -s SOCK` in the foreground, controlled with
/// `birdc -s SOCK` from the root namespace. Killed by PID on drop; its directory is removed.
#[derive(Debug)]
pub struct Bird {
    child: ChildGuard,
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

impl Bird {
    /// Renders `config`, then as [`Bird::start_raw`].
    pub fn start(ns: &Netns, config: &BirdConfig) -> Bird {
        Self::start_raw(ns, &config.render())
    }

    /// Writes `config` to the peer directory, checks it with `bird -p`, starts BIRD in `ns` and
    /// waits (up to 10 s) until `birdc show status` answers. Panics with the log otherwise.
    pub fn start_raw(ns: &Netns, config: &str) -> Bird {
        let bird = program("bird", "bird2");
        let dir = peer_dir("bird");
        let conf = dir.path().join("bird.conf");
        let socket = dir.path().join("bird.ctl");
        let log = dir.path().join("bird.log");
        std::fs::write(&conf, config).expect("write bird.conf");
        let parse = Command::new(&bird).arg("-p").arg("-c").arg(&conf).stdin(Stdio::null()).output();
        let parse = parse.unwrap_or_else(|e| panic!("cannot run {}: {e}", bird.display()));
        assert!(
            parse.status.success(),
            "bird rejects the config: {}{}\n--- config ---\n{config}",
            String::from_utf8_lossy(&parse.stderr),
            String::from_utf8_lossy(&parse.stdout)
        );
        let child = ns.spawn(
            [bird.as_os_str(), "-f".as_ref(), "-c".as_ref(), conf.as_os_str(), "-s".as_ref(), socket.as_os_str()],
            &log,
        );
        let mut b = Bird { child, dir, config: conf, socket };
        let ready = poll_until(Duration::from_secs(10), || {
            if let Some(status) = b.child.try_wait() {
                panic!("bird exited early ({status}); log:\n{}", b.child.log());
            }
            b.try_birdc("show status").ok().filter(|s| s.contains("Daemon is up"))
        });
        if ready.is_none() {
            panic!("bird did not answer `show status` within 10 s; log:\n{}", b.child.log());
        }
        b
    }

    /// Runs one `birdc` command; `Err` with birdc's output when it fails (no socket, syntax…).
    /// The `BIRD x.y.z ready.` banner is removed.
    pub fn try_birdc(&self, cmd: &str) -> Result<String, String> {
        let birdc = program("birdc", "bird2");
        let out = Command::new(birdc)
            .arg("-s")
            .arg(&self.socket)
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run birdc: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text = match stdout.split_once('\n') {
            Some((first, rest)) if first.starts_with("BIRD ") && first.ends_with("ready.") => rest.to_string(),
            _ => stdout.into_owned(),
        };
        if out.status.success() { Ok(text) } else { Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr))) }
    }

    /// Runs one `birdc` command and returns its output; panics (with BIRD's log) on failure.
    pub fn birdc(&self, cmd: &str) -> String {
        self.try_birdc(cmd).unwrap_or_else(|e| panic!("birdc {cmd:?} failed: {e}\nbird log:\n{}", self.log()))
    }

    /// `show protocols`, parsed.
    pub fn protocols(&self) -> Vec<BirdProtocol> {
        parse_protocols(&self.birdc("show protocols"))
    }

    /// The BGP session state of protocol `name` (`Idle`, `Connect`, `Active`, `OpenSent`,
    /// `OpenConfirm`, `Established`, …), from `show protocols all NAME`.
    pub fn bgp_state(&self, name: &str) -> Option<String> {
        let text = self.try_birdc(&format!("show protocols all {name}")).ok()?;
        let line = text.lines().find_map(|l| l.trim().strip_prefix("BGP state:"))?;
        Some(line.trim().to_string())
    }

    /// Waits until protocol `name`'s BGP state is one of `states`, and returns it; panics with
    /// the last state, `show protocols all` and the log otherwise.
    pub fn wait_bgp_state(&self, name: &str, states: &[&str], timeout: Duration) -> String {
        let found = poll_until(timeout, || self.bgp_state(name).filter(|s| states.contains(&s.as_str())));
        found.unwrap_or_else(|| {
            panic!(
                "bird protocol {name} not in {states:?} after {timeout:?} (now {:?}):\n{}\nbird log:\n{}",
                self.bgp_state(name),
                self.try_birdc(&format!("show protocols all {name}")).unwrap_or_else(|e| e),
                self.log()
            )
        })
    }

    /// The state (`Up`, `Down`, `Init`, `AdminDown`) of the BFD session with `address`, from
    /// `show bfd sessions` (columns: IP address, Interface, State, Since, Interval, Timeout).
    pub fn bfd_state(&self, address: &str) -> Option<String> {
        let text = self.try_birdc("show bfd sessions").ok()?;
        text.lines().find_map(|l| {
            let mut t = l.split_whitespace();
            (t.next()? == address).then(|| t.nth(1).map(String::from))?
        })
    }

    /// `show route all` for one table (`Some("master4")`, `Some("master6")`), or for every
    /// table (`None`, i.e. `show route all table all`).
    pub fn routes(&self, table: Option<&str>) -> String {
        self.birdc(&format!("show route all table {}", table.unwrap_or("all")))
    }

    /// Writes a new config and applies it with `birdc configure`; panics when BIRD rejects it.
    pub fn reconfigure(&self, config: &BirdConfig) {
        std::fs::write(&self.config, config.render()).expect("write bird.conf");
        let out = self.birdc("configure");
        assert!(out.contains("Reconfigured") || out.contains("Reconfiguration in progress"), "birdc configure: {out}");
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

impl Peer for Bird {
    fn kind(&self) -> &'static str {
        "bird"
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn log(&self) -> String {
        self.child.log()
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers for the FRR and GoBGP configs
// ---------------------------------------------------------------------------------------------

/// The one local AS all `neighbors` share (FRR's `router bgp N`, GoBGP's `global.config.as`).
fn common_local_as(kind: &str, neighbors: &[BgpNeighbor]) -> u32 {
    let first = neighbors.first().unwrap_or_else(|| panic!("{kind} config needs at least one neighbor"));
    assert!(
        neighbors.iter().all(|n| n.local_as == first.local_as),
        "{kind} runs a single BGP instance: every neighbor needs the same local_as"
    );
    first.local_as
}

/// Keepalive for a hold time, as the daemons derive it (hold / 3; 0 → no keepalives).
fn keepalive_for(hold: u16) -> u16 {
    hold / 3
}

/// Waits until `state()` returns `Some("established"-ish)` (compared case-insensitively), or
/// panics with the last state and `details()`.
fn wait_state(
    what: &str,
    timeout: Duration,
    mut state: impl FnMut() -> Option<String>,
    details: impl FnOnce() -> String,
) {
    let mut last = None;
    let ok = poll_until(timeout, || {
        last = state();
        last.as_deref().filter(|s| s.eq_ignore_ascii_case("established")).map(|_| ())
    });
    if ok.is_none() {
        panic!("{what} not Established after {timeout:?} (last state {last:?}):\n{}", details());
    }
}

// ---------------------------------------------------------------------------------------------
// FRR (zebra + bgpd)
// ---------------------------------------------------------------------------------------------

/// Where Debian's `frr` package puts the daemons (not on `PATH`).
const FRR_LIBDIR: &str = "/usr/lib/frr";

/// Full path of an FRR daemon (`zebra`, `bgpd`, …): `/usr/lib/frr/NAME`, else `PATH`.
pub fn frr_daemon(name: &str) -> Option<PathBuf> {
    let p = Path::new(FRR_LIBDIR).join(name);
    if p.is_file() { Some(p) } else { find_program(name) }
}

/// Builder for an FRR `bgpd.conf`: one `router bgp` (the neighbors' common local AS) with
/// `no bgp ebgp-requires-policy` (FRR ≥ 7.4 otherwise drops every eBGP route in and out),
/// `no bgp default ipv4-unicast` plus an explicit `neighbor X activate` in the IPv4 and IPv6
/// unicast address families, `no bgp network import-check` (so `network` statements announce
/// without a RIB route), `timers connect 1` (FRR's default connect retry is 120 s), and the hold
/// time / password / port / passive / multihop / update-source from each [`BgpNeighbor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrrConfig {
    pub router_id: String,
    pub neighbors: Vec<BgpNeighbor>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Prefixes FRR originates (`network P` in the matching address family).
    pub networks: Vec<String>,
    /// Raw lines appended inside `router bgp` (before the address families).
    pub extra: Vec<String>,
}

impl FrrConfig {
    pub fn new(router_id: &str) -> FrrConfig {
        FrrConfig {
            router_id: router_id.to_string(),
            neighbors: Vec::new(),
            ipv4: true,
            ipv6: true,
            networks: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn neighbor(mut self, neighbor: BgpNeighbor) -> Self {
        self.neighbors.push(neighbor);
        self
    }

    /// Which address families the neighbors are activated in (both by default).
    pub fn families(mut self, ipv4: bool, ipv6: bool) -> Self {
        self.ipv4 = ipv4;
        self.ipv6 = ipv6;
        self
    }

    /// Originates `prefix` (IPv4 or IPv6) with a `network` statement.
    pub fn network(mut self, prefix: &str) -> Self {
        self.networks.push(prefix.to_string());
        self
    }

    /// Appends a raw line inside `router bgp`.
    pub fn extra(mut self, line: &str) -> Self {
        self.extra.push(line.to_string());
        self
    }

    /// The local AS (`router bgp N`).
    pub fn asn(&self) -> u32 {
        common_local_as("FRR", &self.neighbors)
    }

    /// The `bgpd.conf` text.
    pub fn render(&self) -> String {
        let asn = self.asn();
        let mut c = String::new();
        let _ = writeln!(c, "hostname halyard-frr");
        let _ = writeln!(c, "router bgp {asn}");
        let _ = writeln!(c, " bgp router-id {}", self.router_id);
        let _ = writeln!(c, " bgp log-neighbor-changes");
        let _ = writeln!(c, " no bgp ebgp-requires-policy");
        let _ = writeln!(c, " no bgp default ipv4-unicast");
        let _ = writeln!(c, " no bgp network import-check");
        for n in &self.neighbors {
            let a = &n.address;
            let _ = writeln!(c, " neighbor {a} remote-as {}", n.peer_as);
            if let Some(port) = n.port {
                let _ = writeln!(c, " neighbor {a} port {port}");
            }
            if let Some(local) = &n.local_address {
                let _ = writeln!(c, " neighbor {a} update-source {local}");
            }
            if n.passive {
                let _ = writeln!(c, " neighbor {a} passive");
            }
            if let Some(hold) = n.hold_time {
                let _ = writeln!(c, " neighbor {a} timers {} {hold}", keepalive_for(hold));
            }
            let _ = writeln!(c, " neighbor {a} timers connect 1");
            match (n.ttl_security, n.multihop) {
                // FRR refuses ttl-security together with ebgp-multihop: the hops say it all.
                (true, hops) => _ = writeln!(c, " neighbor {a} ttl-security hops {}", hops.unwrap_or(1).max(1)),
                (false, Some(0)) => _ = writeln!(c, " neighbor {a} ebgp-multihop"),
                (false, Some(ttl)) => _ = writeln!(c, " neighbor {a} ebgp-multihop {ttl}"),
                (false, None) => {}
            }
            if let Some(pw) = &n.password {
                assert!(!pw.contains([' ', '\n']), "FRR passwords cannot contain spaces or newlines");
                let _ = writeln!(c, " neighbor {a} password {pw}");
            }
            if n.graceful_restart {
                let _ = writeln!(c, " neighbor {a} graceful-restart-helper");
            }
        }
        for line in &self.extra {
            let _ = writeln!(c, " {line}");
        }
        for (afi, on, v6) in [("ipv4", self.ipv4, false), ("ipv6", self.ipv6, true)] {
            if !on {
                continue;
            }
            let _ = writeln!(c, " address-family {afi} unicast");
            for p in self.networks.iter().filter(|p| p.contains(':') == v6) {
                let _ = writeln!(c, "  network {p}");
            }
            for n in &self.neighbors {
                let _ = writeln!(c, "  neighbor {} activate", n.address);
            }
            let _ = writeln!(c, " exit-address-family");
        }
        c
    }
}

/// FRR running in a namespace: `zebra` and `bgpd` in the foreground (no watchfrr, no service),
/// with their vty sockets, zebra socket, pid files and config in a private frr-owned directory
/// (`--vty_socket DIR -z DIR/zserv.api -i DIR/X.pid -P 0`), controlled with
/// `vtysh --vty_socket DIR` from the root namespace. Both are killed by PID on drop.
#[derive(Debug)]
pub struct Frr {
    // Field order = drop order: bgpd before zebra, the directory last.
    bgpd: ChildGuard,
    zebra: ChildGuard,
    asn: u32,
    dir: tempfile::TempDir,
}

impl Frr {
    /// Whether FRR (`zebra`, `bgpd`, `vtysh`) is installed; prints a `skipped:` line otherwise.
    pub fn available() -> bool {
        for name in ["zebra", "bgpd"] {
            if frr_daemon(name).is_none() {
                println!("skipped: needs {FRR_LIBDIR}/{name} (Debian package frr), which is not installed");
                return false;
            }
        }
        crate::netns::require_program("vtysh", "frr")
    }

    /// Writes the configs, dry-runs `bgpd -C`, starts zebra, waits for its socket, starts
    /// bgpd and waits (up to 15 s) until vtysh reaches it. Panics with the logs otherwise.
    pub fn start(ns: &Netns, config: &FrrConfig) -> Frr {
        let zebra_bin = frr_daemon("zebra").expect("FRR zebra is not installed (Debian package frr)");
        let bgpd_bin = frr_daemon("bgpd").expect("FRR bgpd is not installed (Debian package frr)");
        let dir = peer_dir("frr");
        let d = dir.path();
        let bgpd_conf = d.join("bgpd.conf");
        let zebra_conf = d.join("zebra.conf");
        let text = config.render();
        std::fs::write(&bgpd_conf, &text).expect("write bgpd.conf");
        std::fs::write(&zebra_conf, "hostname halyard-frr-zebra\n").expect("write zebra.conf");
        // The daemons drop privileges to user `frr`: the directory must be theirs.
        let chown = Command::new("chown").arg("-R").arg("frr:frr").arg(d).stdin(Stdio::null()).output();
        let chown = chown.unwrap_or_else(|e| panic!("cannot run chown: {e}"));
        assert!(chown.status.success(), "chown frr:frr {}: {}", d.display(), String::from_utf8_lossy(&chown.stderr));
        let check = Command::new(&bgpd_bin).arg("-C").arg("-f").arg(&bgpd_conf).stdin(Stdio::null()).output();
        let check = check.unwrap_or_else(|e| panic!("cannot run {}: {e}", bgpd_bin.display()));
        assert!(
            check.status.success(),
            "bgpd rejects the config: {}{}\n--- config ---\n{text}",
            String::from_utf8_lossy(&check.stderr),
            String::from_utf8_lossy(&check.stdout)
        );
        let zsock = d.join("zserv.api");
        let common = |conf: &Path, pid: &str| -> Vec<std::ffi::OsString> {
            let mut v: Vec<std::ffi::OsString> =
                vec!["--vty_socket".into(), d.into(), "-z".into(), zsock.clone().into()];
            v.extend(["-P".into(), "0".into(), "--log".into(), "stdout".into(), "--log-level".into(), "info".into()]);
            v.extend(["-f".into(), conf.into(), "-i".into(), d.join(pid).into()]);
            v
        };
        let mut zargs = vec![zebra_bin.into_os_string()];
        zargs.extend(common(&zebra_conf, "zebra.pid"));
        let mut zebra = ns.spawn(zargs, d.join("zebra.log"));
        let zready = poll_until(Duration::from_secs(10), || {
            if let Some(status) = zebra.try_wait() {
                panic!("zebra exited early ({status}); log:\n{}", zebra.log());
            }
            zsock.exists().then_some(())
        });
        if zready.is_none() {
            panic!("zebra did not create {} within 10 s; log:\n{}", zsock.display(), zebra.log());
        }
        let mut bargs = vec![bgpd_bin.into_os_string()];
        bargs.extend(common(&bgpd_conf, "bgpd.pid"));
        let bgpd = ns.spawn(bargs, d.join("bgpd.log"));
        let mut f = Frr { bgpd, zebra, asn: config.asn(), dir };
        let ready = poll_until(Duration::from_secs(15), || {
            if let Some(status) = f.bgpd.try_wait() {
                panic!("bgpd exited early ({status}); log:\n{}", f.log());
            }
            let ok = f.dir.path().join("bgpd.vty").exists() && f.try_vtysh(&["show bgp summary json"]).is_ok();
            ok.then_some(())
        });
        if ready.is_none() {
            panic!("bgpd did not answer vtysh within 15 s; log:\n{}", f.log());
        }
        f
    }

    /// Runs `vtysh --vty_socket DIR -c CMD…` (several `-c`, as one vtysh session); `Err` with
    /// the output when vtysh fails.
    pub fn try_vtysh(&self, cmds: &[&str]) -> Result<String, String> {
        let vtysh = program("vtysh", "frr");
        let mut c = Command::new(vtysh);
        c.arg("--vty_socket").arg(self.dir.path());
        for cmd in cmds {
            c.arg("-c").arg(cmd);
        }
        let out = c.stdin(Stdio::null()).output().map_err(|e| format!("cannot run vtysh: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() { Ok(text) } else { Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr))) }
    }

    /// Runs one vtysh command and returns its output; panics (with FRR's logs) on failure.
    pub fn vtysh(&self, cmd: &str) -> String {
        self.vtysh_cmds(&[cmd])
    }

    /// Runs several vtysh commands in one session; panics on failure.
    pub fn vtysh_cmds(&self, cmds: &[&str]) -> String {
        self.try_vtysh(cmds).unwrap_or_else(|e| panic!("vtysh {cmds:?} failed: {e}\nFRR log:\n{}", self.log()))
    }

    /// Runs a vtysh command ending in `json` and parses its output.
    pub fn vtysh_json(&self, cmd: &str) -> Value {
        let text = self.vtysh(cmd);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("vtysh {cmd:?}: not JSON ({e}):\n{text}"))
    }

    /// Applies config lines in `router bgp ASN` (`configure terminal` … `end`).
    pub fn configure_bgp(&self, lines: &[&str]) -> String {
        let router = format!("router bgp {}", self.asn);
        let mut cmds = vec!["configure terminal", router.as_str()];
        cmds.extend_from_slice(lines);
        cmds.push("end");
        self.vtysh_cmds(&cmds)
    }

    /// `show bgp summary json` (keys `ipv4Unicast`, `ipv6Unicast`, each with `peers`).
    pub fn bgp_summary_json(&self) -> Value {
        self.vtysh_json("show bgp summary json")
    }

    /// `show bgp AFI unicast json` (`afi` = `"ipv4"` or `"ipv6"`): the table, under `routes`.
    pub fn routes_json(&self, afi: &str) -> Value {
        self.vtysh_json(&format!("show bgp {afi} unicast json"))
    }

    /// `show bgp AFI unicast PREFIX json`: every path for one prefix (with communities, large
    /// communities, MED…), under `paths`; `{}` when the prefix is unknown.
    pub fn route_json(&self, afi: &str, prefix: &str) -> Value {
        self.vtysh_json(&format!("show bgp {afi} unicast {prefix} json"))
    }

    /// `show bgp neighbors ADDR json`, the object for that neighbor (`bgpState`,
    /// `lastNotificationReason`, `lastResetDueTo`, …); `Null` when unknown.
    pub fn neighbor_json(&self, addr: &str) -> Value {
        let v = self.try_vtysh(&[&format!("show bgp neighbors {addr} json")]).ok();
        let v: Value = v.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
        v.get(addr).cloned().unwrap_or(Value::Null)
    }

    /// FRR's `bgpState` for the neighbor (`Idle`, `Connect`, `Active`, `OpenSent`,
    /// `OpenConfirm`, `Established`, …).
    pub fn neighbor_state(&self, addr: &str) -> Option<String> {
        self.neighbor_json(addr)["bgpState"].as_str().map(String::from)
    }

    /// Waits until the session with `neighbor` is Established; panics with the neighbor
    /// details and FRR's logs otherwise.
    pub fn wait_established(&self, neighbor: &str, timeout: Duration) {
        wait_state(
            &format!("FRR neighbor {neighbor}"),
            timeout,
            || self.neighbor_state(neighbor),
            || format!("{:#}\nFRR log:\n{}", self.neighbor_json(neighbor), self.log()),
        );
    }

    /// The local AS (`router bgp N`).
    pub fn asn(&self) -> u32 {
        self.asn
    }

    /// zebra's PID (bgpd's is [`Peer::pid`]).
    pub fn zebra_pid(&self) -> u32 {
        self.zebra.pid()
    }

    /// The bgpd config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("bgpd.conf")
    }
}

impl Peer for Frr {
    fn kind(&self) -> &'static str {
        "frr"
    }

    /// bgpd's PID (zebra's is [`Frr::zebra_pid`]).
    fn pid(&self) -> u32 {
        self.bgpd.pid()
    }

    /// bgpd's log followed by zebra's.
    fn log(&self) -> String {
        format!("--- bgpd ---\n{}--- zebra ---\n{}", self.bgpd.log(), self.zebra.log())
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

// ---------------------------------------------------------------------------------------------
// GoBGP
// ---------------------------------------------------------------------------------------------

/// Builder for a `gobgpd` TOML config: `global.config` (the neighbors' common local AS, router
/// id, port 179) and one `[[neighbors]]` per [`BgpNeighbor`] with `ipv4-unicast` and/or
/// `ipv6-unicast`, connect retry 1 s and the hold time / password / port / passive / multihop /
/// local address from the neighbor. GoBGP has no eBGP policy requirement: it accepts and
/// advertises everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GobgpConfig {
    pub router_id: String,
    pub neighbors: Vec<BgpNeighbor>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Raw TOML appended at the end.
    pub extra: Vec<String>,
}

/// A TOML basic string (quotes and backslashes escaped).
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl GobgpConfig {
    pub fn new(router_id: &str) -> GobgpConfig {
        GobgpConfig {
            router_id: router_id.to_string(),
            neighbors: Vec::new(),
            ipv4: true,
            ipv6: true,
            extra: Vec::new(),
        }
    }

    pub fn neighbor(mut self, neighbor: BgpNeighbor) -> Self {
        self.neighbors.push(neighbor);
        self
    }

    /// Which address families each neighbor carries (both by default).
    pub fn families(mut self, ipv4: bool, ipv6: bool) -> Self {
        self.ipv4 = ipv4;
        self.ipv6 = ipv6;
        self
    }

    pub fn extra(mut self, text: &str) -> Self {
        self.extra.push(text.to_string());
        self
    }

    /// The local AS (`global.config.as`).
    pub fn asn(&self) -> u32 {
        common_local_as("GoBGP", &self.neighbors)
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "[global.config]");
        let _ = writeln!(c, "  as = {}", self.asn());
        let _ = writeln!(c, "  router-id = {}", toml_str(&self.router_id));
        let _ = writeln!(c, "  port = 179");
        for n in &self.neighbors {
            let _ = writeln!(c, "\n[[neighbors]]");
            let _ = writeln!(c, "  [neighbors.config]");
            let _ = writeln!(c, "    neighbor-address = {}", toml_str(&n.address));
            let _ = writeln!(c, "    peer-as = {}", n.peer_as);
            if let Some(pw) = &n.password {
                let _ = writeln!(c, "    auth-password = {}", toml_str(pw));
            }
            let _ = writeln!(c, "  [neighbors.timers.config]");
            let _ = writeln!(c, "    connect-retry = 1");
            if let Some(hold) = n.hold_time {
                let _ = writeln!(c, "    hold-time = {hold}");
                let _ = writeln!(c, "    keepalive-interval = {}", keepalive_for(hold));
            }
            if n.passive || n.port.is_some() || n.local_address.is_some() {
                let _ = writeln!(c, "  [neighbors.transport.config]");
                if n.passive {
                    let _ = writeln!(c, "    passive-mode = true");
                }
                if let Some(port) = n.port {
                    let _ = writeln!(c, "    remote-port = {port}");
                }
                if let Some(local) = &n.local_address {
                    let _ = writeln!(c, "    local-address = {}", toml_str(local));
                }
            }
            if let Some(ttl) = n.multihop {
                let _ = writeln!(c, "  [neighbors.ebgp-multihop.config]");
                let _ = writeln!(c, "    enabled = true");
                if ttl > 0 {
                    let _ = writeln!(c, "    multihop-ttl = {ttl}");
                }
            }
            if n.graceful_restart {
                let _ = writeln!(c, "  [neighbors.graceful-restart.config]");
                let _ = writeln!(c, "    enabled = true");
            }
            for (family, on) in [("ipv4-unicast", self.ipv4), ("ipv6-unicast", self.ipv6)] {
                if on {
                    let _ = writeln!(c, "  [[neighbors.afi-safis]]");
                    let _ = writeln!(c, "    [neighbors.afi-safis.config]");
                    let _ = writeln!(c, "      afi-safi-name = \"{family}\"");
                    if n.graceful_restart {
                        let _ = writeln!(c, "    [neighbors.afi-safis.mp-graceful-restart.config]");
                        let _ = writeln!(c, "      enabled = true");
                    }
                }
            }
        }
        for text in &self.extra {
            let _ = writeln!(c, "{text}");
        }
        c
    }
}

/// GoBGP's `session_state` numbers (gobgp API `PeerState.SessionState`) as names.
fn gobgp_session_state(n: u64) -> &'static str {
    match n {
        1 => "idle",
        2 => "connect",
        3 => "active",
        4 => "opensent",
        5 => "openconfirm",
        6 => "established",
        _ => "unknown",
    }
}

/// `gobgpd` running in a namespace: `gobgpd -f CONF --api-hosts unix://SOCK`, controlled with
/// `gobgp --target unix://SOCK` from the root namespace. Killed by PID on drop.
#[derive(Debug)]
pub struct Gobgp {
    child: ChildGuard,
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

impl Gobgp {
    /// Whether `gobgpd` and `gobgp` are installed; prints a `skipped:` line otherwise.
    pub fn available() -> bool {
        crate::netns::require_program("gobgpd", "gobgpd") && crate::netns::require_program("gobgp", "gobgpd")
    }

    /// Writes the config, checks it with `gobgpd -d`, starts gobgpd in `ns` and waits (up to
    /// 15 s) until `gobgp global` answers. Panics with the log otherwise.
    pub fn start(ns: &Netns, config: &GobgpConfig) -> Gobgp {
        let gobgpd = program("gobgpd", "gobgpd");
        let dir = peer_dir("gobgp");
        let conf = dir.path().join("gobgpd.toml");
        let socket = dir.path().join("gobgp.sock");
        let text = config.render();
        std::fs::write(&conf, &text).expect("write gobgpd.toml");
        let check = Command::new(&gobgpd).arg("-f").arg(&conf).arg("-d").stdin(Stdio::null()).output();
        let check = check.unwrap_or_else(|e| panic!("cannot run {}: {e}", gobgpd.display()));
        assert!(
            check.status.success(),
            "gobgpd rejects the config: {}{}\n--- config ---\n{text}",
            String::from_utf8_lossy(&check.stderr),
            String::from_utf8_lossy(&check.stdout)
        );
        let api = format!("unix://{}", socket.display());
        let child = ns.spawn(
            [gobgpd.as_os_str(), "-f".as_ref(), conf.as_os_str(), "--api-hosts".as_ref(), api.as_ref()],
            dir.path().join("gobgpd.log"),
        );
        let mut g = Gobgp { child, dir, config: conf, socket };
        let ready = poll_until(Duration::from_secs(15), || {
            if let Some(status) = g.child.try_wait() {
                panic!("gobgpd exited early ({status}); log:\n{}", g.child.log());
            }
            (g.socket.exists() && g.try_gobgp(&["global"]).is_ok()).then_some(())
        });
        if ready.is_none() {
            panic!("gobgpd did not answer `gobgp global` within 15 s; log:\n{}", g.child.log());
        }
        g
    }

    /// Runs `gobgp --target unix://SOCK ARGS…`; `Err` with its output when it fails.
    pub fn try_gobgp(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(program("gobgp", "gobgpd"))
            .arg("--target")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run gobgp: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() { Ok(text) } else { Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr))) }
    }

    /// Runs `gobgp ARGS…` and returns its output; panics (with gobgpd's log) on failure.
    pub fn gobgp(&self, args: &[&str]) -> String {
        self.try_gobgp(args).unwrap_or_else(|e| panic!("gobgp {args:?} failed: {e}\ngobgpd log:\n{}", self.log()))
    }

    /// Runs `gobgp ARGS… -j` and parses the output.
    pub fn gobgp_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("-j");
        let text = self.gobgp(&a);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("gobgp {a:?}: not JSON ({e}):\n{text}"))
    }

    /// `gobgp neighbor ADDR -j` (`state.session_state`, `state.messages`, …); `Null` when
    /// gobgpd does not know the neighbor.
    pub fn neighbor_json(&self, addr: &str) -> Value {
        let text = self.try_gobgp(&["neighbor", addr, "-j"]).ok();
        text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null)
    }

    /// The session state with `addr`, lower case (`idle`, `connect`, `active`, `opensent`,
    /// `openconfirm`, `established`).
    pub fn neighbor_state(&self, addr: &str) -> Option<String> {
        let n = self.neighbor_json(addr)["state"]["session_state"].as_u64()?;
        Some(gobgp_session_state(n).to_string())
    }

    /// `gobgp global rib -a AFI` (`afi` = `"ipv4"`, `"ipv6"`, …) as text.
    pub fn rib(&self, afi: &str) -> String {
        self.gobgp(&["global", "rib", "-a", afi])
    }

    /// `gobgp global rib -a AFI -j`: prefix → list of paths, each with `attrs` (`type` 2 = AS
    /// path, 4 = MED, 8 = communities as u32, 14 = MP_REACH with `nexthop`, 32 = large
    /// communities).
    pub fn rib_json(&self, afi: &str) -> Value {
        self.gobgp_json(&["global", "rib", "-a", afi])
    }

    /// Originates `prefix` (`gobgp global rib add PREFIX -a AFI`).
    pub fn add_route(&self, prefix: &str) {
        let afi = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.gobgp(&["global", "rib", "add", prefix, "-a", afi]);
    }

    /// Waits until the session with `neighbor` is established; panics with `gobgp neighbor
    /// ADDR` and the log otherwise.
    pub fn wait_established(&self, neighbor: &str, timeout: Duration) {
        wait_state(
            &format!("GoBGP neighbor {neighbor}"),
            timeout,
            || self.neighbor_state(neighbor),
            || {
                format!(
                    "{}\ngobgpd log:\n{}",
                    self.try_gobgp(&["neighbor", neighbor]).unwrap_or_else(|e| e),
                    self.log()
                )
            },
        );
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

impl Peer for Gobgp {
    fn kind(&self) -> &'static str {
        "gobgp"
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn log(&self) -> String {
        self.child.log()
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

// ---------------------------------------------------------------------------------------------
// ExaBGP
// ---------------------------------------------------------------------------------------------

/// Builder for an ExaBGP 4.2 config: one `neighbor` block per [`BgpNeighbor`] (router id, local
/// address — required —, ASes, hold time, `passive`, `md5-password`), the IPv4/IPv6 unicast
/// families, `static` routes, and an API process that feeds ExaBGP the commands a test appends
/// with [`Exabgp::command`] and records ExaBGP's JSON events (state changes, received UPDATEs
/// and NOTIFICATIONs) for [`Exabgp::events`]. ExaBGP listens on the neighbors' local
/// addresses (`exabgp.tcp.bind`), so a speaker that only connects out can reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExabgpConfig {
    pub router_id: String,
    pub neighbors: Vec<BgpNeighbor>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// `static` routes, in ExaBGP syntax after `route` (`"198.51.100.0/24 next-hop self"`).
    pub routes: Vec<String>,
    /// Raw config text appended at the end.
    pub extra: Vec<String>,
}

impl ExabgpConfig {
    pub fn new(router_id: &str) -> ExabgpConfig {
        ExabgpConfig {
            router_id: router_id.to_string(),
            neighbors: Vec::new(),
            ipv4: true,
            ipv6: true,
            routes: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Adds a neighbor; it needs a `local_address` (ExaBGP binds and listens on it).
    pub fn neighbor(mut self, neighbor: BgpNeighbor) -> Self {
        self.neighbors.push(neighbor);
        self
    }

    pub fn families(mut self, ipv4: bool, ipv6: bool) -> Self {
        self.ipv4 = ipv4;
        self.ipv6 = ipv6;
        self
    }

    /// A static route announced to every neighbor (`route SPEC;`).
    pub fn route(mut self, spec: &str) -> Self {
        self.routes.push(spec.to_string());
        self
    }

    pub fn extra(mut self, text: &str) -> Self {
        self.extra.push(text.to_string());
        self
    }

    /// The config text; `commands` and `events` are the files of the API process.
    pub fn render(&self, commands: &Path, events: &Path) -> String {
        let (cmds, evs) = (commands.display().to_string(), events.display().to_string());
        assert!(!format!("{cmds}{evs}").contains(['\'', '"', ' ', ';']), "unusable ExaBGP API paths {cmds} {evs}");
        let mut c = String::new();
        let _ = writeln!(c, "process halyard-api {{");
        // `tail --pid` ends by itself within 1 s of ExaBGP ($PPID); `cat` ends on EOF.
        let _ = writeln!(c, "    run /bin/sh -c 'tail -n +1 -f --pid=$PPID {cmds} & exec cat > {evs}';");
        let _ = writeln!(c, "    encoder json;");
        let _ = writeln!(c, "}}");
        for n in &self.neighbors {
            let local = n.local_address.as_deref().expect("ExaBGP needs BgpNeighbor::local_address");
            assert!(n.port.is_none() && n.multihop.is_none(), "ExabgpConfig supports neither port nor multihop");
            let _ = writeln!(c, "neighbor {} {{", n.address);
            let _ = writeln!(c, "    router-id {};", self.router_id);
            let _ = writeln!(c, "    local-address {local};");
            let _ = writeln!(c, "    local-as {};", n.local_as);
            let _ = writeln!(c, "    peer-as {};", n.peer_as);
            if let Some(hold) = n.hold_time {
                let _ = writeln!(c, "    hold-time {hold};");
            }
            if n.passive {
                let _ = writeln!(c, "    passive true;");
            }
            if let Some(pw) = &n.password {
                assert!(!pw.contains(['"', '\n']), "ExaBGP cannot take a password containing '\"' or a newline");
                let _ = writeln!(c, "    md5-password \"{pw}\";");
            }
            let _ = writeln!(c, "    family {{");
            if self.ipv4 {
                let _ = writeln!(c, "        ipv4 unicast;");
            }
            if self.ipv6 {
                let _ = writeln!(c, "        ipv6 unicast;");
            }
            let _ = writeln!(c, "    }}");
            if !self.routes.is_empty() {
                let _ = writeln!(c, "    static {{");
                for r in &self.routes {
                    let _ = writeln!(c, "        route {r};");
                }
                let _ = writeln!(c, "    }}");
            }
            let _ = writeln!(c, "    api {{");
            let _ = writeln!(c, "        processes [ halyard-api ];");
            let _ = writeln!(c, "        neighbor-changes;");
            let _ = writeln!(c, "        receive {{ parsed; update; notification; }}");
            let _ = writeln!(c, "    }}");
            let _ = writeln!(c, "}}");
        }
        for text in &self.extra {
            let _ = writeln!(c, "{text}");
        }
        c
    }
}

/// ExaBGP running in a namespace (`env exabgp.… exabgp CONF`, in the foreground). Tests drive
/// it by appending API commands (`announce route …`, `withdraw route …`, with raw `attribute
/// [ TYPE FLAGS 0xVALUE ]` for crafted UPDATEs) and read its JSON events. Stopped with SIGTERM
/// (then SIGKILL) on drop, so it ends its API helper itself.
#[derive(Debug)]
pub struct Exabgp {
    child: ChildGuard,
    dir: tempfile::TempDir,
    config: PathBuf,
    commands: PathBuf,
    events: PathBuf,
}

impl Exabgp {
    /// Whether `exabgp` is installed; prints a `skipped:` line otherwise.
    pub fn available() -> bool {
        crate::netns::require_program("exabgp", "exabgp")
    }

    /// Writes the config, checks it with `exabgp --validate`, starts ExaBGP in `ns` and waits
    /// (up to 15 s) until its API process runs. Panics with the log otherwise.
    pub fn start(ns: &Netns, config: &ExabgpConfig) -> Exabgp {
        let exabgp = program("exabgp", "exabgp");
        let dir = peer_dir("exabgp");
        let conf = dir.path().join("exabgp.conf");
        let commands = dir.path().join("commands");
        let events = dir.path().join("events.jsonl");
        std::fs::write(&commands, "").expect("create the ExaBGP command file");
        let text = config.render(&commands, &events);
        std::fs::write(&conf, &text).expect("write exabgp.conf");
        let envs: Vec<String> = {
            let binds: Vec<&str> = config.neighbors.iter().filter_map(|n| n.local_address.as_deref()).collect();
            vec![
                "exabgp.daemon.user=root".into(),
                "exabgp.api.cli=false".into(),
                "exabgp.log.destination=stdout".into(),
                format!("exabgp.tcp.bind={}", binds.join(" ")),
            ]
        };
        // Validate without `exabgp.tcp.bind`: it would try to listen, here in the root namespace.
        let check = Command::new("env")
            .args(&envs[..3])
            .arg(&exabgp)
            .arg("--validate")
            .arg(&conf)
            .stdin(Stdio::null())
            .output();
        let check = check.unwrap_or_else(|e| panic!("cannot run {}: {e}", exabgp.display()));
        assert!(
            check.status.success(),
            "exabgp rejects the config: {}{}\n--- config ---\n{text}",
            String::from_utf8_lossy(&check.stderr),
            String::from_utf8_lossy(&check.stdout)
        );
        let mut args: Vec<std::ffi::OsString> = vec!["env".into()];
        args.extend(envs.iter().map(Into::into));
        args.push(exabgp.into_os_string());
        args.push(conf.clone().into_os_string());
        let child = ns.spawn(args, dir.path().join("exabgp.log"));
        let mut x = Exabgp { child, dir, config: conf, commands, events };
        let ready = poll_until(Duration::from_secs(15), || {
            if let Some(status) = x.child.try_wait() {
                panic!("exabgp exited early ({status}); log:\n{}", x.child.log());
            }
            (x.events.exists() && x.child.log().contains("loaded new configuration successfully")).then_some(())
        });
        if ready.is_none() {
            panic!("exabgp did not start its API process within 15 s; log:\n{}", x.child.log());
        }
        x
    }

    /// Sends one API command (appended to the command file ExaBGP's API process tails), e.g.
    /// `announce route 203.0.113.0/24 next-hop self attribute [ 0xf0 0xc0 0x0102 ]`.
    pub fn command(&self, cmd: &str) {
        use std::io::Write as _;
        assert!(!cmd.contains('\n'), "one ExaBGP command per call");
        let mut f =
            std::fs::OpenOptions::new().append(true).open(&self.commands).expect("open the ExaBGP command file");
        f.write_all(format!("{cmd}\n").as_bytes()).expect("write an ExaBGP command");
    }

    /// `announce route SPEC`.
    pub fn announce(&self, spec: &str) {
        self.command(&format!("announce route {spec}"));
    }

    /// `withdraw route SPEC`.
    pub fn withdraw(&self, spec: &str) {
        self.command(&format!("withdraw route {spec}"));
    }

    /// Every JSON event ExaBGP sent its API process so far (`type` = `state`, `update`,
    /// `notification`, …), oldest first.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.events).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The events of `kind` (`state`, `update`, `notification`) for neighbor `addr`.
    pub fn events_of(&self, kind: &str, addr: &str) -> Vec<Value> {
        self.events().into_iter().filter(|e| e["type"] == kind && e["neighbor"]["address"]["peer"] == addr).collect()
    }

    /// The last state event's `state` for `addr` (`connected`, `up`, `down`).
    pub fn neighbor_state(&self, addr: &str) -> Option<String> {
        let last = self.events_of("state", addr).pop()?;
        last["neighbor"]["state"].as_str().map(String::from)
    }

    /// Waits until the session with `neighbor` is up; panics with the events and log otherwise.
    pub fn wait_established(&self, neighbor: &str, timeout: Duration) {
        wait_state(
            &format!("ExaBGP neighbor {neighbor}"),
            timeout,
            || self.neighbor_state(neighbor).map(|s| if s == "up" { "established".into() } else { s }),
            || {
                let ev = std::fs::read_to_string(&self.events).unwrap_or_default();
                format!("events:\n{ev}\nexabgp log:\n{}", self.log())
            },
        );
    }

    /// The parsed UPDATEs received from `addr` (`message.update` of each event; End-of-RIB
    /// markers left out), each with `attribute` and `announce`/`withdraw`.
    pub fn received_updates(&self, addr: &str) -> Vec<Value> {
        let updates = self.events_of("update", addr).into_iter().map(|e| e["neighbor"]["message"]["update"].clone());
        updates.filter(|u| !u.is_null()).collect()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

impl Drop for Exabgp {
    fn drop(&mut self) {
        // SIGTERM first: ExaBGP then stops its API process itself.
        self.child.stop(Duration::from_secs(5));
    }
}

impl Peer for Exabgp {
    fn kind(&self) -> &'static str {
        "exabgp"
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn log(&self) -> String {
        self.child.log()
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

// ---------------------------------------------------------------------------------------------
// halyard-bgpd (the standalone speaker) in a namespace
// ---------------------------------------------------------------------------------------------

/// `halyard-bgpd` in a namespace, run from a TOML config and read back through its status file
/// (JSON keyed by peer address). Killed by PID on drop.
pub struct Bgpd {
    pub child: ChildGuard,
    status: PathBuf,
    peer: String,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Bgpd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bgpd").field("peer", &self.peer).field("status", &self.status).finish()
    }
}

impl Bgpd {
    /// `config` gets the status file's path and returns the whole TOML; `peer` is the address
    /// whose status [`Bgpd::status`] returns.
    pub fn start(ns: &Netns, peer: &str, config: impl FnOnce(&Path) -> String) -> Bgpd {
        let dir = tempfile::Builder::new().prefix("halyard-bgpd-").tempdir().expect("tempdir");
        let status = dir.path().join("status.json");
        let conf = dir.path().join("halyard-bgpd.toml");
        std::fs::write(&conf, config(&status)).expect("write halyard-bgpd.toml");
        let bin = crate::bin("halyard-bgpd");
        let child = ns.spawn([bin.as_os_str(), "-c".as_ref(), conf.as_os_str()], dir.path().join("bgpd.log"));
        Bgpd { child, status, peer: peer.to_string(), _dir: dir }
    }

    /// The peer's entry in the status file (`Null` until it is written). Panics, with the log,
    /// if the daemon exited.
    pub fn status(&mut self) -> Value {
        if let Some(st) = self.child.try_wait() {
            panic!("halyard-bgpd exited ({st}); log:\n{}", self.child.log());
        }
        let v: Option<Value> = std::fs::read_to_string(&self.status).ok().and_then(|t| serde_json::from_str(&t).ok());
        v.map(|v| v[&self.peer].clone()).unwrap_or(Value::Null)
    }

    pub fn established(&mut self) -> bool {
        self.status()["state"] == "Established"
    }

    /// The prefixes received from the peer, sorted.
    pub fn received(&mut self) -> Vec<String> {
        let s = self.status();
        let mut v: Vec<String> =
            s["received"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(String::from)).collect();
        v.sort();
        v
    }

    /// Polls until `f` holds on the status; panics with the status and log otherwise.
    pub fn wait(&mut self, timeout: Duration, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let got = poll_until(timeout, || {
            let s = self.status();
            f(&s).then_some(s)
        });
        got.unwrap_or_else(|| panic!("timed out waiting for {what}: {:#}\nlog:\n{}", self.status(), self.child.log()))
    }
}
