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

0.1.0's import paths keep working — `from dbtool import postgrest`, `import dbtool.postgrest`,
`from dbtool.personas import Persona` give the modules of `dbtool.supabase`, loaded lazily;
new code imports from `dbtool.supabase`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__version__ = "0.1.0"

# Import paths of the public emulation API in 0.1.0, before it moved to dbtool.supabase.
_MOVED = {"personas": "dbtool.supabase.personas", "postgrest": "dbtool.supabase.postgrest",
          "realtime": "dbtool.supabase.realtime"}


def __getattr__(name: str) -> ModuleType:
    if name in _MOVED:
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'dbtool' has no attribute {name!r}")


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import dbtool.postgrest` and `from dbtool.personas import Persona` (0.1.0's paths)
    give the module that now lives in dbtool.supabase: the same module object, loaded only
    when asked for."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        short = fullname.removeprefix(f"{__name__}.")
        if short == fullname or short not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return importlib.import_module(_MOVED[spec.name.removeprefix(f"{__name__}.")])

    def exec_module(self, module: ModuleType) -> None:
        """Already executed under its own name."""


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
