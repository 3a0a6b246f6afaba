//! A directory of manifest files with "last good version" semantics.
//!
//! Each file is applied or rejected as a whole. A rejected new version never removes what the
//! file's last good version put in force; fixing the file clears its errors. An object defined
//! in two files stays with the file that defined it first; the other file's new version waits,
//! rejected, and is re-tried on every scan until the conflict goes away.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::diag::{Diagnostic, FileError, Severity};
use crate::model::Model;
use crate::object::{Object, ObjectKey};
use crate::parse::{ParsedFile, parse_manifest, parse_manifest_bytes, read_manifest};

/// Errors of [`ManifestDir::open`].
#[derive(Debug, thiserror::Error)]
pub enum ManifestDirError {
    #[error("manifest directory {} does not exist", .0.display())]
    NotFound(PathBuf),
    #[error("manifest path {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot read manifest directory {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one [`ManifestDir::scan`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanReport {
    /// The set of objects in force changed (an applied file with different objects, or a
    /// removed file that had objects).
    pub changed: bool,
    /// Files whose newest version is now in force.
    pub applied: Vec<PathBuf>,
    /// Files whose newest version was rejected in this scan (their last good version, if any,
    /// stays in force).
    pub rejected: Vec<PathBuf>,
    /// Files that disappeared.
    pub removed: Vec<PathBuf>,
    /// Files that were (re-)parsed in this scan because their content changed.
    pub parsed: Vec<PathBuf>,
    /// Warnings of the files parsed in this scan.
    pub warnings: Vec<Diagnostic>,
    /// Errors of the files rejected in this scan, and directory-level errors.
    pub errors: Vec<Diagnostic>,
}

/// State of one file.
#[derive(Clone, Debug, Default)]
pub struct FileState {
    fingerprint: Option<(u64, SystemTime)>,
    read_at: Option<SystemTime>,
    newest_hash: Option<u64>,
    last_good: Option<GoodVersion>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// The newest version parsed cleanly but conflicts with another file.
    pending: Option<(ParsedFile, u64, Arc<str>)>,
    /// Order of first acceptance, for "who defined it first" ties.
    first_accepted: Option<u64>,
}

#[derive(Clone, Debug)]
struct GoodVersion {
    objects: Vec<Object>,
    hash: u64,
    /// The text of that version, so that a caller can keep it across restarts.
    text: Arc<str>,
}

impl FileState {
    /// Objects of the last good version (the ones in force).
    pub fn objects(&self) -> &[Object] {
        self.last_good.as_ref().map_or(&[], |g| &g.objects)
    }

    /// Text of the last good version, if the file ever parsed cleanly.
    pub fn last_good_text(&self) -> Option<&str> {
        self.last_good.as_ref().map(|g| &*g.text)
    }

    /// Content hash of the last good version, if the file ever parsed cleanly.
    pub fn last_good_hash(&self) -> Option<u64> {
        self.last_good.as_ref().map(|g| g.hash)
    }

    /// Errors of the newest version; empty when the newest version is in force.
    pub fn errors(&self) -> &[Diagnostic] {
        &self.errors
    }

    /// Warnings of the newest version.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// True when the newest version of the file is the one in force.
    pub fn is_current(&self) -> bool {
        self.errors.is_empty() && self.last_good.as_ref().map(|g| g.hash) == self.newest_hash
    }
}

/// A watched directory of `*.yaml`, `*.yml` and `*.json` files (searched recursively).
#[derive(Debug)]
pub struct ManifestDir {
    root: PathBuf,
    /// `root` made absolute, to match the absolute paths a watcher reports.
    abs_root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    accept_seq: u64,
}

/// A file whose mtime is this close to the time it was read may have been written again in the
/// same mtime tick, so it is re-read (and hashed) instead of trusted ("racy" files, as in git).
const RACY_WINDOW: Duration = Duration::from_secs(2);

impl ManifestDir {
    /// Opens a manifest directory. Nothing is read until [`ManifestDir::scan`].
    pub fn open(root: impl Into<PathBuf>) -> Result<ManifestDir, ManifestDirError> {
        let root = root.into();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(ManifestDir {
                abs_root: std::path::absolute(&root).unwrap_or_else(|_| root.clone()),
                root,
                files: BTreeMap::new(),
                accept_seq: 0,
            }),
            Ok(_) => Err(ManifestDirError::NotADirectory(root)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ManifestDirError::NotFound(root)),
            Err(source) => Err(ManifestDirError::Io { path: root, source }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every known file (including rejected ones), by path.
    pub fn files(&self) -> &BTreeMap<PathBuf, FileState> {
        &self.files
    }

    /// All current diagnostics: errors of rejected newest versions and warnings, by file.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.files.values().flat_map(|f| f.errors.iter().chain(&f.warnings)).cloned().collect()
    }

    /// True when some file's newest version is rejected.
    pub fn has_errors(&self) -> bool {
        self.files.values().any(|f| !f.errors.is_empty())
    }

    /// The model built from every file's objects in force.
    pub fn model(&self) -> Model {
        Model::from_objects(self.files.values().flat_map(|f| f.objects().iter().cloned()))
    }

    /// Installs `text` as the last good version of `file` (a path under the root), as if it had
    /// been accepted earlier — used to carry the versions in force across an agent restart. The
    /// next [`ManifestDir::scan`] reads the real file: a clean version replaces the seed, a broken
    /// one leaves the seed in force (and is reported), a deleted file removes it.
    pub fn seed_last_good(&mut self, file: &Path, text: &str) -> Result<(), FileError> {
        let parsed = parse_manifest(file, text)?;
        let state = self.files.entry(file.to_path_buf()).or_default();
        state.last_good =
            Some(GoodVersion { objects: parsed.objects, hash: content_hash(text.as_bytes()), text: text.into() });
        self.accept_seq += 1;
        state.first_accepted = Some(self.accept_seq);
        Ok(())
    }

    /// Re-reads the directory and applies what changed. Cheap when nothing changed: files whose
    /// size and mtime are unchanged (and not racy) are not even read, and files whose content
    /// hash is unchanged are not parsed.
    pub fn scan(&mut self) -> ScanReport {
        let mut report = ScanReport::default();

        // 1. List candidate files.
        let mut listed = BTreeSet::new();
        let mut unreadable_dirs = Vec::new();
        if let Err(e) = list_files(&self.root, &mut listed, &mut unreadable_dirs) {
            // The whole directory is unreadable (or gone): keep everything in force.
            report.errors.push(Diagnostic::file_level(
                &self.root,
                Severity::Error,
                format!("cannot read manifest directory: {e}; keeping the objects in force"),
            ));
            return report;
        }
        for (dir, e) in &unreadable_dirs {
            report.errors.push(Diagnostic::file_level(
                dir,
                Severity::Error,
                format!("cannot read directory: {e}; keeping the objects of its files in force"),
            ));
        }

        // 2. Removed files (files under an unreadable directory are kept).
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !listed.contains(*p) && !unreadable_dirs.iter().any(|(d, _)| p.starts_with(d)))
            .cloned()
            .collect();
        self.apply_scan(report, listed, gone)
    }

    /// [`ManifestDir::scan`] limited to `paths`, the files a watcher reported: only they are
    /// looked at, so a change costs the same with 10 files or 10,000. `None` when one of them is
    /// not a plain manifest file path under the root (a directory, a hidden path such as a
    /// ConfigMap mount's `..data`, or outside the root): the caller then scans everything.
    pub fn scan_paths(&mut self, paths: &BTreeSet<PathBuf>) -> Option<ScanReport> {
        let mut present = BTreeSet::new();
        let mut gone = Vec::new();
        for p in paths {
            // Keyed like the full scan's listing: the root as given, joined with the rest.
            let rel = p.strip_prefix(&self.root).or_else(|_| p.strip_prefix(&self.abs_root)).ok()?;
            let p = &self.root.join(rel);
            let plain = rel.components().all(|c| match c {
                std::path::Component::Normal(n) => n.to_str().is_some_and(|n| !n.starts_with('.')),
                _ => false,
            });
            let name = rel.file_name().and_then(|n| n.to_str())?;
            if !plain || !is_manifest_name(name) {
                return None;
            }
            match std::fs::metadata(p) {
                Ok(m) if m.is_file() => {
                    present.insert(p.clone());
                }
                Ok(_) => return None,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if self.files.contains_key(p) {
                        gone.push(p.clone());
                    }
                }
                // Unreadable: the full scan reports it.
                Err(_) => return None,
            }
        }
        Some(self.apply_scan(ScanReport::default(), present, gone))
    }

    /// Steps 2–5 of a scan: forgets `gone`, reads `listed` where it changed, applies.
    fn apply_scan(&mut self, mut report: ScanReport, listed: BTreeSet<PathBuf>, gone: Vec<PathBuf>) -> ScanReport {
        for p in gone {
            if let Some(state) = self.files.remove(&p)
                && !state.objects().is_empty()
            {
                report.changed = true;
            }
            report.removed.push(p);
        }

        // 3. Read changed files and parse them.
        let mut changed_now = BTreeSet::new();
        for path in &listed {
            let state = self.files.entry(path.clone()).or_default();
            let meta = std::fs::metadata(path);
            let fingerprint = meta.as_ref().ok().and_then(|m| Some((m.len(), m.modified().ok()?)));
            if let (Some(fp), Some(old), Some(read_at)) = (fingerprint, state.fingerprint, state.read_at)
                && fp == old
                && fp.1.checked_add(RACY_WINDOW).is_some_and(|t| t <= read_at)
            {
                continue;
            }
            let now = SystemTime::now();
            let bytes = match read_manifest(path) {
                Ok(b) => b,
                Err(msg) => {
                    let d = Diagnostic::file_level(path, Severity::Error, msg);
                    // Retry on every scan; report only when the error is new.
                    state.fingerprint = None;
                    state.newest_hash = None;
                    state.pending = None;
                    if state.errors != [d.clone()] {
                        state.errors = vec![d.clone()];
                        state.warnings.clear();
                        report.rejected.push(path.clone());
                        report.errors.push(d);
                    }
                    continue;
                }
            };
            state.fingerprint = fingerprint;
            state.read_at = Some(now);
            let hash = content_hash(&bytes);
            if state.newest_hash == Some(hash) {
                continue;
            }
            state.newest_hash = Some(hash);
            report.parsed.push(path.clone());
            changed_now.insert(path.clone());
            match parse_manifest_bytes(path, &bytes) {
                Ok(parsed) => {
                    state.warnings = parsed.warnings.clone();
                    report.warnings.extend(parsed.warnings.iter().cloned());
                    if state.last_good.as_ref().is_some_and(|g| g.hash == hash) {
                        // Back to the version in force (e.g. a broken edit was reverted).
                        state.errors.clear();
                        state.pending = None;
                        report.applied.push(path.clone());
                    } else {
                        // Parsing succeeded, so the bytes are UTF-8.
                        let text: Arc<str> = String::from_utf8_lossy(&bytes).into();
                        state.pending = Some((parsed, hash, text));
                    }
                }
                Err(fe) => {
                    state.pending = None;
                    state.errors = fe.errors().cloned().collect();
                    state.warnings = fe.warnings().cloned().collect();
                    report.warnings.extend(state.warnings.iter().cloned());
                    report.errors.extend(state.errors.iter().cloned());
                    report.rejected.push(path.clone());
                }
            }
        }

        // Nothing read changed and nothing disappeared: conflicts cannot have resolved either.
        if changed_now.is_empty() && report.removed.is_empty() {
            return report;
        }

        // 4. Apply clean versions, oldest files first, until no more can be applied.
        let mut owners: BTreeMap<ObjectKey, PathBuf> = BTreeMap::new();
        for (p, s) in &self.files {
            for o in s.objects() {
                owners.insert(o.key(), p.clone());
            }
        }
        loop {
            let mut queue: Vec<(u64, PathBuf)> = self
                .files
                .iter()
                .filter(|(_, s)| s.pending.is_some())
                .map(|(p, s)| (s.first_accepted.unwrap_or(u64::MAX), p.clone()))
                .collect();
            queue.sort();
            let mut progress = false;
            for (_, path) in queue {
                let Some(state) = self.files.get_mut(&path) else { continue };
                let Some((parsed, hash, text)) = state.pending.take() else { continue };
                if !conflicts(&path, &parsed, &owners).is_empty() {
                    state.pending = Some((parsed, hash, text));
                    continue;
                }
                for o in state.objects() {
                    owners.remove(&o.key());
                }
                for o in &parsed.objects {
                    owners.insert(o.key(), path.clone());
                }
                if state.objects() != parsed.objects.as_slice() {
                    report.changed = true;
                }
                state.last_good = Some(GoodVersion { objects: parsed.objects, hash, text });
                state.errors.clear();
                if state.first_accepted.is_none() {
                    self.accept_seq += 1;
                    state.first_accepted = Some(self.accept_seq);
                }
                report.applied.push(path.clone());
                progress = true;
            }
            if !progress {
                break;
            }
        }

        // 5. What is still pending is rejected for a conflict.
        for (path, state) in &mut self.files {
            let Some((parsed, _, _)) = &state.pending else { continue };
            let errs = conflicts(path, parsed, &owners);
            if changed_now.contains(path) || state.errors != errs {
                report.rejected.push(path.clone());
                report.errors.extend(errs.iter().cloned());
            }
            state.errors = errs;
        }

        report.applied.sort();
        report.rejected.sort();
        if report.changed || !report.rejected.is_empty() || !report.removed.is_empty() {
            tracing::debug!(
                applied = report.applied.len(),
                rejected = report.rejected.len(),
                removed = report.removed.len(),
                changed = report.changed,
                "manifest directory scanned"
            );
        }
        report
    }
}

/// One error per object of `parsed` whose key is owned by another file.
fn conflicts(path: &Path, parsed: &ParsedFile, owners: &BTreeMap<ObjectKey, PathBuf>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (o, doc) in parsed.objects.iter().zip(&parsed.documents) {
        let key = o.key();
        if let Some(owner) = owners.get(&key)
            && owner != path
        {
            out.push(Diagnostic {
                file: path.to_path_buf(),
                document: *doc,
                line: None,
                column: None,
                field: Some("metadata.name".into()),
                object: Some(key.to_string()),
                message: format!(
                    "{key} is already defined in {}; this file is not applied until one definition is removed",
                    owner.display()
                ),
                severity: Severity::Error,
            });
        }
    }
    out
}

fn content_hash(bytes: &[u8]) -> u64 {
    // SipHash with fixed keys: stable within a process, which is all change detection needs.
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// Whether a directory entry name is a manifest file: `*.yaml`, `*.yml`, `*.json`, not hidden,
/// not an editor temporary (`.foo.swp` is hidden, `foo~`, `#foo#`).
pub fn is_manifest_name(name: &str) -> bool {
    if name.starts_with('.') || name.ends_with('~') || name.starts_with('#') {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    [".yaml", ".yml", ".json"].iter().any(|ext| lower.ends_with(ext) && lower.len() > ext.len())
}

/// Lists manifest files under `dir` recursively (not following symlinked directories, which
/// could loop; symlinked files are followed, as in Kubernetes ConfigMap mounts). Errors on
/// subdirectories are collected; an error on `dir` itself is returned.
fn list_files(
    dir: &Path,
    out: &mut BTreeSet<PathBuf>,
    unreadable: &mut Vec<(PathBuf, std::io::Error)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            if let Err(e) = list_files(&path, out, unreadable) {
                unreadable.push((path, e));
            }
        } else if is_manifest_name(name) && (ft.is_file() || (ft.is_symlink() && !path.is_dir())) {
            // A dangling symlink is listed: reading it fails, which is reported.
            out.insert(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names() {
        for ok in ["a.yaml", "b.yml", "c.json", "D.YAML", "x.y.yaml"] {
            assert!(is_manifest_name(ok), "{ok}");
        }
        for bad in
            [".a.yaml", ".a.yaml.swp", "a.yaml~", "#a.yaml#", "a.yaml.swp", "a.txt", ".yaml", "4913", "a.yaml.tmp"]
        {
            assert!(!is_manifest_name(bad), "{bad}");
        }
    }
}
