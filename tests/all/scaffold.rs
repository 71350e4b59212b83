//! Scaffolding: `agentflow new agent|tool NAME` makes a crate that passes its own
//! `cargo test` natively, builds for wasm32-wasip2 and runs — the agent through
//! `agentflow run` on the mock model, the tool as a component of the `tool` world
//! answering `describe` and `call`, installed with `agentflow tools install` and called
//! by an agent. The generated crates build in one target directory
//! shared by these tests, so the SDK compiles once.

use crate::support::cli::*;
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// One target directory for every generated crate of these tests.
fn shared_target() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target")
}

/// `agentflow new ARGS` run in `cwd`.
fn new(cwd: &Path, args: &[&str]) -> Output {
    agentflow()
        .current_dir(cwd)
        .arg("new")
        .args(args)
        .output()
        .unwrap()
}

/// `cargo ARGS --manifest-path <krate>/Cargo.toml` in the shared target directory,
/// with the examples' lock file, so nothing is resolved anew.
fn cargo_on(krate: &Path, args: &[&str]) -> Output {
    if !krate.join("Cargo.lock").exists() {
        std::fs::copy(repo_path("examples/Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    }
    cargo()
        .args(args)
        .arg("--manifest-path")
        .arg(krate.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", shared_target())
        .env("CARGO_INCREMENTAL", "0")
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap()
}

/// The path the generated Cargo.toml gives the SDK, resolved from the crate.
fn sdk_dependency(krate: &Path) -> PathBuf {
    let manifest: toml::Table = std::fs::read_to_string(krate.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let path = manifest["dependencies"]["agentflow-sdk"]["path"]
        .as_str()
        .expect("a path dependency on the SDK");
    krate.join(path).canonicalize().unwrap()
}

/// The passed-test count cargo test reports for the crate's unit tests.
fn passed(out: &Output) -> String {
    let text = stdout(out);
    text.lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or_default()
        .to_string()
}

/// `new agent` in a checkout: a crate depending on this checkout's SDK by path, whose
/// tests pass, and which `agentflow run` builds and runs on the mock model; an empty
/// input fails the run with the agent's own message.
#[test]
fn a_new_agent_tests_builds_and_runs() {
    let dir = TempDir::new("scaffold-agent");
    let out = new(dir.path(), &["agent", "my-agent"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("created an agent crate `my-agent`"),
        "{}",
        stdout(&out)
    );
    let krate = dir.join("my-agent");
    assert_eq!(
        sdk_dependency(&krate),
        repo_path("guest-sdk").canonicalize().unwrap()
    );

    let test = cargo_on(&krate, &["test"]);
    assert!(test.status.success(), "{}", stderr(&test));
    assert!(passed(&test).contains("3 passed"), "{}", stdout(&test));

    let run = |input: &str, db: &str| {
        agentflow()
            .env("CARGO_TARGET_DIR", shared_target())
            .arg("run")
            .arg(&krate)
            .args(["--input", input, "--db"])
            .arg(dir.join(db))
            .output()
            .unwrap()
    };
    let out = run("Why sandbox AI agents?", "a.db");
    assert!(out.status.success(), "{}", stderr(&out));
    // The mock model's plain answer names the question it was asked.
    assert!(
        stdout(&out).starts_with("Answer to \"Why sandbox AI agents?\":"),
        "{}",
        stdout(&out)
    );
    assert!(
        shared_target()
            .join("wasm32-wasip2/release/my_agent.wasm")
            .exists()
    );

    let out = run("   ", "b.db");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the input is empty"),
        "{}",
        stderr(&out)
    );
}

/// `new tool`: a crate with a manifest granting nothing, whose tests pass natively, and
/// whose wasm32-wasip2 build is a component of the `tool` world: it describes itself
/// and answers a call (and bad arguments) through the component's exports.
#[test]
fn a_new_tool_tests_and_builds_a_tool_component() {
    let dir = TempDir::new("scaffold-tool");
    let krate = dir.join("tools/wc");
    let out = new(
        dir.path(),
        &["tool", "word-count", "--dir", "tools/wc", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let created = stdout_json(&out);
    assert_eq!(created["kind"], "tool");
    assert_eq!(
        created["files"],
        serde_json::json!([
            ".gitignore",
            "Cargo.toml",
            "src/lib.rs",
            "agentflow-tool.toml"
        ])
    );
    let manifest: toml::Table = std::fs::read_to_string(krate.join("agentflow-tool.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        manifest["grants"].as_table().unwrap().is_empty(),
        "grants nothing"
    );

    let test = cargo_on(&krate, &["test"]);
    assert!(test.status.success(), "{}", stderr(&test));
    assert!(passed(&test).contains("3 passed"), "{}", stdout(&test));

    let build = cargo_on(&krate, &["build", "--release", "--target", "wasm32-wasip2"]);
    assert!(build.status.success(), "{}", stderr(&build));
    let wasm = shared_target().join("wasm32-wasip2/release/word_count.wasm");
    tool_component::check_word_count(&wasm);

    // Installed from its crate directory (with its manifest) and called by an agent.
    let db = dir.ledger("tools.db");
    let out = agentflow()
        .env("CARGO_TARGET_DIR", shared_target())
        .args(["tools", "install"])
        .arg(&krate)
        .args(["--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["name"], "word-count");
    let ops = serde_json::json!([{"tool": {"name": "word-count", "args": {"text": "a b  c"}}}]);
    let out = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args([
            "--input",
            &ops.to_string(),
            "--grant",
            "word-count",
            "--json",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout_json(&out);
    let results: serde_json::Value =
        serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    let counted: serde_json::Value =
        serde_json::from_str(results[0]["ok"].as_str().expect("the call succeeded")).unwrap();
    assert_eq!(counted, serde_json::json!({"words": 3, "chars": 6}));
}

/// An existing directory with something in it is never written to; a bad name and an
/// SDK path that is not the SDK are refused before anything is created.
#[test]
fn new_refuses_what_it_must_not_do() {
    let dir = TempDir::new("scaffold-refuse");
    std::fs::create_dir(dir.join("taken")).unwrap();
    dir.file("taken/notes.txt", "mine");
    let out = new(dir.path(), &["agent", "taken"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exists and is not empty"),
        "{}",
        stderr(&out)
    );
    let left: Vec<_> = std::fs::read_dir(dir.join("taken")).unwrap().collect();
    assert_eq!(left.len(), 1, "nothing was added");
    assert_eq!(
        std::fs::read_to_string(dir.join("taken/notes.txt")).unwrap(),
        "mine"
    );

    let out = new(dir.path(), &["tool", "Bad Name"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a crate name"),
        "{}",
        stderr(&out)
    );

    let out = new(
        dir.path(),
        &[
            "tool",
            "ok-name",
            "--sdk-path",
            dir.path().to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--sdk-path"), "{}", stderr(&out));
    assert!(!dir.join("ok-name").exists());
}

/// Calling a tool component through its exports with wasmtime's dynamic API: what the
/// host does, without the host's tool registry.
mod tool_component {
    use std::path::Path;
    use wasmtime::component::{Component, Linker, ResourceTable, Val};
    use wasmtime::{Config, Engine, Store};
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

    struct State {
        wasi: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }

    fn field<'a>(record: &'a Val, name: &str) -> &'a Val {
        let Val::Record(fields) = record else {
            panic!("not a record: {record:?}")
        };
        &fields.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn string(v: &Val) -> &str {
        match v {
            Val::String(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    /// The generated word counter: exports `describe` and `call`, imports nothing of the
    /// agent world, counts words, and refuses bad arguments as `invalid-args`.
    pub fn check_word_count(wasm: &Path) {
        let engine = Engine::new(Config::new().wasm_component_model(true)).unwrap();
        let component = Component::from_file(&engine, wasm).unwrap();
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_string()).collect();
        assert!(
            imports
                .iter()
                .all(|i| i.starts_with("wasi:") || i.starts_with("agentflow:agent/tool-types")),
            "imports only WASI and the tool types: {imports:?}"
        );
        let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_string()).collect();
        assert!(
            exports.contains(&"describe".to_string()) && exports.contains(&"call".to_string()),
            "{exports:?}"
        );

        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        linker.instance("agentflow:agent/tool-types@0.1.0").unwrap();
        let mut store = Store::new(
            &engine,
            State {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        let instance = linker.instantiate(&mut store, &component).unwrap();

        let describe = instance.get_func(&mut store, "describe").unwrap();
        let mut out = [Val::Bool(false)];
        describe.call(&mut store, &[], &mut out).unwrap();
        assert_eq!(string(field(&out[0], "name")), "word-count");
        assert_eq!(field(&out[0], "side-effect"), &Val::Enum("none".into()));

        let call = instance.get_func(&mut store, "call").unwrap();
        let mut invoke = |args: &str| {
            let ctx = Val::Record(vec![
                ("idempotency-key".into(), Val::String("k1".into())),
                ("run-id".into(), Val::String("r1".into())),
            ]);
            let mut out = [Val::Bool(false)];
            call.call(&mut store, &[ctx, Val::String(args.into())], &mut out)
                .unwrap();
            let [Val::Result(result)] = out else {
                panic!("not a result: {out:?}")
            };
            result
        };
        let ok = invoke(r#"{"text": "one two  three"}"#).expect("the call succeeds");
        let output: serde_json::Value =
            serde_json::from_str(string(field(ok.as_deref().unwrap(), "output"))).unwrap();
        assert_eq!(output, serde_json::json!({"words": 3, "chars": 14}));

        let err = invoke(r#"{"words": 1}"#).expect_err("unknown field refused");
        let Some(Val::Variant(case, _)) = err.as_deref() else {
            panic!("not a tool-error: {err:?}")
        };
        assert_eq!(case, "invalid-args");
    }
}
