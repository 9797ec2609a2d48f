-- A plan's notice may reach its person by a phone call through the hotline's trunk: the call says
-- the notice and takes key 1 as the acknowledgement (叫应). Such calls out are of kind 'notice'.

ALTER TABLE voice_callouts DROP CONSTRAINT voice_callouts_kind_check;
ALTER TABLE voice_callouts ADD CONSTRAINT voice_callouts_kind_check
    CHECK (kind IN ('callback', 'department', 'escalation', 'notice'));
