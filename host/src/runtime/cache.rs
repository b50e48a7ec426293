//! Compile cache: components are compiled once per content digest. Compiled
//! code is kept in memory for the life of the process and, when a cache
//! directory is configured, on disk so that a restart does not recompile.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::LoadedComponent;

/// Hex SHA-256 of `bytes`: the identity of a component.
pub(crate) fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) struct ComponentCache {
    /// `<cache_dir>/<engine hash>`: compiled artifacts only load into an
    /// engine with the same version and settings, so each gets its own folder.
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<String, Arc<LoadedComponent>>>,
}

impl ComponentCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_dir = format!("wasmtime-{:016x}", hasher.finish());
        Self {
            dir: dir.map(|d| d.join(engine_dir)),
            memory: Mutex::default(),
        }
    }

    pub(crate) fn get_memory(&self, digest: &str) -> Option<Arc<LoadedComponent>> {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }

    pub(crate) fn put_memory(&self, loaded: Arc<LoadedComponent>) {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(loaded.digest.clone(), loaded);
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{digest}.cwasm")))
    }

    /// A previously compiled artifact, if one is on disk and loads. A file
    /// that does not load (truncated, other engine) is ignored and
    /// recompiled over.
    #[allow(unsafe_code)]
    pub(crate) fn get_disk(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest)?;
        // Read into memory rather than `deserialize_file`, which maps the
        // file: a file truncated under a mapping kills the process with
        // SIGBUS, and the host must survive whatever happens to its cache.
        let bytes = std::fs::read(&path).ok()?;
        // SAFETY: the bytes are native code that this process wrote into the
        // configured cache directory, which the operator must keep trusted
        // (documented on `RuntimeConfig::cache_dir`); wasmtime checks that
        // they were compiled by a compatible engine and are well-formed.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(component) => {
                tracing::debug!(%digest, path = %path.display(), "compiled component loaded from cache");
                Some(component)
            }
            Err(error) => {
                tracing::warn!(%digest, path = %path.display(), "ignoring unusable cached component: {error:#}");
                None
            }
        }
    }

    /// Writes the compiled artifact atomically (temp file, then rename), so
    /// that a crash mid-write never leaves a truncated file under the real
    /// name. Failures only cost a recompile later, so they are logged.
    pub(crate) fn put_disk(&self, digest: &str, component: &Component) {
        let Some(path) = self.path(digest) else {
            return;
        };
        let result = (|| -> anyhow::Result<()> {
            let bytes = component
                .serialize()
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let dir = path.parent().unwrap_or(&path);
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".{digest}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        })();
        if let Err(error) = result {
            tracing::warn!(%digest, path = %path.display(), "cannot write the compile cache: {error:#}");
        }
    }
}
