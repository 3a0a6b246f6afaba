//! A real etcd (Debian etcd-server 3.4) on loopback for tests: fresh data directory, random
//! ports, killed by PID on drop. `restart_empty` replaces it with a fresh, empty one on the same
//! client port (what a lost etcd volume looks like to clients).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    generation: u32,
    /// Network namespace it runs in (`ip netns exec`), and the address it listens on.
    netns: Option<String>,
    ip: String,
    /// Server TLS with client-certificate auth: (ca, server cert, server key, client cert, client key
    /// used by `ctl`).
    tls: Option<Tls>,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ctl_cert: std::path::PathBuf,
    pub ctl_key: std::path::PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// True when etcd is installed; otherwise says why the test is skipped.
pub fn available(test: &str) -> bool {
    if Path::new(ETCD).exists() && Path::new(ETCDCTL).exists() {
        true
    } else {
        eprintln!("SKIP {test}: etcd not installed (apt-get install etcd-server etcd-client)");
        false
    }
}

impl Etcd {
    /// On loopback in the current namespace.
    pub fn start() -> Etcd {
        Self::start_in(None, "127.0.0.1")
    }

    /// Inside network namespace `netns` (if any), listening on `ip`.
    pub fn start_in(netns: Option<&str>, ip: &str) -> Etcd {
        Self::start_full(netns, ip, None)
    }

    /// With TLS and client-certificate authentication (`--client-cert-auth`).
    pub fn start_tls(netns: Option<&str>, ip: &str, tls: Tls) -> Etcd {
        Self::start_full(netns, ip, Some(tls))
    }

    fn start_full(netns: Option<&str>, ip: &str, tls: Option<Tls>) -> Etcd {
        let mut e = Etcd {
            tls,
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::Builder::new().prefix("halyard-etcd-").tempdir().unwrap(),
            generation: 0,
            netns: netns.map(String::from),
            ip: ip.to_string(),
        };
        e.spawn();
        e
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.ip, self.client_port)
    }

    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    fn spawn(&mut self) {
        self.generation += 1;
        let data = self.dir.path().join(format!("data-{}", self.generation));
        let curl = self.url();
        let purl = format!("http://{}:{}", self.ip, self.peer_port);
        let mut cmd = self.command(ETCD);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file").arg(&t.cert).arg("--key-file").arg(&t.key);
            cmd.arg("--trusted-ca-file").arg(&t.ca).arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "t", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &curl, "--advertise-client-urls", &curl])
            .args(["--listen-peer-urls", &purl, "--initial-advertise-peer-urls", &purl])
            .args(["--initial-cluster", &format!("t={purl}"), "--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.ctl(&["put", "/halyard-probe", "1"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not come up on {}", self.url());
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills it and starts it again on the same data (an etcd restart or upgrade).
    pub fn restart(&mut self) {
        self.kill();
        self.generation -= 1;
        self.spawn();
    }

    /// Kills it and starts a fresh, empty etcd on the same ports.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Restarts it on the same data but on another client port, runs `f` against it there (so
    /// no client of the usual URL can see the changes as they happen), then restarts it on the
    /// usual port. For writes and compactions that a watcher must find out about afterwards.
    pub fn while_unreachable<R>(&mut self, f: impl FnOnce(&Etcd) -> R) -> R {
        let usual = self.client_port;
        self.kill();
        self.client_port = free_port();
        self.generation -= 1;
        self.spawn();
        let r = f(self);
        self.kill();
        self.client_port = usual;
        self.generation -= 1;
        self.spawn();
        r
    }

    /// The current revision of the store.
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&["get", "/halyard-probe", "-w", "json"]).expect("etcdctl get");
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
        v["header"]["revision"].as_i64().expect("revision")
    }

    /// Runs etcdctl with another client identity (`None`: no client certificate at all).
    pub fn ctl_as(&self, identity: Option<(&Path, &Path)>, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.command(ETCDCTL);
        cmd.env("ETCDCTL_API", "3").args(["--endpoints", &self.url(), "--command-timeout=2s"]);
        if let Some(t) = &self.tls {
            cmd.arg("--cacert").arg(&t.ca);
        }
        if let Some((c, k)) = identity {
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        let out = cmd.args(args).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs etcdctl (API v3) against it; stdout on success.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.command(ETCDCTL);
        cmd.env("ETCDCTL_API", "3").args(["--endpoints", &self.url(), "--command-timeout=2s"]);
        if let Some(t) = &self.tls {
            cmd.arg("--cacert").arg(&t.ca).arg("--cert").arg(&t.ctl_cert).arg("--key").arg(&t.ctl_key);
        }
        let out = cmd.args(args).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
