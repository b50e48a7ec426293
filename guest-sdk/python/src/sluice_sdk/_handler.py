"""Declaring the handler function and calling it as the host does."""

from __future__ import annotations

import types
from typing import Callable, Optional

from ._ctx import Ctx
from ._errors import HandlerError, classify
from ._event import Event

__all__ = ["HandlerFn", "handler", "resolve", "invoke"]

#: A handler: ``def handle(event: Event, ctx: Ctx) -> None``. Returning
#: normally commits its effects; raising discards them.
HandlerFn = Callable[[Event, Ctx], None]

_MARK = "__sluice_handler__"


def handler(fn: HandlerFn) -> HandlerFn:
    """Marks `fn` as the module's handler; returns it unchanged, so tests
    call it directly or through :class:`sluice_sdk.testing.TestHost`.

    Without the decorator, a module-level function named ``handle`` is the
    handler. A module may mark only one function."""
    if not callable(fn):
        raise TypeError("@handler decorates a function (event, ctx) -> None")
    setattr(fn, _MARK, True)
    return fn


def resolve(module: types.ModuleType) -> HandlerFn:
    """The handler of `module`: the one function marked with
    :func:`handler`, else its ``handle``. Raises ``LookupError`` otherwise
    (at build time: componentize-py imports the module while building)."""
    marked = []
    for name, value in vars(module).items():
        if callable(value) and getattr(value, _MARK, False) is True and value not in marked:
            marked.append(value)
    if len(marked) > 1:
        names = ", ".join(getattr(f, "__name__", "?") for f in marked)
        raise LookupError(f"module {module.__name__} marks more than one @handler: {names}")
    if marked:
        return marked[0]
    fn = getattr(module, "handle", None)
    if callable(fn):
        return fn
    raise LookupError(
        f"module {module.__name__} has no handler: decorate a function with "
        "@sluice_sdk.handler or define handle(event, ctx)"
    )


def invoke(fn: HandlerFn, event: Event, ctx: Ctx) -> Optional[HandlerError]:
    """Runs `fn` and returns what the host sees: ``None`` for success, or
    the error. A :class:`sluice_sdk.HandlerError` is returned as raised; any
    other exception, ``SystemExit`` included, becomes
    :class:`sluice_sdk.Retryable` with the exception and its traceback (see
    :func:`sluice_sdk.classify`), this function's own frame left out."""
    try:
        fn(event, ctx)
    except BaseException as exc:  # noqa: BLE001 - the point: map every failure
        tb = exc.__traceback__
        if tb is not None and tb.tb_frame.f_code is invoke.__code__:
            exc.__traceback__ = tb.tb_next
        return classify(exc)
    return None
