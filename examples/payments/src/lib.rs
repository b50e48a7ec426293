//! # payments: error classification
//!
//! Handles `payment.requested` `{order_id, amount_cents, card}` and emits
//! `payment.captured` to the `payments` topic. It shows the two kinds of
//! handler errors:
//!
//! * **fatal**: a malformed payload, a non-positive amount, or a card the
//!   gateway declines for good (`card: "stolen"`). Retrying cannot help;
//!   the host dead-letters the event at once.
//! * **retryable**: the (simulated) gateway is unavailable. The card
//!   `"flaky"` fails on attempts 1 and 2 and succeeds on attempt 3; the
//!   card `"down"` always fails, so the host retries with backoff and
//!   dead-letters after the last attempt.
//!
//! Every charge is also remembered in per-order state, so that a second
//! `payment.requested` for the same order (a *different* event, not a
//! redelivery, which the host already deduplicates) is refused as fatal.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Ctx, Emit, Event, HandlerError};

/// Topic this handler emits to.
pub const TOPIC: &str = "payments";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentRequested {
    order_id: String,
    amount_cents: i64,
    card: String,
}

/// Payload of `payment.captured`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PaymentCaptured {
    /// The order.
    pub order_id: String,
    /// Amount charged.
    pub amount_cents: i64,
    /// Delivery attempt on which the gateway accepted.
    pub attempt: u32,
}

/// The simulated payment gateway.
fn charge(card: &str, attempt: u32) -> Result<(), HandlerError> {
    match card {
        "stolen" => Err(HandlerError::fatal("card declined: reported stolen")),
        "down" => Err(HandlerError::retryable("payment gateway unavailable")),
        "flaky" if attempt < 3 => Err(HandlerError::retryable(format!(
            "payment gateway timed out (attempt {attempt})"
        ))),
        _ => Ok(()),
    }
}

/// The handler.
pub fn handle(event: &Event, ctx: &mut Ctx) -> Result<(), HandlerError> {
    if event.ty != "payment.requested" {
        return Ok(());
    }
    let request: PaymentRequested = event.json()?;
    if request.amount_cents <= 0 {
        return Err(HandlerError::fatal(format!(
            "amount must be positive, got {}",
            request.amount_cents
        )));
    }
    if event.key.as_deref() != Some(request.order_id.as_str()) {
        return Err(HandlerError::fatal(
            "payment events must be keyed by order id",
        ));
    }
    if let Some(previous) = ctx.get_json::<String>("charged-by")? {
        return Err(HandlerError::fatal(format!(
            "order {} was already charged by event {previous}",
            request.order_id
        )));
    }
    if let Err(e) = charge(&request.card, event.attempt) {
        ctx.warn(format!("charge failed: {e}"));
        return Err(e);
    }
    ctx.set_json("charged-by", &event.id)?;
    ctx.emit(
        Emit::json(
            TOPIC,
            "payment.captured",
            &PaymentCaptured {
                order_id: request.order_id.clone(),
                amount_cents: request.amount_cents,
                attempt: event.attempt,
            },
        )?
        .key(request.order_id),
    )?;
    Ok(())
}

sluice_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_sdk::testing::TestHost;

    fn payment(card: &str, amount: i64) -> Event {
        Event::from_json(
            "payment.requested",
            &json!({"order_id": "o1", "amount_cents": amount, "card": card}),
        )
        .with_key("o1")
    }

    #[test]
    fn classifies_errors() {
        let mut host = TestHost::new();
        assert!(
            !host
                .run(handle, &payment("stolen", 100))
                .unwrap_err()
                .is_retryable()
        );
        assert!(
            !host
                .run(handle, &payment("ok", -5))
                .unwrap_err()
                .is_retryable()
        );
        assert!(
            host.run(handle, &payment("down", 100))
                .unwrap_err()
                .is_retryable()
        );
        assert!(
            host.run(handle, &payment("flaky", 100))
                .unwrap_err()
                .is_retryable()
        );
        host.run(handle, &payment("flaky", 100).with_attempt(3))
            .unwrap();
        assert_eq!(host.emitted().len(), 1);
        // A second, different payment event for the same order is refused.
        let again = payment("ok", 100).with_id("other");
        assert!(!host.run(handle, &again).unwrap_err().is_retryable());
    }
}
