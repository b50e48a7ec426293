//! The host's event model: CloudEvents attributes plus the ordering key and
//! topic, and the rules for events that handlers emit (deterministic ids,
//! causation, correlation and trace propagation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Extension attribute carrying the id of the event that caused this one.
pub const CAUSATION_ID: &str = "causationid";
/// Extension attribute carrying the id of the first event of a choreography.
pub const CORRELATION_ID: &str = "correlationid";
/// W3C trace context, as the CloudEvents distributed-tracing extension names it.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state, propagated together with `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// Attributes that the host sets on emitted events and a guest cannot override.
pub const RESERVED_HEADERS: &[&str] = &[CAUSATION_ID, CORRELATION_ID, TRACEPARENT, TRACESTATE];

/// Namespace for emitted-event ids (UUIDv5). Changing it changes every
/// derived id, which would break downstream deduplication: never change it.
const EMIT_NAMESPACE: Uuid = Uuid::from_u128(0x5c1b_7a0e_4d2f_4e8b_9a61_3f0c_d2e4_b817);

/// One event: the CloudEvents 1.0 attributes plus the ordering key and topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// CloudEvents `id`: unique within `source`.
    pub id: String,
    /// CloudEvents `source`, a URI reference.
    pub source: String,
    /// CloudEvents `type`.
    #[serde(rename = "type")]
    pub ty: String,
    /// CloudEvents `time`, RFC 3339.
    pub time: Option<String>,
    /// CloudEvents `datacontenttype`.
    pub content_type: Option<String>,
    /// CloudEvents `dataschema`: the payload's schema or version.
    pub data_schema: Option<String>,
    /// CloudEvents `data`, raw bytes (base64 in JSON).
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
    /// Extension attributes and headers, by lowercase name.
    pub headers: BTreeMap<String, String>,
    /// Ordering (partition) key.
    pub key: Option<String>,
    /// Topic the event belongs to.
    pub topic: String,
}

impl Event {
    /// The correlation id of this event: its `correlationid` attribute, or its
    /// own id when it starts a choreography.
    pub fn correlation_id(&self) -> &str {
        self.headers
            .get(CORRELATION_ID)
            .map(String::as_str)
            .unwrap_or(&self.id)
    }

    /// The attributes (everything but `data`) as a JSON object, for the
    /// API and the harness, which each render `data` their own way.
    pub fn attributes_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("source".into(), self.source.clone().into());
        m.insert("type".into(), self.ty.clone().into());
        m.insert("time".into(), self.time.clone().into());
        m.insert("topic".into(), self.topic.clone().into());
        m.insert("key".into(), self.key.clone().into());
        m.insert("content_type".into(), self.content_type.clone().into());
        m.insert("data_schema".into(), self.data_schema.clone().into());
        m.insert(
            "headers".into(),
            self.headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        );
        m
    }

    /// The `causationid` attribute: the id of the event this one was emitted for.
    pub fn causation_id(&self) -> Option<&str> {
        self.headers.get(CAUSATION_ID).map(String::as_str)
    }
}

/// Serde for byte payloads as base64 strings: compact, and unambiguous
/// whatever the bytes are.
pub mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes bytes as a base64 string.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    /// Deserializes a base64 string into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// The deterministic id of the `index`-th event (0-based) that `handler`
/// emits while handling the event `source_event_id`.
///
/// Reprocessing an event (a retry, a redelivery, a replay after a crash)
/// yields the same ids, so downstream consumers deduplicate the copies.
pub fn emitted_event_id(source_event_id: &str, handler: &str, index: u32) -> String {
    // Length-prefix each part so that ("ab","c") and ("a","bc") differ.
    let mut name = Vec::with_capacity(source_event_id.len() + handler.len() + 24);
    for part in [handler.as_bytes(), source_event_id.as_bytes()] {
        name.extend_from_slice(&(part.len() as u64).to_be_bytes());
        name.extend_from_slice(part);
    }
    name.extend_from_slice(&index.to_be_bytes());
    Uuid::new_v5(&EMIT_NAMESPACE, &name).to_string()
}

/// The `source` attribute of events emitted by `handler`.
pub fn handler_source(handler: &str) -> String {
    format!("sluice://handler/{handler}")
}

/// Headers an emitted event inherits from the event that caused it:
/// causation, correlation and trace context.
pub fn inherited_headers(cause: &Event) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    headers.insert(CAUSATION_ID.to_owned(), cause.id.clone());
    headers.insert(CORRELATION_ID.to_owned(), cause.correlation_id().to_owned());
    for name in [TRACEPARENT, TRACESTATE] {
        if let Some(value) = cause.headers.get(name) {
            headers.insert(name.to_owned(), value.clone());
        }
    }
    headers
}

/// The partition of `key` in a topic of `partitions` partitions: a stable
/// hash (FNV-1a), so a key always lands in the same partition, across
/// restarts and versions.
pub fn partition_for_key(key: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// Is `name` acceptable as a CloudEvents extension attribute or header name?
/// Lowercase ASCII letters and digits, plus `-`, `_` and `.` for transport
/// headers, at most 64 characters.
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// Is `name` usable as a topic name? Letters, digits, `.`, `_` and `-`, at
/// most 200 characters (as Kafka allows, so names carry over).
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Per-key state as the host keeps it and hands it to an invocation:
/// field name to value.
pub type StateMap = BTreeMap<String, Vec<u8>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            source: "/test".into(),
            ty: "t".into(),
            time: None,
            content_type: None,
            data_schema: None,
            data: vec![],
            headers: BTreeMap::new(),
            key: None,
            topic: "orders".into(),
        }
    }

    #[test]
    fn emitted_ids_are_deterministic_and_distinct() {
        let a = emitted_event_id("e1", "inventory", 0);
        assert_eq!(a, emitted_event_id("e1", "inventory", 0));
        assert_ne!(a, emitted_event_id("e1", "inventory", 1));
        assert_ne!(a, emitted_event_id("e1", "notifier", 0));
        assert_ne!(a, emitted_event_id("e2", "inventory", 0));
        // Concatenation ambiguity must not collide.
        assert_ne!(
            emitted_event_id("bc", "a", 0),
            emitted_event_id("c", "ab", 0)
        );
        assert!(Uuid::parse_str(&a).is_ok());
    }

    #[test]
    fn correlation_starts_at_the_root_and_is_inherited() {
        let root = event("root");
        let h = inherited_headers(&root);
        assert_eq!(h[CORRELATION_ID], "root");
        assert_eq!(h[CAUSATION_ID], "root");
        assert!(!h.contains_key(TRACEPARENT));

        let mut child = event("child");
        child.headers = h;
        child.headers.insert(
            TRACEPARENT.into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        let h2 = inherited_headers(&child);
        assert_eq!(h2[CORRELATION_ID], "root");
        assert_eq!(h2[CAUSATION_ID], "child");
        assert_eq!(
            h2[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn partitions_are_stable() {
        assert_eq!(partition_for_key("sku-1", 8), partition_for_key("sku-1", 8));
        assert!(partition_for_key("anything", 3) < 3);
        // Pinned: changing the hash would move keys between partitions.
        assert_eq!(
            partition_for_key("a", 1000),
            (12638187200555641996u64 % 1000) as u32
        );
        assert_eq!(partition_for_key("x", 0), 0);
    }

    #[test]
    fn header_names() {
        assert!(valid_header_name("traceparent"));
        assert!(valid_header_name("x-tenant.id_2"));
        assert!(!valid_header_name(""));
        assert!(!valid_header_name("Upper"));
        assert!(!valid_header_name("sp ace"));
        assert!(!valid_header_name(&"a".repeat(65)));
    }
}
