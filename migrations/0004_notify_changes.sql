-- tokengate schema 4: every change rides in its own notification.
--
-- A replica woken by NOTIFY used to read the feed at once: with N replicas,
-- every change cost N reads, each a round trip and a query, on top of the N
-- notifications themselves. Now each change row notifies
-- tokengate_feed with the change as its payload, in commit order (writers
-- hold the feed's row lock until commit, and insert a transaction's changes
-- in sequence order), so a replica whose index is exactly one change
-- behind applies it without a read. It still reads whenever the payloads do
-- not continue its position without a gap, when its LISTEN connection was
-- lost, and at every poll.
--
-- The payload names the feed id: a replica applies a payload only when it
-- is the feed id the server had when its LISTEN connection was made (the
-- other parts of the feed's identity, system identifier, database and
-- timeline, cannot change under a connection to a primary), and reads
-- otherwise, finding the feed reset. tokengate_feed_identity itself would
-- cost tens of microseconds a change.
--
-- A payload is limited to 8000 bytes: a larger change (a very long reason)
-- notifies only its sequence number, and the replica reads it.
CREATE FUNCTION tokengate_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text := json_build_object('feed', (SELECT feed_id FROM tokengate_feed), 'seq', NEW.seq, 'op', NEW.op,
                                      'at', NEW.committed_at, 'revocation', NEW.revocation)::text;
BEGIN
    IF octet_length(payload) > 7900 THEN
        payload := json_build_object('seq', NEW.seq)::text;
    END IF;
    PERFORM pg_notify('tokengate_feed', payload);
    RETURN NULL;
END
$$;

CREATE TRIGGER tokengate_changes_notify AFTER INSERT ON tokengate_changes
    FOR EACH ROW EXECUTE FUNCTION tokengate_notify_change();
