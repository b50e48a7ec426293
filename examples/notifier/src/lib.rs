//! # notifier: turn placed orders into email requests
//!
//! Part of the order-placed choreography. For every `order.placed` event
//! that carries an email address it emits one `email.requested` event to the
//! `notifications` topic, keyed by order id. A mail-sending service consumes
//! those; thanks to deterministic emitted ids it can deduplicate them.
//! Orders without an email are skipped with a log line. It keeps no state,
//! so it works for keyless events too.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Ctx, Emit, Event, HandlerError};

/// Topic this handler emits to.
pub const TOPIC: &str = "notifications";

#[derive(Debug, Deserialize)]
struct OrderPlaced {
    order_id: String,
    sku: String,
    #[serde(alias = "quantity")]
    qty: u64,
    #[serde(default)]
    email: Option<String>,
}

/// Payload of `email.requested`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EmailRequested {
    /// Recipient.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// The order it is about.
    pub order_id: String,
}

/// The handler.
pub fn handle(event: &Event, ctx: &mut Ctx) -> Result<(), HandlerError> {
    if event.ty != "order.placed" {
        return Ok(());
    }
    let order: OrderPlaced = event.json()?;
    let Some(to) = order.email.filter(|e| e.contains('@')) else {
        ctx.info(format!(
            "order {} has no email address; nothing to send",
            order.order_id
        ));
        return Ok(());
    };
    let email = EmailRequested {
        subject: format!("We received your order {}", order.order_id),
        body: format!(
            "Thank you! Your order {} for {} x {} is being prepared.",
            order.order_id, order.qty, order.sku
        ),
        to,
        order_id: order.order_id.clone(),
    };
    let id = ctx.emit(Emit::json(TOPIC, "email.requested", &email)?.key(order.order_id))?;
    ctx.info(format!("email {id} requested for {}", email.order_id));
    Ok(())
}

sluice_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_sdk::testing::TestHost;

    #[test]
    fn requests_one_email_per_order() {
        let mut host = TestHost::new();
        let event = Event::from_json(
            "order.placed",
            &json!({"order_id": "o1", "sku": "A", "qty": 2, "email": "ada@example.com"}),
        );
        host.run(handle, &event).unwrap();
        let emitted = host.emitted();
        assert_eq!(emitted.len(), 1);
        assert_eq!(emitted[0].topic, TOPIC);
        assert_eq!(emitted[0].key.as_deref(), Some("o1"));
        let email: EmailRequested = emitted[0].data_json().unwrap();
        assert_eq!(email.to, "ada@example.com");
        assert!(email.body.contains("2 x A"));
    }

    #[test]
    fn skips_orders_without_email_and_other_types() {
        let mut host = TestHost::new();
        let no_email = Event::from_json(
            "order.placed",
            &json!({"order_id": "o1", "sku": "A", "qty": 1}),
        );
        host.run(handle, &no_email).unwrap();
        host.run(handle, &Event::new("stock.received", "{}"))
            .unwrap();
        assert!(host.emitted().is_empty());
    }
}
