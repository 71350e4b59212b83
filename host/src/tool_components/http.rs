//! Outgoing HTTP for tool components (`wasi:http/outgoing-handler`), to the hosts their
//! manifest lists in `[grants] http_hosts` and nowhere else.
//!
//! Every request goes through [`AllowList::send_request`]: its host must match an
//! entry (exact, or `*.example.com`), and unless the manifest sets
//! `http_allow_private`, every address the host resolves to must be public
//! ([`crate::tools::ip_policy`]). A plain-HTTP request is then sent to the checked
//! address itself (the `Host` header keeps the name), so a second lookup cannot
//! rebind it; HTTPS connects by name, its certificate checked against it. A tool
//! without HTTP grants has every request refused (`HTTP-request-denied`).

use super::state::ToolState;
use crate::tools::http_fetch::pattern_matches;
use crate::tools::ip_policy::classify;
use http_body_util::BodyExt;
use std::future::Future;
use std::net::SocketAddr;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// Link `wasi:http` (types and outgoing-handler) for tool components.
pub fn add_to_linker(linker: &mut Linker<ToolState>) -> anyhow::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
        .map_err(|e| anyhow::anyhow!("linking wasi:http for tools: {e}"))
}

/// The hosts one tool may reach.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    pub hosts: Vec<String>,
    pub allow_private: bool,
}

/// A call's `wasi:http` state: the context and its allow-list.
#[derive(Default)]
pub struct HttpAccess {
    pub ctx: WasiHttpCtx,
    pub allow: AllowList,
}

impl WasiHttpView for ToolState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let (http, table) = self.http_parts();
        WasiHttpCtxView {
            ctx: &mut http.ctx,
            table,
            hooks: &mut http.allow,
        }
    }
}

type Sent = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
)>;

impl AllowList {
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.hosts.iter().any(|p| pattern_matches(p, &host))
    }

    /// The request's checked destination: its host allowed, its addresses public
    /// (unless allowed otherwise). The address to connect to, for plain HTTP.
    async fn check(&self, uri: &http::Uri) -> Result<SocketAddr, Error> {
        let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !self.host_allowed(host) {
            tracing::info!(host, "tool HTTP request refused: host not in [grants] http_hosts");
            return Err(Error::HttpRequestDenied);
        }
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| Error::DestinationNotFound)?
            .collect();
        let first = *addrs.first().ok_or(Error::DestinationNotFound)?;
        if !self.allow_private
            && let Some((addr, why)) = addrs
                .iter()
                .find_map(|a| classify(a.ip()).map(|why| (a, why)))
        {
            tracing::info!(host, %addr, %why, "tool HTTP request refused: private address");
            return Err(Error::DestinationIpProhibited);
        }
        Ok(first)
    }
}

impl WasiHttpHooks for AllowList {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        let allow = self.clone();
        Box::new(async move {
            let addr = allow.check(request.uri()).await?;
            if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
                // Connect to the checked address: no second lookup to rebind.
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string();
                *request.uri_mut() = http::Uri::builder()
                    .scheme("http")
                    .authority(addr.to_string())
                    .path_and_query(path)
                    .build()
                    .map_err(|_| Error::HttpRequestUriInvalid)?;
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}
