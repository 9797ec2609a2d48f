"""A production-shaped deployment on loopback: Debian's nginx with the shipped site and stream files,
in front of two ``dispatchd serve`` processes that share one PostgreSQL and one Redis.

The shipped files are used as they are, with only what the contract lets a check rewrite: the
listen ports, the instances' ports, the internal device ports, and where the TLS file and the
certificate live. Each rewrite must find its text, so the test breaks when the files drift from
the contract. The certificate is made at test time (a throwaway CA-less self-signed one for
127.0.0.1) and the clients verify it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def free_port(kind: int = socket.SOCK_STREAM, both: bool = False) -> int:
    """A free loopback port (``both``: free for TCP and UDP alike, as SIP needs)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if not both:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dispatchd test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def rewrite(text: str, replacements: dict[str, str], name: str) -> str:
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"{name} no longer contains {old!r}: the deployment contract changed")
        text = text.replace(old, new)
    return text


@dataclass
class Ports:
    http: int = field(default_factory=free_port)
    https: int = field(default_factory=free_port)
    instances: tuple[int, int] = field(default_factory=lambda: (free_port(), free_port()))
    osmand: int = field(default_factory=free_port)
    jt808: int = field(default_factory=free_port)
    sip: int = field(default_factory=lambda: free_port(both=True))
    osmand_internal: int = field(default_factory=free_port)
    jt808_internal: int = field(default_factory=free_port)
    sip_internal: int = field(default_factory=lambda: free_port(both=True))


def nginx_files(directory: Path, ports: Ports, cert: Path, key: Path) -> Path:
    """Write nginx.conf and the shipped files, rewritten for this run; return nginx.conf."""
    a, b = ports.instances
    site = rewrite(
        (DEPLOY / "nginx" / "dispatchd.conf").read_text(),
        {
            "listen 80;": f"listen 127.0.0.1:{ports.http};",
            "127.0.0.1:8081": f"127.0.0.1:{a}",
            "127.0.0.1:8082": f"127.0.0.1:{b}",
            "/etc/nginx/dispatchd/tls*.conf": str(directory / "tls*.conf"),
        },
        "deploy/nginx/dispatchd.conf",
    )
    tls = rewrite(
        (DEPLOY / "nginx" / "tls.conf").read_text(),
        {
            "listen 443 ssl http2;": f"listen 127.0.0.1:{ports.https} ssl http2;",
            "/etc/dispatchd/tls/fullchain.pem": str(cert),
            "/etc/dispatchd/tls/privkey.pem": str(key),
        },
        "deploy/nginx/tls.conf",
    )
    stream = rewrite(
        (DEPLOY / "nginx" / "dispatchd-stream.conf").read_text(),
        {
            "127.0.0.1:15055": f"127.0.0.1:{ports.osmand_internal}",
            "127.0.0.1:15015": f"127.0.0.1:{ports.jt808_internal}",
            "127.0.0.1:15060": f"127.0.0.1:{ports.sip_internal}",
            "listen 5055;": f"listen 127.0.0.1:{ports.osmand};",
            "listen 5015;": f"listen 127.0.0.1:{ports.jt808};",
            "listen 5060;": f"listen 127.0.0.1:{ports.sip};",
            "listen 5060 udp;": f"listen 127.0.0.1:{ports.sip} udp;",
        },
        "deploy/nginx/dispatchd-stream.conf",
    )
    (directory / "dispatchd.conf").write_text(site)
    (directory / "tls.conf").write_text(tls)
    (directory / "dispatchd-stream.conf").write_text(stream)
    tmp = directory / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o777)
    conf = directory / "nginx.conf"
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""load_module {STREAM_MODULE};
daemon off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;
events {{ worker_connections 4096; }}
http {{
    access_log {directory / "access.log"};
{temp_paths}
    include {directory / "dispatchd.conf"};
}}
stream {{
    include {directory / "dispatchd-stream.conf"};
}}
"""
    )
    return conf


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def check_nginx(conf: Path) -> subprocess.CompletedProcess[str]:
    binary = nginx_binary()
    assert binary is not None
    return subprocess.run(
        [binary, "-t", "-p", str(conf.parent), "-c", str(conf)], capture_output=True, text=True, timeout=30
    )


@dataclass
class Instance:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatchd.cli", "serve"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, wait: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Cluster:
    directory: Path
    ports: Ports
    cert: Path
    instances: list[Instance]
    nginx: subprocess.Popen[bytes] | None = None

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.ports.https}"

    @property
    def wss(self) -> str:
        return f"wss://127.0.0.1:{self.ports.https}"

    def instance_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.instances[i].port}"

    def stop(self) -> None:
        for inst in self.instances:
            inst.stop()
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.terminate()
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()


def instance_env(ports: Ports, port: int, data_dir: Path, db: str, redis: str) -> dict[str, str]:
    """The settings deploy/systemd/dispatchd.env gives an instance, on this run's ports."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
    return {
        **base,
        "DISPATCHD_DATABASE_URL": db,
        "DISPATCHD_REDIS_URL": redis,
        "DISPATCHD_HTTP_HOST": "127.0.0.1",
        "DISPATCHD_HTTP_PORT": str(port),
        "DISPATCHD_DATA_DIR": str(data_dir),
        "DISPATCHD_LOG_FORMAT": "json",
        "DISPATCHD_LOG_LEVEL": "info",
        "DISPATCHD_OSMAND_HOST": "127.0.0.1",
        "DISPATCHD_OSMAND_PORT": str(ports.osmand_internal),
        "DISPATCHD_OSMAND_REUSE_PORT": "true",
        "DISPATCHD_JT808_HOST": "127.0.0.1",
        "DISPATCHD_JT808_PORT": str(ports.jt808_internal),
        "DISPATCHD_JT808_REUSE_PORT": "true",
        "DISPATCHD_SIP_HOST": "127.0.0.1",
        "DISPATCHD_SIP_PORT": str(ports.sip_internal),
        "DISPATCHD_SIP_ADVERTISE_PORT": str(ports.sip),
        "DISPATCHD_SIP_STANDBY": "true",
        "DISPATCHD_SIP_STANDBY_INTERVAL": "0.2",
        "DISPATCHD_LIVE_RELAY_ELECTION_INTERVAL": "0.2",
        "DISPATCHD_LIVE_HEARTBEAT_INTERVAL": "2",
        "DISPATCHD_HTTP_SHUTDOWN_TIMEOUT": "2",
    }


def wait_port(port: int, timeout: float, alive: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"process exited with {alive.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


async def wait_ready(url: str, inst: Instance, within: float = 90) -> None:
    """Until the instance answers /readyz with 200 (its stores are open and migrated)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with aiohttp.ClientSession() as http:
        while loop.time() < deadline:
            if not inst.running:
                raise RuntimeError(f"{inst.name} exited:\n{inst.log_tail()}")
            try:
                async with http.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{inst.name} not ready:\n{inst.log_tail()}")


async def start_cluster(directory: Path, db: str, redis: str) -> Cluster:
    ports = Ports()
    cert, key = make_certificate(directory)
    data_dir = directory / "data"
    data_dir.mkdir()
    instances = [
        Instance(
            f"instance-{i + 1}",
            port,
            instance_env(ports, port, data_dir, db, redis),
            directory / f"i{i + 1}.log",
        )
        for i, port in enumerate(ports.instances)
    ]
    cluster = Cluster(directory, ports, cert, instances)
    conf = nginx_files(directory, ports, cert, key)
    checked = check_nginx(conf)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx -t refused the shipped site:\n{checked.stderr}")
    try:
        # One after the other: the first migrates, the second finds the schema done.
        for inst, port in zip(instances, ports.instances, strict=True):
            inst.start()
            await wait_ready(f"http://127.0.0.1:{port}", inst)
        binary = nginx_binary()
        assert binary is not None
        cluster.nginx = await asyncio.to_thread(
            subprocess.Popen,
            [binary, "-p", str(directory), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.to_thread(wait_port, ports.https, 20, cluster.nginx)
    except BaseException:
        cluster.stop()
        raise
    return cluster
