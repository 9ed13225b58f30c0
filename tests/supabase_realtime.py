"""Supabase Realtime's websocket protocol over a real local database, for the live driver's tests.

Private joins are decided by dbtool.supabase.realtime.read_check, client broadcasts and presence by
dbtool.supabase.realtime.write_check (the statements the Realtime server runs); broadcasts the
database writes to realtime.messages (the chat trigger) are delivered to the topic's private
subscribers, as Realtime does from its replication stream. Public joins follow the project
setting "Allow public access" (`public_access`). Phoenix JSON messages (vsn 1.0.0), as
realtime-py speaks them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg
from websockets.asyncio.server import ServerConnection, serve

from dbtool.supabase import realtime
from dbtool.supabase.personas import Persona

PREFIX = "realtime:"


@dataclass(eq=False)
class Subscriber:
    ws: ServerConnection
    topic: str  # as on the wire, realtime:<topic>
    join_ref: str | None
    persona: Persona
    private: bool
    presence_key: str
    broadcast_self: bool


@dataclass
class RealtimeServer:
    url: str  # the database, as the role the Realtime server's checks run on
    public_access: bool = True
    port: int = 0
    subscribers: list[Subscriber] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    refs: itertools.count[int] = field(default_factory=itertools.count)
    _done: asyncio.Future[None] = field(init=False)
    _thread: threading.Thread = field(init=False)

    def check(self, kind: str, persona: Persona, topic: str, extension: str) -> bool:
        with psycopg.connect(self.url, autocommit=True) as conn:
            run = realtime.read_check if kind == "read" else realtime.write_check
            return run(conn, persona, topic.removeprefix(PREFIX), (extension,)).allowed[extension]

    async def send(self, ws: ServerConnection, event: str, topic: str, payload: Any, ref: str | None = None,
                   join_ref: str | None = None) -> None:
        await ws.send(json.dumps({"event": event, "topic": topic, "payload": payload, "ref": ref, "join_ref": join_ref}))

    async def reply(self, ws: ServerConnection, msg: dict[str, Any], status: str, response: dict[str, Any]) -> None:
        await self.send(ws, "phx_reply", msg["topic"], {"status": status, "response": response}, msg.get("ref"),
                        msg.get("join_ref"))

    async def handle(self, ws: ServerConnection) -> None:
        try:
            async for raw in ws:
                await self.dispatch(ws, json.loads(raw))
        finally:
            self.subscribers = [s for s in self.subscribers if s.ws is not ws]

    async def dispatch(self, ws: ServerConnection, msg: dict[str, Any]) -> None:
        event, topic = msg["event"], msg["topic"]
        if event == "heartbeat":
            return await self.reply(ws, msg, "ok", {})
        if event == "phx_join":
            return await self.join(ws, msg)
        if event == "phx_leave":
            self.subscribers = [s for s in self.subscribers if not (s.ws is ws and s.topic == topic)]
            return await self.reply(ws, msg, "ok", {})
        sub = next((s for s in self.subscribers if s.ws is ws and s.topic == topic), None)
        if sub is None:
            return None
        if event == "broadcast":
            if sub.private and not await asyncio.to_thread(self.check, "write", sub.persona, topic, "broadcast"):
                return None  # the server drops a broadcast the write check refuses
            for other in self.subscribers:
                if other.topic == topic and (other is not sub or sub.broadcast_self):
                    await self.send(other.ws, "broadcast", topic, msg["payload"])
            return None
        if event == "presence" and msg["payload"].get("event") == "track":
            if sub.private and not await asyncio.to_thread(self.check, "write", sub.persona, topic, "presence"):
                return None
            meta = {**msg["payload"].get("payload", {}), "phx_ref": str(next(self.refs))}
            diff = {"joins": {sub.presence_key: {"metas": [meta]}}, "leaves": {}}
            for other in self.subscribers:
                if other.topic == topic:
                    await self.send(other.ws, "presence_diff", topic, diff)
        return None

    async def join(self, ws: ServerConnection, msg: dict[str, Any]) -> None:
        config = msg["payload"].get("config", {})
        from tests.supabase_http import persona_of  # the tokens the HTTP API hands out

        persona = persona_of(msg["payload"].get("access_token"))
        topic = msg["topic"]
        private = bool(config.get("private"))
        if private:
            allowed = await asyncio.to_thread(self.check, "read", persona, topic, "broadcast") or \
                await asyncio.to_thread(self.check, "read", persona, topic, "presence")
            if not allowed:
                return await self.reply(ws, msg, "error", {
                    "reason": f"Unauthorized: You do not have permissions to read from this Channel topic: "
                              f"{topic.removeprefix(PREFIX)}"})
        elif not self.public_access:
            return await self.reply(ws, msg, "error", {"reason": "PrivateOnly: This project only allows private "
                                                                 "channels"})
        presence = config.get("presence") or {}
        sub = Subscriber(ws, topic, msg.get("join_ref"), persona, private, presence.get("key") or "",
                         bool((config.get("broadcast") or {}).get("self")))
        self.subscribers.append(sub)
        await self.reply(ws, msg, "ok", {"postgres_changes": []})
        await self.send(ws, "presence_state", topic, {})
        return None

    def database_broadcasts(self) -> list[tuple[str, str, str, Any]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute("select id::text, topic, event, payload from realtime.messages "
                                "where extension = 'broadcast' and private").fetchall()
        return [r for r in rows if r[0] not in self.seen]

    async def relay(self) -> None:
        """Deliver the database's broadcasts, as Realtime does from its replication stream."""
        self.seen.update(r[0] for r in await asyncio.to_thread(self.database_broadcasts))
        while True:
            for id_, topic, event, payload in await asyncio.to_thread(self.database_broadcasts):
                self.seen.add(id_)
                for sub in [s for s in self.subscribers if s.private and s.topic == PREFIX + topic]:
                    await self.send(sub.ws, "broadcast", sub.topic,
                                    {"event": event, "payload": payload, "type": "broadcast"})
            await asyncio.sleep(0.05)

    def start(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            self._done = asyncio.get_running_loop().create_future()
            async with serve(self.handle, "127.0.0.1", 0) as server:
                self.port = next(iter(server.sockets)).getsockname()[1]
                relay = asyncio.create_task(self.relay())
                ready.set()
                try:
                    await self._done
                finally:
                    relay.cancel()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Realtime emulation did not start")

    def stop(self) -> None:
        loop = self._done.get_loop()
        loop.call_soon_threadsafe(lambda: self._done.done() or self._done.set_result(None))
        self._thread.join(10)
