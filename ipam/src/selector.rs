//! Kubernetes label selectors (`metav1.LabelSelector`), evaluated against a label map.
//!
//! This is the one definition of the type in Halyard: the model crate deserialises manifests
//! into it (camelCase, as the Kubernetes API writes it) and adds its validation on top.
//! Semantics follow the Kubernetes API conventions: every `matchLabels` pair and every
//! `matchExpressions` requirement must hold; an empty selector matches everything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Label selector operators. An unknown operator fails deserialisation at its field path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Treats an explicit `null` like an absent field (Kubernetes JSON does the same for maps and lists).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl LabelSelector {
    /// A selector matching exactly these labels.
    pub fn with_labels<K: Into<String>, V: Into<String>>(labels: impl IntoIterator<Item = (K, V)>) -> Self {
        LabelSelector {
            match_labels: labels.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            match_expressions: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Matches against labels given by a lookup function (e.g. a map plus pseudo-labels, without
    /// building a merged map).
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.match_labels.iter().all(|(k, v)| get(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|e| e.matches_value(get(&e.key)))
    }
}

impl LabelSelectorRequirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_value(labels.get(&self.key).map(String::as_str))
    }

    /// Whether a label value (`None`: the label is absent) satisfies this requirement.
    pub fn matches_value(&self, v: Option<&str>) -> bool {
        match self.operator {
            SelectorOperator::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            SelectorOperator::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            SelectorOperator::Exists => v.is_some(),
            SelectorOperator::DoesNotExist => v.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement { key: key.into(), operator, values: values.iter().map(|v| v.to_string()).collect() }
    }

    #[test]
    fn kubernetes_semantics() {
        use SelectorOperator::*;
        let l = labels(&[("color", "blue"), ("tier", "web")]);
        assert!(LabelSelector::default().matches(&l));
        let mut s = LabelSelector::with_labels([("color", "blue")]);
        assert!(s.matches(&l));
        s.match_expressions.push(req("tier", NotIn, &["db"]));
        assert!(s.matches(&l));
        s.match_expressions.push(req("tier", In, &["db"]));
        assert!(!s.matches(&l));
        let s = LabelSelector {
            match_expressions: vec![req("x", DoesNotExist, &[]), req("tier", Exists, &[])],
            ..Default::default()
        };
        assert!(s.matches(&l));
        // NotIn matches when the key is absent (Kubernetes semantics).
        let s = LabelSelector { match_expressions: vec![req("absent", NotIn, &["a"])], ..Default::default() };
        assert!(s.matches(&l));
    }
}
