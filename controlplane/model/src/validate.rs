//! Semantic checks that run after a document deserialized cleanly.
//!
//! Checks collect [`Issue`]s (field path + message + severity); [`crate::parse`] turns them into
//! [`crate::Diagnostic`]s with file, document and object. Checks may also normalise values
//! (e.g. mask host bits of a CIDR) so that consumers only ever see canonical values.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::diag::Severity;
use crate::net::IpBlock;

/// One finding of a semantic check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    /// Field path such as `spec.blocks[0].cidr`; empty for the object as a whole.
    pub field: String,
    pub message: String,
}

/// Collector for [`Issue`]s.
#[derive(Debug, Default)]
pub struct Issues {
    pub items: Vec<Issue>,
}

impl Issues {
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.items.push(Issue { severity: Severity::Error, field: field.into(), message: message.into() });
    }

    pub fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.items.push(Issue { severity: Severity::Warning, field: field.into(), message: message.into() });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|i| i.severity == Severity::Error)
    }
}

/// Joins a parent path and a child key: `join("spec", "blocks")` → `spec.blocks`.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

/// Indexes a path: `idx("spec.blocks", 2)` → `spec.blocks[2]`.
pub(crate) fn idx(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

// ---------------------------------------------------------------------------------------------
// Kubernetes name rules (k8s.io/apimachinery/pkg/util/validation).
// ---------------------------------------------------------------------------------------------

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: ≤63 chars of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower)
}

/// RFC 1123 subdomain: ≤253 chars, dot-separated RFC 1123 labels (what most object names use).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// RFC 1035 label: an RFC 1123 label that starts with a letter (Service names).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// The "name" part of a qualified name or a label value: ≤63 chars,
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_name_part(s: &str) -> bool {
    let ok_end = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(ok_end)
        && s.ends_with(ok_end)
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Label (and annotation) keys: `[prefix/]name`, prefix an RFC 1123 subdomain.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return Err(format!("invalid label key {key:?}: prefix {p:?} must be a DNS-1123 subdomain"));
    }
    if !is_qualified_name_part(name) {
        return Err(format!(
            "invalid label key {key:?}: name part must be 1-63 alphanumeric characters, '-', '_' or '.', \
             starting and ending with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Label values: empty, or like the name part of a key.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: must be at most 63 alphanumeric characters, '-', '_' or '.', \
             starting and ending with an alphanumeric character"
        ))
    }
}

pub(crate) fn check_labels(labels: &BTreeMap<String, String>, path: &str, issues: &mut Issues) {
    for (k, v) in labels {
        let p = join(path, k);
        if let Err(e) = check_label_key(k) {
            issues.error(p.clone(), e);
        }
        if let Err(e) = check_label_value(v) {
            issues.error(p, e);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Network value checks shared by several kinds.
// ---------------------------------------------------------------------------------------------

/// Masks host bits in place, warning once. Kubernetes and both upstreams accept such CIDRs
/// (Go `net.ParseCIDR` returns the masked network; Cilium `rangeFromPrefix` calls
/// `prefix.Masked()`), so rejecting them would break documented examples such as MetalLB's
/// `198.51.100.10/24`; silently masking would hide a likely typo, hence the warning.
pub(crate) fn normalise_cidr(net: &mut IpNet, path: &str, issues: &mut Issues) {
    let masked = net.trunc();
    if masked != *net {
        issues.warn(path, format!("CIDR {net} has host bits set; using {masked}"));
        *net = masked;
    }
}

pub(crate) fn normalise_block(block: &mut IpBlock, path: &str, issues: &mut Issues) {
    if let IpBlock::Cidr(net) = block {
        normalise_cidr(net, path, issues);
    }
}

/// Reports every pair of overlapping blocks once, as an error or a warning.
pub(crate) fn check_overlaps(blocks: &[IpBlock], path: &str, severity: Severity, issues: &mut Issues) {
    for (i, a) in blocks.iter().enumerate() {
        for (j, b) in blocks.iter().enumerate().skip(i + 1) {
            if a.overlaps(b) {
                let msg = format!("{a} overlaps {b} (entry {j})");
                match severity {
                    Severity::Error => issues.error(idx(path, i), msg),
                    Severity::Warning => issues.warn(idx(path, i), msg),
                }
            }
        }
    }
}

/// Checks an optional integer against an inclusive range.
pub(crate) fn check_range<T>(value: Option<T>, lo: T, hi: T, path: &str, issues: &mut Issues)
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if let Some(v) = value
        && (v < lo || v > hi)
    {
        issues.error(path, format!("{v} is out of range {lo}-{hi}"));
    }
}

/// Standard BGP community (RFC 1997): a 32-bit decimal or `<0-65535>:<0-65535>`.
pub fn parse_standard_community(s: &str) -> Result<u32, String> {
    match s.split_once(':') {
        None => s.parse::<u32>().map_err(|_| format!("invalid standard community {s:?}")),
        Some((a, b)) => {
            let a = a.parse::<u16>().map_err(|_| format!("invalid standard community {s:?}"))?;
            let b = b.parse::<u16>().map_err(|_| format!("invalid standard community {s:?}"))?;
            Ok((u32::from(a) << 16) | u32::from(b))
        }
    }
}

/// Large BGP community (RFC 8092): three 32-bit decimals separated by colons.
pub fn parse_large_community(s: &str) -> Result<[u32; 3], String> {
    let bad = || format!("invalid large community {s:?} (expected <u32>:<u32>:<u32>)");
    let mut parts = s.split(':');
    let mut out = [0u32; 3];
    for slot in &mut out {
        *slot = parts.next().ok_or_else(bad)?.parse::<u32>().map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// Well-known community names accepted by Cilium (`bgp_advert_types.go`
/// `BGPWellKnownCommunity`), with their RFC 1997 values.
pub const WELL_KNOWN_COMMUNITIES: &[(&str, u32)] = &[
    ("internet", 0x0000_0000),
    ("planned-shut", 0xffff_0000),
    ("accept-own", 0xffff_0001),
    ("route-filter-translated-v4", 0xffff_0002),
    ("route-filter-v4", 0xffff_0003),
    ("route-filter-translated-v6", 0xffff_0004),
    ("route-filter-v6", 0xffff_0005),
    ("llgr-stale", 0xffff_0006),
    ("no-llgr", 0xffff_0007),
    ("blackhole", 0xffff_029a),
    ("no-export", 0xffff_ff01),
    ("no-advertise", 0xffff_ff02),
    ("no-export-subconfed", 0xffff_ff03),
    ("no-peer", 0xffff_ff04),
];

pub fn well_known_community(name: &str) -> Option<u32> {
    WELL_KNOWN_COMMUNITIES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns1123_subdomain("blue-pool"));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("Blue"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_dns1123_label("kube-system"));
        assert!(!is_dns1123_label("a.b"));
        assert!(is_dns1035_label("web"));
        assert!(!is_dns1035_label("1web"));
    }

    #[test]
    fn label_keys_and_values() {
        assert!(check_label_key("node-role.kubernetes.io/control-plane").is_ok());
        assert!(check_label_key("io.kubernetes.service.namespace").is_ok());
        assert!(check_label_key("kubernetes.io/hostname").is_ok());
        assert!(check_label_key("Color").is_ok());
        assert!(check_label_key("").is_err());
        assert!(check_label_key("a/b/c").is_err());
        assert!(check_label_key("UPPER.io/x").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("never-used-value").is_ok());
        assert!(check_label_value("NodeA").is_ok());
        assert!(check_label_value("has space").is_err());
        assert!(check_label_value(&"v".repeat(64)).is_err());
    }

    #[test]
    fn communities() {
        assert_eq!(parse_standard_community("65535:65282"), Ok(0xffff_ff02));
        assert_eq!(parse_standard_community("4294967295"), Ok(u32::MAX));
        assert!(parse_standard_community("65536:1").is_err());
        assert!(parse_standard_community("1:2:3").is_err());
        assert_eq!(parse_large_community("1111:1111:1111"), Ok([1111, 1111, 1111]));
        assert!(parse_large_community("1:2").is_err());
        assert!(parse_large_community("1:2:3:4").is_err());
        assert_eq!(well_known_community("no-export"), Some(0xffff_ff01));
        assert_eq!(well_known_community("nope"), None);
    }

    #[test]
    fn host_bits_are_masked_with_a_warning() {
        let mut issues = Issues::default();
        let mut n: IpNet = "198.51.100.10/24".parse().unwrap();
        normalise_cidr(&mut n, "spec.addresses[0]", &mut issues);
        assert_eq!(n.to_string(), "198.51.100.0/24");
        assert_eq!(issues.items.len(), 1);
        assert_eq!(issues.items[0].severity, Severity::Warning);
        assert!(issues.items[0].message.contains("using 198.51.100.0/24"));
    }
}
