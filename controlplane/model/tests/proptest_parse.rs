//! `parse_manifest` never panics (nor hits its internal-error fallback) on arbitrary input or on
//! arbitrary mutations of the documentation fixtures, and its result is self-consistent.

use std::path::{Path, PathBuf};

use halyard_model::*;
use proptest::prelude::*;

fn fixtures() -> &'static [(PathBuf, String)] {
    static FIXTURES: std::sync::OnceLock<Vec<(PathBuf, String)>> = std::sync::OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let t = std::fs::read_to_string(&p).unwrap();
                (p, t)
            })
            .collect();
        v.sort();
        v
    })
}

/// Checks the invariants of a parse result.
fn check(text: &str) {
    let file = Path::new("fuzz.yaml");
    let r = parse_manifest(file, text);
    match &r {
        Ok(f) => {
            assert_eq!(f.objects.len(), f.documents.len());
            assert!(f.warnings.iter().all(|d| d.severity == Severity::Warning));
            for o in &f.objects {
                assert!(!o.metadata().name.is_empty());
                assert_eq!(o.key().namespace.is_some(), o.kind().is_namespaced());
            }
        }
        Err(e) => {
            assert!(e.errors().count() > 0);
            for d in &e.diagnostics {
                assert!(!d.message.contains("internal error"), "parser fallback hit for {text:?}: {d}");
                // Display must not panic either.
                let _ = d.to_string();
            }
        }
    }
    // Deterministic.
    assert_eq!(r, parse_manifest(file, text));
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Indent { line: usize, spaces: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), "[-:\\[\\]{}#&*!|>'\"%@ \n\ta-z0-9./]{1,8}")
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        (any::<usize>(), 0usize..6).prop_map(|(line, spaces)| Mutation::Indent { line, spaces }),
    ]
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    match m {
        Mutation::Delete { at, len } => {
            let a = floor_char_boundary(text, at % (text.len() + 1));
            let b = floor_char_boundary(text, a + len);
            format!("{}{}", &text[..a], &text[b..])
        }
        Mutation::Insert { at, text: ins } => {
            let a = floor_char_boundary(text, at % (text.len() + 1));
            format!("{}{ins}{}", &text[..a], &text[a..])
        }
        Mutation::DuplicateLine { line } if !lines.is_empty() => {
            let i = line % lines.len();
            lines.insert(i, lines[i].clone());
            lines.join("\n")
        }
        Mutation::SwapLines { a, b } if !lines.is_empty() => {
            let n = lines.len();
            lines.swap(a % n, b % n);
            lines.join("\n")
        }
        Mutation::Indent { line, spaces } if !lines.is_empty() => {
            let n = lines.len();
            let l = &mut lines[line % n];
            *l = format!("{}{}", " ".repeat(*spaces), l.trim_start());
            lines.join("\n")
        }
        _ => text.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_strings(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn never_panics_on_yaml_like_noise(text in "([-:\\[\\]{}#&*!|>'\"%@ \n\t.,/a-z0-9]|---\n|apiVersion: |kind: |metadata:\n  name: ){0,60}") {
        check(&text);
    }

    #[test]
    fn never_panics_on_mutated_fixtures(idx in any::<usize>(), muts in proptest::collection::vec(mutation(), 1..5)) {
        let fx = fixtures();
        let (_, original) = &fx[idx % fx.len()];
        let mut text = original.clone();
        for m in &muts {
            text = apply(&text, m);
        }
        check(&text);
    }
}

#[test]
fn known_serde_yaml_panic_inputs_are_handled_without_the_fallback() {
    // serde_yaml 0.9 panics ("unexpected end of mapping") when iterating past an unknown alias.
    for text in [
        "a: &x 1\nb: *y\n---\nc: 1\n",
        "a: *y\n---\nb: 2\n---\nc: 3\n",
        "---\nkey: [unclosed\n---\napiVersion: v1\n",
        "? [a\n---\n",
    ] {
        check(text);
        assert!(parse_manifest(Path::new("x.yaml"), text).is_err());
    }
}

#[test]
fn every_fixture_survives_every_single_line_deletion() {
    for (path, text) in fixtures() {
        let text = text.as_str();
        let lines: Vec<&str> = text.lines().collect();
        for i in 0..lines.len() {
            let mut l = lines.clone();
            l.remove(i);
            let t = l.join("\n");
            let r = std::panic::catch_unwind(|| check(&t));
            assert!(r.is_ok(), "{}: deleting line {} broke the invariants", path.display(), i + 1);
        }
    }
}
