-- What a projection batch starts from, in one round trip: the projection's
-- lock for this transaction (batches and re-drives of one projection take
-- turns across processes), then the checkpoint and the aggregates with
-- parked events, each with its first (blocking) dead letter.
--
-- A function so that the read comes after the lock in one call: each
-- statement of a VOLATILE PL/pgSQL function takes a fresh snapshot, so the
-- read sees what the lock's previous holder committed (a single SQL statement
-- that took the lock and read would read with a snapshot from before it
-- waited). Tables resolve through the caller's search_path, as the statements
-- it replaces did (a rebuild's copy has its own schema).
CREATE OR REPLACE FUNCTION projector_batch_start(p_projection text)
    RETURNS TABLE (checkpoint bigint, aggregate_types text[], aggregate_ids text[], letters bigint[])
    LANGUAGE plpgsql VOLATILE AS
$$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sutazai-projection:' || current_schema() || ':' || p_projection));
    RETURN QUERY
        SELECT (SELECT c.stream_sequence FROM projector_checkpoints c WHERE c.projection = p_projection),
               array_agg(p.aggregate_type), array_agg(p.aggregate_id), array_agg(p.id)
        FROM (SELECT d.aggregate_type, d.aggregate_id, min(d.id) AS id FROM dead_letters d
              WHERE d.projection = p_projection AND d.status = 'parked' AND d.aggregate_id IS NOT NULL
              GROUP BY d.aggregate_type, d.aggregate_id) p;
END;
$$;
