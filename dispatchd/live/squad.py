"""The squad websocket ``/ws/squad?token=…`` and the hub that pushes orders to devices.

A connection serves the units its user belongs to (``unit_members``). Orders reach it through the
change feed: the order's outbox row (topic ``order``) arrives on every instance, and the hub here
sends ``{"type": "order", "order": {...}}`` to the local connections of the unit's members
(``created``: once per connection; ``resent``: again, the device dedupes by id), and
``{"type": "order_update", ...}`` for the later changes. On connect, every open order of the user's
units that this user's devices have not acknowledged is sent again.

The device answers ``ack`` (receipt), then ``accept`` or ``decline``; reports its unit's status
(``en_route``, ``on_scene``, ``returning``, ``available``, ``off_duty``) and, from the browser's
geolocation, its position. Each answer gets ``ok`` or ``error`` naming what it answers.

Each connection has its own bounded outgoing queue and writer, so one stalled phone delays nobody.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from dispatchd.context import Context
from dispatchd.domain.units import Position
from dispatchd.errors import DomainError
from dispatchd.live import orders
from dispatchd.live.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_NO_UNIT,
    CLOSE_RESUME,
    DEVICE_STATUSES,
    BadMessage,
    ChangeRow,
    Socket,
    SquadCommand,
    dumps,
    order_message,
    order_update_message,
    parse_squad_message,
)
from dispatchd.store.users import User
from dispatchd.units.service import set_unit_status
from dispatchd.units.slots import POSITIONS

log = structlog.get_logger("dispatchd.live.squad")

QUEUE_LIMIT = 1000  # messages waiting for one device before it is told to reconnect
_conn_ids = itertools.count(1)


class SquadConn:
    """One device connection: its user, the units it serves, the orders sent on it, its writer."""

    def __init__(
        self, ws: Socket, user: User, units: Mapping[int, Mapping[str, Any]], lang: str
    ) -> None:
        self.ws = ws
        self.user = user
        self.units: dict[int, dict[str, Any]] = {k: dict(v) for k, v in units.items()}
        self.lang = lang
        self.conn_id = f"s{next(_conn_ids)}"
        self.sent: set[int] = set()  # order ids pushed on this connection
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_LIMIT)
        self.writer_task: asyncio.Task[None] | None = None
        self.closed = False
        self.closer: asyncio.Task[bool] | None = None

    def send(self, message: Mapping[str, Any]) -> bool:
        """Queue a message; False when the connection is gone or hopelessly behind."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(dumps(message))
        except asyncio.QueueFull:
            self.closed = True
            self.closer = asyncio.ensure_future(self.ws.close(code=CLOSE_RESUME, message=b"too slow: reconnect"))
            return False
        return True

    def push_order(self, order: Mapping[str, Any], *, again: bool) -> None:
        """Send the order unless this connection already had it (``again``: a resend, send anyway)."""
        if order["id"] in self.sent and not again:
            return
        self.sent.add(order["id"])
        self.send(order_message(order))

    async def writer(self) -> None:
        while True:
            text = await self.queue.get()
            if text is None or self.ws.closed:
                return
            await self.ws.send_str(text)

    def hello(self, at: datetime) -> dict[str, Any]:
        """The greeting: who is connected, their units, and the server's time (``at``: a phone's
        clock may be off; the device dates its fixes by the server's)."""
        return {
            "type": "hello",
            "at": at.isoformat(),
            "user": {"id": self.user.id, "username": self.user.username, "display_name": self.user.display_name},
            "units": list(self.units.values()),
            "conn_id": self.conn_id,
        }


# How a refusal reads on the device: {"status", "code", "message", ...} in the connection's language.
ErrorDescriber = Callable[[DomainError, str], dict[str, Any]]


class SquadHub:
    def __init__(self, ctx: Context, describe_error: ErrorDescriber) -> None:
        self.ctx = ctx
        self.describe_error = describe_error
        self.metrics = ctx.metrics
        self.conns: set[SquadConn] = set()
        self._by_unit: dict[int, set[SquadConn]] = {}  # unit id -> connections serving it
        self._by_user: dict[int, set[SquadConn]] = {}
        self._rows: asyncio.Queue[Sequence[ChangeRow]] = asyncio.Queue()

    # -- the feed --------------------------------------------------------------------------------

    def on_rows(self, rows: Sequence[ChangeRow]) -> None:
        mine = [r for r in rows if r.topic in ("order", "unit", "plan_notice")]
        if mine:
            self._rows.put_nowait(mine)

    async def run(self) -> None:
        while True:
            rows = await self._rows.get()
            for row in rows:
                try:
                    await self.route(row)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("squad_route_failed", seq=row.seq, topic=row.topic)

    def _serving(self, unit_id: int) -> list[SquadConn]:
        return list(self._by_unit.get(unit_id, ()))

    def _index(self, c: SquadConn, unit_id: int, add: bool) -> None:
        if add:
            self._by_unit.setdefault(unit_id, set()).add(c)
            return
        conns = self._by_unit.get(unit_id)
        if conns is not None:
            conns.discard(c)
            if not conns:
                del self._by_unit[unit_id]

    def _add(self, c: SquadConn) -> None:
        self.conns.add(c)
        self._by_user.setdefault(c.user.id, set()).add(c)
        for unit_id in c.units:
            self._index(c, unit_id, True)

    def _remove(self, c: SquadConn) -> None:
        self.conns.discard(c)
        mine = self._by_user.get(c.user.id)
        if mine is not None:
            mine.discard(c)
            if not mine:
                del self._by_user[c.user.id]
        for unit_id in list(c.units):
            self._index(c, unit_id, False)

    async def route(self, row: ChangeRow) -> None:
        if row.topic == "order":
            order = row.entity
            event = row.action
            unit_id = order.get("unit_id")
            if not isinstance(unit_id, int):
                return
            for c in self._serving(unit_id):
                if event in ("created", "resent"):
                    c.push_order(order, again=event == "resent")
                else:
                    c.send(order_update_message(order))
        elif row.topic == "unit":
            await self._unit_changed(row)
        elif row.topic == "plan_notice":
            # A notice to a person (docs/plans.md) reaches their phones too, wherever they connect.
            user_id = row.entity.get("user_id")
            for c in list(self._by_user.get(user_id, ()) if isinstance(user_id, int) else ()):
                c.send({"type": "notice", "notice": row.entity})

    async def _unit_changed(self, row: ChangeRow) -> None:
        unit = row.entity
        unit_id = unit.get("id")
        if not isinstance(unit_id, int):
            return
        action = row.action
        if action in ("member_added", "member_removed"):
            user_id = row.detail.get("user_id")
            for c in list(self._by_user.get(user_id, ()) if isinstance(user_id, int) else ()):
                if action == "member_added":
                    c.units[unit_id] = _unit_brief(unit)
                    self._index(c, unit_id, True)
                else:
                    c.units.pop(unit_id, None)
                    self._index(c, unit_id, False)
                c.send(c.hello(self.ctx.clock.now()))
                if action == "member_added":
                    await self._send_unreceived(c)
                elif not c.units:
                    await c.ws.close(code=CLOSE_NO_UNIT, message=b"no longer a member of any squad unit")
            return
        for c in self._serving(unit_id):
            c.units[unit_id] = _unit_brief(unit)
            if action == "status":
                c.send({"type": "unit_status", "unit_id": unit_id, "status": unit.get("status")})

    async def _send_unreceived(self, c: SquadConn) -> None:
        async with self.ctx.pool.acquire() as conn:
            rows = await orders.unreceived_orders(conn, c.user.id)
        for row in rows:
            c.push_order(orders.order_json(row), again=False)

    # -- connections -----------------------------------------------------------------------------

    async def open(self, ws: Socket, user: User, lang: str) -> SquadConn | None:
        """A device connects: hello and the unreceived orders of its units, or None (and a close
        with 4403) when the user belongs to no unit. The caller feeds its messages to
        :meth:`handle` and calls :meth:`close` when it goes."""
        async with self.ctx.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT s.id, s.name, s.kind, s.org_code, s.status FROM unit_members m"
                " JOIN squad_units s ON s.id = m.unit_id WHERE m.user_id = $1 ORDER BY s.id",
                user.id,
            )
        if not rows:
            await ws.send_str(dumps({"type": "error", "code": "no_unit", "message": _msg(lang, "no_unit")}))
            await ws.close(code=CLOSE_NO_UNIT, message=b"not a member of any squad unit")
            return None
        c = SquadConn(ws, user, {r["id"]: _unit_brief(r) for r in rows}, lang)
        structlog.contextvars.bind_contextvars(conn_id=c.conn_id)
        self._add(c)  # first: pushes from the feed reach it from now on
        self.metrics.connections.labels("squad").inc()
        c.writer_task = asyncio.create_task(c.writer(), name=f"squad-writer-{c.conn_id}")
        c.send(c.hello(self.ctx.clock.now()))
        await self._send_unreceived(c)
        log.info("squad_connected", user=user.username, units=list(c.units), resent=len(c.sent))
        return c

    async def close(self, c: SquadConn) -> None:
        c.closed = True
        self._remove(c)
        self.metrics.connections.labels("squad").dec()
        if c.writer_task is not None:
            c.writer_task.cancel()
            await asyncio.gather(c.writer_task, return_exceptions=True)
        log.info("squad_disconnected", user=c.user.username, close_code=c.ws.close_code)

    async def close_all(self) -> None:
        """The instance stops: every device is told to reconnect (1001), for at most two seconds."""
        conns = list(self.conns)
        await asyncio.gather(
            *(asyncio.wait_for(c.ws.close(code=CLOSE_GOING_AWAY, message=b"server stopping"), 2) for c in conns),
            return_exceptions=True,
        )

    # -- what the device says --------------------------------------------------------------------

    async def handle(self, c: SquadConn, text: str) -> None:
        try:
            cmd = parse_squad_message(text)
        except BadMessage as exc:
            self.metrics.live_squad_messages.labels("invalid").inc()
            c.send({"type": "error", "code": exc.code, "message": str(exc)})
            return
        self.metrics.live_squad_messages.labels(cmd.type).inc()
        reply: dict[str, Any] = {"type": "ok", "for": cmd.type}
        try:
            if cmd.type == "ping":
                c.send({"type": "pong"})
                return
            if cmd.type in ("ack", "accept", "decline"):
                order_id = cmd.int_field("order_id")
                reply["order_id"] = order_id
                if cmd.type == "ack":
                    order = await orders.acknowledge(self.ctx, order_id, c.user)
                elif cmd.type == "accept":
                    order = await orders.accept(self.ctx, order_id, c.user)
                else:
                    reason = cmd.fields.get("reason")
                    order = await orders.decline(
                        self.ctx, order_id, c.user, str(reason)[:2000] if reason is not None else None
                    )
                c.sent.add(order_id)
                reply["state"] = order["state"]
                reply["order"] = order
            elif cmd.type == "status":
                reply.update(await self._status(c, cmd))
            elif cmd.type == "position":
                reply.update(self._position(c, cmd))
            c.send(reply)
        except BadMessage as exc:
            c.send({"type": "error", "for": cmd.type, "code": exc.code, "message": str(exc), **_ref(reply)})
        except DomainError as exc:
            body = self.describe_error(exc, c.lang)
            c.send({"type": "error", "for": cmd.type, **body, **_ref(reply)})

    def _unit_of(self, c: SquadConn, cmd: SquadCommand) -> int:
        if cmd.fields.get("unit_id") is not None:
            unit_id = cmd.int_field("unit_id")
            if unit_id not in c.units:
                raise BadMessage("not_member", "not a member of that unit")
            return unit_id
        if len(c.units) != 1:
            raise BadMessage("missing", "unit_id is needed: the member is in several units")
        only: int = next(iter(c.units))
        return only

    async def _status(self, c: SquadConn, cmd: SquadCommand) -> dict[str, Any]:
        status = cmd.fields.get("status")
        if status not in DEVICE_STATUSES:
            raise BadMessage("invalid", "status must be one of " + ", ".join(DEVICE_STATUSES))
        unit_id = self._unit_of(c, cmd)
        unit = await set_unit_status(self.ctx, unit_id, str(status), c.user)
        return {"unit_id": unit_id, "status": unit["status"]}

    def _position(self, c: SquadConn, cmd: SquadCommand) -> dict[str, Any]:
        lat = cmd.float_field("lat", -90, 90)
        lon = cmd.float_field("lon", -180, 180)
        assert lat is not None and lon is not None
        at = self.ctx.clock.now()
        raw_at = cmd.fields.get("at")
        if isinstance(raw_at, int | float) and not isinstance(raw_at, bool):
            # Browser geolocation timestamps are milliseconds since the epoch.
            try:
                at = datetime.fromtimestamp(float(raw_at) / (1000 if raw_at > 1e11 else 1), UTC)
            except (ValueError, OverflowError, OSError):
                raise BadMessage("invalid", "at must be a time in milliseconds since 1970") from None
        speed = cmd.float_field("speed", 0, 1000, required=False)
        unit_ids = [self._unit_of(c, cmd)] if cmd.fields.get("unit_id") is not None or len(c.units) == 1 else list(c.units)
        verdicts = {
            uid: submit_position(
                self.ctx,
                uid,
                lat,
                lon,
                at,
                speed_kmh=speed,
                heading=cmd.float_field("heading", 0, 360, required=False),
                accuracy_m=cmd.float_field("accuracy", 0, 1e6, required=False),
                altitude_m=cmd.float_field("altitude", -1000, 1e5, required=False),
            )
            for uid in unit_ids
        }
        return {"verdicts": {str(k): v for k, v in verdicts.items()}}


def submit_position(
    ctx: Context,
    unit_id: int,
    lat: float,
    lon: float,
    at: datetime,
    *,
    speed_kmh: float | None,
    heading: float | None,
    accuracy_m: float | None,
    altitude_m: float | None,
) -> str:
    """Hand a browser geolocation fix to the position sink (source ``squad``); return its verdict."""
    sink = ctx.get(POSITIONS)
    if sink is None:
        return "no_sink"
    fix = Position(
        unit_id=unit_id,
        device_id=0,
        lat=lat,
        lon=lon,
        at=at,
        source="squad",
        speed_kmh=speed_kmh,
        heading=heading,
        altitude_m=altitude_m,
        accuracy_m=accuracy_m,
    )
    return str(sink.submit(fix, ctx.clock.now()))


def _unit_brief(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row.get("name"),
        "kind": row.get("kind"),
        "org": row.get("org") or row.get("org_code"),
        "status": row.get("status"),
    }


def _ref(reply: Mapping[str, Any]) -> dict[str, Any]:
    return {"order_id": reply["order_id"]} if "order_id" in reply else {}


_MESSAGES = {
    "no_unit": ("您不是任何应急队伍的成员", "you are not a member of any squad unit"),
}


def _msg(lang: str, key: str) -> str:
    zh, en = _MESSAGES[key]
    return en if lang == "en" else zh
