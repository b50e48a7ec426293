"""JSON encoding as the Rust SDK does it (compact, UTF-8), and decoding into
dataclasses with type checks (what serde does for a Rust struct)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, TypeVar, Union

T = TypeVar("T")

__all__ = ["dumps", "loads", "decode", "DecodeError"]


class DecodeError(ValueError):
    """A JSON value does not have the shape of the requested type."""


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; dataclass instances become objects. Raises
    ``TypeError``/``ValueError`` for what JSON cannot hold (NaN included)."""
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
    ).encode("utf-8")


def loads(data: bytes | str) -> Any:
    """Parses JSON; raises ``ValueError`` (also for bytes that are not UTF-8)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    return json.loads(data)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def decode(tp: Any, value: Any, *, deny_unknown: bool = False, path: str = "") -> Any:
    """Checks `value` (parsed JSON) against the type `tp` and builds it.

    Supported: ``Any``/``object``, ``None``, ``bool``, ``int`` (not a bool,
    not a float), ``float`` (an int is accepted), ``str``, ``list[X]``,
    ``dict[str, X]``, ``Optional[X]`` and other unions (first match wins),
    and dataclasses (recursively; a missing field without a default is an
    error; unknown fields are ignored unless `deny_unknown`).
    Raises :class:`DecodeError` naming the path of the offending field.
    """
    where = f" at {path}" if path else ""
    if tp is Any or tp is object:
        return value
    if tp is None or tp is type(None):
        if value is None:
            return None
        raise DecodeError(f"expected null{where}, got {_json_kind(value)}")
    if tp is list:
        tp = typing.List[Any]
    elif tp is dict:
        tp = typing.Dict[str, Any]
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is getattr(types, "UnionType")):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return decode(arg, value, deny_unknown=deny_unknown, path=path)
            except DecodeError as e:
                errors.append(str(e))
        raise DecodeError(errors[0] if len(errors) == 1 else f"no variant of {_type_name(tp)} matches{where}")
    if origin in (list, typing.List):
        if not isinstance(value, list):
            raise DecodeError(f"expected an array{where}, got {_json_kind(value)}")
        (item,) = typing.get_args(tp) or (Any,)
        return [decode(item, v, deny_unknown=deny_unknown, path=f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise DecodeError(f"expected an object{where}, got {_json_kind(value)}")
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {k: decode(item, v, deny_unknown=deny_unknown, path=f"{path}.{k}" if path else k) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise DecodeError(f"expected a boolean{where}, got {_json_kind(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise DecodeError(f"expected an integer{where}, got {_json_kind(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise DecodeError(f"expected a number{where}, got {_json_kind(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise DecodeError(f"expected a string{where}, got {_json_kind(value)}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise DecodeError(f"expected an object ({tp.__name__}){where}, got {_json_kind(value)}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        if deny_unknown:
            unknown = [k for k in value if k not in fields]
            if unknown:
                raise DecodeError(
                    f"unknown field {unknown[0]!r}{where}, expected one of "
                    + ", ".join(repr(n) for n in fields)
                )
        kwargs = {}
        for name, f in fields.items():
            sub = f"{path}.{name}" if path else name
            if name in value:
                kwargs[name] = decode(hints.get(name, Any), value[name], deny_unknown=deny_unknown, path=sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise DecodeError(f"missing field {name!r}" + (f" at {path}" if path else ""))
        return tp(**kwargs)
    raise DecodeError(f"unsupported type {_type_name(tp)}{where}")
