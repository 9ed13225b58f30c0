"""Where the SQL stand-in and the migrations live: the checkout, or inside the wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _resource(name: str) -> Path:
    for candidate in (_CHECKOUT / name, _PACKAGE / "_data" / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{name}/ is neither in {_CHECKOUT} nor packaged in {_PACKAGE / '_data'}")


def sql_dir() -> Path:
    return _resource("sql")


def migrations_dir() -> Path:
    return _resource("migrations")


def alembic_ini() -> Path:
    return _resource("alembic.ini")
