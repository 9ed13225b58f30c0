-- Local Supabase stand-in, part 4: the (empty) publication Postgres Changes listens to.
do $publication$
begin
  if not exists (select from pg_catalog.pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$publication$;
alter publication supabase_realtime owner to postgres;
