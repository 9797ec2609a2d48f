"""The ``dispatchd`` command: serve, dev, migrate, check-config, backup, restore, user add, apikey add."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import secrets
import sys
import tarfile
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path

import asyncpg
import structlog

from dispatchd import __version__, http_server
from dispatchd.clock import SystemClock
from dispatchd.config import ConfigError, Settings, describe, load_settings, summary
from dispatchd.domain.hotlines import load_hotlines
from dispatchd.domain.orgs import load_org_tree
from dispatchd.domain.plans import load_plans
from dispatchd.domain.taxonomy import load_taxonomy
from dispatchd.embedded import EmbeddedStores
from dispatchd.logs import configure_logging
from dispatchd.store import apikeys, backup, users
from dispatchd.store.db import init_connection
from dispatchd.store.migrate import migrate
from dispatchd.store.orgs import sync_org_tree

log = structlog.get_logger("dispatchd")
EXIT_CONFIG = 2


def _config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    if os.environ.get("DISPATCHD_CONFIG"):
        return Path(os.environ["DISPATCHD_CONFIG"])
    default = Path("config/dispatchd.toml")
    return default if default.exists() else None


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return load_settings(_config_path(args.config), None, **overrides)


def _validate_config_files(settings: Settings) -> None:
    """Load what the daemon loads at start, so bad files fail here with the file named."""
    for name, path in (
        ("paths.orgs", settings.paths.orgs),
        ("paths.taxonomy", settings.paths.taxonomy),
        ("paths.hotlines", settings.paths.hotlines),
    ):
        if not path.exists():
            raise ConfigError(name, str(path), "does not exist")
    try:
        tree = load_org_tree(settings.paths.orgs)
        taxonomy = load_taxonomy(settings.paths.taxonomy)
        load_hotlines(settings.paths.hotlines, taxonomy)
        load_plans(settings.paths.plans, tree, taxonomy)
    except ValueError as exc:
        raise ConfigError("config files", "…", str(exc)) from None


@contextlib.asynccontextmanager
async def store_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A migrated database with the organisation tree loaded; embedded servers started if needed
    and stopped again afterwards when this command started them."""
    stores = None
    url = settings.database.url
    if settings.embedded_database:
        stores = EmbeddedStores.for_data_dir(settings.data.dir)
        await asyncio.to_thread(stores.start, True, False)
        url = stores.postgres.url
    try:
        conn = await asyncpg.connect(url)
        try:
            await init_connection(conn)
            await migrate(conn)
            await sync_org_tree(conn, load_org_tree(settings.paths.orgs))
            yield conn
        finally:
            await conn.close()
    finally:
        if stores is not None:
            await asyncio.to_thread(stores.stop_started)


# The cyclic garbage collector's first-generation threshold while serving (CPython's default: 700).
GC_THRESHOLD = (10_000, 10, 10)


def tune_gc() -> None:
    """Keep the cyclic garbage collector from costing a fifth of the daemon's time under load.

    With CPython's defaults, thousands of fixes a second (each a few objects that live until the next
    batched write) trigger a collection every few hundred allocations and promote half-second-old
    objects into the oldest generation, so full collections of the whole heap run every second or
    two and stop the event loop for hundreds of milliseconds (measured with ``bench.gps``: a sixth to
    a quarter of the process's time). Everything built at start-up (modules, configuration, the org
    tree) is frozen out of collection, and the youngest generation is collected every 10,000
    allocations, by which time a batch's objects are freed by reference counting.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    log.debug("gc_tuned", frozen=gc.get_freeze_count(), threshold=GC_THRESHOLD)


def _run_daemon(settings: Settings, dev: bool) -> int:
    # One line with the version and the effective configuration (secrets masked) before anything starts.
    log.info("starting", version=__version__, command="dev" if dev else "serve", **summary(settings))
    try:
        asyncio.run(http_server.serve(settings, demo_accounts=dev, after_start=tune_gc))
    except OSError as exc:
        log.error("cannot_serve", error=str(exc))
        return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.embedded_database or settings.embedded_redis:
        raise ConfigError(
            "DISPATCHD_DATABASE_URL/DISPATCHD_REDIS_URL",
            "",
            "serve needs both URLs of external stores; use `dispatchd dev` for embedded ones",
        )
    _validate_config_files(settings)
    return _run_daemon(settings, dev=False)


def cmd_dev(args: argparse.Namespace) -> int:
    # dev turns the demo feed on unless the environment says otherwise.
    settings = (
        _settings(args) if "DISPATCHD_DEMO_ENABLED" in os.environ else _settings(args, demo_enabled=True)
    )
    _validate_config_files(settings)
    return _run_daemon(settings, dev=True)


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> None:
        async with store_connection(settings) as conn:
            rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
            log.info("migrated", versions=[f"{r['version']:04d}_{r['name']}" for r in rows])

    asyncio.run(run())
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _validate_config_files(settings)
    print(json.dumps({"ok": True, "settings": describe(settings)}, ensure_ascii=False, indent=2))
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:

    settings = _settings(args)
    password = args.password or secrets.token_urlsafe(12)

    async def run() -> int:
        async with store_connection(settings) as conn:
            try:
                user = await users.create_user(
                    conn,
                    args.username,
                    users.hash_password(password),
                    args.role,
                    args.org,
                    args.department,
                    args.name or "",
                )
            except users.UserError as exc:
                print(f"dispatchd: {exc}", file=sys.stderr)
                return 1
        log.info("user_created", username=user.username, role=user.role, org=user.org, id=user.id)
        if not args.password:
            print(f"password for {user.username}: {password}", file=sys.stderr)
        return 0

    return asyncio.run(run())


def cmd_apikey_add(args: argparse.Namespace) -> int:

    settings = _settings(args)

    async def run() -> int:
        async with store_connection(settings) as conn:
            try:
                key, key_id = await apikeys.create_api_key(conn, args.name, args.org)
            except ValueError as exc:
                print(f"dispatchd: {exc}", file=sys.stderr)
                return 1
        log.info("apikey_created", name=args.name, org=args.org, id=key_id)
        print(key)
        return 0

    return asyncio.run(run())


@contextlib.asynccontextmanager
async def database_url(settings: Settings) -> AsyncIterator[str]:
    """The database's URL, with the embedded server started for the command if it is the one used
    (and stopped again afterwards when this command started it). Nothing is migrated."""
    stores = None
    url = settings.database.url
    if settings.embedded_database:
        stores = EmbeddedStores.for_data_dir(settings.data.dir)
        await asyncio.to_thread(stores.start, True, False)
        url = stores.postgres.url
    try:
        yield url
    finally:
        if stores is not None:
            await asyncio.to_thread(stores.stop_started)


def _backup_name(now: datetime) -> Path:
    return Path(f"dispatchd-backup-{now.strftime('%Y%m%dT%H%M%SZ')}.tar")


def cmd_backup(args: argparse.Namespace) -> int:
    """pg_dump of the database and a copy of the media and recordings, in one tar file."""
    settings = _settings(args)
    now = SystemClock().now()
    out = Path(args.output) if args.output else _backup_name(now)

    async def run() -> int:
        async with database_url(settings) as url:
            conn = await asyncpg.connect(url)
            try:
                major = int(await conn.fetchval("SHOW server_version_num")) // 10000
                schema = await conn.fetchval("SELECT max(version) FROM schema_migrations") or 0
            finally:
                await conn.close()
            manifest = await asyncio.to_thread(
                backup.backup,
                url,
                settings.data.dir,
                out,
                server_major=major,
                schema_version=int(schema),
                version=__version__,
                now=now,
            )
        log.info("backup_written", path=str(out), bytes=out.stat().st_size, **manifest)
        print(out)
        return 0

    try:
        return asyncio.run(run())
    except backup.BackupError as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return 1


def cmd_restore(args: argparse.Namespace) -> int:
    """Load a backup into an empty database and put its files back under the data directory."""
    settings = _settings(args)
    src = Path(args.file)

    async def run() -> int:
        async with database_url(settings) as url:
            conn = await asyncpg.connect(url)
            try:
                major = int(await conn.fetchval("SHOW server_version_num")) // 10000
                tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            finally:
                await conn.close()
            if tables:
                print(
                    f"dispatchd: the database already has {tables} tables; restore only into an empty database",
                    file=sys.stderr,
                )
                return 1
            manifest = await asyncio.to_thread(backup.restore, url, settings.data.dir, src, server_major=major)
        log.info("backup_restored", path=str(src), **manifest)
        return 0

    try:
        return asyncio.run(run())
    except (backup.BackupError, OSError, tarfile.TarError) as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dispatchd", description="dispatchd — command-centre dispatch daemon")
    p.add_argument("--config", help="TOML settings file (default: config/dispatchd.toml if present)")
    p.add_argument("--version", action="version", version=f"dispatchd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve against external PostgreSQL and Redis").set_defaults(func=cmd_serve)
    sub.add_parser(
        "dev", help="embedded PostgreSQL and Redis under the data dir, demo data and feed"
    ).set_defaults(func=cmd_dev)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser(
        "check-config", help="validate settings and config files, print the effective settings"
    ).set_defaults(func=cmd_check_config)
    user = sub.add_parser("user", help="manage accounts").add_subparsers(dest="user_command", required=True)
    add = user.add_parser("add", help="create an account")
    add.add_argument("--username", required=True)
    add.add_argument("--password", help="omit to generate one (printed once)")
    add.add_argument("--role", required=True)
    add.add_argument("--org", required=True, help="home unit code")
    add.add_argument("--department", help="department code (department handlers)")
    add.add_argument("--name", help="display name")
    add.set_defaults(func=cmd_user_add)
    bk = sub.add_parser("backup", help="pg_dump of the database plus the media and recordings, one tar file")
    bk.add_argument("--output", help="the tar file to write (default: dispatchd-backup-<UTC time>.tar)")
    bk.set_defaults(func=cmd_backup)
    rs = sub.add_parser("restore", help="load a backup into an empty database and put its files back")
    rs.add_argument("file", help="a tar file written by dispatchd backup")
    rs.set_defaults(func=cmd_restore)
    apikey = sub.add_parser("apikey", help="manage Open311 API keys").add_subparsers(
        dest="apikey_command", required=True
    )
    akadd = apikey.add_parser("add", help="create an Open311 API key (printed once)")
    akadd.add_argument("--name", required=True)
    akadd.add_argument("--org", required=True)
    akadd.set_defaults(func=cmd_apikey_add)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", module="platformdirs")
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        pre = load_settings(_config_path(args.config))
        configure_logging(pre.log.level, pre.log.format)
        return func(args)
    except ConfigError as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
