//! Remote cluster configuration in Cilium's format, and connecting to a cluster's etcd.
//!
//! Cilium mounts one file per remote cluster into `/var/lib/cilium/clustermesh/`, named after the
//! cluster; each is an etcd client config (Cilium `pkg/clustermesh/common/config.go`, etcd's
//! `clientv3/yaml` keys):
//!
//! ```yaml
//! endpoints:
//! - https://cluster2.mesh.example:2379
//! trusted-ca-file: /var/lib/cilium/clustermesh/cluster2.etcd-client-ca.crt
//! key-file: /var/lib/cilium/clustermesh/cluster2.etcd-client.key
//! cert-file: /var/lib/cilium/clustermesh/cluster2.etcd-client.crt
//! ```
//!
//! Files whose names start with `.` (Kubernetes' `..data` symlinks) and the TLS material files
//! themselves (`*.crt`, `*.key`, `*.pem`) are not cluster configs.

use std::path::{Path, PathBuf};

use etcd_client::{Client, ConnectOptions};
use serde::Deserialize;

/// One remote cluster's etcd client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteClusterConfig {
    pub name: String,
    pub endpoints: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The file it came from (for error messages).
    pub path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EtcdYaml {
    endpoints: Vec<String>,
    #[serde(rename = "trusted-ca-file", default)]
    ca: Option<PathBuf>,
    #[serde(rename = "cert-file", default)]
    cert: Option<PathBuf>,
    #[serde(rename = "key-file", default)]
    key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteConfigError {
    #[error("clustermesh config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("reading clustermesh config directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
}

impl RemoteClusterConfig {
    /// Parses one file; the cluster name is the file name.
    pub fn parse(path: &Path, text: &str) -> Result<RemoteClusterConfig, RemoteConfigError> {
        let invalid = |reason: String| RemoteConfigError::Invalid { path: path.to_path_buf(), reason };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        crate::keys::validate_cluster_name(&name)
            .map_err(|e| invalid(format!("file name is the cluster name: {e}")))?;
        let y: EtcdYaml = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if y.endpoints.is_empty() {
            return Err(invalid("`endpoints` is empty".into()));
        }
        for e in &y.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(invalid(format!("endpoint {e:?} must start with http:// or https://")));
            }
        }
        if y.cert.is_some() != y.key.is_some() {
            return Err(invalid("`cert-file` and `key-file` go together".into()));
        }
        let tls = y.endpoints.iter().any(|e| e.starts_with("https://"));
        if tls && y.ca.is_none() {
            return Err(invalid("https endpoints need `trusted-ca-file`".into()));
        }
        Ok(RemoteClusterConfig {
            name,
            endpoints: y.endpoints,
            ca_file: y.ca,
            cert_file: y.cert,
            key_file: y.key,
            path: path.to_path_buf(),
        })
    }

    /// Reads every cluster config in `dir`. Bad files are returned as errors beside the good
    /// ones, so one broken file does not stop the others.
    pub fn load_dir(dir: &Path) -> Result<(Vec<RemoteClusterConfig>, Vec<RemoteConfigError>), RemoteConfigError> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|source| RemoteConfigError::Dir { path: dir.into(), source })?;
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
            if name.starts_with('.') || [".crt", ".key", ".pem"].iter().any(|s| name.ends_with(s)) || p.is_dir() {
                continue;
            }
            match std::fs::read_to_string(&p) {
                Ok(text) => match Self::parse(&p, &text) {
                    Ok(c) => good.push(c),
                    Err(e) => bad.push(e),
                },
                Err(e) => bad.push(RemoteConfigError::Invalid { path: p.clone(), reason: e.to_string() }),
            }
        }
        Ok((good, bad))
    }

    /// Connects (lazily: etcd-client dials on first use).
    pub async fn connect(&self) -> Result<Client, String> {
        connect(&self.endpoints, self.ca_file.as_deref(), self.cert_file.as_deref(), self.key_file.as_deref()).await
    }
}

/// Connects to etcd; with a CA (and optionally a client certificate and key) over TLS.
pub async fn connect(
    endpoints: &[String],
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Client, String> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(3))
        .with_timeout(std::time::Duration::from_secs(10))
        .with_keep_alive(std::time::Duration::from_secs(5), std::time::Duration::from_secs(5));
    if let Some(ca) = ca {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
        let mut tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        if let (Some(c), Some(k)) = (cert, key) {
            tls = tls.identity(etcd_client::Identity::from_pem(read(c)?, read(k)?));
        }
        opts = opts.with_tls(tls);
    }
    Client::connect(endpoints, Some(opts)).await.map_err(|e| format!("connecting to etcd {}: {e}", endpoints.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ciliums_format_and_names_the_file_in_errors() {
        let p = Path::new("/etc/mesh/cluster2");
        let c = RemoteClusterConfig::parse(
            p,
            "endpoints:\n- https://c2:2379\ntrusted-ca-file: /x/ca.crt\nkey-file: /x/c.key\ncert-file: /x/c.crt\n",
        )
        .unwrap();
        assert_eq!(c.name, "cluster2");
        assert_eq!(c.endpoints, vec!["https://c2:2379"]);
        assert_eq!(c.ca_file.as_deref(), Some(Path::new("/x/ca.crt")));
        let e = RemoteClusterConfig::parse(p, "endpoints: []\n").unwrap_err().to_string();
        assert!(e.contains("/etc/mesh/cluster2") && e.contains("endpoints"), "{e}");
        let e = RemoteClusterConfig::parse(p, "endpoints: [\"https://x:1\"]\n").unwrap_err().to_string();
        assert!(e.contains("trusted-ca-file"), "{e}");
        let e = RemoteClusterConfig::parse(p, "endpoints: [\"http://x:1\"]\nkey-file: k\n").unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
        let e = RemoteClusterConfig::parse(p, "endpoint: [\"http://x:1\"]\n").unwrap_err().to_string();
        assert!(e.contains("endpoint"), "{e}");
        let e = RemoteClusterConfig::parse(Path::new("/m/Bad_Name"), "endpoints: [\"http://x:1\"]\n").unwrap_err();
        assert!(e.to_string().contains("cluster name"), "{e}");
    }
}
