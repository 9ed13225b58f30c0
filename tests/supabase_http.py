"""Supabase's HTTP API over a real local database, for the live driver's tests.

Auth (admin users, password sign-in, anonymous sign-in) writes and reads auth.users;
PostgREST requests go through dbtool.supabase.postgrest, which reproduces what PostgREST runs; the
OpenAPI description lists the database's own functions. Websockets to /realtime/v1 go to the
Realtime emulation (tests/supabase_realtime.py) when one is given, else they are refused, as
by a project whose Realtime is unreachable. Access tokens are unsigned JWTs carrying the
claims Supabase Auth puts in them (`sub`, `role`, `is_anonymous`, ...; nothing here checks
signatures: the keys are only compared), and both servers act as the caller they name.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import psycopg

from dbtool.smoke.local import argument_types, jsonable
from dbtool.supabase import personas, postgrest
from dbtool.supabase.personas import Persona

ANON_KEY = "anon." + "a" * 40
SERVICE_KEY = "service." + "s" * 40


def token(sub: str, email: str | None = None, anonymous: bool = False) -> str:
    """An access token as Supabase Auth issues it to a signed-in (or anonymous) user."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    claims = personas.claims("authenticated", sub=sub, email=email or "", phone="", is_anonymous=anonymous,
                             session_id=str(uuid.uuid4()), aal="aal1",
                             amr=[{"method": "anonymous" if anonymous else "password", "timestamp": 0}])
    claims["exp"] = 2**31
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.x"


def claims_of(bearer: str) -> dict[str, Any] | None:
    """The claims of an access token, or None for anything that is not a JWT with a `sub`."""
    try:
        payload = bearer.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    return claims if isinstance(claims, dict) and claims.get("sub") else None


def persona_of(bearer: str | None) -> Persona:
    """Who a request acts as: the service_role key, a user's token (its own claims), else anon."""
    if bearer == SERVICE_KEY:
        return personas.service()
    claims = claims_of(bearer) if bearer else None
    if claims is None:
        return personas.anon()
    return Persona("caller", str(claims.get("role") or "authenticated"), claims)


@dataclass
class Api:
    """What the server saw, and switches a test flips."""

    admin_url: str
    url: str
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, apikey)
    passwords: dict[str, str] = field(default_factory=dict)
    hide_functions: set[str] = field(default_factory=set)  # absent from PostgREST's schema cache
    hold_create: str | None = None  # a label whose creation answers only when `release` is set
    release: threading.Event = field(default_factory=threading.Event)
    realtime_port: int | None = None  # the Realtime emulation; None: no Realtime server
    anonymous_sign_ins: bool = True  # Authentication > Sign In / Providers > Allow anonymous sign-ins

    def user_json(self, uid: str, email: str | None, meta: dict[str, Any], anonymous: bool = False) -> dict[str, Any]:
        return {"id": uid, "email": email or "", "aud": "authenticated", "role": "authenticated",
                "app_metadata": {"provider": "anonymous" if anonymous else "email",
                                 "providers": [] if anonymous else ["email"]},
                "user_metadata": meta, "created_at": "2026-12-01T00:00:00Z", "is_anonymous": anonymous}

    def session_json(self, uid: str, email: str | None, meta: dict[str, Any], anonymous: bool) -> dict[str, Any]:
        return {"access_token": token(uid, email, anonymous), "refresh_token": "r", "expires_in": 3600,
                "expires_at": 2**31, "token_type": "bearer", "user": self.user_json(uid, email, meta, anonymous)}


class Handler(BaseHTTPRequestHandler):
    api: Api

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Supabase-Api-Version", "2024-01-01")  # Auth's errors then carry `code`
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def persona(self) -> Persona:
        return persona_of((self.headers.get("Authorization") or "").removeprefix("Bearer "))

    def route(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.api.requests.append((method, parts.path, self.headers.get("apikey") or ""))
        if self.headers.get("apikey") not in (ANON_KEY, SERVICE_KEY):
            return self.reply(401, {"message": "Invalid API key"})
        with psycopg.connect(self.api.url, autocommit=True) as conn, \
                psycopg.connect(self.api.admin_url, autocommit=True) as admin:
            return self.dispatch(method, parts.path, parts.query, conn, admin)

    def dispatch(self, method: str, path: str, query: str, conn: psycopg.Connection[Any],
                 admin: psycopg.Connection[Any]) -> None:
        admin_call = self.headers.get("Authorization") == f"Bearer {SERVICE_KEY}"
        if path == "/rest/v1/" and method == "GET":
            return self.reply(200, self.openapi(admin))
        if path.startswith("/rest/v1/rpc/") and method == "POST":
            return self.rpc(path.removeprefix("/rest/v1/rpc/"), self.body() or {}, conn, admin)
        if path == "/rest/v1/chat_identities" and method == "POST":
            row = self.body()
            got = postgrest.run(conn, self.persona(), "insert into public.chat_identities (supabase_user_id, mongo_id) "
                                "values (%s, %s) returning *", (row["supabase_user_id"], row["mongo_id"]),
                                method="POST", path="/chat_identities", commit=True)
            return self.outcome(got, status=201)
        if path == "/auth/v1/admin/users" and method == "POST" and admin_call:
            return self.create_user(self.body(), admin)
        if path == "/auth/v1/admin/users" and method == "GET" and admin_call:
            rows = admin.execute("select id::text, email, raw_user_meta_data, is_anonymous from auth.users "
                                 "order by created_at, id").fetchall()
            return self.reply(200, {"users": [self.api.user_json(*r) for r in rows], "aud": "authenticated"})
        if path.startswith("/auth/v1/admin/users/") and method == "DELETE" and admin_call:
            admin.execute("delete from auth.users where id = %s", (path.rsplit("/", 1)[1],))
            return self.reply(200, {})
        if path == "/auth/v1/signup" and method == "POST":
            return self.sign_up(self.body() or {}, admin)
        if path == "/auth/v1/token" and query == "grant_type=password" and method == "POST":
            return self.sign_in(self.body(), admin)
        return self.reply(404, {"message": f"no route {method} {path}"})

    def create_user(self, attributes: dict[str, Any], admin: psycopg.Connection[Any]) -> None:
        uid = str(uuid.uuid4())
        meta = attributes.get("user_metadata") or {}
        admin.execute("insert into auth.users (id, email, aud, role, raw_user_meta_data, created_at, updated_at) "
                      "values (%s, %s, 'authenticated', 'authenticated', %s, now(), now())",
                      (uid, attributes["email"], json.dumps(meta)))
        self.api.passwords[attributes["email"]] = attributes["password"]
        if meta.get("label") == self.api.hold_create:
            self.api.release.wait(60)  # created, but the answer comes too late for the client
        return self.reply(200, self.api.user_json(uid, attributes["email"], meta))

    def sign_in(self, credentials: dict[str, Any], admin: psycopg.Connection[Any]) -> None:
        if self.api.passwords.get(credentials["email"]) != credentials["password"]:
            return self.reply(400, {"code": "invalid_credentials", "message": "Invalid login credentials"})
        row = admin.execute("select id::text, email, raw_user_meta_data from auth.users where email = %s",
                            (credentials["email"],)).fetchone()
        assert row is not None
        return self.reply(200, self.api.session_json(*row, anonymous=False))

    def sign_up(self, body: dict[str, Any], admin: psycopg.Connection[Any]) -> None:
        """POST /auth/v1/signup. Without an email or a phone it is signInAnonymously(): a new
        auth.users row with is_anonymous, no email, the `data` as user metadata, and a session
        whose token says `is_anonymous: true` (role authenticated), as Supabase Auth answers."""
        if body.get("email") or body.get("phone"):
            return self.reply(501, {"message": "only anonymous sign-ups are emulated here"})
        if not self.api.anonymous_sign_ins:  # the project setting is off (the default of a new project)
            return self.reply(422, {"code": "anonymous_provider_disabled", "message": "Anonymous sign-ins are disabled"})
        uid = str(uuid.uuid4())
        meta = body.get("data") or {}
        admin.execute("insert into auth.users (id, email, aud, role, is_anonymous, raw_app_meta_data, "
                      "raw_user_meta_data, created_at, updated_at, last_sign_in_at) "
                      "values (%s, null, 'authenticated', 'authenticated', true, %s, %s, now(), now(), now())",
                      (uid, json.dumps({"provider": "anonymous", "providers": []}), json.dumps(meta)))
        if meta.get("label") == self.api.hold_create:
            self.api.release.wait(60)  # created, but the answer comes too late for the client
        return self.reply(200, self.api.session_json(uid, None, meta, anonymous=True))

    def rpc(self, function: str, args: dict[str, Any], conn: psycopg.Connection[Any],
            admin: psycopg.Connection[Any]) -> None:
        types = argument_types(admin, function)
        if function in self.api.hide_functions or function not in self.surface(admin):
            return self.reply(404, {"code": "PGRST202", "message": f"Could not find the function public.{function}"})
        return self.outcome(postgrest.call(conn, self.persona(), function, args, types=types, commit=True))

    def outcome(self, got: postgrest.Outcome, status: int = 200) -> None:
        if got.ok:
            return self.reply(status, [jsonable(r) for r in got.rows])
        return self.reply(404 if got.sqlstate == "P0002" else 400,
                          {"code": got.sqlstate, "message": got.message, "details": None, "hint": None})

    def surface(self, admin: psycopg.Connection[Any]) -> dict[str, list[str]]:
        rows = admin.execute("select proname from pg_proc where pronamespace = 'public'::regnamespace").fetchall()
        return {name: list(argument_types(admin, name)) for (name,) in rows if name not in self.api.hide_functions}

    def openapi(self, admin: psycopg.Connection[Any]) -> dict[str, Any]:
        return {"swagger": "2.0", "paths": {f"/rpc/{name}": {"post": {"parameters": [
            {"in": "body", "name": "args", "schema": {"type": "object", "properties": {a: {} for a in args}}}]}}
            for name, args in self.surface(admin).items()}}

    def do_GET(self) -> None:
        if self.path.startswith("/realtime/v1/websocket") and self.api.realtime_port:
            return self.tunnel(self.api.realtime_port)
        self.route("GET")
        return None

    def tunnel(self, port: int) -> None:
        """Hand the websocket upgrade to the Realtime emulation, then pipe bytes both ways."""
        upstream = socket.create_connection(("127.0.0.1", port))
        head = f"GET {self.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()) + "\r\n"
        upstream.sendall(head.encode())

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pipe, args=(upstream, self.connection), daemon=True)
        back.start()
        pipe(self.connection, upstream)
        back.join()
        upstream.close()
        self.close_connection = True

    def do_POST(self) -> None:
        self.route("POST")

    def do_DELETE(self) -> None:
        self.route("DELETE")


@contextmanager
def serve(url: str, admin_url: str, realtime_port: int | None = None) -> Iterator[tuple[str, Api]]:
    """The API on a free loopback port: (base URL, what it saw)."""
    api = Api(admin_url, url, realtime_port=realtime_port)
    handler = type("BoundHandler", (Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", api
    finally:
        api.release.set()
        server.shutdown()
        server.server_close()
