//! The CloudEvents Kafka protocol binding, binary content mode: the event's
//! data is the record value, its attributes are `ce_*` headers, its
//! `datacontenttype` is the `content-type` header, and the record key is the
//! partition key. Events we produce are readable by CloudEvents tooling, and
//! events from any producer that follows the binding are consumed as sent.
//!
//! Records that do not conform get a documented fallback instead of an
//! error (a consumer must never crash on a record it did not produce):
//!
//! | missing | fallback |
//! |---|---|
//! | `ce_id` | `kafka:{topic}:{partition}:{offset}`, stable across redeliveries |
//! | `ce_type` | `kafka.record` |
//! | `ce_source` | `kafka://{topic}` |
//! | `ce_time` | the record's timestamp, RFC 3339, if it has one |
//! | a UTF-8 key | the key's bytes as lowercase hex, prefixed `hex:` |
//!
//! Headers that are not `ce_*` and not `content-type` are kept as event
//! headers (lowercased) when their names are valid header names, and
//! dropped otherwise. Header values that are not UTF-8 are dropped too.
//! Extension attributes of our events whose names are valid CloudEvents
//! attribute names (lowercase letters and digits) travel as `ce_<name>`;
//! other headers travel under their own names.

use std::collections::BTreeMap;

use crate::event::{Event, valid_header_name};

/// The CloudEvents version we produce.
pub const SPEC_VERSION: &str = "1.0";

/// A Kafka record in neutral form: what a producer sends and a consumer
/// receives, without a client library's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Record key: the partition key.
    pub key: Option<Vec<u8>>,
    /// Record value: the event's data.
    pub value: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Where a consumed record was in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// The record's timestamp, ms since the epoch, if it has one.
    pub timestamp_ms: Option<i64>,
}

/// Is `name` a valid CloudEvents attribute name (lowercase ASCII letters and
/// digits)?
fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Encodes an event as a binary-mode record.
pub fn encode(event: &Event) -> Record {
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        ("ce_specversion".into(), SPEC_VERSION.into()),
        ("ce_id".into(), event.id.clone().into_bytes()),
        ("ce_source".into(), event.source.clone().into_bytes()),
        ("ce_type".into(), event.ty.clone().into_bytes()),
    ];
    if let Some(time) = &event.time {
        headers.push(("ce_time".into(), time.clone().into_bytes()));
    }
    if let Some(schema) = &event.data_schema {
        headers.push(("ce_dataschema".into(), schema.clone().into_bytes()));
    }
    if let Some(ct) = &event.content_type {
        headers.push(("content-type".into(), ct.clone().into_bytes()));
    }
    for (name, value) in &event.headers {
        let header = if is_attribute_name(name) && !is_core_attribute(name) {
            format!("ce_{name}")
        } else {
            name.clone()
        };
        headers.push((header, value.clone().into_bytes()));
    }
    Record {
        topic: event.topic.clone(),
        key: event.key.as_ref().map(|k| k.clone().into_bytes()),
        value: event.data.clone(),
        headers,
    }
}

/// Attributes the binding maps to fields of [`Event`], never to headers.
fn is_core_attribute(name: &str) -> bool {
    matches!(
        name,
        "specversion" | "id" | "source" | "type" | "time" | "dataschema" | "datacontenttype"
    )
}

/// Decodes a consumed record, applying the fallbacks of the module docs.
pub fn decode(record: Record, at: Position) -> Event {
    let mut attributes: BTreeMap<String, String> = BTreeMap::new();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut content_type = None;
    for (name, value) in record.headers {
        let Ok(value) = String::from_utf8(value) else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        if let Some(attribute) = name.strip_prefix("ce_") {
            attributes.insert(attribute.to_owned(), value);
        } else if name == "content-type" {
            content_type = Some(value);
        } else if valid_header_name(&name) {
            headers.insert(name, value);
        }
    }
    let mut take = |name: &str| attributes.remove(name).filter(|v| !v.is_empty());
    let id = take("id")
        .unwrap_or_else(|| format!("kafka:{}:{}:{}", record.topic, at.partition, at.offset));
    let source = take("source").unwrap_or_else(|| format!("kafka://{}", record.topic));
    let ty = take("type").unwrap_or_else(|| "kafka.record".into());
    let time = take("time").or_else(|| {
        at.timestamp_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    });
    let data_schema = take("dataschema");
    // Structured-mode attribute names that might arrive as headers anyway.
    let content_type = content_type.or_else(|| take("datacontenttype"));
    attributes.remove("specversion");
    for (name, value) in attributes {
        if valid_header_name(&name) {
            headers.entry(name).or_insert(value);
        }
    }
    let key = record.key.map(|k| match String::from_utf8(k) {
        Ok(k) => k,
        Err(e) => format!("hex:{}", hex::encode(e.into_bytes())),
    });
    Event {
        id,
        source,
        ty,
        time,
        content_type,
        data_schema,
        data: record.value,
        headers,
        key,
        topic: record.topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            id: "e1".into(),
            source: "/orders".into(),
            ty: "order.placed".into(),
            time: Some("2026-11-29T10:00:00.000Z".into()),
            content_type: Some("application/json".into()),
            data_schema: Some("https://example.com/order/v2".into()),
            data: br#"{"sku":"A"}"#.to_vec(),
            headers: BTreeMap::from([
                ("correlationid".into(), "c1".into()),
                ("traceparent".into(), "00-abc-def-01".into()),
                ("x-tenant".into(), "t9".into()),
            ]),
            key: Some("A".into()),
            topic: "orders".into(),
        }
    }

    fn at(offset: i64) -> Position {
        Position {
            partition: 2,
            offset,
            timestamp_ms: Some(1_795_000_000_000),
        }
    }

    #[test]
    fn round_trip_keeps_every_attribute() {
        let event = sample();
        let record = encode(&event);
        let names: Vec<&str> = record.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"ce_specversion") && names.contains(&"ce_correlationid"));
        assert!(
            names.contains(&"x-tenant"),
            "not a CloudEvents name: kept as is"
        );
        assert!(names.contains(&"content-type"));
        assert_eq!(record.key.as_deref(), Some(&b"A"[..]));
        assert_eq!(decode(record, at(5)), event);
    }

    #[test]
    fn foreign_records_get_the_documented_fallbacks() {
        let record = Record {
            topic: "raw".into(),
            key: Some(vec![0xff, 0x00]),
            value: b"plain".to_vec(),
            headers: vec![
                ("Trace-Id".into(), b"t".to_vec()),
                ("bad header!".into(), b"x".to_vec()),
                ("binary".into(), vec![0xff]),
            ],
        };
        let e = decode(record, at(42));
        assert_eq!(e.id, "kafka:raw:2:42");
        assert_eq!(e.ty, "kafka.record");
        assert_eq!(e.source, "kafka://raw");
        assert_eq!(e.time.as_deref(), Some("2026-11-18T11:06:40.000Z"));
        assert_eq!(e.key.as_deref(), Some("hex:ff00"));
        assert_eq!(e.data, b"plain");
        assert_eq!(
            e.headers,
            BTreeMap::from([("trace-id".to_string(), "t".to_string())])
        );
        // The same record again: the same id, so idempotency holds.
        let again = decode(
            Record {
                topic: "raw".into(),
                key: None,
                value: vec![],
                headers: vec![],
            },
            at(42),
        );
        assert_eq!(again.id, e.id);
    }

    #[test]
    fn a_conforming_foreign_producer_is_read_as_sent() {
        let record = Record {
            topic: "t".into(),
            key: None,
            value: b"{}".to_vec(),
            headers: vec![
                ("ce_specversion".into(), b"1.0".to_vec()),
                ("ce_id".into(), b"abc".to_vec()),
                ("ce_source".into(), b"urn:x".to_vec()),
                ("ce_type".into(), b"com.example.ping".to_vec()),
                ("ce_partitionkey".into(), b"k".to_vec()),
                ("content-type".into(), b"application/json".to_vec()),
            ],
        };
        let e = decode(record, at(0));
        assert_eq!(
            (e.id.as_str(), e.source.as_str(), e.ty.as_str()),
            ("abc", "urn:x", "com.example.ping")
        );
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
        assert_eq!(e.headers["partitionkey"], "k");
        assert_eq!(e.key, None);
    }
}
