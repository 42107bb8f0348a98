-- Tamper evidence: every event carries a SHA-256 hash over its content and the
-- hash of the previous event of the same aggregate. A hand edit of a stored
-- event breaks its link (and every later one's). The outbox, and so the
-- stream, carries the hash too, which gives a second copy to compare with.

ALTER TABLE events ADD COLUMN IF NOT EXISTS hash text;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS hash text;

-- The exact bytes hashed; `payload` and `metadata` are `json`, whose text is
-- kept as written, so a verifier recomputes the same bytes from `::text`.
CREATE OR REPLACE FUNCTION event_hash(prev text, e events) RETURNS text
    LANGUAGE sql IMMUTABLE AS
$$
SELECT encode(sha256(convert_to(
    coalesce(prev, '') || E'\n' || e.aggregate_type || E'\n' || e.aggregate_id || E'\n' ||
    e.sequence::text || E'\n' || e.event_type || E'\n' || e.event_version || E'\n' ||
    e.payload::text || E'\n' || e.metadata::text, 'UTF8')), 'hex')
$$;

CREATE OR REPLACE FUNCTION events_chain_hash() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    prev text;
BEGIN
    SELECT hash INTO prev FROM events
    WHERE aggregate_type = NEW.aggregate_type AND aggregate_id = NEW.aggregate_id
      AND sequence = NEW.sequence - 1;
    NEW.hash := event_hash(prev, NEW);
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS events_chain_hash ON events;
CREATE TRIGGER events_chain_hash
    BEFORE INSERT ON events
    FOR EACH ROW
EXECUTE FUNCTION events_chain_hash();

-- The outbox copies the hash (the BEFORE trigger has set it by now).
CREATE OR REPLACE FUNCTION events_to_outbox() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    INSERT INTO outbox (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence, NEW.event_type, NEW.event_version,
            NEW.payload, NEW.metadata, NEW.hash);
    PERFORM pg_notify('sutazai_outbox', '');
    RETURN NEW;
END;
$$;

-- Audit lookups: what one request caused.
CREATE INDEX IF NOT EXISTS events_correlation ON events ((metadata ->> 'correlation_id'));
