-- audit_log partitioned by month of the change's time, as track_points is (0016,
-- dispatchd/store/partitions.py): a month is one table to vacuum, index, move to cheaper storage or
-- archive; the log is append-only and kept (no month is dropped by the daemon).
--
-- The rows written so far stay where they are: the old table becomes the partition of everything
-- before the first of the month after its newest row (and after now), checked by a constraint,
-- not copied. A partitioned table's key holds its partition column: (id, at); ids still come
-- from the one sequence, so they stay unique and in the order of writing.

ALTER TABLE audit_log RENAME TO audit_log_before;
ALTER INDEX audit_log_entity RENAME TO audit_log_before_entity;
ALTER INDEX audit_log_at RENAME TO audit_log_before_at;
-- Its key on id alone gives way to the partitioned table's (id, at) below.
ALTER TABLE audit_log_before DROP CONSTRAINT audit_log_pkey;
DROP TRIGGER audit_log_no_change ON audit_log_before;

CREATE TABLE audit_log (
    id          bigint NOT NULL DEFAULT nextval('audit_log_id_seq'),
    entity      text NOT NULL,
    entity_id   text NOT NULL,
    version     integer,
    action      text NOT NULL,
    actor_id    bigint,
    actor_name  text NOT NULL,
    actor_role  text,
    at          timestamptz NOT NULL,
    from_state  text,
    to_state    text,
    note        text,
    data        jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, id);
CREATE INDEX audit_log_at ON audit_log (at);
-- The old rows under the new key: a unique index the attach takes for the partition's key.
CREATE UNIQUE INDEX audit_log_before_id_at ON audit_log_before (id, at);

SELECT dispatchd_partition_by_month('audit_log');

-- Append-only, now on the partitioned table (and so on every month).
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
