"""The shipped deployment files: valid for their tools, and saying the same thing as each other.

No container engine runs here, so compose.yaml is checked against the Compose specification's JSON
schema (the copy check-jsonschema ships, with its licence) and against the systemd unit: the same
settings, ports and data volume. The unit passes ``systemd-analyze verify``; the sample environment
file holds only real settings, and its internal ports are the ones the nginx stream file forwards to.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from dispatchd.config import ConfigError, load_settings
from tests.conftest import CONFIG, require_tool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "dispatchd@.service"
ENV_FILE = DEPLOY / "systemd" / "dispatchd.env"
COMPOSE = DEPLOY / "compose.yaml"
SITE = DEPLOY / "nginx" / "dispatchd.conf"
STREAM = DEPLOY / "nginx" / "dispatchd-stream.conf"


def unit_entries(path: Path = UNIT) -> list[tuple[str, str]]:
    """(key, value) of the [Service] section in order (systemd keys repeat, so no dict)."""
    entries, section = [], ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            entries.append((key, value))
    return entries


def unit_environment() -> dict[str, str]:
    env = {}
    for key, value in unit_entries():
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
    return env


def env_file(path: Path = ENV_FILE) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text())
    return doc


def instances() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if name.startswith("dispatchd")}


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_follows_the_compose_specification() -> None:
    """compose.yaml validates against the Compose specification's JSON schema."""
    result = check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_misspelt_key(tmp_path: Path) -> None:
    """The same check refuses a compose file with a misspelt service key (the validation bites)."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    environment:\n", "    enviroment:\n", 1))
    result = check_compose(broken)
    assert result.returncode != 0 and "enviroment" in result.stdout + result.stderr


def test_systemd_unit_passes_systemd_analyze_verify() -> None:
    """deploy/systemd/dispatchd@.service passes `systemd-analyze verify` without a warning."""
    tool = require_tool("systemd-analyze")
    result = subprocess.run([tool, "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_unit_restarts_is_hardened_and_takes_its_port_from_the_instance_name() -> None:
    """The unit restarts on failure, reads the environment file, drops privileges, and %i is the HTTP port."""
    entries = dict(unit_entries())
    assert entries["Restart"] == "on-failure"
    files = [v for k, v in unit_entries() if k == "EnvironmentFile"]
    assert files == ["/etc/dispatchd/dispatchd.env", "-/etc/dispatchd/dispatchd-%i.env"]
    # The port is set after the environment files, so that no file can give two instances one port.
    keys = [k if k != "Environment" else v.partition("=")[0] for k, v in unit_entries()]
    assert keys.index("DISPATCHD_HTTP_PORT") > keys.index("EnvironmentFile")
    assert unit_environment()["DISPATCHD_HTTP_PORT"] == "%i"
    for hardening in (
        "NoNewPrivileges",
        "ProtectSystem",
        "PrivateTmp",
        "ProtectHome",
        "CapabilityBoundingSet",
    ):
        assert hardening in entries
    assert entries["User"] == "dispatchd" and entries["StateDirectory"] == "dispatchd"


def test_sample_environment_holds_only_real_settings() -> None:
    """Every DISPATCHD_* of the sample environment file is a setting with a valid value."""
    env = env_file()
    try:
        settings = load_settings(CONFIG, env=env)
    except ConfigError as exc:  # pragma: no cover - the assertion says which
        pytest.fail(str(exc))
    known = {f"DISPATCHD_{s.upper()}_{k.upper()}" for s, k in _setting_names()}
    assert set(env) <= known, sorted(set(env) - known)
    assert settings.osmand.reuse_port and settings.jt808.reuse_port and settings.sip.standby


def _setting_names() -> list[tuple[str, str]]:
    import dataclasses

    from dispatchd.config import Settings

    out = []
    for section in dataclasses.fields(Settings):
        cls = section.default_factory()  # type: ignore[misc]
        out += [(section.name, f.name) for f in dataclasses.fields(cls)]
    return out


def test_compose_names_the_settings_ports_and_volumes_of_the_systemd_units() -> None:
    """compose.yaml's instances: the unit's environment file and variables, its ports 8081/8082, its data dir."""
    unit_env = {k: v for k, v in unit_environment().items() if k != "PATH"}
    services = instances()
    assert sorted(services) == ["dispatchd-8081", "dispatchd-8082"]
    for name, svc in services.items():
        port = name.rsplit("-", 1)[1]
        assert svc["env_file"] == ["systemd/dispatchd.env"]
        env = svc["environment"]
        assert set(unit_env) <= set(env), sorted(set(unit_env) - set(env))
        for key, value in unit_env.items():
            assert env[key] == value.replace("%i", port), key
        # The data volume is mounted where the unit's StateDirectory is.
        assert svc["volumes"] == [f"data:{unit_env['DISPATCHD_DATA_DIR']}"]
        assert unit_env["DISPATCHD_DATA_DIR"] == "/var/lib/" + dict(unit_entries())["StateDirectory"]
        # The stores: what the environment file leaves to the host, compose points at its services.
        assert env["DISPATCHD_DATABASE_URL"].split("@")[1] == "postgres:5432/dispatchd"
        assert env["DISPATCHD_REDIS_URL"].split("@")[1] == "redis:6379/0"
        assert svc["network_mode"] == "service:nginx"
    # The same instances are nginx's upstream servers.
    upstream = set(re.findall(r"server 127\.0\.0\.1:(\d+)", SITE.read_text()))
    assert upstream == {"8081", "8082"}


def test_nginx_publishes_the_ports_its_files_listen_on() -> None:
    """The nginx service publishes 80, 443 and the stream file's device ports, each to the same port."""
    published = set(compose()["services"]["nginx"]["ports"])
    listens = set(re.findall(r"^\s*listen (\d+)( udp)?;", STREAM.read_text(), re.M))
    expected = {"80:80", "443:443"} | {
        f"{p}:{p}/udp" if udp else (f"{p}:{p}/tcp" if p == "5060" else f"{p}:{p}") for p, udp in listens
    }
    assert published == expected


def test_internal_device_ports_match_the_stream_upstreams() -> None:
    """The ports the instances bind (environment file) are the ones nginx's stream file forwards to."""
    env = env_file()
    upstreams = set(re.findall(r"server 127\.0\.0\.1:(\d+)", STREAM.read_text()))
    assert upstreams == {env["DISPATCHD_OSMAND_PORT"], env["DISPATCHD_JT808_PORT"], env["DISPATCHD_SIP_PORT"]}
    assert env["DISPATCHD_SIP_ADVERTISE_PORT"] == "5060"


def test_dockerfile_uses_the_units_paths() -> None:
    """The image puts the code, virtual environment and data where the unit expects them."""
    text = (DEPLOY / "Dockerfile").read_text()
    unit_env = unit_environment()
    assert "WORKDIR /opt/dispatchd" in text and dict(unit_entries())["WorkingDirectory"] == "/opt/dispatchd"
    assert "/opt/dispatchd/venv/bin" in unit_env["PATH"] and "/opt/dispatchd/venv/bin" in text
    assert f"DISPATCHD_DATA_DIR={unit_env['DISPATCHD_DATA_DIR']}" in text
    assert 'CMD ["dispatchd", "serve"]' in text and "USER dispatchd" in text


def test_site_loads_in_debians_own_nginx_conf_beside_the_default_site(tmp_path: Path) -> None:
    """Debian's nginx.conf with the site in conf.d (and its default site) passes `nginx -t` without a warning."""
    nginx = require_tool("nginx")
    stock = Path("/etc/nginx/nginx.conf")
    if not stock.exists():
        pytest.skip("Debian's /etc/nginx/nginx.conf is not there")
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "dispatchd.conf").write_text(SITE.read_text())
    text = stock.read_text().replace("/etc/nginx/conf.d/*.conf", f"{confd}/*.conf")
    text = re.sub(r"^pid .*$", f"pid {tmp_path / 'nginx.pid'};", text, flags=re.M)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    result = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr
