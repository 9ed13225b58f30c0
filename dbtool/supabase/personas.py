"""Who is calling: the JWT a request carries, as Supabase's servers see it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Persona:
    """A caller: the database role PostgREST/Realtime switch to, and the JWT claims.

    `claims` is what Supabase Auth puts in the access token; `role` is always present,
    `sub` only for signed-in users.
    """

    name: str
    role: str
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def sub(self) -> str | None:
        sub = self.claims.get("sub")
        return str(sub) if sub is not None else None


def claims(role: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": "supabase", "aud": "authenticated" if role == "authenticated" else role,
            "iat": now, "exp": now + 3600, "role": role, **extra}


def anon() -> Persona:
    """The anon key: no session."""
    return Persona("anon", "anon", claims("anon"))


def service() -> Persona:
    """The service_role key the backend holds (bypasses RLS, no user)."""
    return Persona("service_role", "service_role", claims("service_role"))


def user(name: str, uid: str, email: str | None = None) -> Persona:
    """A signed-in user's access token."""
    extra: dict[str, Any] = {"sub": uid, "session_id": "00000000-0000-4000-8000-000000000000", "is_anonymous": False}
    if email:
        extra["email"] = email
    return Persona(name, "authenticated", claims("authenticated", **extra))


def anonymous(name: str, uid: str) -> Persona:
    """An anonymous user's access token (signInAnonymously): role authenticated, a `sub`,
    no email, and the claim `is_anonymous: true`."""
    extra: dict[str, Any] = {"sub": uid, "session_id": "00000000-0000-4000-8000-000000000000", "is_anonymous": True}
    return Persona(name, "authenticated", claims("authenticated", **extra))


def authenticated_without_sub() -> Persona:
    """A token with role authenticated but no `sub` claim (e.g. a hand-made JWT)."""
    return Persona("authenticated (no sub)", "authenticated", claims("authenticated"))
