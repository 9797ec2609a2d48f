-- One append-only audit log for every entity (dispatchd/store/changes.py), in place of the five
-- audit tables of five shapes; one envelope for every outbox row.

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    entity      text NOT NULL,          -- incident, order, unit, call, meeting, patrol, alert, ...
    entity_id   text NOT NULL,
    version     integer,                -- the entity's version after the change (NULL: before 0008)
    action      text NOT NULL,
    actor_id    bigint,                 -- NULL: the system or an anonymous channel
    actor_name  text NOT NULL,
    actor_role  text,
    at          timestamptz NOT NULL,
    from_state  text,
    to_state    text,
    note        text,
    data        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, id);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
-- TRUNCATE is a statement, not a row change: the trigger above does not stop a deliberate wipe.

-- Every row of the five old tables moves over, in the order they were written per table and
-- by time across tables (ids of the old tables are not comparable with each other).
INSERT INTO audit_log (entity, entity_id, version, action, actor_id, actor_name, actor_role, at,
                       from_state, to_state, note, data)
SELECT entity, entity_id, NULL, action, actor_id, actor_name, actor_role, at, from_state, to_state, note, data
FROM (
    SELECT 'incident' AS entity, incident_id::text AS entity_id, action, nullif(actor_id, 0) AS actor_id,
           actor_name, actor_role, at, from_state, to_state, note, data, 1 AS source, id
    FROM incident_events
    UNION ALL
    SELECT 'order', order_id::text, action, actor_id, actor_name, NULL, at, from_state, to_state, NULL, data, 2, id
    FROM order_events
    UNION ALL
    SELECT 'unit', unit_id::text, action, NULL, actor, NULL, at, details->>'from', details->>'to', NULL, details, 3, id
    FROM unit_events
    UNION ALL
    SELECT 'call', call_id::text, event, actor_id, actor_name, NULL, at, from_state, to_state, NULL, data, 4, id
    FROM hotline_call_events
    UNION ALL
    SELECT 'meeting', meeting_id::text, action, NULL, actor, NULL, at, NULL, NULL, NULL, detail, 5, id
    FROM meeting_events
) old
ORDER BY at, source, id;

DROP TABLE incident_events;
DROP FUNCTION incident_events_append_only();
DROP TABLE order_events;
DROP FUNCTION order_events_append_only();
DROP TABLE unit_events;
DROP TABLE hotline_call_events;
DROP TABLE meeting_events;

-- Versions for the entities that had none: every change counts one.
ALTER TABLE meetings ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE patrols ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE live_alerts ADD COLUMN version integer NOT NULL DEFAULT 1;

-- Rows still in the outbox take the one envelope, so that a board resuming across the upgrade
-- reads every change the same way.
UPDATE outbox SET payload = jsonb_build_object(
    'entity', topic,
    'id', entity_id,
    'version', coalesce((coalesce(payload->'incident', payload->'order', payload->'unit', payload->'call',
                                  payload->'alert', payload)->>'version')::integer, 0),
    'action', coalesce(payload->>'event', payload->>'action', payload->>'change',
                       CASE WHEN topic = 'positions' THEN 'moved' ELSE 'changed' END),
    'org', org_path[array_upper(org_path, 1)],
    'time', to_jsonb(created_at),
    'actor', NULL,
    'data', CASE
        WHEN topic = 'meeting' THEN payload - 'change'
        WHEN topic = 'positions' THEN payload
        ELSE coalesce(payload->'incident', payload->'order', payload->'unit', payload->'call',
                      payload->'alert', payload)
    END,
    'detail', CASE WHEN topic = 'unit' THEN payload - 'unit' - 'action' ELSE '{}'::jsonb END
);
