"""Meetings in PostgreSQL: state, invites (join tokens stored hashed), recordings.

Every change of a meeting is recorded (entity ``meeting``: the audit row and, where the boards
should hear of it, the outbox row; :mod:`dispatchd.store.changes`) in the transaction that makes it.
The status moves as :mod:`dispatchd.domain.meetings` says.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from dispatchd.domain import meetings as lifecycle
from dispatchd.store.changes import Actor, Change, record, trail

TOPIC = "meeting"


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class Meeting:
    id: int
    title: str
    org_code: str
    org_path: list[str]
    status: str
    codec: str
    incident_id: str | None
    scheduled_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    created_at: datetime
    version: int = 1
    created_by: int | None = None

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> Meeting:
        return cls(
            r["id"],
            r["title"],
            r["org_code"],
            list(r["org_path"]),
            r["status"],
            r["codec"],
            r["incident_id"],
            r["scheduled_at"],
            r["started_at"],
            r["ended_at"],
            r["created_at"],
            r["version"],
            r["created_by"],
        )

    def as_json(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "id": self.id,
            "title": self.title,
            "org": self.org_code,
            "status": self.status,
            "codec": self.codec,
            "incident_id": self.incident_id,
            "scheduled_at": iso(self.scheduled_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "created_at": iso(self.created_at),
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Invite:
    id: int
    meeting_id: int
    unit_code: str | None
    label: str
    role: str
    kind: str
    source_url: str | None

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> Invite:
        return cls(
            r["id"], r["meeting_id"], r["unit_code"], r["label"], r["role"], r["kind"], r["source_url"]
        )

    @property
    def participant_id(self) -> str:
        return f"p{self.id}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.participant_id,
            "unit": self.unit_code,
            "label": self.label,
            "role": self.role,
            "kind": self.kind,
        }


@dataclass(frozen=True, slots=True)
class NewInvite:
    unit_code: str | None
    label: str
    role: str
    kind: str
    source_url: str | None = None
    user_id: int | None = None


_MEETING_COLS = (
    "id, title, org_code, org_path, status, codec, incident_id, scheduled_at, started_at, ended_at,"
    " created_at, version, created_by"
)
_INVITE_COLS = "id, meeting_id, unit_code, label, role, kind, source_url"


async def _record(
    conn: asyncpg.Connection,
    meeting: Meeting,
    actor: Actor,
    action: str,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
    *,
    from_status: str | None = None,
    publish: bool = True,
) -> None:
    """Record a change of ``meeting`` (as it is after the change). Its invited units hear of it too:
    the change is routed to their paths, and the meeting's data names them (``invited``)."""
    invited = await conn.fetch(
        "SELECT DISTINCT i.unit_code, o.path FROM meeting_invites i JOIN org_units o ON o.code = i.unit_code"
        " WHERE i.meeting_id = $1 AND i.kind = 'unit' AND NOT i.revoked ORDER BY i.unit_code",
        meeting.id,
    )
    plain = json.loads(json.dumps(dict(detail or {}), ensure_ascii=False, default=str))  # JSON values only
    row = {"id": meeting.id, "version": meeting.version, "org_path": meeting.org_path, "status": meeting.status}
    data = {**meeting.as_json(), "invited": [r["unit_code"] for r in invited]}
    change = Change.of(
        TOPIC,
        row,
        action,
        data,
        actor,
        now,
        from_state=from_status,
        detail=plain,
        also_to=[list(r["path"]) for r in invited],
    )
    await record(conn, change, publish=publish)


async def _bumped(conn: asyncpg.Connection, meeting_id: int) -> Meeting:
    """The meeting's next version (a change that touches only its invites or recordings)."""
    row = await conn.fetchrow(
        f"UPDATE meetings SET version = version + 1 WHERE id = $1 RETURNING {_MEETING_COLS}", meeting_id
    )
    return Meeting.from_row(row)


async def create_meeting(
    conn: asyncpg.Connection,
    *,
    title: str,
    org_code: str,
    org_path: list[str],
    created_by: int | None,
    actor: Actor,
    codec: str,
    incident_id: str | None,
    scheduled_at: datetime | None,
    now: datetime,
    invites: list[NewInvite],
) -> tuple[Meeting, list[tuple[Invite, str | None]]]:
    """Create the meeting and its invites; returns each invite with its link token (shown once)."""
    status = lifecycle.initial_status(scheduled_at, now)
    async with conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO meetings (title, org_code, org_path, created_by, status, scheduled_at, started_at,"
            " incident_id, codec, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            f" RETURNING {_MEETING_COLS}",
            title,
            org_code,
            org_path,
            created_by,
            status,
            scheduled_at,
            now if status == "running" else None,
            incident_id,
            codec,
            now,
        )
        meeting = Meeting.from_row(row)
        created = [await _insert_invite(conn, meeting.id, inv, now) for inv in invites]
        await _record(conn, meeting, actor, "created", now, {"invites": len(invites)})
    return meeting, created


async def _insert_invite(
    conn: asyncpg.Connection, meeting_id: int, inv: NewInvite, now: datetime
) -> tuple[Invite, str | None]:
    token = None if inv.kind == "rtsp" else new_token()
    row = await conn.fetchrow(
        "INSERT INTO meeting_invites (meeting_id, unit_code, label, role, kind, token_hash, source_url,"
        f" user_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_INVITE_COLS}",
        meeting_id,
        inv.unit_code,
        inv.label,
        inv.role,
        inv.kind,
        hash_token(token) if token else None,
        inv.source_url,
        inv.user_id,
        now,
    )
    return Invite.from_row(row), token


async def add_invite(
    conn: asyncpg.Connection, meeting: Meeting, inv: NewInvite, actor: Actor, now: datetime
) -> tuple[Invite, str | None]:
    async with conn.transaction():
        created = await _insert_invite(conn, meeting.id, inv, now)
        meeting = await _bumped(conn, meeting.id)
        await _record(conn, meeting, actor, "invited", now, {"invite": created[0].as_json()})
    return created


async def personal_invite(
    conn: asyncpg.Connection, meeting: Meeting, user_id: int, unit_code: str, label: str, role: str, now: datetime
) -> tuple[Invite, str]:
    """A user's own join link for a unit invited to ``meeting`` (their earlier one is revoked)."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE meeting_invites SET revoked = true WHERE meeting_id = $1 AND user_id = $2 AND kind = 'unit'"
            " AND NOT revoked",
            meeting.id,
            user_id,
        )
        invite, token = await _insert_invite(
            conn, meeting.id, NewInvite(unit_code, label, role, "unit", user_id=user_id), now
        )
    assert token is not None
    return invite, token


async def invited_units(conn: asyncpg.Connection, meeting_id: int) -> list[Invite]:
    """The units invited to a meeting (the chair's and the sites'), one invite each."""
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (unit_code) {_INVITE_COLS} FROM meeting_invites WHERE meeting_id = $1"
        " AND kind IN ('unit', 'chair') AND unit_code IS NOT NULL AND NOT revoked AND (kind = 'chair' OR user_id IS NULL)"
        " ORDER BY unit_code, id",
        meeting_id,
    )
    return [Invite.from_row(r) for r in rows]


async def get_meeting(conn: asyncpg.Connection, meeting_id: int) -> Meeting | None:
    row = await conn.fetchrow(f"SELECT {_MEETING_COLS} FROM meetings WHERE id = $1", meeting_id)
    return Meeting.from_row(row) if row else None


async def list_meetings(
    conn: asyncpg.Connection,
    codes: frozenset[str],
    *,
    status: str | None = None,
    incident_id: str | None = None,
    limit: int = 100,
) -> list[Meeting]:
    """Meetings convened inside ``codes`` or inviting a unit inside them, newest first."""
    rows = await conn.fetch(
        f"SELECT {_MEETING_COLS} FROM meetings m WHERE (m.org_code = ANY($1::text[]) OR EXISTS ("
        " SELECT 1 FROM meeting_invites i WHERE i.meeting_id = m.id AND i.unit_code = ANY($1::text[])))"
        " AND ($2::text IS NULL OR m.status = $2) AND ($3::text IS NULL OR m.incident_id = $3)"
        " ORDER BY m.id DESC LIMIT $4",
        list(codes),
        status,
        incident_id,
        limit,
    )
    return [Meeting.from_row(r) for r in rows]


async def invites_of(conn: asyncpg.Connection, meeting_id: int) -> list[Invite]:
    rows = await conn.fetch(
        f"SELECT {_INVITE_COLS} FROM meeting_invites WHERE meeting_id = $1 AND NOT revoked ORDER BY id",
        meeting_id,
    )
    return [Invite.from_row(r) for r in rows]


async def invite_for_token(conn: asyncpg.Connection, meeting_id: int, token: str) -> Invite | None:
    if not token or len(token) > 200:
        return None
    row = await conn.fetchrow(
        f"SELECT {_INVITE_COLS} FROM meeting_invites WHERE token_hash = $1 AND meeting_id = $2 AND NOT revoked",
        hash_token(token),
        meeting_id,
    )
    return Invite.from_row(row) if row else None


async def set_status(
    conn: asyncpg.Connection, meeting_id: int, status: str, actor: Actor, now: datetime
) -> Meeting | None:
    """Start (``running``) or end (``ended``) a meeting; None when it already was (or does not
    exist). :class:`~dispatchd.domain.meetings.MeetingEnded` when an ended meeting is started."""
    async with conn.transaction():
        row = await conn.fetchrow(f"SELECT {_MEETING_COLS} FROM meetings WHERE id = $1 FOR UPDATE", meeting_id)
        if row is None:
            return None
        before = row["status"]
        after = lifecycle.start(before) if status == lifecycle.RUNNING else lifecycle.end(before)
        if after is None:
            return None
        row = await conn.fetchrow(
            "UPDATE meetings SET status = $2, version = version + 1,"
            " started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, $3) ELSE started_at END,"
            " ended_at = CASE WHEN $2 = 'ended' THEN $3 ELSE ended_at END"
            f" WHERE id = $1 RETURNING {_MEETING_COLS}",
            meeting_id,
            after,
            now,
        )
        meeting = Meeting.from_row(row)
        await _record(
            conn, meeting, actor, "started" if after == lifecycle.RUNNING else "ended", now, from_status=before
        )
    return meeting


async def record_event(
    conn: asyncpg.Connection,
    meeting: Meeting,
    actor: Actor,
    action: str,
    detail: dict[str, Any],
    now: datetime,
    *,
    publish: bool = False,
) -> None:
    """Audit a chair's action (roll call, mute, recording); ``publish`` also tells the boards."""
    async with conn.transaction():
        meeting = await _bumped(conn, meeting.id)
        await _record(conn, meeting, actor, action, now, detail, publish=publish)


async def events_of(conn: asyncpg.Connection, meeting_id: int) -> list[dict[str, Any]]:
    """The meeting's trail in the audit log, oldest first."""
    return [
        {"at": r["at"].isoformat(), "actor": r["actor_name"], "action": r["action"], "detail": r["data"]}
        for r in await trail(conn, TOPIC, meeting_id)
    ]


async def start_recording(
    conn: asyncpg.Connection, meeting: Meeting, path: str, actor: Actor, now: datetime
) -> int:
    async with conn.transaction():
        rec_id: int = await conn.fetchval(
            "INSERT INTO meeting_recordings (meeting_id, incident_id, path, started_at)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            meeting.id,
            meeting.incident_id,
            path,
            now,
        )
        meeting = await _bumped(conn, meeting.id)
        await _record(conn, meeting, actor, "recording_started", now, {"recording": rec_id, "path": path})
    return rec_id


async def stop_recording(
    conn: asyncpg.Connection, meeting: Meeting, rec_id: int, size: int, actor: Actor, now: datetime
) -> None:
    async with conn.transaction():
        await conn.execute(
            "UPDATE meeting_recordings SET stopped_at = $2, bytes = $3 WHERE id = $1", rec_id, now, size
        )
        meeting = await _bumped(conn, meeting.id)
        await _record(conn, meeting, actor, "recording_stopped", now, {"recording": rec_id, "bytes": size})


async def recordings_of(conn: asyncpg.Connection, meeting_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, path, started_at, stopped_at, bytes, incident_id FROM meeting_recordings"
        " WHERE meeting_id = $1 ORDER BY id",
        meeting_id,
    )
    return [
        {
            "id": r["id"],
            "path": r["path"],
            "incident_id": r["incident_id"],
            "started_at": r["started_at"].isoformat(),
            "stopped_at": r["stopped_at"].isoformat() if r["stopped_at"] else None,
            "bytes": r["bytes"],
        }
        for r in rows
    ]


async def running_meetings(conn: asyncpg.Connection, codes: frozenset[str]) -> list[Meeting]:
    return await list_meetings(conn, codes, status="running", limit=50)
