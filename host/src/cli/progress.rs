//! `agentflow run`'s live progress on stderr, drawn from the ledger: a thread polls the
//! run's tasks on its own read connection every [`POLL`] and prints what
//! [`agentflow::observe::progress`] makes of them. On a terminal, the task tree with
//! each task's status, cost and tokens and the run's totals, redrawn in place
//! (indicatif); when stderr is not a terminal, one plain line per task start and end
//! (`task 3 completed: $0.0012, 412 tokens, 0.8s`); with `--quiet`, nothing. stdout
//! is never touched: it carries only the run's output (or `--json`).

use agentflow::ledger::{drift, now_ms, query};
use agentflow::observe::progress::{Tracker, tree};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the ledger is read.
const POLL: Duration = Duration::from_millis(200);

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The task tree, redrawn in place (stderr is a terminal).
    Tree,
    /// One line per task start and end (stderr is a pipe or a file).
    Lines,
    /// Nothing (`--quiet`).
    Off,
}

impl Mode {
    /// The mode for this process's stderr.
    pub fn for_stderr(quiet: bool) -> Mode {
        match (quiet, std::io::stderr().is_terminal()) {
            (true, _) => Mode::Off,
            (false, true) => Mode::Tree,
            (false, false) => Mode::Lines,
        }
    }
}

/// The progress of one run, shown until [`Live::stop`].
pub struct Live {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Live {
    /// Start showing run `run_id` of the ledger `db` (before the run is recorded is
    /// fine: nothing shows until it is).
    pub fn start(db: &Path, run_id: &str, mode: Mode) -> Live {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (mode != Mode::Off).then(|| {
            let (db, run_id, stop) = (db.to_path_buf(), run_id.to_string(), stop.clone());
            std::thread::spawn(move || show(db, run_id, mode, stop))
        });
        Live { stop, thread }
    }

    /// Draw the final state and stop.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The terminal's height in rows (24 when it does not say).
fn rows() -> usize {
    // SAFETY: TIOCGWINSZ fills the winsize it is given; stderr is open.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_row > 0 {
        ws.ws_row as usize
    } else {
        24
    }
}

fn show(db: PathBuf, run_id: String, mode: Mode, stop: Arc<AtomicBool>) {
    let mut reader = None;
    let mut tracker = Tracker::default();
    let bar = (mode == Mode::Tree).then(|| {
        let bar = indicatif::ProgressBar::with_draw_target(
            None,
            indicatif::ProgressDrawTarget::stderr_with_hz(5),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg}") {
            bar.set_style(style);
        }
        bar
    });
    loop {
        // Read once more after the stop: the final state.
        let last = stop.load(Ordering::Relaxed);
        if reader.is_none() {
            reader = query::open_reader(&db).ok();
        }
        let tasks = reader
            .as_ref()
            .and_then(|c| drift::progress(c, &run_id).ok())
            .unwrap_or_default();
        let now = now_ms();
        match &bar {
            Some(bar) if !tasks.is_empty() => {
                let lines = tree(&tasks, now, rows().saturating_sub(2).max(3));
                bar.set_message(lines.join("\n"));
            }
            Some(_) => {}
            None => {
                let mut err = std::io::stderr().lock();
                for line in tracker.lines(&tasks, now) {
                    let _ = writeln!(err, "agentflow: {line}");
                }
            }
        }
        if last {
            break;
        }
        std::thread::sleep(POLL);
    }
    if let Some(bar) = bar {
        bar.finish();
    }
}
