"""The probe table the policy matrix is measured with: one row per object and operation."""

from __future__ import annotations

from collections import Counter

from dbtool.policy import probes


def test_every_probe_is_one_cell_row() -> None:
    keys = Counter(p.key for p in probes.ALL_PROBES)
    assert [k for k, n in keys.items() if n > 1] == []
    assert {p.kind for p in probes.ALL_PROBES} == {"table", "estimate", "rpc", "realtime"}


def test_every_persona_has_a_label() -> None:
    assert list(probes.PERSONA_LABELS) == list(probes.PERSONAS)
    assert len(set(probes.PERSONA_LABELS.values())) == len(probes.PERSONAS)
