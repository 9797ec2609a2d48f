"""The dispatchd command as a real process: config errors, embedded stores, dev, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatchd.cli", *args],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


@pytest.fixture
def data_env() -> Iterator[dict[str, str]]:
    tmp = tempfile.mkdtemp(prefix="dispatchd-cli-")
    os.chmod(tmp, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
    env["DISPATCHD_DATA_DIR"] = tmp
    # Free ports for the position servers, so a running daemon or a parallel run cannot collide.
    env["DISPATCHD_OSMAND_PORT"] = "0"
    env["DISPATCHD_JT808_PORT"] = "0"
    yield env
    _kill_servers_of(tmp)
    subprocess.run(["rm", "-rf", tmp], check=False)


def _servers_of(data_dir: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if data_dir in cmd and ("postgres" in cmd or "redis-server" in cmd):
            found.append(p)
    return found


def _kill_servers_of(data_dir: str) -> None:
    for p in _servers_of(data_dir):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_config_exits_2_with_one_line(data_env: dict[str, str]) -> None:
    """A bad setting gives exit status 2 and one stderr line naming the key and what is allowed."""
    env = {**data_env, "DISPATCHD_HTTP_PORT": "not-a-port"}
    r = _run(["check-config"], env, timeout=30)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISPATCHD_HTTP_PORT" in lines[0] and "integer" in lines[0]


def test_check_config_prints_effective_settings(data_env: dict[str, str]) -> None:
    """check-config validates the config files and prints the settings as JSON."""
    r = _run(["check-config"], data_env, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["settings"]["http"]["port"] == 8080


def test_user_add_reaches_embedded_store_without_daemon(data_env: dict[str, str]) -> None:
    """user add starts the embedded PostgreSQL, creates the user, and stops it again; a duplicate fails."""
    args = [
        "user",
        "add",
        "--username",
        "wang",
        "--password",
        "pw-123456",
        "--role",
        "duty_officer",
        "--org",
        "330381",
    ]
    r = _run(args, data_env)
    assert r.returncode == 0, r.stderr
    assert not _servers_of(data_env["DISPATCHD_DATA_DIR"])
    r = _run(args, data_env)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = _run(
        ["user", "add", "--username", "x", "--password", "p", "--role", "king", "--org", "330381"], data_env
    )
    assert r.returncode == 1 and "unknown role" in r.stderr


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _start_dev(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dispatchd.cli", "dev"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_ready(port: int, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dev exited early: {proc.stderr.read() if proc.stderr else ''}")
        try:
            status, body = _get(f"http://127.0.0.1:{port}/readyz")
            if status == 200:
                assert body == {"postgres": "ok", "redis": "ok"}
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("dev did not become ready")


def _stop(proc: subprocess.Popen[str]) -> tuple[int, float, str, str]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    return proc.returncode, time.monotonic() - started, out, err


def test_dev_serves_stops_cleanly_and_keeps_data(data_env: dict[str, str]) -> None:
    """dev: ready with both stores, JSON-only stdout, SIGTERM exits 0 within 10 s leaving no server
    process of the data dir, and a second start keeps the users created by the first."""
    port = _free_port()
    env = {**data_env, "DISPATCHD_HTTP_PORT": str(port), "DISPATCHD_DEMO_SPEED": "1"}
    proc = _start_dev(env)
    try:
        _wait_ready(port, proc)
        status, body = _get(f"http://127.0.0.1:{port}/api/v1/orgs")
        assert status == 401 and "error" in body
        r = _run(
            [
                "user",
                "add",
                "--username",
                "zhao",
                "--password",
                "pw-zhao-1",
                "--role",
                "leader",
                "--org",
                "330381",
            ],
            env,
        )
        assert r.returncode == 0, r.stderr
        status, login = _post(
            f"http://127.0.0.1:{port}/api/v1/auth/login", {"username": "zhao", "password": "pw-zhao-1"}
        )
        assert status == 200
        status, me = _get(f"http://127.0.0.1:{port}/api/v1/auth/me", str(login["token"]))
        assert status == 200 and me["username"] == "zhao"
    finally:
        code, took, out, err = _stop(proc)
    assert code == 0, err
    assert took < 10
    for line in out.splitlines():
        json.loads(line)
    assert "demo accounts" in err
    assert not _servers_of(data_env["DISPATCHD_DATA_DIR"])

    proc = _start_dev(env)
    try:
        _wait_ready(port, proc)
        status, login = _post(
            f"http://127.0.0.1:{port}/api/v1/auth/login", {"username": "zhao", "password": "pw-zhao-1"}
        )
        assert status == 200
    finally:
        code, _, _, err = _stop(proc)
    assert code == 0
    assert "demo accounts" not in err
    assert not _servers_of(data_env["DISPATCHD_DATA_DIR"])


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    """While serving, objects from start-up are out of the collector's reach and the youngest generation
    is collected every GC_THRESHOLD[0] allocations instead of CPython's 700 (see bench.gps)."""
    import gc

    from dispatchd.cli import GC_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLD and GC_THRESHOLD[0] > before[0]
        assert gc.get_freeze_count() > 1000  # at least the imported modules' objects
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
