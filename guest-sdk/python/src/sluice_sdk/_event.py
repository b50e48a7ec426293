"""The event a handler receives, and the event it emits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Type, TypeVar, overload

from . import _json
from ._errors import Fatal

__all__ = ["Event", "Emit"]

T = TypeVar("T")



def _as_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"event data must be bytes or str, not {type(data).__name__}")


def _parse(data: bytes, tp: Any, deny_unknown: bool, what: str) -> Any:
    try:
        value = _json.loads(data)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise Fatal(f"{what} is not the expected JSON: {e}") from None
    if tp is None:
        return value
    try:
        return _json.decode(tp, value, deny_unknown=deny_unknown)
    except _json.DecodeError as e:
        raise Fatal(f"{what} is not the expected JSON: {e}") from None


@dataclass(frozen=True, kw_only=True)
class Event:
    """One event delivered to the handler: CloudEvents attributes, the
    ordering key and delivery metadata. Immutable; in tests, build one with
    :meth:`new` or :meth:`from_json` and the ``with_*`` methods."""

    #: Unique id (CloudEvents ``id``); the host deduplicates on it.
    id: str = "test-event-1"
    #: Origin, a URI reference (CloudEvents ``source``).
    source: str = "/sluice/test"
    #: Event type, e.g. ``order.placed`` (CloudEvents ``type``).
    type: str
    #: When it happened, RFC 3339 (CloudEvents ``time``).
    time: Optional[str] = None
    #: Media type of ``data`` (CloudEvents ``datacontenttype``).
    content_type: Optional[str] = None
    #: Payload schema or version (CloudEvents ``dataschema``).
    data_schema: Optional[str] = None
    #: The payload.
    data: bytes = b""
    #: Extension attributes and headers, by lowercase name.
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Ordering key; ``None`` for keyless events (which have no state).
    key: Optional[str] = None
    #: Topic it was consumed from.
    topic: str = "test"
    #: Delivery attempt, from 1.
    attempt: int = 1

    # -- test builders -------------------------------------------------

    @classmethod
    def new(cls, type: str, data: bytes | bytearray | memoryview | str = b"") -> "Event":
        """An event of type `type` with raw `data`, for tests; the other
        attributes get test defaults (id ``test-event-1``, source
        ``/sluice/test``, topic ``test``, attempt 1, no key)."""
        return cls(type=type, data=_as_bytes(data))

    @classmethod
    def from_json(cls, type: str, value: Any) -> "Event":
        """An event of type `type` with `value` as its JSON payload
        (``application/json``), for tests. Dataclass instances are encoded
        as objects."""
        return cls(type=type, data=_json.dumps(value), content_type="application/json")

    def _with(self, **changes: Any) -> "Event":
        return dataclasses.replace(self, **changes)

    def with_id(self, id: str) -> "Event":
        """A copy with another id."""
        return self._with(id=id)

    def with_source(self, source: str) -> "Event":
        """A copy with another source."""
        return self._with(source=source)

    def with_type(self, type: str) -> "Event":
        """A copy with another type."""
        return self._with(type=type)

    def with_time(self, time: Optional[str]) -> "Event":
        """A copy with another time."""
        return self._with(time=time)

    def with_key(self, key: Optional[str]) -> "Event":
        """A copy with another ordering key (``None``: keyless)."""
        return self._with(key=key)

    def with_topic(self, topic: str) -> "Event":
        """A copy with another topic."""
        return self._with(topic=topic)

    def with_content_type(self, content_type: Optional[str]) -> "Event":
        """A copy with another content type."""
        return self._with(content_type=content_type)

    def with_data_schema(self, data_schema: Optional[str]) -> "Event":
        """A copy with another data schema (payload version)."""
        return self._with(data_schema=data_schema)

    def with_data(self, data: bytes | bytearray | memoryview | str) -> "Event":
        """A copy with another raw payload."""
        return self._with(data=_as_bytes(data))

    def with_header(self, name: str, value: str) -> "Event":
        """A copy with one more header / extension attribute (name
        lowercased, as the host does)."""
        headers = dict(self.headers)
        headers[name.lower()] = value
        return self._with(headers=headers)

    def with_attempt(self, attempt: int) -> "Event":
        """A copy with another delivery attempt."""
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        return self._with(attempt=attempt)

    # -- reading -------------------------------------------------------

    @overload
    def json(self) -> Any: ...

    @overload
    def json(self, cls: Type[T], *, deny_unknown: bool = False) -> T: ...

    def json(self, cls: Any = None, *, deny_unknown: bool = False) -> Any:
        """The payload parsed as JSON; with `cls` (a dataclass, or a type
        such as ``dict[str, int]``) checked against it and built, like serde
        into a Rust struct (`deny_unknown` rejects unknown fields).

        A payload that does not parse or fit is a poison event: this raises
        :class:`Fatal`, so letting it escape dead-letters the event."""
        return _parse(self.data, cls, deny_unknown, f"event {self.id} ({self.type}): payload")

    def text(self) -> str:
        """The payload as UTF-8 text; :class:`Fatal` when it is not UTF-8."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Fatal(f"payload is not UTF-8: {e}") from None

    def header(self, name: str) -> Optional[str]:
        """A header or extension attribute by name (matched lowercase)."""
        return self.headers.get(name.lower())


@dataclass(kw_only=True)
class Emit:
    """An event to emit, as the handler built it (the host assigns its id)."""

    #: Destination topic.
    topic: str
    #: Event type.
    type: str
    #: Ordering key.
    key: Optional[str] = None
    #: Payload.
    data: bytes = b""
    #: Media type of the payload.
    content_type: Optional[str] = None
    #: Payload schema or version.
    data_schema: Optional[str] = None
    #: Extra headers / extension attributes.
    headers: dict[str, str] = field(default_factory=dict)

    @overload
    def json(self) -> Any: ...

    @overload
    def json(self, cls: Type[T], *, deny_unknown: bool = False) -> T: ...

    def json(self, cls: Any = None, *, deny_unknown: bool = False) -> Any:
        """The payload parsed as JSON (useful in tests); see :meth:`Event.json`."""
        return _parse(self.data, cls, deny_unknown, f"emitted {self.type} payload")
