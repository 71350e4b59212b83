//! What the store of one tool call holds: WASI with only the manifest's grants (a
//! preopened directory, no sockets), the `kv` import's access to the run's kv table
//! (when granted), `wasi:http` with the manifest's allow-list ([`super::http`]), the
//! memory limit and why the call was stopped, if it was.

use super::manifest::{GUEST_DIR, Manifest};
use crate::bindings::tool::{kv, tool_types};
use crate::capabilities::stdio::BoundedCapture;
use crate::ledger::Ledger;
use crate::tools::kv::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::tools::{DbOp, Effect};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Bytes of a tool's stderr kept (its tail goes into a failure's message).
pub const STDERR_BYTES: usize = 16 << 10;

/// The run whose kv table a tool with the `kv` grant reads and writes.
pub struct KvAccess {
    pub ledger: Ledger,
    pub run_id: String,
}

/// The data of one tool call's store.
pub struct ToolState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// `None`: the manifest does not grant `kv` (or the call has no run, as `describe`).
    kv: Option<KvAccess>,
    memory_limit: usize,
    /// Why the host stopped the call (the memory limit), for its error message.
    pub(super) stopped: Option<String>,
    /// Effects of the host's own work for the tool (kv writes), recorded with the call.
    pub(super) host_effects: Vec<Effect>,
    pub(super) stderr: BoundedCapture,
    /// `wasi:http`: the context and the manifest's allow-list (empty: all refused).
    http: super::http::HttpAccess,
}

impl ToolState {
    /// A store's data for a call of a tool with `manifest`; `kv` is honoured only when
    /// the manifest grants it.
    pub fn new(manifest: &Manifest, kv: Option<KvAccess>) -> anyhow::Result<ToolState> {
        let stderr = BoundedCapture::new(STDERR_BYTES);
        let mut wasi = WasiCtxBuilder::new();
        // No environment, arguments, stdin, sockets or name lookups (WASI's default
        // address check refuses every socket address too).
        wasi.stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false);
        if let Some(dir) = &manifest.grants.dir {
            let perms = if manifest.grants.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            wasi.preopened_dir(dir, GUEST_DIR, perms).map_err(|e| {
                anyhow::anyhow!("cannot open the tool's directory {}: {e}", dir.display())
            })?;
        }
        Ok(ToolState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            kv: kv.filter(|_| manifest.grants.kv),
            memory_limit: (manifest.limits.memory_mb as usize) << 20,
            stopped: None,
            host_effects: Vec::new(),
            stderr,
            http: super::http::HttpAccess {
                ctx: Default::default(),
                allow: super::http::AllowList {
                    hosts: manifest.grants.http_hosts.clone(),
                    allow_private: manifest.grants.http_allow_private,
                },
            },
        })
    }

    /// The `wasi:http` state and the resource table it shares with WASI.
    pub(super) fn http_parts(&mut self) -> (&mut super::http::HttpAccess, &mut ResourceTable) {
        (&mut self.http, &mut self.table)
    }
}

impl WasiView for ToolState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime::ResourceLimiter for ToolState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            let msg = format!(
                "memory limit exceeded: the tool asked for {desired} bytes of linear memory, its limit is {} MiB ([limits] memory_mb)",
                self.memory_limit >> 20
            );
            self.stopped = Some(msg.clone());
            return Err(wasmtime::format_err!("{msg}"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

const NOT_GRANTED: &str =
    "kv is not granted to this tool (its manifest needs [grants] kv = true)";

impl kv::Host for ToolState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        // `get` has no error case: an ungranted read stops the call (a tool failure).
        let Some(access) = &self.kv else {
            self.stopped = Some(NOT_GRANTED.into());
            return Err(wasmtime::format_err!("{NOT_GRANTED}"));
        };
        if key.len() > MAX_KEY_BYTES {
            return Ok(None);
        }
        let run_id = access.run_id.clone();
        access
            .ledger
            .write(move |w| w.kv_get(&run_id, &key))
            .await
            .map_err(|e| wasmtime::format_err!("kv read failed: {e}"))
    }

    async fn set(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), String>> {
        let Some(access) = &self.kv else {
            return Ok(Err(NOT_GRANTED.into()));
        };
        if key.len() > MAX_KEY_BYTES {
            return Ok(Err(format!("key longer than {MAX_KEY_BYTES} bytes")));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(format!("value longer than {MAX_VALUE_BYTES} bytes")));
        }
        let run_id = access.run_id.clone();
        let written = access
            .ledger
            .write(move |w| w.kv_put(&run_id, &key, &value))
            .await;
        Ok(match written {
            Ok(()) => {
                self.host_effects.push(Effect::DatabaseMutation {
                    table: "kv".into(),
                    op: DbOp::Upsert,
                });
                Ok(())
            }
            Err(e) => Err(format!("kv write failed: {e}")),
        })
    }
}

impl tool_types::Host for ToolState {}
