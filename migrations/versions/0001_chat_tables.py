"""chat tables: identities, threads, messages, with RLS and explicit grants

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Why the shapes below (DBA notes):
* thread_id is derived from the pair and checked by constraints; composite foreign keys
  to the identity map make a thread's Mongo and Supabase ids agree with it, so a row can
  only exist in the form ensure_chat_thread creates, whoever inserts it.
* Clients may insert only some columns (column-level INSERT): created_at and id are
  always the server's, so nobody can backdate or pin a message.
* One index (thread_id, created_at, id) serves the keyset history page, the membership
  filter of the select policy and the foreign key; the original plan's (thread_id,
  created_at) and (thread_id, id) are both covered by it.
* The select policy on messages computes the caller's thread ids once per statement
  (`= any (array(select ...))`, an InitPlan) so that unfiltered member queries use the
  index instead of running a membership subquery per row.
* Message bodies: 1..4000 characters with at least one character that is not (Unicode)
  whitespace or an invisible space, checked inline so bulk loads validate quickly.
* Supabase's default privileges grant ALL on new public tables to anon, authenticated
  and service_role: everything is revoked first, then each role gets what it needs.
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen with this revision: a later fix is a new revision, never an edit here.
UPGRADE = r"""
-- Helpers PostgREST does not expose (db_schemas is public only).
create schema chat_private;
comment on schema chat_private is 'chat-db internals: helpers and trigger functions, not exposed by PostgREST';
revoke all on schema chat_private from public;
grant usage on schema chat_private to authenticated, service_role;

-- Who is who: the backend (service_role) maps each Supabase user to their Mongo id.
create table public.chat_identities (
  supabase_user_id uuid not null,
  mongo_id text not null,
  created_at timestamp with time zone not null default now(),
  constraint chat_identities_pkey primary key (supabase_user_id),
  constraint chat_identities_supabase_user_id_fkey
    foreign key (supabase_user_id) references auth.users (id) on delete cascade,
  constraint chat_identities_mongo_id_key unique (mongo_id),
  constraint chat_identities_supabase_user_id_mongo_id_key unique (supabase_user_id, mongo_id),
  constraint chat_identities_mongo_id_check check (mongo_id ~ '^[0-9a-f]{24}$')
);
comment on table public.chat_identities is
  'Authoritative Mongo id <-> Supabase user map, written by the backend with service_role only';
alter table public.chat_identities enable row level security;

-- A 1:1 conversation; user_a is the pair member whose Mongo id sorts first.
create table public.chat_threads (
  thread_id text not null,
  user_a_mongo_id text not null,
  user_a_supabase_id uuid not null,
  user_b_mongo_id text not null,
  user_b_supabase_id uuid not null,
  created_at timestamp with time zone not null default now(),
  constraint chat_threads_pkey primary key (thread_id),
  constraint chat_threads_pair_order_check check (user_a_mongo_id collate "C" < user_b_mongo_id collate "C"),
  constraint chat_threads_thread_id_check check (thread_id = user_a_mongo_id || '_' || user_b_mongo_id),
  constraint chat_threads_user_a_fkey foreign key (user_a_supabase_id, user_a_mongo_id)
    references public.chat_identities (supabase_user_id, mongo_id) on delete cascade,
  constraint chat_threads_user_b_fkey foreign key (user_b_supabase_id, user_b_mongo_id)
    references public.chat_identities (supabase_user_id, mongo_id) on delete cascade
);
comment on table public.chat_threads is
  'One row per pair of users; thread_id = lower(min mongo id) || ''_'' || lower(max mongo id)';
-- Membership lookups (policies: caller is user a or user b) and the two foreign keys.
create index chat_threads_user_a_supabase_id_idx on public.chat_threads (user_a_supabase_id, user_a_mongo_id);
create index chat_threads_user_b_supabase_id_idx on public.chat_threads (user_b_supabase_id, user_b_mongo_id);
alter table public.chat_threads enable row level security;

-- Messages are immutable for end users; the backend may correct or remove with service_role.
create table public.chat_messages (
  id bigint generated always as identity,
  thread_id text not null,
  sender_mongo_id text not null,
  recipient_mongo_id text not null,
  sender_supabase_id uuid not null,
  body text not null,
  created_at timestamp with time zone not null default now(),
  client_id uuid,
  constraint chat_messages_pkey primary key (id),
  constraint chat_messages_thread_id_fkey
    foreign key (thread_id) references public.chat_threads (thread_id) on delete cascade,
  -- Inline expressions (a function call per row was 8x slower to validate); the same rule as
  -- chat_private.chat_body_problem (0002), which gives the RPC its messages; a test proves they agree.
  constraint chat_messages_body_length_check check (char_length(body) between 1 and 4000),
  constraint chat_messages_body_blank_check
    check (body ~ '[^\s\u0085\u00a0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u2060\u3000\ufeff]'),
  constraint chat_messages_parties_check check (sender_mongo_id <> recipient_mongo_id)
);
comment on table public.chat_messages is
  'Chat messages; every insert is broadcast to the private Realtime topic chat:<thread_id>';
comment on column public.chat_messages.client_id is
  'Idempotency key chosen by the sender''s client: a retry with the same key returns the first row';
-- History pages (keyset on created_at, id), member queries and the foreign key.
create index chat_messages_thread_id_created_at_id_idx on public.chat_messages (thread_id, created_at, id);
create unique index chat_messages_sender_supabase_id_client_id_key
  on public.chat_messages (sender_supabase_id, client_id) where client_id is not null;
alter table public.chat_messages enable row level security;

-- Policies: narrowest role, auth.uid() wrapped so it is evaluated once per statement.
create policy chat_identities__select_own on public.chat_identities
  for select to authenticated
  using (supabase_user_id = (select auth.uid()));
comment on policy chat_identities__select_own on public.chat_identities is
  'A signed-in user may read their own mapping';

create policy chat_threads__select_participants on public.chat_threads
  for select to authenticated
  using ((select auth.uid()) in (user_a_supabase_id, user_b_supabase_id));
comment on policy chat_threads__select_participants on public.chat_threads is
  'Participants may read their threads';

create policy chat_threads__insert_participants on public.chat_threads
  for insert to authenticated
  with check ((select auth.uid()) in (user_a_supabase_id, user_b_supabase_id));
comment on policy chat_threads__insert_participants on public.chat_threads is
  'A participant may create their thread (constraints and foreign keys fix its form)';

create policy chat_messages__select_participants on public.chat_messages
  for select to authenticated
  using (thread_id = any (array(
    select t.thread_id from public.chat_threads t
    where (select auth.uid()) in (t.user_a_supabase_id, t.user_b_supabase_id))));
comment on policy chat_messages__select_participants on public.chat_messages is
  'Participants may read their threads'' messages (thread ids computed once per statement)';

create policy chat_messages__insert_participants on public.chat_messages
  for insert to authenticated
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

-- Privileges: take back Supabase's default grants, then give each role what it needs.
revoke all on table public.chat_identities, public.chat_threads, public.chat_messages
  from public, anon, authenticated, service_role;
revoke all on sequence public.chat_messages_id_seq from public, anon, authenticated, service_role;

grant select on table public.chat_identities to authenticated;
grant select on table public.chat_threads to authenticated;
grant insert (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, user_b_supabase_id)
  on table public.chat_threads to authenticated;
grant select on table public.chat_messages to authenticated;
grant insert (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body, client_id)
  on table public.chat_messages to authenticated;

grant select, insert, update, delete on table public.chat_identities, public.chat_threads, public.chat_messages
  to service_role;
-- No grant on chat_messages_id_seq: identity columns take their values without one.
"""

DOWNGRADE = r"""
drop table public.chat_messages;
drop table public.chat_threads;
drop table public.chat_identities;
drop schema chat_private;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
