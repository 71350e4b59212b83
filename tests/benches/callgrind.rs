//! Instruction counts (callgrind) for the tree of section 3 and the replay of section 5,
//! so that a change can be compared on a noisy machine, where wall times move by tens
//! of percent (issue 18); likewise one trivial `Host::run` (section 1, part `start`) and
//! a run of [`CALLS`] `trace.log` or `llm.complete` calls (section 2, parts `log` and
//! `llm`), whose difference over [`CALLS`] is the instructions of one call.
//!
//! When `valgrind` is on `PATH`, the bench runs itself again under
//! `valgrind --tool=callgrind` with `AGENTFLOW_BENCH_CALLGRIND=tree` (or `replay`) and
//! `AGENTFLOW_BENCH_ONLY` set to that section. The child does the section's setup as
//! usual (host, ledger, component load; for the replay, the live run it resumes), then
//! exactly one measured part — one tree, one resume — inside [`bench_measured_tree`] or
//! [`bench_measured_replay`], and exits as soon as it returns. Without valgrind the
//! line says so and the section's other figures are unchanged.
//!
//! What is counted, and why with dumps rather than `--toggle-collect`: the child runs
//! with `--dump-before=*bench_measured_tree --dump-after=*bench_measured_tree` (say).
//! Callgrind writes the counters to a file and zeroes them on entering the function and
//! again on leaving it, for **all threads**; the second file (its `desc: Trigger:` line
//! says `--dump-after`) is the measured part on every thread: the caller, the tokio
//! workers that run the guests, the ledger's writer thread that commits, the epoch
//! ticker. `--toggle-collect` is no good here: the collection state it toggles is per
//! thread, so it counts only the thread that entered the function (on a two-thread test
//! program it counted 7 M of the 77 M instructions done while inside); `--zero-before`
//! likewise zeroes only the calling thread; `--collect-atstart=yes` minus a setup-only
//! run would subtract two large noisy totals. The wrappers are plain functions (not
//! `async`, which callgrind would see entered on every poll), `#[inline(never)]` and not
//! generic, so the symbol is entered exactly once and matches `*bench_measured_tree`
//! (a trailing `*` in a pattern given to both options loses the dump-after on
//! valgrind 3.19).
//!
//! Valgrind must be able to run the host: it gives a program about 128 GiB of address
//! space (valgrind 3.19 on amd64), and the runtime's pooling allocator reserves 8 GiB
//! for each of 2,000 memories, so `Host::new` fails under valgrind ("failed to create
//! memory pool mapping") and the line reports that. The child sets
//! `AGENTFLOW_INSTANCE_ALLOCATOR=on-demand` ([`ALLOCATOR_ENV`]), on which the bench's
//! hosts take `[runtime] allocator = "on-demand"`: instances allocated on demand with
//! small memory reservations. The counts are then those of that allocator: guest
//! memory is bounds-checked rather than guarded, and instantiation differs a little.
//!
//! The figure is the dump's `summary:` (else `totals:`) of event `Ir`: user-space
//! instructions, the guests' compiled code included; not the kernel's work (syscalls,
//! `fsync`), not waiting. It repeats closely, not exactly: thread interleaving still
//! decides, for example, how many appends a group commit takes at once (two runs each
//! on the 2-core machine: one tree 861.2 M and 866.3 M Ir, one resume 295.52 M and
//! 295.36 M Ir). Each child took 1.5–3.5 minutes there, with other builds running;
//! most of it is setup (the component compiled, and for the replay the live run) under
//! valgrind.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child: which measured part it is there for.
const CHILD_ENV: &str = "AGENTFLOW_BENCH_CALLGRIND";

/// Set in the child: asks the runtime for an allocator whose reservations fit in
/// valgrind's address space (see the module doc).
pub const ALLOCATOR_ENV: (&str, &str) = ("AGENTFLOW_INSTANCE_ALLOCATOR", "on-demand");

/// Whether this process's hosts must allocate on demand (a callgrind child).
pub fn wants_on_demand() -> bool {
    std::env::var(ALLOCATOR_ENV.0).is_ok_and(|v| v == ALLOCATOR_ENV.1)
}

/// A child that takes longer than this is stopped (its figure reported as failed).
const CHILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Recorded calls of the task resumed under valgrind. The live run that records them
/// is the child's setup: with 1,000 it took 3.1 G instructions and the resume 0.3 G
/// (about 2.5 minutes in all), so 10,000 would take far over the 3 minutes allowed.
pub const REPLAY_CALLS: usize = 1_000;

/// How section 5 names its instruction count.
pub const REPLAY_LABEL: &str = "one resume (a task of 1,000 calls)";

/// Whether this process is a callgrind child.
fn child() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// How many calls section 5's task makes: `normal`, or [`REPLAY_CALLS`] in the child.
pub fn replay_calls(normal: usize) -> usize {
    if child().is_some() {
        REPLAY_CALLS
    } else {
        normal
    }
}

/// Section 3's measured run: awaited as is, or — in the `tree` child — run inside
/// [`bench_measured_tree`], after which the child exits.
pub async fn tree<T>(run: impl Future<Output = T>) -> T {
    measured("tree", run, bench_measured_tree).await
}

/// Section 5's measured resume, as [`tree`] for the `replay` child.
pub async fn replay<T>(resume: impl Future<Output = T>) -> T {
    measured("replay", resume, bench_measured_replay).await
}

/// Section 1's measured run of the trivial agent, as [`tree`] for the `start` child.
pub async fn start<T>(run: impl Future<Output = T>) -> T {
    measured("start", run, bench_measured_start).await
}

/// Section 2's measured run of [`CALLS`] host calls, as [`tree`] for the child named
/// `part` (`log` or `llm`); any other part is awaited as is.
pub async fn calls<T>(part: &str, run: impl Future<Output = T>) -> T {
    match part {
        "log" => measured("log", run, bench_measured_log).await,
        "llm" => measured("llm", run, bench_measured_llm).await,
        _ => run.await,
    }
}

/// Host calls in the run a `log` or `llm` child measures: the per-call figure is that
/// run's count less the trivial run's (the `start` child's), over this.
pub const CALLS: usize = 1_000;

/// The part this process measures, if it is a callgrind child.
pub fn child_part() -> Option<String> {
    child()
}

async fn measured<T>(
    part: &str,
    fut: impl Future<Output = T>,
    wrapper: fn(Pin<&mut dyn Future<Output = ()>>),
) -> T {
    if child().as_deref() != Some(part) {
        return fut.await;
    }
    let mut out = None;
    {
        let unit = std::pin::pin!(async { out = Some(fut.await) });
        tokio::task::block_in_place(|| wrapper(unit));
    }
    drop(out); // the measured part's result, dropped outside it
    // Everything after the measured part is of no interest to the child: leave now
    // (the parent removes the scratch directories left behind).
    std::process::exit(0);
}

/// The measured part of the `tree` child: callgrind dumps on entry and on exit.
#[inline(never)]
pub fn bench_measured_tree(fut: Pin<&mut dyn Future<Output = ()>>) {
    tokio::runtime::Handle::current().block_on(fut);
}

/// The measured part of the `replay` child: callgrind dumps on entry and on exit.
#[inline(never)]
pub fn bench_measured_replay(fut: Pin<&mut dyn Future<Output = ()>>) {
    tokio::runtime::Handle::current().block_on(fut);
}

/// The measured part of the `start` child.
#[inline(never)]
pub fn bench_measured_start(fut: Pin<&mut dyn Future<Output = ()>>) {
    tokio::runtime::Handle::current().block_on(fut);
}

/// The measured part of the `log` child.
#[inline(never)]
pub fn bench_measured_log(fut: Pin<&mut dyn Future<Output = ()>>) {
    tokio::runtime::Handle::current().block_on(fut);
}

/// The measured part of the `llm` child.
#[inline(never)]
pub fn bench_measured_llm(fut: Pin<&mut dyn Future<Output = ()>>) {
    tokio::runtime::Handle::current().block_on(fut);
}

/// Section 2's instructions per host call, for each of `trace.log` and `llm.complete`:
/// `(run of [`CALLS`] calls − trivial run) / CALLS`, from three children.
pub fn report_calls() {
    if child().is_some() {
        return;
    }
    if on_path("valgrind").is_none() {
        println!("   instructions: valgrind not installed");
        return;
    }
    let started = Instant::now();
    let base = count("1", "start");
    for (part, label) in [("log", "trace.log"), ("llm", "llm.complete")] {
        let head = format!("   instructions (callgrind), one {label}");
        match (&base, &count("2", part)) {
            (Ok(base), Ok(ir)) => println!(
                "{head:<48}{:>14} Ir  (run of {CALLS} calls {} Ir − trivial run {} Ir, / {CALLS})",
                thousands(ir.saturating_sub(*base) / CALLS as u64),
                thousands(*ir),
                thousands(*base),
            ),
            (Err(e), _) | (_, Err(e)) => println!("{head}: failed: {e}"),
        }
    }
    println!(
        "   (three callgrind children: {:.0} s)",
        started.elapsed().as_secs_f64()
    );
}

/// The count of `part` of `section`, each child run once per process.
fn count(section: &str, part: &str) -> Result<u64, String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static COUNTS: Mutex<Option<HashMap<String, Result<u64, String>>>> = Mutex::new(None);
    if let Some(known) = COUNTS.lock().unwrap().get_or_insert_default().get(part) {
        return known.clone();
    }
    let valgrind = on_path("valgrind").ok_or("valgrind not installed")?;
    let ir = instructions(&valgrind, section, part);
    COUNTS
        .lock()
        .unwrap()
        .get_or_insert_default()
        .insert(part.to_string(), ir.clone());
    ir
}

/// Print section `section`'s instruction count for `part` (`tree` or `replay`):
/// `   instructions (callgrind), <label>   1,234,567 Ir`, or why there is none.
pub fn report(section: &str, part: &str, label: &str) {
    if child().is_some() {
        return;
    }
    let head = format!("   instructions (callgrind), {label}");
    if on_path("valgrind").is_none() {
        println!("   instructions: valgrind not installed");
        return;
    }
    let started = Instant::now();
    match count(section, part) {
        Ok(ir) => println!(
            "{head:<48}{:>14} Ir  (callgrind child: {:.0} s)",
            thousands(ir),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => println!("{head}: failed: {e}"),
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Run this bench under callgrind for `part` of `section`; the `Ir` of the measured part.
fn instructions(valgrind: &Path, section: &str, part: &str) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out_dir = tempfile::Builder::new()
        .prefix("callgrind-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let out = out_dir.path().join("cg.out");
    let wrapper = format!("*bench_measured_{part}");
    let scratch_root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let scratch_before = bench_dirs(scratch_root);
    let mut child = Command::new(valgrind)
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(format!("--dump-before={wrapper}"))
        .arg(format!("--dump-after={wrapper}"))
        .arg(&exe)
        .env(CHILD_ENV, part)
        .env("RUST_BACKTRACE", "0")
        .env(ALLOCATOR_ENV.0, ALLOCATOR_ENV.1)
        .env("AGENTFLOW_BENCH_ONLY", section)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start valgrind: {e}"))?;
    // Drain stderr on the side so a chatty child never blocks on a full pipe.
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break Ok(status),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("stopped after {} s", CHILD_TIMEOUT.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let log = reader.join().unwrap_or_default();
    for dir in bench_dirs(scratch_root).difference(&scratch_before) {
        let _ = std::fs::remove_dir_all(scratch_root.join(dir));
    }
    let status = status?;
    if !status.success() {
        // The panic's message (the line after `panicked at`), else the last lines.
        let lines: Vec<&str> = log.lines().filter(|l| !l.starts_with("==")).collect();
        let why = match lines.iter().position(|l| l.contains("panicked at")) {
            Some(at) => lines[at + 1..]
                .iter()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("note: "))
                .copied()
                .collect::<Vec<_>>(),
            None => lines[lines.len().saturating_sub(3)..].to_vec(),
        };
        return Err(format!("child {status}: {}", why.join(" | ")));
    }
    measured_part(out_dir.path(), &wrapper)
}

/// The entries named `bench-*` in the scratch root.
fn bench_dirs(root: &Path) -> std::collections::BTreeSet<std::ffi::OsString> {
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().starts_with("bench-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The `Ir` of the dump written on leaving the wrapper.
fn measured_part(dir: &Path, wrapper: &str) -> Result<u64, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    for entry in entries.filter_map(Result::ok) {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if !text
            .lines()
            .any(|l| l.starts_with("desc: Trigger: --dump-after="))
        {
            continue;
        }
        let total = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        return total("summary:")
            .or_else(|| total("totals:"))
            .ok_or_else(|| format!("no summary in {}", entry.path().display()));
    }
    Err(format!(
        "callgrind wrote no dump on leaving `{wrapper}` (symbol not matched?)"
    ))
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
