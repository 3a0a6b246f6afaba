//! Network namespaces for tests that need real links: each [`Netns`] has a unique name, is
//! created with `ip netns add`, and on drop kills (by PID) every process the harness started in
//! it and then runs `ip netns del` — also when the test panics.
//!
//! Everything here needs root and a working `ip netns`: call [`require_root`] first and return
//! early when it says no. Only addresses inside namespaces the test created are used; nothing
//! is created in the root namespace (veth pairs are made inside the namespaces directly).

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// PIDs of the processes the harness started in one namespace and has not yet reaped.
/// A PID stays here until its [`ChildGuard`] has waited for it, so it cannot have been reused.
type PidRegistry = Arc<Mutex<Vec<u32>>>;

static NETNS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether this process can create network namespaces: root, `ip` present, and a probe
/// namespace can be added and deleted. Prints `skipped: needs root and ip netns (why)` and
/// returns `false` when not, so a test can `if !require_root() { return; }`.
pub fn require_root() -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    match PROBE.get_or_init(probe_netns) {
        Ok(()) => true,
        Err(why) => {
            println!("skipped: needs root and ip netns ({why})");
            false
        }
    }
}

fn probe_netns() -> Result<(), String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Err(format!("running as uid {uid}, not root")),
        None => return Err("cannot read the effective uid from /proc/self/status".into()),
    }
    if find_program("ip").is_none() {
        return Err("`ip` not found (Debian package iproute2)".into());
    }
    let name = format!("hy-probe-{}", std::process::id());
    let add = Command::new("ip").args(["netns", "add", &name]).stdin(Stdio::null()).output();
    match add {
        Err(e) => return Err(format!("cannot run `ip netns add`: {e}")),
        Ok(o) if !o.status.success() => {
            return Err(format!("`ip netns add` failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
        }
        Ok(_) => {}
    }
    let del = Command::new("ip").args(["netns", "del", &name]).stdin(Stdio::null()).output();
    match del {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`ip netns del` failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("cannot run `ip netns del`: {e}")),
    }
}

/// The effective uid, from `/proc/self/status` (no `libc`, no unsafe).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Full path of `name`, searched in `PATH` and then in the sbin directories (where Debian puts
/// `bird`, and which a non-root `PATH` often lacks).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether `program` is installed. Prints `skipped: needs PROGRAM (Debian package PACKAGE)` and
/// returns `false` when not.
pub fn require_program(program: &str, package: &str) -> bool {
    if find_program(program).is_some() {
        true
    } else {
        println!("skipped: needs `{program}` (Debian package {package}), which is not installed");
        false
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or gives up after `timeout` with `None`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` every 50 ms until it returns `Some`; panics with
/// `timed out after {timeout} waiting for {what}` otherwise.
pub fn wait_until<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    match poll_until(timeout, f) {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// A network namespace with a unique name (`hy-LABEL-PID-N`), loopback up. Dropping it kills the
/// processes started with [`Netns::spawn`] (by PID) and deletes the namespace.
pub struct Netns {
    name: String,
    pids: PidRegistry,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netns").field("name", &self.name).finish()
    }
}

impl Netns {
    /// Creates the namespace and brings `lo` up. `label` (letters, digits, `-`; cut to 8
    /// characters) only makes the name readable. Panics when the namespace cannot be created.
    pub fn new(label: &str) -> Netns {
        let label: String =
            label.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(8).collect::<String>().to_lowercase();
        let pid = std::process::id();
        // A name can only be taken by a namespace a crashed earlier run (same PID) left behind:
        // skip over those instead of touching them.
        for _ in 0..100 {
            let n = NETNS_COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("hy-{label}-{pid}-{n}");
            let out = Command::new("ip").args(["netns", "add", &name]).stdin(Stdio::null()).output();
            let out = out.unwrap_or_else(|e| panic!("cannot run `ip netns add {name}`: {e}"));
            if out.status.success() {
                let ns = Netns { name, pids: Arc::default() };
                ns.ip_ok(&["link", "set", "lo", "up"]);
                return ns;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.contains("exists") {
                panic!("`ip netns add {name}` failed: {}", err.trim());
            }
        }
        panic!("no free network namespace name for hy-{label}-{pid}-*");
    }

    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip netns exec NAME args…` and returns its output (stdin is /dev/null).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns exec {} {args:?}`: {e}", self.name))
    }

    /// Like [`Netns::exec`], but panics (with stderr) unless the command succeeds; returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        check(&out, &format!("`ip netns exec {} {}`", self.name, args.join(" ")))
    }

    /// Runs `ip -n NAME args…` (no exec into the namespace) and returns its output.
    pub fn ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip -n {} {args:?}`: {e}", self.name))
    }

    /// Like [`Netns::ip`], but panics (with stderr) unless it succeeds; returns stdout.
    pub fn ip_ok(&self, args: &[&str]) -> String {
        let out = self.ip(args);
        check(&out, &format!("`ip -n {} {}`", self.name, args.join(" ")))
    }

    /// Adds an IPv4 or IPv6 CIDR to `dev` (IPv6 with `nodad`, so it is usable at once).
    pub fn add_addr(&self, dev: &str, cidr: &str) {
        if cidr.contains(':') {
            self.ip_ok(&["-6", "addr", "add", cidr, "dev", dev, "nodad"]);
        } else {
            self.ip_ok(&["addr", "add", cidr, "dev", dev]);
        }
    }

    /// Starts `args[0] args[1..]` in the namespace (`ip netns exec` execs, so the PID is the
    /// program's), stdin from /dev/null, stdout and stderr to the file `log` (created or
    /// truncated). The process is killed by PID when the guard or this namespace is dropped,
    /// whichever comes first. Pass a foreground mode to daemons (`bird -f`, …).
    pub fn spawn<I, S>(&self, args: I, log: impl AsRef<Path>) -> ChildGuard
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let what = args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
        assert!(!args.is_empty(), "Netns::spawn needs a program");
        let log = log.as_ref().to_path_buf();
        let file = File::create(&log).unwrap_or_else(|e| panic!("cannot create log {}: {e}", log.display()));
        let err = file.try_clone().expect("duplicate log file handle");
        // Hold the lock across spawn + register so a concurrent drop of the namespace cannot
        // miss a process that was just started.
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}` in {}: {e}", self.name));
        let pid = child.id();
        pids.push(pid);
        ChildGuard { child: Some(child), pid, what, netns: self.name.clone(), log, pids: Arc::clone(&self.pids) }
    }

    /// PIDs of the processes started with [`Netns::spawn`] that are not yet reaped.
    pub fn pids(&self) -> Vec<u32> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Unreaped children only (their guards deregister after `wait`), so no PID was reused.
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        match Command::new("ip").args(["netns", "del", &self.name]).stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("warning: `ip netns del {}` failed: {}", self.name, String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("warning: cannot run `ip netns del {}`: {e}", self.name),
        }
    }
}

/// Names of the namespaces `ip netns list` shows.
pub fn netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).stdin(Stdio::null()).output().expect("running ip netns list");
    // Lines are `NAME` or `NAME (id: N)`.
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

fn check(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstderr: {}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process started in a namespace by [`Netns::spawn`]. Dropping it kills it by PID (SIGKILL)
/// and reaps it; [`ChildGuard::stop`] asks politely first.
pub struct ChildGuard {
    child: Option<Child>,
    pid: u32,
    what: String,
    netns: String,
    log: PathBuf,
    pids: PidRegistry,
}

impl fmt::Debug for ChildGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildGuard")
            .field("pid", &self.pid)
            .field("what", &self.what)
            .field("netns", &self.netns)
            .field("log", &self.log)
            .finish()
    }
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited (it is then reaped), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.reaped();
        Some(status)
    }

    /// Sends SIGTERM (by PID), waits up to `grace`, then SIGKILLs; always reaps the process.
    pub fn stop(&mut self, grace: Duration) {
        let Some(child) = self.child.as_mut() else { return };
        if child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let exited = poll_until(grace, || child.try_wait().ok().flatten());
            if exited.is_none() {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
        self.reaped();
    }

    fn reaped(&mut self) {
        self.child = None;
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != self.pid);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
            self.reaped();
        }
    }
}

/// Creates a veth pair with end `a_if` in `a` and end `b_if` in `b`, adds the CIDRs (IPv4 or
/// IPv6; IPv6 with `nodad`) and sets both ends up. The pair is created inside `a` with its peer
/// placed straight into `b`, so no interface ever exists in the root namespace.
pub fn veth_pair(a: &Netns, a_if: &str, a_addrs: &[&str], b: &Netns, b_if: &str, b_addrs: &[&str]) {
    if a.name == b.name && a_if == b_if {
        panic!("veth_pair: both ends are {a_if} in {}", a.name);
    }
    // The kernel creates the peer directly in `b` (`peer … netns B`), so `b_if` only has to be
    // free in `b`, and nothing — not even a temporary name — appears in the root namespace.
    if a.name == b.name {
        a.ip_ok(&["link", "add", a_if, "type", "veth", "peer", "name", b_if]);
    } else {
        a.ip_ok(&["link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name]);
    }
    for cidr in a_addrs {
        a.add_addr(a_if, cidr);
    }
    for cidr in b_addrs {
        b.add_addr(b_if, cidr);
    }
    a.ip_ok(&["link", "set", a_if, "up"]);
    b.ip_ok(&["link", "set", b_if, "up"]);
}

/// An L2 segment: bridge `br0` inside its own "lan" namespace (STP off, multicast snooping off
/// so NDP/multicast floods to every port). Nodes join with [`Bridge::attach`].
pub struct Bridge {
    ns: Netns,
    ports: AtomicU32,
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge").field("ns", &self.ns.name).finish()
    }
}

impl Bridge {
    /// The bridge's interface name inside [`Bridge::ns`].
    pub const NAME: &'static str = "br0";

    pub fn new(label: &str) -> Bridge {
        let ns = Netns::new(label);
        ns.ip_ok(&["link", "add", Self::NAME, "type", "bridge"]);
        ns.ip_ok(&["link", "set", Self::NAME, "type", "bridge", "mcast_snooping", "0"]);
        ns.ip_ok(&["link", "set", Self::NAME, "up"]);
        Bridge { ns, ports: AtomicU32::new(0) }
    }

    /// The "lan" namespace holding the bridge (for `bridge fdb`, taking ports down, …).
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Connects `ns` to the bridge with a veth pair: `if_name` (with `addrs`, up) in `ns`, and a
    /// bridge port in the lan namespace, whose name (`pN`) is returned — take it down with
    /// `bridge.ns().ip_ok(&["link", "set", port, "down"])` to cut the node's link.
    pub fn attach(&self, ns: &Netns, if_name: &str, addrs: &[&str]) -> String {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        veth_pair(&self.ns, &port, &[], ns, if_name, addrs);
        self.ns.ip_ok(&["link", "set", &port, "master", Self::NAME]);
        port
    }
}

/// A bpffs mounted on a fresh directory in the root mount namespace (visible inside
/// `ip netns exec`, which only remounts /sys), unmounted and removed on drop.
pub struct Bpffs {
    pub dir: PathBuf,
}

impl fmt::Debug for Bpffs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bpffs").field("dir", &self.dir).finish()
    }
}

impl Bpffs {
    pub fn new(label: &str) -> Bpffs {
        let dir = std::env::temp_dir().join(format!(
            "halyard-bpffs-{label}-{}-{}",
            std::process::id(),
            NETNS_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&dir).status().unwrap();
        assert!(st.success(), "mount -t bpf bpf {}", dir.display());
        Bpffs { dir }
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
