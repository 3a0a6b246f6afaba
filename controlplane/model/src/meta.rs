//! Kubernetes `ObjectMeta`, `LabelSelector` and namespaced names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::{Issues, check_label_key, check_label_value, check_labels, idx, join};

/// The subset of `metav1.ObjectMeta` Halyard uses. `name` is required (checked after
/// deserialization so that a missing name is reported as `metadata.name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// `metadata` fields that Kubernetes defines but Halyard does not use: accepted silently (they
/// show up in `kubectl get -o yaml` output that users paste), never reported as unknown.
pub(crate) const IGNORED_METADATA_FIELDS: &[&str] = &[
    "generateName",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Treats an explicit `null` like an absent field (Kubernetes JSON does the same for maps and lists).
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl ObjectMeta {
    /// A metadata block with just a name (handy for tests and for building objects in code).
    pub fn named(name: impl Into<String>) -> ObjectMeta {
        ObjectMeta { name: name.into(), ..ObjectMeta::default() }
    }

    /// Checks name, namespace and label syntax. `name_rule` is the kind's naming rule.
    pub(crate) fn check(&self, name_rule: NameRule, issues: &mut Issues) {
        if self.name.is_empty() {
            issues.error("metadata.name", "name is required");
        } else if let Err(e) = name_rule.check(&self.name) {
            issues.error("metadata.name", e);
        }
        if let Some(ns) = &self.namespace
            && !crate::validate::is_dns1123_label(ns)
        {
            issues.error("metadata.namespace", format!("invalid namespace {ns:?}: must be a DNS-1123 label"));
        }
        check_labels(&self.labels, "metadata.labels", issues);
        for k in self.annotations.keys() {
            if let Err(e) = check_label_key(k) {
                issues.error(join("metadata.annotations", k), e.replace("label key", "annotation key"));
            }
        }
    }
}

/// Which Kubernetes naming rule an object's `metadata.name` follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// Most objects: RFC 1123 subdomain.
    Subdomain,
    /// Namespaces: RFC 1123 label.
    Label,
    /// Services: RFC 1035 label (must start with a letter).
    Rfc1035Label,
}

impl NameRule {
    fn check(self, name: &str) -> Result<(), String> {
        let (ok, what) = match self {
            NameRule::Subdomain => (crate::validate::is_dns1123_subdomain(name), "a DNS-1123 subdomain"),
            NameRule::Label => (crate::validate::is_dns1123_label(name), "a DNS-1123 label"),
            NameRule::Rfc1035Label => (crate::validate::is_dns1035_label(name), "a DNS-1035 label"),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid name {name:?}: must be {what} (lowercase alphanumerics and '-'{}, starting and ending \
                 with an alphanumeric character)",
                if self == NameRule::Subdomain { " or '.'" } else { "" }
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// LabelSelector
// ---------------------------------------------------------------------------------------------

/// Label selectors are defined once, in the ipam crate that evaluates them; the model adds the
/// validation of keys, values and operator/values rules on top.
pub use halyard_ipam::selector::{LabelSelector, LabelSelectorRequirement, SelectorOperator};

/// Validation of a [`LabelSelector`] as the API server does it (`LabelSelectorAsSelector`).
pub(crate) trait SelectorCheck {
    fn check(&self, path: &str, issues: &mut Issues);
}

impl SelectorCheck for LabelSelector {
    /// Checks key/value syntax and the operator/values rules of `LabelSelectorAsSelector`.
    fn check(&self, path: &str, issues: &mut Issues) {
        check_labels(&self.match_labels, &join(path, "matchLabels"), issues);
        for (i, e) in self.match_expressions.iter().enumerate() {
            let p = idx(&join(path, "matchExpressions"), i);
            if let Err(err) = check_label_key(&e.key) {
                issues.error(join(&p, "key"), err);
            }
            match e.operator {
                SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => {
                    issues.error(join(&p, "values"), format!("operator {:?} needs at least one value", e.operator))
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist if !e.values.is_empty() => {
                    issues.error(join(&p, "values"), format!("operator {:?} takes no values", e.operator))
                }
                _ => {}
            }
            for (j, v) in e.values.iter().enumerate() {
                if let Err(err) = check_label_value(v) {
                    issues.error(idx(&join(&p, "values"), j), err);
                }
            }
        }
    }
}

pub(crate) fn check_selectors(selectors: &[LabelSelector], path: &str, issues: &mut Issues) {
    for (i, s) in selectors.iter().enumerate() {
        s.check(&idx(path, i), issues);
    }
}

// ---------------------------------------------------------------------------------------------
// NamespacedName
// ---------------------------------------------------------------------------------------------

/// `namespace/name`, the key of namespaced objects in [`crate::Model`]. The same type as LB-IPAM's
/// service key; it serializes as that string so that maps keyed by it are valid JSON objects.
pub use halyard_ipam::lbipam::ServiceKey as NamespacedName;

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op,
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = LabelSelector::default();
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = LabelSelector {
            match_labels: labels(&[("rack", "frontend")]),
            match_expressions: vec![expr("network-speed", SelectorOperator::NotIn, &["slow"])],
        };
        assert!(s.matches(&labels(&[("rack", "frontend")])));
        assert!(s.matches(&labels(&[("rack", "frontend"), ("network-speed", "fast")])));
        assert!(!s.matches(&labels(&[("rack", "frontend"), ("network-speed", "slow")])));
        assert!(!s.matches(&labels(&[("rack", "backend")])));
    }

    #[test]
    fn operators() {
        let l = labels(&[("color", "blue")]);
        let m = |e| LabelSelector { match_labels: BTreeMap::new(), match_expressions: vec![e] }.matches(&l);
        assert!(m(expr("color", SelectorOperator::In, &["blue", "cyan"])));
        assert!(!m(expr("color", SelectorOperator::In, &["red"])));
        assert!(!m(expr("shape", SelectorOperator::In, &["round"])));
        assert!(m(expr("color", SelectorOperator::NotIn, &["red"])));
        assert!(m(expr("somekey", SelectorOperator::NotIn, &["never-used-value"])));
        assert!(m(expr("color", SelectorOperator::Exists, &[])));
        assert!(!m(expr("color", SelectorOperator::DoesNotExist, &[])));
        assert!(m(expr("node-role.kubernetes.io/control-plane", SelectorOperator::DoesNotExist, &[])));
    }

    #[test]
    fn selector_validation() {
        let s = LabelSelector {
            match_labels: labels(&[("ok", "fine"), ("bad key!", "x")]),
            match_expressions: vec![
                expr("a", SelectorOperator::In, &[]),
                expr("b", SelectorOperator::Exists, &["x"]),
                expr("c", SelectorOperator::NotIn, &["ok"]),
            ],
        };
        let mut issues = Issues::default();
        s.check("spec.serviceSelector", &mut issues);
        let fields: Vec<_> = issues.items.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.serviceSelector.matchLabels.bad key!",
                "spec.serviceSelector.matchExpressions[0].values",
                "spec.serviceSelector.matchExpressions[1].values",
            ]
        );
    }

    #[test]
    fn namespaced_name_serializes_as_string() {
        let n = NamespacedName::new("default", "web");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"default/web\"");
    }
}
