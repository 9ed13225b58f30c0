"""The live driver: the scenario through supabase-py against a real project (hosted, a
branch, or `supabase start`).

It creates only users it names itself (`chat-db-smoke-<run id>-<label>@smoke.chat-db.invalid`,
user metadata `chat_db_smoke`), through the Auth admin API, and deletes each of them at the
end — after a failed step, an unexpected error or Ctrl-C as well. Its clients run on an
event loop in a background thread; every network wait has a timeout and a timeout names
what was awaited. Keys never appear in output: every text the run reports is scrubbed of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dbtool.errors import ConfigError
from dbtool.ops import export, migrate
from dbtool.smoke import surface
from dbtool.smoke.base import (
    Caller,
    Driver,
    Reply,
    SmokeRefused,
    StepFailed,
    StepSkipped,
    StepTimeout,
    StepWaiting,
)
from dbtool.smoke.local import USER_PREFIX, user_email

T = TypeVar("T")

ENV = {"url": "SUPABASE_URL", "anon_key": "SUPABASE_ANON_KEY", "service_role_key": "SUPABASE_SERVICE_ROLE_KEY"}
FLAGS = {"url": "--supabase-url", "anon_key": "--anon-key", "service_role_key": "--service-role-key"}
MISSING_FUNCTION = "PGRST202"  # PostgREST: no such function in its schema cache (HTTP 404)
FORGERY_WAIT = 3.0  # seconds a forged client broadcast is given to (not) arrive


@dataclass(frozen=True)
class LiveConfig:
    """Where the project is and the keys to it (never printed: see `scrub`)."""

    url: str
    anon_key: str = field(repr=False)
    service_role_key: str = field(repr=False)
    timeout: float = 15.0

    def scrub(self, text: str) -> str:
        """`text` with every key replaced by its name (`<service role key>`, `<anon key>`)."""
        for value, name in ((self.service_role_key, "service role key"), (self.anon_key, "anon key")):
            if value:
                text = text.replace(value, f"<{name}>")
        return text


def live_config(url: str | None = None, anon_key: str | None = None, service_role_key: str | None = None,
                timeout: float = 15.0, env: Mapping[str, str] | None = None) -> LiveConfig:
    """Flags first, then SUPABASE_URL / SUPABASE_ANON_KEY / SUPABASE_SERVICE_ROLE_KEY."""
    env = os.environ if env is None else env
    given = {"url": url, "anon_key": anon_key, "service_role_key": service_role_key}
    values = {k: (v or env.get(ENV[k]) or "").strip() for k, v in given.items()}
    missing = [f"{FLAGS[k]} or {ENV[k]}" for k, v in values.items() if not v]
    if missing:
        raise ConfigError(f"the live smoke needs {', '.join(missing)} (Project Settings > API, or the output of "
                          "`supabase status`); or run the scenario locally with --local")
    if not values["url"].startswith(("http://", "https://")):
        raise ConfigError(f"the Supabase URL must start with https:// or http:// (got {values['url']!r})")
    if values["anon_key"] == values["service_role_key"]:
        raise ConfigError("the anon key and the service role key are the same: pass the project's anon "
                          "(publishable) key with --anon-key and its service_role (secret) key with --service-role-key")
    if timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {timeout}")
    return LiveConfig(values["url"].rstrip("/"), values["anon_key"], values["service_role_key"], timeout)


def _supabase() -> Any:
    try:
        import supabase
    except ImportError:
        raise ConfigError("the live smoke needs supabase-py: pip install 'chat-db[smoke]' "
                          "(or pip install 'supabase>=2.10,<3')") from None
    return supabase


def _options(supabase: Any) -> Any:
    # No session persistence, no background refresh: each client lives for this run only.
    return supabase.AsyncClientOptions(auto_refresh_token=False, persist_session=False)


@dataclass
class _Channel:
    channel: Any
    inbox: list[dict[str, Any]] = field(default_factory=list)


class LiveDriver(Driver):
    name = "live"

    def __init__(self, cfg: LiveConfig) -> None:
        self.cfg = cfg
        self.supabase = _supabase()
        self.created: list[str] = []
        # A create call failed mid-way: a user may exist without us knowing its id. Once set it
        # stays set (a later creation that answers says nothing about the one that did not).
        self.uncertain = False
        self.run_id = ""
        self.clients: list[Any] = []
        self.channels: dict[tuple[str, str], _Channel] = {}
        self.project_surface: surface.Surface | None = None
        self.unchecked: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dbtool-smoke-live", daemon=True)
        self.thread.start()
        try:
            self.admin = self._wait(self._client(cfg.service_role_key), "creating the service_role client")
        except Exception as exc:
            self._stop()
            raise SmokeRefused(cfg.scrub(f"cannot create a Supabase client for {cfg.url}: {exc}")) from None

    # -- plumbing ----------------------------------------------------------------------------

    def _wait(self, awaitable: Awaitable[T], what: str, timeout: float | None = None) -> T:
        """Run `awaitable` on the driver's loop, at most `timeout` seconds (StepTimeout naming `what`)."""
        limit = self.cfg.timeout if timeout is None else timeout

        async def bounded() -> T:
            return await asyncio.wait_for(awaitable, limit)

        future = asyncio.run_coroutine_threadsafe(bounded(), self.loop)
        try:
            return future.result()
        except TimeoutError:
            future.cancel()
            raise StepTimeout(f"timed out after {limit:g}s waiting for {what}") from None

    async def _client(self, key: str) -> Any:
        client = await self.supabase.acreate_client(self.cfg.url, key, _options(self.supabase))
        self.clients.append(client)
        return client

    def _failure(self, what: str, exc: BaseException) -> StepFailed:
        return StepFailed(self.cfg.scrub(f"{what}: {type(exc).__name__}: {exc}"))

    def describe(self) -> str:
        return self.cfg.url

    def notes(self) -> list[str]:
        return list(self.unchecked)

    # -- preflight ---------------------------------------------------------------------------

    def preflight(self) -> None:
        """The chat schema must be there, at this package's head revision (compared through the
        RPC surface PostgREST describes: the version table is not exposed)."""
        probes: dict[str, Reply] = {}
        try:
            anon = self._wait(self._client(self.cfg.anon_key), "creating the anon client")
            for key, client in (("service role key", self.admin), ("anon key", anon)):
                # Nothing is written: chat_history only reads, and refuses callers without a session.
                probes[key] = self._rpc(client, "chat_history", {"_thread_id": "-", "_limit": 1},
                                        f"the chat_history probe with the {key}")
        except StepFailed as exc:
            raise SmokeRefused(f"cannot reach the project at {self.cfg.url}: {exc}") from None
        for key, probe in probes.items():
            if _key_refused(probe):
                flag = "--service-role-key / SUPABASE_SERVICE_ROLE_KEY" if key.startswith("service") \
                    else "--anon-key / SUPABASE_ANON_KEY"
                raise SmokeRefused(f"the project at {self.cfg.url} does not accept the {key} ({probe.code or 'HTTP 401'} "
                                   f"{probe.message}): check {flag}")
        reply = probes["service role key"]
        if reply.code == MISSING_FUNCTION:
            raise SmokeRefused(f"the project at {self.cfg.url} has no chat schema (PostgREST knows no chat_history): "
                               "apply the migrations first (`dbtool migrate` with the database URL, or "
                               "`dbtool export supabase-cli` and `supabase db push`)")
        document = self._openapi()
        if document is None:
            return
        self.project_surface = surface.from_openapi(document)
        revisions = surface.by_revision((f.revision, f.sql) for f in export.files())
        comparison = surface.compare(self.project_surface, revisions)
        if not comparison.matches_head:
            head = migrate.heads()[0]
            raise SmokeRefused(f"the project's chat schema is not this package's: {comparison.explain(head)}. "
                               "Migrate the project, or use the chat-db version that matches it")

    def _openapi(self) -> dict[str, Any] | None:
        import httpx

        async def fetch() -> httpx.Response:
            headers = {"apikey": self.cfg.service_role_key, "Authorization": f"Bearer {self.cfg.service_role_key}",
                       "Accept": "application/openapi+json"}
            async with httpx.AsyncClient(timeout=self.cfg.timeout) as http:
                return await http.get(f"{self.cfg.url}/rest/v1/", headers=headers)

        try:
            response = self._wait(fetch(), "PostgREST's schema description (GET /rest/v1/)")
        except (StepFailed, httpx.HTTPError) as exc:
            self.unchecked.append(self.cfg.scrub(f"schema revision not compared: {exc}"))
            return None
        if response.status_code != 200:
            self.unchecked.append(f"schema revision not compared: GET /rest/v1/ answered HTTP {response.status_code} "
                              "(PostgREST's OpenAPI output is off)")
            return None
        data = response.json()
        return data if isinstance(data, dict) else None

    def has_functions(self, names: tuple[str, ...]) -> bool:
        if self.project_surface is not None:
            return all(n in self.project_surface for n in names)
        # Without the schema description, a step learns it from PostgREST's 404 (PGRST202) instead.
        return True

    # -- users -------------------------------------------------------------------------------

    def create_user(self, label: str, run_id: str) -> Caller:
        self.run_id = run_id
        email, password = user_email(run_id, label), secrets.token_urlsafe(24)
        attributes = {"email": email, "password": password, "email_confirm": True,
                      "user_metadata": {"chat_db_smoke": run_id, "label": label}}
        uncertain, self.uncertain = self.uncertain, True
        try:
            created = self._wait(self.admin.auth.admin.create_user(attributes), f"creating user {label}")
        except StepFailed:
            raise
        except Exception as exc:
            raise self._failure(f"creating user {label} through the Auth admin API", exc) from None
        self.created.append(created.user.id)
        self.uncertain = uncertain
        return Caller(label, created.user.id, email, handle=password)

    def map_identity(self, caller: Caller, mongo_id: str) -> Reply:
        query = self.admin.table("chat_identities").insert({"supabase_user_id": caller.uid, "mongo_id": mongo_id})
        try:
            result = self._wait(query.execute(), f"mapping {caller.label}'s identity")
        except self.supabase.PostgrestAPIError as exc:
            return Reply(False, [], exc.code, exc.message)
        return Reply(True, list(result.data or []))

    def sign_in(self, caller: Caller) -> Caller:
        client = self._wait(self._client(self.cfg.anon_key), "creating a client")
        try:
            response = self._wait(client.auth.sign_in_with_password({"email": caller.email, "password": caller.handle}),
                                  f"{caller.label}'s sign-in")
        except StepFailed:
            raise
        except Exception as exc:
            raise self._failure(f"{caller.label}'s sign-in", exc) from None
        self._wait(client.realtime.set_auth(response.session.access_token), "handing the token to Realtime")
        return Caller(caller.label, caller.uid, caller.email, caller.anonymous, caller.mongo_id, client)

    def sign_in_anonymously(self, label: str, run_id: str) -> Caller:
        # The user metadata names the run, so that clean-up finds a guest whose sign-in answered too late.
        self.run_id = run_id
        client = self._wait(self._client(self.cfg.anon_key), "creating a client")
        uncertain, self.uncertain = self.uncertain, True
        try:
            response = self._wait(client.auth.sign_in_anonymously({"options": {"data": {"chat_db_smoke": run_id,
                                                                                         "label": label}}}),
                                  f"the anonymous sign-in of {label}")
        except StepFailed:
            raise
        except Exception as exc:
            if getattr(exc, "code", None) == "anonymous_provider_disabled":
                self.uncertain = uncertain  # refused: nobody was created
                raise StepSkipped("anonymous sign-ins are off in this project: turn on 'Allow anonymous sign-ins' "
                                  "(Authentication > Sign In / Providers) to run the guest steps") from None
            raise self._failure("the anonymous sign-in", exc) from None
        self.created.append(response.user.id)
        self.uncertain = uncertain
        self._wait(client.realtime.set_auth(response.session.access_token), "handing the token to Realtime")
        return Caller(label, response.user.id, None, True, None, client)

    # -- PostgREST ---------------------------------------------------------------------------

    def _rpc(self, client: Any, function: str, args: Mapping[str, Any], what: str) -> Reply:
        try:
            result = self._wait(client.rpc(function, dict(args)).execute(), what)
        except self.supabase.PostgrestAPIError as exc:
            return Reply(False, [], exc.code, exc.message)
        except StepFailed:
            raise
        except Exception as exc:
            raise self._failure(what, exc) from None
        data = result.data
        rows = data if isinstance(data, list) else [] if data is None else [data]
        return Reply(True, rows)

    def rpc(self, caller: Caller, function: str, args: Mapping[str, Any]) -> Reply:
        reply = self._rpc(caller.handle, function, args, f"{caller.label}'s {function}")
        if reply.code == MISSING_FUNCTION:
            raise StepWaiting(f"the project has no {function} yet")
        return reply

    # -- Realtime ----------------------------------------------------------------------------

    def _join(self, caller: Caller, topic: str, private: bool) -> tuple[bool, str, _Channel]:
        client = caller.handle
        config = {"config": {"private": private, "broadcast": {"self": False, "ack": False},
                             "presence": {"key": caller.uid, "enabled": True}}}
        channel = client.channel(topic, config)
        entry = _Channel(channel)
        channel.on_broadcast("*", lambda payload: entry.inbox.append(dict(payload)))
        channel.on_presence_sync(lambda: None)
        states: list[tuple[str, str]] = []

        def on_state(state: Any, error: Exception | None) -> None:
            states.append((str(getattr(state, "value", state)), str(error) if error else ""))

        what = f"{caller.label}'s join of {'private' if private else 'public'} channel {topic}"
        try:
            self._wait(channel.subscribe(on_state), what)
        except StepFailed:
            raise
        except Exception as exc:
            raise self._failure(what, exc) from None
        state, error = states[-1] if states else ("no answer", "")
        if state == "TIMED_OUT":
            raise StepTimeout(f"timed out waiting for {what}")
        return state == "SUBSCRIBED", self.cfg.scrub(f"{state} {error}".strip()), entry

    def _leave(self, client: Any, entry: _Channel) -> None:
        with contextlib.suppress(Exception):  # leaving is best effort; the socket closes at clean-up anyway
            self._wait(client.remove_channel(entry.channel), "leaving a channel")

    def join(self, caller: Caller, topic: str) -> tuple[bool, str]:
        if (caller.uid, topic) in self.channels:
            self._leave(caller.handle, self.channels.pop((caller.uid, topic)))
        allowed, detail, entry = self._join(caller, topic, private=True)
        if allowed:
            self.channels[(caller.uid, topic)] = entry
        else:
            self._leave(caller.handle, entry)
        return allowed, detail

    def public_join(self, caller: Caller, topic: str) -> tuple[bool, str]:
        allowed, detail, entry = self._join(caller, topic, private=False)
        self._leave(caller.handle, entry)
        return allowed, detail

    def _channel(self, caller: Caller, topic: str) -> _Channel:
        if (caller.uid, topic) not in self.channels:
            raise StepFailed(f"{caller.label} has not joined {topic}")
        return self.channels[(caller.uid, topic)]

    def _until(self, check: Callable[[], bool], timeout: float) -> Coroutine[Any, Any, bool]:
        async def poll() -> bool:
            deadline = self.loop.time() + timeout
            while self.loop.time() < deadline:
                if check():
                    return True
                await asyncio.sleep(0.05)
            return check()

        return poll()

    def expect_broadcast(self, caller: Caller, topic: str, event: str,
                         match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        entry = self._channel(caller, topic)

        def found() -> list[dict[str, Any]]:
            return [m.get("payload") or {} for m in entry.inbox if m.get("event") == event and match(m.get("payload") or {})]

        what = f"the {event} broadcast on {topic} ({caller.label})"
        if not self._wait(self._until(lambda: bool(found()), self.cfg.timeout), what, self.cfg.timeout + 5):
            raise StepTimeout(f"timed out after {self.cfg.timeout:g}s waiting for {what}")
        return found()[0]

    def client_broadcast(self, sender: Caller, observer: Caller, topic: str) -> tuple[bool, str]:
        if (sender.uid, topic) not in self.channels:
            allowed, detail = self.join(sender, topic)
            if not allowed:
                raise StepFailed(f"{sender.label}'s join refused: {detail}")
        marker = secrets.token_hex(8)
        channel = self._channel(sender, topic).channel
        self._wait(channel.send_broadcast("INSERT", {"forged": marker}), "sending the client broadcast")
        inbox = self._channel(observer, topic).inbox

        def arrived() -> bool:
            return any((m.get("payload") or {}).get("forged") == marker for m in inbox)

        delivered = self._wait(self._until(arrived, FORGERY_WAIT), "the forged broadcast", FORGERY_WAIT + 5)
        if delivered:
            return True, f"{observer.label} received the forged INSERT"
        return False, f"the forged INSERT did not reach {observer.label} within {FORGERY_WAIT:g}s"

    def presence(self, sender: Caller, observer: Caller, topic: str) -> tuple[bool, str]:
        for who in (sender, observer):
            if (who.uid, topic) not in self.channels:
                allowed, detail = self.join(who, topic)
                if not allowed:
                    raise StepFailed(f"{who.label}'s join refused: {detail}")
        channel = self._channel(sender, topic).channel
        self._wait(channel.track({"typing": False}), f"{sender.label}'s presence track")
        watched = self._channel(observer, topic).channel
        seen = self._wait(self._until(lambda: sender.uid in watched.presence_state(), self.cfg.timeout),
                          "the presence state", self.cfg.timeout + 5)
        if not seen:
            raise StepTimeout(f"timed out after {self.cfg.timeout:g}s waiting for {sender.label}'s presence "
                              f"at {observer.label}")
        return True, f"{observer.label} sees {sender.label} present"

    # -- clean-up ----------------------------------------------------------------------------

    def _leftovers(self) -> list[str]:
        """Users of this run whose creation was cut short (we never learned their id)."""
        if not self.run_id:
            return []
        prefix = f"{USER_PREFIX}-{self.run_id}-"
        found: list[str] = []
        page = 1
        while True:
            users = self._wait(self.admin.auth.admin.list_users(page=page, per_page=1000), "listing users")
            for user in users:
                meta = getattr(user, "user_metadata", None) or {}
                if (user.email or "").startswith(prefix) or meta.get("chat_db_smoke") == self.run_id:
                    found.append(user.id)
            if len(users) < 1000:
                return found
            page += 1

    def cleanup(self) -> tuple[int, list[str]]:
        problems: list[str] = []
        deleted = 0
        try:
            if self.uncertain:
                try:
                    self.created += [uid for uid in self._leftovers() if uid not in self.created]
                except Exception as exc:
                    problems.append(self.cfg.scrub(f"could not look for users of run {self.run_id}: {exc}"))
            for uid in list(self.created):
                try:
                    self._wait(self.admin.auth.admin.delete_user(uid), f"deleting user {uid}")
                    self.created.remove(uid)
                    deleted += 1
                except Exception as exc:
                    problems.append(self.cfg.scrub(f"user {uid} not deleted ({exc}); delete it in the dashboard"))
            for client in self.clients:
                with contextlib.suppress(Exception):  # best effort: the users are gone already
                    self._wait(client.realtime.close(), "closing a Realtime connection", 5)
        finally:
            self._stop()
        return deleted, problems

    def _stop(self) -> None:
        """Cancel what the clients left running (push timers, heartbeats), then stop the loop."""

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(drain(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


def _key_refused(reply: Reply) -> bool:
    """PostgREST (PGRST3xx: JWT problems) or the API gateway ("Invalid API key") refused the key."""
    return not reply.ok and ((reply.code or "").startswith("PGRST3") or "api key" in (reply.message or "").lower())
