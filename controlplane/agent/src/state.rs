//! The agent's persistent state: what LB-IPAM and the pod CIDR allocator handed out, so that a
//! restart re-derives the same assignments instead of reshuffling them.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the directory): a crash leaves
//! either the old or the new file, never a torn one. The agent writes the temporary file before
//! it publishes a reconcile and makes it durable right after (see `Reconciler::commit`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use halyard_ipam::Assignments;
use ipnet::IpNet;

/// Bumped when the layout changes incompatibly.
pub const STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    pub version: u32,
    /// Service `namespace/name` → its LoadBalancer IPs.
    pub lbipam: Assignments,
    /// Node name → its pod CIDRs.
    pub pod_cidrs: BTreeMap<String, Vec<IpNet>>,
    /// Manifest file (relative to the manifest directory) → the text of its version in force,
    /// so that a file that is broken while the agent restarts keeps its last good version.
    #[serde(default)]
    pub manifests: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "state file {path} is not valid ({reason}). Refusing to start rather than reassign every IP: fix the file, \
         or move it aside to start from empty state (services may then get different IPs)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Loads the state; a missing file is an empty state (first start).
pub fn load(path: &Path) -> Result<PersistedState, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(PersistedState { version: STATE_VERSION, ..Default::default() });
        }
        Err(e) => return Err(StateError::Read { path: path.into(), source: e }),
    };
    let state: PersistedState =
        serde_json::from_str(&text).map_err(|e| StateError::Corrupt { path: path.into(), reason: e.to_string() })?;
    if state.version != STATE_VERSION {
        return Err(StateError::Corrupt {
            path: path.into(),
            reason: format!("version {} is not the supported version {STATE_VERSION}", state.version),
        });
    }
    Ok(state)
}

/// Saves the state atomically: [`stage`], then [`Staged::commit`].
#[cfg(test)]
pub fn save(path: &Path, state: &PersistedState) -> Result<(), StateError> {
    stage(path, state, 0)?.commit()
}

/// A new state written to its temporary file but not yet durable nor in place.
#[must_use = "a staged state is only saved once committed"]
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    tmp: PathBuf,
    file: std::fs::File,
}

/// Writes `state` to the temporary file next to `path`. Everything that can fail for want of
/// space or permission fails here (create, write); what is left for [`Staged::commit`] is
/// making it durable and putting it in place.
/// Each staged state has its own temporary file (`state.json.<seq>.tmp`), so that one can be
/// written while an older one is being committed.
pub fn stage(path: &Path, state: &PersistedState, seq: u64) -> Result<Staged, StateError> {
    let err = |source| StateError::Write { path: path.into(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension(format!("json.{seq}.tmp"));
    let mut text = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
    text.push(b'\n');
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(&text).map_err(err)?;
    Ok(Staged { path: path.into(), tmp, file })
}

impl Staged {
    /// fsync of the file, rename over the old one, fsync of the directory: a crash at any point
    /// leaves the old file or the new one, never a torn one.
    pub fn commit(self) -> Result<(), StateError> {
        let err = |source| StateError::Write { path: self.path.clone(), source };
        let res = self.file.sync_all().and_then(|()| std::fs::rename(&self.tmp, &self.path));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(err(e));
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        Ok(())
    }

    /// Drops a staged state that a newer one replaces.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Removes temporary files a previous run left (it died between staging and committing).
pub fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let n = e.file_name();
        let Some(n) = n.to_str() else { continue };
        if n.starts_with(&format!("{name}.")) && n.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Commits staged states on a thread of its own, in order, so the reconcile loop never waits
/// for an fsync (on a busy disk one can take 100 ms). When several are queued only the newest
/// is committed: each is a whole state.
#[derive(Debug)]
pub struct Writer {
    tx: std::sync::mpsc::Sender<Staged>,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Writer {
    pub fn start() -> Writer {
        let (tx, rx) = std::sync::mpsc::channel::<Staged>();
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = failed.clone();
        let spawned = std::thread::Builder::new().name("state-writer".into()).spawn(move || {
            while let Ok(mut staged) = rx.recv() {
                while let Ok(newer) = rx.try_recv() {
                    std::mem::replace(&mut staged, newer).discard();
                }
                if let Err(e) = staged.commit() {
                    tracing::error!("saving the state failed, will retry: {e}");
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        if let Err(e) = spawned {
            // Without the thread every submit fails and is retried: reported, never silent.
            tracing::error!("cannot start the state writer thread: {e}");
        }
        Writer { tx, failed }
    }

    /// Queues `staged` for commit.
    pub fn submit(&self, staged: Staged) {
        if let Err(e) = self.tx.send(staged) {
            e.0.discard();
            self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Whether a commit failed since the last call (the state must be staged again).
    pub fn take_failed(&self) -> bool {
        self.failed.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halyard_ipam::{Assignment, ServiceKey};

    #[test]
    fn the_writer_commits_the_newest_state_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = PersistedState { version: STATE_VERSION, ..Default::default() };
        let w = Writer::start();
        for i in 0..5u8 {
            s.pod_cidrs.insert(format!("node-{i}"), vec![]);
            w.submit(stage(&path, &s, u64::from(i)).unwrap());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while load(&path).map(|l| l != s).unwrap_or(true) {
            assert!(std::time::Instant::now() < deadline, "the newest state never landed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!w.take_failed());
        // No temporary file is left behind.
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, ["state.json"]);
        // A directory in the way: the commit fails and says so; its temporary file goes.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        w.submit(stage(&path, &s, 9).unwrap());
        while !w.take_failed() {
            assert!(std::time::Instant::now() < deadline + std::time::Duration::from_secs(5), "no failure reported");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!dir.path().join("state.json.9.tmp").exists());
        // Leftovers of a run that died between staging and committing are removed at start.
        std::fs::write(dir.path().join("state.json.3.tmp"), "x").unwrap();
        std::fs::write(dir.path().join("other.tmp"), "x").unwrap();
        remove_stale_temporaries(&path);
        assert!(!dir.path().join("state.json.3.tmp").exists());
        assert!(dir.path().join("other.tmp").exists());
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert_eq!(load(&path).unwrap().version, STATE_VERSION);
        let mut s = PersistedState { version: STATE_VERSION, ..Default::default() };
        s.lbipam.insert(
            ServiceKey::new("default", "web"),
            vec![Assignment { ip: "10.0.0.1".parse().unwrap(), pool: "blue".into() }],
        );
        s.pod_cidrs.insert("node-1".into(), vec!["10.1.0.0/24".parse().unwrap()]);
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), s);
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn corrupt_file_is_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{\"version\": 1, \"lbipam\": {\"no-slash\": []}, \"pod_cidrs\": {}}").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("namespace/name"), "{e}");
        std::fs::write(&path, "{\"version\": 9, \"lbipam\": {}, \"pod_cidrs\": {}}").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("version 9"));
    }
}
