//! The binary's terminal manners: what it prints on stdout goes through [`write`], so a
//! reader that has gone (`agentflow runs | head`) ends the output quietly instead of
//! a panic; and [`colour`] says whether a stream may be coloured (a terminal, and no
//! `NO_COLOR`).
//!
//! Why not restore `SIGPIPE`'s default action instead: the host also writes to
//! sockets (LLM providers, `http_fetch`), and a peer closing one must be an error of
//! that call, not the death of the process in the middle of a run.

use std::io::{ErrorKind, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout's reader has gone: nothing more is written.
static GONE: AtomicBool = AtomicBool::new(false);

/// Write `args` to stdout. A closed pipe is not an error: the rest of the output is
/// dropped and the command finishes (its exit status unchanged). Any other failure
/// (a full disk) is.
pub fn write(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    if GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {
            GONE.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// `print!` through [`write`]: evaluates to `std::io::Result<()>`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*))
    };
}

/// `println!` through [`write`]: evaluates to `std::io::Result<()>`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Whether output to a stream that is a terminal (`is_terminal`) may be coloured:
/// only on a terminal, and never when `NO_COLOR` is set to anything but "" (no-color.org).
pub fn colour(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether the host's logs on stderr may be coloured.
pub fn colour_stderr() -> bool {
    colour(std::io::stderr().is_terminal())
}
