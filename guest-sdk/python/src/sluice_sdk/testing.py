"""An in-memory fake of the host, for unit-testing handler logic natively
with pytest, without building a component.

:class:`TestHost` mimics the host's contract: state is scoped to the event's
key (a keyless event gets :class:`sluice_sdk.NoKey`), emitted events get the
ids ``<event id>/<index>``, and the effects of a call that fails are rolled
back, as the real host discards them; logs are kept. To run the real
component in the real runtime, use ``sluice test``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from . import _json
from ._ctx import Ctx, Level
from ._errors import Fatal, HandlerError, NoKey
from ._event import Emit, Event
from ._handler import HandlerFn, invoke

__all__ = ["TestHost", "Emitted", "LogLine"]


@dataclass(kw_only=True)
class Emitted(Emit):
    """An emitted event with the id the fake host assigned."""

    #: ``<source event id>/<index within the call>``.
    id: str


class LogLine(NamedTuple):
    """A log line of a call; compares equal to a ``(level, message)`` tuple."""

    level: Level
    message: str


class _Call:
    """The backend of one call: a private copy of the key's state."""

    def __init__(self, event: Event, state: Optional[dict[str, bytes]]) -> None:
        self.event = event
        self.state: Optional[dict[str, bytes]] = state
        self.emitted: list[Emitted] = []
        self.logs: list[LogLine] = []

    def _scope(self) -> dict[str, bytes]:
        if self.state is None:
            raise NoKey()
        return self.state

    def emit(self, event: Emit) -> str:
        if not event.topic.strip():
            raise Fatal("invalid emit: topic is empty")
        if not event.type.strip():
            raise Fatal("invalid emit: type is empty")
        emitted_id = f"{self.event.id}/{len(self.emitted)}"
        self.emitted.append(
            Emitted(
                id=emitted_id,
                topic=event.topic,
                type=event.type,
                key=event.key,
                data=bytes(event.data),
                content_type=event.content_type,
                data_schema=event.data_schema,
                headers=dict(event.headers),
            )
        )
        return emitted_id

    def state_get(self, name: str) -> Optional[bytes]:
        return self._scope().get(name)

    def state_set(self, name: str, value: bytes) -> None:
        self._scope()[name] = bytes(value)

    def state_delete(self, name: str) -> None:
        self._scope().pop(name, None)

    def state_keys(self) -> list[str]:
        return sorted(self._scope())

    def log(self, level: Level, message: str) -> None:
        self.logs.append(LogLine(level, message))


class TestHost:
    """The in-memory host. State persists across :meth:`run` calls, per key,
    so a sequence of events can be tested."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._state: dict[str, dict[str, bytes]] = {}
        self._emitted: list[Emitted] = []
        self._logs: list[LogLine] = []

    # -- seeding -------------------------------------------------------

    def with_state(self, key: str, name: str, value: bytes | str) -> "TestHost":
        """Seeds a raw state field of `key`; returns the host."""
        self._state.setdefault(key, {})[name] = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return self

    def with_state_json(self, key: str, name: str, value: Any) -> "TestHost":
        """Seeds a state field of `key` with `value` as JSON; returns the host."""
        return self.with_state(key, name, _json.dumps(value))

    # -- running -------------------------------------------------------

    def _call(self, fn: HandlerFn, event: Event, raw: bool) -> Optional[HandlerError]:
        committed = self._state.get(event.key, {}) if event.key is not None else None
        call = _Call(event, dict(committed) if committed is not None else None)
        ctx = Ctx(call)
        try:
            if raw:
                fn(event, ctx)
                error = None
            else:
                error = invoke(fn, event, ctx)
        finally:
            self._logs.extend(call.logs)
        if error is None:
            if event.key is not None and call.state is not None:
                self._state[event.key] = call.state
            self._emitted.extend(call.emitted)
        return error

    def run(self, handler: HandlerFn, event: Event) -> None:
        """Runs `handler` on `event`. If it raises, this call's emits and
        state writes are rolled back (logs are kept) and the exception
        propagates unchanged, so ``pytest.raises(Fatal)`` works and an
        unexpected exception shows its traceback."""
        self._call(handler, event, raw=True)

    def outcome(self, handler: HandlerFn, event: Event) -> Optional[HandlerError]:
        """Runs `handler` on `event` like :meth:`run`, but returns what the
        real host would see: ``None`` for success, else the
        :class:`sluice_sdk.HandlerError` (any other exception mapped to
        :class:`sluice_sdk.Retryable` with its traceback, exactly as in the
        component)."""
        return self._call(handler, event, raw=False)

    # -- inspecting ----------------------------------------------------

    def emitted(self) -> list[Emitted]:
        """Every event emitted by successful calls so far, in order."""
        return list(self._emitted)

    def take_emitted(self) -> list[Emitted]:
        """Removes and returns the emitted events."""
        taken, self._emitted = self._emitted, []
        return taken

    def logs(self) -> list[LogLine]:
        """Log lines of all calls, failed ones included."""
        return list(self._logs)

    def state(self, key: str, name: str) -> Optional[bytes]:
        """A raw state field of `key`, or ``None``."""
        return self._state.get(key, {}).get(name)

    def state_of(self, key: str) -> dict[str, bytes]:
        """All committed state fields of `key`."""
        return dict(self._state.get(key, {}))

    def state_json_of(self, key: str, name: str) -> Any:
        """A JSON state field of `key`, parsed; ``None`` when absent or not
        JSON."""
        raw = self.state(key, name)
        if raw is None:
            return None
        try:
            return _json.loads(raw)
        except ValueError:
            return None

    def state_json(self, name: str) -> Any:
        """A JSON state field, when exactly one key has state (the common
        case in a unit test); else ``None``."""
        if len(self._state) != 1:
            return None
        (key,) = self._state
        return self.state_json_of(key, name)
