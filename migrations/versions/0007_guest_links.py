"""guest links: expiring, revocable links through which an anonymous user chats with a host

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Why the shapes below (DBA notes, DESIGN §8):
* A guest is a Supabase anonymous user (auth.users.is_anonymous, JWT role authenticated).
  A guest thread is a row of chat_threads like any other, so messages, history, the
  broadcast trigger and the Realtime policies keep one code path. Its id is random
  (g_ + 32 hex); the host is user a (their identity, so deleting the host cascades as for
  direct threads); user b is empty; the guest session lives in guest_* columns of the
  same row: the link, the guest's user (set null when Supabase deletes the user: the host
  keeps the thread), the display name, the link's expiry (copied, so that checks read one
  row and a guest needs no access to chat_links) and when the session was ended.
* A session is active while guest_supabase_id is set, guest_ended_at is null and
  guest_expires_at is in the future. Policies admit a guest only to an active session; the
  host always reads (history, and joining the topic), but sends only while the session is
  active (a closed thread). A link's slots count redemptions: ending a guest frees none.
* Direct threads are untouched: their rows, constraints and the policies' direct-thread
  terms are the same; guest terms are added with OR inside the same subqueries, so the
  membership stays computed once per statement (InitPlan) and uses an index.
* Links store only the SHA-256 of their token. Tokens come from gen_random_uuid(), which
  draws from pg_strong_random() (the same CSPRNG as pgcrypto's gen_random_bytes), so the
  revision needs no extension: two UUIDs (244 random bits) hashed to 32 bytes, base64url.
* Writes to links and guest sessions go through SECURITY DEFINER helpers in chat_private
  (end users get no INSERT/UPDATE on them: a host must not pick a weak token, extend a
  link or reopen a session); the public RPCs are thin SECURITY INVOKER wrappers.
* The identity map refuses anonymous users (a trigger): a guest never has a Mongo id.
* Table changes come first and policy DDL last: on hosted Supabase any policy DDL locks
  auth.users and realtime.messages until commit (supautils), so that part stays short.
  No policy on realtime.messages changes: the helper their policies call is replaced.
* Abuse limits (DESIGN §10) hook into create, redeem and the guest send (marked below).
* The downgrade deletes guest threads and their messages (0004 cannot hold them).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen with this revision: a later fix is a new revision, never an edit here.
UPGRADE = r"""
-- Links a host hands out; only the SHA-256 of the token is kept.
create table public.chat_links (
  link_id uuid not null default gen_random_uuid(),
  host_supabase_id uuid not null,
  host_mongo_id text not null,
  token_hash bytea not null,
  label text,
  max_guests integer not null,
  created_at timestamp with time zone not null default now(),
  expires_at timestamp with time zone not null,
  revoked_at timestamp with time zone,
  constraint chat_links_pkey primary key (link_id),
  constraint chat_links_host_fkey foreign key (host_supabase_id, host_mongo_id)
    references public.chat_identities (supabase_user_id, mongo_id) on delete cascade,
  constraint chat_links_token_hash_key unique (token_hash),
  constraint chat_links_token_hash_check check (octet_length(token_hash) = 32),
  constraint chat_links_label_check check (char_length(label) <= 100),
  constraint chat_links_max_guests_check check (max_guests between 1 and 100),
  constraint chat_links_expires_at_check
    check (expires_at > created_at and expires_at <= created_at + interval '30 days')
);
comment on table public.chat_links is
  'Guest links minted by hosts; the token is returned once, only its SHA-256 is stored';
-- The host's links (list_chat_links) and the foreign key to the identity map.
create index chat_links_host_supabase_id_idx on public.chat_links (host_supabase_id, host_mongo_id);
alter table public.chat_links enable row level security;

-- Guest threads: host = user a, no user b, the session in guest_* columns.
alter table public.chat_threads
  alter column user_b_mongo_id drop not null,
  alter column user_b_supabase_id drop not null,
  add column kind text not null default 'direct',
  add column guest_link_id uuid,
  add column guest_supabase_id uuid,
  add column guest_display_name text,
  add column guest_expires_at timestamp with time zone,
  add column guest_ended_at timestamp with time zone,
  add constraint chat_threads_guest_link_id_fkey
    foreign key (guest_link_id) references public.chat_links (link_id) on delete cascade,
  add constraint chat_threads_guest_supabase_id_fkey
    foreign key (guest_supabase_id) references auth.users (id) on delete set null,
  add constraint chat_threads_kind_check check (
    (kind = 'direct' and user_b_mongo_id is not null and user_b_supabase_id is not null
     and guest_link_id is null and guest_supabase_id is null and guest_display_name is null
     and guest_expires_at is null and guest_ended_at is null)
    or (kind = 'guest' and thread_id ~ '^g_[0-9a-f]{32}$' and user_b_mongo_id is null
        and user_b_supabase_id is null and guest_link_id is not null and guest_expires_at is not null)),
  add constraint chat_threads_guest_display_name_check
    check (char_length(guest_display_name) between 1 and 50 and guest_display_name !~ '[[:cntrl:]]');
comment on column public.chat_threads.kind is 'direct (a pair of users) or guest (a host and a guest link''s guest)';
comment on column public.chat_threads.guest_supabase_id is
  'The guest''s anonymous user; null once Supabase deleted it (the host keeps the thread)';
comment on column public.chat_threads.guest_ended_at is
  'When the host ended the session or revoked the link; an ended session closes the thread';
-- One session per (link, caller); also the foreign key to chat_links.
create unique index chat_threads_guest_link_id_guest_supabase_id_key
  on public.chat_threads (guest_link_id, guest_supabase_id) where guest_link_id is not null;
-- A guest's membership (policies) and the foreign key to auth.users.
create index chat_threads_guest_supabase_id_idx
  on public.chat_threads (guest_supabase_id) where guest_supabase_id is not null;

-- Guest messages carry no Mongo ids; direct messages always carry both.
alter table public.chat_messages
  alter column sender_mongo_id drop not null,
  alter column recipient_mongo_id drop not null,
  add constraint chat_messages_mongo_ids_check check (
    (sender_mongo_id is not null and recipient_mongo_id is not null)
    or (starts_with(thread_id, 'g_') and recipient_mongo_id is null));

-- The identity map never maps an anonymous user (a guest has no Mongo id).
create function chat_private.chat_identity_refuse_anonymous() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if exists (select from auth.users u where u.id = new.supabase_user_id and u.is_anonymous) then
    raise exception using errcode = '22023',
      message = 'supabase_user_id is an anonymous user: guests cannot be mapped to a Mongo id',
      hint = 'map users once they have converted to a permanent account';
  end if;
  return new;
end
$$;
comment on function chat_private.chat_identity_refuse_anonymous() is
  'Refuses identity rows for anonymous auth.users (reads auth.users with the owner''s rights)';
revoke all on function chat_private.chat_identity_refuse_anonymous() from public;

create trigger chat_identities__refuse_anonymous
  before insert or update of supabase_user_id on public.chat_identities
  for each row execute function chat_private.chat_identity_refuse_anonymous();

-- Is the caller an anonymous user? The JWT claim or, authoritatively, auth.users.
create function chat_private.chat_caller_is_anonymous() returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce((auth.jwt() ->> 'is_anonymous')::boolean, false)
      or exists (select from auth.users u where u.id = auth.uid() and u.is_anonymous)
$$;
comment on function chat_private.chat_caller_is_anonymous() is
  'True for an anonymous caller (claim is_anonymous or auth.users.is_anonymous)';
revoke all on function chat_private.chat_caller_is_anonymous() from public;
-- No grant: only chat_private.chat_create_link, which runs as the owner, calls it.

create function chat_private.chat_create_link(_ttl interval, _max_guests integer, _label text)
returns table (link_id uuid, token text, expires_at timestamp with time zone)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
  host_mongo text;
  new_token text;
  link public.chat_links;
  tokens_left integer;
  active integer;
  soonest timestamp with time zone;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if _ttl is null or _ttl < interval '5 minutes' or _ttl > interval '30 days' then
    raise exception using errcode = '22023', message = '_ttl must be between 5 minutes and 30 days';
  end if;
  if _max_guests is null or _max_guests not between 1 and 100 then
    raise exception using errcode = '22023', message = '_max_guests must be between 1 and 100';
  end if;
  if char_length(_label) > 100 then
    raise exception using errcode = '22023',
      message = format('_label must be at most 100 characters (got %s)', char_length(_label));
  end if;
  if chat_private.chat_caller_is_anonymous() then
    raise exception using errcode = '42501', message = 'guests cannot create links',
      hint = 'anonymous users may redeem links, not create them';
  end if;
  select i.mongo_id into host_mongo from public.chat_identities i where i.supabase_user_id = caller;
  if host_mongo is null then
    raise exception using errcode = '42501', message = 'no chat identity: only mapped users can host guests',
      hint = 'the backend creates identities (chat_identities) when a user signs in';
  end if;
  -- Abuse limits (DESIGN §10): 20 new links per host per hour, then at most 50 active links.
  -- The take locks the host's bucket row until commit, so one host's concurrent creations
  -- queue here and each counts the links the others committed.
  tokens_left := chat_private.take_tokens('links_per_host', caller::text);
  select count(*), min(l.expires_at) into active, soonest from public.chat_links l
  where l.host_supabase_id = caller and l.revoked_at is null and l.expires_at > now();
  if active >= 50 then
    raise exception using errcode = 'PT429',
      message = 'too many active links: a host may have 50 unexpired, unrevoked links',
      hint = format('retry after %s s (or revoke a link)', greatest(ceil(extract(epoch from soonest - now())), 1));
  end if;

  -- 244 random bits (two version-4 UUIDs from pg_strong_random), hashed to 32 uniform
  -- bytes, base64url without padding: 43 URL-safe characters.
  new_token := pg_catalog.translate(pg_catalog.encode(pg_catalog.sha256(
    pg_catalog.uuid_send(gen_random_uuid()) || pg_catalog.uuid_send(gen_random_uuid())), 'base64'), '+/=', '-_');
  insert into public.chat_links (host_supabase_id, host_mongo_id, token_hash, label, max_guests, expires_at)
  values (caller, host_mongo, pg_catalog.sha256(pg_catalog.convert_to(new_token, 'UTF8')), _label, _max_guests,
          now() + _ttl)
  returning * into link;
  return query select link.link_id, new_token, link.expires_at;
end
$$;
comment on function chat_private.chat_create_link(interval, integer, text) is
  'create_chat_link''s work with the owner''s rights: the caller cannot choose the token or write links directly';
revoke all on function chat_private.chat_create_link(interval, integer, text) from public;
grant execute on function chat_private.chat_create_link(interval, integer, text) to authenticated, service_role;

create function chat_private.chat_redeem_link(_token text, _display_name text)
returns table (thread_id text, host_mongo_id text, display_name text, expires_at timestamp with time zone)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
  -- Trimmed of what the body rule counts as blank: (Unicode) whitespace and invisible spaces.
  name text := pg_catalog.regexp_replace(_display_name,
    '^[\s\u0085\u00a0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u2060\u3000\ufeff]+|'
    '[\s\u0085\u00a0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u2060\u3000\ufeff]+$', '', 'g');
  link public.chat_links;
  thread public.chat_threads;
  used integer;
  tokens_left integer;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if _token is null or _token !~ '^[A-Za-z0-9_-]{43}$' then
    raise exception using errcode = '22023', message = '_token must be the 43-character token of a chat link';
  end if;
  if _display_name is not null and char_length(name) not between 1 and 50 then
    raise exception using errcode = '22023', message = '_display_name must be 1 to 50 characters after trimming';
  end if;
  if name ~ '[[:cntrl:]]' then
    raise exception using errcode = '22023', message = '_display_name must not contain control characters';
  end if;

  -- The link row lock serialises redemptions of one link: exactly max_guests callers win.
  select * into link from public.chat_links l
  where l.token_hash = pg_catalog.sha256(pg_catalog.convert_to(_token, 'UTF8'))
  for update;
  if link.link_id is null then
    raise exception using errcode = 'P0002', message = 'link not found';
  end if;
  if link.host_supabase_id = caller then
    raise exception using errcode = '22023', message = '_token is a link of the caller: a host cannot redeem their own link';
  end if;
  -- Unknown, expired, revoked, full, or this caller's ended session: one answer for all.
  if link.revoked_at is not null or link.expires_at <= now() then
    raise exception using errcode = 'P0002', message = 'link not found';
  end if;
  select * into thread from public.chat_threads t where t.guest_link_id = link.link_id and t.guest_supabase_id = caller;
  if thread.thread_id is not null then
    if thread.guest_ended_at is not null then
      raise exception using errcode = 'P0002', message = 'link not found';
    end if;
    return query select thread.thread_id, link.host_mongo_id, thread.guest_display_name, link.expires_at;
    return;  -- the same session again: no second slot
  end if;
  select count(*) into used from public.chat_threads t where t.guest_link_id = link.link_id;
  -- A full link, or a caller whose user is gone (a deleted user's access token stays valid until it expires).
  if used >= link.max_guests or not exists (select from auth.users u where u.id = caller) then
    raise exception using errcode = 'P0002', message = 'link not found';
  end if;
  -- Abuse limits (DESIGN §10): 10 redemptions per caller per minute. Counted only here, once
  -- the redemption will succeed: a failed attempt writes nothing and costs nothing.
  tokens_left := chat_private.take_tokens('redemptions_per_caller', caller::text);

  insert into public.chat_threads (thread_id, kind, user_a_mongo_id, user_a_supabase_id, guest_link_id,
                                   guest_supabase_id, guest_display_name, guest_expires_at)
  values ('g_' || pg_catalog.replace(gen_random_uuid()::text, '-', ''), 'guest', link.host_mongo_id,
          link.host_supabase_id, link.link_id, caller, name, link.expires_at)
  returning * into thread;
  return query select thread.thread_id, link.host_mongo_id, thread.guest_display_name, link.expires_at;
end
$$;
comment on function chat_private.chat_redeem_link(text, text) is
  'redeem_chat_link''s work with the owner''s rights: the caller cannot see the link nor write the host''s thread';
revoke all on function chat_private.chat_redeem_link(text, text) from public;
grant execute on function chat_private.chat_redeem_link(text, text) to authenticated, service_role;

create function chat_private.chat_revoke_link(_link_id uuid) returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
  found_link uuid;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  update public.chat_links l set revoked_at = coalesce(l.revoked_at, now())
  where l.link_id = _link_id and l.host_supabase_id = caller
  returning l.link_id into found_link;
  if found_link is null then
    raise exception using errcode = 'P0002', message = 'link not found';
  end if;
  update public.chat_threads t set guest_ended_at = now()
  where t.guest_link_id = found_link and t.guest_ended_at is null;
end
$$;
comment on function chat_private.chat_revoke_link(uuid) is
  'revoke_chat_link''s work with the owner''s rights: revokes the caller''s link and ends its guest sessions';
revoke all on function chat_private.chat_revoke_link(uuid) from public;
grant execute on function chat_private.chat_revoke_link(uuid) to authenticated, service_role;

create function chat_private.chat_end_guest(_thread_id text) returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
  wanted_thread text := lower(_thread_id);
  found_thread text;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if wanted_thread is null or wanted_thread !~ '^(?:[0-9a-f]{24}_[0-9a-f]{24}|g_[0-9a-f]{32})$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like g_<32 hexadecimal characters> (a guest thread)';
  end if;
  update public.chat_threads t set guest_ended_at = coalesce(t.guest_ended_at, now())
  where t.thread_id = wanted_thread and t.kind = 'guest' and t.user_a_supabase_id = caller
  returning t.thread_id into found_thread;
  if found_thread is null then
    raise exception using errcode = 'P0002', message = 'thread not found';
  end if;
end
$$;
comment on function chat_private.chat_end_guest(text) is
  'end_chat_guest''s work with the owner''s rights: ends one guest session of the caller''s';
revoke all on function chat_private.chat_end_guest(text) from public;
grant execute on function chat_private.chat_end_guest(text) to authenticated, service_role;

create function public.create_chat_link(
  _ttl interval default '24 hours',
  _max_guests integer default 1,
  _label text default null
) returns table (link_id uuid, token text, expires_at timestamp with time zone)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  return query select * from chat_private.chat_create_link(_ttl, _max_guests, _label);
end
$$;
comment on function public.create_chat_link(interval, integer, text) is
  'Mint a guest link as a signed-in, non-anonymous host; the token is returned once';
revoke all on function public.create_chat_link(interval, integer, text) from public, anon, authenticated, service_role;
grant execute on function public.create_chat_link(interval, integer, text) to authenticated, service_role;

create function public.redeem_chat_link(_token text, _display_name text default null)
returns table (thread_id text, host_mongo_id text, display_name text, expires_at timestamp with time zone)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  return query select * from chat_private.chat_redeem_link(_token, _display_name);
end
$$;
comment on function public.redeem_chat_link(text, text) is
  'Join a host through their link: the caller''s guest thread, created once per (link, caller)';
revoke all on function public.redeem_chat_link(text, text) from public, anon, authenticated, service_role;
grant execute on function public.redeem_chat_link(text, text) to authenticated, service_role;

create function public.revoke_chat_link(_link_id uuid) returns void
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  perform chat_private.chat_revoke_link(_link_id);
end
$$;
comment on function public.revoke_chat_link(uuid) is
  'Revoke one of the caller''s links and end every guest session of it (idempotent)';
revoke all on function public.revoke_chat_link(uuid) from public, anon, authenticated, service_role;
grant execute on function public.revoke_chat_link(uuid) to authenticated, service_role;

create function public.end_chat_guest(_thread_id text) returns void
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  perform chat_private.chat_end_guest(_thread_id);
end
$$;
comment on function public.end_chat_guest(text) is 'End one guest session of the caller''s (closes the guest thread)';
revoke all on function public.end_chat_guest(text) from public, anon, authenticated, service_role;
grant execute on function public.end_chat_guest(text) to authenticated, service_role;

-- SECURITY INVOKER: RLS shows a host their links and their guest threads only.
create function public.list_chat_links()
returns table (link_id uuid, label text, created_at timestamp with time zone, expires_at timestamp with time zone,
               max_guests integer, guests integer, status text)
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  if auth.uid() is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  return query
    select l.link_id, l.label, l.created_at, l.expires_at, l.max_guests, g.guests,
           case when l.revoked_at is not null then 'revoked'
                when l.expires_at <= now() then 'expired'
                when g.guests >= l.max_guests then 'full'
                else 'active' end
    from public.chat_links l
    cross join lateral (select count(*)::integer as guests from public.chat_threads t
                        where t.guest_link_id = l.link_id) g
    where l.host_supabase_id = (select auth.uid())
    order by l.created_at desc, l.link_id;
end
$$;
comment on function public.list_chat_links() is
  'The caller''s guest links with their guest count and status (active, expired, revoked, full); never a token';
revoke all on function public.list_chat_links() from public, anon, authenticated, service_role;
grant execute on function public.list_chat_links() to authenticated, service_role;

-- Guest threads on the existing paths. The direct-thread part of insert_chat_message is
-- 0002's, unchanged, after the thread id check; guest threads branch off before it.
create or replace function public.insert_chat_message(
  _thread_id text,
  _sender_mongo_id text,
  _recipient_mongo_id text,
  _body text,
  _client_id uuid default null
) returns public.chat_messages
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
  wanted_thread text := lower(_thread_id);
  sender text := lower(_sender_mongo_id);
  recipient text := lower(_recipient_mongo_id);
  problem text := chat_private.chat_body_problem(_body);
  caller_mongo text;
  user_a text;
  user_b text;
  host uuid;
  open boolean;
  message public.chat_messages;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if wanted_thread is null or wanted_thread !~ '^(?:[0-9a-f]{24}_[0-9a-f]{24}|g_[0-9a-f]{32})$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like <mongo id>_<mongo id> (24 hex characters each) or g_<32 hex characters>';
  end if;

  if starts_with(wanted_thread, 'g_') then
    -- A guest thread: the guest sends with no Mongo ids, the host with their own as sender.
    if sender is not null and sender !~ '^[0-9a-f]{24}$' then
      raise exception using errcode = '22023',
        message = '_sender_mongo_id must be a 24-character hexadecimal Mongo ObjectId, or null for a guest';
    end if;
    if recipient is not null then
      raise exception using errcode = '22023', message = '_recipient_mongo_id must be null in a guest thread';
    end if;
    if problem is not null then
      raise exception using errcode = '22023', message = problem;
    end if;
    -- Abuse limits (DESIGN §10): messages per guest session are counted by the trigger
    -- chat_messages__guest_rate_limit, on every path, besides messages per sender.
    if _client_id is null then
      if sender is null then
        insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body)
        select wanted_thread, null, null, caller, _body
        where exists (
          select from public.chat_threads t
          where t.thread_id = wanted_thread and t.guest_supabase_id = caller
            and t.guest_ended_at is null and t.guest_expires_at > now())
        returning * into message;
      else
        insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body)
        select wanted_thread, sender, null, caller, _body
        where exists (
          select from public.chat_threads t
          where t.thread_id = wanted_thread and t.user_a_supabase_id = caller and t.user_a_mongo_id = sender
            and t.guest_supabase_id is not null and t.guest_ended_at is null and t.guest_expires_at > now())
        returning * into message;
      end if;
      if message.id is not null then
        return message;
      end if;
    end if;

    if sender is not null then
      select i.mongo_id into caller_mongo from public.chat_identities i where i.supabase_user_id = caller;
      if caller_mongo is distinct from sender then
        raise exception using errcode = '42501', message = 'sender does not match caller',
          hint = '_sender_mongo_id must be the Mongo id of the signed-in user (null for a guest)';
      end if;
    end if;
    -- RLS shows the host their guest threads and a guest only their active session.
    select t.user_a_supabase_id,
           t.guest_supabase_id is not null and t.guest_ended_at is null and t.guest_expires_at > now()
    into host, open
    from public.chat_threads t where t.thread_id = wanted_thread;
    if host is null then
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
    if (host = caller) <> (sender is not null) then
      raise exception using errcode = '42501', message = 'sender does not match caller',
        hint = case when host = caller then 'the host sends with their own _sender_mongo_id'
                    else 'a guest sends with _sender_mongo_id null' end;
    end if;
    if not open then
      raise exception using errcode = '22023', message = 'thread is closed: the guest session has ended';
    end if;
    if _client_id is null then
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
  else
    if sender is null or sender !~ '^[0-9a-f]{24}$' then
      raise exception using errcode = '22023',
        message = '_sender_mongo_id must be a 24-character hexadecimal Mongo ObjectId';
    end if;
    if recipient is null or recipient !~ '^[0-9a-f]{24}$' then
      raise exception using errcode = '22023',
        message = '_recipient_mongo_id must be a 24-character hexadecimal Mongo ObjectId';
    end if;
    if recipient = sender then
      raise exception using errcode = '22023', message = '_recipient_mongo_id must differ from _sender_mongo_id';
    end if;
    if problem is not null then
      raise exception using errcode = '22023', message = problem;
    end if;

    if _client_id is null then
      -- The common case in one statement: insert only if the caller is the sender and the
      -- recipient the other participant of a thread they can see (RLS applies to both reads).
      insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body)
      select wanted_thread, sender, recipient, caller, _body
      where exists (
        select from public.chat_identities i
        join public.chat_threads t on t.thread_id = wanted_thread
        where i.supabase_user_id = caller and i.mongo_id = sender
          and ((t.user_a_mongo_id = sender and t.user_b_mongo_id = recipient)
            or (t.user_b_mongo_id = sender and t.user_a_mongo_id = recipient)))
      returning * into message;
      if message.id is not null then
        return message;
      end if;
    end if;

    -- Nothing inserted yet (or a _client_id to honour): find out why, in the contract's order.
    -- The caller's identity and the thread in one read; RLS shows only the caller's own
    -- identity row and only threads they take part in.
    select i.mongo_id, t.user_a_mongo_id, t.user_b_mongo_id into caller_mongo, user_a, user_b
    from public.chat_identities i
    left join public.chat_threads t on t.thread_id = wanted_thread
    where i.supabase_user_id = caller;
    if caller_mongo is distinct from sender then
      raise exception using errcode = '42501', message = 'sender does not match caller',
        hint = '_sender_mongo_id must be the Mongo id of the signed-in user';
    end if;
    -- A thread the caller is not part of is as invisible as one that does not exist.
    if user_a is null then
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
    if recipient is distinct from (case when user_a = sender then user_b else user_a end) then
      raise exception using errcode = '22023',
        message = '_recipient_mongo_id is not the other participant of this thread';
    end if;
    if _client_id is null then
      -- Every check passes now but the insert found nothing: the thread went away meanwhile.
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
  end if;

  select * into message from public.chat_messages m where m.sender_supabase_id = caller and m.client_id = _client_id;
  if message.id is not null then
    if message.thread_id <> wanted_thread then
      raise exception using errcode = '22023',
        message = '_client_id was already used for a message in another thread';
    end if;
    return message;  -- a retry: the first row, nothing inserted
  end if;
  insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body, client_id)
  values (wanted_thread, sender, recipient, caller, _body, _client_id)
  on conflict (sender_supabase_id, client_id) where client_id is not null do nothing
  returning * into message;
  if message.id is null then
    -- a concurrent call with the same _client_id won the race: its row, if it is a retry
    select * into strict message from public.chat_messages m
    where m.sender_supabase_id = caller and m.client_id = _client_id;
    if message.thread_id <> wanted_thread then
      raise exception using errcode = '22023',
        message = '_client_id was already used for a message in another thread';
    end if;
  end if;
  return message;
end
$$;
comment on function public.insert_chat_message(text, text, text, text, uuid) is
  'Send a message as the caller (a guest thread too); a retry with the same _client_id returns the first row';

create or replace function public.chat_history(
  _thread_id text,
  _before_created_at timestamp with time zone default null,
  _before_id bigint default null,
  _limit integer default 50
) returns setof public.chat_messages
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  wanted_thread text := lower(_thread_id);
begin
  if auth.uid() is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if wanted_thread is null or wanted_thread !~ '^(?:[0-9a-f]{24}_[0-9a-f]{24}|g_[0-9a-f]{32})$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like <mongo id>_<mongo id> (24 hex characters each) or g_<32 hex characters>';
  end if;
  if _limit is null or _limit not between 1 and 200 then
    raise exception using errcode = '22023', message = '_limit must be between 1 and 200';
  end if;
  if _before_created_at is null and _before_id is not null then
    raise exception using errcode = '22023',
      message = '_before_created_at is required with _before_id (pass both from the last row of the previous page)';
  end if;
  if _before_id is null and _before_created_at is not null then
    raise exception using errcode = '22023',
      message = '_before_id is required with _before_created_at (pass both from the last row of the previous page)';
  end if;
  -- RLS: participants, a guest thread's host, its guest while the session is active.
  if not exists (select from public.chat_threads t where t.thread_id = wanted_thread) then
    raise exception using errcode = 'P0002', message = 'thread not found';
  end if;

  -- Two statements rather than one with "or ... is null", so both plans use the index.
  if _before_id is null then
    return query
      select m.* from public.chat_messages m
      where m.thread_id = wanted_thread
      order by m.created_at desc, m.id desc
      limit _limit;
  else
    return query
      select m.* from public.chat_messages m
      where m.thread_id = wanted_thread and (m.created_at, m.id) < (_before_created_at, _before_id)
      order by m.created_at desc, m.id desc
      limit _limit;
  end if;
end
$$;
comment on function public.chat_history(text, timestamp with time zone, bigint, integer) is
  'A page of a thread''s messages, newest first; the next page starts before the last row''s (created_at, id)';

-- Realtime: the helper behind the chat_realtime__* policies (0003) learns guest threads.
create or replace function chat_private.is_chat_topic_participant(_topic text) returns boolean
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  return starts_with(_topic, 'chat:') and exists (
    select from public.chat_threads t
    where t.thread_id = substr(_topic, 6)
      and ((select auth.uid()) in (t.user_a_supabase_id, t.user_b_supabase_id)
        or (t.guest_supabase_id = (select auth.uid()) and t.guest_ended_at is null and t.guest_expires_at > now())));
end
$$;
comment on function chat_private.is_chat_topic_participant(text) is
  'True when the caller takes part in the thread named by a chat:<thread_id> topic (a guest: while active)';

-- Abuse limits (DESIGN §10) of guest links, tuned like the others in public.chat_rate_limits.
insert into public.chat_rate_limits (limit_name, burst, refill_every, description) values
  ('messages_per_guest_session', 10, interval '3 seconds',
   'messages a guest sends in one guest session (a guest thread), besides messages_per_sender'),
  ('links_per_host', 20, interval '3 minutes', 'guest links a host creates (20 per hour; 50 active at most)'),
  ('redemptions_per_caller', 10, interval '6 seconds', 'guest links a user redeems successfully (10 per minute)');

-- A guest's messages (no Mongo ids) count against their session, whichever path they take.
create function chat_private.chat_guest_messages_rate_limit() returns trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  tokens_left integer;
begin
  tokens_left := chat_private.take_tokens('messages_per_guest_session', new.thread_id);
  return new;
end
$$;
comment on function chat_private.chat_guest_messages_rate_limit() is
  'Counts a guest''s message against messages_per_guest_session of its guest thread';
revoke all on function chat_private.chat_guest_messages_rate_limit() from public, anon, authenticated, service_role;

create trigger chat_messages__guest_rate_limit
  before insert on public.chat_messages
  for each row
  when (starts_with(new.thread_id, 'g_') and new.sender_mongo_id is null
        and pg_catalog.row_security_active('public.chat_messages'::regclass))
  execute function chat_private.chat_guest_messages_rate_limit();

-- Privileges: take back Supabase's default grants, then give each role what it needs.
-- No end user writes links (the definer helpers do); hosts read theirs, never the hash.
revoke all on table public.chat_links from public, anon, authenticated, service_role;
grant select (link_id, host_supabase_id, host_mongo_id, label, max_guests, created_at, expires_at, revoked_at)
  on table public.chat_links to authenticated;
grant select, insert, update, delete on table public.chat_links to service_role;

-- Policies last (on hosted Supabase, policy DDL locks auth.users until commit).
create policy chat_links__select_host on public.chat_links
  for select to authenticated
  using (host_supabase_id = (select auth.uid()));
comment on policy chat_links__select_host on public.chat_links is 'A host may read their own links (not the token hash)';

alter policy chat_threads__select_participants on public.chat_threads
  using ((select auth.uid()) in (user_a_supabase_id, user_b_supabase_id)
         or (guest_supabase_id = (select auth.uid()) and guest_ended_at is null and guest_expires_at > now()));
comment on policy chat_threads__select_participants on public.chat_threads is
  'Participants may read their threads; a guest only while their session is active';

alter policy chat_messages__select_participants on public.chat_messages
  using (thread_id = any (array(
    select t.thread_id from public.chat_threads t
    where (select auth.uid()) in (t.user_a_supabase_id, t.user_b_supabase_id)
       or (t.guest_supabase_id = (select auth.uid()) and t.guest_ended_at is null and t.guest_expires_at > now()))));
comment on policy chat_messages__select_participants on public.chat_messages is
  'Participants may read their threads'' messages, a guest while active (thread ids computed once per statement)';

alter policy chat_messages__insert_participants on public.chat_messages
  with check (
    sender_supabase_id = (select auth.uid())
    and exists (
      select from public.chat_threads t
      where t.thread_id = chat_messages.thread_id
        and ((t.user_a_supabase_id = chat_messages.sender_supabase_id
              and t.user_a_mongo_id = chat_messages.sender_mongo_id
              and t.user_b_mongo_id = chat_messages.recipient_mongo_id)
          or (t.user_b_supabase_id = chat_messages.sender_supabase_id
              and t.user_b_mongo_id = chat_messages.sender_mongo_id
              and t.user_a_mongo_id = chat_messages.recipient_mongo_id)
          or (t.kind = 'guest' and t.guest_supabase_id is not null and t.guest_ended_at is null
              and t.guest_expires_at > now() and chat_messages.recipient_mongo_id is null
              and ((t.user_a_supabase_id = chat_messages.sender_supabase_id
                    and t.user_a_mongo_id = chat_messages.sender_mongo_id)
                or (t.guest_supabase_id = chat_messages.sender_supabase_id
                    and chat_messages.sender_mongo_id is null))))));
comment on policy chat_messages__insert_participants on public.chat_messages is
  'A participant may send as themselves to the other participant; in an active guest thread the host and the guest';
"""

DOWNGRADE = r"""
drop trigger chat_messages__guest_rate_limit on public.chat_messages;
drop function chat_private.chat_guest_messages_rate_limit();
delete from public.chat_rate_limits
where limit_name in ('messages_per_guest_session', 'links_per_host', 'redemptions_per_caller');
-- Guest threads (and their messages) cannot exist in 0004's schema.
delete from public.chat_threads where kind = 'guest';

alter policy chat_messages__insert_participants on public.chat_messages
  with check (
    sender_supabase_id = (select auth.uid())
    and exists (
      select from public.chat_threads t
      where t.thread_id = chat_messages.thread_id
        and ((t.user_a_supabase_id = chat_messages.sender_supabase_id
              and t.user_a_mongo_id = chat_messages.sender_mongo_id
              and t.user_b_mongo_id = chat_messages.recipient_mongo_id)
          or (t.user_b_supabase_id = chat_messages.sender_supabase_id
              and t.user_b_mongo_id = chat_messages.sender_mongo_id
              and t.user_a_mongo_id = chat_messages.recipient_mongo_id))));
comment on policy chat_messages__insert_participants on public.chat_messages is
  'A participant may send as themselves to the other participant of the thread';

alter policy chat_messages__select_participants on public.chat_messages
  using (thread_id = any (array(
    select t.thread_id from public.chat_threads t
    where (select auth.uid()) in (t.user_a_supabase_id, t.user_b_supabase_id))));
comment on policy chat_messages__select_participants on public.chat_messages is
  'Participants may read their threads'' messages (thread ids computed once per statement)';

alter policy chat_threads__select_participants on public.chat_threads
  using ((select auth.uid()) in (user_a_supabase_id, user_b_supabase_id));
comment on policy chat_threads__select_participants on public.chat_threads is
  'Participants may read their threads';

create or replace function chat_private.is_chat_topic_participant(_topic text) returns boolean
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  return starts_with(_topic, 'chat:') and exists (
    select from public.chat_threads t
    where t.thread_id = substr(_topic, 6)
      and (select auth.uid()) in (t.user_a_supabase_id, t.user_b_supabase_id));
end
$$;
comment on function chat_private.is_chat_topic_participant(text) is
  'True when the caller takes part in the thread named by a chat:<thread_id> topic';

create or replace function public.chat_history(
  _thread_id text,
  _before_created_at timestamp with time zone default null,
  _before_id bigint default null,
  _limit integer default 50
) returns setof public.chat_messages
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  wanted_thread text := lower(_thread_id);
begin
  if auth.uid() is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if wanted_thread is null or wanted_thread !~ '^[0-9a-f]{24}_[0-9a-f]{24}$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like <mongo id>_<mongo id> (24 hexadecimal characters each)';
  end if;
  if _limit is null or _limit not between 1 and 200 then
    raise exception using errcode = '22023', message = '_limit must be between 1 and 200';
  end if;
  if _before_created_at is null and _before_id is not null then
    raise exception using errcode = '22023',
      message = '_before_created_at is required with _before_id (pass both from the last row of the previous page)';
  end if;
  if _before_id is null and _before_created_at is not null then
    raise exception using errcode = '22023',
      message = '_before_id is required with _before_created_at (pass both from the last row of the previous page)';
  end if;
  if not exists (select from public.chat_threads t where t.thread_id = wanted_thread) then
    raise exception using errcode = 'P0002', message = 'thread not found';
  end if;

  -- Two statements rather than one with "or ... is null", so both plans use the index.
  if _before_id is null then
    return query
      select m.* from public.chat_messages m
      where m.thread_id = wanted_thread
      order by m.created_at desc, m.id desc
      limit _limit;
  else
    return query
      select m.* from public.chat_messages m
      where m.thread_id = wanted_thread and (m.created_at, m.id) < (_before_created_at, _before_id)
      order by m.created_at desc, m.id desc
      limit _limit;
  end if;
end
$$;
comment on function public.chat_history(text, timestamp with time zone, bigint, integer) is
  'A page of a thread''s messages, newest first; the next page starts before the last row''s (created_at, id)';

create or replace function public.insert_chat_message(
  _thread_id text,
  _sender_mongo_id text,
  _recipient_mongo_id text,
  _body text,
  _client_id uuid default null
) returns public.chat_messages
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
  wanted_thread text := lower(_thread_id);
  sender text := lower(_sender_mongo_id);
  recipient text := lower(_recipient_mongo_id);
  problem text := chat_private.chat_body_problem(_body);
  caller_mongo text;
  user_a text;
  user_b text;
  message public.chat_messages;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if wanted_thread is null or wanted_thread !~ '^[0-9a-f]{24}_[0-9a-f]{24}$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like <mongo id>_<mongo id> (24 hexadecimal characters each)';
  end if;
  if sender is null or sender !~ '^[0-9a-f]{24}$' then
    raise exception using errcode = '22023',
      message = '_sender_mongo_id must be a 24-character hexadecimal Mongo ObjectId';
  end if;
  if recipient is null or recipient !~ '^[0-9a-f]{24}$' then
    raise exception using errcode = '22023',
      message = '_recipient_mongo_id must be a 24-character hexadecimal Mongo ObjectId';
  end if;
  if recipient = sender then
    raise exception using errcode = '22023', message = '_recipient_mongo_id must differ from _sender_mongo_id';
  end if;
  if problem is not null then
    raise exception using errcode = '22023', message = problem;
  end if;

  if _client_id is null then
    -- The common case in one statement: insert only if the caller is the sender and the
    -- recipient the other participant of a thread they can see (RLS applies to both reads).
    insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body)
    select wanted_thread, sender, recipient, caller, _body
    where exists (
      select from public.chat_identities i
      join public.chat_threads t on t.thread_id = wanted_thread
      where i.supabase_user_id = caller and i.mongo_id = sender
        and ((t.user_a_mongo_id = sender and t.user_b_mongo_id = recipient)
          or (t.user_b_mongo_id = sender and t.user_a_mongo_id = recipient)))
    returning * into message;
    if message.id is not null then
      return message;
    end if;
  end if;

  -- Nothing inserted yet (or a _client_id to honour): find out why, in the contract's order.
  -- The caller's identity and the thread in one read; RLS shows only the caller's own
  -- identity row and only threads they take part in.
  select i.mongo_id, t.user_a_mongo_id, t.user_b_mongo_id into caller_mongo, user_a, user_b
  from public.chat_identities i
  left join public.chat_threads t on t.thread_id = wanted_thread
  where i.supabase_user_id = caller;
  if caller_mongo is distinct from sender then
    raise exception using errcode = '42501', message = 'sender does not match caller',
      hint = '_sender_mongo_id must be the Mongo id of the signed-in user';
  end if;
  -- A thread the caller is not part of is as invisible as one that does not exist.
  if user_a is null then
    raise exception using errcode = 'P0002', message = 'thread not found';
  end if;
  if recipient is distinct from (case when user_a = sender then user_b else user_a end) then
    raise exception using errcode = '22023',
      message = '_recipient_mongo_id is not the other participant of this thread';
  end if;
  if _client_id is null then
    -- Every check passes now but the insert found nothing: the thread went away meanwhile.
    raise exception using errcode = 'P0002', message = 'thread not found';
  end if;

  select * into message from public.chat_messages m where m.sender_supabase_id = caller and m.client_id = _client_id;
  if message.id is not null then
    if message.thread_id <> wanted_thread then
      raise exception using errcode = '22023',
        message = '_client_id was already used for a message in another thread';
    end if;
    return message;  -- a retry: the first row, nothing inserted
  end if;
  insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body, client_id)
  values (wanted_thread, sender, recipient, caller, _body, _client_id)
  on conflict (sender_supabase_id, client_id) where client_id is not null do nothing
  returning * into message;
  if message.id is null then
    -- a concurrent call with the same _client_id won the race: its row, if it is a retry
    select * into strict message from public.chat_messages m
    where m.sender_supabase_id = caller and m.client_id = _client_id;
    if message.thread_id <> wanted_thread then
      raise exception using errcode = '22023',
        message = '_client_id was already used for a message in another thread';
    end if;
  end if;
  return message;
end
$$;
comment on function public.insert_chat_message(text, text, text, text, uuid) is
  'Send a message as the caller; a retry with the same _client_id returns the first row';

drop function public.list_chat_links();
drop function public.end_chat_guest(text);
drop function public.revoke_chat_link(uuid);
drop function public.redeem_chat_link(text, text);
drop function public.create_chat_link(interval, integer, text);
drop function chat_private.chat_end_guest(text);
drop function chat_private.chat_revoke_link(uuid);
drop function chat_private.chat_redeem_link(text, text);
drop function chat_private.chat_create_link(interval, integer, text);
drop function chat_private.chat_caller_is_anonymous();
drop trigger chat_identities__refuse_anonymous on public.chat_identities;
drop function chat_private.chat_identity_refuse_anonymous();

alter table public.chat_messages
  drop constraint chat_messages_mongo_ids_check,
  alter column sender_mongo_id set not null,
  alter column recipient_mongo_id set not null;

drop index public.chat_threads_guest_supabase_id_idx;
drop index public.chat_threads_guest_link_id_guest_supabase_id_key;
alter table public.chat_threads
  drop constraint chat_threads_guest_display_name_check,
  drop constraint chat_threads_kind_check,
  drop constraint chat_threads_guest_supabase_id_fkey,
  drop constraint chat_threads_guest_link_id_fkey,
  drop column guest_ended_at,
  drop column guest_expires_at,
  drop column guest_display_name,
  drop column guest_supabase_id,
  drop column guest_link_id,
  drop column kind,
  alter column user_b_supabase_id set not null,
  alter column user_b_mongo_id set not null;

drop table public.chat_links;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
