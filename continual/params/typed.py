"""A mapping read into frozen dataclasses, or refused with the dotted key that does not fit.

Each field's type says what a value may be: ``bool``, ``int``, ``float``, ``str``, ``list[...]``, a ``Literal``
of choices, a union of these (``int | None``), or a nested dataclass (a section). Bounds are field metadata
(service.config.bounded); ``metadata["key"]`` names a field whose YAML key is no Python name (``lambda``).
Values are normalised to their type: an integral float in an ``int`` field becomes an int, and a ``float``
field takes a number written as a string (YAML 1.1 reads ``1e-4``, without a dot, as one). An int stays an
int in a ``float`` field (an int is a float to Python's typing), so what a round records does not change.
"""
from __future__ import annotations

import difflib
import types
import typing
from dataclasses import Field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union

from service.config import out_of_bounds


class ParamsError(ValueError):
    """A params.yaml that does not fit the schema: ``file``, the dotted ``key`` and the ``problem``."""

    def __init__(self, file: str | Path, key: str, problem: str):
        self.file, self.key, self.problem = str(file), key, problem
        super().__init__(f"{file}: {problem}")


class _Misfit(Exception):
    """A value that does not fit its type; the caller names the key."""


def yaml_key(spec: Field) -> str:
    return spec.metadata.get("key", spec.name)


def dotted_keys(cls: type, prefix: str = "") -> list[str]:
    """Every key of the schema ``cls``, sections and settings, dotted as in ``dvc exp run -S``."""
    keys = []
    for spec, kind in _fields(cls):
        key = prefix + yaml_key(spec)
        keys.append(key)
        if is_dataclass(kind):
            keys += dotted_keys(kind, key + ".")
    return keys


def read(cls: type, data: Any, file: str | Path) -> Any:
    """``data`` (a parsed YAML document) as an instance of ``cls``; a missing key takes its default."""
    return _Reader(file, cls).section(cls, data, "")


def to_dict(value: Any) -> Any:
    """A schema instance back as plain dicts and lists, keyed as in params.yaml."""
    if is_dataclass(value):
        return {yaml_key(spec): to_dict(getattr(value, spec.name)) for spec in fields(value)}
    return [to_dict(item) for item in value] if isinstance(value, list) else value


def _fields(cls: type) -> list[tuple[Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(spec, hints[spec.name]) for spec in fields(cls)]


class _Reader:
    def __init__(self, file: str | Path, schema: type):
        self.file, self.schema = file, schema

    def refuse(self, key: str, problem: str) -> ParamsError:
        return ParamsError(self.file, key, problem)

    def section(self, cls: type, data: Any, key: str) -> Any:
        """A section (``key``: its dotted name, "" for the file) read into ``cls``; empty (null): its defaults."""
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise self.refuse(key, f"{key or 'the file'} must be a mapping of settings (key: value lines), "
                                   f"not {data!r}")
        prefix = f"{key}." if key else ""
        specs = {yaml_key(spec): (spec, kind) for spec, kind in _fields(cls)}
        for name in data:
            if name not in specs:
                raise self.refuse(prefix + str(name), self.unknown(str(name), key, list(specs)))
        values = {spec.name: self.setting(spec, kind, data[name], prefix + name)
                  for name, (spec, kind) in specs.items() if name in data}
        try:
            return cls(**values)
        except ValueError as error:  # a rule across settings (a section's __post_init__)
            raise self.refuse(key, f"{key}: {error}") from None

    def unknown(self, name: str, key: str, siblings: list[str]) -> str:
        prefix = f"{key}." if key else ""
        near = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
        if near:
            return f"unknown key {prefix}{name}: did you mean {prefix}{near[0]}?"
        elsewhere = [k for k in dotted_keys(self.schema)  # only now: the schema's keys are for a refusal's hint
                     if difflib.get_close_matches(name, [k.rsplit(".", 1)[-1]], cutoff=0.8)]
        if elsewhere:
            return f"unknown key {prefix}{name}: did you mean {elsewhere[0]}?"
        return f"unknown key {prefix}{name}: the keys {f'of {key} ' if key else ''}are {', '.join(siblings)}"

    def setting(self, spec: Field, kind: Any, value: Any, key: str) -> Any:
        if is_dataclass(kind):
            return self.section(kind, value, key)
        try:
            value = _convert(kind, value)
        except _Misfit as misfit:
            raise self.refuse(key, f"{key} {misfit}") from None
        problem = out_of_bounds(value, spec.metadata) if _is_number(value) else None
        if problem:
            raise self.refuse(key, f"{key} {problem}, not {value!r}")
        return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _convert(kind: Any, value: Any) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _convert(option, value)
            except _Misfit:
                continue
        raise _Misfit(f"must be {' or '.join(_describe(option) for option in args)}, not {value!r}")
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        near = difflib.get_close_matches(str(value), [str(a) for a in args], n=1, cutoff=0.6)
        raise _Misfit(f"must be {_describe(kind)}, not {value!r}" + (f": did you mean {near[0]}?" if near else ""))
    if origin is list:
        if not isinstance(value, list):
            raise _Misfit(f"must be {_describe(kind)}, not {value!r}")
        try:
            return [_convert(args[0], item) for item in value]
        except _Misfit:
            raise _Misfit(f"must be {_describe(kind)}, not {value!r}") from None
    return _scalar(kind, value)


def _scalar(kind: Any, value: Any) -> Any:
    if kind is type(None) and value is None:
        return None
    if kind is bool and isinstance(value, bool) or kind is str and isinstance(value, str):
        return value
    if kind is int and _is_number(value) and float(value).is_integer():
        return int(value)
    if kind is float and _is_number(value):
        return value
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise _Misfit(f"must be {_describe(kind)}, not {value!r}")


def _describe(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return f"one of {', '.join(map(str, args))}" if len(args) > 1 else repr(args[0])
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "empty (null)"}.get(kind, str(kind))

