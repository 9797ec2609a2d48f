"""Active/standby SIP: one instance binds a fixed SIP port; another takes it over when the first stops."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.channels.hotline.slots import SIP_PORTS
from dispatchd.channels.hotline.standby import sip_lock_key
from dispatchd.web.appkeys import CTX
from tests.conftest import AppFactory


def free_udp_and_tcp_port() -> int:
    """A port free for both UDP and TCP on loopback (the SIP edge binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def ports(client: TestClient[Any, Any]) -> dict[str, int]:
    bound: dict[str, int] = client.server.app[CTX][SIP_PORTS]
    return bound


async def options(port: int) -> bytes:
    """Send one SIP OPTIONS over UDP and return the answer's first line."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Probe(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not answer.done():
                answer.set_result(data.split(b"\r\n", 1)[0])

    transport, _ = await loop.create_datagram_endpoint(Probe, remote_addr=("127.0.0.1", port))
    try:
        local = transport.get_extra_info("sockname")
        transport.sendto(
            (
                f"OPTIONS sip:967999@127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local[1]};branch=z9hG4bK-standby-{local[1]}\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:967999@127.0.0.1>\r\n"
                f"Call-ID: standby-{local[1]}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        return await asyncio.wait_for(answer, 5)
    finally:
        transport.close()


async def eventually_bound(client: TestClient[Any, Any]) -> dict[str, int]:
    """The ports the instance bound, polled for up to 10 s (the standby retries every 0.1 s here)."""
    for _ in range(200):
        if ports(client):
            break
        await asyncio.sleep(0.05)
    return ports(client)


def test_lock_keys_differ_per_port() -> None:
    """Instances on different SIP ports never wait for each other: one lock key per port."""
    assert sip_lock_key(5060) != sip_lock_key(5061)
    assert sip_lock_key(5060) == sip_lock_key(5060)


async def test_one_instance_binds_and_the_standby_takes_over(make_client: AppFactory) -> None:
    """Two instances on one fixed SIP port: one answers SIP, the other waits; it binds once the first stops."""
    port = free_udp_and_tcp_port()
    first = await make_client(sip_port=port, sip_standby_interval=0.1)
    assert await eventually_bound(first) == {"udp": port, "tcp": port}
    second = await make_client(sip_port=port, sip_standby_interval=0.1)
    await asyncio.sleep(0.5)  # several of the standby's attempts
    assert ports(second) == {}
    assert (await options(port)).startswith(b"SIP/2.0 200")
    await first.close()
    assert await eventually_bound(second) == {"udp": port, "tcp": port}
    assert (await options(port)).startswith(b"SIP/2.0 200")


async def test_standby_off_keeps_the_old_behaviour(make_client: AppFactory) -> None:
    """With [sip] standby off, the second instance on a taken port serves without SIP at once."""
    port = free_udp_and_tcp_port()
    first = await make_client(sip_port=port, sip_standby=False)
    second = await make_client(sip_port=port, sip_standby=False)
    assert ports(first) == {"udp": port, "tcp": port}
    assert ports(second) == {}
