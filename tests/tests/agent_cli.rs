//! End to end: the real `halyard-agent` over a manifest directory, queried with the real
//! `halyard` CLI. No root needed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use halyard_tests::{Agent, bin};

const POOLS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata:
  name: blue
spec:
  allowFirstLastIPs: "No"
  blocks:
    - cidr: 10.50.0.0/29
"#;

fn service(name: &str, extra_annotations: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
  annotations: {{{extra_annotations}}}
spec:
  type: LoadBalancer
  ports: [{{port: 80}}]
"#
    )
}

fn wait_long() -> Duration {
    Duration::from_secs(10)
}

/// The repository's example manifests, as the README's lab uses them.
fn example_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn examples_are_allocated_and_shown_by_the_cli() {
    let files = example_files();
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let agent = Agent::start(&refs).unwrap();
    let ips = agent.service_ips();
    assert_eq!(ips["kube-system/dns-tcp"], ips["kube-system/dns-udp"], "TCP/53 and UDP/53 share one IP");
    assert_eq!(ips["web/pinned"], vec!["172.20.1.15"]);
    assert_eq!(ips["web/legacy"], vec!["172.21.0.10"], "pinned to the MetalLB pool");
    assert_eq!(ips["web/dual"].len(), 2, "RequireDualStack gets both families");
    assert!(ips["web/other-controller"].is_empty());

    let services = agent.json(&["service", "list"]);
    let other = services.as_array().unwrap().iter().find(|s| s["name"] == "other-controller").unwrap();
    assert_eq!(other["reason"], "ignored");

    let pools = agent.json(&["ipam", "pools"]);
    let blue = pools.as_array().unwrap().iter().find(|p| p["name"] == "blue").unwrap();
    assert_eq!(blue["kind"], "CiliumLoadBalancerIPPool");
    assert_eq!(blue["total"], 16 + 256);
    assert_eq!(blue["used"], 4);

    let status = agent.json(&["status"]);
    assert_eq!(status["node"], "e2e-node");
    assert_eq!(status["objects"]["Service"], 7);
    assert_eq!(status["diagnostics"].as_array().unwrap().len(), 0);

    let nodes = agent.json(&["node", "list"]);
    assert_eq!(nodes[0]["podCIDRs"][0], "10.0.0.0/24");
    assert_eq!(nodes[1]["podCIDRs"][0], "10.0.1.0/24");

    // The table is aligned: every EXTERNAL-IP cell starts in the header's column.
    let out = agent.cli(&["service", "list"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let col = text.lines().next().unwrap().find("EXTERNAL-IP").unwrap();
    for line in text.lines().skip(1) {
        assert_ne!(line.as_bytes()[col], b' ', "{line}");
        assert_eq!(&line[col - 2..col], "  ", "{line}");
    }
    assert!(text.contains("172.20.1.15"));
}

#[test]
fn live_edits_apply_and_bad_files_keep_the_last_good_state() {
    let svc_a = service("a", "");
    let agent = Agent::start(&[("pools.yaml", POOLS), ("a.yaml", &svc_a)]).unwrap();
    assert_eq!(agent.service_ips()["default/a"], vec!["10.50.0.1"]);

    // A new file applies live.
    agent.write_manifest("b.yaml", &service("b", ""));
    agent.wait_for(wait_long(), "service b to get an IP", |a| {
        a.service_ips().get("default/b").filter(|v| v.as_slice() == ["10.50.0.2"]).cloned()
    });

    // A bad edit of the pool file: an error naming file, document and field; nothing changes.
    let bad = POOLS.replace("10.50.0.0/29", "10.50.0.300/29");
    agent.write_manifest(
        "pools.yaml",
        &format!("{bad}\n---\napiVersion: v9.example.com/v1\nkind: Gizmo\nmetadata: {{name: g}}\n"),
    );
    let diags = agent.wait_for(wait_long(), "the error to be reported", |a| {
        let s = a.json(&["status"]);
        let d = s["diagnostics"].as_array().unwrap().clone();
        (!d.is_empty()).then_some(d)
    });
    let err = diags.iter().find(|d| d["severity"] == "error").expect("an error");
    assert!(err["file"].as_str().unwrap().ends_with("pools.yaml"), "{err}");
    assert_eq!(err["document"], 1);
    assert_eq!(err["field"], "spec.blocks[0].cidr");
    assert!(err["text"].as_str().unwrap().contains("10.50.0.300/29"), "{err}");
    let ips = agent.service_ips();
    assert_eq!(ips["default/a"], vec!["10.50.0.1"]);
    assert_eq!(ips["default/b"], vec!["10.50.0.2"]);
    let pools = agent.json(&["ipam", "pools"]);
    assert_eq!(pools[0]["blocks"][0], "10.50.0.0/29", "the last good pool stays in force");
    // The table view shows the problem too.
    let text = String::from_utf8(agent.cli(&["status"]).stdout).unwrap();
    assert!(text.contains("1 errors"), "{text}");

    // Fixed, with an unknown kind in it: that is a warning, the rest applies.
    let fixed = POOLS.replace("10.50.0.0/29", "10.50.1.0/29");
    agent.write_manifest(
        "pools.yaml",
        &format!("{fixed}\n---\napiVersion: v9.example.com/v1\nkind: Gizmo\nmetadata: {{name: g}}\n"),
    );
    let diags = agent.wait_for(wait_long(), "the error to clear", |a| {
        let s = a.json(&["status"]);
        let d = s["diagnostics"].as_array().unwrap().clone();
        d.iter().all(|d| d["severity"] == "warning").then_some(d)
    });
    assert!(diags.iter().any(|d| d["message"].as_str().unwrap().contains("Gizmo")), "{diags:?}");
    // The pool moved, so its services move with it (the only reason an IP ever moves).
    let ips = agent.wait_for(wait_long(), "services to follow the pool", |a| {
        let ips = a.service_ips();
        (ips["default/a"] == ["10.50.1.1"]).then_some(ips)
    });
    assert_eq!(ips["default/b"], vec!["10.50.1.2"]);

    // Deleting a file deletes its objects.
    agent.remove_manifest("b.yaml");
    agent.wait_for(wait_long(), "service b to disappear", |a| {
        (!a.service_ips().contains_key("default/b")).then_some(())
    });
}

#[test]
fn restart_and_unrelated_pool_edits_never_move_an_ip() {
    let svc_a = service("a", "");
    let svc_b = service("b", "");
    let mut agent = Agent::start(&[("pools.yaml", POOLS), ("a.yaml", &svc_a), ("b.yaml", &svc_b)]).unwrap();
    let before = agent.service_ips();
    assert_eq!(before["default/a"], vec!["10.50.0.1"]);

    // Delete a, restart, and add a pool that sorts first by name: b keeps its IP.
    agent.remove_manifest("a.yaml");
    agent.stop();
    let state = std::fs::read_to_string(agent.state.join("state.json")).unwrap();
    assert!(state.contains("default/b"), "{state}");
    std::fs::write(
        agent.manifests.join("aaa.yaml"),
        "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: aaa}\nspec:\n  blocks: [{cidr: 10.60.0.0/24}]\n",
    )
    .unwrap();
    agent.restart().unwrap();
    let after = agent.service_ips();
    assert_eq!(after["default/b"], before["default/b"]);
    assert!(!after.contains_key("default/a"));
    // A new service now comes from the first pool by name.
    agent.write_manifest("c.yaml", &service("c", ""));
    agent.wait_for(wait_long(), "service c", |a| a.service_ips().get("default/c").filter(|v| !v.is_empty()).cloned());
}

#[test]
fn exhaustion_and_conflicts_are_reported_per_service_and_pool() {
    let tiny = "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: tiny}\nspec:\n  blocks: [{start: 10.70.0.1}]\n---\napiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: zz-overlap}\nspec:\n  blocks: [{cidr: 10.70.0.0/30}]\n";
    let s1 = service("one", "");
    let s2 = service("two", "");
    let agent = Agent::start(&[("pools.yaml", tiny), ("one.yaml", &s1), ("two.yaml", &s2)]).unwrap();
    let svcs = agent.json(&["service", "list"]);
    let two = svcs.as_array().unwrap().iter().find(|s| s["name"] == "two").unwrap();
    assert_eq!(two["satisfied"], false);
    assert_eq!(two["reason"], "out_of_ips");
    let pools = agent.json(&["ipam", "pools"]);
    let overlap = pools.as_array().unwrap().iter().find(|p| p["name"] == "zz-overlap").unwrap();
    assert!(overlap["conflict"].as_str().unwrap().contains("tiny"), "{overlap}");
    let text = String::from_utf8(agent.cli(&["ipam", "pools"]).stdout).unwrap();
    assert!(text.contains("CONFLICT") && text.contains("overlaps"), "{text}");
}

#[test]
fn config_layers_flag_env_file_default() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "resync_seconds = 7\nlog_level = \"debug\"\nlb_serve_unclassed = true\n").unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let agent = Agent::start_opts(
        &[("pools.yaml", POOLS), ("a.yaml", &service("a", ""))],
        &["--config", cfg_s, "--log-level", "info"],
        &[("HALYARD_LB_SERVE_UNCLASSED", "false")],
    )
    .unwrap();
    let c = agent.json(&["config", "view"]);
    assert_eq!(c["log-level"]["value"], "info");
    assert_eq!(c["log-level"]["source"], "flag");
    assert_eq!(c["lb-serve-unclassed"]["value"], "false");
    assert_eq!(c["lb-serve-unclassed"]["source"], "env HALYARD_LB_SERVE_UNCLASSED");
    assert_eq!(c["resync-seconds"]["value"], "7");
    assert!(c["resync-seconds"]["source"].as_str().unwrap().starts_with("file "));
    assert_eq!(c["reload-debounce-ms"]["source"], "flag");
    assert_eq!(c["cluster-pool-ipv4-mask-size"]["source"], "default");
    // The env setting took effect: an unclassed service is not served.
    let svcs = agent.json(&["service", "list"]);
    assert_eq!(svcs[0]["reason"], "ignored");
}

#[test]
fn bad_config_and_corrupt_state_stop_the_agent_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("halyard-agent"))
        .args(["--manifest-dir", "/nonexistent/halyard-manifests", "--metrics-addr", "off"])
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/halyard-manifests"), "{err}");

    let out = Command::new(bin("halyard-agent")).args(["--metrics-addr", "somewhere"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics-addr"));

    let mut agent = Agent::start(&[("pools.yaml", POOLS)]).unwrap();
    agent.stop();
    std::fs::create_dir_all(&agent.state).unwrap();
    std::fs::write(agent.state.join("state.json"), "{ not json").unwrap();
    let e = agent.restart().unwrap_err().to_string();
    assert!(e.contains("state.json") && e.contains("Refusing to start"), "{e}");
}

#[test]
fn cli_explains_a_missing_agent_and_completes_shells() {
    let out = Command::new(bin("halyard")).args(["--socket", "/nonexistent/halyard.sock", "status"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is halyard-agent running"), "{err}");
    assert!(err.contains("/nonexistent/halyard.sock"), "{err}");

    // A stale socket file (agent gone) is told apart from a missing one.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let out = Command::new(bin("halyard")).arg("--socket").arg(&sock).arg("status").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"), "{}", String::from_utf8_lossy(&out.stderr));

    let out = Command::new(bin("halyard")).args(["completion", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("_halyard"));
}

#[test]
fn check_mode_reports_problems_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), POOLS.replace("cidr: 10.50.0.0/29", "cidr: nope")).unwrap();
    let out = Command::new(bin("halyard-agent")).arg("--check").arg("--manifest-dir").arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad.yaml") && text.contains("spec.blocks[0].cidr") && text.contains("1 errors"), "{text}");
}

#[test]
fn metrics_are_served() {
    let agent =
        Agent::start_with(&[("pools.yaml", POOLS), ("a.yaml", &service("a", ""))], &["--metrics-addr", "127.0.0.1:0"])
            .unwrap();
    // The agent logs the port it bound.
    let log = agent.log();
    let addr = log
        .lines()
        .find(|l| l.contains("serving metrics"))
        .and_then(|l| l.split("addr=").nth(1))
        .map(|s| s.split_whitespace().next().unwrap().to_string())
        .expect("metrics address in the log");
    let body = http_get(&addr, "/metrics");
    assert!(body.contains("halyard_lbipam_ips_used{pool=\"blue\"} 1"), "{body}");
    assert!(body.contains("halyard_lbipam_ips_available{pool=\"blue\"} 5"), "{body}");
    assert!(body.contains("halyard_lbipam_services{state=\"satisfied\"} 1"), "{body}");
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_file_broken_while_the_agent_was_down_keeps_its_last_good_version() {
    let svc_a = service("a", "");
    let mut agent = Agent::start(&[("pools.yaml", POOLS), ("a.yaml", &svc_a)]).unwrap();
    assert_eq!(agent.service_ips()["default/a"], vec!["10.50.0.1"]);
    agent.stop();
    std::fs::write(agent.manifests.join("pools.yaml"), POOLS.replace("/29", "/33")).unwrap();
    agent.restart().unwrap();
    assert_eq!(agent.service_ips()["default/a"], vec!["10.50.0.1"], "log:\n{}", agent.log());
    let status = agent.json(&["status"]);
    let diags = status["diagnostics"].as_array().unwrap();
    assert!(diags.iter().any(|d| d["severity"] == "error" && d["field"] == "spec.blocks[0].cidr"), "{diags:?}");
    assert_eq!(agent.json(&["ipam", "pools"])[0]["blocks"][0], "10.50.0.0/29");
}

/// The state is written before a reconcile is published and made durable (fsync, rename)
/// right after. When only that last part fails, the reconcile is served and the save is retried
/// until it lands.
#[test]
fn a_failed_state_commit_is_retried_until_the_state_is_on_disk() {
    let svc_a = service("a", "");
    let agent = Agent::start_with(&[("pools.yaml", POOLS), ("a.yaml", &svc_a)], &["--resync-seconds", "1"]).unwrap();
    // A directory where state.json should go: the temporary file is written, the rename fails.
    let state_file = agent.state.join("state.json");
    std::fs::remove_file(&state_file).unwrap();
    std::fs::create_dir(&state_file).unwrap();
    agent.write_manifest("b.yaml", &service("b", ""));
    agent.wait_for(wait_long(), "the failed commit to be logged", |a| {
        a.log().contains("saving the state failed").then_some(())
    });
    agent.wait_for(wait_long(), "b to be served", |a| {
        a.service_ips().get("default/b").filter(|v| !v.is_empty()).cloned()
    });
    std::fs::remove_dir(&state_file).unwrap();
    agent.wait_for(wait_long(), "the retried commit to write b", |_| {
        std::fs::read_to_string(&state_file).ok().filter(|s| s.contains("default/b")).map(|_| ())
    });
}

#[test]
fn a_failed_state_save_publishes_nothing_and_is_retried() {
    let svc_a = service("a", "");
    let agent = Agent::start_with(&[("pools.yaml", POOLS), ("a.yaml", &svc_a)], &["--resync-seconds", "1"]).unwrap();
    // Make the state directory unusable (a file where the directory should be).
    std::fs::remove_dir_all(&agent.state).unwrap();
    std::fs::write(&agent.state, "not a directory").unwrap();
    agent.write_manifest("b.yaml", &service("b", ""));
    agent.wait_for(wait_long(), "the failed save to be logged", |a| a.log().contains("reconcile failed").then_some(()));
    assert!(!agent.service_ips().contains_key("default/b"), "an assignment that was not saved must not be served");
    // Repaired: the next resync saves and publishes without any file event.
    std::fs::remove_file(&agent.state).unwrap();
    agent.wait_for(wait_long(), "the retry to publish b", |a| {
        a.service_ips().get("default/b").filter(|v| !v.is_empty()).cloned()
    });
    let state = std::fs::read_to_string(agent.state.join("state.json")).unwrap();
    assert!(state.contains("default/b"), "{state}");
}
