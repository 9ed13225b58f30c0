"""The persona x object x operation matrix of DESIGN §3, §8 and §9, asserted cell by cell.

A thin parametrisation of dbtool.policy.contract, one test per cell so that a failure names its
cell: each runs one probe (dbtool.policy.probes) as one persona inside the rolled-back world of the
`chat_world_shared` fixture and asserts the contract's verdict, `contract.judge`, the same
function `dbtool verify` applies to every cell: which rows are allowed, or the exact
rejection (SQLSTATE and message).
"""

from __future__ import annotations

import pytest

from dbtool.policy import contract, estimates
from dbtool.policy.probes import ALL_PROBES, ESTIMATE_PROBES, PERSONAS, REALTIME_PROBES, Probe, caller
from dbtool.testing.plugin import WorldSession

CELLS = [(probe, persona) for probe in ALL_PROBES for persona in PERSONAS]


def test_every_table_and_rpc_probe_has_an_expectation_per_persona() -> None:
    assert contract.gaps() == []
    assert len(REALTIME_PROBES) == 11 * 4
    assert len(ESTIMATE_PROBES) == len(estimates.SUBJECTS)


@pytest.mark.parametrize(("probe", "persona"), CELLS, ids=[f"{pe}|{pr.key}" for pr, pe in CELLS])
def test_cell(chat_world_shared: WorldSession, probe: Probe, persona: str) -> None:
    # Every probe runs in a savepoint that is rolled back: cells cannot see each other's effects.
    world = chat_world_shared.world
    who = caller(world, persona)
    verdict = contract.judge(world, probe, who, probe.run(chat_world_shared.conn, world, who))
    assert verdict.passed, verdict.failure
