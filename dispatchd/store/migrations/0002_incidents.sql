-- Cases (事件) and their closed loop: the case itself, its append-only audit trail, its deadline
-- timers (限期反馈) and the per-day counter behind human-readable case numbers.
-- Every change writes the case, an audit row and an outbox row in one transaction
-- (dispatchd/incidents/service.py).

-- Case numbers: county prefix + date (China Standard Time) + sequence of the day, e.g. RA20260503-0007.
CREATE TABLE incident_number_days (
    day   date PRIMARY KEY,
    last  integer NOT NULL
);

CREATE TABLE incidents (
    id               bigserial PRIMARY KEY,
    number           text NOT NULL UNIQUE,
    state            text NOT NULL CHECK (state IN ('reported', 'accepted', 'rejected', 'merged', 'dispatched',
                                                    'in_progress', 'fed_back', 'verified', 'closed', 'evaluated')),
    version          integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    category         text NOT NULL,
    priority         text NOT NULL CHECK (priority IN ('P1', 'P2', 'P3', 'P4')),
    description      text NOT NULL,
    channel          text NOT NULL,             -- the channel that first reported it
    channels         text[] NOT NULL,           -- every channel that reported it (merged cases add theirs)
    lat              double precision,          -- WGS-84
    lon              double precision,
    address          text,
    grid             text REFERENCES org_units (code),
    community        text,
    township         text,
    county           text,
    place_path       text[] NOT NULL DEFAULT '{}',  -- path of the grid (root first); empty without a grid
    reporter_id      bigint REFERENCES users (id),
    caller           text,                      -- calling number (hotline), for repeat-caller duplicates
    attachments      text[] NOT NULL DEFAULT '{}',
    owner_unit       text NOT NULL REFERENCES org_units (code),
    org_path         text[] NOT NULL,           -- path of the owning unit, root first: jurisdiction
    lead_department  text,
    co_departments   text[] NOT NULL DEFAULT '{}',
    squad_unit       bigint,
    feedback_from    text[] NOT NULL DEFAULT '{}',
    merged_into      bigint REFERENCES incidents (id),
    satisfaction     smallint CHECK (satisfaction BETWEEN 1 AND 5),
    escalations      integer NOT NULL DEFAULT 0,
    -- the running step clock: which step, when it is due, whether warned / overdue
    deadline_step    text,
    deadline_at      timestamptz,
    warned           boolean NOT NULL DEFAULT false,
    overdue          boolean NOT NULL DEFAULT false,
    ever_overdue     boolean NOT NULL DEFAULT false,
    observed_at      timestamptz,               -- when the reporter saw it
    created_at       timestamptz NOT NULL,      -- when dispatchd received it
    updated_at       timestamptz NOT NULL,
    accepted_at      timestamptz,
    dispatched_at    timestamptz,               -- first dispatch
    closed_at        timestamptz,
    closed_unit      text,                      -- owning unit when closed
    closed_level     text,                      -- its level: share closed at township level or below
    evaluated_at     timestamptz,
    extra            jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX incidents_org_path ON incidents USING gin (org_path);
CREATE INDEX incidents_place_path ON incidents USING gin (place_path);
CREATE INDEX incidents_created ON incidents (created_at);
CREATE INDEX incidents_category_created ON incidents (category, created_at);
CREATE INDEX incidents_caller_created ON incidents (caller, created_at) WHERE caller IS NOT NULL;
CREATE INDEX incidents_open_state ON incidents (state) WHERE state NOT IN ('rejected', 'merged', 'evaluated');
CREATE INDEX incidents_merged_into ON incidents (merged_into) WHERE merged_into IS NOT NULL;

-- The audit trail: one row per action on a case, never updated or deleted.
CREATE TABLE incident_events (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id),
    action       text NOT NULL,     -- report, accept, ..., assign, merged_in, deadline_warning, deadline_overdue
    actor_id     bigint,            -- 0: the system (deadline timers); NULL: an anonymous channel
    actor_name   text NOT NULL,
    actor_role   text,
    at           timestamptz NOT NULL,
    from_state   text,
    to_state     text NOT NULL,
    note         text,
    data         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, id);

CREATE FUNCTION incident_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'incident_events is append-only';
END
$$;
CREATE TRIGGER incident_events_no_change BEFORE UPDATE OR DELETE ON incident_events
    FOR EACH ROW EXECUTE FUNCTION incident_events_append_only();

-- Deadline timers: warning (临期), overdue (超期), escalate (超期上报) per running step.  Pending
-- timers are deleted when their step's clock stops; fired ones keep fired_at.  Any instance fires
-- due timers (FOR UPDATE SKIP LOCKED), so several instances never fire one twice.
CREATE TABLE incident_timers (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id),
    step         text NOT NULL CHECK (step IN ('accept', 'dispatch', 'start', 'feedback', 'verify', 'close')),
    kind         text NOT NULL CHECK (kind IN ('warning', 'overdue', 'escalate')),
    fire_at      timestamptz NOT NULL,
    fired_at     timestamptz
);
CREATE INDEX incident_timers_due ON incident_timers (fire_at) WHERE fired_at IS NULL;
CREATE INDEX incident_timers_incident ON incident_timers (incident_id) WHERE fired_at IS NULL;
