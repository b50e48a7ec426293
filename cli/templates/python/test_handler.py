"""Unit tests of the handler with the SDK's in-memory TestHost."""

from __future__ import annotations

import pytest

from handler import handle
from sluice_sdk import Event, Fatal
from sluice_sdk.testing import TestHost


def test_greets_and_counts() -> None:
    host = TestHost()
    event = Event.from_json("greet.requested", {"name": "Ada"}).with_key("u1")
    host.run(handle, event)
    host.run(handle, event.with_id("second"))
    first, second = host.emitted()
    assert (second.topic, second.type, second.key) == ("greetings", "greeting.sent", "u1")
    assert first.json() == {"message": "Hello, Ada!", "count": 1}
    assert second.json() == {"message": "Hello again, Ada! (2)", "count": 2}
    assert host.state_json_of("u1", "count") == 2


def test_a_payload_without_name_is_fatal() -> None:
    host = TestHost()
    with pytest.raises(Fatal):
        host.run(handle, Event.from_json("greet.requested", {}).with_key("u1"))
    assert host.emitted() == []
