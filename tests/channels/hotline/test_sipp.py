"""The hotline with a real SIP peer: sipp places calls on the SIP port of a running dispatchd."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from dispatchd.channels.hotline.slots import SIP_PORTS
from dispatchd.web.appkeys import CTX
from tests.conftest import COUNTY, AppFactory, StoreUrls, UserFactory, require_tool

pytestmark = pytest.mark.sipp

SCENARIOS = Path(__file__).parent / "scenarios"
FIXTURES = Path(__file__).parent / "fixtures"
POLICE_LINE = "057765890101"  # 公安局治安举报, merged into 967999
CALLER = "13857712345"


async def eventually(probe: Callable[[], Awaitable[Any]]) -> Any:
    """Poll ``probe`` until it returns something truthy (bounded at 15 s; for I/O, not for time)."""
    async with asyncio.timeout(15):
        while True:
            found = await probe()
            if found:
                return found
            await asyncio.sleep(0.05)


class Sipp:
    """One sipp run as the calling side; its logs land in the test's temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_tool("sipp")
        self.workdir = workdir

    async def start(
        self,
        scenario: str,
        port: int,
        *,
        service: str,
        caller: str = CALLER,
        tcp: bool = False,
        pause_ms: int = 0,
        **keys: str,
    ) -> asyncio.subprocess.Process:
        args = [
            "-sf",
            str(SCENARIOS / scenario),
            "-s",
            service,
            "-key",
            "caller",
            caller,
            "-m",
            "1",
            "-t",
            "t1" if tcp else "u1",
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
            "-trace_err",
            "-trace_msg",
        ]
        if pause_ms:
            args += ["-d", str(pause_ms)]
        for name, value in keys.items():
            args += ["-key", name, value]
        return await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            f"127.0.0.1:{port}",
            cwd=self.workdir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def finish(self, process: asyncio.subprocess.Process) -> None:
        """Wait for sipp (bounded) and require that its call succeeded."""
        try:
            code = await asyncio.wait_for(process.wait(), 45)
        except TimeoutError:
            process.kill()
            raise
        if code != 0:
            logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in self.workdir.glob("*.log"))
            raise AssertionError(f"sipp exited {code}\n{logs}")


@pytest.fixture
def sipp(tmp_path: Path) -> Sipp:
    work = tmp_path / "sipp"
    work.mkdir()
    return Sipp(work)


def sip_port(client: TestClient[Any, Any], transport: str = "udp") -> int:
    ports: dict[str, int] = client.server.app[CTX][SIP_PORTS]
    return ports[transport]


async def calls_in(
    client: TestClient[Any, Any], headers: dict[str, str], state: str = ""
) -> list[dict[str, Any]]:
    response = await client.get(
        "/api/v1/hotline/calls", params={"state": state} if state else {}, headers=headers
    )
    assert response.status == 200
    body = await response.json()
    calls: list[dict[str, Any]] = body["calls"]
    return calls


async def test_call_to_an_old_department_line_is_answered_and_becomes_a_case(
    client: TestClient[Any, Any], make_user: UserFactory, sipp: Sipp, clean_stores: StoreUrls
) -> None:
    """sipp dials a merged police line: queued with caller and department, answered (200, ACK, BYE), made a case."""
    officer = await make_user("duty_officer", COUNTY)
    process = await sipp.start("answered.xml", sip_port(client), service=POLICE_LINE)

    async def queued() -> list[dict[str, Any]]:
        return await calls_in(client, officer.headers, "queued")

    [call] = await eventually(queued)
    assert call["caller"] == CALLER and call["dialled"] == POLICE_LINE
    assert call["department"] == "330381-GAJ" and call["department_kind"] == "police"
    assert call["line"]["zh-CN"] == "公安局治安举报" and call["category"] == "hazard.public_order"
    assert call["state"] == "queued" and call["incident_id"] is None

    answered = await client.post(f"/api/v1/hotline/calls/{call['id']}/answer", headers=officer.headers)
    assert answered.status == 200
    assert (await answered.json())["state"] == "answered"
    await sipp.finish(process)  # the 200 carried a PCMU answer, the caller ACKed and hung up

    async def ended() -> dict[str, Any] | None:
        response = await client.get(f"/api/v1/hotline/calls/{call['id']}", headers=officer.headers)
        body: dict[str, Any] = await response.json()
        return body if body["state"] == "ended" else None

    finished = await eventually(ended)
    assert finished["end_reason"] == "caller_hangup" and finished["agent_user_id"] == officer.user.id
    assert [e["event"] for e in finished["timeline"]] == ["offered", "answer", "end"]

    made = await client.post(
        f"/api/v1/hotline/calls/{call['id']}/incident",
        json={"description": "群众来电反映小区门口有人聚众赌博"},
        headers=officer.headers,
    )
    assert made.status == 201
    body = await made.json()
    case = body["incident"]
    assert (
        case["channel"] == "hotline"
        and case["caller"] == CALLER
        and case["category"] == "hazard.public_order"
    )
    assert body["call"]["incident_id"] == case["id"]
    [listed] = await calls_in(client, officer.headers, "ended")
    assert listed["incident_id"] == case["id"]
    again = await client.post(
        f"/api/v1/hotline/calls/{call['id']}/incident", json={"description": "twice"}, headers=officer.headers
    )
    assert again.status == 409

    conn = await asyncpg.connect(clean_stores.database)
    try:
        events = [
            r["payload"]
            for r in await conn.fetch(
                "SELECT payload::text AS payload FROM outbox WHERE topic = 'call' AND entity_id = $1 ORDER BY seq",
                str(call["id"]),
            )
        ]
    finally:
        await conn.close()
    assert [json.loads(e)["action"] for e in events] == [
        "offered",
        "answer",
        "end",
        "incident",
    ]


async def test_cancelled_call_is_recorded_abandoned(
    client: TestClient[Any, Any], make_user: UserFactory, sipp: Sipp
) -> None:
    """sipp sends INVITE then CANCEL: 200 for the CANCEL, 487 for the INVITE, the call is abandoned."""
    officer = await make_user("duty_officer", COUNTY)
    process = await sipp.start("cancelled.xml", sip_port(client), service="967999", pause_ms=800)
    await sipp.finish(process)

    async def abandoned() -> list[dict[str, Any]]:
        return await calls_in(client, officer.headers, "abandoned")

    [call] = await eventually(abandoned)
    assert call["dialled"] == "967999" and call["end_reason"] == "cancel" and call["answered_at"] is None
    assert call["department"] == "330381-ZHZX"
    answer = await client.post(f"/api/v1/hotline/calls/{call['id']}/answer", headers=officer.headers)
    assert answer.status == 409


async def test_garbage_on_the_sip_port_does_not_stop_the_next_call(
    client: TestClient[Any, Any], make_user: UserFactory, sipp: Sipp
) -> None:
    """Garbage datagrams and a garbage TCP stream are dropped or answered 400; the next call works."""
    officer = await make_user("duty_officer", COUNTY)
    port = sip_port(client)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.bind(("127.0.0.1", 0))
        here = f"127.0.0.1:{udp.getsockname()[1]}".encode()
        for name in ("garbage.bin", "malformed_request_line.sip", "malformed_no_via.sip"):
            udp.sendto((FIXTURES / name).read_bytes(), ("127.0.0.1", port))
        udp.sendto(b"\x00" * 1400, ("127.0.0.1", port))
        bad_cseq = (FIXTURES / "malformed_bad_cseq.sip").read_bytes().replace(b"10.0.0.9:5060", here)
        udp.sendto(bad_cseq, ("127.0.0.1", port))
        answer, _ = await asyncio.get_running_loop().run_in_executor(None, udp.recvfrom, 65535)
    assert answer.startswith(b"SIP/2.0 400 Bad Request - bad CSeq")
    reader, writer = await asyncio.open_connection("127.0.0.1", sip_port(client, "tcp"))
    writer.write(b"INVITE sip:967999@x SIP/2.0\r\nContent-Length: lots\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed: nothing after it could be framed
    writer.close()

    process = await sipp.start("answered.xml", port, service="967999")
    [call] = await eventually(lambda: calls_in(client, officer.headers, "queued"))
    assert (
        await client.post(f"/api/v1/hotline/calls/{call['id']}/answer", headers=officer.headers)
    ).status == 200
    await sipp.finish(process)
    metrics = await (await client.get("/metrics")).text()
    assert 'dispatchd_sip_malformed_total{outcome="dropped",transport="UDP"} 4.0' in metrics
    assert 'dispatchd_sip_malformed_total{outcome="answered_400",transport="UDP"} 1.0' in metrics


async def test_officer_hangs_up_over_tcp(
    client: TestClient[Any, Any], make_user: UserFactory, sipp: Sipp
) -> None:
    """Over TCP: the officer answers, then hangs up; the caller gets our BYE on the same connection."""
    officer = await make_user("duty_officer", COUNTY)
    process = await sipp.start(
        "officer_hangs_up.xml", sip_port(client, "tcp"), service="0577-65890104", tcp=True
    )
    [call] = await eventually(lambda: calls_in(client, officer.headers, "queued"))
    assert call["department"] == "330381-SFJ" and call["category"] == "incident.dispute"
    assert (
        await client.post(f"/api/v1/hotline/calls/{call['id']}/answer", headers=officer.headers)
    ).status == 200
    hangup = await client.post(f"/api/v1/hotline/calls/{call['id']}/hangup", headers=officer.headers)
    assert hangup.status == 200
    body = await hangup.json()
    assert body["state"] == "ended" and body["end_reason"] == "officer_hangup"
    await sipp.finish(process)


async def test_answer_through_another_instance(
    make_client: AppFactory, make_user: UserFactory, sipp: Sipp
) -> None:
    """A call taken by one instance is answered through the API of another (the command travels by Redis)."""
    first = await make_client()
    second = await make_client()
    officer = await make_user("duty_officer", COUNTY)
    process = await sipp.start("answered.xml", sip_port(first), service="967999")
    [call] = await eventually(lambda: calls_in(second, officer.headers, "queued"))
    answered = await second.post(f"/api/v1/hotline/calls/{call['id']}/answer", headers=officer.headers)
    assert answered.status == 200 and (await answered.json())["state"] == "answered"
    await sipp.finish(process)
