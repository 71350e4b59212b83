//! Classifying one subject of a merge from its three versions — the base, the
//! parent's current one (*ours*) and the child's (*theirs*) — before any LLM is asked:
//! unchanged, trivial (merged here), critical (for a human) or an overlapping conflict.

use super::MergeConfig;
use crate::checks::glob;

/// What the three versions of a subject call for, before any LLM is asked.
#[derive(Clone, Debug, PartialEq)]
pub enum Classified {
    /// The child changed nothing.
    Unchanged,
    /// Merged without judgement.
    Trivial { result: String, why: String },
    /// A human must decide.
    Critical { why: String },
    /// Overlapping edits: `diffy`'s output with conflict markers.
    Conflict { marked: String },
}

/// The lines a change adds or removes, as text.
fn changed_lines(from: &str, to: &str) -> String {
    diffy::create_patch(from, to)
        .to_string()
        .lines()
        .filter(|l| {
            (l.starts_with('+') && !l.starts_with("+++"))
                || (l.starts_with('-') && !l.starts_with("---"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn squash_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Classify one subject. `path` is the workspace path (`None` for text proposals).
pub fn classify(
    config: &MergeConfig,
    path: Option<&str>,
    base: Option<&str>,
    ours: Option<&str>,
    theirs: &str,
) -> Classified {
    if base == Some(theirs) {
        return Classified::Unchanged;
    }
    if let Some(p) = path.and_then(|p| config.critical_paths.iter().find(|g| glob(g, p))) {
        return Classified::Critical {
            why: format!("path matches critical `{p}`"),
        };
    }
    let base_text = base.unwrap_or_default();
    if !config.critical_patterns.is_empty() {
        let theirs_change = changed_lines(base_text, theirs);
        let ours_change = ours
            .map(|o| changed_lines(base_text, o))
            .unwrap_or_default();
        for change in [&theirs_change, &ours_change] {
            if let Some(p) = config
                .critical_patterns
                .iter()
                .find(|g| change.lines().any(|l| glob(g, l)))
            {
                return Classified::Critical {
                    why: format!("a change matches critical pattern `{p}`"),
                };
            }
        }
    }
    if ours == base {
        return Classified::Trivial {
            result: theirs.to_string(),
            why: "only this task changed it".into(),
        };
    }
    let ours_text = ours.unwrap_or_default();
    if ours_text == theirs {
        return Classified::Trivial {
            result: theirs.to_string(),
            why: "both made the same change".into(),
        };
    }
    if squash_whitespace(ours_text) == squash_whitespace(theirs) {
        return Classified::Trivial {
            result: ours_text.to_string(),
            why: "the versions differ only in whitespace".into(),
        };
    }
    match diffy::merge(base_text, ours_text, theirs) {
        Ok(result) => Classified::Trivial {
            result,
            why: "the changes touch different lines".into(),
        },
        Err(marked) => Classified::Conflict { marked },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "fn a() {\n    1\n}\n\nfn b() {\n    2\n}\n";

    #[test]
    fn categories() {
        let c = MergeConfig {
            critical_paths: vec!["migrations/*".into()],
            critical_patterns: vec!["*drop table*".into()],
            ..Default::default()
        };
        let ours = BASE.replace("    1", "    10");
        let theirs_far = BASE.replace("    2", "    20");
        let theirs_same_line = BASE.replace("    1", "    11");
        assert_eq!(
            classify(&c, Some("x.rs"), Some(BASE), Some(BASE), BASE),
            Classified::Unchanged
        );
        assert!(matches!(
            classify(&c, Some("x.rs"), Some(BASE), Some(BASE), &ours),
            Classified::Trivial { .. }
        ));
        match classify(&c, Some("x.rs"), Some(BASE), Some(&ours), &theirs_far) {
            Classified::Trivial { result, .. } => {
                assert!(result.contains("    10") && result.contains("    20"))
            }
            other => panic!("{other:?}"),
        }
        let spaced = ours.replace("fn a() {", "fn a()  {");
        assert!(matches!(
            classify(&c, Some("x.rs"), Some(BASE), Some(&ours), &spaced),
            Classified::Trivial { .. }
        ));
        assert!(matches!(
            classify(&c, Some("x.rs"), Some(BASE), Some(&ours), &theirs_same_line),
            Classified::Conflict { .. }
        ));
        assert!(matches!(
            classify(&c, Some("migrations/1.sql"), Some(BASE), Some(BASE), &ours),
            Classified::Critical { .. }
        ));
        assert!(matches!(
            classify(&c, Some("x.sql"), Some(""), Some(""), "DROP TABLE users;\n"),
            Classified::Critical { .. }
        ));
    }
}
