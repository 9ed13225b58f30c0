"""Audit settings: which schemas PostgREST exposes, which are ours, extra personas to probe,
and recorded justifications for findings a DBA has accepted. Read from a TOML or JSON file:

    exposed_schemas = ["public", "graphql_public"]     # PostgREST's db_schemas
    owned_schemas = ["public", "chat_private"]

    [justifications]                                   # finding object -> why it is fine
    "public.some_definer_function()" = "the mobile app needs it; reviewed 2026-05-01"

    [[personas]]                                       # probed in the matrix besides the standard personas
    name = "alice with a support claim"
    role = "authenticated"                             # anon | authenticated | service_role
    as = "alice"                                       # take a world member's ids and sub (optional)
    claims = { app_metadata = { role = "support" } }
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbtool.errors import AuditError

DEFAULT_EXPOSED = ("public", "graphql_public")
DEFAULT_OWNED = ("public", "chat_private")
# Supabase's own schemas (as Supabase's linter excludes them); realtime.messages policies
# are audited separately.
SUPABASE_SCHEMAS = (
    "auth", "cron", "extensions", "graphql", "graphql_public", "information_schema", "net", "pgbouncer",
    "pg_catalog", "pgmq", "pgsodium", "pgsodium_masks", "pgtle", "realtime", "repack", "storage",
    "supabase_functions", "supabase_migrations", "vault", "_dbtool", "chat_migrations", "_realtime",
)
MEMBERS = ("alice", "bob", "carol", "dave", "erin")
ROLES = ("anon", "authenticated", "service_role")


@dataclass(frozen=True)
class PersonaSpec:
    name: str
    role: str = "authenticated"
    acts_as: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditConfig:
    exposed_schemas: tuple[str, ...] = DEFAULT_EXPOSED
    owned_schemas: tuple[str, ...] = DEFAULT_OWNED
    justifications: dict[str, str] = field(default_factory=dict)
    personas: tuple[PersonaSpec, ...] = ()

    @property
    def scope(self) -> tuple[str, ...]:
        """Schemas whose objects the static checks look at."""
        return tuple(dict.fromkeys([*self.owned_schemas, *self.exposed_schemas]))


def load(path: str | None, exposed: str | None = None) -> AuditConfig:
    """The config file (TOML or JSON) if given, with --exposed-schemas overriding it."""
    data: dict[str, Any] = {}
    if path:
        file = Path(path)
        try:
            text = file.read_text()
        except OSError as exc:
            raise AuditError(f"cannot read the audit config {path}: {exc.strerror}") from None
        try:
            data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise AuditError(f"the audit config {path} is not valid {'JSON' if file.suffix == '.json' else 'TOML'}: "
                             f"{exc}") from None
    unknown = set(data) - {"exposed_schemas", "owned_schemas", "justifications", "personas"}
    if unknown:
        raise AuditError(f"unknown setting(s) in {path}: {', '.join(sorted(unknown))}")
    personas = []
    for spec in data.get("personas", []):
        if "name" not in spec:
            raise AuditError(f"every [[personas]] entry in {path} needs a name")
        if spec.get("role", "authenticated") not in ROLES:
            raise AuditError(f"persona {spec['name']!r}: role must be one of {', '.join(ROLES)}")
        if spec.get("as") is not None and spec["as"] not in MEMBERS:
            raise AuditError(f"persona {spec['name']!r}: `as` must be one of {', '.join(MEMBERS)}")
        personas.append(PersonaSpec(spec["name"], spec.get("role", "authenticated"), spec.get("as"),
                                    dict(spec.get("claims", {}))))
    schemas = tuple(s.strip() for s in exposed.split(",") if s.strip()) if exposed else None
    return AuditConfig(
        exposed_schemas=schemas or tuple(data.get("exposed_schemas", DEFAULT_EXPOSED)),
        owned_schemas=tuple(data.get("owned_schemas", DEFAULT_OWNED)),
        justifications=dict(data.get("justifications", {})),
        personas=tuple(personas),
    )
