"""Warnings in: a CAP alert becomes a warning (entity ``warning``) over the grids its area covers;
the grid workers and leaders responsible for them are asked to acknowledge (叫应); every plan whose
trigger names the warning's event type starts for each covered township."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from dispatchd.context import Context
from dispatchd.domain import plans as rules
from dispatchd.errors import DomainError, invalid
from dispatchd.plans import service
from dispatchd.plans.cap import Alert, CapError, parse
from dispatchd.plans.service import add_notice, notices_of, wake_notices
from dispatchd.store.changes import Actor, Change, record
from dispatchd.store.orgs import unit_path
from dispatchd.store.outage import log_unless_outage
from dispatchd.tasks import raise_if_cancelling

log = structlog.get_logger("dispatchd.plans.warnings")


def warning_json(row: Mapping[str, Any], tree: Any = None) -> dict[str, Any]:
    def iso(v: Any) -> str | None:
        return v.isoformat() if v is not None else None

    units = list(row["units"])
    return {
        "id": row["id"],
        "identifier": row["identifier"],
        "sender": row["sender"],
        "sent": iso(row["sent"]),
        "msg_type": row["msg_type"],
        "event": row["event"],
        "event_code": row["event_code"],
        "severity": row["severity"],
        "urgency": row["urgency"],
        "certainty": row["certainty"],
        "headline": row["headline"],
        "description": row["description"],
        "area_desc": row["area_desc"],
        "areas": row["areas"],
        "grids": list(row["grids"]),
        "units": [
            {"code": u, "name": tree.get(u).name if tree is not None and u in tree else u,
             "name_en": tree.get(u).name_en if tree is not None and u in tree else u}
            for u in units
        ],
        "state": row["state"],
        "expires": iso(row["expires"]),
        "received_at": iso(row["received_at"]),
        "version": row["version"],
    }


def _covered(ctx: Context, alert: Alert) -> list[str]:
    tree = ctx.orgs
    grids = set(rules.covered_grids(tree, alert.polygons, alert.circles))
    for code in alert.geocodes:
        if code in tree:
            grids |= {u.code for u in tree.subtree(code) if u.level == "grid"}
    return sorted(grids)


def _common_path(ctx: Context, units: list[str]) -> list[str]:
    """The path of the lowest unit above every covered township (their county, usually)."""
    paths = [unit_path(ctx.orgs, u) for u in units]
    common: list[str] = []
    for step in zip(*paths, strict=False):
        if all(s == step[0] for s in step):
            common.append(step[0])
        else:
            break
    return common


async def receive(ctx: Context, document: bytes, actor: Actor, scope: str | None = None) -> dict[str, Any]:
    """Take a CAP document: record the warning, ask the covered grids' people to acknowledge, start
    the plans it triggers. Answers what it covered (units, grids), the notices and activations.
    ``scope``: the unit whose subtree the sender may warn (the poster's, the API key's); None: all."""
    if len(document) > ctx.settings.plans.cap_max_kb * 1024:
        raise invalid({"document": ("文档过大", "the document is too large")})
    try:
        alert = parse(document)
    except CapError as exc:
        raise invalid({exc.field: (exc.message_zh, exc.message_en)}) from None
    now, tree = ctx.clock.now(), ctx.orgs
    grids = _covered(ctx, alert)
    if scope is not None:
        grids = [g for g in grids if tree.is_within(g, scope)]
    townships = rules.covered_units(tree, grids, "township")
    path = _common_path(ctx, townships) if townships else []
    async with ctx.pool.acquire() as conn, conn.transaction():
        if alert.msg_type == "Cancel":
            cancelled = []
            for sender, identifier in alert.references or ((alert.sender, alert.identifier),):
                row = await conn.fetchrow(
                    "SELECT * FROM warnings WHERE sender = $1 AND identifier = $2 FOR UPDATE", sender, identifier
                )
                if row is None or row["state"] != "active":
                    continue
                # Its open notices are written below: locked before the first recorded change.
                await conn.execute(
                    "SELECT 1 FROM plan_notices WHERE warning_id = $1 AND state IN ('sent', 'delivered') ORDER BY id FOR UPDATE",
                    row["id"],
                )
                row = await conn.fetchrow(
                    "UPDATE warnings SET state = 'cancelled', version = version + 1 WHERE id = $1 RETURNING *", row["id"]
                )
                await record(conn, Change.of("warning", row, "cancelled", warning_json(row, tree), actor, now, from_state="active"))
                notices = await conn.fetch(
                    "UPDATE plan_notices SET state = 'cancelled', escalate_at = NULL, updated_at = $2, version = version + 1"
                    " WHERE warning_id = $1 AND state IN ('sent', 'delivered') RETURNING *",
                    row["id"],
                    now,
                )
                for n in notices:
                    await record(conn, Change.of("plan_notice", n, "cancelled", service.notice_json(n), actor, now, detail={"reason": "warning_cancelled"}))
                cancelled.append(row["id"])
            log.info("warning_cancelled", identifier=alert.identifier, warnings=cancelled)
            return {"cancelled": cancelled, "units": [], "grids": [], "notices": 0, "activations": []}
        if not grids:
            raise invalid({"area": ("警报区域未覆盖您辖区内的任何网格", "the alert's area covers no grid of this system within your jurisdiction")})
        previous = None
        for sender, identifier in alert.references:
            previous = await conn.fetchrow(
                "SELECT * FROM warnings WHERE sender = $1 AND identifier = $2 AND state = 'active' FOR UPDATE", sender, identifier
            )
            if previous is not None:
                break
        row = await conn.fetchrow(
            "INSERT INTO warnings (identifier, sender, sent, msg_type, event, event_code, severity, urgency, certainty,"
            " headline, description, area_desc, areas, grids, units, org_path, state, expires, received_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'active', $17, $18)"
            " ON CONFLICT (sender, identifier) DO NOTHING RETURNING *",
            alert.identifier,
            alert.sender,
            alert.sent,
            alert.msg_type,
            alert.event,
            alert.event_codes[0] if alert.event_codes else None,
            alert.severity,
            alert.urgency,
            alert.certainty,
            alert.headline,
            (alert.description or "")[:4000] or None,
            alert.area_desc,
            alert.areas_json(),
            grids,
            townships,
            path,
            alert.expires,
            now,
        )
        if row is None:
            existing = await conn.fetchrow(
                "SELECT * FROM warnings WHERE sender = $1 AND identifier = $2", alert.sender, alert.identifier
            )
            return {**warning_json(existing, tree), "duplicate": True, "notices": await notices_of(conn, "warning_id", existing["id"]), "activations": []}
        if previous is not None:
            old = await conn.fetchrow(
                "UPDATE warnings SET state = 'expired', version = version + 1 WHERE id = $1 RETURNING *", previous["id"]
            )
            await record(conn, Change.of("warning", old, "superseded", warning_json(old, tree), actor, now, from_state="active", detail={"by": row["id"]}))
        await record(conn, Change.of("warning", row, "received", warning_json(row, tree), actor, now, detail={"grids": len(grids)}))
        notified = await _ask_acknowledgement(ctx, conn, row, alert, grids, townships, actor)
    log.info("warning_received", warning_id=row["id"], warning_event=alert.event, grids=len(grids), units=townships, notices=notified)
    activations = await _start_plans(ctx, row["id"], alert, townships)
    wake_notices(ctx)
    async with ctx.pool.acquire() as conn:
        notices = await notices_of(conn, "warning_id", row["id"])
    return {**warning_json(row, tree), "notices": notices, "activations": activations}


async def _ask_acknowledgement(
    ctx: Context, conn: Any, row: Mapping[str, Any], alert: Alert, grids: list[str], townships: list[str], actor: Actor
) -> int:
    """A notice to every grid worker of the covered grids and every leader of their communities and
    townships: they must acknowledge (叫应)."""
    tree = ctx.orgs
    communities = sorted({c for g in grids if (c := tree.ancestor_at(g, "community")) is not None})
    people = await conn.fetch(
        "SELECT id, username, display_name, role, org_code, department_code FROM users WHERE NOT disabled AND ("
        " (role = 'grid_worker' AND org_code = ANY($1::text[])) OR (role = 'leader' AND org_code = ANY($2::text[])))"
        " ORDER BY id LIMIT 5000",
        grids,
        communities + townships,
    )
    text = f"【{alert.event}预警·请叫应】{alert.headline or alert.event}"
    via = ["console", "sms"]
    for p in people:
        await add_notice(
            ctx,
            conn,
            person=p,
            label=p["display_name"] or p["username"],
            via=via,
            text=text[:500],
            actor=actor,
            warning_id=row["id"],
            fallback_org=p["org_code"],
        )
    return len(people)


async def _start_plans(ctx: Context, warning_id: int, alert: Alert, townships: list[str]) -> list[dict[str, Any]]:
    """Every plan whose trigger names the event type, for each covered township within its unit."""
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT p.id, p.org_code, v.body FROM plans p JOIN plan_versions v ON v.plan_id = p.id AND v.version = p.current_version"
        )
    started: list[dict[str, Any]] = []
    for r in rows:
        plan = rules.parse_plan(r["body"])
        if not any(rules.matches_warning(plan, alert.event, code) for code in (*alert.event_codes, None)):
            continue
        for town in townships:
            if not ctx.orgs.is_within(town, plan.org):
                continue
            try:
                act = await service.activate_on_area(
                    ctx,
                    town,
                    r["id"],
                    None,
                    None,
                    warning_id=warning_id,
                    description=f"{alert.headline or alert.event}（{ctx.orgs.get(town).name}）",
                )
            except DomainError as exc:
                log.info("warning_plan_not_started", plan_id=r["id"], unit=town, reason=exc.code)
                continue
            started.append({"id": act["id"], "plan_id": r["id"], "unit": town, "incident_id": act["incident_id"]})
    return started


async def board_section(ctx: Context, codes: frozenset[str]) -> Any:
    """Active warnings of the jurisdiction, with their area and who has acknowledged."""
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM warnings WHERE state = 'active' AND (org_path && $1::text[] OR units && $1::text[])"
            " ORDER BY id DESC LIMIT 20",
            list(codes),
        )
        out = []
        for r in rows:
            notices = await notices_of(conn, "warning_id", r["id"])
            out.append(
                {
                    **warning_json(r, ctx.orgs),
                    "acks": {
                        "asked": sum(1 for n in notices if n["user_id"] is not None and n["escalates"] is None),
                        "acknowledged": sum(1 for n in notices if n["state"] == "acknowledged"),
                        "people": [
                            {"name": n["name"], "org": n["org"], "state": n["state"], "at": n["acknowledged_at"]}
                            for n in notices
                        ],
                    },
                }
            )
        return out


async def poll_feed(ctx: Context) -> None:
    """Poll ``[plans] cap_feed_url`` (one alert, or an Atom/RSS feed whose links are alerts)."""
    s = ctx.settings.plans
    seen: set[str] = set()
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                await poll_once(ctx, session, s.cap_feed_url, seen)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                log_unless_outage(ctx, exc, "cap_poll_failed")
            await asyncio.sleep(s.cap_poll_interval)


async def poll_once(ctx: Context, session: aiohttp.ClientSession, url: str, seen: set[str]) -> None:
    """One poll of the feed: an alert document is taken as it is; a feed's links not ``seen`` yet are
    fetched and taken (a refused alert is logged, not fatal)."""
    limit = ctx.settings.plans.cap_max_kb * 1024
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
        body = await resp.content.read(limit + 1)
    if b"<alert" in body[:2000]:
        docs = [body]
    else:
        links = _feed_links(body)
        docs = []
        for link in links:
            if link in seen:
                continue
            seen.add(link)
            async with session.get(link, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                docs.append(await resp.content.read(limit + 1))
    for doc in docs:
        try:
            await receive(ctx, doc, Actor(None, "cap_feed"))
        except DomainError as exc:
            log.info("cap_feed_alert_refused", code=exc.code, reason=exc.message_en)


def _feed_links(body: bytes) -> list[str]:
    """The alert links of an Atom or RSS feed (parsed with defusedxml)."""
    from defusedxml import ElementTree as SafeTree  # the feed is untrusted, as the alerts are

    try:
        root = SafeTree.fromstring(body, forbid_dtd=True)
    except Exception:
        return []
    links: list[str] = []
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "link":
            href = el.get("href") or (el.text or "").strip()
            if href.startswith(("http://", "https://")) and el.get("rel") in (None, "alternate", "related"):
                links.append(href)
    return links[:100]
