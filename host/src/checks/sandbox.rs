//! Running an operator's command (a command validator, [`super::command`]) in a
//! subprocess with a timeout, a memory limit, no network and only the environment it
//! is given.
//!
//! Set up in the child between `fork` and `exec` (`pre_exec`):
//! - its own process group, so that the timeout — and the end of the command — kills
//!   every process it started (a leader that exited is reaped only after its group is
//!   killed, so the group's id cannot have been reused);
//! - `RLIMIT_AS` (address space) for the memory limit, no core dumps, and `SIGKILL` if
//!   the host dies first;
//! - a network namespace of its own (`unshare(CLONE_NEWNET)`), which has only a loopback
//!   interface that is down: no connection leaves it, to the host's own ports neither.
//!   That needs `CAP_SYS_ADMIN` (root, as in CI) or unprivileged user namespaces
//!   (`CLONE_NEWUSER | CLONE_NEWNET`, the user mapped to itself). [`net_isolation`]
//!   finds out once per host which works; if neither does, the command is not run
//!   ([`SandboxError::NoNetworkIsolation`]) rather than run with network.
//!
//! Its stdout and stderr are read into one bounded tail, in the order they arrive.
//! The file system is not isolated: the command runs in a scratch copy of the task's
//! workspace view, as the host's user.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One command to run.
pub struct Sandboxed<'a> {
    /// Program and arguments.
    pub argv: &'a [String],
    /// Working directory.
    pub dir: &'a Path,
    /// The complete environment (nothing else of the host's is passed).
    pub env: &'a [(String, String)],
    /// A file to read stdin from (else `/dev/null`).
    pub stdin: Option<&'a Path>,
    pub timeout: Duration,
    pub memory_bytes: u64,
    /// How many bytes of the end of stdout+stderr to keep.
    pub tail_bytes: usize,
}

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Killed (with its process group) at the timeout.
    TimedOut,
}

/// A command that ran.
#[derive(Clone, Debug)]
pub struct Finished {
    pub exit: Exit,
    /// The end of its output (stdout and stderr interleaved), lossily UTF-8.
    pub tail: String,
    /// Bytes of output before the tail that were dropped.
    pub dropped_bytes: u64,
    pub elapsed: Duration,
}

/// Why a command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "refusing to run a command validator with network access: this host can create no network namespace ({0}); run the host as root or enable unprivileged user namespaces"
    )]
    NoNetworkIsolation(String),
    #[error("cannot start `{program}`: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("waiting for the command failed: {0}")]
    Wait(std::io::Error),
}

/// How this host cuts a command off the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetIsolation {
    /// `unshare(CLONE_NEWNET)` (privileged).
    NetNamespace,
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNET)`, the user mapped to itself.
    UserAndNetNamespace,
}

/// How this host can cut a command off the network (probed once, in a forked child),
/// or why it cannot.
pub fn net_isolation() -> Result<NetIsolation, String> {
    static MODE: OnceLock<Result<NetIsolation, String>> = OnceLock::new();
    MODE.get_or_init(probe).clone()
}

fn probe() -> Result<NetIsolation, String> {
    // SAFETY: the child calls only unshare(2) and _exit(2), both async-signal-safe, so
    // forking a multi-threaded process is sound; the parent reaps it.
    let status = unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let code = if libc::unshare(libc::CLONE_NEWNET) == 0 {
                0
            } else if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) == 0 {
                1
            } else {
                100 + (*libc::__errno_location()).clamp(0, 150)
            };
            libc::_exit(code);
        }
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        let mut status = 0;
        if libc::waitpid(pid, &mut status, 0) != pid {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        status
    };
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(NetIsolation::NetNamespace),
        Some(1) => Ok(NetIsolation::UserAndNetNamespace),
        Some(code) if code >= 100 => Err(format!(
            "unshare: {}",
            std::io::Error::from_raw_os_error(code - 100)
        )),
        _ => Err(format!("the probe ended with status {status}")),
    }
}

/// The end of a stream of bytes, at most `max` kept.
struct Tail {
    bytes: Vec<u8>,
    max: usize,
    dropped: u64,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > self.max.saturating_mul(2).max(8192) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.bytes.len() > self.max {
            let cut = self.bytes.len() - self.max;
            self.dropped += cut as u64;
            self.bytes.drain(..cut);
        }
    }
}

/// Write `text` to the file `path` in a forked child (no allocation).
///
/// SAFETY: call only with valid NUL-terminated strings; uses only open/write/close.
unsafe fn write_proc_file(path: &CString, text: &CString) -> std::io::Result<()> {
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let len = text.as_bytes().len();
        let written = libc::write(fd, text.as_ptr().cast(), len);
        libc::close(fd);
        if written != len as isize {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Run the command (blocking) to its end or its timeout.
pub fn run(spec: &Sandboxed) -> Result<Finished, SandboxError> {
    let net = net_isolation().map_err(SandboxError::NoNetworkIsolation)?;
    run_isolated(spec, net)
}

fn run_isolated(spec: &Sandboxed, net: NetIsolation) -> Result<Finished, SandboxError> {
    let program = spec.argv[0].clone();
    let mut cmd = Command::new(&program);
    cmd.args(&spec.argv[1..])
        .current_dir(spec.dir)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match spec.stdin {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|error| SandboxError::Spawn {
                program: program.clone(),
                error,
            })?;
            cmd.stdin(file);
        }
        None => {
            cmd.stdin(Stdio::null());
        }
    }
    // Formatted before the fork: the child must not allocate.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let cstr = |s: String| CString::new(s).expect("no NUL");
    let maps = [
        (cstr("/proc/self/setgroups".into()), cstr("deny".into())),
        (
            cstr("/proc/self/uid_map".into()),
            cstr(format!("{uid} {uid} 1")),
        ),
        (
            cstr("/proc/self/gid_map".into()),
            cstr(format!("{gid} {gid} 1")),
        ),
    ];
    let memory = spec.memory_bytes as libc::rlim_t;
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let limit = |resource, value: libc::rlim_t| {
                let lim = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            limit(libc::RLIMIT_AS, memory)?;
            limit(libc::RLIMIT_CORE, 0)?;
            match net {
                NetIsolation::NetNamespace => {
                    if libc::unshare(libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                NetIsolation::UserAndNetNamespace => {
                    if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    for (path, text) in &maps {
                        write_proc_file(path, text)?;
                    }
                }
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|error| SandboxError::Spawn {
        program: program.clone(),
        error,
    })?;
    let pid = child.id() as libc::pid_t;
    let tail = Arc::new(Mutex::new(Tail {
        bytes: Vec::new(),
        max: spec.tail_bytes,
        dropped: 0,
    }));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let mut readers = 0;
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for mut stream in streams.into_iter().flatten() {
        let (tail, done) = (tail.clone(), done_tx.clone());
        readers += 1;
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.lock().unwrap().push(&buf[..n]);
            }
            let _ = done.send(());
        });
    }
    drop(done_tx);
    let timed_out = !wait_exited(pid, start + spec.timeout);
    // The leader has exited (still a zombie, its pid taken) or timed out: end every
    // process of its group, then reap the leader.
    // SAFETY: kill(2) on our child's own process group.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let status = child.wait().map_err(SandboxError::Wait)?;
    let elapsed = start.elapsed();
    // The pipes close when the group is gone; a process that left the group (setsid)
    // and kept them open is not waited for beyond a grace period.
    let grace = Instant::now() + Duration::from_secs(2);
    for _ in 0..readers {
        let left = grace.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let mut tail = tail.lock().unwrap();
    tail.trim();
    let exit = if timed_out {
        Exit::TimedOut
    } else if let Some(code) = status.code() {
        Exit::Code(code)
    } else {
        Exit::Signal(status.signal().unwrap_or(0))
    };
    Ok(Finished {
        exit,
        tail: String::from_utf8_lossy(&tail.bytes).into_owned(),
        dropped_bytes: tail.dropped,
        elapsed,
    })
}

/// Wait until process `pid` has exited, leaving it unreaped; `false` at `deadline`.
fn wait_exited(pid: libc::pid_t, deadline: Instant) -> bool {
    loop {
        // SAFETY: waitid on our own child with a zeroed siginfo to fill in.
        let exited = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc = libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            );
            rc == 0 && info.si_pid() != 0
        };
        if exited {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout_ms: u64, memory_mb: u64) -> Finished {
        let dir = tempfile::tempdir().unwrap();
        let argv = ["sh".to_string(), "-c".to_string(), script.to_string()];
        let env = [(
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        )];
        run(&Sandboxed {
            argv: &argv,
            dir: dir.path(),
            env: &env,
            stdin: None,
            timeout: Duration::from_millis(timeout_ms),
            memory_bytes: memory_mb << 20,
            tail_bytes: 64,
        })
        .unwrap()
    }

    #[test]
    fn exit_status_and_a_bounded_tail() {
        let f = sh("echo out; echo err >&2; exit 3", 5000, 256);
        assert_eq!(f.exit, Exit::Code(3));
        assert!(f.tail.contains("out") && f.tail.contains("err"), "{f:?}");
        let f = sh("seq 1 1000", 5000, 256);
        assert_eq!(f.exit, Exit::Code(0));
        assert!(
            f.tail.len() <= 64 && f.tail.ends_with("999\n1000\n"),
            "{f:?}"
        );
        assert!(f.dropped_bytes > 3000, "{f:?}");
        let f = sh("kill -TERM $$", 5000, 256);
        assert_eq!(f.exit, Exit::Signal(libc::SIGTERM));
    }

    #[test]
    fn the_timeout_kills_the_whole_group() {
        let started = Instant::now();
        let f = sh("sleep 30 & sleep 30; echo never", 300, 256);
        assert_eq!(f.exit, Exit::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5), "{f:?}");
        // A process left behind by a command that exited is ended too.
        let f = sh("(sleep 30; echo late) & echo early", 5000, 256);
        assert_eq!(f.exit, Exit::Code(0));
        assert!(f.elapsed < Duration::from_secs(5), "{f:?}");
    }

    /// Both ways leave the command only a loopback interface (down: the end-to-end tests
    /// try to connect) and a file system it can write as itself.
    #[test]
    fn either_way_the_command_has_no_network() {
        let dir = tempfile::tempdir().unwrap();
        let argv = [
            "sh".to_string(),
            "-c".to_string(),
            "echo x > f && cat f && tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '".to_string(),
        ];
        let env = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
        for net in [
            NetIsolation::NetNamespace,
            NetIsolation::UserAndNetNamespace,
        ] {
            let spec = Sandboxed {
                argv: &argv,
                dir: dir.path(),
                env: &env,
                stdin: None,
                timeout: Duration::from_secs(5),
                memory_bytes: 256 << 20,
                tail_bytes: 4000,
            };
            let f = match run_isolated(&spec, net) {
                Err(SandboxError::Spawn { error, .. })
                    if error.raw_os_error() == Some(libc::EPERM) =>
                {
                    eprintln!("{net:?} is not available here: skipped");
                    continue;
                }
                other => other.unwrap(),
            };
            assert_eq!(f.exit, Exit::Code(0), "{net:?}: {f:?}");
            let lines: Vec<&str> = f.tail.lines().collect();
            assert_eq!(lines[..2], ["x", "lo"], "{net:?}: {f:?}");
            assert_eq!(lines.len(), 2, "only a loopback interface: {f:?}");
        }
    }
}
