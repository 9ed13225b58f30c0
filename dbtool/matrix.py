"""The effective access matrix: probes run as callers, one cell each, and its renderings.

`dbtool verify` fills cells from the policy suite (each with the contract's verdict);
`dbtool audit` fills them by running the probes directly, for any callers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from dbtool import estimates
from dbtool.postgrest import Outcome
from dbtool.probes import ALL_PROBES, Caller, Probe
from dbtool.render import markdown, table
from dbtool.world import World

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


def measure(conn: psycopg.Connection[Any], world: World, callers: Sequence[Caller],
            probes: Sequence[Probe] = ALL_PROBES) -> list[Cell]:
    """Run every probe as every caller (each in a savepoint rolled back at once)."""
    return [cell(probe, who, probe.run(conn, world, who)) for probe in probes for who in callers]


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
