//! `http_fetch`: HTTP GET to hosts on the operator's allowlist.
//!
//! The host name must match `[tools] http_allow_hosts` (exact, or `*.example.com`).
//! The name is resolved by the host and every address is checked by
//! [`super::ip_policy::classify`]: private, loopback, link-local, CGNAT, reserved,
//! multicast and the IPv6 forms that carry such an IPv4 address (mapped, compatible,
//! NAT64, 6to4, Teredo) are refused unless `http_allow_private` is set. The
//! connection is pinned to the checked address (no DNS rebinding, no proxy), the
//! response must come from that address (else the call fails closed), and redirects
//! are not followed (no escape through a redirect).

use super::ToolsConfig;
pub use super::ip_policy::{classify, is_private};
use super::{SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo, str_arg};
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
            .any(|pattern| pattern_matches(pattern, &host))
    }
}

/// An allowlist entry or URL host without the brackets of an IPv6 literal.
fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether allowlist `pattern` names `host`. IP literals compare as addresses, so
/// `[::127.0.0.1]` matches the URL host `::7f00:1` the URL parser normalises it to.
pub(crate) fn pattern_matches(pattern: &str, host: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        return host.ends_with(&format!(".{suffix}"));
    }
    match (unbracket(pattern).parse::<IpAddr>(), host.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => unbracket(pattern) == host,
    }
}

/// The first resolved address that is refused, as a denial naming why and the key
/// that would allow it.
fn refuse_private(host: &str, addrs: &[SocketAddr]) -> Result<(), ToolError> {
    for addr in addrs {
        if let Some(refusal) = classify(addr.ip()) {
            return Err(ToolError::Denied(format!(
                "`{host}` resolves to {}, which is {refusal}: refused; set [tools] http_allow_private = true to allow private addresses",
                addr.ip()
            )));
        }
    }
    Ok(())
}

/// Fail closed unless the response came from the address that was checked.
fn check_peer(expected: SocketAddr, actual: Option<SocketAddr>) -> Result<(), ToolError> {
    match actual {
        Some(peer)
            if peer.ip().to_canonical() == expected.ip().to_canonical()
                && peer.port() == expected.port() =>
        {
            Ok(())
        }
        other => Err(ToolError::Denied(format!(
            "the response came from {}, not from the checked address {expected}: refused",
            other.map_or_else(|| "an unknown peer".to_string(), |p| p.to_string())
        ))),
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
            .ok_or_else(|| ToolError::InvalidArgs("url has no host".into()))?;
        let host = unbracket(host).to_string();
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
        if !self.allow_private {
            refuse_private(&host, &addrs)?;
        }
        // Pinned to the checked address; no proxy (a proxy would connect elsewhere).
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .resolve(&host, addr)
            .build()
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| ToolError::Failed(format!("request failed: {e}")))?;
        check_peer(addr, response.remote_addr())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literal_allowlist_entries_match_normalised_hosts() {
        assert!(pattern_matches("[::127.0.0.1]", "::7f00:1"));
        assert!(pattern_matches("::ffff:127.0.0.1", "::ffff:7f00:1"));
        assert!(pattern_matches("127.0.0.1", "127.0.0.1"));
        assert!(pattern_matches("*.example.com", "api.example.com"));
        assert!(!pattern_matches("*.example.com", "example.com"));
        assert!(!pattern_matches("[::1]", "::2"));
    }

    #[test]
    fn wildcard_entries_match_subdomains_only() {
        let tool = HttpFetchTool::new(&ToolsConfig {
            http_allow_hosts: vec!["*.Example.test".into()],
            ..ToolsConfig::default()
        })
        .unwrap();
        for allowed in ["a.example.test", "A.EXAMPLE.TEST", "deep.a.example.test"] {
            assert!(tool.host_allowed(allowed), "{allowed}");
        }
        for refused in [
            "example.test",
            "evil-example.test",
            "aexample.test",
            "example.test.evil",
            "a.example.testx",
            "",
        ] {
            assert!(!tool.host_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn refusals_name_the_address_the_reason_and_the_key() {
        let addrs: [SocketAddr; 2] =
            ["93.184.216.34:80", "[64:ff9b::7f00:1]:80"].map(|a| a.parse().unwrap());
        let Err(ToolError::Denied(msg)) = refuse_private("two.example", &addrs) else {
            panic!("refused");
        };
        assert!(msg.contains("64:ff9b::7f00:1"), "{msg}");
        assert!(msg.contains("NAT64") && msg.contains("loopback"), "{msg}");
        assert!(msg.contains("[tools] http_allow_private"), "{msg}");
        assert!(refuse_private("one.example", &addrs[..1]).is_ok());
    }

    #[test]
    fn a_response_from_another_peer_fails_closed() {
        let checked: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(check_peer(checked, Some(checked)).is_ok());
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:8080".parse().unwrap();
        assert!(check_peer(checked, Some(mapped)).is_ok());
        let others: [Option<SocketAddr>; 3] = [
            Some("127.0.0.2:8080".parse().unwrap()),
            Some("127.0.0.1:81".parse().unwrap()),
            None,
        ];
        for other in others {
            assert!(
                matches!(check_peer(checked, other), Err(ToolError::Denied(_))),
                "{other:?}"
            );
        }
    }
}
