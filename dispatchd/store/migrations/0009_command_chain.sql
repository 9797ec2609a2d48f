-- The command chain: a case's controls as a 12345 hotline runs them (签收, 退单, 延期, 催办, 督办,
-- 回访) and an order's progress on site (dispatchd/domain/incident.py, dispatchd/live/orders.py).

ALTER TABLE incidents
    ADD COLUMN signed               text[] NOT NULL DEFAULT '{}',   -- departments that signed this round
    ADD COLUMN returns              integer NOT NULL DEFAULT 0,     -- 退单: times returned
    ADD COLUMN extension_hours      integer,                        -- 延期: a pending request …
    ADD COLUMN extension_department text,                           -- … and who asked
    ADD COLUMN extensions           integer NOT NULL DEFAULT 0,     -- extensions granted
    ADD COLUMN urged                integer NOT NULL DEFAULT 0,     -- 催办: times urged
    ADD COLUMN supervised           boolean NOT NULL DEFAULT false, -- 督办
    ADD COLUMN callbacks            integer NOT NULL DEFAULT 0,     -- 回访: attempts
    ADD COLUMN callback_at          timestamptz,                    -- the last attempt
    ADD COLUMN callback_reached     boolean;                        -- whether it reached the reporter

-- Closed cases waiting for their callback, per jurisdiction.
CREATE INDEX incidents_callback_due ON incidents (closed_at) WHERE state = 'closed';

-- An accepted order's progress on site, as the squad reports it, and what it did.
ALTER TABLE orders
    ADD COLUMN unit_name      text,                                      -- the squad unit, by name
    ADD COLUMN progress       text CHECK (progress IN ('en_route', 'on_scene', 'handled')),
    ADD COLUMN handled_at     timestamptz,
    ADD COLUMN handled_note   text,
    ADD COLUMN handled_photos text[] NOT NULL DEFAULT '{}';

UPDATE orders o SET unit_name = u.name FROM squad_units u WHERE u.id = o.unit_id;

-- Photos of a squad's or a department's feedback are linked to the case like the others.
ALTER TABLE photo_links DROP CONSTRAINT photo_links_purpose_check;
ALTER TABLE photo_links ADD CONSTRAINT photo_links_purpose_check
    CHECK (purpose IN ('report', 'verify', 'reopen', 'feedback'));

-- A personal join link of a meeting for a user of an invited unit (POST /api/v1/meetings/{id}/join).
CREATE INDEX meeting_invites_user ON meeting_invites (meeting_id, user_id) WHERE user_id IS NOT NULL;
