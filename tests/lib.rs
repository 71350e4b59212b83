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
