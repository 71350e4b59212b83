//! Who may read the dashboard and who may decide through it. Every request passes
//! [`guard`]:
//!
//! * **token** — with `--token T`, a request needs `Authorization: Bearer T` or the
//!   cookie a browser gets by opening any page with `?token=T` once (it is then
//!   redirected to the same page without it); otherwise 401.
//! * **Host** — without a token, the `Host` header must name a loopback host
//!   (`127.0.0.1`, `localhost`, `[::1]`): a page of another site that rebinds its DNS
//!   name to 127.0.0.1 cannot read the ledger; otherwise 403.
//! * **CSRF** — a POST must carry the server's random CSRF token (written into the
//!   page) in `X-AgentFlow-CSRF`, and when the browser sends `Origin` or
//!   `Sec-Fetch-Site` they must say the same origin; otherwise 403. A POST that
//!   presents the token in `Authorization: Bearer` (an API client of a server with
//!   `--token`) needs no CSRF token: browsers never send that header on their own.
//!
//! Every response gets a strict Content-Security-Policy (scripts and styles only from
//! `/assets/`, no inline script), `nosniff`, no framing and no referrer.

use super::State;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

/// The header a POST carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-agentflow-csrf";
/// The cookie a browser keeps the bearer token in.
pub const TOKEN_COOKIE: &str = "agentflow_token";

/// Equal, in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn refuse(status: StatusCode, why: &str) -> Response {
    secure((status, axum::Json(serde_json::json!({ "error": why }))).into_response())
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token of an `Authorization: Bearer` header.
fn bearer_header(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The bearer token the request carries: its `Authorization` header, else its cookie.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(t) = bearer_header(headers) {
        return Some(t);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value)
}

/// The value of `token` in a query string, and the query without it.
fn token_in_query(query: &str) -> Option<(String, String)> {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("token=") {
            Some(t) => token = Some(t.to_string()),
            None if !pair.is_empty() => rest.push(pair),
            None => {}
        }
    }
    token.map(|t| (t, rest.join("&")))
}

/// Whether `host` (a `Host` header: name and port) names this machine's loopback.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a state-changing request comes from the dashboard's own page.
fn csrf_ok(headers: &HeaderMap, csrf: &str) -> Result<(), &'static str> {
    let sent = header_str(headers, CSRF_HEADER).unwrap_or("");
    if !same_secret(sent, csrf) {
        return Err("missing or wrong X-AgentFlow-CSRF header: decide from the dashboard's page");
    }
    if let Some(site) = header_str(headers, "sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Err("cross-site request refused (Sec-Fetch-Site)");
    }
    if let Some(origin) = header_str(headers, header::ORIGIN) {
        let host = header_str(headers, header::HOST).unwrap_or("");
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if authority != Some(host) {
            return Err("cross-origin request refused (Origin is not this server)");
        }
    }
    Ok(())
}

/// The middleware: token, Host, CSRF; then security headers on the response.
pub async fn guard(
    axum::extract::State(state): axum::extract::State<State>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if let Some(token) = &state.token {
        if let Some((given, rest)) = request.uri().query().and_then(token_in_query)
            && request.method() == Method::GET
        {
            if !same_secret(&given, token) {
                return refuse(StatusCode::UNAUTHORIZED, "wrong token");
            }
            let path = request.uri().path();
            let target = if rest.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{rest}")
            };
            let mut response = Redirect::to(&target).into_response();
            let cookie = format!("{TOKEN_COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            return secure(response);
        }
        if !presented_token(headers).is_some_and(|t| same_secret(t, token)) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this dashboard needs its token: send `Authorization: Bearer T`, or open /?token=T once",
            );
        }
    } else if !header_str(headers, header::HOST).is_some_and(loopback_host) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the Host header is not a loopback name (a dashboard without --token answers only 127.0.0.1/localhost)",
        );
    }
    // A request authenticated by its `Authorization` header is a program's (an API
    // client's): a browser never adds that header to a cross-site request by itself,
    // so only cookie-authenticated and token-less requests need the CSRF token.
    let by_header = state.token.is_some() && bearer_header(headers).is_some();
    let safe = matches!(*request.method(), Method::GET | Method::HEAD) || by_header;
    if !safe && let Err(why) = csrf_ok(headers, &state.csrf) {
        return refuse(StatusCode::FORBIDDEN, why);
    }
    secure(next.run(request).await)
}

/// Add the security headers every response carries.
fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:7878",
            "localhost:1",
            "[::1]:80",
            "localhost",
            "a.localhost:2",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in ["evil.example:7878", "10.0.0.1:7878", "[2001:db8::1]:80", ""] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn token_comes_out_of_the_query() {
        assert_eq!(
            token_in_query("a=1&token=xyz&b=2"),
            Some(("xyz".into(), "a=1&b=2".into()))
        );
        assert_eq!(token_in_query("a=1"), None);
    }

    #[test]
    fn csrf_needs_the_token_and_the_same_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9"));
        assert!(csrf_ok(&h, "s3cret").is_err());
        h.insert(CSRF_HEADER, HeaderValue::from_static("s3cret"));
        assert!(csrf_ok(&h, "s3cret").is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(csrf_ok(&h, "s3cret").is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9"),
        );
        assert!(csrf_ok(&h, "s3cret").is_ok());
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(csrf_ok(&h, "s3cret").is_err());
    }
}
