//! A real browser and a real dashboard for the dashboard's tests: `agentflow serve`
//! started as a process on a free port, and headless Chromium driven through its own
//! `chromedriver` (WebDriver, via `fantoccini`) on another free port. Nothing is
//! started globally: each test starts both and they stop when dropped (the driver
//! and the browsers it launched are one process group, killed together).
//!
//! A missing `chromedriver` or `chromium` fails the test, saying what to install:
//! CI installs both (`.ci/run`).

use super::cli::agentflow;
use fantoccini::{Client, ClientBuilder, Locator};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An `agentflow serve` process.
pub struct Dashboard {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Dashboard {
    /// `agentflow serve --db DB --addr 127.0.0.1:0 ARGS`, once it listens.
    pub fn start(db: &Path, args: &[&str]) -> Dashboard {
        let mut child = agentflow()
            .args(["serve", "--addr", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agentflow serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("agentflow serve stopped before listening: {seen}");
            };
            if let Some(at) = line.split("at http://").nth(1) {
                break format!("http://{}", at.split('/').next().unwrap());
            }
            seen.push_str(&line);
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Dashboard { child, url }
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of `name` on `PATH` (or in /usr/bin, /usr/lib/chromium).
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/bin", "/usr/lib/chromium"].map(PathBuf::from));
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// A free TCP port on loopback (bound, then released for the driver to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Headless Chromium behind its own chromedriver.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start chromedriver on a free port and open a headless Chromium session.
    pub async fn start() -> Browser {
        let Some(driver_bin) = find_program(&["chromedriver"]) else {
            panic!(
                "chromedriver is not installed: the dashboard tests drive headless Chromium. \
                 Install the Debian packages `chromium` and `chromium-driver` (.ci/run does)"
            );
        };
        let Some(chromium) = find_program(&["chromium", "chromium-browser", "google-chrome"])
        else {
            panic!(
                "chromium is not installed: install the Debian package `chromium` (.ci/run does)"
            );
        };
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: the browsers it launches die with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_bin.display()));
        let profile = tempfile::Builder::new()
            .prefix("chromium-profile-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        Browser {
            client: connect(port, caps).await,
            driver,
            _profile: profile,
        }
    }

    /// Open `url` and wait for the element `css`.
    pub async fn open(&self, url: &str, css: &str) -> fantoccini::elements::Element {
        self.client.goto(url).await.unwrap();
        self.wait_for(css).await
    }

    /// Wait (up to 30 s) for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let body = self.text("body").await;
                panic!("no `{css}` within 30 s ({e}); the page says:\n{body}")
            }
        }
    }

    /// The text of the first element matching `css` (empty when there is none). A
    /// live page may redraw between finding and reading: then it is found again.
    pub async fn text(&self, css: &str) -> String {
        for _ in 0..10 {
            let Ok(e) = self.client.find(Locator::Css(css)).await else {
                return String::new();
            };
            if let Ok(text) = e.text().await {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("`{css}` kept going stale");
    }

    /// Click the element `css` once it is there (found again if a redraw replaced it).
    pub async fn click(&self, css: &str) {
        let mut last = String::new();
        for _ in 0..10 {
            match self.wait_for(css).await.click().await {
                Ok(()) => return,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot click `{css}`: {last}");
    }

    /// Save a screenshot as `target/test-artifacts/dashboard/NAME.png`; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/dashboard");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(&path, png).unwrap();
        path
    }

    /// End the session, then the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// Connect to the chromedriver on `port`, retrying while it starts (up to 20 s).
async fn connect(port: u16, caps: serde_json::Map<String, serde_json::Value>) -> Client {
    let url = format!("http://127.0.0.1:{port}");
    let mut last = String::new();
    for _ in 0..200 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot open a Chromium session through chromedriver at {url}: {last}");
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver and the browsers it started: one process group, ours.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

/// One browser test at a time: each starts a Chromium, and the machine is small.
/// (An async lock: each test has its own runtime, and a failed test only drops it.)
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
