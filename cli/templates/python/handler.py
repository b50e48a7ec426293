"""{{name}}: a Sluice event handler.

On ``greet.requested`` ``{"name": ...}`` it counts the greetings of the
event's key in per-key state and emits ``greeting.sent`` to ``greetings``.
A payload without ``name`` is fatal (dead-lettered): retrying cannot fix it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice_sdk import Ctx, Event, handler

TOPIC = "greetings"


@dataclass
class GreetRequested:
    name: str


@handler
def handle(event: Event, ctx: Ctx) -> None:
    """The handler: the host calls it once per event."""
    if event.type != "greet.requested":
        ctx.debug(f"ignoring {event.type}")
        return
    request = event.json(GreetRequested)  # no `name`: Fatal
    count = ctx.state.get_json("count", 0, cls=int) + 1
    ctx.state.set_json("count", count)
    if count == 1:
        message = f"Hello, {request.name}!"
    else:
        message = f"Hello again, {request.name}! ({count})"
    ctx.emit_json(TOPIC, "greeting.sent", {"message": message, "count": count}, key=event.key)
    ctx.info(message)
