"""The end-to-end scenario of `dbtool smoke`, written once as named steps with expectations.

A driver (local: the package's PostgREST and Realtime reproduction; live: supabase-py)
supplies the operations; the steps decide what to call and what counts as a pass. Each step
ends as passed, failed, skipped (with its reason: it cannot run here, or a step it needs did
not pass) or waiting (the database lacks the RPCs of a feature that is not there yet).
"""

from __future__ import annotations

import functools
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dbtool.smoke.base import (
    Caller,
    Driver,
    Reply,
    Report,
    Status,
    StepFailed,
    StepResult,
    StepSkipped,
    StepWaiting,
)

# Features built in their own revisions: their steps wait until the database has the RPCs.
GUEST_LINKS = ("create_chat_link", "redeem_chat_link", "revoke_chat_link")
RECEIPTS = ("mark_chat_read",)
GUEST_THREAD = re.compile(r"g_[0-9a-f]{32}")


@dataclass
class Context:
    """What steps hand to later steps; `need` turns a missing product into a skip."""

    run_id: str
    products: dict[str, Any] = field(default_factory=dict)
    passed: set[str] = field(default_factory=set)

    def need(self, key: str, step: str) -> Any:
        if step not in self.passed or key not in self.products:
            raise StepSkipped(f"needs step {step}, which did not pass")
        return self.products[key]


StepFn = Callable[[Driver, Context], str]


@dataclass(frozen=True)
class Step:
    name: str
    expectation: str
    run: StepFn
    feature: tuple[str, ...] = ()  # RPCs the step needs; missing -> waiting for its feature


def mongo_id() -> str:
    return secrets.token_hex(12)


def thread_id(a: str, b: str) -> str:
    low, high = sorted((a.lower(), b.lower()))
    return f"{low}_{high}"


def _ok(reply: Reply, what: str) -> list[dict[str, Any]]:
    if not reply.ok:
        raise StepFailed(f"{what} failed: {reply.describe()}")
    return reply.rows


def _refused(reply: Reply, code: str, prefix: str, what: str) -> str:
    if reply.ok:
        raise StepFailed(f"{what} was allowed ({reply.describe()})")
    if reply.code != code or not (reply.message or "").startswith(prefix):
        raise StepFailed(f"{what} refused with {reply.describe()}, expected {code} {prefix}")
    return f"{code} {prefix}"


def _send(d: Driver, sender: Caller, recipient: Caller | None, tid: str, body: str,
          client_id: str | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"_thread_id": tid, "_sender_mongo_id": sender.mongo_id,
                            "_recipient_mongo_id": recipient.mongo_id if recipient else None, "_body": body}
    if client_id is not None:
        args["_client_id"] = client_id
    rows = _ok(d.rpc(sender, "insert_chat_message", args), f"{sender.label}'s insert_chat_message")
    if len(rows) != 1:
        raise StepFailed(f"insert_chat_message returned {len(rows)} rows")
    return rows[0]


# --- the steps -----------------------------------------------------------------------------


def create_users(d: Driver, ctx: Context) -> str:
    made = {label: d.create_user(label, ctx.run_id) for label in ("alice", "bob", "outsider")}
    ctx.products.update(made)
    return ", ".join(f"{c.label} {c.uid}" for c in made.values())


def map_identities(d: Driver, ctx: Context) -> str:
    out = []
    for label in ("alice", "bob", "outsider"):
        caller: Caller = ctx.need(label, "users.create")
        mid = mongo_id()
        _ok(d.map_identity(caller, mid), f"mapping {label}")
        ctx.products[label] = Caller(caller.label, caller.uid, caller.email, caller.anonymous, mid, caller.handle)
        out.append(f"{label} -> {mid}")
    return "; ".join(out)


def sign_in(d: Driver, ctx: Context) -> str:
    for label in ("alice", "bob", "outsider"):
        ctx.products[label] = d.sign_in(ctx.need(label, "identities.map"))
    return "three sessions"


def ensure_thread(d: Driver, ctx: Context) -> str:
    alice: Caller = ctx.need("alice", "users.sign_in")
    bob: Caller = ctx.need("bob", "users.sign_in")
    want = thread_id(str(alice.mongo_id), str(bob.mongo_id))
    first = _ok(d.rpc(alice, "ensure_chat_thread", {"_user_a_mongo_id": alice.mongo_id,
                                                     "_user_b_mongo_id": bob.mongo_id}), "alice's ensure_chat_thread")
    second = _ok(d.rpc(bob, "ensure_chat_thread", {"_user_a_mongo_id": bob.mongo_id,
                                                    "_user_b_mongo_id": alice.mongo_id}), "bob's ensure_chat_thread")
    got = [r.get("thread_id") for r in first + second]
    if got != [want, want]:
        raise StepFailed(f"thread ids {got}, expected {want} for both")
    ctx.products["thread"] = want
    return want


def _pair(ctx: Context) -> tuple[Caller, Caller, str]:
    """alice, bob and their thread, from the steps that made them."""
    return ctx.need("alice", "users.sign_in"), ctx.need("bob", "users.sign_in"), ctx.need("thread", "thread.ensure")


def send_message(d: Driver, ctx: Context) -> str:
    alice, bob, tid = _pair(ctx)
    client_id = str(uuid.uuid4())
    row = _send(d, alice, bob, tid, "hello from dbtool smoke", client_id)
    if row.get("sender_supabase_id") != alice.uid or row.get("thread_id") != tid:
        raise StepFailed(f"row has sender {row.get('sender_supabase_id')} in {row.get('thread_id')}")
    ctx.products["first"] = row
    return f"message {row['id']}"


def retry_message(d: Driver, ctx: Context) -> str:
    alice, bob, tid = _pair(ctx)
    first: dict[str, Any] = ctx.need("first", "message.send")
    again = _send(d, alice, bob, tid, "hello from dbtool smoke", str(first["client_id"]))
    if again.get("id") != first["id"]:
        raise StepFailed(f"retry returned message {again.get('id')}, expected {first['id']}")
    history = _ok(d.rpc(bob, "chat_history", {"_thread_id": tid, "_limit": 200}), "bob's chat_history")
    same = [r for r in history if r.get("client_id") == first["client_id"]]
    if len(same) != 1:
        raise StepFailed(f"{len(same)} rows carry the client id after the retry")
    return f"same row {first['id']}, one row with that _client_id"


def page_history(d: Driver, ctx: Context) -> str:
    alice, bob, tid = _pair(ctx)
    ctx.need("first", "message.send")
    for i in range(4):
        sender, recipient = (bob, alice) if i % 2 == 0 else (alice, bob)
        _send(d, sender, recipient, tid, f"paging {i}")
    everything = _ok(d.rpc(alice, "chat_history", {"_thread_id": tid, "_limit": 200}), "chat_history")
    seen: list[Any] = []
    before: dict[str, Any] = {}
    for _ in range(len(everything) + 1):
        page = _ok(d.rpc(alice, "chat_history", {"_thread_id": tid, "_limit": 2, **before}), "chat_history page")
        if not page:
            break
        seen += [r["id"] for r in page]
        before = {"_before_created_at": page[-1]["created_at"], "_before_id": page[-1]["id"]}
    want = [r["id"] for r in everything]
    ordered = sorted(everything, key=lambda r: (str(r["created_at"]), r["id"]), reverse=True)
    if [r["id"] for r in ordered] != want:
        raise StepFailed("chat_history is not newest first")
    if seen != want:
        raise StepFailed(f"pages of 2 gave {seen}, the whole history is {want}")
    return f"{len(want)} messages in {-(-len(want) // 2)} pages, newest first, none skipped or repeated"


def outsider_history(d: Driver, ctx: Context) -> str:
    outsider: Caller = ctx.need("outsider", "users.sign_in")
    tid: str = ctx.need("thread", "thread.ensure")
    return _refused(d.rpc(outsider, "chat_history", {"_thread_id": tid}), "P0002", "thread not found",
                    "the outsider's chat_history")


def join_channel(d: Driver, ctx: Context) -> str:
    bob: Caller = ctx.need("bob", "users.sign_in")
    tid: str = ctx.need("thread", "thread.ensure")
    allowed, detail = d.join(bob, f"chat:{tid}")
    if not allowed:
        raise StepFailed(f"join refused: {detail}")
    ctx.products["joined"] = True
    return detail


def insert_broadcast(d: Driver, ctx: Context) -> str:
    alice, bob, tid = _pair(ctx)
    ctx.need("joined", "realtime.join")
    row = _send(d, alice, bob, tid, "live over realtime")
    payload = d.expect_broadcast(bob, f"chat:{tid}", "INSERT",
                                 lambda p: (p.get("record") or {}).get("id") == row["id"])
    record = payload.get("record") or {}
    if (payload.get("operation"), payload.get("table"), record.get("body")) != ("INSERT", "chat_messages",
                                                                                 "live over realtime"):
        raise StepFailed(f"payload {payload}")
    return f"INSERT of message {row['id']} on chat:{tid}"


def outsider_join(d: Driver, ctx: Context) -> str:
    outsider: Caller = ctx.need("outsider", "users.sign_in")
    tid: str = ctx.need("thread", "thread.ensure")
    allowed, detail = d.join(outsider, f"chat:{tid}")
    if allowed:
        raise StepFailed(f"the outsider joined chat:{tid}: {detail}")
    return f"refused: {detail}"


def public_join(d: Driver, ctx: Context) -> str:
    outsider: Caller = ctx.need("outsider", "users.sign_in")
    tid: str = ctx.need("thread", "thread.ensure")
    allowed, detail = d.public_join(outsider, f"chat:{tid}")
    if allowed:
        raise StepFailed(
            "the project allows public Realtime channels, so anyone may open chat:<thread_id> without the "
            "chat policies (it still gets no private broadcast); turn off 'Allow public access' in the "
            f"project's Realtime settings ({detail})")
    return f"refused: {detail}"


def client_broadcast(d: Driver, ctx: Context) -> str:
    alice, bob, tid = _pair(ctx)
    ctx.need("joined", "realtime.join")
    delivered, detail = d.client_broadcast(alice, bob, f"chat:{tid}")
    if delivered:
        raise StepFailed(f"a client broadcast reached the other participant: {detail}")
    return detail


def presence(d: Driver, ctx: Context) -> str:
    alice, bob, tid = _pair(ctx)
    ctx.need("joined", "realtime.join")
    seen, detail = d.presence(alice, bob, f"chat:{tid}")
    if not seen:
        raise StepFailed(detail)
    return detail


def guest_link(d: Driver, ctx: Context) -> str:
    alice: Caller = ctx.need("alice", "users.sign_in")
    rows = _ok(d.rpc(alice, "create_chat_link", {"_ttl": "00:10:00", "_max_guests": 1, "_label": "dbtool smoke"}),
               "create_chat_link")
    if len(rows) != 1 or not rows[0].get("token") or not rows[0].get("link_id"):
        raise StepFailed(f"create_chat_link returned {len(rows)} row(s) without a token and link id")
    ctx.products["link"] = rows[0]
    return f"link {rows[0]['link_id']} (token not shown)"


def guest_sign_in(d: Driver, ctx: Context) -> str:
    # Only with a link to redeem: an anonymous user that could do nothing would be one more
    # user to delete, and one more of the sign-ins Supabase Auth rate-limits per IP address.
    ctx.need("link", "guest.link_create")
    guest = d.sign_in_anonymously("guest", ctx.run_id)
    ctx.products["guest"] = guest
    return f"anonymous user {guest.uid}"


def guest_redeem(d: Driver, ctx: Context) -> str:
    guest: Caller = ctx.need("guest", "guest.sign_in")
    link: dict[str, Any] = ctx.need("link", "guest.link_create")
    rows = _ok(d.rpc(guest, "redeem_chat_link", {"_token": link["token"], "_display_name": "smoke guest"}),
               "redeem_chat_link")
    tid = rows[0].get("thread_id") if len(rows) == 1 else None
    if not isinstance(tid, str) or not GUEST_THREAD.fullmatch(tid):
        raise StepFailed(f"redeem_chat_link returned {rows}")
    ctx.products["guest_thread"] = tid
    return f"guest thread {tid}"


def guest_exchange(d: Driver, ctx: Context) -> str:
    alice: Caller = ctx.need("alice", "users.sign_in")
    guest: Caller = ctx.need("guest", "guest.sign_in")
    tid: str = ctx.need("guest_thread", "guest.redeem")
    topic = f"chat:{tid}"
    for who in (guest, alice):
        allowed, detail = d.join(who, topic)
        if not allowed:
            raise StepFailed(f"{who.label}'s join of {topic} refused: {detail}")
    from_guest = _send(d, guest, None, tid, "hello from the guest")
    if (from_guest.get("sender_supabase_id"), from_guest.get("sender_mongo_id")) != (guest.uid, None):
        raise StepFailed(f"the guest's message has sender {from_guest.get('sender_supabase_id')} and Mongo id "
                         f"{from_guest.get('sender_mongo_id')}, expected {guest.uid} and none")
    d.expect_broadcast(alice, topic, "INSERT", lambda p: (p.get("record") or {}).get("id") == from_guest["id"])
    to_guest = _send(d, alice, None, tid, "hello, guest")
    if to_guest.get("recipient_mongo_id") is not None:
        raise StepFailed(f"the host's message to the guest has recipient Mongo id {to_guest['recipient_mongo_id']}")
    d.expect_broadcast(guest, topic, "INSERT", lambda p: (p.get("record") or {}).get("id") == to_guest["id"])
    return f"messages {from_guest['id']} and {to_guest['id']} sent and received on {topic}"


def guest_revoke(d: Driver, ctx: Context) -> str:
    alice: Caller = ctx.need("alice", "users.sign_in")
    link: dict[str, Any] = ctx.need("link", "guest.link_create")
    _ok(d.rpc(alice, "revoke_chat_link", {"_link_id": link["link_id"]}), "revoke_chat_link")
    return f"link {link['link_id']} revoked"


def guest_refused(d: Driver, ctx: Context) -> str:
    guest: Caller = ctx.need("guest", "guest.sign_in")
    tid: str = ctx.need("guest_thread", "guest.redeem")
    ctx.need("link", "guest.revoke")
    refused = _refused(d.rpc(guest, "chat_history", {"_thread_id": tid}), "P0002", "thread not found",
                       "the ended guest's chat_history")
    allowed, detail = d.join(guest, f"chat:{tid}")
    if allowed:
        raise StepFailed(f"the ended guest joined chat:{tid}: {detail}")
    return f"history {refused}; join refused: {detail}"


def read_receipt(d: Driver, ctx: Context) -> str:
    alice, bob, tid = _pair(ctx)
    ctx.need("joined", "realtime.join")
    allowed, detail = d.join(alice, f"chat:{tid}")
    if not allowed:
        raise StepFailed(f"alice's join refused: {detail}")
    last = _ok(d.rpc(bob, "chat_history", {"_thread_id": tid, "_limit": 1}), "chat_history")
    if not last:
        raise StepFailed("the thread has no message to mark read")
    up_to = last[0]["id"]
    _ok(d.rpc(bob, "mark_chat_read", {"_thread_id": tid, "_up_to_id": up_to}), "mark_chat_read")
    payload = d.expect_broadcast(alice, f"chat:{tid}", "READ",
                                 lambda p: p.get("reader_supabase_id") == bob.uid and p.get("up_to_id") == up_to)
    return f"READ up to {payload.get('up_to_id')} by bob"


STEPS: tuple[Step, ...] = (
    Step("users.create", "three throwaway users exist (two participants, one outsider)", create_users),
    Step("identities.map", "service_role maps each user to a new Mongo id", map_identities),
    Step("users.sign_in", "each user signs in and holds a session", sign_in),
    Step("thread.ensure", "ensure_chat_thread gives both participants the thread derived from the pair", ensure_thread),
    Step("message.send", "insert_chat_message returns the new row, sent by the caller", send_message),
    Step("message.retry", "a retry with the same _client_id returns the same row and inserts nothing", retry_message),
    Step("history.paging", "chat_history pages (limit 2) newest first, never skipping nor repeating", page_history),
    Step("history.outsider", "an outsider's chat_history gets P0002 thread not found", outsider_history),
    Step("realtime.join", "a participant joins the private channel chat:<thread_id>", join_channel),
    Step("realtime.insert", "the channel receives the INSERT broadcast of a new message", insert_broadcast),
    Step("realtime.outsider", "an outsider's join of chat:<thread_id> is refused", outsider_join),
    Step("realtime.public", "a public (non-private) join of chat:<thread_id> is refused", public_join),
    Step("realtime.client_broadcast", "a participant's own broadcast on the topic is refused", client_broadcast),
    Step("realtime.presence", "a participant's presence reaches the other participant", presence),
    Step("guest.link_create", "the host creates a guest link", guest_link, GUEST_LINKS),
    Step("guest.sign_in", "a guest signs in anonymously (once there is a link to redeem)", guest_sign_in,
         GUEST_LINKS),
    Step("guest.redeem", "the guest redeems the link and gets a guest thread g_<32 hex>", guest_redeem, GUEST_LINKS),
    Step("guest.exchange", "guest and host each receive the other's message on chat:<guest thread>", guest_exchange,
         GUEST_LINKS),
    Step("guest.revoke", "the host revokes the link", guest_revoke, GUEST_LINKS),
    Step("guest.refused", "the ended guest gets P0002 and is refused at join", guest_refused, GUEST_LINKS),
    Step("receipts.read", "mark_chat_read moves the cursor and the other side receives READ", read_receipt, RECEIPTS),
)
CLEANUP = Step("users.delete", "every user this run created is deleted", lambda d, ctx: "")


def steps() -> tuple[Step, ...]:
    """Every step, in order, the clean-up last."""
    return (*STEPS, CLEANUP)


def new_run_id() -> str:
    """Names this run's users (`chat-db-smoke-<run id>-<label>`), so they are recognisable."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _attempt(fn: Callable[[], str]) -> tuple[Status, str, float]:
    start = time.monotonic()
    try:
        status, detail = Status.PASSED, fn()
    except StepWaiting as exc:
        status, detail = Status.WAITING, str(exc)
    except StepSkipped as exc:
        status, detail = Status.SKIPPED, str(exc)
    except StepFailed as exc:
        status, detail = Status.FAILED, str(exc)
    except Exception as exc:  # a driver's unforeseen error fails the step; the run and its clean-up go on
        status, detail = Status.FAILED, f"unexpected {type(exc).__name__}: {exc}"
    return status, detail, (time.monotonic() - start) * 1000


def _run_step(step: Step, driver: Driver, ctx: Context, available: dict[tuple[str, ...], bool]) -> str:
    if step.feature:
        if step.feature not in available:
            available[step.feature] = driver.has_functions(step.feature)
        if not available[step.feature]:
            raise StepWaiting(f"the database has no {', '.join(step.feature)} yet")
    return step.run(driver, ctx)


def run(driver: Driver, run_id: str | None = None, progress: Callable[[StepResult], None] | None = None) -> Report:
    """Run every step against `driver`; the users it created are deleted whatever happens
    (a failed step, an unexpected error, Ctrl-C)."""
    try:
        driver.preflight()
    except BaseException:
        driver.cleanup()  # nothing was created yet; this closes the driver's connections
        raise
    ctx = Context(run_id or new_run_id())
    results: list[StepResult] = []
    available: dict[tuple[str, ...], bool] = {}

    def record(step: Step, status: Status, detail: str, ms: float) -> None:
        result = StepResult(step.name, step.expectation, status, detail, ms)
        results.append(result)
        if status is Status.PASSED:
            ctx.passed.add(step.name)
        if progress is not None:
            progress(result)

    try:
        for step in STEPS:
            record(step, *_attempt(functools.partial(_run_step, step, driver, ctx, available)))
    finally:
        start = time.monotonic()
        deleted, problems = driver.cleanup()
        status = Status.FAILED if problems else Status.PASSED
        detail = f"{deleted} user(s) deleted" + (f"; {'; '.join(problems)}" if problems else "")
        record(CLEANUP, status, detail, (time.monotonic() - start) * 1000)
    return Report(driver.name, driver.describe(), ctx.run_id, results, driver.notes())
