//! Kubernetes label selectors (`metav1.LabelSelector`), evaluated against a label map.
//!
//! Semantics follow the Kubernetes API conventions: `matchLabels` and every `matchExpressions`
//! requirement must all hold; an empty selector matches everything.

use std::collections::BTreeMap;

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| match r {
                Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            })
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn kubernetes_semantics() {
        let l = labels(&[("color", "blue"), ("tier", "web")]);
        assert!(LabelSelector::default().matches(&l));
        let mut s = LabelSelector::default();
        s.match_labels.insert("color".into(), "blue".into());
        assert!(s.matches(&l));
        s.match_expressions.push(Requirement::NotIn("tier".into(), vec!["db".into()]));
        assert!(s.matches(&l));
        s.match_expressions.push(Requirement::In("tier".into(), vec!["db".into()]));
        assert!(!s.matches(&l));
        let s = LabelSelector {
            match_expressions: vec![Requirement::DoesNotExist("x".into()), Requirement::Exists("tier".into())],
            ..Default::default()
        };
        assert!(s.matches(&l));
        // NotIn matches when the key is absent (Kubernetes semantics).
        let s = LabelSelector {
            match_expressions: vec![Requirement::NotIn("absent".into(), vec!["a".into()])],
            ..Default::default()
        };
        assert!(s.matches(&l));
    }
}
