"""The one change recorder: every change of every entity, recorded the same way.

The rule at the heart of dispatchd: a change is one PostgreSQL transaction that writes the entity's
new state, one row of the append-only ``audit_log`` and one ``outbox`` row. The caller writes the
state (its own table, its own columns, the new ``version``); :func:`record` writes the other two, in
the caller's transaction, from one :class:`Change`. Nothing else in dispatchd writes the audit log
or the outbox.

Every outbox row carries one envelope, whatever the entity::

    {"entity": "incident", "id": "42", "version": 7, "action": "dispatch", "org": "330381001",
     "time": "2026-05-03T08:00:00+00:00", "actor": {"id": 3, "name": "…", "role": "duty_officer"},
     "data": {…the entity as clients see it after the change…},
     "detail": {…what the action carried: a reason, a department…}}

The change feed adds ``seq`` and hands the envelope to boards and squads as it is (docs/live.md).

``seq`` must increase in commit order, so that a reader resuming "after seq N" never skips a row
that commits late: writers take one transaction-scoped advisory lock before inserting; it is held
until commit, so rows become visible in the order of their sequence numbers.

Squad positions are too many to audit one by one (their durable record is ``track_points``):
:func:`publish_batch` writes many outbox rows of one entity kind in one statement, with no audit row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

import asyncpg

OUTBOX_LOCK: Final = 0x6F7574626F78  # "outbox": pg_advisory_xact_lock key of outbox writers

_KIND: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# The entity kinds whose version simply counts changes, and the table that holds each one's state
# (:func:`bump`). Any lower-case name may be recorded.
ENTITIES: Final[Mapping[str, str]] = {
    "incident": "incidents",
    "order": "orders",
    "unit": "squad_units",
    "call": "hotline_calls",
    "meeting": "meetings",
    "patrol": "patrols",
    "alert": "live_alerts",
    "callout": "voice_callouts",
}
# Kinds published without an audit row (their record is elsewhere: track_points).
PUBLISHED_ONLY: Final = frozenset({"positions"})


class UserLike(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def username(self) -> str: ...

    @property
    def role(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: a user (id, name, role), or the system or a channel (no id)."""

    id: int | None
    name: str
    role: str | None = None

    @classmethod
    def of(cls, user: UserLike | None, fallback: str = "system") -> Actor:
        """The user, or the system (or a channel named ``fallback``) when there is none."""
        if user is None:
            return cls(None, fallback)
        return cls(user.id, user.username, user.role)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role}


SYSTEM: Final = Actor(None, "system")


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one entity, as the audit log keeps it and the outbox carries it."""

    entity: str
    id: int | str
    version: int
    action: str
    org_path: Sequence[str]  # the owning unit's path, root first: who may see the change
    data: Mapping[str, Any]  # the entity as clients see it after the change
    actor: Actor
    at: datetime
    from_state: str | None = None
    to_state: str | None = None
    note: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    # Further units that must hear of it (the unit a case just left): their paths join the row's.
    also_to: Sequence[Sequence[str]] = ()

    @classmethod
    def of(
        cls,
        entity: str,
        row: Mapping[str, Any],
        action: str,
        data: Mapping[str, Any],
        actor: Actor,
        at: datetime,
        *,
        state: str | None = None,
        from_state: str | None = None,
        note: str | None = None,
        detail: Mapping[str, Any] | None = None,
        also_to: Sequence[Sequence[str]] = (),
    ) -> Change:
        """The change of an entity whose row (``id``, ``version``, ``org_path``) is written; ``state``
        is its state after the change (default: the row's ``state`` or ``status``)."""
        if state is None:
            state = row.get("state") if "state" in row else row.get("status")
        return cls(
            entity=entity,
            id=row["id"],
            version=row["version"],
            action=action,
            org_path=list(row["org_path"]),
            data=data,
            actor=actor,
            at=at,
            from_state=from_state,
            to_state=state,
            note=note,
            detail=detail or {},
            also_to=also_to,
        )

    def envelope(self) -> dict[str, Any]:
        """The one shape every change has on the wire (without ``seq``, which the outbox assigns)."""
        return {
            "entity": self.entity,
            "id": str(self.id),
            "version": self.version,
            "action": self.action,
            "org": self.org_path[-1] if self.org_path else None,
            "time": self.at.isoformat(),
            "actor": self.actor.as_json(),
            "data": dict(self.data),
            "detail": dict(self.detail),
        }


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _require_transaction(conn: asyncpg.Connection) -> None:
    if not conn.is_in_transaction():
        raise RuntimeError("a change must be recorded inside the transaction that makes it")


def _route(change: Change) -> list[str]:
    path = list(change.org_path)
    for extra in change.also_to:
        path.extend(code for code in extra if code not in path)
    return path


async def record(conn: asyncpg.Connection, change: Change, *, publish: bool = True) -> int | None:
    """Append the audit row and (``publish``) the outbox row of ``change``; return the outbox seq.

    ``publish=False`` keeps an action in the audit log only (a chair muting a site is audited, not
    shown on every board).
    """
    _require_transaction(conn)
    if not _KIND.match(change.entity):
        raise ValueError(f"an entity kind is a lower-case name, not {change.entity!r}")
    await conn.execute(
        "INSERT INTO audit_log (entity, entity_id, version, action, actor_id, actor_name, actor_role, at,"
        " from_state, to_state, note, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text::jsonb)",
        change.entity,
        str(change.id),
        change.version,
        change.action,
        change.actor.id,
        change.actor.name,
        change.actor.role,
        change.at,
        change.from_state,
        change.to_state,
        change.note,
        _json(dict(change.detail)),
    )
    if not publish:
        return None
    await conn.execute("SELECT pg_advisory_xact_lock($1)", OUTBOX_LOCK)
    seq: int = await conn.fetchval(
        "INSERT INTO outbox (topic, entity_id, org_path, payload) VALUES ($1, $2, $3, $4::text::jsonb)"
        " RETURNING seq",
        change.entity,
        str(change.id),
        _route(change),
        _json(change.envelope()),
    )
    return seq


async def bump(
    conn: asyncpg.Connection, entity: str, entity_id: int | str, columns: Mapping[str, Any]
) -> asyncpg.Record:
    """Write new column values of an entity and its next version; return the row after it.

    The state half of a change for entities whose version simply counts changes (orders, units,
    calls, meetings, patrols); cases take their version from the state machine and write it
    themselves.
    """
    table = ENTITIES[entity]
    names = list(columns)
    sets = "".join(f"{name} = ${i + 2}, " for i, name in enumerate(names))
    row: asyncpg.Record | None = await conn.fetchrow(
        f"UPDATE {table} SET {sets}version = version + 1 WHERE id = $1 RETURNING *",
        entity_id,
        *[columns[n] for n in names],
    )
    if row is None:
        raise LookupError(f"no {entity} {entity_id}")
    return row


async def publish_batch(
    conn: asyncpg.Connection,
    entity: str,
    action: str,
    at: datetime,
    items: Sequence[tuple[str, Sequence[str], str]],
) -> None:
    """Outbox rows of many changes of one kind in one statement, without audit rows (positions).

    ``items`` are ``(id, org_path, data as JSON text)``; each row carries the same envelope as
    :meth:`Change.envelope` (version 0 and no actor: these kinds are not versioned).
    """
    if entity not in PUBLISHED_ONLY:
        raise ValueError(f"{entity!r} changes are recorded one by one with record()")
    if not items:
        return
    _require_transaction(conn)
    head = '{"entity": ' + _json(entity) + ', "id": '
    time_json = _json(at.isoformat())
    payloads = [
        head
        + _json(entity_id)
        + ', "version": 0, "action": '
        + _json(action)
        + ', "org": '
        + _json(path[-1] if path else None)
        + ', "time": '
        + time_json
        + ', "actor": null, "data": '
        + data
        + ', "detail": {}}'
        for entity_id, path, data in items
    ]
    await conn.execute("SELECT pg_advisory_xact_lock($1)", OUTBOX_LOCK)
    await conn.execute(
        "INSERT INTO outbox (topic, entity_id, org_path, payload)"
        " SELECT $1, e, string_to_array(p, ','), pl::jsonb"
        " FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS t(e, p, pl, n)"
        " ORDER BY n",
        entity,
        [i[0] for i in items],
        [",".join(i[1]) for i in items],
        payloads,
    )


async def prune_outbox(conn: asyncpg.Connection, before: datetime) -> int:
    """Retention of the change feed: delete outbox rows older than ``before`` (a contiguous run from
    the start) and record the highest seq deleted in ``feed_state``; return that mark. The audit log
    is never pruned."""
    async with conn.transaction():
        upto = await conn.fetchval("SELECT max(seq) FROM outbox WHERE created_at < $1", before)
        if upto is not None:
            await conn.execute("DELETE FROM outbox WHERE seq <= $1", upto)
            await conn.execute(
                "INSERT INTO feed_state (singleton, pruned_through) VALUES (true, $1)"
                " ON CONFLICT (singleton) DO UPDATE"
                " SET pruned_through = GREATEST(feed_state.pruned_through, EXCLUDED.pruned_through)",
                upto,
            )
        mark: int = await conn.fetchval("SELECT coalesce((SELECT pruned_through FROM feed_state), 0)")
        return mark


# -- reading the audit log ---------------------------------------------------------------------------

# ``actor_display``: the acting user's display name where one is set (the people read names; the
# audit row keeps the login name it was made under).
AUDIT_COLUMNS: Final = (
    "id, entity, entity_id, version, action, actor_id, actor_name, actor_role, at, from_state, to_state,"
    " note, data,"
    " (SELECT nullif(u.display_name, '') FROM users u WHERE u.id = audit_log.actor_id) AS actor_display"
)


async def trail(conn: asyncpg.Connection, entity: str, entity_id: int | str) -> list[asyncpg.Record]:
    """The audit trail of one entity, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE entity = $1 AND entity_id = $2 ORDER BY id",
        entity,
        str(entity_id),
    )
    return rows


async def trails(
    conn: asyncpg.Connection, entity: str, entity_ids: Sequence[int | str]
) -> list[asyncpg.Record]:
    """The audit trails of several entities of one kind, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE entity = $1 AND entity_id = ANY($2::text[]) ORDER BY id",
        entity,
        [str(i) for i in entity_ids],
    )
    return rows
