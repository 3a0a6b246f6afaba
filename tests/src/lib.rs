//! Harness for Halyard's end-to-end tests: runs the real `halyard-agent` and `halyard` binaries
//! against a manifest directory in a temporary directory, and stops what it started (by PID,
//! on drop — also when a test panics).

pub mod etcd;
pub mod kubeapi;
pub mod l2;
pub mod netns;
pub mod peers;
pub mod tls;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// Path of a workspace binary, next to the test executable's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests live in target/<profile>/deps, harness binaries (benchmarks) in target/<profile>.
    let here = exe.parent().expect("executable directory");
    let dir = if here.ends_with("deps") { here.parent().expect("target/<profile>") } else { here };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running agent over its own temporary manifest and state directories.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub manifests: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    log: PathBuf,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Network namespace to run the agent in (`ip netns exec`, which execs: the PID is the agent's).
    netns: Option<String>,
}

impl Agent {
    /// Starts an agent over `files` (name, content) and waits until it answers.
    pub fn start(files: &[(&str, &str)]) -> anyhow::Result<Agent> {
        Self::start_with(files, &[])
    }

    pub fn start_with(files: &[(&str, &str)], extra_args: &[&str]) -> anyhow::Result<Agent> {
        Self::start_opts(files, extra_args, &[])
    }

    /// Starts with extra flags (which replace the harness defaults of the same name) and
    /// environment variables.
    pub fn start_opts(files: &[(&str, &str)], extra_args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Agent> {
        Self::start_full(None, files, extra_args, envs)
    }

    /// Starts the agent inside network namespace `netns`.
    pub fn start_in(netns: &str, files: &[(&str, &str)], extra_args: &[&str]) -> anyhow::Result<Agent> {
        Self::start_full(Some(netns), files, extra_args, &[])
    }

    fn start_full(
        netns: Option<&str>,
        files: &[(&str, &str)],
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Agent> {
        let dir = tempfile::Builder::new().prefix("halyard-e2e-").tempdir()?;
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests)?;
        for (name, text) in files {
            std::fs::write(manifests.join(name), text)?;
        }
        let mut agent = Agent {
            child: None,
            state: dir.path().join("state"),
            socket: dir.path().join("agent.sock"),
            log: dir.path().join("agent.log"),
            manifests,
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            netns: netns.map(String::from),
        };
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("halyard-agent"));
                c
            }
            None => Command::new(bin("halyard-agent")),
        };
        cmd.arg("--manifest-dir").arg(&self.manifests).arg("--state-dir").arg(&self.state);
        cmd.arg("--socket").arg(&self.socket);
        for (flag, value) in [("--metrics-addr", "off"), ("--node-name", "e2e-node"), ("--reload-debounce-ms", "20")] {
            if !self.extra_args.iter().any(|a| a == flag) {
                cmd.args([flag, value]);
            }
        }
        // Only what the test sets: a developer's own HALYARD_* variables must not leak in.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("HALYARD_")) {
            cmd.env_remove(k);
        }
        let child = cmd
            .args(&self.extra_args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting halyard-agent")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("halyard-agent exited early ({status}); log:\n{}", self.log());
            }
            if self.cli(&["status"]).status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("halyard-agent did not answer within 20 s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs the CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("halyard"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running halyard")
    }

    /// Runs the CLI with `-o json` and parses its output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.cli(&a);
        assert!(out.status.success(), "halyard {a:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("CLI JSON")
    }

    /// Writes (or replaces) a manifest file atomically, as editors and config tools do.
    pub fn write_manifest(&self, name: &str, text: &str) {
        let tmp = self.manifests.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests.join(name)).unwrap();
    }

    pub fn remove_manifest(&self, name: &str) {
        std::fs::remove_file(self.manifests.join(name)).unwrap();
    }

    /// Polls `f` until it returns `Some`, or fails after `timeout` with the agent log.
    pub fn wait_for<T>(&self, timeout: Duration, what: &str, mut f: impl FnMut(&Agent) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; agent log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the agent with SIGTERM (by PID) and waits for it.
    /// SIGKILL: the agent gets no chance to clean up (a node dying).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
    }

    /// Stops and starts the agent over the same directories.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// `namespace/name` → IPs, from `halyard service list -o json`.
    pub fn service_ips(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let v = self.json(&["service", "list"]);
        v.as_array()
            .expect("service list is an array")
            .iter()
            .map(|s| {
                let key = format!("{}/{}", s["namespace"].as_str().unwrap(), s["name"].as_str().unwrap());
                let ips = s["ips"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect();
                (key, ips)
            })
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The L2 election tests' and benchmark's manifests: a LAN pool, an announcement policy on eth0,
/// three services with requested IPs 10.80.1.200-202, and the three Nodes node-1..3.
pub const L2_ELECTION_MANIFESTS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lan}
spec:
  blocks: [{start: 10.80.1.200, stop: 10.80.1.209}]
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: lan}
spec:
  interfaces: ["^eth0$"]
  loadBalancerIPs: true
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, annotations: {lbipam.cilium.io/ips: "10.80.1.200"}}
spec: {type: LoadBalancer, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default, annotations: {lbipam.cilium.io/ips: "10.80.1.201"}}
spec: {type: LoadBalancer, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default, annotations: {lbipam.cilium.io/ips: "10.80.1.202"}}
spec: {type: LoadBalancer, ports: [{port: 53}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
---
apiVersion: v1
kind: Node
metadata: {name: node-3}
"#;
