-- tokengate schema 2: the change feed's identity.
--
-- Replicas remember the sequence number they applied. That number means
-- something only in the history it came from: after a failover to an
-- asynchronous standby, a point-in-time restore or a re-created database,
-- the feed may have moved back, and numbers are handed out again for other
-- changes. The feed's identity tells histories apart; a replica that sees it
-- change reloads a snapshot instead of trusting its sequence number.

-- Random, made once with the feed: a database re-created by migrations
-- gets another one.
ALTER TABLE tokengate_feed ADD COLUMN feed_id text NOT NULL DEFAULT md5(random()::text || clock_timestamp()::text);

-- The identity: the feed id, the cluster's system identifier (another
-- cluster, for example a restore from a logical dump), the database's oid
-- (a database dropped and restored in the same cluster) and the WAL
-- timeline (a promoted standby or a point-in-time restore starts a new one,
-- even though it shares the system identifier and the feed id with the
-- primary it copied). The timeline comes from the current WAL file name on a
-- primary, which changes at promotion at once; a server in recovery has no
-- current WAL position, so it reports its last checkpoint's timeline.
CREATE FUNCTION tokengate_feed_identity(feed_id text) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT feed_id
        || '/' || (SELECT system_identifier FROM pg_control_system())::text
        || '/' || (SELECT oid FROM pg_database WHERE datname = current_database())::text
        || '/' || CASE WHEN pg_is_in_recovery()
                       THEN lpad(upper(to_hex((SELECT timeline_id FROM pg_control_checkpoint()))), 8, '0')
                       ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)
                  END
$$;
