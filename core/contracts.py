"""Frozen dataclasses as the JSON files that stages hand each other: the data manifest, the build
manifest and results.json (docs/results.md).

`to_json` writes a dataclass's fields in their declared order (so a file's keys keep their order);
`from_json` reads one back, checking every field's type, and names the first field that is wrong.
A field declared with `metadata=FLATTEN` holds a dataclass whose fields sit at its parent's level
in the JSON (the data manifest's inputs, which its dataset_key hashes, are its first keys); one
declared with `metadata=key("from")` is that key in the JSON (a key that is no Python name).
Types understood: int, float (an int is taken), str, bool, None, `X | None`, `tuple[X, ...]`, a
nested dataclass, and `dict` or `list` for payloads kept as they are (a checkpoint's config).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")
FLATTEN = {"flatten": True}


def key(name: str) -> dict:
    """The metadata of a field whose JSON key is `name`."""
    return {"key": name}


class ContractError(ValueError):
    """A JSON document that does not have the shape of its dataclass; the message names the field."""


class NewerFormat(ContractError):
    """A file written by a newer npueval than this one: its format_version is above what this one reads."""


def json_type(value) -> str:
    """What JSON calls the type of a parsed value: null, boolean (true or false), number, string,
    array or object; messages about a file's JSON use these names, never Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean ({'true' if value else 'false'})"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _a(name: str) -> str:
    """`a JSON type` as a noun phrase: "an array", "a number", "null"."""
    return name if name == "null" else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


#: The JSON spelling of each Python type a contract field can declare.
_EXPECTED = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "an array",
             dict: "an object"}


def _shown(value) -> str:
    """The value as JSON writes it (`null`, `true`, `"1"`), cut at 60 characters."""
    return f"{json.dumps(value, ensure_ascii=False, default=repr):.60}"


def check_format_version(obj, supported: int) -> None:
    """Refuse a document of a newer format_version than `supported`; an older one reads (a key
    added since takes its default, where it has one)."""
    version = obj.get("format_version") if isinstance(obj, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > supported:
        raise NewerFormat(f"format_version {version} is newer than this npueval reads ({supported}): "
                          "upgrade npueval to read it")


def to_json(obj) -> dict:
    out: dict = {}
    for f in dataclasses.fields(obj):
        value = _dump(getattr(obj, f.name))
        if f.metadata.get("flatten"):
            out.update(value)
        else:
            out[f.metadata.get("key", f.name)] = value
    return out


def _dump(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(value)
    if isinstance(value, (tuple, list)):
        return [_dump(v) for v in value]
    return value


def from_json(cls: type[T], obj: Any, where: str = "") -> T:
    if not isinstance(obj, dict):
        raise ContractError(f"{where or cls.__name__}: an object expected, not {_a(json_type(obj))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        name = f.metadata.get("key", f.name)
        path = f"{where}.{name}" if where else name
        if f.metadata.get("flatten"):
            values[f.name] = from_json(hints[f.name], obj, where)
        elif name in obj:
            values[f.name] = _load(hints[f.name], obj[name], path)
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        else:
            raise ContractError(f"{path}: missing")
    return cls(**values)


def _load(tp, value, path: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _load(a, value, path)
            except ContractError as exc:
                errors.append(str(exc))
        raise ContractError(errors[0] if len(errors) == 1 else f"{path}: {_shown(value)} is none of {tp}")
    if origin is tuple:
        if not isinstance(value, list):
            raise ContractError(f"{path}: an array expected, not {_a(json_type(value))}")
        return tuple(_load(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return from_json(tp, value, path)
    if tp is Any:
        return value
    expected = origin or tp
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (expected is int and isinstance(value, bool)) or not isinstance(value, expected):
        raise ContractError(f"{path}: {_EXPECTED.get(expected, expected)} expected, not {_shown(value)}")
    return value
