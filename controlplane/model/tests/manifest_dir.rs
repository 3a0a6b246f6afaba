//! `ManifestDir`: last-good semantics, cross-file conflicts, change detection.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use halyard_model::*;

fn pool(name: &str, cidr: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata:\n  name: {name}\nspec:\n  blocks:\n  - cidr: {cidr}\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, text).unwrap();
    p
}

fn pools(md: &ManifestDir) -> Vec<(String, String)> {
    md.model().cilium_pools.values().map(|p| (p.metadata.name.clone(), p.spec.blocks[0].to_string())).collect()
}

fn setup() -> (tempfile::TempDir, ManifestDir) {
    let tmp = tempfile::tempdir().unwrap();
    let md = ManifestDir::open(tmp.path()).unwrap();
    (tmp, md)
}

#[test]
fn open_fails_on_a_missing_directory_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = ManifestDir::open(&missing).unwrap_err();
    assert!(matches!(err, ManifestDirError::NotFound(_)));
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    let file = write(tmp.path(), "f.yaml", "");
    assert!(matches!(ManifestDir::open(&file), Err(ManifestDirError::NotADirectory(_))));
}

#[test]
fn edit_break_fix_delete() {
    let (tmp, mut md) = setup();
    let a = write(tmp.path(), "a.yaml", &pool("blue", "10.0.0.0/24"));

    // New file: applied.
    let r = md.scan();
    assert_eq!(r.applied, std::slice::from_ref(&a));
    assert!(r.changed && r.errors.is_empty());
    assert_eq!(pools(&md), [("blue".into(), "10.0.0.0/24".into())]);

    // Edit: the new version replaces the old one.
    write(tmp.path(), "a.yaml", &pool("blue", "10.0.1.0/24"));
    let r = md.scan();
    assert_eq!(r.applied, std::slice::from_ref(&a));
    assert!(r.changed);
    assert_eq!(pools(&md), [("blue".into(), "10.0.1.0/24".into())]);

    // Break: the last good version stays in force, the errors are recorded.
    write(tmp.path(), "a.yaml", &pool("blue", "10.0.1.300/24"));
    let r = md.scan();
    assert_eq!(r.rejected, std::slice::from_ref(&a));
    assert!(r.applied.is_empty() && !r.changed);
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].field.as_deref(), Some("spec.blocks[0].cidr"));
    assert_eq!(pools(&md), [("blue".into(), "10.0.1.0/24".into())]);
    assert!(md.has_errors());
    assert_eq!(md.diagnostics().len(), 1);
    assert!(!md.files()[&a].is_current());
    assert_eq!(md.files()[&a].objects().len(), 1);

    // Scanning again reports nothing new, and keeps the errors visible.
    let r = md.scan();
    assert!(r.rejected.is_empty() && r.errors.is_empty() && r.parsed.is_empty());
    assert_eq!(md.diagnostics().len(), 1);

    // Fix: errors clear, the new version applies.
    write(tmp.path(), "a.yaml", &pool("blue", "10.0.2.0/24"));
    let r = md.scan();
    assert_eq!(r.applied, std::slice::from_ref(&a));
    assert!(r.changed);
    assert!(!md.has_errors() && md.diagnostics().is_empty());
    assert!(md.files()[&a].is_current());
    assert_eq!(pools(&md), [("blue".into(), "10.0.2.0/24".into())]);

    // Delete: its objects are gone.
    fs::remove_file(&a).unwrap();
    let r = md.scan();
    assert_eq!(r.removed, [a]);
    assert!(r.changed);
    assert!(md.model().is_empty());
    assert!(md.files().is_empty());
}

#[test]
fn reverting_a_broken_edit_reapplies_without_a_model_change() {
    let (tmp, mut md) = setup();
    let good = pool("blue", "10.0.0.0/24");
    let a = write(tmp.path(), "a.yaml", &good);
    md.scan();
    write(tmp.path(), "a.yaml", "kind: [");
    assert_eq!(md.scan().rejected, std::slice::from_ref(&a));
    write(tmp.path(), "a.yaml", &good);
    let r = md.scan();
    assert_eq!(r.applied, [a]);
    assert!(!r.changed, "same objects as the version in force");
    assert!(!md.has_errors());
}

#[test]
fn a_file_that_never_parsed_contributes_nothing() {
    let (tmp, mut md) = setup();
    let b =
        write(tmp.path(), "b.yaml", "apiVersion: cilium.io/v1\nkind: CiliumLoadBalancerIPPool\nmetadata:\n  name: x\n");
    fs::write(tmp.path().join("c.yaml"), b"kind: \xff\n").unwrap();
    let r = md.scan();
    assert_eq!(r.rejected, [b.clone(), tmp.path().join("c.yaml")]);
    assert!(!r.changed);
    assert!(md.model().is_empty());
    assert!(md.files()[&b].objects().is_empty());
    assert_eq!(md.diagnostics().len(), 2);
    // Deleting a rejected file removes its errors and changes nothing.
    fs::remove_file(&b).unwrap();
    let r = md.scan();
    assert_eq!(r.removed, [b]);
    assert!(!r.changed);
    assert_eq!(md.diagnostics().len(), 1);
}

#[test]
fn unchanged_files_are_not_reparsed() {
    let (tmp, mut md) = setup();
    let a = write(tmp.path(), "a.yaml", &pool("blue", "10.0.0.0/24"));
    write(tmp.path(), "b.yaml", &pool("red", "10.1.0.0/24"));
    let r = md.scan();
    assert_eq!(r.parsed.len(), 2);

    let r = md.scan();
    assert_eq!(r, ScanReport::default(), "nothing changed, nothing parsed");

    // Rewriting the same bytes (new mtime) is read and hashed, but not parsed.
    write(tmp.path(), "a.yaml", &pool("blue", "10.0.0.0/24"));
    let r = md.scan();
    assert!(r.parsed.is_empty() && !r.changed);

    // Touching one file re-parses only that file.
    write(tmp.path(), "b.yaml", &pool("red", "10.2.0.0/24"));
    let r = md.scan();
    assert_eq!(r.parsed, [tmp.path().join("b.yaml")]);
    assert_eq!(r.applied, [tmp.path().join("b.yaml")]);
    assert!(md.files()[&a].is_current());
}

#[test]
fn files_with_old_unchanged_size_and_mtime_are_not_even_read() {
    let (tmp, mut md) = setup();
    let a = write(tmp.path(), "a.yaml", &pool("blue", "10.0.0.0/24"));
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options().write(true).open(&a).unwrap().set_modified(old).unwrap();
    md.scan();
    // Same size, same (old) mtime, different bytes: the file is trusted without reading it,
    // which is what keeps a no-op scan cheap. (A real edit moves the mtime.)
    write(tmp.path(), "a.yaml", &pool("blue", "10.0.9.0/24"));
    fs::File::options().write(true).open(&a).unwrap().set_modified(old).unwrap();
    assert!(md.scan().parsed.is_empty());
    assert_eq!(pools(&md), [("blue".into(), "10.0.0.0/24".into())]);
    // A new mtime is noticed.
    fs::File::options().write(true).open(&a).unwrap().set_modified(SystemTime::now()).unwrap();
    assert_eq!(md.scan().applied, [a]);
    assert_eq!(pools(&md), [("blue".into(), "10.0.9.0/24".into())]);
}

#[test]
fn an_object_defined_in_two_files_stays_with_the_first() {
    let (tmp, mut md) = setup();
    let b = write(tmp.path(), "b.yaml", &pool("blue", "10.0.0.0/24"));
    md.scan();

    // a.yaml sorts first but comes later: it is rejected as a whole (its other pool too).
    let a =
        write(tmp.path(), "a.yaml", &format!("{}---\n{}", pool("green", "10.9.0.0/24"), pool("blue", "10.1.0.0/24")));
    let r = md.scan();
    assert_eq!(r.rejected, std::slice::from_ref(&a));
    assert!(r.applied.is_empty() && !r.changed);
    assert_eq!(r.errors.len(), 1);
    let e = &r.errors[0];
    assert_eq!(e.file, a);
    assert_eq!(e.document, 2);
    assert!(e.message.contains("CiliumLoadBalancerIPPool blue is already defined in"), "{}", e.message);
    assert!(e.message.contains(&b.display().to_string()), "{}", e.message);
    assert!(e.to_string().contains(&a.display().to_string()));
    assert_eq!(pools(&md), [("blue".into(), "10.0.0.0/24".into())], "nothing of a.yaml is half-applied");

    // Once b.yaml stops defining it, a.yaml applies without being touched.
    write(tmp.path(), "b.yaml", &pool("red", "10.2.0.0/24"));
    let r = md.scan();
    assert_eq!(r.applied, [a.clone(), b.clone()]);
    assert!(r.rejected.is_empty());
    assert!(!md.has_errors());
    assert_eq!(
        pools(&md),
        [
            ("blue".into(), "10.1.0.0/24".into()),
            ("green".into(), "10.9.0.0/24".into()),
            ("red".into(), "10.2.0.0/24".into())
        ]
    );
}

#[test]
fn earlier_files_keep_their_objects_even_when_they_change() {
    let (tmp, mut md) = setup();
    let a = write(tmp.path(), "a.yaml", &pool("green", "10.9.0.0/24"));
    md.scan();
    let b = write(tmp.path(), "b.yaml", &pool("blue", "10.0.0.0/24"));
    md.scan();
    // a.yaml (accepted first) now also wants "blue", which b.yaml holds: a's new version waits.
    write(tmp.path(), "a.yaml", &format!("{}---\n{}", pool("green", "10.9.0.0/24"), pool("blue", "10.1.0.0/24")));
    let r = md.scan();
    assert_eq!(r.rejected, std::slice::from_ref(&a));
    assert!(r.errors[0].message.contains(&b.display().to_string()));
    assert_eq!(pools(&md)[0], ("blue".into(), "10.0.0.0/24".into()));
    // Deleting b.yaml lets a.yaml in.
    fs::remove_file(&b).unwrap();
    let r = md.scan();
    assert_eq!(r.removed, [b]);
    assert_eq!(r.applied, [a]);
    assert_eq!(pools(&md)[0], ("blue".into(), "10.1.0.0/24".into()));
}

#[test]
fn new_files_defining_the_same_object_tie_by_path() {
    let (tmp, mut md) = setup();
    let a = write(tmp.path(), "a.yaml", &pool("blue", "10.0.0.0/24"));
    let b = write(tmp.path(), "b.yaml", &pool("blue", "10.1.0.0/24"));
    let r = md.scan();
    assert_eq!(r.applied, [a]);
    assert_eq!(r.rejected, [b]);
    assert_eq!(pools(&md), [("blue".into(), "10.0.0.0/24".into())]);
}

#[test]
fn namespaced_objects_in_different_namespaces_do_not_conflict() {
    let (tmp, mut md) = setup();
    let svc = |ns: &str| format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: {ns}\n");
    write(tmp.path(), "a.yaml", &svc("a"));
    write(tmp.path(), "b.yaml", &svc("b"));
    write(tmp.path(), "c.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n");
    write(tmp.path(), "d.yaml", &svc("default"));
    let r = md.scan();
    assert_eq!(r.applied.len(), 3);
    assert_eq!(r.rejected, [tmp.path().join("d.yaml")], "default/web is in c.yaml");
    assert_eq!(md.model().services.len(), 3);
}

#[test]
fn only_manifest_files_are_read_recursively() {
    let (tmp, mut md) = setup();
    write(tmp.path(), "a.yaml", &pool("a", "10.0.0.0/24"));
    write(tmp.path(), "sub/dir/b.yml", &pool("b", "10.0.1.0/24"));
    write(
        tmp.path(),
        "c.json",
        r#"{"apiVersion":"cilium.io/v2","kind":"CiliumLoadBalancerIPPool","metadata":{"name":"c"},"spec":{"blocks":[{"cidr":"10.0.2.0/24"}]}}"#,
    );
    for junk in
        [".hidden.yaml", ".a.yaml.swp", "a.yaml~", "#a.yaml#", "notes.txt", "4913", ".git/x.yaml", "sub/.b.yml.swp"]
    {
        write(tmp.path(), junk, "this: [is not yaml");
    }
    let r = md.scan();
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert_eq!(r.applied.len(), 3);
    let names: Vec<_> = pools(&md).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn warnings_are_reported_with_the_scan_that_parsed_the_file() {
    let (tmp, mut md) = setup();
    write(tmp.path(), "a.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n");
    let r = md.scan();
    assert_eq!(r.warnings.len(), 1);
    assert!(r.warnings[0].message.starts_with("unknown kind Deployment"));
    assert_eq!(md.diagnostics().len(), 1, "current warnings stay visible");
    assert!(!md.has_errors());
    assert!(md.scan().warnings.is_empty(), "not repeated when nothing changed");
}

#[test]
fn a_vanished_directory_keeps_everything_in_force() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("m");
    fs::create_dir(&root).unwrap();
    write(&root, "a.yaml", &pool("blue", "10.0.0.0/24"));
    let mut md = ManifestDir::open(&root).unwrap();
    md.scan();
    fs::remove_dir_all(&root).unwrap();
    let r = md.scan();
    assert_eq!(r.errors.len(), 1);
    assert!(r.removed.is_empty());
    assert_eq!(md.model().cilium_pools.len(), 1);
}

#[test]
fn seeded_last_good_versions_survive_a_restart_with_a_broken_file() {
    let (tmp, mut md) = setup();
    let good = pool("blue", "10.0.0.0/24");
    let p = write(tmp.path(), "pools.yaml", &good);
    md.scan();
    assert_eq!(md.files()[&p].last_good_text(), Some(good.as_str()));

    // "Restart": a fresh ManifestDir seeded with the text in force, while the file is broken.
    write(tmp.path(), "pools.yaml", &pool("blue", "10.0.0.0/99"));
    let mut md2 = ManifestDir::open(tmp.path()).unwrap();
    md2.seed_last_good(&p, &good).unwrap();
    let report = md2.scan();
    assert!(report.rejected.contains(&p));
    assert_eq!(pools(&md2), vec![("blue".to_string(), "10.0.0.0/24".to_string())]);
    assert!(md2.has_errors());

    // Fixed: the new version replaces the seed.
    write(tmp.path(), "pools.yaml", &pool("blue", "10.9.0.0/24"));
    md2.scan();
    assert_eq!(pools(&md2), vec![("blue".to_string(), "10.9.0.0/24".to_string())]);
    assert!(!md2.has_errors());

    // A seed whose file was deleted meanwhile is dropped at the first scan.
    let mut md3 = ManifestDir::open(tmp.path()).unwrap();
    md3.seed_last_good(&tmp.path().join("gone.yaml"), &pool("gone", "10.1.0.0/24")).unwrap();
    md3.scan();
    assert!(!md3.model().cilium_pools.contains_key("gone"));
    // A seed that does not parse is refused.
    assert!(md3.seed_last_good(&p, "kind: [").is_err());
}

/// `scan_paths` reads only the files it is given, with the same outcome as a full scan for
/// them, and declines (None) what only a full scan can handle.
#[test]
fn scan_paths_reads_only_the_given_files_and_declines_what_it_cannot_handle() {
    let (tmp, mut md) = setup();
    let a = write(tmp.path(), "a.yaml", &pool("blue", "10.0.0.0/24"));
    let b = write(tmp.path(), "sub/b.yaml", &pool("green", "10.0.1.0/24"));
    md.scan();
    let set = |ps: &[&PathBuf]| ps.iter().map(|p| (*p).clone()).collect::<std::collections::BTreeSet<_>>();

    // A new file and an edit, given by path.
    let c = write(tmp.path(), "c.yaml", &pool("red", "10.0.2.0/24"));
    write(tmp.path(), "a.yaml", &pool("blue", "10.0.9.0/24"));
    // b changes too but is not given: a targeted scan does not look at it.
    write(tmp.path(), "sub/b.yaml", &pool("green", "10.0.8.0/24"));
    let r = md.scan_paths(&set(&[&a, &c])).expect("plain manifest paths");
    assert_eq!(r.applied, vec![a.clone(), c.clone()]);
    assert!(r.changed);
    let mut got = pools(&md);
    got.sort();
    assert_eq!(
        got,
        [
            ("blue".into(), "10.0.9.0/24".into()),
            ("green".into(), "10.0.1.0/24".into()),
            ("red".into(), "10.0.2.0/24".into())
        ]
    );

    // A removed file.
    fs::remove_file(&c).unwrap();
    let r = md.scan_paths(&set(&[&c])).unwrap();
    assert_eq!(r.removed, vec![c.clone()]);
    assert!(r.changed);

    // Declined: a hidden path (a ConfigMap mount's ..data), a directory, a path outside the
    // root, a non-manifest name. A full scan then picks b up.
    assert!(md.scan_paths(&set(&[&tmp.path().join("..data")])).is_none());
    assert!(md.scan_paths(&set(&[&tmp.path().join("sub")])).is_none());
    assert!(md.scan_paths(&set(&[&PathBuf::from("/etc/hosts.yaml")])).is_none());
    assert!(md.scan_paths(&set(&[&tmp.path().join("notes.txt")])).is_none());
    let r = md.scan();
    assert_eq!(r.applied, vec![b]);
}
