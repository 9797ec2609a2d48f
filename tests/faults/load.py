"""A recorded load on a running dispatchd: grid reports, case transitions, orders, OsmAnd fixes and a
board, each request with a deadline, every acknowledgement written down to be checked afterwards.

Each writer behaves as its real client does: a report is retried with the same Idempotency-Key
until it is acknowledged (the phone keeps it), a fix is sent again until it is acknowledged (the
tracker keeps it), a transition is retried with the same version (a 409 afterwards means the first
one went through), orders are not retried (an officer looks first). The board reconnects with
``since=<last seq>`` whenever it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

# Every request must be answered within this many seconds (a hung server fails the suite).
DEADLINE = 10.0


@dataclass
class Record:
    """What the load saw."""

    phase: str = "start"
    acked_reports: dict[str, int] = field(default_factory=dict)  # Idempotency-Key -> case id
    acked_transitions: set[int] = field(default_factory=set)  # cases accepted
    acked_orders: list[int] = field(default_factory=list)
    acked_fixes: set[tuple[str, int]] = field(default_factory=set)  # (device, unix time)
    fixes_by_phase: Counter[str] = field(default_factory=Counter)  # phase -> fixes acknowledged in it
    board_seqs: list[int] = field(default_factory=list)
    board_connects: int = 0
    late: list[tuple[str, str, float]] = field(default_factory=list)  # (phase, what, started s into it)
    phase_started: float = field(default_factory=time.monotonic)
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)  # (phase, status) counts
    slowest: dict[str, float] = field(default_factory=dict)  # phase -> slowest answer (s)

    def answered(self, status: int | str, seconds: float) -> None:
        self.answers[(self.phase, str(status))] += 1
        self.slowest[self.phase] = max(self.slowest.get(self.phase, 0.0), seconds)


@dataclass
class Target:
    base: str  # http://127.0.0.1:PORT
    osmand: str  # http://127.0.0.1:PORT/
    officer_token: str
    worker_token: str
    unit_id: int
    devices: dict[str, str]  # identifier -> key
    report: dict[str, Any]  # a report body (category, description, location)


class Load:
    def __init__(self, target: Target, record: Record) -> None:
        self.t = target
        self.r = record
        self.stopping = asyncio.Event()
        self.pending_reports: list[str] = []
        self.accepted: list[int] = []

    async def _call(
        self, http: aiohttp.ClientSession, method: str, url: str, what: str, **kw: Any
    ) -> tuple[int | None, Any]:
        """One request with the deadline: (status, JSON or None); status None when not answered."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(DEADLINE):
                async with http.request(method, url, **kw) as resp:
                    body = await resp.read()
        except TimeoutError:
            self.r.late.append((self.r.phase, what, round(started - self.r.phase_started, 1)))
            return None, None
        except aiohttp.ClientError:
            # The daemon is not there (killed, restarting): refused at once, not a hang.
            self.r.answered("refused", time.monotonic() - started)
            return None, None
        self.r.answered(resp.status, time.monotonic() - started)
        try:
            return resp.status, json.loads(body) if body else None
        except ValueError:
            return resp.status, None

    async def reports(self, http: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {self.t.worker_token}"}
        while not self.stopping.is_set() or self.pending_reports:
            if not self.pending_reports and not self.stopping.is_set():
                self.pending_reports.append(uuid.uuid4().hex)
            key = self.pending_reports[0]
            status, body = await self._call(
                http,
                "POST",
                f"{self.t.base}/api/v1/reports",
                "report",
                json=self.t.report,
                headers={**headers, "Idempotency-Key": key},
            )
            if status in (200, 201):
                self.r.acked_reports[key] = int(body["incident_id"])
                self.pending_reports.pop(0)
                self.accepted.append(int(body["incident_id"]))
            await asyncio.sleep(0.1)

    async def transitions(self, http: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {self.t.officer_token}"}
        while not self.stopping.is_set():
            if not self.accepted:
                await asyncio.sleep(0.1)
                continue
            case_id = self.accepted[0]
            status, body = await self._call(http, "GET", f"{self.t.base}/api/v1/incidents/{case_id}", "case", headers=headers)
            if status != 200:
                await asyncio.sleep(0.2)
                continue
            if body["state"] != "reported":
                self.accepted.pop(0)  # accepted by an earlier try whose answer was lost
                self.r.acked_transitions.add(case_id)
                continue
            status, _ = await self._call(
                http,
                "POST",
                f"{self.t.base}/api/v1/incidents/{case_id}/actions/accept",
                "accept",
                json={"version": body["version"]},
                headers=headers,
            )
            if status == 200:
                self.accepted.pop(0)
                self.r.acked_transitions.add(case_id)
                status, order = await self._call(
                    http,
                    "POST",
                    f"{self.t.base}/api/v1/orders",
                    "order",
                    json={"incident_id": case_id, "unit_id": self.t.unit_id, "instructions": "前往处置"},
                    headers=headers,
                )
                if status == 201:
                    self.r.acked_orders.append(int(order["id"]))
            await asyncio.sleep(0.1)

    async def fixes(self, http: aiohttp.ClientSession, device: str, key: str) -> None:
        at = int(time.time()) - 3600  # an hour of fixes, one a second, ahead of the wall clock never
        unsent: list[int] = []
        lat = 27.786
        while not self.stopping.is_set() or unsent:
            if not unsent and not self.stopping.is_set():
                at += 1
                unsent.append(at)
            when = unsent[0]
            lat += 0.00001
            params = {"id": device, "lat": f"{lat:.6f}", "lon": "120.6", "timestamp": str(when), "key": key}
            status, _ = await self._call(http, "GET", self.t.osmand, "fix", params=params)
            if status == 200:
                self.r.acked_fixes.add((device, when))
                self.r.fixes_by_phase[self.r.phase] += 1
                unsent.pop(0)
            await asyncio.sleep(0.05)

    async def board(self, http: aiohttp.ClientSession) -> None:
        since: int | None = None
        while not self.stopping.is_set():
            url = f"{self.t.base}/ws/board?token={self.t.officer_token}"
            if since is not None:
                url += f"&since={since}"
            try:
                async with http.ws_connect(url, heartbeat=5) as ws:
                    self.r.board_connects += 1
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        data = json.loads(msg.data)
                        if data.get("type") == "snapshot":
                            since = data["seq"]
                            self.r.board_seqs.append(-data["seq"])  # a snapshot: current to seq
                        elif data.get("type") == "change":
                            self.r.board_seqs.append(int(data["seq"]))
                            since = int(data["seq"])
                        if self.stopping.is_set():
                            break
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            await asyncio.sleep(0.3)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            tasks = [
                asyncio.create_task(self.reports(http)),
                asyncio.create_task(self.transitions(http)),
                asyncio.create_task(self.board(http)),
                *(asyncio.create_task(self.fixes(http, d, k)) for d, k in self.t.devices.items()),
            ]
            await self.stopping.wait()
            # Writers finish what they hold (a bounded time: the stores are back by now).
            _, pending = await asyncio.wait(tasks, timeout=60)
            for task in pending:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def now_utc() -> datetime:
    return datetime.now(UTC)
