//! `agentflow new agent|tool <name>`: a ready-to-build crate for a newcomer — the SDK
//! dependency, `crate-type = ["cdylib"]`, a `src/lib.rs` that compiles with its logic
//! in plain functions and a passing `cargo test`, and for a tool its
//! `agentflow-tool.toml` (granting nothing). The files are the templates in
//! `templates/`, filled in; an existing non-empty directory is never written to.
//!
//! The SDK is found, in this order: `--sdk-path DIR` or `--sdk-git URL`; the checkout
//! the working directory is in (an ancestor with `guest-sdk/Cargo.toml`); the
//! checkout this binary was built from (`cargo install --path host` keeps it). A
//! checkout is depended on by path (relative when the new crate is inside it).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::{Component, Path, PathBuf};

/// What `agentflow new` creates.
#[derive(Subcommand)]
pub enum NewCommand {
    /// An agent crate (world `agent`): `cargo test`, then `agentflow run DIR`.
    Agent(NewArgs),
    /// A tool component crate (world `tool`) with its `agentflow-tool.toml`:
    /// `cargo test`, then `agentflow tools install DIR`.
    Tool(NewArgs),
}

/// The arguments of `agentflow new agent|tool`.
#[derive(Args)]
pub struct NewArgs {
    /// The crate's name: a lowercase letter, then lowercase letters, digits, `-`, `_`.
    pub name: String,
    /// The directory to create (default: ./NAME); refused if it exists and is not empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Depend on the SDK at this directory (a checkout's `guest-sdk`) by path.
    #[arg(long, value_name = "DIR", conflicts_with = "sdk_git")]
    pub sdk_path: Option<PathBuf>,
    /// Depend on the SDK from this git repository (the AgentFlow repository's URL).
    #[arg(long, value_name = "URL")]
    pub sdk_git: Option<String>,
    /// Print what was created as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The kind of crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Agent,
    Tool,
}

/// Where the new crate's SDK dependency points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SdkSource {
    /// A `guest-sdk` directory.
    Path(PathBuf),
    /// A git repository holding the AgentFlow workspace.
    Git(String),
}

/// What was created.
#[derive(Debug, Serialize)]
pub struct Created {
    pub kind: Kind,
    pub name: String,
    pub dir: PathBuf,
    pub files: Vec<String>,
    /// The dependency line written to Cargo.toml.
    pub sdk_dependency: String,
}

const AGENT_CARGO: &str = include_str!("templates/agent.Cargo.toml.tmpl");
const AGENT_LIB: &str = include_str!("templates/agent.lib.rs.tmpl");
const TOOL_CARGO: &str = include_str!("templates/tool.Cargo.toml.tmpl");
const TOOL_LIB: &str = include_str!("templates/tool.lib.rs.tmpl");
const TOOL_MANIFEST: &str = include_str!("templates/agentflow-tool.toml.tmpl");

/// Names cargo refuses for a package, or that shadow a crate every Rust program sees.
const RESERVED: &[&str] = &[
    "std",
    "core",
    "alloc",
    "test",
    "proc_macro",
    "proc-macro",
    "self",
    "super",
    "crate",
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "static",
    "struct",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "gen",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
];

/// Runs `agentflow new`: creates the crate and prints what it did and what to run next.
pub fn run(command: NewCommand) -> anyhow::Result<std::process::ExitCode> {
    let (kind, args) = match command {
        NewCommand::Agent(args) => (Kind::Agent, args),
        NewCommand::Tool(args) => (Kind::Tool, args),
    };
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let sdk = match (args.sdk_path, args.sdk_git) {
        (Some(path), _) => SdkSource::Path(checked_sdk(&path)?),
        (None, Some(url)) => SdkSource::Git(url),
        (None, None) => find_sdk()?,
    };
    let created = create(kind, &args.name, &dir, &sdk)?;
    if args.json {
        crate::cli::out::write(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&created)?
        ))?;
    } else {
        let next = match kind {
            Kind::Agent => "agentflow run . --input \"Why sandbox AI agents?\"",
            Kind::Tool => "agentflow tools install .",
        };
        crate::cli::out::write(format_args!(
            "created {} crate `{}` in {} ({})\nnext: cd {} && cargo test && {next}\n",
            match kind {
                Kind::Agent => "an agent",
                Kind::Tool => "a tool",
            },
            created.name,
            created.dir.display(),
            created.files.join(", "),
            created.dir.display(),
        ))?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Creates the crate `name` of `kind` in `dir` depending on `sdk`.
pub fn create(kind: Kind, name: &str, dir: &Path, sdk: &SdkSource) -> anyhow::Result<Created> {
    check_name(name)?;
    prepare_dir(dir)?;
    let sdk_dependency = dependency_line(sdk, dir)?;
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{Type}}", &type_name(name))
            .replace("{{sdk_dependency}}", &sdk_dependency)
    };
    let mut files: Vec<(&str, String)> = vec![(".gitignore", "/target\n".to_string())];
    match kind {
        Kind::Agent => {
            files.push(("Cargo.toml", fill(AGENT_CARGO)));
            files.push(("src/lib.rs", fill(AGENT_LIB)));
        }
        Kind::Tool => {
            files.push(("Cargo.toml", fill(TOOL_CARGO)));
            files.push(("src/lib.rs", fill(TOOL_LIB)));
            files.push(("agentflow-tool.toml", fill(TOOL_MANIFEST)));
        }
    }
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.join("src").display()))?;
    for (file, text) in &files {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Created {
        kind,
        name: name.to_string(),
        dir: dir.to_path_buf(),
        files: files.iter().map(|(f, _)| f.to_string()).collect(),
        sdk_dependency,
    })
}

/// Refuses a name cargo would refuse, or that is not one word of `[a-z][a-z0-9_-]*`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut bytes = name.bytes();
    let well_formed = bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.len() <= 64;
    if !well_formed {
        bail!(
            "`{name}` is not a crate name: use a lowercase letter, then lowercase letters, \
             digits, `-` or `_` (at most 64)"
        );
    }
    if RESERVED.contains(&name) {
        bail!("`{name}` is reserved in Rust: choose another name");
    }
    Ok(())
}

/// The directory must not exist, or be empty: nothing is ever overwritten.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} exists and is not empty: choose another name or --dir (nothing was written)",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if dir.exists() => bail!(
            "{} exists and is not a directory (nothing was written)",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// `my-tool` → `MyTool`: the tool type's name.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `sdk` if it is the AgentFlow guest SDK (its Cargo.toml names `agentflow-sdk`),
/// made absolute.
fn checked_sdk(sdk: &Path) -> anyhow::Result<PathBuf> {
    let manifest = sdk.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("--sdk-path {}: no Cargo.toml there", sdk.display()))?;
    if !text.contains("name = \"agentflow-sdk\"") {
        bail!(
            "--sdk-path {}: not the AgentFlow guest SDK (its Cargo.toml does not name agentflow-sdk)",
            sdk.display()
        );
    }
    sdk.canonicalize()
        .with_context(|| format!("cannot resolve {}", sdk.display()))
}

/// The SDK of the checkout around the working directory, else of the checkout this
/// binary was built from.
fn find_sdk() -> anyhow::Result<SdkSource> {
    let from_cwd = std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.ancestors().find_map(sdk_in));
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(sdk_in);
    match from_cwd.or(built_from) {
        Some(sdk) => Ok(SdkSource::Path(sdk)),
        None => bail!(
            "cannot find the AgentFlow guest SDK: pass --sdk-path <checkout>/guest-sdk, or \
             --sdk-git <URL of the AgentFlow repository>"
        ),
    }
}

/// `root/guest-sdk`, if it is the SDK.
fn sdk_in(root: &Path) -> Option<PathBuf> {
    checked_sdk(&root.join("guest-sdk")).ok()
}

/// The `agentflow-sdk = …` line of the new crate in `dir`.
fn dependency_line(sdk: &SdkSource, dir: &Path) -> anyhow::Result<String> {
    Ok(match sdk {
        SdkSource::Git(url) => format!("agentflow-sdk = {{ git = {} }}", toml_string(url)),
        SdkSource::Path(sdk) => {
            let path = relative_to_crate(sdk, dir)?.unwrap_or_else(|| sdk.clone());
            let path = path
                .to_str()
                .context("the SDK's path is not UTF-8: pass --sdk-git")?
                .replace('\\', "/");
            format!("agentflow-sdk = {{ path = {} }}", toml_string(&path))
        }
    })
}

/// `sdk` relative to the crate directory `dir` (which may not exist yet) when both are
/// in the same checkout (the SDK's parent directory); `None` otherwise.
fn relative_to_crate(sdk: &Path, dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Some(checkout) = sdk.parent() else {
        return Ok(None);
    };
    let dir = absolute_lexical(dir)?;
    let Ok(inside) = dir.strip_prefix(checkout) else {
        return Ok(None);
    };
    let depth = inside
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let mut path: PathBuf = std::iter::repeat_n("..", depth).collect();
    path.push(sdk.file_name().context("the SDK path has no name")?);
    Ok(Some(path))
}

/// `dir` made absolute without touching the disk past its nearest existing ancestor
/// (which is canonicalized, so it compares with a canonical SDK path).
fn absolute_lexical(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::path::absolute(dir).context("cannot make the crate's path absolute")?;
    let mut missing = Vec::new();
    let mut existing = dir.as_path();
    while !existing.exists() {
        missing.push(existing.file_name().context("bad crate path")?.to_owned());
        existing = existing.parent().context("bad crate path")?;
    }
    let mut out = existing.canonicalize()?;
    for part in missing.into_iter().rev() {
        if part == ".." {
            out.pop();
        } else if part != "." {
            out.push(part);
        }
    }
    Ok(out)
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_crate_names() {
        for ok in ["x", "my-agent", "tool_2"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "My",
            "2x",
            "a b",
            "a/b",
            "..",
            "fn",
            "test",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(type_name("my-tool_x"), "MyToolX");
    }

    #[test]
    fn the_sdk_is_relative_inside_its_checkout_and_absolute_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let sdk = root.join("repo/guest-sdk");
        std::fs::create_dir_all(&sdk).unwrap();
        // The line is TOML: `agentflow-sdk = { path = … }` or `{ git = … }`.
        let value = |line: String, key: &str| -> String {
            let table: toml::Table = line.parse().unwrap();
            table["agentflow-sdk"][key].as_str().unwrap().to_string()
        };
        let inside = dependency_line(&SdkSource::Path(sdk.clone()), &root.join("repo/a/b"));
        assert_eq!(value(inside.unwrap(), "path"), "../../guest-sdk");
        let outside = dependency_line(&SdkSource::Path(sdk.clone()), &root.join("elsewhere"));
        assert_eq!(value(outside.unwrap(), "path"), sdk.to_str().unwrap());
        let url = "https://x/y \"z\"";
        let git = dependency_line(&SdkSource::Git(url.into()), &root);
        assert_eq!(value(git.unwrap(), "git"), url);
    }

    #[test]
    fn a_non_empty_directory_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("taken");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep.txt"), "mine").unwrap();
        let sdk = SdkSource::Git("https://example.com/agentflow".into());
        let err = create(Kind::Tool, "taken", &dir, &sdk).unwrap_err();
        assert!(err.to_string().contains("exists and is not empty"), "{err}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // An empty directory is filled.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let created = create(Kind::Tool, "empty", &empty, &sdk).unwrap();
        assert_eq!(
            created.files,
            [
                ".gitignore",
                "Cargo.toml",
                "src/lib.rs",
                "agentflow-tool.toml"
            ]
        );
        let lib = std::fs::read_to_string(empty.join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("pub struct Empty;") && !lib.contains("{{"),
            "{lib}"
        );
    }
}
