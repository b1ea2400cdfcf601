"""Reading settings: a section's fields from environment variables, its parts, its checks, once per process."""
from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
"""The one vocabulary of boolean settings (Hugging Face's HF_HUB_OFFLINE=1 included)."""


class ConfigError(ValueError):
    """A setting has a value inferq cannot run with; str() is the one line to show."""


def setting(env: str, default: Any, doc: str, minimum: float | None = None,
            choices: tuple[str, ...] = (), shown: str = "") -> Any:
    """Declare a section's field: its environment variable, default, meaning and bounds (shown: how the
    settings page writes a default that depends on the machine)."""
    return field(default=default, metadata={"env": env, "doc": doc, "minimum": minimum, "choices": choices,
                                            "shown": shown})


@dataclass(frozen=True)
class Section:
    """A group of settings: a part (Delivery, Webhooks ...) or a process's whole, which holds its parts."""

    def check(self) -> None:
        """Refuse values that would lose or duplicate work (a process checks across its parts; each part itself)."""


S = TypeVar("S", bound=Section)


def held_parts(section: type[Section]) -> dict[str, type[Section]]:
    """The parts a section holds, by field name (a field whose type is a section)."""
    hints = typing.get_type_hints(section)
    return {f.name: hints[f.name] for f in dataclasses.fields(section)
            if isinstance(hints[f.name], type) and issubclass(hints[f.name], Section)}


def own_fields(section: type[Section]) -> list[dataclasses.Field]:
    """A section's settings of its own, each one environment variable, in declaration order."""
    held = held_parts(section)
    return [f for f in dataclasses.fields(section) if f.name not in held]


def _parse(kind: Any, raw: str, meta: Mapping[str, Any]) -> Any:
    """One environment value as the field's type, within its bounds."""
    env, minimum, choices = meta["env"], meta["minimum"], meta["choices"]
    if kind is bool:
        if raw.lower() not in TRUE + FALSE:
            raise ConfigError(f"{env}={raw!r} is not one of {', '.join(TRUE + FALSE)}")
        return raw.lower() in TRUE
    if kind in (int, float):
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{env}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{env}={value} must be at least {minimum:g}")
        return value
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if choices and raw.lower() not in choices:
        raise ConfigError(f"{env}={raw!r} is not one of {', '.join(choices)}")
    return raw.lower() if choices else raw


def _build(section: type[S], env: Mapping[str, str], part: Callable[[type[Section]], Section]) -> S:
    """A section from env, its parts from part(), then its own check (each part checked itself)."""
    hints = typing.get_type_hints(section)
    values: dict[str, Any] = {name: part(kind) for name, kind in held_parts(section).items()}
    for item in own_fields(section):
        raw = (env.get(item.metadata["env"]) or "").strip()
        if raw:  # unset and empty both mean "the default"
            values[item.name] = _parse(hints[item.name], raw, item.metadata)
    loaded = section(**values)
    loaded.check()
    return loaded


def load(section: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Read a section and its parts from environ (default: this process's environment); raise ConfigError."""
    env = os.environ if environ is None else environ
    return _build(section, env, lambda kind: load(kind, env))


_current: dict[type[Section], Section] = {}


def current(section: type[S]) -> S:
    """This process's settings of a section, read once (raises ConfigError).

    Its parts are this process's parts too, so ``current(Worker).delivery is current(Delivery)``: a module
    that needs one part (celeryconfig) reads the very object the process's settings hold.
    """
    if section not in _current:
        _current[section] = _build(section, os.environ, current)
    return typing.cast(S, _current[section])


def require(*sections: type[Section]) -> None:
    """At a process's start: read its sections, or stop it with one line saying what to fix."""
    try:
        for section in sections:
            current(section)
    except ConfigError as exc:
        sys.stderr.write(f"inferq: invalid configuration: {exc}\n")
        raise SystemExit(2) from None
