//! Diagnostics: errors and warnings about manifest files, with file, document, line and field.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding about a manifest file.
///
/// `document` is **1-based**, as printed ("document 2" is the second YAML document of the
/// file); `0` means the finding is about the file as a whole (unreadable file, object defined
/// in another file, …). `line` and `column` are 1-based, from serde_yaml, and present for
/// syntax and type errors; semantic checks give the `field` path only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub document: usize,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Field path inside the document, e.g. `spec.blocks[0].cidr`.
    pub field: Option<String>,
    /// The object the document defines, e.g. `Service default/web`, when known.
    pub object: Option<String>,
    pub message: String,
    pub severity: Severity,
}

impl Diagnostic {
    /// A file-level diagnostic (no document, line or field).
    pub fn file_level(file: impl Into<PathBuf>, severity: Severity, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            document: 0,
            line: None,
            column: None,
            field: None,
            object: None,
            message: message.into(),
            severity,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `examples/pools.yaml: document 2 (CiliumLoadBalancerIPPool blue): spec.blocks[0].cidr:
    /// invalid CIDR "10.0.0.300/24" (line 9, column 13)`; warnings start with `warning: `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        write!(f, "{}", self.file.display())?;
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
        }
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)?;
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
            (Some(l), None) => write!(f, " (line {l})"),
            _ => Ok(()),
        }
    }
}

/// A rejected file: every diagnostic found in it, warnings included, in document order; at
/// least one is an error. Nothing from a rejected file is applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct FileError {
    pub diagnostics: Vec<Diagnostic>,
}

impl FileError {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }
}

fn render(diags: &[Diagnostic]) -> String {
    let n = diags.iter().filter(|d| d.is_error()).count();
    let mut s = format!("{n} error{} in manifest file", if n == 1 { "" } else { "s" });
    for d in diags {
        s.push_str("\n  ");
        s.push_str(&d.to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_the_documented_shape() {
        let d = Diagnostic {
            file: "examples/pools.yaml".into(),
            document: 2,
            line: Some(9),
            column: Some(13),
            field: Some("spec.blocks[0].cidr".into()),
            object: Some("CiliumLoadBalancerIPPool blue".into()),
            message: "invalid CIDR \"10.0.0.300/24\"".into(),
            severity: Severity::Error,
        };
        assert_eq!(
            d.to_string(),
            "examples/pools.yaml: document 2 (CiliumLoadBalancerIPPool blue): spec.blocks[0].cidr: \
             invalid CIDR \"10.0.0.300/24\" (line 9, column 13)"
        );
        let w = Diagnostic::file_level("a.yaml", Severity::Warning, "hello");
        assert_eq!(w.to_string(), "warning: a.yaml: hello");
    }
}
