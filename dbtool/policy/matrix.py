"""The effective access matrix: probes run as callers, one cell each, and its renderings.

Both `dbtool audit` (any callers, measured only) and `dbtool verify` (the standard personas,
each cell judged by dbtool.policy.contract) run the probes through `probe_all`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from dbtool.policy import estimates
from dbtool.policy.probes import ALL_PROBES, Caller, Probe
from dbtool.policy.worlds import World
from dbtool.render import markdown, table
from dbtool.supabase.postgrest import Outcome

REFUSALS = {"permission denied": "no grant", "new row violates row-level security": "RLS"}
LEGEND = ("ok N rows / ok N changed = allowed; SQLSTATE + reason = refused (no grant: no privilege; "
          "RLS: row-level security); yes/no = Realtime check; same estimate / X vs missing = the planned count "
          "(Prefer: count=planned) reveals nothing / depends on rows the caller cannot see")


@dataclass(frozen=True)
class Cell:
    persona: str
    object: str
    operation: str
    kind: str
    allowed: bool  # for an estimate cell: the estimate leaks (it depends on rows the caller cannot see)
    result: str
    passed: bool = True  # as the contract says (verify); always true for a plain measurement
    failure: str | None = None

    @property
    def key(self) -> str:
        return f"{self.persona} | {self.object} {self.operation}"

    @property
    def rows(self) -> int | None:
        """Rows seen or changed when allowed (None for Realtime checks and refusals)."""
        if not self.allowed or self.kind in ("realtime", "estimate"):
            return None
        return int(self.result.split(" ", 1)[0])

    @property
    def short(self) -> str:
        """`ok 3 rows`, `ok 1 changed`, `42501 no grant`, `42501 RLS`, `P0002 thread not found`, yes/no."""
        if self.kind == "realtime":
            return "yes" if self.allowed else "no"
        if self.kind == "estimate" and (self.allowed or self.result == estimates.SAME):
            return self.result
        if not self.allowed:
            state, _, message = self.result.partition(" ")
            why = next((short for prefix, short in REFUSALS.items() if message.startswith(prefix)), None)
            return f"{state} {why or message.split(':')[0]}"
        return "ok " + self.result.replace(" row(s) affected", " changed").replace(" row(s)", " rows")


def cell(probe: Probe, who: Caller, got: Outcome) -> Cell:
    if probe.kind == "estimate":
        return Cell(who.label, probe.object, probe.operation, probe.kind, estimates.leaks(got), estimates.describe(got))
    result = ("allowed" if got.ok else "denied") if probe.kind == "realtime" else got.describe()
    return Cell(who.label, probe.object, probe.operation, probe.kind, got.ok, result)


def probe_all(conn: psycopg.Connection[Any], world: World, callers: Sequence[Caller],
              probes: Sequence[Probe] = ALL_PROBES) -> Iterator[tuple[Probe, Caller, Outcome]]:
    """Run every probe as every caller, probe by probe, each in a savepoint rolled back at
    once: no cell sees another's effects."""
    for probe in probes:
        for who in callers:
            yield probe, who, probe.run(conn, world, who)


def measure(conn: psycopg.Connection[Any], world: World, callers: Sequence[Caller],
            probes: Sequence[Probe] = ALL_PROBES) -> list[Cell]:
    """The measured matrix: every probe as every caller, no verdict."""
    return [cell(probe, who, got) for probe, who, got in probe_all(conn, world, callers, probes)]


def grid(cells: Iterable[Cell]) -> tuple[list[str], list[list[str]]]:
    """Object/operation rows x persona columns; a cell that broke the contract is marked !."""
    personas: list[str] = []
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for c in cells:
        if c.persona not in personas:
            personas.append(c.persona)
        rows.setdefault((c.object, c.operation), {})[c.persona] = c.short if c.passed else f"!{c.short}"
    body = [[obj, op, *(by.get(p, "") for p in personas)] for (obj, op), by in rows.items()]
    return ["object", "operation", *personas], body


def as_table(cells: Iterable[Cell]) -> str:
    return table(*grid(cells))


def as_markdown(cells: Iterable[Cell]) -> str:
    return markdown(*grid(cells))
