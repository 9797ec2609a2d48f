-- Live: the change feed's wake-up and retention mark, orders pushed to squads, their receipts, their
-- audit trail, and the alerts raised to the duty officer (dispatchd/live/).

-- The relay tails the outbox in seq order; a NOTIFY at commit wakes it at once (a poll catches up
-- if a notification is ever lost). One notification per statement is enough: the relay reads
-- every row after the last one it published.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dispatchd_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Retention of the change feed: rows up to ``pruned_through`` have been deleted, so a client that
-- resumes from an older seq gets a fresh snapshot instead. One row (absent = nothing pruned).
CREATE TABLE feed_state (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through  bigint NOT NULL DEFAULT 0
);

-- Orders to squad units (go to case X, with place, priority, instructions). Stored first, then
-- pushed through the change feed to every connection of the unit's members on any instance.
-- ``state``: pending (sent, no receipt yet) → delivered (a member's device acknowledged) →
-- accepted | declined; cancelled, reassigned (to ``replaced_by``), completed (the unit returned).
CREATE TABLE orders (
    id              bigserial PRIMARY KEY,
    incident_id     bigint NOT NULL REFERENCES incidents (id),
    unit_id         bigint NOT NULL REFERENCES squad_units (id),
    org_path        text[] NOT NULL,            -- the squad unit's owning org path: who sees the order
    dispatcher_org  text NOT NULL,              -- home unit of who ordered: where to look for another unit
    instructions    text NOT NULL DEFAULT '',
    priority        text NOT NULL,
    incident        jsonb NOT NULL,             -- the case as the squad needs it: number, category, place
    state           text NOT NULL CHECK (state IN ('pending', 'delivered', 'accepted', 'declined',
                                                   'cancelled', 'reassigned', 'completed')),
    version         integer NOT NULL DEFAULT 1,
    created_by      bigint REFERENCES users (id),  -- NULL: reassigned automatically
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    sends           integer NOT NULL DEFAULT 1, -- how many times it was pushed
    last_sent_at    timestamptz NOT NULL,
    resend_at       timestamptz,                -- push again then if nobody acknowledged; NULL once delivered
    accept_by       timestamptz,                -- alert the officer then if not accepted; NULL once past
    delivered_at    timestamptz,                -- first receipt from any member's device
    accepted_at     timestamptz,
    accepted_by     bigint REFERENCES users (id),
    declined_at     timestamptz,
    decline_reason  text,
    alerted_at      timestamptz,                -- not accepted in time: the officer was alerted
    closed_at       timestamptz,
    replaces        bigint REFERENCES orders (id),
    replaced_by     bigint REFERENCES orders (id)
);
CREATE INDEX orders_resend ON orders (resend_at) WHERE resend_at IS NOT NULL;
CREATE INDEX orders_accept ON orders (accept_by) WHERE accept_by IS NOT NULL;
CREATE INDEX orders_unit_open ON orders (unit_id) WHERE state IN ('pending', 'delivered', 'accepted');
CREATE INDEX orders_incident ON orders (incident_id);
CREATE INDEX orders_org_path ON orders USING gin (org_path);

-- Receipts: which member's device acknowledged which order, when (one per member; the first sets
-- orders.delivered_at). A member with a receipt is not sent the order again.
CREATE TABLE order_deliveries (
    order_id      bigint NOT NULL REFERENCES orders (id),
    user_id       bigint NOT NULL REFERENCES users (id),
    delivered_at  timestamptz NOT NULL,
    instance      text NOT NULL,               -- the dispatchd instance the device was connected to
    PRIMARY KEY (order_id, user_id)
);

-- Append-only audit of every change of an order.
CREATE TABLE order_events (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES orders (id),
    at          timestamptz NOT NULL,
    action      text NOT NULL,       -- created, resent, delivered, accepted, declined, overdue, ...
    actor_id    bigint,              -- NULL: the system (timers)
    actor_name  text NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX order_events_order ON order_events (order_id, id);

CREATE FUNCTION order_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order_events is append-only';
END
$$;
CREATE TRIGGER order_events_no_change BEFORE UPDATE OR DELETE ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_append_only();

-- Alerts for the duty officer (an order not accepted in time, or declined), with the next nearest
-- available unit suggested, until someone resolves them.
CREATE TABLE live_alerts (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('order_not_accepted', 'order_declined')),
    order_id      bigint NOT NULL REFERENCES orders (id),
    incident_id   bigint NOT NULL REFERENCES incidents (id),
    unit_id       bigint NOT NULL REFERENCES squad_units (id),
    org_path      text[] NOT NULL,
    suggestion    jsonb,                        -- {unit_id, name, kind, distance_m, eta_s} or NULL
    reassigned_to bigint REFERENCES orders (id),
    created_at    timestamptz NOT NULL,
    resolved_at   timestamptz,
    resolved_by   bigint REFERENCES users (id),
    resolution    text
);
CREATE INDEX live_alerts_open ON live_alerts (created_at) WHERE resolved_at IS NULL;
CREATE INDEX live_alerts_org_path ON live_alerts USING gin (org_path);
