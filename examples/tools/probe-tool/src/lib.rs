//! `probe-tool`: a tool component (world `agentflow:agent/tool`) for the host's tests,
//! written against the raw bindings. It calls itself `probe` (idempotent) and does
//! what its arguments' `op` says:
//!
//! * `echo` — returns `text`, and the call's idempotency key and run id;
//! * `effects` — returns `"ok"` reporting the strings of `effects` as its effects
//!   (well-formed or not: the host must refuse a malformed one);
//! * `loop` — spins forever (the host's timeout must stop it);
//! * `bomb` — allocates memory without end (the host's memory limit must stop it);
//! * `trap` — panics;
//! * `kv_get` / `kv_set` — the run's kv store through the `kv` import (`key`, `value`);
//! * `read` / `write` — the file `path` under the granted directory (`/data`), `write`
//!   with `content`, reporting a `FileModified` effect;
//! * `fetch` — GET `url` with `wasi:http/outgoing-handler`: `"<status> <body>"`, or the
//!   host's error code as a `denied` error;
//! * `fail` — a `failed` tool error; anything else is `invalid-args`.

wit_bindgen::generate!({ path: "../../../wit", world: "tool" });

use agentflow::agent::kv;
use agentflow::agent::tool_types::SideEffect;
use serde_json::{Value, json};

struct Probe;

fn text(args: &Value, key: &str) -> Result<String, ToolError> {
    args[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ToolError::InvalidArgs(format!("missing string `{key}`")))
}

fn done(output: String) -> Result<CallResult, ToolError> {
    Ok(CallResult {
        output,
        effects: Vec::new(),
    })
}

impl Guest for Probe {
    fn describe() -> Description {
        Description {
            name: "probe".into(),
            description: "Test probe: echo, effects, loop, bomb, trap, kv, files.".into(),
            args_schema: json!({
                "type": "object",
                "properties": { "op": { "type": "string" } },
                "required": ["op"]
            })
            .to_string(),
            side_effect: SideEffect::Idempotent,
            undo: None,
        }
    }

    fn call(ctx: CallContext, args_json: String) -> Result<CallResult, ToolError> {
        let args: Value = serde_json::from_str(&args_json)
            .map_err(|e| ToolError::InvalidArgs(format!("not JSON: {e}")))?;
        match args["op"].as_str().unwrap_or_default() {
            "echo" => done(
                json!({
                    "text": args["text"],
                    "key": ctx.idempotency_key,
                    "run": ctx.run_id,
                })
                .to_string(),
            ),
            "effects" => Ok(CallResult {
                output: "ok".into(),
                effects: args["effects"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("the probe tool was told to trap"),
            "kv_get" => done(json!(kv::get(&text(&args, "key")?)).to_string()),
            "kv_set" => match kv::set(&text(&args, "key")?, &text(&args, "value")?) {
                Ok(()) => done("\"ok\"".into()),
                Err(e) => Err(ToolError::Denied(e)),
            },
            "read" => {
                let path = format!("/data/{}", text(&args, "path")?);
                std::fs::read_to_string(&path)
                    .map_err(|e| ToolError::Denied(format!("cannot read {path}: {e}")))
                    .and_then(done)
            }
            "write" => {
                let path = format!("/data/{}", text(&args, "path")?);
                let content = text(&args, "content")?;
                std::fs::write(&path, &content)
                    .map_err(|e| ToolError::Denied(format!("cannot write {path}: {e}")))?;
                Ok(CallResult {
                    output: "\"written\"".into(),
                    effects: vec![
                        json!({"type": "FileModified", "path": path, "hash": content.len().to_string()})
                            .to_string(),
                    ],
                })
            }
            "fetch" => fetch(&text(&args, "url")?).and_then(done),
            "fail" => Err(ToolError::Failed("the probe was told to fail".into())),
            other => Err(ToolError::InvalidArgs(format!("unknown op `{other}`"))),
        }
    }
}

/// GET `url` through `wasi:http`.
fn fetch(url: &str) -> Result<String, ToolError> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};
    use wasip2::io::streams::StreamError;
    let bad = || ToolError::InvalidArgs(format!("`{url}` is not an http(s) URL"));
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(bad());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&scheme)).map_err(|()| bad())?;
    request.set_authority(Some(authority)).map_err(|()| bad())?;
    request.set_path_with_query(Some(path)).map_err(|()| bad())?;
    request.set_method(&Method::Get).map_err(|()| bad())?;
    let denied = |e: &dyn std::fmt::Debug| ToolError::Denied(format!("{e:?}"));
    let pending = outgoing_handler::handle(request, None).map_err(|e| denied(&e))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(denied(&code)),
        other => return Err(ToolError::Failed(format!("no response: {other:?}"))),
    };
    let status = response.status();
    let body = response.consume().map_err(|()| ToolError::Failed("no body".into()))?;
    let stream = body.stream().map_err(|()| ToolError::Failed("no body stream".into()))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes.extend(chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(ToolError::Failed(format!("reading the body: {e:?}"))),
        }
    }
    Ok(format!("{status} {}", String::from_utf8_lossy(&bytes)))
}

export!(Probe);
