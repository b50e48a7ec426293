//! Per-handler resource limits and the wasmtime resource limiter that
//! enforces the memory part of them.

use serde::{Deserialize, Serialize};

/// What one invocation of a handler may use. Every field has a default that
/// suits small handlers on one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget for one call of `handle`, in milliseconds. The guest
    /// is interrupted when it runs past it (outcome `timeout`).
    pub timeout_ms: u64,
    /// Maximum size of each linear memory of the guest, in bytes. Growth past
    /// it stops the guest (outcome `limit`).
    pub max_memory_bytes: u64,
    /// Maximum number of events one invocation may emit.
    pub max_emits: u32,
    /// Maximum total payload bytes one invocation may emit.
    pub max_emit_bytes: u64,
    /// Maximum size of one state value, in bytes.
    pub max_state_value_bytes: u64,
    /// Maximum total size of the state of one key (names plus values).
    pub max_state_bytes_per_key: u64,
    /// Maximum number of log lines kept per invocation; the rest are counted
    /// and dropped.
    pub max_log_lines: u32,
    /// Maximum bytes of stdout and stderr kept per invocation (each); the
    /// rest is dropped.
    pub max_stdio_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: 5_000,
            max_memory_bytes: 64 << 20,
            max_emits: 100,
            max_emit_bytes: 1 << 20,
            max_state_value_bytes: 256 << 10,
            max_state_bytes_per_key: 1 << 20,
            max_log_lines: 200,
            max_stdio_bytes: 64 << 10,
        }
    }
}

/// Which limit an invocation hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitKind {
    /// Linear memory or table growth past `max_memory_bytes`.
    Memory,
    /// More emitted events than `max_emits`.
    EmitCount,
    /// More emitted payload bytes than `max_emit_bytes`.
    EmitBytes,
    /// The runtime's pool of instances is exhausted (too many concurrent
    /// invocations for the configured pool size).
    Concurrency,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::Memory => "memory",
            LimitKind::EmitCount => "emit-count",
            LimitKind::EmitBytes => "emit-bytes",
            LimitKind::Concurrency => "concurrency",
        })
    }
}

/// The error a host function or the limiter raises to stop a guest that went
/// past a limit. It travels through wasmtime as the trap's cause, so the
/// runtime can classify the outcome exactly.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind} limit exceeded: {detail}")]
pub struct LimitExceeded {
    /// The limit that was hit.
    pub kind: LimitKind,
    /// Human-readable detail: the limit and the attempted value.
    pub detail: String,
}

/// Enforces the memory and table limits of one store.
pub(crate) struct MemoryLimiter {
    pub(crate) max_memory_bytes: usize,
    pub(crate) max_table_elements: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            return Err(wasmtime::Error::new(LimitExceeded {
                kind: LimitKind::Memory,
                detail: format!(
                    "linear memory would grow from {current} to {desired} bytes, limit is {}",
                    self.max_memory_bytes
                ),
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            return Err(wasmtime::Error::new(LimitExceeded {
                kind: LimitKind::Memory,
                detail: format!(
                    "table would grow from {current} to {desired} elements, limit is {}",
                    self.max_table_elements
                ),
            }));
        }
        Ok(true)
    }
}
