-- tokengate schema 5: the feed's identity, computed for a few microseconds.
--
-- Every write and every read of the feed computes the identity (schema 2).
-- As a LANGUAGE sql function that is not inlined, its body was parsed and
-- planned again at every call: 0.15 ms of the server's CPU, more than the
-- rest of a read of the feed. In PL/pgSQL its plan is kept for the
-- session. The value is the same.
CREATE OR REPLACE FUNCTION tokengate_feed_identity(feed_id text) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN feed_id
        || '/' || (SELECT system_identifier FROM pg_control_system())::text
        || '/' || (SELECT oid FROM pg_database WHERE datname = current_database())::text
        || '/' || CASE WHEN pg_is_in_recovery()
                       THEN lpad(upper(to_hex((SELECT timeline_id FROM pg_control_checkpoint()))), 8, '0')
                       ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)
                  END;
END
$$;
