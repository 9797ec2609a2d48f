-- Emergency plans (应急预案, dispatchd/plans/): the plans and their versions, warnings received (CAP
-- 1.2), activations on a case or an area with what each created (groups, orders, steps), the notices
-- to people with their delivery and acknowledgement, and a contact directory (mobile, deputy).
-- Every change is recorded by store/changes.py (entities plan, plan_activation, plan_notice, warning).

CREATE TABLE plans (
    id               bigserial PRIMARY KEY,
    code             text NOT NULL UNIQUE,
    name             text NOT NULL,
    org_code         text NOT NULL REFERENCES org_units (code),
    org_path         text[] NOT NULL,
    current_version  integer NOT NULL,
    source           text NOT NULL CHECK (source IN ('file', 'api')),  -- where the current version came from
    version          integer NOT NULL DEFAULT 1,                       -- changes of the plan row
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX plans_org_path ON plans USING gin (org_path);

-- Every version a plan had; an activation keeps the version it ran.
CREATE TABLE plan_versions (
    plan_id     bigint NOT NULL REFERENCES plans (id),
    version     integer NOT NULL,
    body        jsonb NOT NULL,                  -- the plan as written (same fields as the TOML)
    source      text NOT NULL CHECK (source IN ('file', 'api')),
    file        text,                            -- the file it was read from
    created_by  bigint REFERENCES users (id),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (plan_id, version)
);

-- Warnings received (CAP 1.2 <alert>, GB/T 35965.1 fields where they differ).
CREATE TABLE warnings (
    id           bigserial PRIMARY KEY,
    identifier   text NOT NULL,
    sender       text NOT NULL,
    sent         timestamptz,
    msg_type     text NOT NULL,                  -- Alert, Update, Cancel
    event        text NOT NULL,
    event_code   text,
    severity     text,
    urgency      text,
    certainty    text,
    headline     text,
    description  text,
    area_desc    text,
    areas        jsonb NOT NULL DEFAULT '[]',    -- [{type: polygon, ring: [[lon, lat]…]} | {type: circle, lat, lon, radius_km}]
    grids        text[] NOT NULL DEFAULT '{}',   -- grids the area covers
    units        text[] NOT NULL DEFAULT '{}',   -- townships holding them
    org_path     text[] NOT NULL,                -- who sees it: the county (or the unit above all covered)
    state        text NOT NULL CHECK (state IN ('active', 'cancelled', 'expired')),
    expires      timestamptz,
    received_at  timestamptz NOT NULL,
    version      integer NOT NULL DEFAULT 1,
    UNIQUE (sender, identifier)
);
CREATE INDEX warnings_active ON warnings (received_at) WHERE state = 'active';
CREATE INDEX warnings_org_path ON warnings USING gin (org_path);

-- One run of a plan: proposed (awaiting the duty officer), active, stood down, or dismissed.
CREATE TABLE plan_activations (
    id            bigserial PRIMARY KEY,
    plan_id       bigint NOT NULL REFERENCES plans (id),
    plan_version  integer NOT NULL,
    incident_id   bigint REFERENCES incidents (id),
    area_code     text NOT NULL REFERENCES org_units (code),   -- the unit it runs for (the case's place, an area)
    warning_id    bigint REFERENCES warnings (id),
    org_path      text[] NOT NULL,
    state         text NOT NULL CHECK (state IN ('proposed', 'active', 'stood_down', 'dismissed')),
    level         text NOT NULL CHECK (level IN ('IV', 'III', 'II', 'I')),
    meeting_id    bigint REFERENCES meetings (id),
    proposed_at   timestamptz,
    activated_at  timestamptz,
    activated_by  bigint REFERENCES users (id),
    ended_at      timestamptz,
    reason        text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    version       integer NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX plan_activations_one_per_case ON plan_activations (plan_id, incident_id)
    WHERE incident_id IS NOT NULL AND state IN ('proposed', 'active');
CREATE UNIQUE INDEX plan_activations_one_per_area ON plan_activations (plan_id, area_code)
    WHERE incident_id IS NULL AND state IN ('proposed', 'active');
CREATE INDEX plan_activations_incident ON plan_activations (incident_id);
CREATE INDEX plan_activations_org_path ON plan_activations USING gin (org_path);
CREATE INDEX plan_activations_open ON plan_activations (created_at) WHERE state IN ('proposed', 'active');
-- A case once proposed a plan (whatever became of it) is not proposed that plan again.

-- A plan's groups as the activation filled them from departments and named people.
CREATE TABLE plan_groups (
    id             bigserial PRIMARY KEY,
    activation_id  bigint NOT NULL REFERENCES plan_activations (id),
    level          text NOT NULL,
    name           text NOT NULL,
    name_en        text NOT NULL,
    members        jsonb NOT NULL,               -- [{label, label_en, user_id, name, unit, vacant}]
    created_at     timestamptz NOT NULL
);
CREATE INDEX plan_groups_activation ON plan_groups (activation_id);

CREATE TABLE plan_orders (
    activation_id  bigint NOT NULL REFERENCES plan_activations (id),
    order_id       bigint PRIMARY KEY REFERENCES orders (id),
    level          text NOT NULL,
    kind           text NOT NULL
);
CREATE INDEX plan_orders_activation ON plan_orders (activation_id);

-- Forces the plan asked for and could not find (no available unit of the kind nearby).
CREATE TABLE plan_shortfalls (
    activation_id  bigint NOT NULL REFERENCES plan_activations (id),
    level          text NOT NULL,
    kind           text NOT NULL,
    missing        integer NOT NULL,
    created_at     timestamptz NOT NULL
);

CREATE TABLE plan_steps (
    id             bigserial PRIMARY KEY,
    activation_id  bigint NOT NULL REFERENCES plan_activations (id),
    level          text NOT NULL,
    n              integer NOT NULL,             -- order in the checklist
    type           text NOT NULL CHECK (type IN ('report', 'initial', 'response', 'end', 'aftermath')),
    title          text NOT NULL,
    title_en       text NOT NULL,
    due_at         timestamptz NOT NULL,
    done_at        timestamptz,
    done_by        bigint REFERENCES users (id),
    cancelled      boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL
);
CREATE INDEX plan_steps_activation ON plan_steps (activation_id, n);

-- A notice to one person (of an activation, or a warning's 叫应), how it was sent and whether it was
-- acknowledged; unacknowledged at escalate_at, it escalates to the person's deputy (a new notice).
CREATE TABLE plan_notices (
    id               bigserial PRIMARY KEY,
    activation_id    bigint REFERENCES plan_activations (id),
    warning_id       bigint REFERENCES warnings (id),
    level            text,
    user_id          bigint REFERENCES users (id),       -- NULL: nobody filled the role
    label            text NOT NULL,                      -- who, as the plan names them
    via              text[] NOT NULL,
    text             text NOT NULL,
    org_path         text[] NOT NULL,                    -- the person's unit: whose consoles hear of it
    state            text NOT NULL CHECK (state IN ('sent', 'delivered', 'acknowledged', 'escalated',
                                                         'cancelled', 'failed')),
    deliveries       jsonb NOT NULL DEFAULT '{}',        -- {console|sms|call: {state, at, detail}}
    deputy           jsonb,                              -- the plan's selector of the deputy
    escalates        bigint REFERENCES plan_notices (id),  -- the notice this one escalates
    escalated_to     bigint REFERENCES plan_notices (id),
    escalate_at      timestamptz,
    acknowledged_at  timestamptz,
    acknowledged_by  bigint REFERENCES users (id),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    version          integer NOT NULL DEFAULT 1,
    CHECK (activation_id IS NOT NULL OR warning_id IS NOT NULL)
);
CREATE INDEX plan_notices_activation ON plan_notices (activation_id);
CREATE INDEX plan_notices_warning ON plan_notices (warning_id);
CREATE INDEX plan_notices_user ON plan_notices (user_id);
CREATE INDEX plan_notices_escalate ON plan_notices (escalate_at) WHERE escalate_at IS NOT NULL;

-- How to reach a person outside the console (mobile for SMS and calls; personal data, never logged)
-- and who stands in when they do not answer.
CREATE TABLE plan_contacts (
    user_id         bigint PRIMARY KEY REFERENCES users (id),
    mobile          text,
    deputy_user_id  bigint REFERENCES users (id),
    updated_at      timestamptz NOT NULL
);
