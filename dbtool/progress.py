"""Progress messages: library code reports what it is doing through a callback the caller
chooses (the CLI prints `· message` to stderr, the plugin and bench pass their own)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """The default: say nothing."""
