"""greeter: a small stateless Sluice handler in Python.

``greeting.requested`` ``{"name": ..., "language"?: "en"|"fr"|"de"|"nl"}``
emits ``greeting.created`` ``{"name", "language", "text"}`` to the
``greetings`` topic, keyed like the request. It uses no state, so keyless
events are fine. A missing name or an unknown language is fatal: retrying
cannot fix the request. Other event types are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sluice_sdk import Ctx, Event, Fatal, handler

TOPIC = "greetings"

GREETINGS = {
    "en": "Hello, {name}!",
    "fr": "Bonjour, {name} !",
    "de": "Hallo, {name}!",
    "nl": "Hallo, {name}!",
}


@dataclass
class GreetingRequested:
    name: str
    language: Optional[str] = None


@handler
def handle(event: Event, ctx: Ctx) -> None:
    if event.type != "greeting.requested":
        ctx.debug(f"ignoring {event.type}")
        return
    request = event.json(GreetingRequested)
    name = request.name.strip()
    if not name:
        raise Fatal("the name is empty")
    language = request.language or "en"
    template = GREETINGS.get(language)
    if template is None:
        raise Fatal(f"unsupported language {language!r}")
    text = template.format(name=name)
    ctx.emit_json(
        TOPIC,
        "greeting.created",
        {"name": name, "language": language, "text": text},
        key=event.key,
    )
    ctx.info(f"greeted {name} in {language}")
