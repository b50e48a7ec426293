"""Unit tests of the inventory handler against the in-memory TestHost (the
same cases as the Rust example's tests, plus a few more)."""

from __future__ import annotations

import pytest

from inventory import ORDER_PLACED_V2, StockReserved, handle
from sluice_sdk import Event, Fatal, Level
from sluice_sdk.testing import TestHost


def restock(sku: str, quantity: int) -> Event:
    return Event.from_json("stock.received", {"sku": sku, "quantity": quantity}).with_key(sku)


def order(id: str, sku: str, qty: int) -> Event:
    return (
        Event.from_json("order.placed", {"order_id": id, "sku": sku, "qty": qty})
        .with_key(sku)
        .with_id(id)
    )


def test_reserves_until_stock_runs_out() -> None:
    host = TestHost()
    host.run(handle, restock("A", 3))
    host.run(handle, order("o1", "A", 2))
    host.run(handle, order("o2", "A", 2))
    emitted = host.emitted()
    assert len(emitted) == 2
    assert emitted[0].type == "stock.reserved"
    assert emitted[0].json(StockReserved) == StockReserved(order_id="o1", sku="A", quantity=2, remaining=1)
    assert emitted[0].topic == "inventory"
    assert emitted[0].key == "o1"
    assert emitted[0].id == "o1/0"
    assert emitted[1].type == "stock.rejected"
    assert emitted[1].key == "o2"
    assert emitted[1].json() == {"order_id": "o2", "sku": "A", "requested": 2, "available": 1}
    assert host.state_json_of("A", "available") == 1
    assert host.state_json_of("A", "reserved") == 2
    assert host.logs() == [
        (Level.INFO, "A: +3 -> 3"),
        (Level.INFO, "reserved 2 x A for o1"),
        (Level.WARN, "rejected 2 x A for o2: 1 available"),
    ]


def test_accepts_v2_payloads() -> None:
    host = TestHost().with_state_json("B", "available", 10)
    v2 = (
        Event.from_json("order.placed", {"order_id": "o9", "sku": "B", "quantity": 4, "warehouse": "ams"})
        .with_key("B")
        .with_data_schema(ORDER_PLACED_V2)
    )
    host.run(handle, v2)
    assert host.state_json_of("B", "available") == 6


def test_poison_events_are_fatal() -> None:
    host = TestHost()
    garbage = Event.new("order.placed", "not json").with_key("A")
    with pytest.raises(Fatal):
        host.run(handle, garbage)
    unknown = order("o1", "A", 1).with_data_schema("urn:other:v9")
    with pytest.raises(Fatal, match='unsupported order.placed schema "urn:other:v9"'):
        host.run(handle, unknown)
    wrong_key = order("o1", "A", 1).with_key("B")
    with pytest.raises(Fatal, match='event key "B" is not the payload\'s SKU "A"'):
        host.run(handle, wrong_key)
    assert host.emitted() == []


@pytest.mark.parametrize(
    "event, message",
    [
        (order("o1", "A", 0), "order quantity must be positive"),
        (order("o1", "A", 1).with_key(None), "inventory events must be keyed by SKU"),
        (order("o1", "A", -1), "not an unsigned 64-bit integer"),
        (
            Event.from_json("order.placed", {"order_id": "o1", "sku": "A", "qty": 1, "extra": 1}).with_key("A"),
            "unknown field 'extra'",
        ),
        (
            Event.from_json("order.placed", {"order_id": "o1", "sku": "A", "qty": "2"}).with_key("A"),
            "expected an integer at qty, got a string",
        ),
        (
            Event.from_json("order.placed", {"order_id": "o1", "sku": "A", "quantity": 2})
            .with_key("A")
            .with_data_schema("urn:sluice:example:order-placed:v1"),
            "unknown field 'quantity'",
        ),
        (Event.from_json("stock.received", {"sku": "A"}).with_key("A"), "missing field 'quantity'"),
    ],
)
def test_more_poison(event: Event, message: str) -> None:
    host = TestHost().with_state_json("A", "available", 5)
    with pytest.raises(Fatal, match=message):
        host.run(handle, event)
    assert host.state_json_of("A", "available") == 5
    assert host.emitted() == []


def test_other_types_are_ignored() -> None:
    host = TestHost()
    host.run(handle, Event.new("order.cancelled"))
    assert host.emitted() == []
    assert host.logs() == [(Level.DEBUG, "ignoring order.cancelled")]
