//! On-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes tens to hundreds of milliseconds (seconds
//! for large guests); loading a serialized one takes about a millisecond. Entries are
//! keyed by the SHA-256 of the component bytes plus the engine's compatibility hash
//! (wasmtime version, target, compilation settings), so a host upgrade or a config
//! change never loads an incompatible artifact. Writes go to a temporary file and are
//! renamed into place, so a crash never leaves a torn entry.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of serialized components.
pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

impl ComponentCache {
    /// A cache in `dir` for components compiled by `engine`; `None` disables caching.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = dir.and_then(|d| match std::fs::create_dir_all(&d) {
            Ok(()) => Some(d),
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "component cache disabled");
                None
            }
        });
        ComponentCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    fn entry(&self, hash: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.engine_key)))
    }

    /// Load the component with content hash `hash`, compiling `bytes` on a miss.
    /// Returns the component and whether it came from the cache.
    pub fn load(
        &self,
        engine: &Engine,
        hash: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        if let Some(path) = self.entry(hash)
            && path.exists()
        {
            // SAFETY: `deserialize_file` trusts the file to be a component serialized
            // by a compatible wasmtime. The cache directory is written only by this
            // host (`store` below), the file name carries the engine compatibility
            // hash, and wasmtime itself checks the header's version and settings.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "dropping bad cache entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Some(path) = self.entry(hash)
            && let Err(e) = store(&component, &path)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not write component cache");
        }
        Ok((component, false))
    }
}

fn store(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
