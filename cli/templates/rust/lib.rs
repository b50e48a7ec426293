//! {{name}}: a Sluice event handler.
//!
//! On `greet.requested` `{"name": ...}` it counts the greetings of the
//! event's key in per-key state and emits `greeting.sent` to `greetings`.
//! A payload without `name` is fatal (dead-lettered): retrying cannot fix it.

use serde::Deserialize;
use sluice_sdk::{Ctx, Emit, Event, HandlerError};

#[derive(Deserialize)]
struct GreetRequested {
    name: String,
}

/// The handler: the host calls it once per event.
pub fn handle(event: &Event, ctx: &mut Ctx) -> Result<(), HandlerError> {
    match event.ty.as_str() {
        "greet.requested" => {
            let request: GreetRequested = event.json()?;
            let count = ctx.get_json::<u64>("count")?.unwrap_or(0) + 1;
            ctx.set_json("count", &count)?;
            let message = if count == 1 {
                format!("Hello, {}!", request.name)
            } else {
                format!("Hello again, {}! ({count})", request.name)
            };
            let mut out = Emit::json(
                "greetings",
                "greeting.sent",
                &serde_json::json!({"message": message, "count": count}),
            )?;
            if let Some(key) = &event.key {
                out = out.key(key.clone());
            }
            ctx.emit(out)?;
            ctx.info(message);
            Ok(())
        }
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
    use sluice_sdk::testing::TestHost;

    #[test]
    fn greets_and_counts() {
        let mut host = TestHost::new();
        let event =
            Event::from_json("greet.requested", &serde_json::json!({"name": "Ada"})).with_key("u1");
        host.run(handle, &event).unwrap();
        host.run(handle, &event.clone().with_id("second")).unwrap();
        assert_eq!(host.emitted().len(), 2);
        assert_eq!(host.state_json_of::<u64>("u1", "count"), Some(2));
    }

    #[test]
    fn a_payload_without_name_is_fatal() {
        let mut host = TestHost::new();
        let event = Event::from_json("greet.requested", &serde_json::json!({})).with_key("u1");
        assert!(!host.run(handle, &event).unwrap_err().is_retryable());
    }
}
