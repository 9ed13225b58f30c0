"""The arithmetic and parsing of `python -m bench.instructions`, on made-up profiles (the
measurement itself needs valgrind and a loaded server: run the module)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bench import instructions


def test_a_request_costs_the_difference_of_the_two_backends_per_added_request() -> None:
    # W+N requests cost start-up + W*c + N*c; W+2N cost N*c more: c per request, in thousands
    startup, warm, n, cost = 9_000_000, 30, 200, 741_000
    first = startup + (warm + n) * cost
    second = startup + (warm + 2 * n) * cost
    assert instructions.per_request(first, second, n) == cost / 1000


@pytest.mark.parametrize("line", ["totals: 123456789", "summary: 123456789"])
def test_the_backend_total_is_read_from_its_profile(tmp_path: Path, line: str) -> None:
    profile = tmp_path / "cg.4242"
    profile.write_text(f"version: 1\ncreator: callgrind-3.19.0\nevents: Ir\n\nfn=(1) main\n0 5\n{line}\n")
    assert instructions.backend_total(profile) == 123456789


def test_the_total_is_awaited_until_the_backend_exits(tmp_path: Path) -> None:
    profile = tmp_path / "cg.7"
    later = threading.Timer(0.3, lambda: profile.write_text("events: Ir\ntotals: 42\n"))
    later.start()
    try:
        assert instructions.backend_total(profile, timeout=10) == 42
    finally:
        later.cancel()


def test_a_missing_profile_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"cg\.99"):
        instructions.backend_total(tmp_path / "cg.99", timeout=0.3)


def test_the_table_shows_each_request_with_its_baseline_and_the_ratio() -> None:
    table = instructions.render([
        instructions.Measured("mark-read", "mark_chat_read", 740.0, 197.0, "a raw UPDATE"),
        instructions.Measured("send-touch", "the trigger", 1650.0, 1500.0, "the send without it"),
    ])
    assert "| mark-read | mark_chat_read | 740k | 197k (a raw UPDATE) | 0.27x |" in table
    assert "| send-touch | the trigger | 1,650k | 1,500k (the send without it) | 0.91x |" in table
