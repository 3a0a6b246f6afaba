//! The reconcile step: manifest directory → model → LB-IPAM and pod CIDRs → persisted state and
//! a snapshot the API and metrics read. Synchronous and deterministic; the caller decides when
//! to run it (file events, periodic resync).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use halyard_ipam::lbipam::ServiceSpec;
use halyard_ipam::podcidr::{NodeRequest, PodCidrOutcome, reconcile_node_cidrs};
use halyard_ipam::{Outcome, ServiceKey};
use halyard_model::{Diagnostic, ManifestDir, Model};

use crate::config::AgentConfig;
use crate::state::{self, PersistedState, STATE_VERSION};
use crate::translate;

/// Everything the API and metrics show, as of one reconcile.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Reconciles that changed something, since the agent started.
    pub generation: u64,
    pub reconciled_at: Option<SystemTime>,
    pub model: Model,
    pub services: Vec<ServiceSpec>,
    pub lb: Outcome,
    pub pods: PodCidrOutcome,
    pub diagnostics: Vec<Diagnostic>,
    pub files: usize,
}

#[derive(Debug)]
pub struct Reconciler {
    cfg: AgentConfig,
    dir: ManifestDir,
    state: PersistedState,
    generation: u64,
    /// The diagnostics last published, so that a rejected edit (which changes no object) is
    /// still shown.
    diagnostics: Vec<Diagnostic>,
    /// The last reconcile failed (its state could not be saved): retry at the next step even if
    /// no file changed.
    retry: bool,
    /// Why each unsatisfied service was unsatisfied at the last reconcile, to log changes only.
    unsatisfied: BTreeMap<ServiceKey, String>,
    /// The last reconcile's state, written but not yet committed ([`Reconciler::commit`]).
    staged: Option<state::Staged>,
    /// `state` must be staged again (its commit failed).
    unsaved: bool,
    /// Commits staged states off the reconcile path.
    writer: state::Writer,
    /// Numbers the staged states' temporary files.
    stage_seq: u64,
    /// How long the last scan took (logged with the reconcile).
    scan_time: std::time::Duration,
}

impl Reconciler {
    /// Opens the manifest directory and loads the persisted state. Both must be usable: an agent
    /// that cannot read its state would reassign every IP, so it does not start.
    pub fn open(cfg: AgentConfig) -> anyhow::Result<Self> {
        let mut dir = ManifestDir::open(&cfg.manifest_dir)
            .map_err(|e| anyhow::anyhow!("manifest directory: {e} (set --manifest-dir or HALYARD_MANIFEST_DIR)"))?;
        let state = state::load(&cfg.state_file())?;
        state::remove_stale_temporaries(&cfg.state_file());
        // The versions in force before the restart stay in force for files that are broken now.
        for (rel, text) in &state.manifests {
            let rel_path = std::path::Path::new(rel);
            if rel_path.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                tracing::warn!(file = %rel, "ignoring a saved manifest with a path outside the manifest directory");
                continue;
            }
            if let Err(e) = dir.seed_last_good(&cfg.manifest_dir.join(rel_path), text) {
                tracing::warn!(file = %rel, "saved last good version no longer parses, dropped: {e}");
            }
        }
        tracing::info!(
            state_file = %cfg.state_file().display(),
            services = state.lbipam.len(),
            nodes = state.pod_cidrs.len(),
            "loaded persisted assignments"
        );
        Ok(Self {
            cfg,
            dir,
            state,
            generation: 0,
            diagnostics: Vec::new(),
            retry: false,
            unsatisfied: BTreeMap::new(),
            staged: None,
            unsaved: false,
            writer: state::Writer::start(),
            stage_seq: 0,
            scan_time: Default::default(),
        })
    }

    /// Re-scans the directory; if anything changed (or on the first call), reconciles and
    /// returns the new snapshot. Returns `None` when nothing changed.
    pub fn step(&mut self, force: bool) -> anyhow::Result<Option<Arc<Snapshot>>> {
        self.step_paths(force, None)
    }

    /// [`Reconciler::step`] after a watcher reported changes to `touched`: only those files are
    /// looked at when that is enough (see `ManifestDir::scan_paths`), else the whole directory.
    pub fn step_paths(
        &mut self,
        force: bool,
        touched: Option<&std::collections::BTreeSet<std::path::PathBuf>>,
    ) -> anyhow::Result<Option<Arc<Snapshot>>> {
        if self.writer.take_failed() {
            self.unsaved = true;
            self.retry = true;
        }
        let t = Instant::now();
        let report = match touched.and_then(|t| self.dir.scan_paths(t)) {
            Some(r) => r,
            None => self.dir.scan(),
        };
        self.scan_time = t.elapsed();
        for p in &report.applied {
            tracing::info!(file = %p.display(), "manifest applied");
        }
        for p in &report.removed {
            tracing::info!(file = %p.display(), "manifest removed");
        }
        for d in &report.errors {
            tracing::error!("{d}");
        }
        for p in &report.rejected {
            tracing::warn!(file = %p.display(), "manifest rejected: its last good version (if any) stays in force");
        }
        for d in &report.warnings {
            tracing::warn!("{d}");
        }
        if !report.changed && !force && !self.retry && self.dir.diagnostics() == self.diagnostics {
            return Ok(None);
        }
        // Nothing is published unless its state was written: a failed write leaves the previous
        // snapshot in force and is retried at the next step.
        self.retry = true;
        let snap = self.reconcile()?;
        self.retry = false;
        Ok(Some(Arc::new(snap)))
    }

    /// Makes the state of the last [`Reconciler::step`] durable and puts it in place, on the
    /// state writer's thread. The caller publishes the snapshot between the two, so the fsyncs
    /// (most of a reconcile's time on disk, and 100 ms on a busy one) are not on the path from
    /// a manifest change to the routers. That order loses nothing: the state was written before
    /// publishing, so a full disk or a broken state directory still publishes nothing; and an
    /// agent that dies before the commit restarts from the previous state, from which LB-IPAM,
    /// being deterministic, derives the same assignments for the same manifests. A failed
    /// commit is staged and committed again at the next step.
    pub fn commit(&mut self) {
        if let Some(staged) = self.staged.take() {
            self.writer.submit(staged);
        }
    }

    fn reconcile(&mut self) -> anyhow::Result<Snapshot> {
        let started = Instant::now();
        let model = self.dir.model();
        let t_model = started.elapsed();
        let pools = translate::pools(&model);
        let services = translate::services(&model);
        let lb = halyard_ipam::reconcile(&self.cfg.lbipam, &pools, &services, &self.state.lbipam);
        for r in &lb.released {
            tracing::warn!(service = %r.service, ip = %r.ip, reason = %r.reason, "LB IP released");
        }
        let nodes: Vec<NodeRequest> = model
            .nodes
            .values()
            .map(|n| {
                let mut requested = n.spec.pod_cidrs.clone();
                if requested.is_empty() {
                    requested.extend(n.spec.pod_cidr);
                }
                NodeRequest { name: n.metadata.name.clone(), requested }
            })
            .collect();
        // The pool config was validated at start-up, so this cannot fail on config grounds.
        let pods = reconcile_node_cidrs(&self.cfg.cluster_pool, &nodes, &self.state.pod_cidrs)?;
        let t_ipam = started.elapsed();
        let manifests = self
            .dir
            .files()
            .iter()
            .filter_map(|(path, f)| {
                let rel = path.strip_prefix(&self.cfg.manifest_dir).ok()?;
                Some((rel.to_string_lossy().into_owned(), f.last_good_text()?.to_string()))
            })
            .collect();
        let new_state = PersistedState {
            version: STATE_VERSION,
            lbipam: lb.assignments.clone(),
            pod_cidrs: pods.assignments.clone(),
            manifests,
        };
        let t_state = started.elapsed();
        if new_state != self.state || self.unsaved {
            log_assigned(&self.state.lbipam, &lb);
            self.stage_seq += 1;
            if let Some(old) = self.staged.replace(state::stage(&self.cfg.state_file(), &new_state, self.stage_seq)?) {
                old.discard();
            }
            self.unsaved = false;
            self.state = new_state;
        }
        let t_write = started.elapsed();
        self.unsatisfied = log_unsatisfied(&self.unsatisfied, &lb);
        self.generation += 1;
        self.diagnostics = self.dir.diagnostics();
        let satisfied = lb.services.values().filter(|s| s.satisfied).count();
        tracing::info!(
            generation = self.generation,
            services = lb.services.len(),
            satisfied,
            pools = lb.pools.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            scan_us = self.scan_time.as_micros() as u64,
            model_us = t_model.as_micros() as u64,
            ipam_us = (t_ipam - t_model).as_micros() as u64,
            state_us = (t_state - t_ipam).as_micros() as u64,
            write_us = (t_write - t_state).as_micros() as u64,
            "reconciled"
        );
        Ok(Snapshot {
            generation: self.generation,
            reconciled_at: Some(SystemTime::now()),
            services,
            lb,
            pods,
            diagnostics: self.diagnostics.clone(),
            files: self.dir.files().len(),
            model,
        })
    }
}

fn log_assigned(before: &halyard_ipam::Assignments, after: &Outcome) {
    for (key, list) in &after.assignments {
        if before.get(key) != Some(list) {
            let ips: Vec<String> = list.iter().map(|a| format!("{} ({})", a.ip, a.pool)).collect();
            tracing::info!(service = %key, ips = %ips.join(", "), "LB IPs assigned");
        }
    }
}

/// Logs services that became unsatisfied, or unsatisfied for another reason, since `before`;
/// returns the new set.
fn log_unsatisfied(before: &BTreeMap<ServiceKey, String>, after: &Outcome) -> BTreeMap<ServiceKey, String> {
    let now: BTreeMap<ServiceKey, String> = after
        .services
        .iter()
        .filter(|(_, s)| !s.satisfied && s.reason != halyard_ipam::Reason::Ignored)
        .map(|(k, s)| (k.clone(), format!("{}: {}", s.reason, s.message)))
        .collect();
    for (key, why) in &now {
        if before.get(key) != Some(why) {
            tracing::warn!(service = %key, "LB-IPAM request not satisfied: {why}");
        }
    }
    now
}
