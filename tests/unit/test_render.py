"""Command output: text tables, Markdown tables and JSON."""

from __future__ import annotations

import json
from datetime import date

from dbtool import render


def test_table_aligns_columns_and_rules_the_header() -> None:
    out = render.table(["object", "n"], [("chat_messages", 12), ("x", None)])
    assert out.splitlines() == [
        "object         n",
        "-------------  --",
        "chat_messages  12",
        "x",
    ]


def test_markdown_escapes_pipes_and_newlines() -> None:
    out = render.markdown(["figure", "verdict"], [("a|b", "met"), ("two\nlines", None)])
    assert out.splitlines() == [
        "| figure | verdict |",
        "|---|---|",
        "| a\\|b | met |",
        "| two lines |  |",
    ]


def test_json_keeps_order_and_stringifies_what_json_cannot_hold() -> None:
    out = render.to_json({"z": 1, "a": date(2024, 5, 1)})
    assert json.loads(out) == {"z": 1, "a": "2024-05-01"}
    assert out.index('"z"') < out.index('"a"')
