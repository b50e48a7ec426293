"""sluice-sdk: write Sluice event handlers in Python.

A Sluice handler is a WebAssembly component that the Sluice host calls once
per event. With this package you write one function::

    from sluice_sdk import Ctx, Event, handler

    @handler
    def handle(event: Event, ctx: Ctx) -> None:
        order = event.json()          # malformed JSON -> Fatal
        sent = ctx.state.get_json("emails-sent", 0)
        ctx.state.set_json("emails-sent", sent + 1)
        ctx.emit_json("notifications", "email.requested",
                      {"to": order["email"]}, key=order["order_id"])
        ctx.info("email requested")

test it natively with :class:`sluice_sdk.testing.TestHost`, and build it with
``python -m sluice_sdk.build handler.py -o handler.wasm`` (componentize-py).

What the host guarantees and expects:

* Everything a call does through :class:`Ctx` (emits, state writes) commits
  together with the record that the event was processed, and only if the
  handler returns normally. On an error, a trap or a timeout, all of it is
  discarded, so a handler needs no idempotency logic of its own.
* Events of one key run one at a time, in order; state is per key.
* Raise :class:`Retryable` for transient failures (retried with backoff,
  then dead-lettered) and :class:`Fatal` for events that can never succeed
  (dead-lettered at once). ``event.json()`` on a malformed payload, state on
  a keyless event (:class:`NoKey`) and invalid emits raise ``Fatal``.
* Any other exception is treated like a Rust panic: retryable, with the
  message ``"unhandled TypeName: message"`` followed by the traceback.
* There is no filesystem, network or environment. Clocks and random numbers
  work, and whatever you print is captured as log lines.
"""

from ._ctx import Backend, Ctx, Level, State
from ._errors import (
    Fatal,
    HandlerError,
    NoKey,
    Retryable,
    StateError,
    TooLarge,
    classify,
    describe_exception,
)
from ._event import Emit, Event
from ._handler import HandlerFn, handler

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Ctx",
    "Emit",
    "Event",
    "Fatal",
    "HandlerError",
    "HandlerFn",
    "Level",
    "NoKey",
    "Retryable",
    "State",
    "StateError",
    "TooLarge",
    "classify",
    "describe_exception",
    "handler",
]
