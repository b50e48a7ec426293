"""inventory: reserve stock per SKU (the Python port of examples/inventory).

Part of the order-placed choreography. Events are keyed by SKU, so every
SKU's stock is per-key state and events of one SKU never race.

* ``stock.received`` ``{sku, quantity}`` adds stock.
* ``order.placed`` reserves the order's quantity of the SKU and emits
  ``stock.reserved`` to the ``inventory`` topic, or ``stock.rejected`` when
  there is not enough, keyed by order id. Two payload versions are
  accepted, told apart by the event's ``dataschema``: v1 has ``qty``, v2 has
  ``quantity`` and an optional ``warehouse``. An unknown version or a
  malformed payload is fatal (dead-lettered), since retrying cannot fix it.

Build: ``python -m sluice_sdk.build examples/inventory-py/inventory.py -o inventory.wasm``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from sluice_sdk import Ctx, Event, Fatal, handler

#: Topic this handler emits to.
TOPIC = "inventory"
#: ``dataschema`` of version 1 of ``order.placed`` (also assumed when absent).
ORDER_PLACED_V1 = "urn:sluice:example:order-placed:v1"
#: ``dataschema`` of version 2 of ``order.placed``.
ORDER_PLACED_V2 = "urn:sluice:example:order-placed:v2"

U64_MAX = 2**64 - 1


@dataclass
class OrderPlacedV1:
    order_id: str
    sku: str
    qty: int
    email: Optional[str] = None


@dataclass
class OrderPlacedV2:
    order_id: str
    sku: str
    quantity: int
    warehouse: Optional[str] = None
    email: Optional[str] = None


@dataclass
class Order:
    """The fields this handler needs, whatever the payload version."""

    order_id: str
    sku: str
    quantity: int


@dataclass
class StockReceived:
    sku: str
    quantity: int


@dataclass
class StockReserved:
    """Payload of ``stock.reserved``."""

    order_id: str
    sku: str
    quantity: int
    remaining: int


@dataclass
class StockRejected:
    """Payload of ``stock.rejected``."""

    order_id: str
    sku: str
    requested: int
    available: int


def _q(s: str) -> str:
    """A quoted string, as Rust's ``{:?}`` writes it."""
    return json.dumps(s, ensure_ascii=False)


def _u64(event: Event, name: str, value: int) -> int:
    """Quantities are u64 in the Rust original: a negative one (or one past
    u64) is a malformed payload."""
    if not 0 <= value <= U64_MAX:
        raise Fatal(
            f"event {event.id} ({event.type}): payload is not the expected JSON: "
            f"field {name!r}: {value} is not an unsigned 64-bit integer"
        )
    return value


def _get_u64(ctx: Ctx, name: str) -> int:
    value = ctx.state.get_json(name, 0, cls=int)
    if not 0 <= value <= U64_MAX:
        raise Fatal(f"state field {name!r} is not the expected JSON: {value} is not an unsigned 64-bit integer")
    return value


def parse_order(event: Event) -> Order:
    if event.data_schema in (None, ORDER_PLACED_V1):
        v1 = event.json(OrderPlacedV1, deny_unknown=True)
        return Order(v1.order_id, v1.sku, _u64(event, "qty", v1.qty))
    if event.data_schema == ORDER_PLACED_V2:
        v2 = event.json(OrderPlacedV2, deny_unknown=True)
        return Order(v2.order_id, v2.sku, _u64(event, "quantity", v2.quantity))
    raise Fatal(f"unsupported order.placed schema {_q(event.data_schema)}")


def check_key(event: Event, sku: str) -> None:
    """Checks that the payload's SKU is the event's key: state is per key,
    so a mismatch would touch the wrong SKU's stock."""
    if event.key is None:
        raise Fatal("inventory events must be keyed by SKU")
    if event.key != sku:
        raise Fatal(f"event key {_q(event.key)} is not the payload's SKU {_q(sku)}")


@handler
def handle(event: Event, ctx: Ctx) -> None:
    if event.type == "stock.received":
        received = event.json(StockReceived)
        quantity = _u64(event, "quantity", received.quantity)
        check_key(event, received.sku)
        available = _get_u64(ctx, "available")
        total = min(available + quantity, U64_MAX)  # saturating, as in Rust
        ctx.state.set_json("available", total)
        ctx.info(f"{received.sku}: +{quantity} -> {total}")
    elif event.type == "order.placed":
        order = parse_order(event)
        check_key(event, order.sku)
        if order.quantity == 0:
            raise Fatal("order quantity must be positive")
        available = _get_u64(ctx, "available")
        if available >= order.quantity:
            remaining = available - order.quantity
            ctx.state.set_json("available", remaining)
            reserved = _get_u64(ctx, "reserved")
            ctx.state.set_json("reserved", reserved + order.quantity)
            ctx.emit_json(
                TOPIC,
                "stock.reserved",
                StockReserved(order.order_id, order.sku, order.quantity, remaining),
                key=order.order_id,
            )
            ctx.info(f"reserved {order.quantity} x {order.sku} for {order.order_id}")
        else:
            ctx.emit_json(
                TOPIC,
                "stock.rejected",
                StockRejected(order.order_id, order.sku, order.quantity, available),
                key=order.order_id,
            )
            ctx.warn(
                f"rejected {order.quantity} x {order.sku} for {order.order_id}: {available} available"
            )
    else:
        # Subscriptions may deliver types this handler does not care about.
        ctx.debug(f"ignoring {event.type}")
