"""Two dispatchd instances behind Debian's nginx with the shipped site, over TLS, on loopback.

Everything goes through nginx as a client would (HTTPS, WSS, the stream ports), except where a
test must act on one given instance: then it talks to that instance's own port, as a second client
of the deployment served by the other instance would.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from dispatchd import __version__
from tests.conftest import COUNTY, PASSWORD, StoreUrls, password_hash, require_tool, wipe
from tests.deploy.cluster import STREAM_MODULE, Cluster, start_cluster
from tests.incidents.helpers import point_in

pytestmark = pytest.mark.deploy

TOWN = "330381001"
GRID = "330381001001G001"
OFFICER, MEMBER = "deploy-officer", "deploy-member"


async def create_users(db: str) -> None:
    from dispatchd.store.users import create_user

    conn = await asyncpg.connect(db)
    try:
        await create_user(conn, OFFICER, password_hash(), "duty_officer", COUNTY, None, "值班员")
        await create_user(conn, MEMBER, password_hash(), "squad_member", TOWN, None, "队员")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def cluster(store_urls: StoreUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_tool("nginx")
    if not STREAM_MODULE.exists():
        require_tool("ngx_stream_module.so (Debian package libnginx-mod-stream)")
    asyncio.run(wipe(store_urls))
    asyncio.run(create_users(store_urls.database))
    directory = tmp_path_factory.mktemp("deploy")
    directory.chmod(0o755)
    c = asyncio.run(start_cluster(directory, store_urls.database, store_urls.redis))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
async def http(cluster: Cluster) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that trusts only the certificate made for this run."""
    context = ssl.create_default_context(cafile=str(cluster.cert))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


async def login(http: aiohttp.ClientSession, cluster: Cluster, username: str) -> dict[str, str]:
    async with http.post(
        f"{cluster.https}/api/v1/auth/login", json={"username": username, "password": PASSWORD}
    ) as r:
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
    return {"Authorization": f"Bearer {token}"}


async def metric(http: aiohttp.ClientSession, cluster: Cluster, i: int, name: str, labels: str = "") -> float:
    """One sample of instance ``i``'s own /metrics (0 when absent)."""
    async with http.get(f"{cluster.instance_url(i)}/metrics") as r:
        text = await r.text()
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*{re.escape(labels)}[^}}]*\}})? (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.M))


async def holder(http: aiohttp.ClientSession, cluster: Cluster, name: str, labels: str) -> int:
    """The index of the only running instance whose metric is above zero."""
    for _ in range(100):
        found = [
            i
            for i, inst in enumerate(cluster.instances)
            if inst.running and await metric(http, cluster, i, name, labels) > 0
        ]
        if len(found) == 1:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no single instance with {name}{{{labels}}} > 0")


async def next_of(
    ws: aiohttp.ClientWebSocketResponse, kind: str, within: float = 15, **match: Any
) -> dict[str, Any]:
    """The next message of ``type`` kind (and the given fields), skipping others."""
    async with asyncio.timeout(within):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, f"socket ended: {msg.type} {msg.data!r}"
            data: dict[str, Any] = json.loads(msg.data)
            if data.get("type") == kind and all(data.get(k) == v for k, v in match.items()):
                return data


async def drain(ws: aiohttp.ClientWebSocketResponse, seq: int) -> tuple[bool, int]:
    """Read what a board was sent until a second of silence (still served) or its close; the last seq."""
    while True:
        try:
            msg = await ws.receive(timeout=1.0)
        except TimeoutError:
            return True, seq
        except aiohttp.ClientError:
            return False, seq
        if msg.type != aiohttp.WSMsgType.TEXT:
            return False, seq
        seq = max(seq, int(json.loads(msg.data).get("seq", seq)))


async def new_case(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str], text: str
) -> dict[str, Any]:
    from dispatchd.domain.orgs import load_org_tree
    from tests.conftest import ROOT

    lat, lon = point_in(load_org_tree(ROOT / "config" / "orgs"), GRID)
    body = {
        "category": "incident.dispute",
        "description": text,
        "location": {"lat": lat, "lon": lon},
        "priority": "P1",
    }
    async with http.post(f"{base}/api/v1/incidents", json=body, headers=headers) as r:
        assert r.status == 201, await r.text()
        case: dict[str, Any] = await r.json()
    return case


async def make_unit(http: aiohttp.ClientSession, cluster: Cluster, officer: dict[str, str], name: str) -> int:
    async with http.post(
        f"{cluster.https}/api/v1/units", json={"name": name, "kind": "team", "org": TOWN}, headers=officer
    ) as r:
        assert r.status == 201, await r.text()
        unit_id = int((await r.json())["id"])
    async with http.post(
        f"{cluster.https}/api/v1/units/{unit_id}/members", json={"username": MEMBER}, headers=officer
    ) as r:
        assert r.status in (200, 201), await r.text()
    return unit_id


async def give_order(
    http: aiohttp.ClientSession, base: str, officer: dict[str, str], unit_id: int, text: str
) -> dict[str, Any]:
    case = await new_case(http, base, officer, text)
    async with http.post(
        f"{base}/api/v1/orders",
        json={"incident_id": case["id"], "unit_id": unit_id, "instructions": "立即前往现场处置"},
        headers=officer,
    ) as r:
        assert r.status == 201, await r.text()
        order: dict[str, Any] = await r.json()
    return order


async def convene(http: aiohttp.ClientSession, base: str, officer: dict[str, str]) -> dict[str, Any]:
    async with http.post(
        f"{base}/api/v1/meetings", json={"title": "防汛会商", "invite": [TOWN]}, headers=officer
    ) as r:
        assert r.status == 201, await r.text()
        meeting: dict[str, Any] = await r.json()
    return meeting


def token_of(url: str) -> str:
    match = re.search(r"[?&]t=([^&]+)", url)
    assert match, url
    return match.group(1)


async def sip_options(port: int, transport: str = "udp") -> bytes:
    """One SIP OPTIONS (with rport, RFC 3581) to ``port``; the first line of the answer."""
    loop = asyncio.get_running_loop()

    def request(local_port: int) -> bytes:
        return (
            f"OPTIONS sip:967999@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:{local_port};branch=z9hG4bK-deploy-{local_port};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:967999@127.0.0.1>\r\n"
            f"Call-ID: deploy-{local_port}-{loop.time()}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    if transport == "tcp":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request(writer.get_extra_info("sockname")[1]))
            return await asyncio.wait_for(reader.readline(), 3)
        finally:
            writer.close()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Probe(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not answer.done():
                answer.set_result(data.split(b"\r\n", 1)[0])

    udp, _ = await loop.create_datagram_endpoint(Probe, remote_addr=("127.0.0.1", port))
    try:
        udp.sendto(request(udp.get_extra_info("sockname")[1]))
        return await asyncio.wait_for(answer, 3)
    finally:
        udp.close()


async def sip_answers(port: int, transport: str, within: float = 20) -> bytes:
    """Ask until SIP answers through nginx (the standby needs a moment to take the port)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await sip_options(port, transport)
        except (TimeoutError, OSError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


# -- the tests ------------------------------------------------------------------------------------


async def test_plain_http_is_sent_to_https(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """Port 80 of the site answers 308 to HTTPS; HTTPS with the made certificate reaches an instance."""
    async with http.get(f"http://127.0.0.1:{cluster.ports.http}/healthz", allow_redirects=False) as r:
        assert r.status == 308 and r.headers["Location"].startswith("https://127.0.0.1")
    async with http.get(f"{cluster.https}/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"


async def test_board_through_nginx_gets_a_change_made_on_the_other_instance(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """A board websocket through nginx receives the case another instance recorded."""
    officer = await login(http, cluster, OFFICER)
    async with http.ws_connect(f"{cluster.wss}/ws/board?token={officer['Authorization'][7:]}") as ws:
        await next_of(ws, "snapshot")
        here = await holder(http, cluster, "dispatchd_connections", 'kind="board"')
        other = 1 - here
        case = await new_case(http, cluster.instance_url(other), officer, "经另一实例登记的纠纷")
        change = await next_of(ws, "change", entity="incident", id=str(case["id"]))
        assert change["action"] == "report"


async def test_squad_through_nginx_gets_an_order_created_on_the_other_instance(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """A squad phone connected through nginx receives, and acknowledges, an order made on the other instance."""
    officer = await login(http, cluster, OFFICER)
    member = await login(http, cluster, MEMBER)
    unit_id = await make_unit(http, cluster, officer, "部署测试中队")
    async with http.ws_connect(f"{cluster.wss}/ws/squad?token={member['Authorization'][7:]}") as ws:
        here = await holder(http, cluster, "dispatchd_connections", 'kind="squad"')
        order = await give_order(http, cluster.instance_url(1 - here), officer, unit_id, "另一实例下达的指令")
        pushed = await next_of(ws, "order")
        assert pushed["order"]["id"] == order["id"]
        await ws.send_json({"type": "ack", "order_id": order["id"]})
    async with http.get(f"{cluster.https}/api/v1/orders/{order['id']}", headers=officer) as r:
        seen = await r.json()
    assert r.status == 200 and seen["receipts"], seen


async def test_meeting_joined_through_nginx_meets_on_one_instance(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """Meetings convened on either instance: both sites joining through nginx meet in the one room of its host."""
    officer = await login(http, cluster, OFFICER)
    for convened_on in (0, 1):
        meeting = await convene(http, cluster.instance_url(convened_on), officer)
        chair, site = token_of(meeting["chair_link"]["url"]), token_of(meeting["links"][0]["url"])
        mid = meeting["id"]
        async with (
            http.ws_connect(f"{cluster.wss}/ws/meet/{mid}?token={chair}") as a,
            http.ws_connect(f"{cluster.wss}/ws/meet/{mid}?token={site}") as b,
        ):
            await next_of(a, "welcome")
            await next_of(b, "welcome")
            for _ in range(20):
                roster = await next_of(a, "roster")
                if sum(p["online"] for p in roster["participants"]) == 2:
                    break
            assert sum(p["online"] for p in roster["participants"]) == 2
            counts = [await metric(http, cluster, i, "dispatchd_video_participants") for i in (0, 1)]
            assert sorted(counts) == [0, 2], counts


async def test_one_instance_stops_under_traffic_and_the_clients_carry_on(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """The instance holding SIP, a board, a squad and a meeting stops under load: all of it continues on the other."""
    officer = await login(http, cluster, OFFICER)
    member = await login(http, cluster, MEMBER)
    token = officer["Authorization"][7:]
    assert (await sip_answers(cluster.ports.sip, "udp")).startswith(b"SIP/2.0 200")
    victim = await holder(http, cluster, "dispatchd_sip_messages_total", 'kind="OPTIONS"')
    survivor = 1 - victim
    unit_id = await make_unit(http, cluster, officer, "切换测试中队")

    # Two boards and two squad phones: least_conn puts one of each on every instance.
    boards = [await http.ws_connect(f"{cluster.wss}/ws/board?token={token}") for _ in range(2)]
    squads = [
        await http.ws_connect(f"{cluster.wss}/ws/squad?token={member['Authorization'][7:]}") for _ in range(2)
    ]
    seqs = [(await next_of(b, "snapshot"))["seq"] for b in boards]
    # A meeting hosted by the instance that will stop (the hash decides; convene until one lands there).
    for _ in range(12):
        meeting = await convene(http, cluster.https, officer)
        chair = token_of(meeting["chair_link"]["url"])
        room = await http.ws_connect(f"{cluster.wss}/ws/meet/{meeting['id']}?token={chair}")
        await next_of(room, "welcome")
        if await metric(http, cluster, victim, "dispatchd_video_participants") > 0:
            break
        await room.close()
    else:
        raise AssertionError("no meeting hashed to the instance under test")

    statuses: list[int] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            async with http.get(f"{cluster.https}/api/v1/incidents", headers=officer) as r:
                statuses.append(r.status)
            await asyncio.sleep(0.02)

    load = asyncio.create_task(traffic())
    await asyncio.sleep(0.5)
    await asyncio.to_thread(cluster.instances[victim].stop, signal.SIGTERM)
    await asyncio.sleep(0.5)

    # Boards: the one on the stopped instance was told to go (1001) and resumes through nginx.
    for i, board in enumerate(boards):
        alive, seqs[i] = await drain(board, seqs[i])
        if not alive:
            boards[i] = await http.ws_connect(f"{cluster.wss}/ws/board?token={token}&since={seqs[i]}")
            await next_of(boards[i], "resumed")
    squad_url = f"{cluster.wss}/ws/squad?token={member['Authorization'][7:]}"
    for i, squad in enumerate(squads):
        if not (await drain(squad, 0))[0]:
            squads[i] = await http.ws_connect(squad_url)
    case = await new_case(http, cluster.https, officer, "切换后登记的纠纷")
    for board in boards:
        await next_of(board, "change", entity="incident", id=str(case["id"]))
    order = await give_order(http, cluster.https, officer, unit_id, "切换后下达的指令")
    for squad in squads:
        got = await next_of(squad, "order")
        assert got["order"]["id"] == order["id"]

    # The meeting moves with the hash to the surviving instance.
    await room.close()
    async with http.ws_connect(f"{cluster.wss}/ws/meet/{meeting['id']}?token={chair}") as again:
        await next_of(again, "welcome")
        assert await metric(http, cluster, survivor, "dispatchd_video_participants") == 1

    # SIP: the standby took the port's lock and answers through nginx, over UDP and TCP.
    assert (await sip_answers(cluster.ports.sip, "udp")).startswith(b"SIP/2.0 200")
    assert (await sip_answers(cluster.ports.sip, "tcp")).startswith(b"SIP/2.0 200")
    assert await metric(http, cluster, survivor, "dispatchd_sip_messages_total", 'kind="OPTIONS"') > 0

    stop.set()
    await load
    for ws in [*boards, *squads]:
        await ws.close()
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert not cluster.instances[victim].running and cluster.instances[survivor].running
    log = await asyncio.to_thread(cluster.instances[victim].log_path.read_text)
    assert '"event": "stopped"' in log
    # The start-up line: version and the effective configuration, the database password masked.
    starting = next(json.loads(line) for line in log.splitlines() if '"event": "starting"' in line)
    assert starting["version"] == __version__ and starting["changed"]["sip.standby_interval"] == 0.2
