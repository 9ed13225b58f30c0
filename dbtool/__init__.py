"""chat-db: the database side of a realtime 1:1 chat on Supabase, and the dbtool CLI.

The package is grouped by who uses it:

* `dbtool.supabase` — the public API for an application's tests: personas, and the
  PostgREST and Realtime emulation on a plain PostgreSQL with the stand-in.
* `dbtool.testing` — the pytest plugin (fixtures `chat_db`, `chat_world`, ...).
* `dbtool.cli` — the `dbtool` command; it only parses options and renders results of
  `dbtool.server` (the embedded PostgreSQL), `dbtool.ops` (stand-in, migrations, reset,
  seed, statistics, export), `dbtool.policy` (contract, probes, matrix, verify),
  `dbtool.audit` and `dbtool.smoke`.
* Shared: `dbtool.database` (the database handle), `dbtool.config`, `dbtool.errors`,
  `dbtool.urls`, `dbtool.progress`, `dbtool.render`, `dbtool.paths`.

`from dbtool import personas, postgrest, realtime` keeps working (those three names are
loaded lazily from `dbtool.supabase`); new code imports from `dbtool.supabase`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

# Import paths of the public emulation API before it moved to dbtool.supabase.
_MOVED = {"personas": "dbtool.supabase.personas", "postgrest": "dbtool.supabase.postgrest",
          "realtime": "dbtool.supabase.realtime"}


def __getattr__(name: str) -> ModuleType:
    if name in _MOVED:
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'dbtool' has no attribute {name!r}")
