//! `sluice.toml`: everything `sluice run` needs, in one file. Every field has
//! a default that works on one machine, so an empty file (or none) starts an
//! embedded host under `./.sluice`.
//!
//! ```toml
//! [store]
//! url = "sqlite://.sluice/sluice.db"
//!
//! [admin]
//! addr = "127.0.0.1:8080"
//!
//! [[handlers]]
//! name = "inventory"
//! component = "target/wasm32-wasip2/release/inventory.wasm"
//! topics = ["orders", "stock"]
//! types = ["order.placed", "stock.received"]
//! retry = { max_attempts = 5, initial_backoff_ms = 100 }
//! limits = { timeout_ms = 2000 }
//! ```
//!
//! Relative paths are relative to the working directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backbone::BackboneConfig;
use crate::event::valid_topic_name;
use crate::runtime::{Limits, RuntimeConfig};
use crate::store::Synchronous;

/// Errors of loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The whole configuration of a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where durable state lives.
    pub store: StoreConfig,
    /// Where events are consumed from and published to (`[broker]`, its
    /// `kind` naming the backbone).
    pub broker: BackboneConfig,
    /// The admin HTTP server.
    pub admin: AdminConfig,
    /// The WebAssembly runtime shared by all handlers.
    pub runtime: RuntimeConfig,
    /// Dispatch, batching and relay tuning.
    pub pipeline: PipelineConfig,
    /// Topics to create at start-up with a given partition count (others
    /// are created on first use with `pipeline.default_partitions`).
    pub topics: Vec<TopicConfig>,
    /// The handlers to run.
    pub handlers: Vec<HandlerConfig>,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Database URL: `sqlite://PATH` (created if missing) or
    /// `postgres://USER@HOST:PORT/DATABASE` (the database must exist; the
    /// schema is migrated at start-up).
    pub url: String,
    /// SQLite durability: `full` (default) fsyncs every commit, so a
    /// committed event survives a power loss; `normal` fsyncs only at WAL
    /// checkpoints: faster, safe against a crash of the process, but a power
    /// loss can lose the last commits. PostgreSQL ignores it (its own
    /// `synchronous_commit` setting applies).
    pub synchronous: Synchronous,
    /// Size of the connection pool.
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://.sluice/sluice.db".into(),
            synchronous: Synchronous::Full,
            max_connections: 4,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address of the admin HTTP API.
    pub addr: SocketAddr,
    /// Largest accepted request body for event appends, in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted component upload, in bytes; enforced while the body
    /// streams in.
    pub max_upload_bytes: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 16 << 20,
            max_upload_bytes: 50 << 20,
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Partitions of topics created on first use.
    pub default_partitions: u32,
    /// Most events one handler reads from the log at a time.
    pub fetch_batch: u32,
    /// Most events one handler holds in memory (read but not committed).
    pub max_in_flight: usize,
    /// Most outcomes in one group commit.
    pub max_batch: usize,
    /// Most outbox rows the relay moves per transaction.
    pub relay_batch: u32,
    /// Fallback poll interval, in milliseconds, for work that arrives
    /// without a wake-up (another process writing the database).
    pub poll_interval_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            default_partitions: 4,
            fetch_batch: 512,
            max_in_flight: 4096,
            max_batch: 1024,
            relay_batch: 1024,
            poll_interval_ms: 500,
        }
    }
}

/// `[[topics]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Number of partitions (fixed once the topic exists).
    pub partitions: u32,
}

/// What happens to a key after one of its events is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterMode {
    /// The key's later events go on being processed.
    #[default]
    Continue,
    /// The key's later events are held back, in order, until the entry is
    /// redriven or discarded; other keys go on.
    Park,
}

/// Where a handler without a stored position starts reading a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// From the first event of the log.
    #[default]
    Earliest,
    /// From the next event appended.
    Latest,
}

/// Retry policy of a handler: exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; then the event is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the second attempt, in milliseconds.
    pub initial_backoff_ms: u64,
    /// Upper bound of the delay, in milliseconds.
    pub max_backoff_ms: u64,
    /// Growth of the delay from one attempt to the next.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `next` (2 for the first retry): exponential,
    /// capped, with "equal jitter" (half fixed, half random) so that
    /// events failing together do not retry in lockstep.
    pub fn backoff(&self, next: u32) -> std::time::Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(i32::try_from(next.saturating_sub(2)).unwrap_or(i32::MAX));
        let base = (self.initial_backoff_ms as f64 * exp).min(self.max_backoff_ms as f64);
        let half = base / 2.0;
        let jitter = rand::random::<f64>() * half;
        std::time::Duration::from_millis((half + jitter) as u64)
    }
}

/// `[[handlers]]`: one handler and its subscriptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// Unique name; part of emitted ids and of every record.
    pub name: String,
    /// Path of the component (`.wasm`), registered as a version at start
    /// (a file new to the registry is activated). Leave it out to run the
    /// registry's active version, or to wait for one to be uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<PathBuf>,
    /// Topics it consumes, each from its own position.
    pub topics: Vec<String>,
    /// Event types it receives; empty means all. A trailing `*` matches a
    /// prefix (`order.*`).
    #[serde(default)]
    pub types: Vec<String>,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Resource limits of one invocation.
    #[serde(default)]
    pub limits: Limits,
    /// Most events of this handler running at once (different keys).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// What a dead-lettered event does to its key.
    #[serde(default)]
    pub on_dead_letter: DeadLetterMode,
    /// Where to start on a topic without a stored position.
    #[serde(default)]
    pub start_from: StartFrom,
}

fn default_concurrency() -> usize {
    16
}

impl HandlerConfig {
    /// Checks what serde cannot: the name, topics and ranges. The message
    /// names the handler and the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let name = &self.name;
        if !valid_handler_name(name) {
            return Err(format!(
                "handler name {name:?} is not valid: lowercase letters, digits, '-' and '_', starting with a letter, at most 64"
            ));
        }
        if self.topics.is_empty() {
            return Err(format!("handler {name:?} subscribes to no topic"));
        }
        if let Some(t) = self.topics.iter().find(|t| !valid_topic_name(t)) {
            return Err(format!("handler {name:?}: topic name {t:?} is not valid"));
        }
        if self.types.iter().any(|t| t.trim().is_empty()) {
            return Err(format!("handler {name:?}: an event type filter is empty"));
        }
        if self.retry.max_attempts == 0 {
            return Err(format!(
                "handler {name:?}: retry.max_attempts must be at least 1"
            ));
        }
        if !(self.retry.multiplier.is_finite() && self.retry.multiplier >= 1.0) {
            return Err(format!(
                "handler {name:?}: retry.multiplier must be a number of at least 1"
            ));
        }
        if self.concurrency == 0 {
            return Err(format!("handler {name:?}: concurrency must be at least 1"));
        }
        Ok(())
    }

    /// Does this handler receive events of type `ty`?
    pub fn accepts(&self, ty: &str) -> bool {
        self.types.is_empty()
            || self
                .types
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => ty.starts_with(prefix),
                    None => pattern == ty,
                })
    }
}

/// Is `name` usable as a handler name? Lowercase letters, digits, `-` and
/// `_`, starting with a letter, at most 64 characters.
pub fn valid_handler_name(name: &str) -> bool {
    name.len() <= 64
        && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

impl Config {
    /// Parses TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks what serde cannot: names, references and ranges.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::Invalid(m));
        if self.pipeline.default_partitions == 0 {
            return invalid("pipeline.default_partitions must be at least 1".into());
        }
        for t in &self.topics {
            if !valid_topic_name(&t.name) {
                return invalid(format!("topic name {:?} is not valid", t.name));
            }
            if t.partitions == 0 {
                return invalid(format!("topic {:?} needs at least one partition", t.name));
            }
        }
        let mut names = std::collections::HashSet::new();
        for h in &self.handlers {
            h.validate().map_err(Error::Invalid)?;
            if !names.insert(&h.name) {
                return invalid(format!("handler {:?} is defined twice", h.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deployment files carry configurations this version accepts:
    /// `deploy/sluice.toml` (compose) and the Kubernetes ConfigMap, which
    /// must say the same.
    #[test]
    fn deployment_configs_parse_and_agree() {
        let compose = include_str!("../../deploy/sluice.toml");
        let configmap = include_str!("../../deploy/k8s/configmap.yaml");
        let embedded: String = configmap
            .split_once("sluice.toml: |\n")
            .map(|(_, rest)| rest)
            .unwrap_or_default()
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let a = Config::parse(compose, Path::new("deploy/sluice.toml")).unwrap();
        let b = Config::parse(&embedded, Path::new("configmap.yaml")).unwrap();
        assert_eq!(a.broker.kind(), "kafka");
        assert!(a.store.url.starts_with("postgres://"));
        assert_eq!(a.handlers.len(), 2);
        assert_eq!(a.handlers, b.handlers);
        assert_eq!(a.broker, b.broker);
        assert_eq!(a.store.url, b.store.url);
    }

    #[test]
    fn empty_config_has_working_defaults() {
        let c = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(c.store.url, "sqlite://.sluice/sluice.db");
        assert_eq!(c.admin.addr.to_string(), "127.0.0.1:8080");
        assert!(c.handlers.is_empty());
    }

    #[test]
    fn full_config_parses_and_unknown_fields_are_refused() {
        let text = r#"
            [store]
            url = "sqlite://x.db"
            synchronous = "normal"
            [[topics]]
            name = "orders"
            partitions = 8
            [[handlers]]
            name = "inventory"
            component = "inventory.wasm"
            topics = ["orders"]
            types = ["order.*"]
            retry = { max_attempts = 3 }
            limits = { timeout_ms = 100 }
            on_dead_letter = "park"
        "#;
        let c = Config::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(c.store.synchronous, Synchronous::Normal);
        let h = &c.handlers[0];
        assert_eq!(h.retry.max_attempts, 3);
        assert_eq!(h.retry.initial_backoff_ms, 200);
        assert_eq!(h.limits.timeout_ms, 100);
        assert_eq!(h.on_dead_letter, DeadLetterMode::Park);
        assert!(h.accepts("order.placed") && !h.accepts("stock.received"));

        let err = Config::parse("[store]\nurl = 1\nbogus = 2", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("x.toml"), "{err}");
        let err = Config::parse("[admin]\nport = 1", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("unknown field `port`"), "{err}");
    }

    #[test]
    fn validation_names_the_problem() {
        let base = |extra: &str| {
            format!("[[handlers]]\nname = \"h\"\ncomponent = \"h.wasm\"\ntopics = [\"t\"]\n{extra}")
        };
        assert!(Config::parse(&base(""), Path::new("x")).is_ok());
        let err = Config::parse(&base("retry = { max_attempts = 0 }"), Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("max_attempts"), "{err}");
        let twice = format!("{}\n{}", base(""), base(""));
        assert!(
            Config::parse(&twice, Path::new("x"))
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let bad = "[[handlers]]\nname = \"Bad Name\"\ncomponent = \"h.wasm\"\ntopics = [\"t\"]";
        assert!(Config::parse(bad, Path::new("x")).is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            multiplier: 2.0,
        };
        for _ in 0..50 {
            let d2 = p.backoff(2).as_millis();
            assert!((50..=100).contains(&d2), "{d2}");
            let d4 = p.backoff(4).as_millis();
            assert!((200..=400).contains(&d4), "{d4}");
            let d9 = p.backoff(9).as_millis();
            assert!((500..=1000).contains(&d9), "{d9}");
        }
    }
}
