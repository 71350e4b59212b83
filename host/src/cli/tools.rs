//! `agentflow tools install | list | remove`: the tool components installed on a
//! ledger. Installing builds a crate directory first (as `run` does an agent crate),
//! reads the manifest (`--manifest F`, else the crate's `agentflow-tool.toml`, else
//! nothing granted) and hands the component to the library, which checks it against
//! the `tool` world, describes it and stores it content-addressed in the ledger.

use super::args::{Db, Json};
use super::out::outln;
use super::print::json_or;
use agentflow::guest_text::escape_guest_text as esc;
use agentflow::ledger::Ledger;
use agentflow::tool_components::listing::{self, ToolListing};
use agentflow::tool_components::manifest::{MANIFEST_FILE, Manifest};
use agentflow::tool_components::{ToolRuntime, registry};
use agentflow::{HostConfig, table::Table};
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ToolsCommand {
    /// Install a tool component (world `tool`) on the ledger: a .wasm file, or a tool
    /// crate directory built for wasm32-wasip2 first. Runs on the ledger may then be
    /// granted it (--grant NAME or [tools] grant).
    Install {
        /// A tool component (.wasm) or a tool crate directory.
        path: PathBuf,
        /// Install under this name instead of the one the tool gives itself.
        #[arg(long)]
        name: Option<String>,
        /// The tool's manifest (TOML: [grants] dir, read_only, kv, http_hosts; [limits]
        /// memory_mb, timeout_ms; side_effect). Default: the crate's agentflow-tool.toml,
        /// else nothing granted.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
    /// List the tools runs on the ledger can be granted: built-in and installed
    /// components, with effect class, source, version (build hash) and grants.
    ///
    /// With --config, also the MCP servers' tools (each server is started, asked for
    /// its tools and stopped) and, per tool, the config's grants naming it.
    List {
        #[command(flatten)]
        db: Db,
        /// Host configuration (TOML): its `[[tools.mcp]]` servers and its grants.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        out: Json,
    },
    /// Remove an installed tool component (runs that used it keep their build).
    Remove {
        /// The installed tool's name.
        name: String,
        #[command(flatten)]
        db: Db,
    },
}

/// Run a `tools` subcommand.
pub fn run(command: ToolsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ToolsCommand::Install {
            path,
            name,
            manifest,
            db,
            out,
        } => {
            let config = HostConfig::default();
            let cache_dir = config.cache_dir();
            let manifest_path = manifest.or_else(|| {
                let beside = path.join(MANIFEST_FILE);
                (path.is_dir() && beside.is_file()).then_some(beside)
            });
            let manifest = match &manifest_path {
                Some(p) => Manifest::from_file(p)?,
                None => Manifest::default(),
            };
            let wasm = super::build::component(path, &cache_dir)?;
            let bytes = std::fs::read(&wasm)
                .with_context(|| format!("cannot read tool component {}", wasm.display()))?;
            let installed = tokio::runtime::Runtime::new()?.block_on(async {
                let ledger = Ledger::open(&db.path)?;
                let runtime = ToolRuntime::new(Some(cache_dir))?;
                let installed = registry::install(&ledger, &runtime, bytes, name, manifest)
                    .await
                    .with_context(|| format!("cannot install {}", wasm.display()))?;
                if let Err(e) = ledger.checkpoint(std::time::Duration::from_secs(5)) {
                    eprintln!("agentflow: warning: {e}");
                }
                anyhow::Ok(installed)
            })?;
            json_or(out.json, &installed, |i| {
                let mut text = format!(
                    "installed tool `{}` ({}, build sha256:{}), grants: {}\n",
                    esc(&i.name),
                    listing_class(i.info.side_effect),
                    registry::short(&i.hash),
                    esc(&i.manifest.grants_summary())
                );
                if let Some(old) = &i.replaced {
                    text.push_str(&format!(
                        "replaced build sha256:{} (runs that used it keep it)\n",
                        registry::short(old)
                    ));
                }
                text.push_str(&format!(
                    "grant it to a run with --grant {} (or [tools] grant)\n",
                    i.name
                ));
                text
            })
        }
        ToolsCommand::List { db, config, out } => {
            let on_ledger =
                db.path.exists() || agentflow::ledger::db::postgres_url(&db.path).is_some();
            let mut rows = if on_ledger {
                let ledger = Ledger::open(&db.path)?;
                let rows = listing::all(&ledger.reader()?)?;
                drop(ledger);
                rows
            } else {
                listing::builtins()
            };
            if let Some(path) = config {
                let config = HostConfig::from_file(&path)?;
                rows.extend(mcp_rows(&config.tools.mcp)?);
                let grants = agentflow::tools::grants::Grants::new(
                    &config.tools.grant,
                    &config.tools.grants,
                );
                rows = rows.into_iter().map(|r| r.with_grants(&grants)).collect();
            }
            json_or(out.json, &rows, |rows| render(rows))
        }
        ToolsCommand::Remove { name, db } => {
            agentflow::ledger::existing::require(&db.path)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let ledger = Ledger::open(&db.path)?;
                    registry::remove(&ledger, &name).await?;
                    if let Err(e) = ledger.checkpoint(std::time::Duration::from_secs(5)) {
                        eprintln!("agentflow: warning: {e}");
                    }
                    anyhow::Ok(())
                })?;
            outln!("removed tool `{}`", esc(&name))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Rows for the tools of the configured MCP servers (each started, listed, stopped);
/// a server that cannot be listed is reported on stderr and left out.
fn mcp_rows(
    servers: &[agentflow::tools::mcp_config::McpServerConfig],
) -> anyhow::Result<Vec<ToolListing>> {
    if servers.is_empty() {
        return Ok(Vec::new());
    }
    let (rows, errors) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(agentflow::mcp::tool_rows(servers));
    for e in errors {
        eprintln!("agentflow: warning: {}", esc(&e));
    }
    Ok(rows
        .into_iter()
        .map(|r| ToolListing {
            version: r.source.clone(),
            grants: if r.allowed {
                "exposed by the server's `allow`".into()
            } else {
                "not in the server's `allow`: cannot be granted".into()
            },
            name: r.name,
            source: listing::Source::Mcp,
            side_effect: r.side_effect,
            description: r.description,
            undo: None,
            installed_at: None,
            granted_to: Vec::new(),
        })
        .collect())
}

fn listing_class(s: agentflow::tools::SideEffect) -> &'static str {
    agentflow::tool_components::manifest::side_effect_name(s)
}

/// The listing as a table: one line per tool.
fn render(rows: &[ToolListing]) -> String {
    let mut table = Table::new()
        .left("NAME")
        .left("SOURCE")
        .left("EFFECT")
        .left("VERSION")
        .left("GRANTS")
        .left("GRANTED TO")
        .left("DESCRIPTION");
    for r in rows {
        let version = match r.version.strip_prefix("sha256:") {
            Some(h) => format!("sha256:{}", registry::short(h)),
            None => r.version.clone(),
        };
        let mut description: String = r.description.chars().take(60).collect();
        if description.len() < r.description.len() {
            description.push('…');
        }
        table.row([
            esc(&r.name).into_owned(),
            r.source.as_str().to_string(),
            listing_class(r.side_effect).to_string(),
            version,
            esc(&r.grants).into_owned(),
            match r.granted_to.is_empty() {
                true => "-".to_string(),
                false => esc(&r.granted_to.join("; ")).into_owned(),
            },
            esc(&description).into_owned(),
        ]);
    }
    table.render()
}
