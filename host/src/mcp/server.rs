//! One MCP server of a run, through the `rmcp` client: started on first need (a
//! listing or a call), started again when it died, stopped with the run.
//!
//! A stdio server is a child process in its own process group, so stopping it stops
//! whatever it started too (`npx` starts `node`); it is killed with the group, never
//! left behind, and killed at once when its [`McpServer`] is dropped. Its stderr goes
//! to the host's log (`agentflow::mcp`, debug) and its last lines into errors about it.
//! It does not inherit the host's environment, only [`INHERITED_ENV`] and its `env`.

use crate::tools::ToolError;
use crate::tools::mcp_config::{McpServerConfig, expand};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientInfo, Implementation, Tool};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceError, ServiceExt};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The host's environment variables a stdio server inherits; `env` adds others.
pub const INHERITED_ENV: &[&str] = &[
    "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "TMPDIR",
];

/// How many of a server's last stderr lines its errors quote.
const STDERR_TAIL: usize = 8;

struct Connection {
    client: RunningService<RoleClient, ClientInfo>,
    /// The stdio server's process; `None` for an HTTP server.
    process: Option<tokio::process::Child>,
}

impl Connection {
    /// Whether the server can still take requests: its process runs and the
    /// transport is open.
    fn alive(&mut self) -> bool {
        let running = match &mut self.process {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => true,
        };
        running && !self.client.is_closed() && !self.client.peer().is_transport_closed()
    }
}

/// A configured MCP server, connected lazily.
pub struct McpServer {
    config: McpServerConfig,
    connection: tokio::sync::Mutex<Option<Connection>>,
    /// The server's `tools/list`, asked once per run.
    listing: tokio::sync::Mutex<Option<Arc<Vec<Tool>>>>,
    /// The same, readable without waiting (for [`crate::tools::Tool::info`]).
    listed: Mutex<Option<Arc<Vec<Tool>>>>,
    /// The running process's group (its pid), 0 when none: stopped without awaiting.
    group: AtomicI32,
    /// Set when the run ended: no more starts.
    stopped: AtomicBool,
    /// How many times the server was started.
    starts: AtomicU64,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl McpServer {
    pub fn new(config: McpServerConfig) -> McpServer {
        McpServer {
            config,
            connection: Default::default(),
            listing: Default::default(),
            listed: Default::default(),
            group: AtomicI32::new(0),
            stopped: AtomicBool::new(false),
            starts: AtomicU64::new(0),
            stderr: Default::default(),
        }
    }

    pub fn config(&self) -> &McpServerConfig {
        &self.config
    }

    /// How many times this server was started (restarts included).
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }

    /// The running stdio server's process id.
    pub fn pid(&self) -> Option<u32> {
        let g = self.group.load(Ordering::Relaxed);
        (g > 0).then_some(g as u32)
    }

    /// The server's tools as listed (if listed yet), without asking it.
    pub fn listed(&self) -> Option<Arc<Vec<Tool>>> {
        self.listed.lock().unwrap().clone()
    }

    /// The server's tools (`tools/list`), asked once and then kept.
    pub async fn list_tools(&self) -> Result<Arc<Vec<Tool>>, ToolError> {
        let mut listing = self.listing.lock().await;
        if let Some(tools) = &*listing {
            return Ok(tools.clone());
        }
        let peer = self.peer().await?;
        let tools = match tokio::time::timeout(self.config.timeout(), peer.list_all_tools()).await {
            Err(_) => return Err(self.failed("did not list its tools in time")),
            Ok(Err(e)) => return Err(self.failed(&format!("listing its tools failed: {e}"))),
            Ok(Ok(tools)) => Arc::new(tools),
        };
        *listing = Some(tools.clone());
        *self.listed.lock().unwrap() = Some(tools.clone());
        Ok(tools)
    }

    /// Call the server's tool `tool` with `args` (a JSON object). When the server
    /// turns out to have died, it is started again; the call is then sent again only
    /// when `resend_safe` (a read-only or idempotent tool), since the dead server may
    /// have acted on it.
    pub async fn call(
        &self,
        tool: &str,
        args: serde_json::Value,
        resend_safe: bool,
    ) -> Result<CallToolResult, ToolError> {
        let arguments = match args {
            serde_json::Value::Object(map) => Some(map),
            serde_json::Value::Null => None,
            other => {
                return Err(ToolError::InvalidArgs(format!(
                    "an MCP tool takes a JSON object, not {other}"
                )));
            }
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let peer = self.peer().await?;
            let params = CallToolRequestParams {
                meta: None,
                name: tool.to_string().into(),
                arguments: arguments.clone(),
                task: None,
            };
            let answer = tokio::time::timeout(self.config.timeout(), peer.call_tool(params)).await;
            match answer {
                Err(_) => {
                    return Err(self.failed(&format!(
                        "`{tool}` did not answer within {} ms",
                        self.config.timeout().as_millis()
                    )));
                }
                Ok(Ok(result)) => return Ok(result),
                Ok(Err(ServiceError::McpError(e))) => {
                    return Err(ToolError::Failed(e.message.into_owned()));
                }
                Ok(Err(e)) => {
                    // The transport broke: whatever serves next is a new server.
                    self.disconnect().await;
                    if attempt == 1 && resend_safe && !self.stopped.load(Ordering::Relaxed) {
                        tracing::info!(server = %self.config.name, tool, "MCP server gone during a call; restarting it and calling again");
                        continue;
                    }
                    return Err(self.failed(&format!(
                        "the call to `{tool}` was cut off ({e}); the server is started again on the next call"
                    )));
                }
            }
        }
    }

    /// Stop the server (the run ended): kill its process group, wait for it, close
    /// the client. No call starts it again.
    pub async fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.disconnect().await;
    }

    /// Stop the server now, without waiting for its process to be reaped.
    pub fn stop_now(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        kill_group(self.group.swap(0, Ordering::Relaxed));
    }

    /// A connected client, starting (or restarting) the server when needed.
    async fn peer(&self) -> Result<Peer<RoleClient>, ToolError> {
        let mut connection = self.connection.lock().await;
        if let Some(c) = connection.as_mut() {
            if c.alive() {
                return Ok(c.client.peer().clone());
            }
            tracing::warn!(server = %self.config.name, "MCP server stopped; starting it again");
            let old = connection.take();
            self.close(old).await;
        }
        if self.stopped.load(Ordering::Relaxed) {
            return Err(self.failed("the run has ended"));
        }
        let c = self.start().await?;
        let peer = c.client.peer().clone();
        *connection = Some(c);
        Ok(peer)
    }

    async fn disconnect(&self) {
        let old = self.connection.lock().await.take();
        self.close(old).await;
    }

    async fn close(&self, connection: Option<Connection>) {
        let Some(mut c) = connection else { return };
        if let Some(child) = &mut c.process {
            kill_group(self.group.swap(0, Ordering::Relaxed));
            let _ = child.kill().await;
        }
        let _ = c
            .client
            .close_with_timeout(std::time::Duration::from_secs(2))
            .await;
    }

    async fn start(&self) -> Result<Connection, ToolError> {
        self.starts.fetch_add(1, Ordering::Relaxed);
        let info = ClientInfo {
            meta: None,
            protocol_version: Default::default(),
            capabilities: Default::default(),
            client_info: Implementation {
                name: "agentflow".into(),
                title: None,
                version: env!("CARGO_PKG_VERSION").into(),
                description: None,
                icons: None,
                website_url: None,
            },
        };
        let timeout = self.config.timeout();
        if let Some(url) = &self.config.url {
            use rmcp::transport::StreamableHttpClientTransport;
            use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            if let Some(token) = &self.config.bearer_token {
                config = config.auth_header(expand(token).map_err(|e| self.failed(&e))?);
            }
            let transport =
                StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
            let client = match tokio::time::timeout(timeout, info.serve(transport)).await {
                Err(_) => return Err(self.failed("did not initialize in time")),
                Ok(Err(e)) => return Err(self.failed(&format!("did not initialize: {e}"))),
                Ok(Ok(client)) => client,
            };
            return Ok(Connection {
                client,
                process: None,
            });
        }
        let command = self.config.command.as_deref().unwrap_or_default();
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(&self.config.args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(dir) = &self.config.cwd {
            cmd.current_dir(dir);
        }
        // Not the host's whole environment (its API keys): what a program needs to
        // run, as MCP clients pass by default, and what the config adds.
        cmd.env_clear();
        for key in INHERITED_ENV {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        for (key, value) in &self.config.env {
            let value = expand(value).map_err(|e| self.failed(&format!("env {key}: {e}")))?;
            cmd.env(key, value);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| self.failed(&format!("`{command}` did not start: {e}")))?;
        let pid = child.id().unwrap_or(0) as i32;
        self.group.store(pid, Ordering::Relaxed);
        if self.stopped.load(Ordering::Relaxed) {
            self.stop_now();
            return Err(self.failed("the run has ended"));
        }
        tracing::info!(server = %self.config.name, pid, "started MCP server");
        if let Some(stderr) = child.stderr.take() {
            self.stderr.lock().unwrap().clear();
            tokio::spawn(log_stderr(
                self.config.name.clone(),
                stderr,
                self.stderr.clone(),
            ));
        }
        let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
            return Err(self.failed("its stdio could not be opened"));
        };
        let client = match tokio::time::timeout(timeout, info.serve((stdout, stdin))).await {
            Ok(Ok(client)) => client,
            failed => {
                kill_group(self.group.swap(0, Ordering::Relaxed));
                let _ = child.kill().await;
                let why = match failed {
                    Err(_) => "did not initialize in time".to_string(),
                    Ok(Err(e)) => format!("did not initialize: {e}"),
                    Ok(Ok(_)) => unreachable!(),
                };
                return Err(self.failed(&why));
            }
        };
        Ok(Connection {
            client,
            process: Some(child),
        })
    }

    /// A failure of this server, with its last stderr lines.
    fn failed(&self, what: &str) -> ToolError {
        let tail: Vec<String> = self.stderr.lock().unwrap().iter().cloned().collect();
        let mut msg = format!(
            "MCP server `{}` ({}): {what}",
            self.config.name,
            self.config.endpoint()
        );
        if !tail.is_empty() {
            msg.push_str("; its stderr ends with: ");
            msg.push_str(&tail.join(" | "));
        }
        ToolError::Failed(msg)
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        kill_group(self.group.swap(0, Ordering::Relaxed));
    }
}

/// SIGKILL the process group `group` (a stdio server and whatever it started).
fn kill_group(group: i32) {
    if group > 0 {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory
        // is involved.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

async fn log_stderr(
    server: String,
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "agentflow::mcp", server = %server, "{line}");
        let mut tail = tail.lock().unwrap();
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
