-- The outbox trigger no longer NOTIFYs. Postgres serialises every transaction
-- that has issued a NOTIFY through its commit (a cluster-wide lock held across
-- the commit's WAL flush), which turned group commit off for every command:
-- 1,556 commits/s with the NOTIFY against 7,144 without it at 64 clients
-- (pgbench, this machine). The command service now wakes its own relay in
-- process after each commit, and tells a relay in another instance with a
-- NOTIFY sent outside the command's transaction (see relay::OutboxSignal).

CREATE OR REPLACE FUNCTION events_to_outbox() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    INSERT INTO outbox (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence, NEW.event_type, NEW.event_version,
            NEW.payload, NEW.metadata, NEW.hash);
    RETURN NEW;
END;
$$;
