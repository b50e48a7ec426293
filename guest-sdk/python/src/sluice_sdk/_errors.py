"""Why a handler did not process an event.

The exception class decides what the host does next:

* :class:`Retryable`: a transient failure. The host discards the attempt's
  effects and retries the event with backoff; after the handler's last
  attempt it goes to the dead-letter queue.
* :class:`Fatal`: a permanent failure (a poison event). The host discards the
  attempt's effects and dead-letters the event at once.
* Any other exception escaping the handler (``SystemExit`` included) is
  treated like a Rust panic, which the host retries:
  :func:`classify` turns it into a ``Retryable`` whose message is the
  exception and its traceback, so that the dead-letter entry shows them.
"""

from __future__ import annotations

import traceback

__all__ = [
    "HandlerError",
    "Retryable",
    "Fatal",
    "StateError",
    "NoKey",
    "TooLarge",
    "classify",
    "describe_exception",
]

# A traceback is cut to this many characters (the head line and the last
# frames are kept), so that a runaway recursion cannot produce a huge message.
MAX_TRACEBACK_CHARS = 4000
# The head line ("unhandled TypeName: message") is cut to this many characters.
MAX_HEAD_CHARS = 1000


class HandlerError(Exception):
    """Base of :class:`Retryable` and :class:`Fatal`. Raise one of those."""

    #: Does the host retry the event?
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message: str = message

    @property
    def kind(self) -> str:
        """``"retryable"`` or ``"fatal"``, as in ``sluice test`` reports."""
        return "retryable" if self.retryable else "fatal"

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HandlerError):
            return NotImplemented
        return self.retryable == other.retryable and self.message == other.message

    def __hash__(self) -> int:
        return hash((self.retryable, self.message))


class Retryable(HandlerError):
    """A transient failure, worth retrying (a dependency was down, ...)."""

    retryable = True


class Fatal(HandlerError):
    """A permanent failure: the event goes to the dead-letter queue at once
    (malformed payload, unknown version, violated invariant)."""

    retryable = False


class StateError(Fatal):
    """A state call failed. Uncaught, it is fatal: using state on a keyless
    event, or outgrowing the limits, will not succeed on a retry."""


class NoKey(StateError):
    """The event has no key, so it has no state."""

    def __init__(self, message: str = "the event has no key, so it has no state") -> None:
        super().__init__(message)


class TooLarge(StateError):
    """The write would exceed the handler's state limits."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"state too large: {detail}")
        self.detail: str = detail


def describe_exception(exc: BaseException) -> str:
    """``"unhandled TypeName: message"`` followed by the traceback."""
    head = f"unhandled {type(exc).__name__}: {exc}".rstrip()
    if head.endswith(":"):
        head = head[:-1]
    if len(head) > MAX_HEAD_CHARS:
        head = head[:MAX_HEAD_CHARS] + " [...]"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    if len(tb) > MAX_TRACEBACK_CHARS:
        keep = MAX_TRACEBACK_CHARS // 2
        tb = f"{tb[:keep]}\n  [... {len(tb) - 2 * keep} characters cut ...]\n{tb[-keep:]}"
    return f"{head}\n{tb}"


def classify(exc: BaseException) -> HandlerError:
    """The error the host sees for an exception that escaped a handler:
    a :class:`HandlerError` as raised, anything else as :class:`Retryable`
    carrying :func:`describe_exception`."""
    if isinstance(exc, HandlerError):
        return exc
    return Retryable(describe_exception(exc))
