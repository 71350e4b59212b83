//! An in-process memory guard for tests that make the host hold many agents at once:
//! a thread samples this process's resident set every 20 ms and aborts the test binary
//! when it passes the bound, so a regression cannot eat the machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// This process's resident set in bytes (`VmRSS` of `/proc/self/status`; 0 where
/// there is no procfs).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Aborts the process past `max_bytes` resident while alive; stops when dropped.
pub struct RssGuard(Arc<AtomicBool>);

impl RssGuard {
    pub fn new(label: &'static str, max_bytes: u64) -> RssGuard {
        let stop = Arc::new(AtomicBool::new(false));
        let watching = stop.clone();
        std::thread::spawn(move || {
            while !watching.load(Ordering::SeqCst) {
                let rss = rss_bytes();
                if rss > max_bytes {
                    eprintln!(
                        "guard: {label} took the test process to {} MiB (bound {} MiB); aborting",
                        rss >> 20,
                        max_bytes >> 20
                    );
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssGuard(stop)
    }
}

impl Drop for RssGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
