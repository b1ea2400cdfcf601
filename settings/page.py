"""docs/settings.md, generated from the sections: each part's variables, then what each process reads."""
from __future__ import annotations

from inferq.settings.parser import Section, held_parts, own_fields
from inferq.settings.parts import (
    ApiAddress,
    ApiKeys,
    Delivery,
    Durability,
    Failover,
    ModelSource,
    RedisLink,
    Webhooks,
)
from inferq.settings.processes import Api, Client, Stack, Worker

PARTS: tuple[type[Section], ...] = (RedisLink, Delivery, ModelSource, Webhooks, ApiKeys, ApiAddress, Durability,
                                    Failover)
"""The parts, in the page's order: the shared Redis first, then what workers, the API and the stack add."""

PROCESSES: tuple[type[Section], ...] = (Worker, Api, Client, Stack)
"""One settings object per kind of process, in the page's order."""


def _table(section: type[Section]) -> list[str]:
    """A section's own variables as a markdown table (none: no table)."""
    own = own_fields(section)
    if not own:
        return []
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for item in own:
        shown = item.metadata["shown"] or ("" if item.default in ("", ()) else str(item.default))
        cell = f"`{shown}`" if shown else "(unset)"
        rows.append(f"| `{item.metadata['env']}` | {cell} | {item.metadata['doc']} |")
    return [*rows, ""]


def _link(section: type[Section]) -> str:
    """A markdown link to a section's block on the page."""
    return f"[{section.__name__}](#{section.__name__.lower()})"


def _holds(section: type[Section]) -> set[type[Section]]:
    """Every part a section holds, the parts of its parts included."""
    held = set(held_parts(section).values())
    return held.union(*(_holds(part) for part in held))


def markdown() -> str:
    """The settings page: one block per part, then one per kind of process naming the parts it holds."""
    out = ["# Settings", "", "Every setting is an environment variable (`settings/`). Each kind of process reads "
           "one settings object when it starts: the parts it holds, declared once below, and its own "
           "variables. Empty means unset.", "", "## Parts", ""]
    for part in PARTS:
        readers = ", ".join(_link(process) for process in PROCESSES if part in _holds(process))
        out += [f"### {part.__name__}", "", part.__doc__ or "", "", f"Read by: {readers}.", "", *_table(part)]
    out += ["## Processes", ""]
    for process in PROCESSES:
        held = ", ".join(_link(kind) for kind in held_parts(process).values())
        out += [f"### {process.__name__}", "", process.__doc__ or "", "", f"Holds: {held}.", "", *_table(process)]
    return "\n".join(out)
