"""One way to read configuration, for the agent (``device_agent.agent.config``) and the gateway
(``gateway.settings``): TOML plus environment into frozen keyword-only dataclasses.

Rules, the same for both: every key must be a field (a typo is refused, with the nearest name as a
hint, never silently replaced by the default); every value is converted to its field's annotated type
or refused (``port = "1883"`` in TOML is an error; environment values, wrapped in ``EnvText``, are
parsed as the type says); every error names the key, as ``section.key``; a missing or unreadable file is a
``SettingsError``, not a traceback. The values check their own invariants in ``__post_init__``.
Each CLI exits 2 on ``SettingsError`` and the systemd units carry ``RestartPreventExitStatus=2``, so
a bad file is reported once, not restarted in a loop.

Supported annotations: ``str``, ``int``, ``float``, ``bool``, ``Path``, ``bytes`` (hex), ``X | None``,
``tuple[X, ...]``, and nested dataclasses (a TOML table). Why not pydantic-settings or msgspec: the
values stay the plain frozen dataclasses the rest of the code (and the engineers adding fields)
already use, with no second model layer, and the whole rule set fits in this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["EnvText", "SettingsError", "build", "convert", "read_toml", "refuse_unknown", "table"]

T = TypeVar("T")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
PathHook = Callable[[str, str], Path]  # (text, key) -> the path it names


class EnvText(str):
    """A value from the environment: text, parsed as its field's type (a TOML value must have the type)."""

    __slots__ = ()


class SettingsError(ValueError):
    """A configuration value is missing or invalid, or the file cannot be read (the message says which)."""


def read_toml(path: Path) -> dict[str, Any]:
    """The file's tables; a missing, unreadable or malformed file is a ``SettingsError``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None


def table(data: Mapping[str, Any], name: str, where: str = "") -> dict[str, Any]:
    """``data[name]`` as a table (empty when absent)."""
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise SettingsError(f"[{where}{name}] must be a table, got {value!r}")
    return dict(value)


def refuse_unknown(data: Mapping[str, Any], known: typing.Iterable[str], where: str = "") -> None:
    known = list(known)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {where}{close[0]}?)" if close else ""
            raise SettingsError(f"unknown setting {where}{key}{hint}")


def _plain_path(text: str, key: str) -> Path:
    return Path(text)


def convert(kind: Any, value: Any, key: str, *, path: PathHook = _plain_path) -> Any:
    """``value`` (from TOML, or a string from the environment) as the annotated type ``kind``."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or value == "":
            return None  # an optional value left empty (a required one may not be)
        if len(options) != 1:
            raise TypeError(f"{key}: unsupported annotation {kind}")
        return convert(options[0], value, key, path=path)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if isinstance(value, EnvText):
            value = [EnvText(v.strip()) for v in value.split(",") if v.strip()]  # comma-separated
        if not isinstance(value, list | tuple):
            raise SettingsError(f"{key} must be a list, got {value!r}")
        return tuple(convert(item, v, f"{key}[{i}]", path=path) for i, v in enumerate(value))
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        if not isinstance(value, Mapping):
            raise SettingsError(f"[{key}] must be a table, got {value!r}")
        return build(kind, value, where=f"{key}.", path=path)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, EnvText) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise SettingsError(f"{key} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, EnvText):
            try:
                return int(value.strip(), 0)
            except ValueError:
                pass
        raise SettingsError(f"{key} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, EnvText):
            try:
                return float(value)
            except ValueError:
                pass
        raise SettingsError(f"{key} must be a number, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return str(value)
        raise SettingsError(f"{key} must be a string, got {value!r}")
    if kind is Path:
        if not isinstance(value, str):
            raise SettingsError(f"{key} must be a path (a string), got {value!r}")
        if not value:
            raise SettingsError(f"{key} must not be empty")
        return path(str(value), key)
    if kind is bytes:
        if not isinstance(value, str):
            raise SettingsError(f"{key} must be a hex string, got {value!r}")
        try:
            return bytes.fromhex(str(value).removeprefix("0x"))
        except ValueError:
            raise SettingsError(f"{key} must be hex, got {value!r}") from None
    raise TypeError(f"{key}: unsupported annotation {kind}")


def build(cls: type[T], data: Mapping[str, Any], *, where: str = "", path: PathHook = _plain_path) -> T:
    """The dataclass ``cls`` from a table: unknown keys refused, every value converted by its field's
    annotation, required fields checked; ``where`` prefixes the keys in messages (``"broker."``)."""
    assert dataclasses.is_dataclass(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    refuse_unknown(data, fields, where)
    hints = typing.get_type_hints(cls)
    kwargs = {k: convert(hints[k], v, f"{where}{k}", path=path) for k, v in data.items()}
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in kwargs:
            raise SettingsError(f"missing setting {where}{name}")
    return cls(**kwargs)
