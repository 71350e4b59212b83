//! The code under test in the testwriter example's workspace: its command validator
//! compiles this file with the test the agent wrote and runs it.

/// The port number in `s`: digits only, 0 to 65535.
pub fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
