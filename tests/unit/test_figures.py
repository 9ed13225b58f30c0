"""Benchmark figures: how a measured value reads against its goal (no measurement here)."""

from __future__ import annotations

import pytest

from bench.figures import Figure


@pytest.mark.parametrize(("goal", "value", "verdict"), [
    ("", 3.0, "information"),
    ("<= 1.15", 1.15, "met"),
    ("<= 1.15", 1.38, "missed by 20%"),
    ("< 1", 0.99, "met"),
    ("< 1", 1.0, "missed by 0%"),
    (">= 0.65", 0.65, "met"),
    (">= 0.65", 0.52, "missed by 20%"),
    ("== 1", 1.0, "met"),
    ("== 1", 1.5, "missed by 50%"),
    (">= 150000", 120000, "missed by 20%"),
])
def test_verdict(goal: str, value: float, verdict: str) -> None:
    assert Figure("k", "title", goal, value, "x").verdict == verdict


def test_measured_ratio_with_spread_and_plain_units() -> None:
    assert Figure("k", "t", "", 1.234, "x", spread=(1.1, 1.4)).measured == "1.23x (1.10–1.40)"
    assert Figure("k", "t", "", 1.234, "x").measured == "1.23x"
    assert Figure("k", "t", "", 152340.6, "rows/s").measured == "152,341 rows/s"


def test_as_dict_carries_the_verdict_and_a_rounded_value() -> None:
    got = Figure("history_rls", "History", "<= 1.15", 1.123456, "x", data={"n": 1}).as_dict()
    assert got == {"key": "history_rls", "title": "History", "goal": "<= 1.15", "value": 1.1235, "unit": "x",
                   "spread": None, "measured": "1.12x", "verdict": "met", "data": {"n": 1}}
