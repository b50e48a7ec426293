"""The handler's view of the host: emit, per-key state and logging, behind
one small protocol (:class:`Backend`), so that the same handler code runs
against the real host (in the component) and against
:class:`sluice_sdk.testing.TestHost` (natively)."""

from __future__ import annotations

from enum import Enum
from typing import Any, Mapping, Optional, Protocol, Type, TypeVar, overload

from . import _json
from ._errors import Fatal
from ._event import Emit, _as_bytes

__all__ = ["Level", "Backend", "State", "Ctx"]

T = TypeVar("T")


class Level(str, Enum):
    """Severity of a log line (the names ``sluice test`` prints)."""

    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class Backend(Protocol):
    """The operations a handler can ask of its host. State calls raise
    :class:`sluice_sdk.StateError`; an invalid emit raises
    :class:`sluice_sdk.Fatal`. Handler code uses :class:`Ctx` instead."""

    def emit(self, event: Emit) -> str: ...

    def state_get(self, name: str) -> Optional[bytes]: ...

    def state_set(self, name: str, value: bytes) -> None: ...

    def state_delete(self, name: str) -> None: ...

    def state_keys(self) -> list[str]: ...

    def log(self, level: Level, message: str) -> None: ...


def _encode(value: Any, what: str) -> bytes:
    try:
        return _json.dumps(value)
    except (TypeError, ValueError) as e:
        raise Fatal(f"invalid JSON {what}: {e}") from None


class State:
    """The state of the current event's key: a small map from field names
    to bytes. Reads see committed state plus this call's own writes; writes
    commit only if the handler succeeds. On a keyless event every call
    raises :class:`sluice_sdk.NoKey` (fatal if not caught)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def get(self, name: str) -> Optional[bytes]:
        """A raw field; ``None`` when it was never set or was deleted."""
        return self._backend.state_get(name)

    def set(self, name: str, value: bytes | bytearray | memoryview | str) -> None:
        """Writes a raw field (a ``str`` is stored as UTF-8)."""
        self._backend.state_set(name, _as_bytes(value))

    def delete(self, name: str) -> None:
        """Deletes a field; deleting a missing field is not an error."""
        self._backend.state_delete(name)

    def keys(self) -> list[str]:
        """Names of the fields that are set, sorted."""
        return self._backend.state_keys()

    @overload
    def get_json(self, name: str, default: Any = None) -> Any: ...

    @overload
    def get_json(self, name: str, default: T, *, cls: Type[T]) -> T: ...

    def get_json(self, name: str, default: Any = None, *, cls: Any = None) -> Any:
        """A field stored as JSON, parsed (and, with `cls`, checked and
        built as in :meth:`sluice_sdk.Event.json`); `default` when it is not
        set. A stored value that does not parse is :class:`Fatal`: the
        stored state and the code disagree."""
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = _json.loads(raw)
            return value if cls is None else _json.decode(cls, value)
        except ValueError as e:  # also DecodeError
            raise Fatal(f"state field {name!r} is not the expected JSON: {e}") from None

    def set_json(self, name: str, value: Any) -> None:
        """Writes a field as compact JSON (dataclasses become objects). A
        value JSON cannot hold is :class:`Fatal`."""
        self.set(name, _encode(value, f"for state field {name!r}"))


class Ctx:
    """What a handler uses to act: emit events, read and write the state of
    the event's key (:attr:`state`), and log. Effects are buffered by the
    host and commit only if the handler returns normally."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        #: The state of the current event's key.
        self.state: State = State(backend)

    def emit(
        self,
        topic: str,
        type: str,
        data: bytes | bytearray | memoryview | str = b"",
        *,
        key: Optional[str] = None,
        content_type: Optional[str] = None,
        data_schema: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> str:
        """Emits an event with a raw payload; returns the id the host
        assigned, which is the same on every retry of the current event. An
        invalid event (empty topic or type, bad header name) is
        :class:`Fatal`."""
        return self._backend.emit(
            Emit(
                topic=topic,
                type=type,
                key=key,
                data=_as_bytes(data),
                content_type=content_type,
                data_schema=data_schema,
                headers={k.lower(): v for k, v in (headers or {}).items()},
            )
        )

    def emit_json(
        self,
        topic: str,
        type: str,
        value: Any,
        *,
        key: Optional[str] = None,
        data_schema: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> str:
        """Emits an event with `value` as its JSON payload
        (``application/json``; dataclasses become objects); returns its id."""
        return self.emit(
            topic,
            type,
            _encode(value, "payload"),
            key=key,
            content_type="application/json",
            data_schema=data_schema,
            headers=headers,
        )

    def log(self, level: Level, message: str) -> None:
        """Records `message` at `level`."""
        self._backend.log(level, str(message))

    def trace(self, message: str) -> None:
        """Logs at trace level."""
        self.log(Level.TRACE, message)

    def debug(self, message: str) -> None:
        """Logs at debug level."""
        self.log(Level.DEBUG, message)

    def info(self, message: str) -> None:
        """Logs at info level."""
        self.log(Level.INFO, message)

    def warn(self, message: str) -> None:
        """Logs at warn level."""
        self.log(Level.WARN, message)

    def error(self, message: str) -> None:
        """Logs at error level."""
        self.log(Level.ERROR, message)
