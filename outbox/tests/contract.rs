//! The `event` column is exactly the JSON of `sluice::event::Event` (no
//! database needed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice::event::Event;
use sluice_outbox::{Outbox, OutboxEvent};

#[test]
fn the_event_column_is_the_hosts_event_json() {
    let outbox = Outbox::new("billing").unwrap();
    let event = OutboxEvent::new("invoices", "invoice.issued")
        .with_key("inv-1")
        .with_data(vec![0, 159, 146, 150], "application/octet-stream")
        .with_header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
    let row = outbox.row(&event).unwrap();
    assert_eq!(row.event_id, event.id);
    assert_eq!(row.topic, "invoices");
    assert_eq!(row.key.as_deref(), Some("inv-1"));
    assert_eq!(row.handler, "app:billing");

    let json: serde_json::Value = serde_json::from_str(&row.event).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected_keys = [
        "id",
        "source",
        "type",
        "time",
        "content_type",
        "data_schema",
        "data",
        "headers",
        "key",
        "topic",
    ];
    expected_keys.sort_unstable();
    assert_eq!(keys, expected_keys);
    assert_eq!(json["data"], "AJ+Slg==");
    assert_eq!(json["data_schema"], serde_json::Value::Null);
    assert_eq!(json["source"], "sluice://app/billing");

    let parsed: Event = serde_json::from_str(&row.event).unwrap();
    assert_eq!(parsed.id, event.id);
    assert_eq!(parsed.ty, "invoice.issued");
    assert_eq!(parsed.data, vec![0, 159, 146, 150]);
    assert_eq!(parsed.headers, event.headers);
    assert_eq!(parsed.time, event.time);
    // Re-encoding with the host's serializer gives the same text.
    assert_eq!(serde_json::to_string(&parsed).unwrap(), row.event);
}
