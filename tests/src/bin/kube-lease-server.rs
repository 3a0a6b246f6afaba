//! `kube-lease-server --listen ADDR [--token TOKEN]`: the stand-in Kubernetes API server for
//! `coordination.k8s.io/v1` Leases (`halyard_tests::kubeapi`), as a process, so that agents in
//! network namespaces can reach it (there is no kube-apiserver on the test machines). Prints
//! `listening on http://ADDR` and serves until killed.

use std::time::Duration;

fn main() {
    let mut listen = "127.0.0.1:0".to_string();
    let mut token = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--token" => token = Some(args.next().expect("--token TOKEN")),
            other => {
                eprintln!("usage: kube-lease-server --listen ADDR [--token TOKEN] (unknown {other:?})");
                std::process::exit(2);
            }
        }
    }
    let server = halyard_tests::kubeapi::KubeApiServer::start(&listen).unwrap_or_else(|e| {
        eprintln!("cannot listen on {listen}: {e}");
        std::process::exit(1);
    });
    if let Some(t) = token {
        server.require_token(&t);
    }
    println!("listening on {}", server.url());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
