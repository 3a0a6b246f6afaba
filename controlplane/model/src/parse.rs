//! Parsing a multi-document YAML (or JSON) manifest file into typed objects, with every
//! problem of the file reported at once.
//!
//! Each document is read twice from the text: once into a `serde_yaml::Value` to find
//! `apiVersion`/`kind` (and the object's name for messages), once straight from the text into
//! the typed struct so that errors carry serde_yaml's line and column. The typed pass is
//! wrapped in `serde_path_to_error` (field path of an error) inside `serde_ignored` (path of
//! every unknown field, reported as a warning).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::diag::{Diagnostic, FileError, Severity};
use crate::meta::IGNORED_METADATA_FIELDS;
use crate::object::{Kind, Lookup, Object, ObjectKey, lookup};
use crate::validate::Issues;

/// A file that parsed without errors: its objects in document order, and its warnings.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedFile {
    pub file: PathBuf,
    pub objects: Vec<Object>,
    /// 1-based document index of each object (parallel to `objects`).
    pub documents: Vec<usize>,
    pub warnings: Vec<Diagnostic>,
}

/// Manifest files larger than this are refused rather than read into memory.
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a manifest file, refusing files over [`MAX_MANIFEST_BYTES`].
pub(crate) fn read_manifest(file: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(file).map_err(|e| format!("cannot read file: {e}"))?;
    let mut bytes = Vec::new();
    // Read one byte past the limit to detect an oversized file without trusting metadata.
    f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read file: {e}"))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!("file is larger than {} MiB; not read", MAX_MANIFEST_BYTES >> 20));
    }
    Ok(bytes)
}

/// Reads and parses a manifest file. An unreadable, oversized or non-UTF-8 file is a
/// file-level error.
pub fn parse_manifest_file(file: &Path) -> Result<ParsedFile, FileError> {
    let bytes = read_manifest(file)
        .map_err(|msg| FileError { diagnostics: vec![Diagnostic::file_level(file, Severity::Error, msg)] })?;
    parse_manifest_bytes(file, &bytes)
}

/// Parses manifest bytes that should be UTF-8.
pub fn parse_manifest_bytes(file: &Path, bytes: &[u8]) -> Result<ParsedFile, FileError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_manifest(file, text),
        Err(e) => Err(FileError {
            diagnostics: vec![Diagnostic::file_level(
                file,
                Severity::Error,
                format!("file is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()),
            )],
        }),
    }
}

/// Parses the multi-document YAML `text` of `file` (the path is only used in diagnostics).
///
/// Empty and `null` documents (e.g. after a trailing `---`) are skipped. Unknown kinds and
/// unknown fields are warnings; everything else is an error, and any error rejects the whole
/// file: the `Err` then carries every diagnostic of the file, warnings included.
pub fn parse_manifest(file: &Path, text: &str) -> Result<ParsedFile, FileError> {
    // serde_yaml 0.9 is known to panic on some malformed multi-document streams (e.g. an
    // unknown alias followed by more documents). We stop at the first syntax error, which
    // avoids the known case; this catch keeps any other such bug from taking the agent down.
    std::panic::catch_unwind(AssertUnwindSafe(|| parse_inner(file, text))).unwrap_or_else(|_| {
        Err(FileError {
            diagnostics: vec![Diagnostic::file_level(
                file,
                Severity::Error,
                "internal error: the YAML parser failed on this file (please report it)",
            )],
        })
    })
}

struct Ctx<'a> {
    file: &'a Path,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        severity: Severity,
        document: usize,
        object: Option<&str>,
        field: Option<String>,
        message: impl Into<String>,
        line: Option<usize>,
        column: Option<usize>,
    ) {
        self.diags.push(Diagnostic {
            file: self.file.to_path_buf(),
            document,
            line,
            column,
            field: field.filter(|f| !f.is_empty()),
            object: object.map(str::to_string),
            message: message.into(),
            severity,
        });
    }
}

fn parse_inner(file: &Path, text: &str) -> Result<ParsedFile, FileError> {
    let mut cx = Ctx { file, diags: Vec::new() };

    // Pass 1: generic values. Stop at the first syntax error: serde_yaml's document iterator
    // repeats a syntax error forever, and may panic on documents after some errors.
    let mut values = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        match Value::deserialize(de) {
            Ok(v) => values.push(v),
            Err(e) => {
                let (line, column) = location(&e);
                let msg = clean_message(&e, "");
                cx.push(Severity::Error, values.len() + 1, None, None, format!("invalid YAML: {msg}"), line, column);
                break;
            }
        }
    }

    // Pass 2: typed documents.
    let mut objects: Vec<Object> = Vec::new();
    let mut documents: Vec<usize> = Vec::new();
    let mut seen: BTreeMap<ObjectKey, usize> = BTreeMap::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).take(values.len()).enumerate() {
        let doc = i + 1;
        let Some(kind) = classify(&mut cx, doc, &values[i]) else { continue };
        let label = label_from_value(kind, &values[i]);

        // serde_yaml's typed deserializer does not apply YAML merge keys (`<<: *anchor`), which
        // kubectl honours; such documents are deserialized from the merged value instead, at the
        // price of line numbers in their errors.
        let typed = if has_merge_key(&values[i]) {
            let mut v = values[i].clone();
            match v.apply_merge() {
                Ok(()) => typed_any(kind, v),
                Err(e) => (Err((String::new(), e)), Vec::new()),
            }
        } else {
            typed_any(kind, de)
        };
        let (result, ignored) = typed;
        // Reported even when the document fails: a misspelt field often explains a missing one.
        for path in ignored {
            if !silently_ignored(&path) {
                cx.push(Severity::Warning, doc, Some(&label), Some(path), "unknown field ignored", None, None);
            }
        }
        let mut obj = match result {
            Ok(o) => o,
            Err((path, e)) => {
                let (line, column) = location(&e);
                let msg = clean_message(&e, &path);
                cx.push(Severity::Error, doc, Some(&label), Some(path), msg, line, column);
                continue;
            }
        };
        if kind == Kind::CiliumLoadBalancerIPPool && spec_has(&values[i], "cidrs") {
            cx.push(
                Severity::Warning,
                doc,
                Some(&label),
                Some("spec.cidrs".into()),
                "deprecated name of spec.blocks (renamed in Cilium 1.15)",
                None,
                None,
            );
        }

        let mut issues = Issues::default();
        obj.check(&mut issues);
        let key = obj.key();
        // After normalisation the key is authoritative (e.g. namespace "default" filled in).
        let label = if key.name.is_empty() { label } else { key.to_string() };
        let bad = issues.has_errors();
        for issue in issues.items {
            cx.push(issue.severity, doc, Some(&label), Some(issue.field), issue.message, None, None);
        }
        if bad {
            continue;
        }
        if let Some(first) = seen.get(&key) {
            cx.push(
                Severity::Error,
                doc,
                Some(&label),
                Some("metadata.name".into()),
                format!("duplicate object: {key} is already defined in document {first}"),
                None,
                None,
            );
            continue;
        }
        seen.insert(key, doc);
        objects.push(obj);
        documents.push(doc);
    }

    // Pass-1 syntax errors were pushed first; present everything in document order.
    cx.diags.sort_by_key(|d| d.document);
    if cx.diags.iter().any(Diagnostic::is_error) {
        Err(FileError { diagnostics: cx.diags })
    } else {
        Ok(ParsedFile { file: file.to_path_buf(), objects, documents, warnings: cx.diags })
    }
}

/// Decides what to do with a document from its generic value: `Some(kind)` to deserialize it,
/// `None` when it is skipped (empty, unknown kind) or wrong (diagnosed here).
fn classify(cx: &mut Ctx<'_>, doc: usize, value: &Value) -> Option<Kind> {
    let map = match value {
        Value::Null => return None,
        Value::Mapping(m) => m,
        Value::Tagged(_) => {
            cx.push(Severity::Error, doc, None, None, "YAML tags (!tag) are not supported on documents", None, None);
            return None;
        }
        _ => {
            cx.push(
                Severity::Error,
                doc,
                None,
                None,
                "document is not a mapping (expected a Kubernetes object with apiVersion and kind)",
                None,
                None,
            );
            return None;
        }
    };
    let name = value.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str);
    let field = |key: &str| -> Result<&str, String> {
        match map.get(key) {
            None | Some(Value::Null) => Err(format!("missing {key}")),
            Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
            Some(_) => Err(format!("{key} must be a non-empty string")),
        }
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let label = match (&kind, name) {
        (Ok(k), Some(n)) => Some(format!("{k} {n}")),
        (Ok(k), None) => Some(k.to_string()),
        _ => None,
    };
    let (api_version, kind) = match (api_version, kind) {
        (Ok(a), Ok(k)) => (a, k),
        (a, k) => {
            for (f, r) in [("apiVersion", a), ("kind", k)] {
                if let Err(msg) = r {
                    cx.push(Severity::Error, doc, label.as_deref(), Some(f.into()), msg, None, None);
                }
            }
            return None;
        }
    };
    match lookup(api_version, kind) {
        Lookup::Known(k) => Some(k),
        Lookup::UnsupportedVersion(k) => {
            cx.push(
                Severity::Error,
                doc,
                label.as_deref(),
                Some("apiVersion".into()),
                format!(
                    "unsupported apiVersion {api_version:?} for kind {k} (supported: {})",
                    k.api_versions().join(", ")
                ),
                None,
                None,
            );
            None
        }
        Lookup::Unknown if kind.ends_with("List") && map.contains_key("items") => {
            cx.push(
                Severity::Error,
                doc,
                label.as_deref(),
                Some("kind".into()),
                format!("kind {kind} is not supported: put each item in its own YAML document"),
                None,
                None,
            );
            None
        }
        Lookup::Unknown => {
            // The diagnostic's Display adds the file and document.
            cx.push(
                Severity::Warning,
                doc,
                label.as_deref(),
                None,
                format!("unknown kind {kind} (apiVersion {api_version}): skipped"),
                None,
                None,
            );
            None
        }
    }
}

/// `Kind ns/name` or `Kind name` from the generic value, for messages about documents that did
/// not deserialize.
fn label_from_value(kind: Kind, value: &Value) -> String {
    let meta = value.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("");
    let ns = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("default");
    match (name.is_empty(), kind.is_namespaced()) {
        (true, _) => kind.to_string(),
        (false, true) => format!("{kind} {ns}/{name}"),
        (false, false) => format!("{kind} {name}"),
    }
}

fn spec_has(value: &Value, key: &str) -> bool {
    value.get("spec").and_then(|s| s.get(key)).is_some()
}

/// The object or the error with its field path, and the paths of the ignored fields.
type Typed = (Result<Object, (String, serde_yaml::Error)>, Vec<String>);

fn typed_any<'de, D: serde::Deserializer<'de, Error = serde_yaml::Error>>(kind: Kind, de: D) -> Typed {
    match kind {
        Kind::Service => typed(de, Object::Service),
        Kind::EndpointSlice => typed(de, Object::EndpointSlice),
        Kind::Node => typed(de, Object::Node),
        Kind::Namespace => typed(de, Object::Namespace),
        Kind::Pod => typed(de, Object::Pod),
        Kind::Secret => typed(de, Object::Secret),
        Kind::CiliumLoadBalancerIPPool => typed(de, Object::CiliumLoadBalancerIPPool),
        Kind::CiliumL2AnnouncementPolicy => typed(de, Object::CiliumL2AnnouncementPolicy),
        Kind::CiliumBgpClusterConfig => typed(de, Object::CiliumBgpClusterConfig),
        Kind::CiliumBgpPeerConfig => typed(de, Object::CiliumBgpPeerConfig),
        Kind::CiliumBgpAdvertisement => typed(de, Object::CiliumBgpAdvertisement),
        Kind::CiliumBgpNodeConfigOverride => typed(de, Object::CiliumBgpNodeConfigOverride),
        Kind::CiliumBgpPeeringPolicy => typed(de, Object::CiliumBgpPeeringPolicy),
        Kind::IpAddressPool => typed(de, Object::IpAddressPool),
        Kind::L2Advertisement => typed(de, Object::L2Advertisement),
        Kind::BgpPeer => typed(de, Object::BgpPeer),
        Kind::BgpAdvertisement => typed(de, Object::BgpAdvertisement),
        Kind::Community => typed(de, Object::Community),
        Kind::BfdProfile => typed(de, Object::BfdProfile),
    }
}

fn has_merge_key(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => m.iter().any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
        Value::Sequence(s) => s.iter().any(has_merge_key),
        Value::Tagged(t) => has_merge_key(&t.value),
        _ => false,
    }
}

fn typed<'de, D, T>(de: D, wrap: fn(T) -> Object) -> Typed
where
    D: serde::Deserializer<'de, Error = serde_yaml::Error>,
    T: DeserializeOwned,
{
    let mut track = serde_path_to_error::Track::new();
    let mut ignored = Vec::new();
    let result: Result<T, _> = {
        let de = serde_path_to_error::Deserializer::new(de, &mut track);
        serde_ignored::deserialize(de, |p| ignored.push(ignored_path(&p)))
    };
    match result {
        Ok(v) => (Ok(wrap(v)), ignored),
        Err(e) => (Err((error_path(&track.path()), e)), ignored),
    }
}

/// Unknown fields that are legitimate Kubernetes fields Halyard has no use for: `kind` (read
/// in the first pass), anything under `status` (written by controllers, and present in pasted
/// `kubectl get -o yaml` output), and server-managed metadata.
fn silently_ignored(path: &str) -> bool {
    let first = path.split(['.', '[']).next().unwrap_or("");
    if first == "kind" || first == "status" {
        return true;
    }
    path.strip_prefix("metadata.")
        .map(|rest| rest.split(['.', '[']).next().unwrap_or(""))
        .is_some_and(|f| IGNORED_METADATA_FIELDS.contains(&f))
}

/// `spec.blocks[0].cidr` from a serde_path_to_error path (empty for the root).
fn error_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut s = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => s.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(key);
            }
            Segment::Unknown => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push('?');
            }
        }
    }
    s
}

/// `spec.serviceSelecter` from a serde_ignored path, in the same format as [`error_path`].
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => {
            let p = ignored_path(parent);
            if p.is_empty() { key.clone() } else { format!("{p}.{key}") }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn location(e: &serde_yaml::Error) -> (Option<usize>, Option<usize>) {
    match e.location() {
        Some(l) => (Some(l.line()), Some(l.column())),
        None => (None, None),
    }
}

/// serde_yaml's `Display` is `<its path>: <message> at line L column C`; the diagnostic has
/// its own field and position, so keep the bare message.
fn clean_message(e: &serde_yaml::Error, field: &str) -> String {
    let mut msg = e.to_string();
    if let Some(l) = e.location() {
        let at = format!(" at line {} column {}", l.line(), l.column());
        if let Some(pos) = msg.find(&at) {
            msg.replace_range(pos..pos + at.len(), "");
        }
    }
    if let Some((prefix, rest)) = msg.split_once(": ")
        && !prefix.is_empty()
        && !prefix.contains(' ')
        && (field.starts_with(prefix) || prefix == ".")
    {
        msg = rest.to_string();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silently_ignored_fields() {
        assert!(silently_ignored("kind"));
        assert!(silently_ignored("status"));
        assert!(silently_ignored("status.conditions[0].reason"));
        assert!(silently_ignored("metadata.managedFields"));
        assert!(!silently_ignored("metadata.lables"));
        assert!(!silently_ignored("spec.serviceSelecter"));
        assert!(!silently_ignored("statusx"));
    }
}
