//! Text that came from a guest, made safe for the host's own output and bounded for
//! the ledger.
//!
//! A guest chooses every byte of its trace messages, step texts, errors, task
//! descriptions and checkpoint notes. Printed raw, a newline in such a text starts what
//! looks like a host log line, and an escape sequence rewrites the operator's
//! terminal. [`escape_guest_text`] is the one helper every place that prints guest
//! text to the host's stderr or stdout goes through; [`truncate_guest_text`] bounds
//! what is kept (`[limits] max_trace_bytes`).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a log line as it is: C0 and C1 controls
/// (newline, carriage return, tab, ESC, …), DEL, the Unicode line and paragraph
/// separators, and the bidirectional overrides that reorder what a reader sees.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every control character written out: `\n`, `\r`, `\t` by name, the
/// others as `\u{1b}`. Borrowed when there is nothing to escape. Backslashes are left
/// alone, so ordinary text (paths, regexes) reads as it was written.
pub fn escape_guest_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` cut to at most `max_bytes` bytes (on a character boundary) with a visible
/// marker appended, and the number of bytes dropped; unchanged (0 dropped) when it fits.
pub fn truncate_guest_text(text: &str, max_bytes: usize) -> (Cow<'_, str>, usize) {
    if text.len() <= max_bytes {
        return (Cow::Borrowed(text), 0);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = text.len() - end;
    let kept = format!(
        "{}… [truncated: {dropped} bytes dropped, [limits] max_trace_bytes = {max_bytes}]",
        &text[..end]
    );
    (Cow::Owned(kept), dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            escape_guest_text("hello, C:\\dir é"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn controls_are_written_out() {
        let forged = "ok\n2026-12-01T00:00:00Z INFO agentflow: run completed\r\x1b[2K\t\u{7f}\u{85}\u{2028}\u{202e}";
        let escaped = escape_guest_text(forged);
        assert_eq!(
            escaped,
            "ok\\n2026-12-01T00:00:00Z INFO agentflow: run completed\\r\\u{1b}[2K\\t\\u{7f}\\u{85}\\u{2028}\\u{202e}"
        );
        assert!(!escaped.chars().any(needs_escape));
    }

    #[test]
    fn truncation_keeps_a_prefix_and_counts_the_rest() {
        assert_eq!(
            truncate_guest_text("short", 10),
            (Cow::Borrowed("short"), 0)
        );
        let (kept, dropped) = truncate_guest_text("ééé", 3); // 6 bytes; 3 splits an é
        assert_eq!(dropped, 4);
        assert!(kept.starts_with("é… [truncated: 4 bytes dropped"), "{kept}");
        assert!(kept.contains("max_trace_bytes"));
    }
}
