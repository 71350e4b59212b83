//! `assert-check`: a validator component (world `agentflow:agent/validator`) for
//! generated Rust unit tests. The output must contain at least one `#[test]` function
//! (else it fails, syntactic), and every `#[test]` function's body must assert
//! something — `assert!`, `assert_eq!`, `assert_ne!`, `debug_assert*!`, `panic!`, or a
//! `#[should_panic]` attribute — else it fails (semantic): a test that asserts nothing
//! always passes and proves nothing. Commented-out assertions do not count.

use agentflow_sdk::trace;
use agentflow_sdk::validator::{Category, Report};

/// A `#[test]` function: its name, whether it may panic by design, and its body.
struct TestFn<'a> {
    name: &'a str,
    should_panic: bool,
    body: &'a str,
}

/// The `#[test]` functions of `src` (a best-effort scan: attributes, `fn NAME`, and
/// the body up to its matching brace, see [`body_len`]).
fn tests(src: &str) -> Vec<TestFn<'_>> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("#[test]") {
        let after = &rest[at + "#[test]".len()..];
        let Some(fn_at) = after.find("fn ") else {
            break;
        };
        let attrs = &after[..fn_at];
        let sig = &after[fn_at + 3..];
        let name = sig
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        let Some(open) = sig.find('{') else {
            break;
        };
        let end = open + body_len(&sig[open..]);
        out.push(TestFn {
            name,
            should_panic: attrs.contains("should_panic"),
            body: &sig[open..end],
        });
        rest = &sig[end.min(sig.len())..];
    }
    out
}

/// Length of the block at the start of `src` (which starts with `{`), up to and
/// including its matching `}`; braces in string and char literals and in comments do
/// not count. The whole of `src` when unbalanced.
fn body_len(src: &str) -> usize {
    let bytes = src.as_bytes();
    let (mut i, mut depth) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') => i += 2,
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    src.len()
}

/// `body` without its line comments (a commented-out assertion asserts nothing).
fn code_only(body: &str) -> String {
    body.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn asserts(body: &str) -> bool {
    let body = code_only(body);
    [
        "assert!",
        "assert_eq!",
        "assert_ne!",
        "debug_assert",
        "panic!",
        "assert_matches!",
    ]
    .iter()
    .any(|m| body.contains(m))
}

fn validate(_task: String, output: String) -> Report {
    let found = tests(&output);
    let empty: Vec<&str> = found
        .iter()
        .filter(|t| !t.should_panic && !asserts(t.body))
        .map(|t| t.name)
        .collect();
    trace::step(
        "every #[test] must assert something",
        "scan the Rust source",
        format!(
            "{} test(s), {} without an assertion",
            found.len(),
            empty.len()
        ),
        1.0,
    );
    if found.is_empty() {
        Report::fail(Category::Syntactic, "no #[test] function in the output")
    } else if !empty.is_empty() {
        Report::fail(
            Category::Semantic,
            format!(
                "test(s) {} assert nothing: they pass whatever the code does; \
                 add assert!/assert_eq! on the result",
                empty.join(", ")
            ),
        )
    } else {
        Report::pass()
    }
}

agentflow_sdk::export_validator!(validate);
