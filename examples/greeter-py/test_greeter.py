"""Unit tests of the greeter handler against the in-memory TestHost."""

from __future__ import annotations

import pytest

from greeter import handle
from sluice_sdk import Event, Fatal, Level
from sluice_sdk.testing import TestHost


def request(value: object, key: str | None = "user-7") -> Event:
    return Event.from_json("greeting.requested", value).with_key(key).with_id("greet-1")


def test_greets_in_the_requested_language() -> None:
    host = TestHost()
    host.run(handle, request({"name": "Ada", "language": "fr"}))
    (emitted,) = host.emitted()
    assert (emitted.id, emitted.topic, emitted.type, emitted.key) == (
        "greet-1/0", "greetings", "greeting.created", "user-7",
    )
    assert emitted.json() == {"name": "Ada", "language": "fr", "text": "Bonjour, Ada !"}
    assert host.logs() == [(Level.INFO, "greeted Ada in fr")]
    assert host.state_of("user-7") == {}


def test_english_by_default_and_keyless_is_fine() -> None:
    host = TestHost()
    host.run(handle, request({"name": " Grace "}, key=None))
    (emitted,) = host.emitted()
    assert emitted.key is None
    assert emitted.json()["text"] == "Hello, Grace!"


@pytest.mark.parametrize(
    "value, message",
    [
        ({"name": "Ada", "language": "xx"}, "unsupported language 'xx'"),
        ({"name": "  "}, "the name is empty"),
        ({"language": "en"}, "missing field 'name'"),
        ({"name": 3}, "expected a string at name"),
    ],
)
def test_bad_requests_are_fatal(value: object, message: str) -> None:
    host = TestHost()
    with pytest.raises(Fatal, match=message):
        host.run(handle, request(value))
    assert host.emitted() == []


def test_other_types_are_ignored() -> None:
    host = TestHost()
    host.run(handle, Event.new("greeting.cancelled"))
    assert host.emitted() == []
