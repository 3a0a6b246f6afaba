//! The election's fencing authority on the Kubernetes API: `coordination.k8s.io/v1` Lease
//! objects, behind the same [`LeaseBackend`] trait as etcd (see the parent module for the
//! protocol; this is the same protocol with API-server objects in place of etcd keys).
//!
//! # Objects (one namespace, default `kube-system`)
//! ```text
//! Lease halyard-l2-<node>                 the node lease (etcd: nodes/<node> on a lease)
//!   spec.holderIdentity        <node>
//!   spec.leaseDurationSeconds  ttl (informational: the API server never expires a Lease)
//!   spec.acquireTime           when this incarnation was granted
//!   spec.renewTime             last keep-alive (MicroTime, 2006-01-02T15:04:05.000000Z07:00)
//!   annotation l2.halyard.io/lease-id: <hex>   the LeaseId: a random positive i64 per grant,
//!                                              so a re-grant is a new incarnation
//! Lease halyard-l2-fence-<target>-<by>    <by>'s pending request to fence <target>
//!   label      l2.halyard.io/fence-target: <target>
//!   annotation l2.halyard.io/lease-id:     <target's lease, hex>
//!   annotation l2.halyard.io/fence-by:     <by>  (names may contain '-', so not parsed from the name)
//!   spec.holderIdentity        <by>
//! ```
//! Formats: the Lease type is `k8s.io/api/coordination/v1` `LeaseSpec` (holderIdentity,
//! leaseDurationSeconds, acquireTime, renewTime, leaseTransitions); `MicroTime` is RFC 3339 with
//! microseconds (`k8s.io/apimachinery/pkg/apis/meta/v1/micro_time.go`, `RFC3339Micro`).
//! Concurrency control, preconditions, watch and `Status` bodies follow the Kubernetes API
//! conventions (`community/contributors/devel/sig-architecture/api-conventions.md`:
//! "Concurrency Control and Consistency", "Response Status Kind") and the API concepts page
//! (`kubernetes.io/docs/reference/using-api/api-concepts/`: efficient detection of changes,
//! resource versions).
//!
//! # Protocol (etcd's, mapped onto objects)
//! * **grant**: POST the node lease with a fresh lease id; if it already exists (an earlier
//!   incarnation that was not cleaned up: the API server never expires Leases), GET it and PUT
//!   the replacement with its `resourceVersion`.
//! * **keep-alive**: PUT the node lease with `renewTime = now` and the last `resourceVersion`
//!   we saw (optimistic concurrency). `409 Conflict` → GET: if the lease-id annotation is still
//!   ours (someone else touched the object, or an earlier keep-alive timed out on our side but
//!   was applied), retry once with the new version, else the lease is gone (`Ok(false)`).
//!   `404` → gone. A successful PUT proves nobody had deleted the node lease before it was
//!   applied, which is what the election's validity horizon needs (measured from the send
//!   time, as with etcd).
//! * **revoke**: DELETE the node lease with `preconditions.resourceVersion` from a GET that
//!   showed the same lease id (a missing object is not an error; a concurrent keep-alive makes
//!   it retry).
//! * **fence** of `target` by `by`: the lease id the node lease carries now (else the hint
//!   from the target's last heartbeat; neither → nothing to fence); create the fence request;
//!   its `metadata.resourceVersion` plays the etcd revision (parsed as i64: the API server's
//!   versions are etcd revisions, but the conventions call them opaque, so a non-numeric one is
//!   reported as an error). The target, watching `fence-target=<itself>`, refutes by DELETE
//!   with that version as precondition. After `refute_window` the fencer DELETEs its own request
//!   with the same precondition: success → not refuted → delete the target's node lease if it
//!   still carries the fenced lease id (gone already counts as done) → `Fenced`; `404`/`409` →
//!   the target refuted (or something changed the request) → `Refused`; transport and other
//!   errors → `Err` (the election treats that as Failed).
//! * **watch_node**: two watches (`fieldSelector=metadata.name=halyard-l2-<node>` and
//!   `labelSelector=l2.halyard.io/fence-target=<node>`), each started from its list's
//!   `resourceVersion`. A DELETED node lease → [`NodeKeyEvent::KeyDeleted`]; an ADDED (or
//!   MODIFIED) fence request → [`NodeKeyEvent::FenceRequested`]. When a watch ends (server
//!   timeout, connection lost, `410 Gone`), it is re-listed and re-opened: a missing node
//!   lease is then reported as deleted and pending requests as requested, as the etcd watch
//!   does after a reconnect.
//!
//! # Cost: much slower than etcd
//! A keep-alive here is an API-server **write**: a PUT that goes through admission and etcd
//! raft (and wakes every watcher of the object), unlike an etcd lease keep-alive, which the
//! etcd leader renews in memory. The default election timing (keep-alive every 8 ms, horizon
//! 25 ms) would be 125 writes per second per node. With this backend use
//! `--l2-horizon-ms` ≥ 1000: keep-alive every horizon/3, i.e. **one write per node every
//! ~330 ms** (independent of the number of services; Cilium's one Lease per service at its
//! 2 s retry period costs `services / 2` writes per second), and a successor waits the horizon
//! after its fence, so **failover takes about 1.5–2 s instead of ~75 ms**. An API-server
//! write also takes longer than an etcd keep-alive (admission, a raft round, often a load
//! balancer in front), so keep-alive round trips above `horizon − horizon/3` make the owner
//! flap. Raise the refute window too (a watch event plus a DELETE: 100–300 ms is realistic).
//!
//! Other differences from etcd:
//! * The API server never expires a Lease: `leaseDurationSeconds` is informational. A crashed
//!   node's lease stays until a successor fences it (deletes it) or the node grants again
//!   (replaces it).
//! * Lease ids are only meaningful with the node name: [`LeaseBackend::keep_alive`] and
//!   [`LeaseBackend::revoke`] work on leases this backend granted (the driver only uses its
//!   own); an unknown lease keeps alive as `Ok(false)` and revokes as a no-op.
//! * Object names must be DNS subdomains (≤ 253 characters) and label values ≤ 63 characters,
//!   so node names must be valid label values (Kubernetes node names almost always are) and
//!   `halyard-l2-fence-<target>-<by>` must fit in 253 characters.
//!
//! # Transport
//! A small HTTP/1.1 client over `tokio::net::TcpStream` (plain `http://` for tests, `https://`
//! with tokio-rustls and a CA file), with a bearer token read from a file on every request
//! (projected service-account tokens are rotated in place). Bodies with Content-Length or
//! chunked; a watch is a chunked stream of newline-separated JSON events. Idle connections are
//! reused. In a pod: [`KubeConfig::in_cluster`] (`KUBERNETES_SERVICE_HOST`/`_PORT`,
//! `/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}`). RBAC: `get`, `list`,
//! `watch`, `create`, `update`, `delete` on `leases` in `coordination.k8s.io`, in the namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{LeaseBackend, LeaseError, NodeKeyEvent};
use crate::election::{FenceOutcome, LeaseId, NodeId};

pub const DEFAULT_NAMESPACE: &str = "kube-system";
/// The node lease's (and a fence request's) lease id, hex.
pub const LEASE_ID_ANNOTATION: &str = "l2.halyard.io/lease-id";
/// On a fence request: the node it would fence.
pub const FENCE_TARGET_LABEL: &str = "l2.halyard.io/fence-target";
/// On a fence request: the node that asks.
pub const FENCE_BY_ANNOTATION: &str = "l2.halyard.io/fence-by";
pub const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const IN_CLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
const GROUP_PATH: &str = "/apis/coordination.k8s.io/v1";
/// Server-side watch timeout; the watch is re-listed and re-opened after it.
const WATCH_TIMEOUT_SECONDS: u64 = 60;

/// Errors of the Kubernetes backend; every one names the object or request it is about.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// A `Status` answer: HTTP code, `reason` (NotFound, Conflict, AlreadyExists, ...) and message.
    #[error("{what}: HTTP {code} {reason}: {message}")]
    Status { what: String, code: u16, reason: String, message: String },
    #[error("{what}: {msg}")]
    Protocol { what: String, msg: String },
    #[error("kubernetes API configuration: {0}")]
    Config(String),
}

/// Where the API server is and how to authenticate.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// `https://host:port` (or `http://` for tests), optionally with a path prefix.
    pub api: String,
    pub namespace: String,
    /// Bearer token file, read on every request.
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle for `https://` (required for https: there are no built-in roots).
    pub ca_file: Option<PathBuf>,
    /// Bounds every request except watches.
    pub timeout: Duration,
}

impl KubeConfig {
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, if set.
    pub fn in_cluster_api() -> Option<String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok().filter(|h| !h.is_empty())?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").ok().filter(|p| !p.is_empty()).unwrap_or("443".into());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        Some(format!("https://{host}:{port}"))
    }

    /// The pod's service account: in-cluster API address, token and CA, namespace `kube-system`.
    pub fn in_cluster() -> Result<KubeConfig, KubeError> {
        let api = Self::in_cluster_api()
            .ok_or_else(|| KubeError::Config("KUBERNETES_SERVICE_HOST is not set (not in a pod?)".into()))?;
        Ok(KubeConfig {
            api,
            namespace: DEFAULT_NAMESPACE.into(),
            token_file: Some(IN_CLUSTER_TOKEN.into()),
            ca_file: Some(IN_CLUSTER_CA.into()),
            timeout: Duration::from_secs(1),
        })
    }
}

// ===== HTTP/1.1 =====

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Conn = BufReader<Box<dyn Io>>;

struct Http {
    tls: Option<(tokio_rustls::TlsConnector, tokio_rustls::rustls::pki_types::ServerName<'static>)>,
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    base_path: String,
    token_file: Option<PathBuf>,
    idle: Mutex<Vec<Conn>>,
}

struct Response {
    code: u16,
    body: Vec<u8>,
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> KubeError + '_ {
    move |source| KubeError::Io { what: what.to_string(), source }
}

fn proto(what: &str, msg: impl Into<String>) -> KubeError {
    KubeError::Protocol { what: what.to_string(), msg: msg.into() }
}

/// `scheme://host[:port][/prefix]` → (tls, host without brackets, port, authority, prefix).
fn parse_url(url: &str) -> Result<(bool, String, u16, String, String), KubeError> {
    let bad = |m: &str| KubeError::Config(format!("API URL {url:?}: {m}"));
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("must start with http:// or https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(bad("junk after ']'")),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((tls, host, port, authority.to_string(), path.to_string()))
}

/// Percent-encodes a query component (RFC 3986 unreserved characters stay).
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Http {
    fn new(cfg: &KubeConfig) -> Result<Http, KubeError> {
        let (tls, host, port, authority, base_path) = parse_url(&cfg.api)?;
        let tls = if tls {
            use tokio_rustls::rustls;
            use tokio_rustls::rustls::pki_types::pem::PemObject;
            use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
            let ca = cfg
                .ca_file
                .as_ref()
                .ok_or_else(|| KubeError::Config(format!("{}: https needs a CA file (--l2-kube-ca-file)", cfg.api)))?;
            let ca_err = |e: &dyn std::fmt::Display| KubeError::Config(format!("CA file {}: {e}", ca.display()));
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| ca_err(&e))? {
                roots.add(c.map_err(|e| ca_err(&e))?).map_err(|e| ca_err(&e))?;
            }
            if roots.is_empty() {
                return Err(ca_err(&"no certificates"));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tc = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| KubeError::Config(format!("TLS: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            tc.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.clone())
                .map_err(|e| KubeError::Config(format!("{}: server name: {e}", cfg.api)))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(tc)), name))
        } else {
            None
        };
        Ok(Http {
            tls,
            host,
            port,
            authority,
            base_path,
            token_file: cfg.token_file.clone(),
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn connect(&self, what: &str) -> Result<Conn, KubeError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| KubeError::Io { what: format!("{what}: connect to {}", self.authority), source: e })?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((c, name)) => Box::new(
                c.connect(name.clone(), tcp)
                    .await
                    .map_err(|e| KubeError::Io { what: format!("{what}: TLS with {}", self.authority), source: e })?,
            ),
        };
        Ok(BufReader::new(io))
    }

    async fn head(&self, method: &str, path: &str, body_len: Option<usize>, what: &str) -> Result<String, KubeError> {
        let mut h = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: halyard-l2\r\n",
            self.base_path, self.authority
        );
        if let Some(f) = &self.token_file {
            let t = tokio::fs::read_to_string(f)
                .await
                .map_err(|e| KubeError::Io { what: format!("{what}: token file {}", f.display()), source: e })?;
            h.push_str(&format!("Authorization: Bearer {}\r\n", t.trim()));
        }
        if let Some(n) = body_len {
            h.push_str(&format!("Content-Type: application/json\r\nContent-Length: {n}\r\n"));
        }
        h.push_str("\r\n");
        Ok(h)
    }

    /// One request with a JSON body (or none); the whole body is read. Not bounded in time:
    /// callers wrap it.
    async fn request(&self, method: &str, path: &str, body: Option<&Value>, what: &str) -> Result<Response, KubeError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON value serializes"));
        let mut msg = self.head(method, path, body.as_ref().map(Vec::len), what).await?.into_bytes();
        if let Some(b) = &body {
            msg.extend_from_slice(b);
        }
        // A reused connection the server has closed meanwhile fails at once: retry on a new one.
        let pooled = self.idle.lock().expect("poisoned").pop();
        if let Some(mut c) = pooled
            && let Ok((r, keep)) = exchange(&mut c, &msg).await
        {
            if keep {
                self.put_back(c);
            }
            return Ok(r);
        }
        let mut c = self.connect(what).await?;
        c.get_mut().write_all(&msg).await.map_err(io_err(what))?;
        let (code, headers) = read_head(&mut c).await.map_err(io_err(what))?;
        let body = read_body(&mut c, &headers).await.map_err(io_err(what))?;
        if keep_alive(&headers) {
            self.put_back(c);
        }
        Ok(Response { code, body })
    }

    fn put_back(&self, c: Conn) {
        let mut idle = self.idle.lock().expect("poisoned");
        if idle.len() < 4 {
            idle.push(c);
        }
    }

    /// Opens a streaming GET (a watch) on its own connection.
    async fn stream(&self, path: &str, what: &str) -> Result<LineStream, KubeError> {
        let msg = self.head("GET", path, None, what).await?;
        let mut c = self.connect(what).await?;
        c.get_mut().write_all(msg.as_bytes()).await.map_err(io_err(what))?;
        let (code, headers) = read_head(&mut c).await.map_err(io_err(what))?;
        if code != 200 {
            let body = read_body(&mut c, &headers).await.map_err(io_err(what))?;
            return Err(status_error(what, code, &body));
        }
        let chunked = header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        Ok(LineStream { conn: c, chunked, left: 0, buf: Vec::new(), eof: false })
    }
}

/// One request on a pooled connection; an error means it was stale (closed by the server
/// while idle), and the caller retries on a new connection. Retrying is safe for every request
/// the backend makes: a POST, PUT or DELETE that did go through the first time answers 409 or
/// 404 the second time, which the callers treat in the safe direction.
async fn exchange(c: &mut Conn, msg: &[u8]) -> std::io::Result<(Response, bool)> {
    c.get_mut().write_all(msg).await?;
    let (code, headers) = read_head(c).await?;
    let body = read_body(c, &headers).await?;
    Ok((Response { code, body }, keep_alive(&headers)))
}

type Headers = Vec<(String, String)>;

fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn keep_alive(h: &Headers) -> bool {
    !header(h, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

async fn read_line(c: &mut Conn) -> std::io::Result<String> {
    let mut line = String::new();
    if c.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn read_head(c: &mut Conn) -> std::io::Result<(u16, Headers)> {
    let status = read_line(c).await?;
    let code =
        status.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status line {status:?}"))
        })?;
    let mut headers = Vec::new();
    loop {
        let l = read_line(c).await?;
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((code, headers))
}

async fn read_body(c: &mut Conn, h: &Headers) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if header(h, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let n = chunk_size(&read_line(c).await?)?;
            if n == 0 {
                while !read_line(c).await?.is_empty() {} // trailers
                break;
            }
            let start = body.len();
            body.resize(start + n, 0);
            c.read_exact(&mut body[start..]).await?;
            read_line(c).await?;
        }
    } else if let Some(n) = header(h, "content-length") {
        let n: usize = n.parse().map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "Content-Length"))?;
        body.resize(n, 0);
        c.read_exact(&mut body).await?;
    } else {
        c.read_to_end(&mut body).await?;
    }
    Ok(body)
}

fn chunk_size(line: &str) -> std::io::Result<usize> {
    let hex = line.split(';').next().unwrap_or("").trim();
    usize::from_str_radix(hex, 16)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad chunk size {line:?}")))
}

/// Newline-separated JSON documents from a (usually chunked) streaming body.
struct LineStream {
    conn: Conn,
    chunked: bool,
    /// Bytes left in the current chunk.
    left: usize,
    buf: Vec<u8>,
    eof: bool,
}

impl LineStream {
    /// The next non-empty line; `None` at the end of the body. Not cancel-safe.
    async fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line.to_vec()));
            }
            if self.eof {
                let rest = std::mem::take(&mut self.buf);
                let rest = rest.trim_ascii();
                return Ok((!rest.is_empty()).then(|| rest.to_vec()));
            }
            let mut tmp = [0u8; 8192];
            if self.chunked {
                if self.left == 0 {
                    let n = chunk_size(&read_line(&mut self.conn).await?)?;
                    if n == 0 {
                        self.eof = true;
                        continue;
                    }
                    self.left = n;
                }
                let want = self.left.min(tmp.len());
                let got = self.conn.read(&mut tmp[..want]).await?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.buf.extend_from_slice(&tmp[..got]);
                self.left -= got;
                if self.left == 0 {
                    read_line(&mut self.conn).await?; // the CRLF after the chunk
                }
            } else {
                let got = self.conn.read(&mut tmp).await?;
                if got == 0 {
                    self.eof = true;
                }
                self.buf.extend_from_slice(&tmp[..got]);
            }
        }
    }
}

/// A `Status` (or any non-2xx) answer as an error naming `what`.
fn status_error(what: &str, code: u16, body: &[u8]) -> KubeError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let reason = v["reason"].as_str().map(String::from).unwrap_or_else(|| reason_phrase(code).to_string());
    let message = v["message"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string());
    KubeError::Status { what: what.to_string(), code, reason, message }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Gone",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    }
}

// ===== objects =====

/// `metav1.MicroTime` in JSON: `2006-01-02T15:04:05.000000Z07:00`, always UTC here.
pub use halyard_model::time::rfc3339_micros as micro_time;

/// A random positive i64 (std's per-process random hash keys, mixed with time and a counter).
fn random_lease_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.write_u32(std::process::id());
    ((h.finish() >> 1) as i64).max(1)
}

fn lease_of(obj: &Value) -> Option<LeaseId> {
    let s = obj["metadata"]["annotations"][LEASE_ID_ANNOTATION].as_str()?;
    i64::from_str_radix(s.trim(), 16).ok().filter(|l| *l > 0).map(LeaseId)
}

fn rv_of(obj: &Value) -> Option<&str> {
    obj["metadata"]["resourceVersion"].as_str()
}

/// The node lease's name.
pub fn node_lease_name(node: &NodeId) -> String {
    format!("halyard-l2-{node}")
}

/// The fence request's name.
pub fn fence_name(target: &NodeId, by: &NodeId) -> String {
    format!("halyard-l2-fence-{target}-{by}")
}

fn delete_options(rv: &str) -> Value {
    json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": rv}})
}

// ===== the backend =====

/// [`LeaseBackend`] over `coordination.k8s.io/v1` Leases (see the module docs).
pub struct KubeLeaseBackend {
    http: Arc<Http>,
    namespace: String,
    api: String,
    timeout: Duration,
    keepalive_timeout: Duration,
    /// Leases this backend granted: id → (node, the object as last written).
    mine: Mutex<BTreeMap<i64, (NodeId, Value)>>,
}

impl std::fmt::Debug for KubeLeaseBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLeaseBackend").field("api", &self.api).field("namespace", &self.namespace).finish()
    }
}

enum Put {
    Done(Value),
    Conflict,
    NotFound,
}

impl KubeLeaseBackend {
    /// Builds the client (reads the CA file) without contacting the server.
    pub fn new(cfg: &KubeConfig) -> Result<KubeLeaseBackend, LeaseError> {
        Ok(KubeLeaseBackend {
            http: Arc::new(Http::new(cfg)?),
            namespace: cfg.namespace.clone(),
            api: cfg.api.clone(),
            timeout: cfg.timeout,
            keepalive_timeout: cfg.timeout,
            mine: Mutex::new(BTreeMap::new()),
        })
    }

    /// [`KubeLeaseBackend::new`], then one LIST of the namespace's leases, so that an
    /// unreachable server, a bad token or missing RBAC fail here, with the cause.
    pub async fn connect(cfg: &KubeConfig) -> Result<KubeLeaseBackend, LeaseError> {
        let b = Self::new(cfg)?;
        let what = format!("list leases in namespace {} at {}", b.namespace, b.api);
        let path = format!("{}?limit=1", b.collection());
        let r = b.t(b.http.request("GET", &path, None, &what)).await?;
        if r.code != 200 {
            return Err(status_error(&what, r.code, &r.body).into());
        }
        Ok(b)
    }

    /// A shorter bound for keep-alives alone (as [`super::EtcdBackend::with_keepalive_timeout`]).
    pub fn with_keepalive_timeout(mut self, t: Duration) -> KubeLeaseBackend {
        self.keepalive_timeout = t;
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn collection(&self) -> String {
        format!("{GROUP_PATH}/namespaces/{}/leases", self.namespace)
    }

    fn object_path(&self, name: &str) -> String {
        format!("{}/{name}", self.collection())
    }

    fn what(&self, verb: &str, name: &str) -> String {
        format!("{verb} lease {}/{name}", self.namespace)
    }

    async fn t<T>(&self, f: impl Future<Output = Result<T, KubeError>>) -> Result<T, LeaseError> {
        Ok(tokio::time::timeout(self.timeout, f).await.map_err(|_| LeaseError::Timeout(self.timeout))??)
    }

    fn lease_object(&self, name: &str, holder: &NodeId, secs: i64, lease: LeaseId) -> Value {
        let now = micro_time(SystemTime::now());
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "annotations": { LEASE_ID_ANNOTATION: format!("{:x}", lease.0) },
            },
            "spec": {
                "holderIdentity": holder.as_str(),
                "leaseDurationSeconds": secs,
                "acquireTime": now,
                "renewTime": now,
            },
        })
    }

    /// GET: `Some(object)` or `None` for 404.
    async fn get(&self, name: &str) -> Result<Option<Value>, KubeError> {
        let what = self.what("get", name);
        let r = self.http.request("GET", &self.object_path(name), None, &what).await?;
        match r.code {
            200 => Ok(Some(parse_json(&what, &r.body)?)),
            404 => Ok(None),
            c => Err(status_error(&what, c, &r.body)),
        }
    }

    /// POST: `Some(created)` or `None` if it already exists.
    async fn create(&self, obj: &Value) -> Result<Option<Value>, KubeError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let what = self.what("create", name);
        let r = self.http.request("POST", &self.collection(), Some(obj), &what).await?;
        match r.code {
            200..=202 => Ok(Some(parse_json(&what, &r.body)?)),
            409 => Ok(None),
            c => Err(status_error(&what, c, &r.body)),
        }
    }

    /// PUT with the object's `resourceVersion`.
    async fn replace(&self, obj: &Value) -> Result<Put, KubeError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let what = self.what("update", name);
        let r = self.http.request("PUT", &self.object_path(name), Some(obj), &what).await?;
        match r.code {
            200 | 201 => Ok(Put::Done(parse_json(&what, &r.body)?)),
            409 => Ok(Put::Conflict),
            404 => Ok(Put::NotFound),
            c => Err(status_error(&what, c, &r.body)),
        }
    }

    /// DELETE with `preconditions.resourceVersion`: `Ok(true)` deleted, `Ok(false)` 404/409.
    async fn delete_at(&self, name: &str, rv: &str) -> Result<bool, KubeError> {
        let what = self.what("delete", name);
        let r = self.http.request("DELETE", &self.object_path(name), Some(&delete_options(rv)), &what).await?;
        match r.code {
            200 | 202 => Ok(true),
            404 | 409 => Ok(false),
            c => Err(status_error(&what, c, &r.body)),
        }
    }

    /// Creates `obj`, or replaces an existing object of its name. Returns what the server stored.
    async fn create_or_replace(&self, mut obj: Value) -> Result<Value, KubeError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        for _ in 0..5 {
            if let Some(created) = self.create(&obj).await? {
                return Ok(created);
            }
            let Some(cur) = self.get(&name).await? else { continue };
            obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
            if let Put::Done(v) = self.replace(&obj).await? {
                return Ok(v);
            }
        }
        Err(proto(&self.what("create or replace", &name), "kept conflicting with concurrent writers"))
    }

    /// Deletes `node`'s lease if it still carries `lease` (fenced or revoked); gone is fine.
    async fn delete_node_lease(&self, node: &NodeId, lease: LeaseId) -> Result<(), KubeError> {
        let name = node_lease_name(node);
        // A conflict means a write raced us (the target's last keep-alive): look again.
        for _ in 0..10 {
            let Some(cur) = self.get(&name).await? else { return Ok(()) };
            if lease_of(&cur) != Some(lease) {
                return Ok(());
            }
            let rv = rv_of(&cur).unwrap_or_default().to_string();
            if self.delete_at(&name, &rv).await? {
                return Ok(());
            }
        }
        Err(proto(&self.what("delete", &name), "kept conflicting with concurrent writers"))
    }

    async fn keep_alive_inner(&self, lease: LeaseId) -> Result<bool, KubeError> {
        let Some(mut obj) = self.mine.lock().expect("poisoned").get(&lease.0).map(|(_, o)| o.clone()) else {
            return Ok(false);
        };
        obj["spec"]["renewTime"] = json!(micro_time(SystemTime::now()));
        let mut retried = false;
        loop {
            match self.replace(&obj).await? {
                Put::Done(v) => {
                    if let Some(e) = self.mine.lock().expect("poisoned").get_mut(&lease.0) {
                        e.1 = v;
                    }
                    return Ok(true);
                }
                Put::NotFound => break,
                Put::Conflict if retried => {
                    return Err(proto(
                        &self.what("update", obj["metadata"]["name"].as_str().unwrap_or("")),
                        "conflict twice",
                    ));
                }
                Put::Conflict => {
                    retried = true;
                    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    match self.get(&name).await? {
                        Some(cur) if lease_of(&cur) == Some(lease) => {
                            // Apply our change (renewTime) to the latest version, keeping
                            // whatever the other writer changed.
                            obj = cur;
                            obj["spec"]["renewTime"] = json!(micro_time(SystemTime::now()));
                        }
                        _ => break,
                    }
                }
            }
        }
        self.mine.lock().expect("poisoned").remove(&lease.0);
        Ok(false)
    }

    async fn fence_inner(
        &self,
        by: &NodeId,
        target: &NodeId,
        hint: Option<LeaseId>,
        refute_window: Duration,
    ) -> Result<FenceOutcome, LeaseError> {
        // The lease id the node lease carries *now* (the hint may be an older incarnation that
        // no longer exists; the current one must get the chance to refute).
        let current = self.t(self.get(&node_lease_name(target))).await?.as_ref().and_then(lease_of);
        let Some(lease) = current.or(hint) else { return Ok(FenceOutcome::Fenced { lease: None }) };
        let name = fence_name(target, by);
        let mut req = self.lease_object(&name, by, refute_window.as_secs().max(1) as i64, lease);
        req["metadata"]["labels"] = json!({ FENCE_TARGET_LABEL: target.as_str() });
        req["metadata"]["annotations"][FENCE_BY_ANNOTATION] = json!(by.as_str());
        let stored = self.t(self.create_or_replace(req)).await?;
        let rv = rv_of(&stored).unwrap_or_default().to_string();
        rv.parse::<i64>().map_err(|_| KubeError::Protocol {
            what: self.what("create", &name),
            msg: format!("resourceVersion {rv:?} is not numeric: it cannot serve as the fence revision"),
        })?;
        tokio::time::sleep(refute_window).await;
        if !self.t(self.delete_at(&name, &rv)).await? {
            return Ok(FenceOutcome::Refused);
        }
        self.t(self.delete_node_lease(target, lease)).await?;
        Ok(FenceOutcome::Fenced { lease: Some(lease) })
    }

    /// Every node lease: node name → lease id (for status and debugging).
    pub async fn list_nodes(&self) -> Result<BTreeMap<String, LeaseId>, LeaseError> {
        let what = format!("list leases in namespace {}", self.namespace);
        let r = self.t(self.http.request("GET", &self.collection(), None, &what)).await?;
        if r.code != 200 {
            return Err(status_error(&what, r.code, &r.body).into());
        }
        let v = parse_json(&what, &r.body)?;
        Ok(v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["metadata"]["labels"][FENCE_TARGET_LABEL].is_null())
            .filter_map(|o| {
                let name = o["metadata"]["name"].as_str()?.strip_prefix("halyard-l2-")?;
                Some((name.to_string(), lease_of(o)?))
            })
            .collect())
    }
}

fn parse_json(what: &str, body: &[u8]) -> Result<Value, KubeError> {
    serde_json::from_slice(body).map_err(|e| proto(what, format!("bad JSON: {e}")))
}

impl LeaseBackend for KubeLeaseBackend {
    async fn grant(&self, node: &NodeId, ttl: Duration) -> Result<LeaseId, LeaseError> {
        let lease = LeaseId(random_lease_id());
        let name = node_lease_name(node);
        let obj = self.lease_object(&name, node, ttl.as_secs().max(1) as i64, lease);
        let stored = self.t(self.create_or_replace(obj)).await?;
        self.mine.lock().expect("poisoned").insert(lease.0, (node.clone(), stored));
        Ok(lease)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, LeaseError> {
        let t = self.keepalive_timeout;
        tokio::time::timeout(t, self.keep_alive_inner(lease))
            .await
            .map_err(|_| LeaseError::Timeout(t))?
            .map_err(Into::into)
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), LeaseError> {
        let node = self.mine.lock().expect("poisoned").remove(&lease.0).map(|(n, _)| n);
        match node {
            Some(node) => self.t(self.delete_node_lease(&node, lease)).await,
            None => {
                tracing::debug!(%lease, "revoke of a lease this backend did not grant: nothing to do");
                Ok(())
            }
        }
    }

    async fn watch_node(&self, node: &NodeId) -> Result<mpsc::Receiver<NodeKeyEvent>, LeaseError> {
        let (tx, rx) = mpsc::channel(16);
        let base = WatchSpec {
            http: self.http.clone(),
            collection: self.collection(),
            selector: String::new(),
            fence: false,
            node_lease: node_lease_name(node),
            timeout: self.timeout,
        };
        let specs = [
            WatchSpec {
                selector: format!("fieldSelector={}", pct(&format!("metadata.name={}", base.node_lease))),
                ..base.clone()
            },
            WatchSpec {
                selector: format!("labelSelector={}", pct(&format!("{FENCE_TARGET_LABEL}={node}"))),
                fence: true,
                ..base
            },
        ];
        // Both watches are opened here, so that a failure reaches the caller. Pending fence
        // requests are reported at once.
        let mut opened = Vec::new();
        for spec in specs {
            let (rv, items) = spec.list().await?;
            let stream = spec.open(&rv).await?;
            let initial: Vec<NodeKeyEvent> =
                if spec.fence { items.iter().filter_map(fence_event).collect() } else { Vec::new() };
            opened.push((spec, stream, initial));
        }
        for (spec, stream, initial) in opened {
            tokio::spawn(spec.run(stream, initial, tx.clone()));
        }
        Ok(rx)
    }

    async fn fence(
        &self,
        by: &NodeId,
        target: &NodeId,
        lease: Option<LeaseId>,
        refute_window: Duration,
    ) -> Result<FenceOutcome, LeaseError> {
        self.fence_inner(by, target, lease, refute_window).await
    }

    async fn refute(&self, node: &NodeId, by: &NodeId, revision: i64) -> Result<bool, LeaseError> {
        self.t(self.delete_at(&fence_name(node, by), &revision.to_string())).await
    }
}

fn fence_event(obj: &Value) -> Option<NodeKeyEvent> {
    let by = obj["metadata"]["annotations"][FENCE_BY_ANNOTATION].as_str().or(obj["spec"]["holderIdentity"].as_str())?;
    Some(NodeKeyEvent::FenceRequested {
        by: NodeId::new(by),
        lease: lease_of(obj)?,
        revision: rv_of(obj)?.parse().ok()?,
    })
}

/// One of the two watches behind [`LeaseBackend::watch_node`].
#[derive(Clone)]
struct WatchSpec {
    http: Arc<Http>,
    collection: String,
    /// `fieldSelector=...` or `labelSelector=...`, encoded.
    selector: String,
    /// Fence requests (else the node lease).
    fence: bool,
    node_lease: String,
    timeout: Duration,
}

impl WatchSpec {
    fn what(&self, verb: &str) -> String {
        format!("{verb} {}?{}", self.collection, self.selector)
    }

    async fn list(&self) -> Result<(String, Vec<Value>), LeaseError> {
        let what = self.what("list");
        let path = format!("{}?{}", self.collection, self.selector);
        let f = self.http.request("GET", &path, None, &what);
        let r = tokio::time::timeout(self.timeout, f).await.map_err(|_| LeaseError::Timeout(self.timeout))??;
        if r.code != 200 {
            return Err(status_error(&what, r.code, &r.body).into());
        }
        let v = parse_json(&what, &r.body)?;
        let rv = v["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
        Ok((rv, v["items"].as_array().cloned().unwrap_or_default()))
    }

    async fn open(&self, rv: &str) -> Result<LineStream, LeaseError> {
        let what = self.what("watch");
        let path = format!(
            "{}?watch=1&{}&resourceVersion={}&timeoutSeconds={WATCH_TIMEOUT_SECONDS}",
            self.collection,
            self.selector,
            pct(rv)
        );
        let f = self.http.stream(&path, &what);
        Ok(tokio::time::timeout(self.timeout, f).await.map_err(|_| LeaseError::Timeout(self.timeout))??)
    }

    fn event(&self, line: &[u8]) -> Result<Option<NodeKeyEvent>, ()> {
        let v: Value = serde_json::from_slice(line).map_err(|_| ())?;
        let obj = &v["object"];
        match (v["type"].as_str(), self.fence) {
            (Some("ERROR"), _) => {
                tracing::debug!(status = %obj, "lease watch error; re-listing");
                Err(())
            }
            (Some("DELETED"), false) if obj["metadata"]["name"].as_str() == Some(self.node_lease.as_str()) => {
                Ok(Some(NodeKeyEvent::KeyDeleted))
            }
            (Some("ADDED" | "MODIFIED"), true) => Ok(fence_event(obj)),
            _ => Ok(None),
        }
    }

    /// Forwards events until the receiver is gone; re-lists and re-opens whenever the watch ends.
    async fn run(self, mut stream: LineStream, initial: Vec<NodeKeyEvent>, tx: mpsc::Sender<NodeKeyEvent>) {
        for ev in initial {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        let idle = Duration::from_secs(WATCH_TIMEOUT_SECONDS + 15);
        loop {
            loop {
                let line = tokio::select! {
                    l = tokio::time::timeout(idle, stream.next_line()) => l,
                    _ = tx.closed() => return,
                };
                let ev = match line {
                    Ok(Ok(Some(l))) => self.event(&l),
                    _ => Err(()),
                };
                match ev {
                    Ok(Some(ev)) => {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(()) => break,
                }
            }
            // The watch ended: list what is there now and watch again from that version, for
            // as long as someone listens. Without this, fence requests after a blip would go
            // unseen and never be refuted.
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if tx.is_closed() {
                    return;
                }
                let opened = async {
                    let (rv, items) = self.list().await?;
                    Ok::<_, LeaseError>((self.open(&rv).await?, items))
                };
                match opened.await {
                    Ok((s, items)) => {
                        let evs: Vec<NodeKeyEvent> = if self.fence {
                            items.iter().filter_map(fence_event).collect()
                        } else if items.is_empty() {
                            vec![NodeKeyEvent::KeyDeleted]
                        } else {
                            Vec::new()
                        };
                        for ev in evs {
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                        stream = s;
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "re-opening the lease watch"),
                }
            }
        }
    }
}

/// Reads a file that must exist (token, CA) with a clear error.
pub fn check_readable(what: &str, p: &Path) -> Result<(), KubeError> {
    std::fs::metadata(p).map(|_| ()).map_err(|e| KubeError::Config(format!("{what} {}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_time_format() {
        assert_eq!(micro_time(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_136_214_245, 123_456_789);
        assert_eq!(micro_time(t), "2006-01-02T15:04:05.123456Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // leap day 2000
        assert_eq!(micro_time(t), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn urls() {
        let p = parse_url("https://10.96.0.1:443").unwrap();
        assert_eq!((p.0, p.1.as_str(), p.2, p.4.as_str()), (true, "10.96.0.1", 443, ""));
        let p = parse_url("http://[fd00::1]:6443/prefix/").unwrap();
        assert_eq!(
            (p.0, p.1.as_str(), p.2, p.3.as_str(), p.4.as_str()),
            (false, "fd00::1", 6443, "[fd00::1]:6443", "/prefix")
        );
        assert_eq!(parse_url("https://api.example").unwrap().2, 443);
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://:80").is_err());
    }

    #[test]
    fn lease_ids_are_random_and_positive() {
        let a: Vec<i64> = (0..100).map(|_| random_lease_id()).collect();
        assert!(a.iter().all(|l| *l > 0));
        let set: std::collections::BTreeSet<_> = a.iter().collect();
        assert_eq!(set.len(), a.len());
    }

    #[test]
    fn selectors_are_encoded() {
        assert_eq!(pct("l2.halyard.io/fence-target=n-1"), "l2.halyard.io%2Ffence-target%3Dn-1");
    }

    #[test]
    fn status_bodies_become_errors() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"leases.coordination.k8s.io \"x\" is forbidden","reason":"Forbidden","code":403}"#;
        let e = status_error("get lease kube-system/x", 403, body).to_string();
        assert_eq!(e, "get lease kube-system/x: HTTP 403 Forbidden: leases.coordination.k8s.io \"x\" is forbidden");
        let e = status_error("get lease kube-system/x", 502, b"bad gateway").to_string();
        assert!(e.contains("HTTP 502 Unknown: bad gateway"), "{e}");
    }
}
