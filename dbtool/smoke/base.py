"""What the smoke scenario and its drivers share: statuses, step outcomes, the report, and
the operations a driver supplies (`Driver`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dbtool.errors import DbtoolError


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    WAITING = "waiting for its feature"


class SmokeRefused(DbtoolError):
    """The target cannot be smoke-tested (no chat schema, another revision, missing settings)."""


class StepFailed(Exception):
    """A step's expectation did not hold; the message says what was seen instead."""


class StepSkipped(Exception):
    """A step cannot run here; the message is the reason."""


class StepWaiting(Exception):
    """The database lacks the feature the step exercises (built elsewhere, not migrated yet)."""


class StepTimeout(StepFailed):
    """A network wait ran out; the message names what was awaited and for how long."""


@dataclass(frozen=True)
class Caller:
    """A user this run created and signed in (driver-specific session in `handle`)."""

    label: str
    uid: str
    email: str | None
    anonymous: bool = False
    mongo_id: str | None = None
    handle: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Reply:
    """An RPC's answer as PostgREST gives it: rows, or an error code and message."""

    ok: bool
    rows: list[dict[str, Any]]
    code: str | None = None
    message: str | None = None

    def describe(self) -> str:
        return f"{len(self.rows)} row(s)" if self.ok else f"{self.code} {self.message}"


@dataclass(frozen=True)
class StepResult:
    name: str
    expectation: str
    status: Status
    detail: str
    ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.name, "expectation": self.expectation, "result": self.status.value,
                "detail": self.detail, "ms": round(self.ms, 1)}


@dataclass(frozen=True)
class Report:
    driver: str
    target: str
    run_id: str
    steps: list[StepResult]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status is not Status.FAILED for s in self.steps)

    def count(self, status: Status) -> int:
        return sum(1 for s in self.steps if s.status is status)

    def as_dict(self) -> dict[str, Any]:
        return {"driver": self.driver, "target": self.target, "run_id": self.run_id, "ok": self.ok,
                "summary": {s.value: self.count(s) for s in Status}, "notes": self.notes,
                "steps": [s.as_dict() for s in self.steps]}


class Driver(ABC):
    """What the scenario needs from a Supabase project (or its local reproduction)."""

    name: str

    @abstractmethod
    def describe(self) -> str:
        """The target, without secrets."""

    @abstractmethod
    def preflight(self) -> None:
        """Refuse (SmokeRefused) a target without the chat schema or at another revision."""

    def notes(self) -> list[str]:
        """What the run could not check and why (e.g. the schema revision on a project)."""
        return []

    @abstractmethod
    def has_functions(self, names: tuple[str, ...]) -> bool:
        """Whether the database exposes every one of these RPCs."""

    @abstractmethod
    def create_user(self, label: str, run_id: str) -> Caller:
        """A throwaway permanent user, named so it is recognisable as this run's."""

    @abstractmethod
    def map_identity(self, caller: Caller, mongo_id: str) -> Reply:
        """Write the Mongo id <-> Supabase user mapping with service_role."""

    @abstractmethod
    def sign_in(self, caller: Caller) -> Caller:
        """The caller with a session."""

    @abstractmethod
    def sign_in_anonymously(self, label: str, run_id: str) -> Caller:
        """A guest: an anonymous user with a session (StepSkipped if the project forbids it)."""

    @abstractmethod
    def rpc(self, caller: Caller, function: str, args: Mapping[str, Any]) -> Reply:
        """POST /rpc/<function> with the caller's session."""

    @abstractmethod
    def join(self, caller: Caller, topic: str) -> tuple[bool, str]:
        """Join the private channel; (allowed, what the server said)."""

    @abstractmethod
    def public_join(self, caller: Caller, topic: str) -> tuple[bool, str]:
        """Join `topic` as a public (non-private) channel; (allowed, detail)."""

    @abstractmethod
    def expect_broadcast(self, caller: Caller, topic: str, event: str,
                         match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The payload of a broadcast `event` on `topic` that `caller` receives (joined first)
        and that `match` accepts; StepFailed/StepTimeout when none arrives."""

    @abstractmethod
    def client_broadcast(self, sender: Caller, observer: Caller, topic: str) -> tuple[bool, str]:
        """The sender broadcasts a forged INSERT from its client; (delivered to observer, detail)."""

    @abstractmethod
    def presence(self, sender: Caller, observer: Caller, topic: str) -> tuple[bool, str]:
        """The sender tracks presence; (observer sees it, detail)."""

    @abstractmethod
    def cleanup(self) -> tuple[int, list[str]]:
        """Delete every user this run created (and close connections): (deleted, problems)."""
