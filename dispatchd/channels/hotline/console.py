"""The officer's voice commands, carried out on the instance holding the call's SIP dialog.

The console's WebRTC peer must end where the caller's RTP ends, so each command runs on the
holding instance (:mod:`dispatchd.channels.hotline.remote` carries it there with its arguments):

* ``answer`` with an offer: a WebRTC leg answers the console's offer in the caller's G.711 law,
  is staged on the voice switch, and :func:`dispatchd.channels.hotline.calls.answer` then sends the
  SIP 200 and bridges them. The officer answering again the call they hold (the console reloaded)
  gets a new leg in place of the old. Without an offer the call is answered as before (a PBX desk,
  or the recording only).
* ``hold`` / resume: the caller hears music or a tone, the officer nothing.
* ``key``: an RFC 4733 key to the caller (the officer keying into a department's menu).
* ``place_callout`` / ``hangup_callout``: a call out through the trunk (回访 a reporter, a department)
  with the console's audio; the officer hears ringback until the far end answers.
* ``transfer`` to another duty officer: the caller hears music while the other console rings; the
  call keeps its record and history and is answered like any other; ``transfer_out`` to a number
  through the trunk (a department): the two SIP calls are bridged, the officer's console is free.

These sit next to ``calls`` and ``remote`` and, like them, take the service context: they reach the
SIP edge through its slot (``ctx[SIP]``) and raise :mod:`dispatchd.errors`. Each change of the call
(hold, resume, transfer) is recorded as the call's own (:func:`calls.record_event`); each change of a
call out as the call out's (:func:`dispatchd.channels.hotline.voice.callouts.record`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import structlog

from dispatchd.channels.hotline import calls
from dispatchd.channels.hotline.slots import HOTLINES, PRESENCE, SIP
from dispatchd.channels.hotline.voice import callouts, dtmf, g711, seam
from dispatchd.channels.hotline.voice.media import link
from dispatchd.channels.hotline.voice.prompts import hold_music, ringback
from dispatchd.channels.hotline.voice.switch import recording_paths
from dispatchd.channels.hotline.voice.webrtc import OfferError, OfficerLeg
from dispatchd.context import Context
from dispatchd.domain.hotlines import normalise_number
from dispatchd.errors import Invalid, conflict, invalid, not_found
from dispatchd.store.users import User, get_user

log = structlog.get_logger("dispatchd.voice")

__all__ = [
    "answer",
    "hangup_callout",
    "hold",
    "key",
    "parse_offer",
    "place_callout",
    "transfer",
    "transfer_out",
]


def parse_offer(body: Mapping[str, Any] | None) -> str | None:
    """The SDP of ``{"offer": {"type": "offer", "sdp": "…"}}``; None without an offer; 422 when malformed."""
    if not body or body.get("offer") is None:
        return None
    offer = body["offer"]
    if (
        not isinstance(offer, Mapping)
        or offer.get("type") != "offer"
        or not isinstance(offer.get("sdp"), str)
    ):
        raise invalid({"offer": ('应为 WebRTC offer {type: "offer", sdp}', 'must be a WebRTC offer {type: "offer", sdp}')})
    sdp = str(offer["sdp"])
    if not sdp.strip() or len(sdp) > 64_000:
        raise invalid({"offer": ("SDP 为空或过长", "the SDP is empty or too long")})
    return sdp


def _bad_offer(exc: Exception) -> Invalid:
    return Invalid(
        f"无法应答此 offer：{exc}",
        f"the offer cannot be answered: {exc}",
        code="bad_offer",
        fields={"offer": ("无法应答", "cannot be answered")},
    )


async def _held_here(ctx: Context, call_id: int, user: User) -> Any:
    row = await calls.get_call(ctx, call_id, user)
    if row is None:
        raise not_found("来电", "call")
    if row["source"] == "cti":
        raise conflict(
            "此来电由中心自有交换机接听", "this call is answered on the centre's own PBX", code="cti_call"
        )
    if row["instance_id"] != ctx.instance_id:
        raise calls.RemoteCall(row["instance_id"] or "")
    edge = ctx[SIP].edge
    if edge is None:
        raise conflict("本实例未接入 SIP", "this instance takes no SIP calls", code="sip_unavailable")
    return row, edge


async def answer(ctx: Context, call_id: int, user: User, offer: str | None = None) -> dict[str, Any]:
    """Answer the call; with ``offer`` (the console's SDP) bridge the caller to that WebRTC peer and
    return the call with ``answer: {type: "answer", sdp}``."""
    if offer is None:
        return await calls.answer(ctx, call_id, user)
    row, edge = await _held_here(ctx, call_id, user)
    key = row["external_id"]
    media = edge.voice.get(key)
    if media is not None:
        codec = media.codec
    else:
        caller_offer = edge.caller_offer(key)
        chosen = caller_offer.audio_codec() if caller_offer is not None else None
        codec = chosen[0] if chosen is not None else 0
    reconnect = row["state"] == "answered" and row["agent_user_id"] == user.id
    if row["state"] not in calls.WAITING and not reconnect:
        raise calls.state_conflict(row, ctx)
    try:
        leg = await OfficerLeg.answer(offer, codec, seam.configuration(ctx.settings.video))
    except OfferError as exc:
        raise _bad_offer(exc) from None
    leg.on_message = lambda message: _from_console(ctx, key, message)
    if reconnect:
        media = edge.voice.get(key)
        if media is None:
            await leg.close()
            raise conflict("来电已挂断", "the caller has already hung up", code="call_gone")
        replaced = media.attach(leg)
        if replaced is not None:
            await replaced.close()
        call = calls.call_json(ctx, row)
    else:
        edge.voice.stage(key, leg)
        try:
            call = await calls.answer(ctx, call_id, user)
        except BaseException:
            await edge.voice.unstage(key, leg)
            raise
    media = edge.voice.get(key)
    if media is not None:
        media.on_far_gone = lambda: _officer_gone(ctx, key)
    log.info("call_bridged", call_id=call_id, officer=user.username, codec=codec, wire=leg.wire_codec)
    return {**call, "answer": {"type": "answer", "sdp": leg.answer_sdp}}


def _officer_gone(ctx: Context, key: str) -> None:
    """The console's peer dropped (a reload, a network change): the caller waits on hold for it."""
    edge = ctx[SIP].edge
    media = edge.voice.get(key) if edge is not None else None
    if edge is not None and media is not None:
        leg = media.detach(hold_music=hold_music(media.codec))
        if leg is not None:
            edge.later(leg.close())


def _from_console(ctx: Context, key: str, message: Mapping[str, Any]) -> None:
    """A message on the console's data channel: ``{"type": "dtmf", "key": "1"}`` keys to the caller."""
    edge = ctx[SIP].edge
    media = edge.voice.get(key) if edge is not None else None
    if media is None:
        return
    pressed = message.get("key")
    if (
        message.get("type") == "dtmf"
        and isinstance(pressed, str)
        and len(pressed) == 1
        and pressed.upper() in dtmf.DIGITS
    ):
        media.send_key(pressed)


async def hold(ctx: Context, call_id: int, user: User, on: bool = True) -> dict[str, Any]:
    """Put the answered call on hold (the caller hears music, the officer nothing) or take it off."""
    row, edge = await _held_here(ctx, call_id, user)
    if row["state"] != "answered" or row["agent_user_id"] != user.id:
        raise calls.state_conflict(row, ctx)
    media = edge.voice.get(row["external_id"])
    if media is None or media.far is None:
        raise conflict("此来电未在控制台接通", "this call is not connected to a console", code="not_bridged")
    media.hold(on, hold_music(media.codec))
    call = await calls.record_event(ctx, call_id, user, "hold" if on else "resume", {})
    return {**call, "on_hold": media.mode == "hold"}


async def key(ctx: Context, call_id: int, user: User, keys: str = "") -> dict[str, Any]:
    """Send DTMF keys to the caller's side (each an RFC 4733 event train)."""
    row, edge = await _held_here(ctx, call_id, user)
    if row["state"] != "answered":
        raise calls.state_conflict(row, ctx)
    media = edge.voice.get(row["external_id"])
    if media is None:
        raise conflict("此来电未在控制台接通", "this call is not connected to a console", code="not_bridged")
    for pressed in keys:
        media.send_key(pressed)
    return calls.call_json(ctx, row)


async def transfer(ctx: Context, call_id: int, user: User, to_user: int = 0) -> dict[str, Any]:
    """Give the answered call to another duty officer: the caller hears music, the other officer's
    console rings (state ``ringing``), and they answer it as any call, with its history."""
    row, edge = await _held_here(ctx, call_id, user)
    if row["state"] != "answered" or row["agent_user_id"] != user.id:
        raise calls.state_conflict(row, ctx)
    if to_user == user.id:
        raise invalid({"user_id": ("不能转给自己", "cannot transfer a call to yourself")})
    async with ctx.pool.acquire() as conn:
        target = await get_user(conn, to_user)
    tree = ctx.orgs
    if (
        target is None
        or target.role != "duty_officer"
        or target.org not in tree
        or not tree.is_within(row["org_code"], target.org)
    ):
        raise Invalid(
            "接转人须为本辖区的值班员",
            "the call can go only to a duty officer whose jurisdiction covers it",
            fields={"user_id": ("不是本辖区的值班员", "not a duty officer of the jurisdiction")},
        )
    media = edge.voice.get(row["external_id"])
    if media is not None:
        leg = media.detach(hold_music=hold_music(media.codec))
        if leg is not None:
            leg.notify({"type": "transferred", "to": target.username})
            edge.later(leg.close())
    deadline = ctx.clock.now() + timedelta(seconds=ctx.settings.hotline.ring_timeout)
    call = await calls.record_event(
        ctx,
        call_id,
        user,
        "transfer",
        {"to": target.username, "from": user.username},
        ringing_user_id=target.id,  # the lifecycle rings it again (domain.calls: transfer)
        ring_deadline=deadline,
        agent_user_id=None,
        agent_name=None,
    )
    await ctx[PRESENCE].idle(user.id)
    log.info("call_transferred", call_id=call_id, officer=user.username, to=target.username)
    return call


# ---- calls out from the console (回访, departments) ---------------------------------------------


async def place_callout(
    ctx: Context,
    user: User,
    *,
    offer: str,
    kind: str = "callback",
    incident_id: int | None = None,
    number: str | None = None,
) -> dict[str, Any]:
    """Call ``number`` (a callback: the case's reporter by default) with the console's audio: the
    officer hears ringback, then the far end; returns the call out with the WebRTC answer."""
    edge = ctx[SIP].edge
    if edge is None:
        raise conflict("本实例未接入 SIP", "this instance takes no SIP calls", code="sip_unavailable")
    dialer = edge.dialer
    if dialer.trunk is None:
        raise conflict("未配置外呼中继", "no SIP trunk is configured for calls out", code="no_trunk")
    callout = await callouts.create(
        ctx,
        kind=kind,
        org=user.org,
        area_code=ctx[HOTLINES].area_code,
        number=number,
        incident_id=incident_id,
        officer=user,
    )
    try:
        leg = await OfficerLeg.answer(offer, g711.PCMU, seam.configuration(ctx.settings.video))
    except OfferError as exc:
        await callouts.record(
            ctx, callout["id"], "failed", user, state="failed", result="failed", ended_at=ctx.clock.now()
        )
        raise _bad_offer(exc) from None
    outbound = await dialer.dial(callout["number"])
    outbound.media.attach(leg)
    outbound.media.ringback(ringback(outbound.media.codec))
    leg.on_message = lambda message: _from_console(ctx, outbound.key, message)
    leg.on_gone = lambda: dialer.hangup(outbound)
    callout = await callouts.record(ctx, callout["id"], "dialled", user, external_id=outbound.key)
    edge.later(_follow(ctx, edge, callout["id"], outbound, leg))
    return {**callout, "answer": {"type": "answer", "sdp": leg.answer_sdp}}


async def _follow(ctx: Context, edge: Any, callout_id: int, outbound: Any, leg: OfficerLeg) -> None:
    """The call out's record follows its SIP call; the console hears of each step on its data channel."""
    settings = ctx.settings
    ringing: asyncio.Future[Any] = asyncio.ensure_future(outbound.ringing.wait())
    answered: asyncio.Future[Any] = asyncio.ensure_future(outbound.answered.wait())
    over: asyncio.Future[Any] = outbound.over
    try:
        await asyncio.wait(
            {ringing, over}, timeout=settings.voice.ring_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if outbound.ringing.is_set() and not outbound.answered.is_set():
            await callouts.record(ctx, callout_id, "ringing", state="ringing", ringing_at=ctx.clock.now())
            leg.notify({"type": "ringing"})
        await asyncio.wait(
            {answered, over}, timeout=settings.voice.ring_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if outbound.answered.is_set() and not over.done():
            outbound.media.stop_ringback()
            mix, legs = recording_paths(
                settings.data.dir,
                ctx.clock.now(),
                callout_id,
                legs=settings.voice.record_legs,
                prefix="callout",
            )
            if settings.sip.record:
                outbound.media.record(mix, legs)
            await callouts.record(
                ctx,
                callout_id,
                "answered",
                state="answered",
                answered_at=ctx.clock.now(),
                recording=str(mix.relative_to(settings.data.dir)) if settings.sip.record else None,
            )
            leg.notify({"type": "answered"})
            reason, _ = await over
            await callouts.record(
                ctx, callout_id, "ended", state="ended", result="answered", ended_at=ctx.clock.now()
            )
            leg.notify({"type": "ended", "reason": reason})
            return
        if not over.done():
            edge.dialer.hangup(outbound)  # rang out
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.shield(over)
        reason, status = over.result() if over.done() else ("no_answer", 0)
        result = (
            "busy"
            if reason == "busy"
            else "cancelled"
            if reason == "cancelled"
            else "no_answer"
            if status in (0, 408, 480, 487)
            else "failed"
        )
        await callouts.record(
            ctx,
            callout_id,
            "failed",
            state="failed",
            result=result,
            sip_status=status or None,
            ended_at=ctx.clock.now(),
        )
        leg.notify({"type": "ended", "reason": result})
    finally:
        ringing.cancel()
        answered.cancel()
        await leg.close()


async def hangup_callout(ctx: Context, callout_id: int, user: User) -> dict[str, Any]:
    """End a call out from the console (CANCEL while it rings, BYE once answered)."""
    row = await callouts.get(ctx, callout_id, user)
    if row["instance_id"] != ctx.instance_id:
        raise calls.RemoteCall(row["instance_id"])
    edge = ctx[SIP].edge
    outbound = edge.dialer.calls.get(row["external_id"] or "") if edge is not None else None
    if edge is None or outbound is None or row["state"] not in callouts.LIVE:
        raise conflict(
            "外呼已结束",
            "the call out is over",
            code="callout_over",
            extra={"callout": callouts.callout_json(row)},
        )
    edge.dialer.hangup(outbound)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await asyncio.shield(outbound.over)
    await asyncio.sleep(0)  # let the follower write the end
    return callouts.callout_json(await callouts.get(ctx, callout_id, user))


async def transfer_out(ctx: Context, call_id: int, user: User, number: str = "") -> dict[str, Any]:
    """Transfer the answered call to a number through the trunk (a department): the caller hears
    music while it rings; answered, the two calls are bridged and the officer's console is free; not
    answered, the caller is back with the officer."""
    row, edge = await _held_here(ctx, call_id, user)
    if row["state"] != "answered" or row["agent_user_id"] != user.id:
        raise calls.state_conflict(row, ctx)
    if edge.dialer.trunk is None:
        raise conflict("未配置外呼中继", "no SIP trunk is configured for calls out", code="no_trunk")
    key = row["external_id"]
    media = edge.voice.get(key)
    if media is None or media.far is None:
        raise conflict("此来电未在控制台接通", "this call is not connected to a console", code="not_bridged")
    dialled = normalise_number(number, ctx[HOTLINES].area_code)
    if dialled is None:
        raise invalid({"number": ("号码无效", "not a dialable number")})
    outbound = await edge.dialer.dial(dialled)
    leg = media.detach(hold_music=hold_music(media.codec))
    if leg is not None:
        leg.notify({"type": "transferring", "number": dialled})
    edge.later(_transfer_follow(ctx, edge, call_id, key, user, outbound, leg))
    call = await calls.record_event(
        ctx, call_id, user, "transfer_out", {"number": dialled, "from": user.username}
    )
    log.info("call_transfer_out", call_id=call_id, officer=user.username, phone=dialled)
    return {**call, "transfer": {"number": dialled, "state": "dialling"}}


async def _transfer_follow(
    ctx: Context, edge: Any, call_id: int, key: str, user: User, outbound: Any, leg: Any
) -> None:
    media = edge.voice.get(key)
    answered: asyncio.Future[Any] = asyncio.ensure_future(outbound.answered.wait())
    over: asyncio.Future[Any] = outbound.over
    try:
        await asyncio.wait(
            {answered, over}, timeout=ctx.settings.voice.ring_timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        answered.cancel()
    if media is None or media.closed:
        edge.dialer.hangup(outbound)
        return
    if outbound.answered.is_set() and not over.done():
        link(
            media,
            outbound.media,
            on_a_closed=lambda: edge.dialer.hangup(outbound),
            on_b_closed=lambda: edge.hangup(key),
        )
        if leg is not None:
            leg.notify({"type": "transferred", "to": outbound.number})
            await leg.close()
        await ctx[PRESENCE].idle(user.id)
        edge.later(_department_gone(ctx, edge, key, outbound))
        return
    if not over.done():
        edge.dialer.hangup(outbound)
    reason, _ = over.result() if over.done() else ("no_answer", 0)
    if leg is not None and not media.closed:
        media.attach(leg)
        leg.notify({"type": "transfer_failed", "reason": reason})


async def _department_gone(ctx: Context, edge: Any, key: str, outbound: Any) -> None:
    """The department hung up: the caller's side ends too (BYE), and the call's record."""
    await asyncio.shield(outbound.over)
    if key in edge.agent:
        edge.hangup(key)
        edge.finished(key)
        await calls.caller_gone(ctx, "sip", key, "department_hangup")
