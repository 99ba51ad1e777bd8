-- tokengate schema 1: revocations, their ordered change feed, and the
-- event ids that make webhook deliveries idempotent.

-- One row per live revocation; (kind, issuer, key, audience) is its natural
-- key. kind: 1 token (key = jti), 2 session (key = sid), 3 subject (key =
-- sub), 4 cutoff (key empty). revoked_before is set for subject and cutoff.
CREATE TABLE tokengate_revocations (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq            bigint      NOT NULL,
    kind           smallint    NOT NULL CHECK (kind BETWEEN 1 AND 4),
    issuer         text        NOT NULL,
    key            text        NOT NULL DEFAULT '',
    audience       text        NOT NULL DEFAULT '',
    revoked_before timestamptz,
    expires_at     timestamptz NOT NULL,
    source         text        NOT NULL DEFAULT '',
    reason         text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, issuer, key, audience)
);
CREATE INDEX tokengate_revocations_expires_at ON tokengate_revocations (expires_at);
CREATE INDEX tokengate_revocations_key ON tokengate_revocations (key);

-- The change feed. seq is assigned under the row lock of tokengate_feed,
-- which writers hold until they commit: changes commit in seq order and seq
-- has no gaps, so a reader that applied N has seen every change <= N.
CREATE TABLE tokengate_changes (
    seq          bigint      PRIMARY KEY,
    op           smallint    NOT NULL CHECK (op IN (1, 2)), -- 1 put, 2 delete
    revocation   jsonb       NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE tokengate_feed (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq   bigint  NOT NULL, -- the last change written
    pruned_seq bigint  NOT NULL  -- changes <= pruned_seq were swept
);
INSERT INTO tokengate_feed (last_seq, pruned_seq) VALUES (0, 0);

-- Event ids already applied (for example FusionAuth's event.id), kept until
-- expires_at so that a redelivery, on any replica, is a no-op.
CREATE TABLE tokengate_events (
    event_id    text        PRIMARY KEY,
    expires_at  timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tokengate_events_expires_at ON tokengate_events (expires_at);
