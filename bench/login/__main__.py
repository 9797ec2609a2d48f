"""Login timing: a wrong password for a known name against an unknown name, through the HTTP API of a
``dispatchd serve`` process on real stores. The two should cost the same (a dummy hash is checked for
an unknown name), so that the answer's time does not tell which names exist.

    .venv/bin/python -m bench.login [--tries 40]

Prints the median and p90 of each and their ratio (unknown / known; 1.0 is the goal). Each try comes
from its own loopback address, so the per-address limit does not interfere, and the account delay is
set out of reach (it counts failures per name as typed, known or not, and would only add the same
wait to both).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp

from bench.fanout.common import (
    free_port,
    percentile,
    prepare_database,
    start_dispatchd,
    stop,
    stores,
    wait_ready,
)
from dispatchd.store import users


async def _try(port: int, name: str, source: str) -> float:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        async with http.post(
            f"http://127.0.0.1:{port}/api/v1/auth/login", json={"username": name, "password": "wrong guess"}
        ) as r:
            await r.read()
            assert r.status == 401, r.status
        return time.perf_counter() - started


async def main(tries: int) -> None:
    with stores() as (db, rd, tmp):
        conn = await prepare_database(db)
        await users.create_user(conn, "bench-known", users.hash_password("right"), "duty_officer", "330381")
        await conn.close()
        port = free_port()
        proc = start_dispatchd(db, rd, tmp / "data", port, auth_account_free_failures="1000")
        try:
            await wait_ready(port, proc)
            known: list[float] = []
            unknown: list[float] = []
            for i in range(tries):
                source = f"127.0.{(i // 250) + 1}.{(i % 250) + 1}"
                known.append(await _try(port, "bench-known", source))
                unknown.append(await _try(port, f"bench-nobody-{i}", source))
        finally:
            stop(proc)
    k, u = statistics.median(known), statistics.median(unknown)
    print(f"login, wrong password, {tries} tries each (ms):")
    print(f"  known name    median {k * 1000:7.1f}  p90 {percentile(known, 0.9) * 1000:7.1f}")
    print(f"  unknown name  median {u * 1000:7.1f}  p90 {percentile(unknown, 0.9) * 1000:7.1f}")
    print(f"  ratio unknown / known (median): {u / k:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=40)
    asyncio.run(main(parser.parse_args().tries))
