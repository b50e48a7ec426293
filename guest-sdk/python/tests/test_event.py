from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest

from sluice_sdk import Emit, Event, Fatal


def test_builders_and_defaults() -> None:
    e = Event.from_json("order.placed", {"a": 1, "b": "é"})
    assert (e.id, e.source, e.topic, e.attempt, e.key) == ("test-event-1", "/sluice/test", "test", 1, None)
    assert e.content_type == "application/json"
    assert e.data == '{"a":1,"b":"é"}'.encode()  # compact UTF-8, as serde_json writes it
    e2 = (
        e.with_id("x")
        .with_key("k")
        .with_topic("t")
        .with_source("/s")
        .with_time("2024-01-01T00:00:00Z")
        .with_data_schema("v2")
        .with_header("TraceParent", "00-1")
        .with_attempt(3)
        .with_content_type("text/plain")
    )
    assert (e2.id, e2.key, e2.topic, e2.source, e2.time, e2.data_schema, e2.attempt, e2.content_type) == (
        "x", "k", "t", "/s", "2024-01-01T00:00:00Z", "v2", 3, "text/plain",
    )
    assert e2.header("traceparent") == "00-1"
    assert e2.header("TRACEPARENT") == "00-1"
    assert e2.header("missing") is None
    assert e.key is None and e.headers == {}  # builders copy
    with pytest.raises(ValueError):
        e.with_attempt(0)


def test_events_are_immutable() -> None:
    e = Event.new("t", b"x")
    with pytest.raises(AttributeError):
        e.type = "other"  # type: ignore[misc]


def test_json_and_text() -> None:
    assert Event.from_json("t", [1, None]).json() == [1, None]
    assert Event.new("t", "héllo").text() == "héllo"
    with pytest.raises(Fatal, match=r"^event test-event-1 \(t\): payload is not the expected JSON: "):
        Event.new("t", "not json").json()
    with pytest.raises(Fatal, match="payload is not the expected JSON"):
        Event.new("t", b"\xff\xfe").json()
    with pytest.raises(Fatal, match="payload is not UTF-8"):
        Event.new("t", b"\xff").text()
    with pytest.raises(Fatal):
        Event.new("t", b"").json()


@dataclass
class Line:
    sku: str
    qty: int


@dataclass
class Order:
    order_id: str
    lines: list[Line]
    note: Optional[str] = None
    total: float = 0.0
    tags: dict[str, bool] = field(default_factory=dict)


def test_json_into_dataclasses() -> None:
    e = Event.from_json("t", {"order_id": "o1", "lines": [{"sku": "A", "qty": 2}], "total": 3, "extra": 1})
    order = e.json(Order)
    assert order == Order("o1", [Line("A", 2)], None, 3.0, {})
    assert isinstance(order.total, float)
    with pytest.raises(Fatal, match="unknown field 'extra'"):
        e.json(Order, deny_unknown=True)
    cases = [
        ({"lines": []}, "missing field 'order_id'"),
        ({"order_id": 1, "lines": []}, "expected a string at order_id, got the number 1"),
        ({"order_id": "o", "lines": [{"sku": "A", "qty": True}]}, r"expected an integer at lines\[0\].qty, got a boolean"),
        ({"order_id": "o", "lines": [{"sku": "A", "qty": 1.5}]}, "expected an integer"),
        ({"order_id": "o", "lines": {}}, "expected an array at lines, got an object"),
        ({"order_id": "o", "lines": [], "note": 3}, "expected a string at note"),
        ({"order_id": "o", "lines": [], "tags": {"x": 1}}, "expected a boolean at tags.x"),
        ([], r"expected an object \(Order\), got an array"),
    ]
    for value, message in cases:
        with pytest.raises(Fatal, match=message):
            Event.from_json("t", value).json(Order)
    assert Event.from_json("t", {"a": 1}).json(dict[str, int]) == {"a": 1}


def test_dataclass_payloads_encode_as_objects() -> None:
    e = Event.from_json("t", Line("A", 1))
    assert e.json() == {"sku": "A", "qty": 1}


def test_emit_json() -> None:
    em = Emit(topic="t", type="x", data=b'{"a":1}')
    assert em.json() == {"a": 1}
    assert em.json(dict[str, int]) == {"a": 1}
    with pytest.raises(Fatal):
        Emit(topic="t", type="x", data=b"{").json()
