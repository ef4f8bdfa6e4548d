-- A read-only role for the poller on the PBX's PostgreSQL CDR database. Run as a superuser
-- connected to that database (`psql -d asterisk -f sql/grant-readonly-postgresql.sql`); replace
-- the password (then keep it in /etc/poller/poller.toml, mode 0640 root:poller, or in
-- POLLER_SOURCE_URL: postgresql+psycopg://poller:…@127.0.0.1/asterisk). The poller never writes to the cdr table,
-- and its sessions are read-only besides.
--
-- pg_hba.conf must let the role in over TCP from the poller's host (127.0.0.1 on the PBX
-- itself), e.g. `host asterisk poller 127.0.0.1/32 scram-sha-256`, then `SELECT pg_reload_conf();`.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'poller') THEN
        CREATE ROLE poller LOGIN PASSWORD 'change-me';
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO poller', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO poller;
GRANT SELECT ON public.cdr TO poller;
