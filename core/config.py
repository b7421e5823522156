"""The one loader for radpair's TOML files: service settings, training configurations, task files.

A file is read into a tree of dataclasses (the schema), then environment variables and explicit
overrides are laid over it, and every value is checked against its declared type, so a typo or a
wrong type stops the program with a message naming the key — never a silently used default.

* **Environment**: ``PREFIX`` + the key's path joined with ``_``, upper case:
  ``RADPAIR_LISTENER_AE_TITLE`` is ``listener.ae_title`` of the settings, and
  ``RADPAIR_TRAIN_PRETRAIN_EPOCHS`` is ``pretrain.epochs`` of a training configuration. Values
  are read as TOML values (numbers, booleans, arrays, inline tables) and fall back to plain
  strings, so ``RADPAIR_LISTENER_AE_TITLE=RADPAIR`` needs no quotes.
* **Overrides**: dotted keys (``{"listener.port": 11113}``, or ``["pretrain.epochs=10"]`` from
  a command line's ``--set``), applied last.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A value is missing, unknown or of the wrong type; the message names the file kind and key."""


def parse_value(text: str) -> Any:
    """A TOML value (``10``, ``true``, ``[1, 2]``, ``{a = 1}``), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def read_file(path: str | Path, what: str) -> dict[str, Any]:
    """The raw table of a TOML (or, by its suffix, JSON) file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{what} file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from exc


def load(
    schema: type[T],
    path: str | Path | None = None,
    *,
    what: str,
    env_prefix: str = "",
    environ: Mapping[str, str] | None = None,
    foreign_prefixes: Iterable[str] = (),
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    base: Mapping[str, Any] | None = None,
) -> T:
    """Build ``schema`` from ``base`` (a raw table), the file at ``path``, the environment, overrides.

    ``foreign_prefixes``: environment prefixes that belong to another file kind (ignored here);
    any other ``env_prefix`` variable that names no key is refused, like an unknown key in a file.
    """
    raw: dict[str, Any] = _deep_copy(base or {})
    if path:
        _merge(raw, read_file(path, what))
    if env_prefix:
        _apply_environment(schema, raw, os.environ if environ is None else environ, env_prefix,
                           tuple(foreign_prefixes), what)
    for dotted, value in _override_items(overrides, what):
        if value is None:
            continue
        *tables, key = dotted.split(".")
        target = raw
        for table in tables:
            target = target.setdefault(table, {})
        target[key] = value
    return build(schema, raw, what)


def build(schema: type[T], raw: Mapping[str, Any], what: str, prefix: str = "") -> T:
    """``schema`` from a raw table; unknown keys and wrong types raise :class:`ConfigError`."""
    hints = typing.get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"unknown {what} key '{prefix}{sorted(unknown)[0]}'")
    values = {name: _coerce(hints[name], raw[name], f"{prefix}{name}", what) for name in names if name in raw}
    try:
        return schema(**values)
    except TypeError as exc:
        raise ConfigError(f"{what} table '{prefix.rstrip('.') or '(top)'}': {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{what} table '{prefix.rstrip('.') or '(top)'}': {exc}") from exc


def _override_items(overrides: Mapping[str, Any] | Iterable[str] | None, what: str) -> list[tuple[str, Any]]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return list(overrides.items())
    items = []
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted.strip():
            raise ConfigError(f"{what} override {item!r} must look like key.sub=value")
        items.append((dotted.strip(), parse_value(value)))
    return items


def _deep_copy(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = _deep_copy(value) if isinstance(value, Mapping) else value


def key_paths(schema: type, prefix: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Every key reachable through nested tables, by its ``_``-joined name (lists are leaves)."""
    paths: dict[str, tuple[str, ...]] = {}
    for name, tp in typing.get_type_hints(schema).items():
        path = (*prefix, name)
        found = key_paths(tp, path) if dataclasses.is_dataclass(tp) else {"_".join(path): path}
        for flat, full in found.items():
            if flat in paths:
                raise AssertionError(f"{schema.__name__}: keys {paths[flat]} and {full} share the name {flat}")
            paths[flat] = full
    return paths


def _apply_environment(schema: type, raw: dict[str, Any], environ: Mapping[str, str], prefix: str,
                       foreign: tuple[str, ...], what: str) -> None:
    paths = key_paths(schema)
    for name, value in environ.items():
        if not name.startswith(prefix) or name.startswith(foreign):
            continue
        rest = name[len(prefix):].lower()
        path = paths.get(rest)
        if path is None:
            raise ConfigError(f"unknown {what} key '{rest.replace('_', '.', 1)}' (environment variable {name})")
        target = raw
        for table in path[:-1]:
            target = target.setdefault(table, {})
        target[path[-1]] = parse_value(value)


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str, what: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{what} key '{key}' must be a table")
        return build(tp, value, what, key + ".")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{what} key '{key}' is {value!r}; expected one of {', '.join(repr(a) for a in args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if value is None:
            return value
        for member in members:  # the first member that takes the value (e.g. ``bool | Literal["auto"]``)
            try:
                return _coerce(member, value, key, what)
            except ConfigError:
                continue
        raise ConfigError(f"{what} key '{key}' is {value!r}; expected {' or '.join(_describe(m) for m in members)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{what} key '{key}' must be a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{what} key '{key}' must list {len(args)} values, not {len(value)}")
            return tuple(_coerce(a, v, f"{key}[{i}]", what) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{key}[{i}]", what) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{what} key '{key}' must be a table")
        value_type = args[1] if args else Any
        return {str(k): _coerce(value_type, v, f"{key}.{k}", what) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{what} key '{key}' must be a path string")
        return Path(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp in (int, float) and isinstance(value, bool)):
        raise ConfigError(f"{what} key '{key}' is {value!r}; expected {tp.__name__}")
    return value
