from __future__ import annotations

import pytest

from sluice_sdk import Ctx, Event, Fatal, Level, NoKey, Retryable, StateError, TooLarge, handler
from sluice_sdk.testing import TestHost


def counter(event: Event, ctx: Ctx) -> None:
    n = ctx.state.get_json("n", 0)
    ctx.state.set_json("n", n + 1)
    ctx.emit("out", "counted", str(n))
    ctx.info(f"n={n}")
    if event.type == "fail":
        raise Retryable("boom")
    if event.type == "crash":
        raise KeyError("missing")


def test_state_is_per_key_and_failures_roll_back() -> None:
    host = TestHost()
    host.run(counter, Event.new("ok").with_key("a"))
    host.run(counter, Event.new("ok").with_key("a"))
    with pytest.raises(Retryable, match="boom") as info:
        host.run(counter, Event.new("fail").with_key("a"))
    assert info.value.retryable and info.value.kind == "retryable"
    host.run(counter, Event.new("ok").with_key("b"))
    assert host.state_json_of("a", "n") == 2
    assert host.state_json_of("b", "n") == 1
    assert len(host.emitted()) == 3
    # logs of failed calls are kept
    assert [m for _, m in host.logs()] == ["n=0", "n=1", "n=2", "n=0"]
    assert host.state_json("n") is None  # two keys have state


def test_keyless_events_have_no_state() -> None:
    host = TestHost()
    with pytest.raises(NoKey) as info:
        host.run(counter, Event.new("ok"))
    assert isinstance(info.value, StateError) and isinstance(info.value, Fatal)
    assert str(info.value) == "the event has no key, so it has no state"
    assert host.outcome(counter, Event.new("ok")) == Fatal("the event has no key, so it has no state")


def test_emit_ids_and_fields() -> None:
    def h(event: Event, ctx: Ctx) -> None:
        a = ctx.emit_json("t", "a", {"x": 1}, key="k1", data_schema="v1", headers={"X-Trace": "1"})
        b = ctx.emit("t", "b", b"\x00raw", content_type="application/octet-stream")
        ctx.state.set("ids", f"{a},{b}")

    host = TestHost()
    host.run(h, Event.new("go").with_id("ev-9").with_key("k"))
    a, b = host.emitted()
    assert (a.id, b.id) == ("ev-9/0", "ev-9/1")
    assert (a.topic, a.type, a.key, a.content_type, a.data_schema, a.headers) == (
        "t", "a", "k1", "application/json", "v1", {"x-trace": "1"},
    )
    assert a.json() == {"x": 1}
    assert (b.data, b.content_type, b.key) == (b"\x00raw", "application/octet-stream", None)
    assert host.state("k", "ids") == b"ev-9/0,ev-9/1"
    # ids restart per call
    host.run(h, Event.new("go").with_id("ev-10").with_key("k"))
    assert [e.id for e in host.take_emitted()] == ["ev-9/0", "ev-9/1", "ev-10/0", "ev-10/1"]
    assert host.emitted() == []


def test_invalid_emits_are_fatal() -> None:
    def empty_topic(event: Event, ctx: Ctx) -> None:
        ctx.emit(" ", "x")

    def empty_type(event: Event, ctx: Ctx) -> None:
        ctx.emit("t", "")

    host = TestHost()
    with pytest.raises(Fatal, match="invalid emit: topic is empty"):
        host.run(empty_topic, Event.new("x"))
    with pytest.raises(Fatal, match="invalid emit: type is empty"):
        host.run(empty_type, Event.new("x"))


def test_state_api() -> None:
    def h(event: Event, ctx: Ctx) -> None:
        assert ctx.state.get("raw") == b"\x01"
        assert ctx.state.keys() == ["raw", "seeded"]
        assert ctx.state.get_json("seeded") == {"v": [1, 2]}
        assert ctx.state.get_json("absent") is None
        assert ctx.state.get_json("absent", 7) == 7
        ctx.state.delete("raw")
        ctx.state.delete("never-set")
        ctx.state.set("text", "é")
        ctx.state.set_json("json", {"b": 1, "a": [True, None]})
        assert ctx.state.keys() == ["json", "seeded", "text"]

    host = TestHost().with_state("k", "raw", b"\x01").with_state_json("k", "seeded", {"v": [1, 2]})
    host.run(h, Event.new("x").with_key("k"))
    assert host.state_of("k") == {
        "seeded": b'{"v":[1,2]}',
        "text": "é".encode(),
        "json": b'{"b":1,"a":[true,null]}',
    }
    assert host.state_json("json") == {"b": 1, "a": [True, None]}
    assert host.state_json_of("k", "text") is None  # not JSON
    assert host.state_json_of("k", "raw") is None  # deleted
    assert host.state_json_of("other", "json") is None


def test_bad_state_json_is_fatal() -> None:
    def h(event: Event, ctx: Ctx) -> None:
        ctx.state.get_json("n")

    def unserializable(event: Event, ctx: Ctx) -> None:
        ctx.state.set_json("n", object())

    def nan(event: Event, ctx: Ctx) -> None:
        ctx.emit_json("t", "x", float("nan"))

    host = TestHost().with_state("k", "n", b"{oops")
    with pytest.raises(Fatal, match="state field 'n' is not the expected JSON"):
        host.run(h, Event.new("x").with_key("k"))
    with pytest.raises(Fatal, match="invalid JSON for state field 'n': Object of type object"):
        host.run(unserializable, Event.new("x").with_key("k"))
    with pytest.raises(Fatal, match="invalid JSON payload"):
        host.run(nan, Event.new("x"))


def test_get_json_with_a_type() -> None:
    def h(event: Event, ctx: Ctx) -> None:
        ctx.state.get_json("n", 0, cls=int)

    host = TestHost().with_state_json("k", "n", "three")
    with pytest.raises(Fatal, match="state field 'n' is not the expected JSON: expected an integer"):
        host.run(h, Event.new("x").with_key("k"))


def test_other_exceptions_propagate_from_run_and_map_to_retryable_in_outcome() -> None:
    host = TestHost()
    with pytest.raises(KeyError):
        host.run(counter, Event.new("crash").with_key("a"))
    assert host.state_of("a") == {} and host.emitted() == []
    error = host.outcome(counter, Event.new("crash").with_key("a"))
    assert isinstance(error, Retryable)
    lines = error.message.splitlines()
    assert lines[0] == "unhandled KeyError: 'missing'"
    assert lines[1] == "Traceback (most recent call last):"
    assert any("in counter" in line for line in lines)
    assert lines[-1] == "KeyError: 'missing'"
    assert not any("in invoke" in line for line in lines)  # the SDK's frame is left out
    assert host.state_of("a") == {} and host.emitted() == []
    assert host.outcome(counter, Event.new("ok").with_key("a")) is None
    assert host.state_json_of("a", "n") == 1


def test_logging_helpers() -> None:
    def h(event: Event, ctx: Ctx) -> None:
        ctx.trace("t")
        ctx.debug("d")
        ctx.info("i")
        ctx.warn("w")
        ctx.error("e")
        ctx.log(Level.INFO, "l")

    host = TestHost()
    host.run(h, Event.new("x"))
    assert host.logs() == [
        (Level.TRACE, "t"), (Level.DEBUG, "d"), (Level.INFO, "i"),
        (Level.WARN, "w"), (Level.ERROR, "e"), (Level.INFO, "l"),
    ]
    assert host.logs()[0].level == "trace"  # Level is a str enum


def test_errors() -> None:
    assert Fatal("x") == Fatal("x")
    assert Fatal("x") != Retryable("x")
    assert repr(Retryable("m")) == "Retryable('m')"
    assert str(TooLarge("value of 9 bytes exceeds")) == "state too large: value of 9 bytes exceeds"
    assert not Fatal("x").retryable and Fatal("x").kind == "fatal"


def test_handler_decorator_returns_the_function() -> None:
    def f(event: Event, ctx: Ctx) -> None:
        pass

    assert handler(f) is f
    with pytest.raises(TypeError):
        handler(3)  # type: ignore[arg-type]


def test_system_exit_is_retryable_too() -> None:
    import sys

    def h(event: Event, ctx: Ctx) -> None:
        sys.exit(3)

    error = TestHost().outcome(h, Event.new("x"))
    assert isinstance(error, Retryable)
    assert error.message.startswith("unhandled SystemExit: 3\nTraceback")
