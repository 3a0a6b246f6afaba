//! A stand-in Kubernetes API server for `coordination.k8s.io/v1` Leases, for testing the L2
//! election's Kubernetes Lease backend (`halyard_l2::lease::KubeLeaseBackend`).
//!
//! **Why a stand-in:** there is no kube-apiserver (nor etcd-backed control plane binaries, kind
//! or k3s) on the test machines, so this implements, faithfully, just the part of the API the
//! backend relies on. It is a test double of a component that cannot run here, not a mock of
//! our own code: it knows nothing about the election, only Kubernetes API semantics:
//!
//! * `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]`:
//!   POST (201; 409 `AlreadyExists`), GET (200; 404 `NotFound`), PUT (200; 409 `Conflict` when
//!   `metadata.resourceVersion` is set and stale; 404 — Leases do not allow create-on-update),
//!   DELETE with an optional `DeleteOptions` body carrying `preconditions.resourceVersion`
//!   (200 with the deleted object; 409 `Conflict` when the precondition fails; 404),
//!   LIST (`fieldSelector=metadata.name=<n>` or `metadata.namespace=`, `labelSelector` of
//!   `k=v` / `k==v` / `k!=v` / `k` terms, comma-separated, AND-ed; `limit` is accepted and ignored),
//!   and WATCH (`watch=1` or `true`; from `resourceVersion=` — absent or `"0"` starts with
//!   synthetic ADDED events for what exists; a version older than the kept history gives an
//!   `ERROR` event with a 410 `Expired` Status; `timeoutSeconds=` ends it; chunked
//!   newline-delimited `{"type":"ADDED|MODIFIED|DELETED","object":{...}}`).
//! * One global, monotonically increasing `resourceVersion` for every write, like etcd's
//!   revision behind the real server; an object's version is the revision of its last write,
//!   and a list's is the current revision. `uid` and `creationTimestamp` are set on create;
//!   `metadata.name` must be a DNS subdomain (422 `Invalid`), the body's name and namespace
//!   must match the URL (400 `BadRequest`), `spec.leaseDurationSeconds` must be positive.
//! * Errors are `Status` objects (`kind: Status`, `status: Failure`, `message`, `reason`,
//!   `details`, `code`) with the real server's messages, per the API conventions ("Response
//!   Status Kind").
//! * Optional bearer-token authentication (401 `Unauthorized` otherwise).
//!
//! It is plain std (a thread per connection, HTTP/1.1 keep-alive), so both the async backend
//! tests and the `kube-lease-server` binary (for agents in network namespaces) can use it.
//! Not implemented: other resources and verbs (PATCH, deletecollection), `continue` paging,
//! bookmarks, server-side apply, managedFields, RBAC, set-based selectors (`in`, `notin`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

const PREFIX: &str = "/apis/coordination.k8s.io/v1/namespaces/";
/// Events kept for watches that start from an old version.
const HISTORY: usize = 100_000;

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct Store {
    rv: u64,
    /// (namespace, name) → object.
    objects: BTreeMap<(String, String), Value>,
    history: std::collections::VecDeque<Event>,
    /// Oldest version a watch can start from (older ones have been dropped from history).
    compacted: u64,
}

#[derive(Debug, Default)]
struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
    token: Mutex<Option<String>>,
    stopping: AtomicBool,
    requests: AtomicU64,
    /// Bumped by `end_watches`: open watches end when it moves.
    generation: AtomicU64,
}

/// The server; stops (closes its listener and ends watches) on drop.
#[derive(Debug)]
pub struct KubeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl KubeApiServer {
    /// Listens on `addr` (`127.0.0.1:0` for a free port) in background threads.
    pub fn start(addr: &str) -> std::io::Result<KubeApiServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::Builder::new().name("kubeapi-accept".into()).spawn(move || {
            for conn in listener.incoming() {
                if s.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                let _ = std::thread::Builder::new().name("kubeapi-conn".into()).spawn(move || serve(conn, &s));
            }
        })?;
        Ok(KubeApiServer { addr, shared })
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Require `Authorization: Bearer <token>` from now on.
    pub fn require_token(&self, token: &str) {
        *self.shared.token.lock().unwrap() = Some(token.to_string());
    }

    /// Requests served so far (all verbs, watches included).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The stored object, as a GET would return it.
    pub fn get(&self, ns: &str, name: &str) -> Option<Value> {
        self.shared.store.lock().unwrap().objects.get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// Every object in `ns`.
    pub fn list(&self, ns: &str) -> Vec<Value> {
        let st = self.shared.store.lock().unwrap();
        st.objects.iter().filter(|((n, _), _)| n == ns).map(|(_, o)| o.clone()).collect()
    }

    /// Changes an object as another client's unconditional update would (new resourceVersion,
    /// MODIFIED event). Returns false if it does not exist.
    pub fn modify(&self, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> bool {
        let mut st = self.shared.store.lock().unwrap();
        let key = (ns.to_string(), name.to_string());
        let Some(mut obj) = st.objects.get(&key).cloned() else { return false };
        f(&mut obj);
        st.write(key, Some(obj), "MODIFIED");
        self.shared.changed.notify_all();
        true
    }

    /// Deletes an object as another client would (DELETED event).
    pub fn delete(&self, ns: &str, name: &str) -> bool {
        let mut st = self.shared.store.lock().unwrap();
        let key = (ns.to_string(), name.to_string());
        if !st.objects.contains_key(&key) {
            return false;
        }
        st.write(key, None, "DELETED");
        self.shared.changed.notify_all();
        true
    }

    /// Ends every open watch (as a server restart or a load balancer timeout would); clients
    /// must re-list and watch again.
    pub fn end_watches(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        self.shared.changed.notify_all();
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
    }
}

impl Store {
    /// Applies a write at a new revision; `obj` None deletes. Returns the stored object (or the
    /// deleted one, with the deletion's version, as the real server's DELETED event carries).
    fn write(&mut self, key: (String, String), obj: Option<Value>, kind: &'static str) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let stored = match obj {
            Some(mut o) => {
                o["metadata"]["resourceVersion"] = json!(rv.to_string());
                self.objects.insert(key, o.clone());
                o
            }
            None => {
                let mut o = self.objects.remove(&key).unwrap_or(Value::Null);
                o["metadata"]["resourceVersion"] = json!(rv.to_string());
                o
            }
        };
        self.history.push_back(Event { rv, kind, object: stored.clone() });
        while self.history.len() > HISTORY {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        stored
    }
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn unpct(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).ok()? == 0 {
            return None;
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (unpct(k), unpct(v))
        })
        .collect();
    let mut req = Request { method, path: unpct(path), query, headers, body: Vec::new() };
    if let Some(n) = header(&req, "content-length") {
        let n: usize = n.parse().ok()?;
        let mut body = vec![0; n];
        r.read_exact(&mut body).ok()?;
        req.body = body;
    } else if header(&req, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut l = String::new();
            r.read_line(&mut l).ok()?;
            let n = usize::from_str_radix(l.trim().split(';').next()?, 16).ok()?;
            if n == 0 {
                let mut t = String::new();
                while r.read_line(&mut t).ok()? > 2 {
                    t.clear();
                }
                break;
            }
            let start = req.body.len();
            req.body.resize(start + n, 0);
            r.read_exact(&mut req.body[start..]).ok()?;
            let mut crlf = String::new();
            r.read_line(&mut crlf).ok()?;
        }
    }
    Some(req)
}

fn reason_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        422 => "Unprocessable Entity",
        _ => "Error",
    }
}

fn respond(w: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let b = serde_json::to_vec(body).expect("serializable");
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        reason_text(code),
        b.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(&b)?;
    w.flush()
}

/// A `Status` failure as the API server sends it.
fn status(code: u16, reason: &str, message: String, name: Option<&str>) -> (u16, Value) {
    let mut s = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if let Some(n) = name {
        s["details"] = json!({"name": n, "group": "coordination.k8s.io", "kind": "leases"});
    }
    (code, s)
}

fn not_found(name: &str) -> (u16, Value) {
    status(404, "NotFound", format!("leases.coordination.k8s.io \"{name}\" not found"), Some(name))
}

fn conflict(name: &str, msg: &str) -> (u16, Value) {
    status(
        409,
        "Conflict",
        format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": {msg}"),
        Some(name),
    )
}

/// RFC 1123 DNS subdomain, as `metadata.name` of a Lease must be.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn now_rfc3339() -> String {
    halyard_model::time::rfc3339(SystemTime::now())
}

/// Label selector terms: `k=v`, `k==v`, `k!=v`, `k`, `!k`.
fn labels_match(sel: &str, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    sel.split(',').map(str::trim).filter(|t| !t.is_empty()).all(|t| {
        if let Some((k, v)) = t.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            labels[k.trim()].as_str() == Some(v.trim())
        } else if let Some(k) = t.strip_prefix('!') {
            labels[k.trim()].is_null()
        } else {
            !labels[t].is_null()
        }
    })
}

/// Field selector terms: `metadata.name=`, `metadata.namespace=` (`=`, `==`, `!=`).
fn fields_match(sel: &str, obj: &Value) -> Result<bool, String> {
    for t in sel.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v, neg) = if let Some((k, v)) = t.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            (k, v, false)
        } else {
            return Err(format!("invalid field selector term {t:?}"));
        };
        let field = match k.trim() {
            "metadata.name" => obj["metadata"]["name"].as_str(),
            "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
            other => return Err(format!("field label not supported: {other}")),
        };
        if (field == Some(v.trim())) == neg {
            return Ok(false);
        }
    }
    Ok(true)
}

fn serve(conn: TcpStream, s: &Shared) {
    let _ = conn.set_nodelay(true);
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r) {
        s.requests.fetch_add(1, Ordering::SeqCst);
        if s.stopping.load(Ordering::SeqCst) {
            return;
        }
        let token = s.token.lock().unwrap().clone();
        if let Some(t) = token
            && header(&req, "authorization") != Some(&format!("Bearer {t}"))
        {
            let (c, b) = status(401, "Unauthorized", "Unauthorized".into(), None);
            if respond(&mut w, c, &b).is_err() {
                return;
            }
            continue;
        }
        let watch = matches!(req.query.get("watch").map(String::as_str), Some("1" | "true"));
        if req.method == "GET" && watch {
            watch_stream(&mut w, &req, s);
            return; // a watch ends its connection
        }
        let (code, body) = handle(&req, s);
        if respond(&mut w, code, &body).is_err() {
            return;
        }
        if header(&req, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return;
        }
    }
}

/// (namespace, name) from the path; name None for the collection.
fn route(path: &str) -> Option<(String, Option<String>)> {
    let rest = path.strip_prefix(PREFIX)?;
    let mut parts = rest.trim_end_matches('/').split('/');
    let ns = parts.next()?.to_string();
    if parts.next()? != "leases" {
        return None;
    }
    let name = parts.next().map(String::from);
    if parts.next().is_some() {
        return None;
    }
    Some((ns, name))
}

fn handle(req: &Request, s: &Shared) -> (u16, Value) {
    let Some((ns, name)) = route(&req.path) else {
        return status(404, "NotFound", "the server could not find the requested resource".into(), None);
    };
    let body = || -> Result<Value, (u16, Value)> {
        serde_json::from_slice(&req.body).map_err(|e| {
            status(400, "BadRequest", format!("the body of the request was in an unknown format: {e}"), None)
        })
    };
    let mut st = s.store.lock().unwrap();
    let out = match (req.method.as_str(), name) {
        ("GET", None) => {
            let fsel = req.query.get("fieldSelector").cloned().unwrap_or_default();
            let lsel = req.query.get("labelSelector").cloned().unwrap_or_default();
            let mut items = Vec::new();
            for ((n, _), o) in &st.objects {
                if *n != ns || !labels_match(&lsel, o) {
                    continue;
                }
                match fields_match(&fsel, o) {
                    Ok(true) => {
                        let mut o = o.clone();
                        if let Some(m) = o.as_object_mut() {
                            m.remove("kind");
                            m.remove("apiVersion");
                        }
                        items.push(o)
                    }
                    Ok(false) => {}
                    Err(e) => return status(400, "BadRequest", e, None),
                }
            }
            (
                200,
                json!({"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
                       "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            )
        }
        ("GET", Some(n)) => match st.objects.get(&(ns, n.clone())) {
            Some(o) => (200, o.clone()),
            None => not_found(&n),
        },
        ("POST", None) => {
            let mut o = match body() {
                Ok(o) => o,
                Err(e) => return e,
            };
            let n = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if let Err(e) = validate(&o, &ns, None) {
                return e;
            }
            let key = (ns.clone(), n.clone());
            if st.objects.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("leases.coordination.k8s.io \"{n}\" already exists"),
                    Some(&n),
                );
            }
            o["apiVersion"] = json!("coordination.k8s.io/v1");
            o["kind"] = json!("Lease");
            o["metadata"]["namespace"] = json!(ns);
            o["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", st.rv + 1));
            o["metadata"]["creationTimestamp"] = json!(now_rfc3339());
            let stored = st.write(key, Some(o), "ADDED");
            (201, stored)
        }
        ("PUT", Some(n)) => {
            let mut o = match body() {
                Ok(o) => o,
                Err(e) => return e,
            };
            if let Err(e) = validate(&o, &ns, Some(&n)) {
                return e;
            }
            let key = (ns.clone(), n.clone());
            let Some(cur) = st.objects.get(&key) else { return not_found(&n) };
            // Leases allow unconditional updates: a missing resourceVersion is not checked.
            if let Some(rv) = o["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty())
                && Some(rv) != cur["metadata"]["resourceVersion"].as_str()
            {
                return conflict(
                    &n,
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
            o["apiVersion"] = json!("coordination.k8s.io/v1");
            o["kind"] = json!("Lease");
            o["metadata"]["namespace"] = json!(ns);
            o["metadata"]["uid"] = cur["metadata"]["uid"].clone();
            o["metadata"]["creationTimestamp"] = cur["metadata"]["creationTimestamp"].clone();
            let stored = st.write(key, Some(o), "MODIFIED");
            (200, stored)
        }
        ("DELETE", Some(n)) => {
            let opts = if req.body.is_empty() {
                Value::Null
            } else {
                match body() {
                    Ok(o) => o,
                    Err(e) => return e,
                }
            };
            let key = (ns.clone(), n.clone());
            let Some(cur) = st.objects.get(&key) else { return not_found(&n) };
            let cur_rv = cur["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
            if let Some(want) = opts["preconditions"]["resourceVersion"].as_str()
                && want != cur_rv
            {
                return conflict(
                    &n,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {cur_rv}"
                    ),
                );
            }
            if let Some(uid) = opts["preconditions"]["uid"].as_str()
                && Some(uid) != cur["metadata"]["uid"].as_str()
            {
                return conflict(&n, "Precondition failed: UID in precondition does not match");
            }
            let deleted = st.write(key, None, "DELETED");
            (200, deleted)
        }
        (m, _) => status(405, "MethodNotAllowed", format!("{m} is not supported here"), None),
    };
    drop(st);
    s.changed.notify_all();
    out
}

fn validate(o: &Value, ns: &str, url_name: Option<&str>) -> Result<(), (u16, Value)> {
    let n = o["metadata"]["name"].as_str().unwrap_or_default();
    if let Some(u) = url_name
        && u != n
    {
        return Err(status(
            400,
            "BadRequest",
            format!("the name of the object ({n}) does not match the name on the URL ({u})"),
            None,
        ));
    }
    if let Some(bns) = o["metadata"]["namespace"].as_str()
        && !bns.is_empty()
        && bns != ns
    {
        return Err(status(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request".into(),
            None,
        ));
    }
    if !valid_name(n) {
        return Err(status(
            422,
            "Invalid",
            format!(
                "Lease.coordination.k8s.io \"{n}\" is invalid: metadata.name: Invalid value: \"{n}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
            ),
            Some(n),
        ));
    }
    if let Some(d) = o["spec"]["leaseDurationSeconds"].as_i64()
        && d <= 0
    {
        return Err(status(
            422,
            "Invalid",
            format!(
                "Lease.coordination.k8s.io \"{n}\" is invalid: spec.leaseDurationSeconds: Invalid value: {d}: must be greater than 0"
            ),
            Some(n),
        ));
    }
    Ok(())
}

fn chunk(w: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    w.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

fn watch_stream(w: &mut TcpStream, req: &Request, s: &Shared) {
    let Some((ns, None)) = route(&req.path) else {
        let (c, b) = status(405, "MethodNotAllowed", "watch needs a collection".into(), None);
        let _ = respond(w, c, &b);
        return;
    };
    let fsel = req.query.get("fieldSelector").cloned().unwrap_or_default();
    let lsel = req.query.get("labelSelector").cloned().unwrap_or_default();
    let probe = json!({"metadata": {"name": "", "namespace": ""}});
    if let Err(e) = fields_match(&fsel, &probe) {
        let (c, b) = status(400, "BadRequest", e, None);
        let _ = respond(w, c, &b);
        return;
    }
    let from: Option<u64> = match req.query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(v) => match v.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                let (c, b) = status(400, "BadRequest", format!("invalid resource version {v:?}"), None);
                let _ = respond(w, c, &b);
                return;
            }
        },
    };
    let deadline = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(|t| Instant::now() + Duration::from_secs(t));
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if w.write_all(head.as_bytes()).is_err() {
        return;
    }
    let matches = |o: &Value| {
        o["metadata"]["namespace"].as_str() == Some(ns.as_str())
            && labels_match(&lsel, o)
            && fields_match(&fsel, o).unwrap_or(false)
    };
    let line = |kind: &str, o: &Value| {
        let mut b = serde_json::to_vec(&json!({"type": kind, "object": o})).expect("serializable");
        b.push(b'\n');
        b
    };
    let generation = s.generation.load(Ordering::SeqCst);
    // Start: synthetic ADDED for what exists (from "0"/absent), or history after `from`.
    let mut last = {
        let st = s.store.lock().unwrap();
        let mut out = Vec::new();
        let last = match from {
            None => {
                for o in st.objects.values().filter(|o| matches(o)) {
                    out.push(line("ADDED", o));
                }
                st.rv
            }
            Some(f) if f < st.compacted => {
                let (_, st410) =
                    status(410, "Expired", format!("too old resource version: {f} ({})", st.compacted + 1), None);
                drop(st);
                let _ = chunk(w, &line("ERROR", &st410));
                let _ = chunk(w, b"");
                return;
            }
            Some(f) => f,
        };
        drop(st);
        for l in out {
            if chunk(w, &l).is_err() {
                return;
            }
        }
        last
    };
    loop {
        let mut out = Vec::new();
        {
            let mut st = s.store.lock().unwrap();
            loop {
                if s.stopping.load(Ordering::SeqCst) || s.generation.load(Ordering::SeqCst) != generation {
                    let _ = chunk(w, b"");
                    return;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    drop(st);
                    let _ = chunk(w, b"");
                    return;
                }
                if st.rv > last {
                    break;
                }
                st = s.changed.wait_timeout(st, Duration::from_millis(200)).unwrap().0;
            }
            for e in st.history.iter().filter(|e| e.rv > last) {
                if matches(&e.object) {
                    out.push(line(e.kind, &e.object));
                }
            }
            last = st.rv;
        }
        for l in out {
            if chunk(w, &l).is_err() {
                return;
            }
        }
    }
}
