-- What dispatchd needs to stay correct when a store fails or a client is hostile.

-- Login throttling in PostgreSQL (the record), so that logging in needs no Redis: failed logins per
-- client address and per account name as typed, each counted in a window from its first failure.
-- The account name is kept only as a keyed hash (a password typed into the name field never lands
-- here in clear); the key is made once per database.

CREATE TABLE login_failures (
    scope     text NOT NULL CHECK (scope IN ('address', 'account')),
    key       text NOT NULL,            -- the client address, or the keyed hash of the name typed
    failures  integer NOT NULL,
    first_at  timestamptz NOT NULL,     -- start of the current window
    last_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX login_failures_last_at ON login_failures (last_at);

CREATE TABLE login_hash_key (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    key  bytea NOT NULL
);

-- Batches of squad fixes written to track_points, by the id the position sink gave each batch: a
-- batch whose write went unanswered (PostgreSQL hung) is retried, and this row, written in the same
-- transaction as its COPY, says whether it had in fact committed. Pruned after a day.
CREATE TABLE gps_batches (
    batch       uuid PRIMARY KEY,
    written_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gps_batches_written_at ON gps_batches (written_at);
