"""The board websocket ``/ws/board?token=…&since=SEQ`` and the hub that feeds every board client.

Per-message work per client is what a Python server cannot afford, so the hub works per frame and
per jurisdiction: at most every ``[live] frame_interval`` it takes the rows that arrived, encodes
each change once (JSON, then an unmasked websocket text frame: RFC 6455 §5.1 forbids a server to
mask, so the bytes are valid on every connection), joins the frames a jurisdiction may see into one
blob, and writes that blob to each client of the jurisdiction with a single ``transport.write``.
Every message stays a standalone JSON text message with ``type`` (and ``seq`` for changes).

Squad positions are changes too (topic ``positions``): the position sink writes one row per org unit
and tick, each unit in it at most once per ``[units] publish_interval_s``, so the board gets every
row and every seq exactly once.

A slow client never slows the others: when its transport buffer is above a high-water mark its
frames wait in its own queue; past ``[live] queue_frames`` it is dropped with close code 4001
(:data:`~dispatchd.live.protocol.CLOSE_RESUME`) after the frames it already has, and it reconnects
with ``since=<last seq it received>``.

Starting a client: it is registered first (frames for it are queued from then on), the hub's
current seq ``H`` is noted, then it gets either a snapshot (current to ``S >= H``) or, on resume,
``resumed`` and the rows after ``since`` up to ``H`` from PostgreSQL; the queued frames follow with
every change at or below what it already has cut out. So a client sees every seq once, in order.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from dispatchd.context import Context
from dispatchd.live.feed import feed_head, fetch_rows, pruned_through
from dispatchd.live.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_RESUME,
    ChangeRow,
    Socket,
    change_message,
    dumps,
    heartbeat_message,
    resumed_message,
    snapshot_message,
    text_frame,
)
from dispatchd.store.outage import OUTAGES, store_failure
from dispatchd.store.users import User

log = structlog.get_logger("dispatchd.live.board")

HIGH_WATER = 256 * 1024  # bytes in a transport's buffer above which frames wait in the client's queue
CLOSE_TIMEOUT = 10.0  # seconds a dropped client has to take its close frame before the socket is cut
SHUTDOWN_GRACE = 2.0  # seconds the boards get to take their 1001 when the instance stops
_conn_ids = itertools.count(1)


def encode_change(row: ChangeRow) -> bytes:
    """A change as a websocket text frame, ready to write."""
    return text_frame(dumps(change_message(row)).encode())


class Frame:
    """What one tick sends to one jurisdiction: framed messages, with the seq of each change."""

    __slots__ = ("blob", "first_seq", "parts")

    def __init__(self, parts: list[tuple[int, bytes]]) -> None:
        self.parts = parts  # (seq, bytes); seq 0 for heartbeats
        self.blob = b"".join(p[1] for p in parts)
        self.first_seq = next((s for s, _ in parts if s), 0)

    def after(self, cursor: int) -> bytes:
        """The frame without the changes at or below ``cursor`` (what the client already has)."""
        if not self.first_seq or self.first_seq > cursor:
            return self.blob
        return b"".join(b for s, b in self.parts if s == 0 or s > cursor)


class BoardClient:
    __slots__ = (
        "backlog",
        "closing",
        "conn_id",
        "cursor",
        "live",
        "org",
        "registered_at",
        "transport",
        "user",
        "ws",
    )

    def __init__(self, ws: Socket, transport: asyncio.Transport, user: User, seq: int) -> None:
        self.ws = ws
        self.transport = transport
        self.user = user
        self.org = user.org
        self.conn_id = f"b{next(_conn_ids)}"
        self.backlog: deque[bytes | Frame] = deque()
        self.live = False  # False while the snapshot or the resume is being sent
        self.closing = False
        self.registered_at = seq  # the hub's seq when the client was registered
        self.cursor = 0  # the last seq the client has (for cutting duplicates when it goes live)


class BoardHub:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.live
        self.metrics = ctx.metrics
        self.clock = ctx.clock
        self.groups: dict[str, set[BoardClient]] = {}
        self.received = 0  # the last seq received from the feed
        self._pending: list[ChangeRow] = []
        self._backlogged: set[BoardClient] = set()
        self._heartbeat_due = False
        self._wake = asyncio.Event()
        self._snapshots: dict[str, asyncio.Future[tuple[int, str]]] = {}
        self._closers: set[asyncio.Task[None]] = set()
        # A store going down or coming back is told to every board at once, in a heartbeat.
        self.outages = ctx.get(OUTAGES)
        if self.outages is not None:
            self.outages.listeners.append(self._stores_changed)

    def _stores_changed(self, store: str, down: bool) -> None:
        self._heartbeat_due = True
        self._wake.set()

    def stores_down(self) -> list[str]:
        return self.outages.down() if self.outages is not None else []

    @property
    def client_count(self) -> int:
        return sum(len(g) for g in self.groups.values())

    # -- input from the feed ---------------------------------------------------------------------

    def on_rows(self, rows: Sequence[ChangeRow]) -> None:
        self._pending.extend(rows)
        self.received = rows[-1].seq
        self._wake.set()

    # -- the frame loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Flush at most every frame interval (start to start); sleep while there is nothing to send."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = loop.time()
            try:
                self.flush()
            except Exception:
                log.exception("board_flush_failed")
            if self._backlogged:
                self._wake.set()  # come back next tick to drain the queues of slow clients
            await asyncio.sleep(max(0.0, started + self.settings.frame_interval - loop.time()))

    async def run_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            self._heartbeat_due = True
            self._wake.set()

    def flush(self) -> None:
        rows, self._pending = self._pending, []
        heartbeat = self._heartbeat_due
        self._heartbeat_due = False
        if rows or heartbeat:
            changes = [(r, encode_change(r)) for r in rows]
            beat = (
                text_frame(
                    dumps(heartbeat_message(self.clock.now(), self.received, self.stores_down())).encode()
                )
                if heartbeat
                else b""
            )
            # Route each row to the jurisdictions on its path (a handful of lookups per row,
            # however many jurisdictions are connected); rows stay in seq order per jurisdiction.
            groups = self.groups
            parts: dict[str, list[tuple[int, bytes]]] = {}
            for r, b in changes:
                for code in r.org_path:
                    if code in groups:
                        parts.setdefault(code, []).append((r.seq, b))
            for org, clients in list(groups.items()):
                mine = parts.get(org, [])
                if beat:
                    mine.append((0, beat))
                if not mine or not clients:
                    continue
                frame = Frame(mine)
                blob, first = frame.blob, frame.first_seq
                written = 0
                for c in list(clients):
                    # The common case inline: a live client that keeps up and already has nothing
                    # of this frame gets the shared bytes in one write.
                    t = c.transport
                    if (
                        c.live
                        and not c.backlog
                        and (not first or first > c.cursor)
                        and t.get_write_buffer_size() <= HIGH_WATER
                        and not t.is_closing()
                        and not c.ws.closed  # nothing may follow a close frame (RFC 6455 §5.5.1)
                    ):
                        t.write(blob)
                        written += 1
                    else:
                        self._deliver(c, frame)
                if written:
                    self.metrics.live_frames.inc(written)
                    self.metrics.live_frame_bytes.inc(written * len(blob))
        for c in list(self._backlogged):
            self._drain(c)

    def _deliver(self, c: BoardClient, frame: Frame) -> None:
        if c.transport.is_closing() or c.ws.closed:
            self._remove(c)
            return
        if not c.live:
            c.backlog.append(frame)  # cut against the client's cursor once it is known
        else:
            # A snapshot may be ahead of the feed: what it already covers is cut (one comparison
            # per client and frame; no work once the feed has passed the client's start).
            blob = frame.blob if not frame.first_seq or frame.first_seq > c.cursor else frame.after(c.cursor)
            if not blob:
                return
            if not c.backlog and c.transport.get_write_buffer_size() <= HIGH_WATER:
                c.transport.write(blob)
                self.metrics.live_frames.inc()
                self.metrics.live_frame_bytes.inc(len(blob))
                return
            c.backlog.append(blob)
            self._backlogged.add(c)
        if len(c.backlog) > self.settings.queue_frames:
            self._drop_slow(c)

    def _drain(self, c: BoardClient) -> None:
        if c.transport.is_closing() or c.ws.closed:
            self._remove(c)
            return
        while c.backlog and c.transport.get_write_buffer_size() <= HIGH_WATER:
            item = c.backlog.popleft()
            blob = item.blob if isinstance(item, Frame) else item
            c.transport.write(blob)
            self.metrics.live_frames.inc()
            self.metrics.live_frame_bytes.inc(len(blob))
        if not c.backlog:
            self._backlogged.discard(c)

    def _drop_slow(self, c: BoardClient) -> None:
        """Past its queue bound: drop the queue, close with 'resume' after what it already has."""
        self.metrics.live_queue_drops.inc()
        log.info("board_client_too_slow", conn_id=c.conn_id, user=c.user.username, queued=len(c.backlog))
        self._remove(c)
        c.backlog.clear()
        self._close_later(c, CLOSE_RESUME, "too slow: resume with since=<last seq received>")

    def _close_later(self, c: BoardClient, code: int, reason: str) -> None:
        if c.closing:
            return
        c.closing = True
        task = asyncio.create_task(self._close(c, code, reason))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _close(self, c: BoardClient, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(c.ws.close(code=code, message=reason.encode()), CLOSE_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError, ConnectionError, RuntimeError):
            pass
        finally:
            if not c.transport.is_closing():
                c.transport.abort()

    # -- clients ---------------------------------------------------------------------------------

    def _add(self, c: BoardClient) -> None:
        self.groups.setdefault(c.org, set()).add(c)
        self.metrics.connections.labels("board").inc()

    def _remove(self, c: BoardClient) -> None:
        group = self.groups.get(c.org)
        if group is not None and c in group:
            group.discard(c)
            if not group:
                del self.groups[c.org]
            self.metrics.connections.labels("board").dec()
        self._backlogged.discard(c)

    async def close_all(self) -> None:
        """The instance stops: every board is told to go elsewhere and resume (1001)."""
        if self.outages is not None and self._stores_changed in self.outages.listeners:
            self.outages.listeners.remove(self._stores_changed)
        clients = [c for g in self.groups.values() for c in g]
        for c in clients:
            self._remove(c)
            self._close_later(c, CLOSE_GOING_AWAY, "server stopping: reconnect with since=<last seq>")
        if self._closers:
            # Give clients a moment to take the close frame; the rest are cut when the server stops.
            await asyncio.wait(list(self._closers), timeout=SHUTDOWN_GRACE)

    async def snapshot(self, org: str) -> tuple[int, str]:
        """The snapshot of ``org``'s jurisdiction: (seq it is current to, JSON text).

        Boards of one jurisdiction that connect together share one computation.
        """
        pending = self._snapshots.get(org)
        if pending is None:
            pending = asyncio.ensure_future(self._compute_snapshot(org))
            self._snapshots[org] = pending
            pending.add_done_callback(lambda _f: self._snapshots.pop(org, None))
        return await asyncio.shield(pending)

    async def _compute_snapshot(self, org: str) -> tuple[int, str]:
        ctx = self.ctx
        async with ctx.pool.acquire() as conn:
            seq = await feed_head(conn)  # read first: the sections are at least this current
        codes: frozenset[str] = ctx.orgs.descendants(org)
        registered = ctx.board_sections
        names = list(registered.keys())
        results = await asyncio.gather(*(registered[n](ctx, codes) for n in names), return_exceptions=True)
        sections: dict[str, Any] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                # null: the board shows the section as unavailable. A store outage is logged once.
                if store_failure(ctx, result) is None:
                    log.error(
                        "board_section_failed", section=name, error=f"{type(result).__name__}: {result}"
                    )
                sections[name] = None
            else:
                sections[name] = result
        return seq, dumps(snapshot_message(seq, self.clock.now(), org, sections, self.stores_down()))

    def register(self, ws: Socket, transport: asyncio.Transport, user: User) -> BoardClient:
        """A new board: frames for it are queued from now on (its start is :meth:`start`)."""
        c = BoardClient(ws, transport, user, self.received)
        self._add(c)
        return c

    async def start(self, c: BoardClient, since: int | None) -> str:
        """Send the snapshot (or resume after ``since``), then what was queued; return the mode."""
        mode = await self._start(c, since)
        self.metrics.live_board_starts.labels(mode).inc()
        log.info("board_connected", user=c.user.username, org=c.org, mode=mode, since=since, cursor=c.cursor)
        return mode

    def unregister(self, c: BoardClient) -> None:
        self._remove(c)
        log.info("board_disconnected", user=c.user.username, close_code=c.ws.close_code)

    async def _start(self, c: BoardClient, since: int | None) -> str:
        registered = c.registered_at
        rows: list[ChangeRow] = []
        mode = "snapshot"
        async with self.ctx.pool.acquire() as conn:
            if since is not None:
                resumable = await self._resumable(conn, since)
                if resumable:
                    rows = await fetch_rows(conn, since, registered, self.settings.resume_max_rows + 1, c.org)
                    if len(rows) <= self.settings.resume_max_rows:
                        mode = "resume"
                    else:
                        rows = []
        if mode == "resume":
            assert since is not None
            c.cursor = since
            await c.ws.send_str(dumps(resumed_message(since)))
        else:
            seq, text = await self.snapshot(c.org)
            c.cursor = seq
            await c.ws.send_str(text)
            if seq < registered:  # a shared snapshot older than this client's start: fill the gap
                async with self.ctx.pool.acquire() as conn:
                    rows = await self._rows_between(conn, seq, registered, c.org)
        if rows:
            c.transport.write(b"".join(encode_change(r) for r in rows))
            c.cursor = max(c.cursor, rows[-1].seq)
        c.cursor = max(c.cursor, registered)
        self._go_live(c)
        return mode

    async def _resumable(self, conn: asyncpg.Connection, since: int) -> bool:
        """Within retention and not from the future (a client of another database)."""
        if since < await pruned_through(conn):
            return False
        return since <= max(await feed_head(conn), self.received)

    @staticmethod
    async def _rows_between(conn: asyncpg.Connection, after: int, upto: int, org: str) -> list[ChangeRow]:
        out: list[ChangeRow] = []
        while after < upto:
            page = await fetch_rows(conn, after, upto, 1000, org)
            if not page:
                break
            out.extend(page)
            after = page[-1].seq
        return out

    def _go_live(self, c: BoardClient) -> None:
        """Send what was queued during the start, without anything the client already has."""
        if c.closing:
            return
        queued = [item.after(c.cursor) if isinstance(item, Frame) else item for item in c.backlog]
        c.backlog = deque(b for b in queued if b)
        c.live = True
        if c.backlog:
            self._backlogged.add(c)
            self._drain(c)
