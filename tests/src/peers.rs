//! Real third-party routing daemons run as peers inside test network namespaces.
//!
//! Each peer kind has a config builder that renders a config file from the common
//! [`BgpNeighbor`] description, and a handle that starts the daemon in the foreground with
//! [`Netns::spawn`] (so the PID is the daemon's and it is killed on drop), talks to it over a
//! unix control socket in the peer's own temporary directory (no `setns` needed), and exposes
//! its log for failure messages. Only BIRD 2 ([`Bird`], [`BirdConfig`]) exists today; FRR,
//! GoBGP and ExaBGP are meant to follow the same shape (`XxxConfig::render`, `Xxx::start(ns,
//! &config)`, a CLI wrapper, and an impl of [`Peer`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
        }
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
