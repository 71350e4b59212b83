//! `http_fetch`: HTTP GET to hosts on the operator's allowlist.
//!
//! The host name must match `[tools] http_allow_hosts` (exact, or `*.example.com`).
//! The name is resolved by the host and every address is checked: private,
//! loopback, link-local, unspecified and multicast addresses are refused unless
//! `http_allow_private` is set. The connection is pinned to the checked address (no
//! DNS rebinding) and redirects are not followed (no escape through a redirect).

use super::{SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo, str_arg};
use crate::config::ToolsConfig;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The built-in `http_fetch` tool.
pub struct HttpFetchTool {
    allow_hosts: Vec<String>,
    allow_private: bool,
    max_bytes: usize,
}

impl HttpFetchTool {
    /// The tool as configured by `[tools]`.
    pub fn new(config: &ToolsConfig) -> anyhow::Result<HttpFetchTool> {
        Ok(HttpFetchTool {
            allow_hosts: config
                .http_allow_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            allow_private: config.http_allow_private,
            max_bytes: config.http_max_bytes.unwrap_or(1 << 20),
        })
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allow_hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => *pattern == host,
            })
    }
}

/// Whether an address is one a sandboxed agent must not reach by default.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64/10 CGNAT
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

#[async_trait::async_trait]
impl Tool for HttpFetchTool {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "http_fetch".into(),
            description: "HTTP GET a URL on an allowed host; returns status and body.".into(),
            args_schema: json!({
                "type": "object",
                "properties": { "url": { "type": "string" } },
                "required": ["url"]
            }),
            side_effect: SideEffect::None,
            undo: None,
        }
    }

    async fn call(&self, ctx: &ToolCallCtx, args: serde_json::Value) -> Result<String, ToolError> {
        let raw = str_arg(&args, "url")?;
        let url = reqwest::Url::parse(raw)
            .map_err(|e| ToolError::InvalidArgs(format!("bad url: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ToolError::Denied(format!(
                "scheme `{}` not allowed (http or https)",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| ToolError::InvalidArgs("url has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !self.host_allowed(&host) {
            return Err(ToolError::Denied(format!(
                "host `{host}` is not on the allowlist ([tools] http_allow_hosts)"
            )));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| ToolError::Failed(format!("cannot resolve `{host}`: {e}")))?
            .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| ToolError::Failed(format!("`{host}` has no address")))?;
        if !self.allow_private
            && let Some(bad) = addrs.iter().find(|a| is_private(a.ip()))
        {
            return Err(ToolError::Denied(format!(
                "`{host}` resolves to {} (private, loopback or link-local); set [tools] http_allow_private to allow",
                bad.ip()
            )));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .resolve(&host, addr)
            .build()
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| ToolError::Failed(format!("request failed: {e}")))?;
        let status = response.status().as_u16();
        ctx.emit(super::Effect::APICall {
            endpoint: raw.to_string(),
            method: "GET".into(),
            status,
        });
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ToolError::Failed(format!("reading body: {e}")))?
        {
            let room = self.max_bytes - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(json!({
            "status": status,
            "body": String::from_utf8_lossy(&body),
            "truncated": truncated,
        })
        .to_string())
    }
}
