//! The pipeline's side of the handler registry: compiling components off
//! the async threads, seeding the registry from the configuration, and
//! uploading and activating versions (hot swap).

use std::sync::Arc;

use super::{Error, Pipeline, Result};
use crate::config::HandlerConfig;
use crate::runtime::{self, LoadedComponent, Runtime};
use crate::store::{self, ManagedBy, Store};

impl Pipeline {
    /// Validates and compiles `bytes` and stores them as the next version of
    /// `handler` (or finds the identical version already stored); with
    /// `activate`, hot-swaps to it.
    pub async fn upload(
        &self,
        handler: &str,
        bytes: Vec<u8>,
        activate: bool,
    ) -> Result<(store::VersionInfo, bool)> {
        self.check_known(handler)?;
        let (component, bytes) = compile(&self.parts.runtime, handler, bytes).await?;
        let _change = self.changes.lock().await;
        let (info, created) = self
            .parts
            .store
            .add_version(handler, component.digest(), &bytes)
            .await?;
        if activate {
            self.swap(handler, component).await?;
            self.parts.store.activate(handler, info.version).await?;
        }
        Ok((info, created))
    }

    /// Hot-swaps `handler` to its stored version `version` (rollback is
    /// activating an older one).
    pub async fn activate_version(
        &self,
        handler: &str,
        version: i64,
    ) -> Result<store::HandlerRecord> {
        self.check_known(handler)?;
        let component = self.load_version(handler, version).await?;
        let _change = self.changes.lock().await;
        self.swap(handler, component).await?;
        Ok(self.parts.store.activate(handler, version).await?)
    }

    /// Loads (from the cache, or compiles) a stored version.
    pub(super) async fn load_version(
        &self,
        handler: &str,
        version: i64,
    ) -> Result<Arc<LoadedComponent>> {
        let bytes = self
            .parts
            .store
            .component(handler, version)
            .await?
            .ok_or_else(|| {
                store::Error::NotFound(format!("version {version} of handler {handler}"))
            })?;
        Ok(compile(&self.parts.runtime, handler, bytes).await?.0)
    }
}

/// Compiles (or finds in the cache) a component off the async threads.
pub(super) async fn compile(
    runtime: &Arc<Runtime>,
    handler: &str,
    bytes: Vec<u8>,
) -> Result<(Arc<LoadedComponent>, Vec<u8>)> {
    let rt = runtime.clone();
    tokio::task::spawn_blocking(move || rt.load(&bytes).map(|c| (c, bytes)))
        .await
        .map_err(|e| Error::Component {
            handler: handler.to_owned(),
            source: runtime::Error::Engine(format!("compile task failed: {e}")),
        })?
        .map_err(|source| Error::Component {
            handler: handler.to_owned(),
            source,
        })
}

/// Registers a configured handler (and its component file, if it names one)
/// in the registry, and decides which version runs: a component file new to
/// the registry is activated (the operator changed the file); otherwise the
/// registry's active version runs, so activations made through the API
/// survive a restart. `None`: no version yet (one can be uploaded).
pub(super) async fn seed_registry(
    handler: &HandlerConfig,
    store: &Arc<dyn Store>,
    runtime: &Arc<Runtime>,
) -> Result<Option<Arc<LoadedComponent>>> {
    let config = serde_json::to_value(handler)
        .map_err(|e| store::Error::Corrupt(format!("handler {} config: {e}", handler.name)))?;
    let record = store
        .put_handler(&handler.name, &config, ManagedBy::Config)
        .await?;
    let stored = |version: i64| async move {
        let bytes = store
            .component(&handler.name, version)
            .await?
            .ok_or_else(|| {
                store::Error::NotFound(format!("version {version} of handler {}", handler.name))
            })?;
        Ok::<_, Error>(compile(runtime, &handler.name, bytes).await?.0)
    };
    let Some(path) = &handler.component else {
        return match record.active_version {
            Some(active) => Ok(Some(stored(active).await?)),
            None => Ok(None),
        };
    };
    let bytes = std::fs::read(path).map_err(|source| Error::Component {
        handler: handler.name.clone(),
        source: runtime::Error::Read {
            path: path.clone(),
            source,
        },
    })?;
    let (from_file, bytes) = compile(runtime, &handler.name, bytes).await?;
    let (info, created) = store
        .add_version(&handler.name, from_file.digest(), &bytes)
        .await?;
    match record.active_version {
        Some(active) if !created && active != info.version => Ok(Some(stored(active).await?)),
        Some(active) if active == info.version => Ok(Some(from_file)),
        _ => {
            store.activate(&handler.name, info.version).await?;
            Ok(Some(from_file))
        }
    }
}
