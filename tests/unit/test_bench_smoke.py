"""The checks `python -m bench.smoke` applies to a quick benchmark run, on made-up results."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench import smoke
from bench.figures import Figure


def good() -> tuple[dict[str, Any], str]:
    figures = [Figure(key, key, "<= 1.15", 1.0, "x").as_dict() for key in sorted(smoke.FIGURES)]
    for f in figures:
        if f["key"] in ("member_page", "member_count"):
            f["data"] = {"plans": {"custom": {"subplans": 0}, "generic": {"subplans": 0}}}
        if f["key"] == "estimate_before_0005":
            f["value"] = 3.0
    result = {"figures": figures, "machine": {"cores": 2, "postgresql": "17.2"}}
    table = "head\n\n| figure | goal | measured | verdict |\n|---|---|---|---|" + "".join(
        f"\n| {f['key']} | {f['goal']} | {f['measured']} | {f['verdict']} |" for f in figures)
    return result, table


def test_a_complete_run_passes() -> None:
    assert smoke.problems(*good()) == []


def test_a_missed_goal_is_still_a_verdict() -> None:
    result, table = good()
    result["figures"][0]["verdict"] = "missed by 20%"
    assert smoke.problems(result, table) == []


def broken(change: Any) -> list[str]:
    result, table = good()
    result = copy.deepcopy(result)
    changed = change(result, table)
    if isinstance(changed, str):  # the change rewrote the table
        table = changed
    return smoke.problems(result, table)


def by_key(result: dict[str, Any], key: str) -> dict[str, Any]:
    return next(f for f in result["figures"] if f["key"] == key)


@pytest.mark.parametrize(("change", "message"), [
    (lambda r, t: r["figures"].pop(), "figures missing: ['seed'], unexpected: []"),
    (lambda r, t: by_key(r, "reset").update(value=float("nan")), "reset: value nan is not a positive number"),
    (lambda r, t: by_key(r, "reset").update(verdict="?"), "reset: verdict '?' is none of information, met, missed by ..."),
    (lambda r, t: by_key(r, "member_page")["data"]["plans"]["generic"].update(subplans=1),
     "member_page: generic plan evidence missing or with subplans: {'subplans': 1}"),
    (lambda r, t: r["machine"].update(postgresql="16.4"), "machine: {'cores': 2, 'postgresql': '16.4'} lacks cores or "
     "PostgreSQL 17"),
    (lambda r, t: t.rsplit("\n", 1)[0], "markdown: 34 table lines, expected 35"),
])
def test_each_check_names_what_is_wrong(change: Any, message: str) -> None:
    assert message in broken(change)


def test_an_estimate_that_misses_or_sees_no_leak_fails() -> None:
    def change(r: dict[str, Any], t: str) -> None:
        by_key(r, "estimate_planned").update(verdict="missed by 5%")
        by_key(r, "estimate_before_0005").update(value=1.0)

    found = broken(change)
    assert [p.split(":")[0] for p in found] == ["estimate_planned", "estimate_before_0005"]
