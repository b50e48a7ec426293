//! # inventory: reserve stock per SKU
//!
//! Part of the order-placed choreography. Events are keyed by SKU, so every
//! SKU's stock is per-key state and events of one SKU never race.
//!
//! * `stock.received` `{sku, quantity}` adds stock.
//! * `order.placed` reserves the order's quantity of the SKU and emits
//!   `stock.reserved` to the `inventory` topic, or `stock.rejected` when
//!   there is not enough. Two payload versions are accepted, told apart by
//!   the event's `dataschema`: v1 has `qty`, v2 has `quantity` and an
//!   optional `warehouse`. An unknown version or a malformed payload is
//!   fatal (dead-lettered), since retrying cannot fix it.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Ctx, Emit, Event, HandlerError};

/// Topic this handler emits to.
pub const TOPIC: &str = "inventory";
/// `dataschema` of version 1 of `order.placed` (also assumed when absent).
pub const ORDER_PLACED_V1: &str = "urn:sluice:example:order-placed:v1";
/// `dataschema` of version 2 of `order.placed`.
pub const ORDER_PLACED_V2: &str = "urn:sluice:example:order-placed:v2";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderPlacedV1 {
    order_id: String,
    sku: String,
    qty: u64,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderPlacedV2 {
    order_id: String,
    sku: String,
    quantity: u64,
    #[serde(default)]
    warehouse: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// The fields this handler needs, whatever the payload version.
struct Order {
    order_id: String,
    sku: String,
    quantity: u64,
}

#[derive(Debug, Deserialize)]
struct StockReceived {
    sku: String,
    quantity: u64,
}

/// Payload of `stock.reserved`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StockReserved {
    /// The order.
    pub order_id: String,
    /// The SKU.
    pub sku: String,
    /// Units reserved.
    pub quantity: u64,
    /// Units left after the reservation.
    pub remaining: u64,
}

/// Payload of `stock.rejected`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StockRejected {
    /// The order.
    pub order_id: String,
    /// The SKU.
    pub sku: String,
    /// Units requested.
    pub requested: u64,
    /// Units available.
    pub available: u64,
}

fn parse_order(event: &Event) -> Result<Order, HandlerError> {
    match event.data_schema.as_deref() {
        None | Some(ORDER_PLACED_V1) => {
            let v1: OrderPlacedV1 = event.json()?;
            let _ = v1.email;
            Ok(Order {
                order_id: v1.order_id,
                sku: v1.sku,
                quantity: v1.qty,
            })
        }
        Some(ORDER_PLACED_V2) => {
            let v2: OrderPlacedV2 = event.json()?;
            let _ = (v2.warehouse, v2.email);
            Ok(Order {
                order_id: v2.order_id,
                sku: v2.sku,
                quantity: v2.quantity,
            })
        }
        Some(other) => Err(HandlerError::fatal(format!(
            "unsupported order.placed schema {other:?}"
        ))),
    }
}

/// Checks that the payload's SKU is the event's key: state is per key, so a
/// mismatch would touch the wrong SKU's stock.
fn check_key(event: &Event, sku: &str) -> Result<(), HandlerError> {
    match event.key.as_deref() {
        Some(key) if key == sku => Ok(()),
        Some(key) => Err(HandlerError::fatal(format!(
            "event key {key:?} is not the payload's SKU {sku:?}"
        ))),
        None => Err(HandlerError::fatal("inventory events must be keyed by SKU")),
    }
}

/// The handler.
pub fn handle(event: &Event, ctx: &mut Ctx) -> Result<(), HandlerError> {
    match event.ty.as_str() {
        "stock.received" => {
            let received: StockReceived = event.json()?;
            check_key(event, &received.sku)?;
            let available: u64 = ctx.get_json("available")?.unwrap_or(0);
            let total = available.saturating_add(received.quantity);
            ctx.set_json("available", &total)?;
            ctx.info(format!(
                "{}: +{} -> {total}",
                received.sku, received.quantity
            ));
            Ok(())
        }
        "order.placed" => {
            let order = parse_order(event)?;
            check_key(event, &order.sku)?;
            if order.quantity == 0 {
                return Err(HandlerError::fatal("order quantity must be positive"));
            }
            let available: u64 = ctx.get_json("available")?.unwrap_or(0);
            if available >= order.quantity {
                let remaining = available - order.quantity;
                ctx.set_json("available", &remaining)?;
                let reserved: u64 = ctx.get_json("reserved")?.unwrap_or(0);
                ctx.set_json("reserved", &(reserved + order.quantity))?;
                ctx.emit(
                    Emit::json(
                        TOPIC,
                        "stock.reserved",
                        &StockReserved {
                            order_id: order.order_id.clone(),
                            sku: order.sku.clone(),
                            quantity: order.quantity,
                            remaining,
                        },
                    )?
                    .key(order.order_id.clone()),
                )?;
                ctx.info(format!(
                    "reserved {} x {} for {}",
                    order.quantity, order.sku, order.order_id
                ));
            } else {
                ctx.emit(
                    Emit::json(
                        TOPIC,
                        "stock.rejected",
                        &StockRejected {
                            order_id: order.order_id.clone(),
                            sku: order.sku.clone(),
                            requested: order.quantity,
                            available,
                        },
                    )?
                    .key(order.order_id.clone()),
                )?;
                ctx.warn(format!(
                    "rejected {} x {} for {}: {available} available",
                    order.quantity, order.sku, order.order_id
                ));
            }
            Ok(())
        }
        // Subscriptions may deliver types this handler does not care about.
        other => {
            ctx.debug(format!("ignoring {other}"));
            Ok(())
        }
    }
}

sluice_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_sdk::testing::TestHost;

    fn restock(sku: &str, quantity: u64) -> Event {
        Event::from_json("stock.received", &json!({"sku": sku, "quantity": quantity})).with_key(sku)
    }

    fn order(id: &str, sku: &str, qty: u64) -> Event {
        Event::from_json(
            "order.placed",
            &json!({"order_id": id, "sku": sku, "qty": qty}),
        )
        .with_key(sku)
        .with_id(id)
    }

    #[test]
    fn reserves_until_stock_runs_out() {
        let mut host = TestHost::new();
        host.run(handle, &restock("A", 3)).unwrap();
        host.run(handle, &order("o1", "A", 2)).unwrap();
        host.run(handle, &order("o2", "A", 2)).unwrap();
        let emitted = host.emitted();
        assert_eq!(emitted.len(), 2);
        assert_eq!(emitted[0].ty, "stock.reserved");
        assert_eq!(
            emitted[0].data_json::<StockReserved>().unwrap(),
            StockReserved {
                order_id: "o1".into(),
                sku: "A".into(),
                quantity: 2,
                remaining: 1
            }
        );
        assert_eq!(emitted[1].ty, "stock.rejected");
        assert_eq!(emitted[1].key.as_deref(), Some("o2"));
        assert_eq!(host.state_json_of::<u64>("A", "available"), Some(1));
        assert_eq!(host.state_json_of::<u64>("A", "reserved"), Some(2));
    }

    #[test]
    fn accepts_v2_payloads() {
        let mut host = TestHost::new().with_state_json("B", "available", &10u64);
        let v2 = Event::from_json(
            "order.placed",
            &json!({"order_id": "o9", "sku": "B", "quantity": 4, "warehouse": "ams"}),
        )
        .with_key("B")
        .with_data_schema(ORDER_PLACED_V2);
        host.run(handle, &v2).unwrap();
        assert_eq!(host.state_json_of::<u64>("B", "available"), Some(6));
    }

    #[test]
    fn poison_events_are_fatal() {
        let mut host = TestHost::new();
        let garbage = Event::new("order.placed", "not json").with_key("A");
        assert!(!host.run(handle, &garbage).unwrap_err().is_retryable());
        let unknown = order("o1", "A", 1).with_data_schema("urn:other:v9");
        assert!(!host.run(handle, &unknown).unwrap_err().is_retryable());
        let wrong_key = order("o1", "A", 1).with_key("B");
        assert!(!host.run(handle, &wrong_key).unwrap_err().is_retryable());
        assert!(host.emitted().is_empty());
    }
}
