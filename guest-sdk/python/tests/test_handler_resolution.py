from __future__ import annotations

import types

import pytest

from sluice_sdk import Ctx, Event, describe_exception, handler
from sluice_sdk._errors import MAX_TRACEBACK_CHARS
from sluice_sdk._handler import resolve


def _module(**attrs: object) -> types.ModuleType:
    m = types.ModuleType("m")
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


def test_resolve_prefers_the_decorated_function() -> None:
    def handle(event: Event, ctx: Ctx) -> None: ...

    @handler
    def on_event(event: Event, ctx: Ctx) -> None: ...

    assert resolve(_module(handle=handle)) is handle
    assert resolve(_module(handle=handle, on_event=on_event, alias=on_event)) is on_event


def test_resolve_errors() -> None:
    @handler
    def a(event: Event, ctx: Ctx) -> None: ...

    @handler
    def b(event: Event, ctx: Ctx) -> None: ...

    with pytest.raises(LookupError, match="more than one @handler: a, b"):
        resolve(_module(a=a, b=b))
    with pytest.raises(LookupError, match="has no handler"):
        resolve(_module(handle=3))


def test_long_tracebacks_are_cut() -> None:
    # Two functions in turn, so that Python does not fold repeated lines.
    def ping(n: int) -> None:
        if n == 0:
            raise RuntimeError("bottom")
        pong(n)

    def pong(n: int) -> None:
        ping(n - 1)

    try:
        ping(100)
    except RuntimeError as e:
        text = describe_exception(e)
    assert text.startswith("unhandled RuntimeError: bottom\nTraceback (most recent call last):")
    assert "characters cut" in text
    assert text.endswith("RuntimeError: bottom")
    assert len(text) < MAX_TRACEBACK_CHARS + 200


def test_long_messages_are_cut() -> None:
    text = describe_exception(ValueError("x" * 10_000))
    assert len(text.splitlines()[0]) < 1100


def test_exception_without_message() -> None:
    try:
        raise ValueError()
    except ValueError as e:
        assert describe_exception(e).splitlines()[0] == "unhandled ValueError"
