-- Local Supabase stand-in, part 0: cluster roles with the attributes Supabase gives them.
-- Applied by dbtool as a superuser on plain PostgreSQL only; never by a migration.
-- Roles are cluster-wide, so this file is safe to run again in every database.

-- Create what is missing; attributes are set (or corrected) below.
do $roles$
declare
  wanted text;
begin
  foreach wanted in array array['anon', 'authenticated', 'service_role', 'authenticator',
                                'postgres', 'supabase_admin', 'supabase_auth_admin',
                                'supabase_realtime_admin']
  loop
    if not exists (select from pg_catalog.pg_roles where rolname = wanted) then
      execute format('create role %I', wanted);
    end if;
  end loop;
end
$roles$;

-- The API roles PostgREST switches to: no login, inherit (Supabase turned inherit on in 2023).
alter role anon nologin inherit nosuperuser nocreatedb nocreaterole noreplication nobypassrls;
alter role authenticated nologin inherit nosuperuser nocreatedb nocreaterole noreplication nobypassrls;
-- service_role is the backend's key: it bypasses RLS but still needs table privileges.
alter role service_role nologin inherit nosuperuser nocreatedb nocreaterole noreplication bypassrls;
-- PostgREST and Realtime log in as authenticator and then `set role`.
alter role authenticator login noinherit nosuperuser nocreatedb nocreaterole noreplication nobypassrls;
alter role supabase_auth_admin login noinherit nosuperuser nocreatedb nocreaterole noreplication;
alter role supabase_realtime_admin nologin noinherit nosuperuser nocreatedb nocreaterole noreplication;

-- The migration role: on Supabase `postgres` is demoted from superuser but bypasses RLS.
-- A plain server whose bootstrap superuser is itself named postgres cannot be demoted;
-- it stays superuser there (dbtool reports this).
do $postgres$
begin
  if (select oid from pg_catalog.pg_roles where rolname = 'postgres') <> 10 then
    alter role postgres login inherit nosuperuser createdb createrole replication bypassrls;
  end if;
  if (select oid from pg_catalog.pg_roles where rolname = 'supabase_admin') <> 10 then
    alter role supabase_admin superuser createdb createrole replication bypassrls;
  end if;
end
$postgres$;

-- Per-role settings Supabase ships (PostgREST applies them on `set role`).
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';
alter role authenticator set lock_timeout = '8s';

-- Memberships: authenticator may become any API role; postgres holds them too (with admin
-- option, so it can grant them onwards, as on Supabase).
do $grants$
begin
  if current_setting('server_version_num')::int >= 160000 then
    execute 'grant anon, authenticated, service_role to authenticator with inherit false';
  else
    execute 'grant anon, authenticated, service_role to authenticator';
  end if;
  execute 'grant anon, authenticated, service_role to postgres with admin option';
end
$grants$;

-- On current hosted projects postgres is NOT a member of the platform's admin roles
-- (Realtime's migration 20260707120000_restrict_realtime_schema revokes it); policy DDL on
-- the platform tables is let through by supautils instead, which the stand-in emulates in
-- 95_platform_guard.sql. Earlier stand-ins granted the membership: take it back.
do $revoke$
declare
  admin_role text;
begin
  foreach admin_role in array array['supabase_realtime_admin', 'supabase_auth_admin'] loop
    if exists (select from pg_catalog.pg_auth_members m
               where m.roleid = admin_role::regrole and m.member = 'postgres'::regrole) then
      execute format('revoke %I from postgres cascade', admin_role);
    end if;
  end loop;
end
$revoke$;
