//! `merge::classify` on arbitrary base/ours/theirs triples and critical globs: never
//! panics, and trivial merges keep both sides' changes where that is cheap to check —
//! "only this task changed it" and "both made the same change" yield `theirs`, and a
//! clean line merge contains every line either side added (a line absent from base).
#![no_main]

use agentflow::merge::{Classified, MergeConfig, classify};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

/// The fuzz input split into the merge's parts: a flags byte (bit 0: base exists,
/// bit 1: ours exists, bit 2: a workspace path is given), then UTF-8 text whose
/// NUL-separated fields are base, ours, theirs, path, critical path globs and critical
/// line globs (the globs newline-separated).
struct Input<'a> {
    path: Option<&'a str>,
    base: Option<&'a str>,
    ours: Option<&'a str>,
    theirs: &'a str,
    critical_paths: Vec<String>,
    critical_patterns: Vec<String>,
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        let (&flags, rest) = data.split_first()?;
        let text = std::str::from_utf8(rest).ok()?;
        let mut fields = text.split('\0');
        let mut next = || fields.next().unwrap_or_default();
        let (base, ours, theirs, path) = (next(), next(), next(), next());
        let globs = |s: &str| s.lines().take(4).map(String::from).collect();
        Some(Input {
            base: (flags & 1 != 0).then_some(base),
            ours: (flags & 2 != 0).then_some(ours),
            theirs,
            path: (flags & 4 != 0).then_some(path),
            critical_paths: globs(next()),
            critical_patterns: globs(next()),
        })
    }
}

fn added_lines<'a>(base: &str, side: &'a str) -> Vec<&'a str> {
    let base: HashSet<&str> = base.lines().collect();
    side.lines().filter(|l| !base.contains(l)).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let config = MergeConfig {
        critical_paths: input.critical_paths,
        critical_patterns: input.critical_patterns,
        ..MergeConfig::default()
    };
    let (base, ours, theirs) = (input.base, input.ours, input.theirs);
    let classified = classify(&config, input.path, base, ours, theirs);
    match &classified {
        Classified::Unchanged => assert_eq!(base, Some(theirs), "unchanged but theirs differs"),
        Classified::Trivial { result, why } => {
            let base_text = base.unwrap_or_default();
            let ours_text = ours.unwrap_or_default();
            match why.as_str() {
                "only this task changed it" => {
                    assert_eq!(ours, base);
                    assert_eq!(result, theirs);
                }
                "both made the same change" => {
                    assert_eq!(ours_text, theirs);
                    assert_eq!(result, theirs);
                }
                "the versions differ only in whitespace" => assert_eq!(result, ours_text),
                "the changes touch different lines" => {
                    let merged: HashSet<&str> = result.lines().collect();
                    for (side, text) in [("ours", ours_text), ("theirs", theirs)] {
                        for line in added_lines(base_text, text) {
                            assert!(
                                merged.contains(line),
                                "{side}'s added line {line:?} missing from the merge {result:?}"
                            );
                        }
                    }
                }
                other => panic!("unexpected trivial reason {other:?}"),
            }
        }
        Classified::Critical { why } => assert!(!why.is_empty()),
        Classified::Conflict { marked } => assert!(marked.contains("<<<<<<<"), "{marked:?}"),
    }
});
