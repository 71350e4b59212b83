//! The Python example agent (`examples/python-agent/app.py`) built into a component by
//! componentize-py, at the version pinned in `examples/python-agent/requirements-build.txt`.
//!
//! The build takes half a minute, so its output is kept under cargo's test tmpdir, named
//! by the hash of what goes into it (app.py, the WIT files, the componentize-py
//! version): an unchanged agent is built once, an edited one again. Shared by the tests
//! (`tests/all/python_agent.rs`) and the bench (`tests/benches/host.rs`), so it names
//! nothing else of the test support.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The agent's directory.
pub fn agent_dir() -> PathBuf {
    repo().join("examples/python-agent")
}

/// The componentize-py version the agent is built with (its pin in
/// `requirements-build.txt`, the file `.ci/run` installs from).
pub fn pinned_version() -> String {
    let file = agent_dir().join("requirements-build.txt");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    text.lines()
        .find_map(|l| l.trim().strip_prefix("componentize-py=="))
        .unwrap_or_else(|| panic!("{} pins no componentize-py==VERSION", file.display()))
        .trim()
        .to_string()
}

/// How to install the pinned componentize-py, for error messages.
fn install_hint(version: &str) -> String {
    format!(
        "install it with `python3 -m venv target/componentize-py && \
         target/componentize-py/bin/pip install componentize-py=={version}` \
         (what .ci/run does), or set COMPONENTIZE_PY to a componentize-py {version} binary"
    )
}

/// The componentize-py to run: `$COMPONENTIZE_PY`, else the venv `.ci/run` makes
/// (`target/componentize-py`), else the one on `PATH`; it must be the pinned version.
pub fn componentize_py() -> Result<PathBuf, String> {
    let version = pinned_version();
    let candidates: Vec<PathBuf> = match std::env::var_os("COMPONENTIZE_PY") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            repo().join("target/componentize-py/bin/componentize-py"),
            PathBuf::from("componentize-py"),
        ],
    };
    let mut found = Vec::new();
    for bin in candidates {
        let Ok(out) = Command::new(&bin).arg("--version").output() else {
            continue;
        };
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if said == format!("componentize-py {version}") {
            return Ok(bin);
        }
        found.push(format!("{} says `{said}`", bin.display()));
    }
    let seen = if found.is_empty() {
        "componentize-py is not installed".to_string()
    } else {
        format!("no componentize-py {version} found ({})", found.join("; "))
    };
    Err(format!("{seen}: {}", install_hint(&version)))
}

/// SHA-256 of everything the component is built from.
fn inputs_hash(version: &str) -> String {
    let mut inputs = format!("componentize-py {version}\n").into_bytes();
    inputs.extend(std::fs::read(agent_dir().join("app.py")).expect("read app.py"));
    let mut wit: Vec<PathBuf> = std::fs::read_dir(repo().join("wit"))
        .expect("read wit/")
        .flatten()
        .map(|e| e.path())
        .collect();
    wit.sort();
    for file in wit {
        inputs.extend(file.file_name().unwrap().as_encoded_bytes());
        inputs.extend(std::fs::read(&file).expect("read a WIT file"));
    }
    agentflow::ledger::blobs::sha256_hex(&inputs)
}

/// The built component: from the build cache under `out_root` when its inputs are
/// unchanged, else built now. `Err` says why it cannot be built (componentize-py
/// missing, the build failing).
pub fn component(out_root: &Path) -> Result<PathBuf, String> {
    // One build at a time in this process; the file appears by rename, whole.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let bin = componentize_py()?;
    let dir = out_root.join("python-agent");
    let out = dir.join(format!("{}.wasm", &inputs_hash(&pinned_version())[..16]));
    if out.exists() {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let built = Command::new(&bin)
        .arg("-d")
        .arg(repo().join("wit"))
        .args(["-w", "agent", "componentize", "app", "-p"])
        .arg(agent_dir())
        .arg("-o")
        .arg(&tmp)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !built.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "componentize-py failed to build examples/python-agent/app.py:\n{}{}",
            String::from_utf8_lossy(&built.stdout),
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    // Builds of earlier versions of app.py (18 MB each) are not needed again.
    for old in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if old.path() != out && old.path().extension().is_some_and(|x| x == "wasm") {
            let _ = std::fs::remove_file(old.path());
        }
    }
    Ok(out)
}
