//! Paths to the example agents, compiled to wasm32-wasip2 components by this
//! crate's build script (never checked in). The tests live in `all/`.

use std::path::PathBuf;

/// Directory holding `<crate>.wasm` for every example agent.
pub const EXAMPLES_WASM_DIR: &str = env!("AGENTFLOW_EXAMPLES_WASM_DIR");

/// Path of the compiled example agent `name` (crate name, e.g. `hello`).
pub fn example(name: &str) -> PathBuf {
    let path = PathBuf::from(EXAMPLES_WASM_DIR).join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.exists(),
        "example {name} was not built: {}",
        path.display()
    );
    path
}

/// The reference MCP server's version `.ci/run` installs (`npm install --prefix
/// target/mcp-server @modelcontextprotocol/server-everything@<this>`).
pub const MCP_EVERYTHING_VERSION: &str = "2026.8.31";

/// The entry point (`dist/index.js`) of the reference MCP server
/// `@modelcontextprotocol/server-everything`, run with `node <it> stdio`: where
/// `AGENTFLOW_MCP_EVERYTHING` says, else where `.ci/run` installs it. `None` when it is
/// not there.
pub fn mcp_everything() -> Option<PathBuf> {
    let path = match std::env::var_os("AGENTFLOW_MCP_EVERYTHING") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
            "../target/mcp-server/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
        ),
    };
    path.exists().then_some(path)
}

/// How to install the reference MCP server, for messages when it is missing.
pub fn mcp_everything_install_hint() -> String {
    format!(
        "the reference MCP server is not installed: run `npm install --prefix target/mcp-server \
         @modelcontextprotocol/server-everything@{MCP_EVERYTHING_VERSION}` in the repository \
         (`.ci/run` does), or point AGENTFLOW_MCP_EVERYTHING at its dist/index.js"
    )
}
