"""Answer and hang up a SIP call held by another instance (any instance serves any client).

A SIP dialog lives in the memory of the instance that took the INVITE. When an officer's request
reaches another instance, the command goes over Redis to the holder's channel
(:func:`dispatchd.store.keys.hotline_commands`), which carries it out exactly as a local request
and pushes the outcome onto a short-lived reply list. An instance with a SIP edge also keeps a
heartbeat key, so that the queue round of any instance can close the calls of one that stopped.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog

from dispatchd.channels.hotline import calls, console
from dispatchd.context import Context
from dispatchd.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, Unavailable
from dispatchd.store.keys import hotline_commands, hotline_reply
from dispatchd.store.outage import store_failure
from dispatchd.store.users import User, get_user
from dispatchd.tasks import raise_if_cancelling

log = structlog.get_logger("dispatchd.hotline")

REPLY_TIMEOUT: Final = 5  # seconds to wait for the holder's reply

# Each takes (ctx, call id, user, **arguments); the arguments travel as JSON.
Operation = Callable[..., Awaitable[dict[str, Any]]]
OPERATIONS: Final[dict[str, Operation]] = {
    "answer": console.answer,  # with ``offer``: bridged to the console's WebRTC peer
    "hangup": calls.hangup,
    "hold": console.hold,
    "key": console.key,
    "transfer": console.transfer,
    "transfer_out": console.transfer_out,
    "callout_hangup": console.hangup_callout,  # the id is the call out's
}


# Domain errors by name, so that a refusal on the holder is the same refusal here.
_KINDS: Final[dict[str, type[DomainError]]] = {
    kind.__name__: kind for kind in (NotFound, Forbidden, Conflict, Invalid)
}


async def on_holder(
    ctx: Context, instance_id: str, op: str, call_id: int, user: User, **arguments: Any
) -> dict[str, Any]:
    """Run ``op`` on the instance holding the call; its result, or its error raised here."""
    redis = ctx.redis
    token = secrets.token_hex(12)
    command = {"op": op, "call_id": call_id, "user_id": user.id, "reply": token, "args": arguments}
    receivers = await redis.publish(hotline_commands(instance_id), json.dumps(command))
    if not receivers:
        raise Conflict(
            "接入此来电的实例已停止，来电将被关闭",
            "the instance that took this call has stopped; the call will be closed",
            code="sip_instance_gone",
        )
    reply = await redis.blpop([hotline_reply(token)], timeout=REPLY_TIMEOUT)
    if reply is None:
        raise Unavailable(
            "接入此来电的实例未响应", "the instance holding the call did not answer", code="sip_instance_timeout"
        )
    data = json.loads(reply[1])
    if "call" in data:
        result: dict[str, Any] = data["call"]
        return result
    error = data.get("error") or {}
    kind = _KINDS.get(str(error.get("kind")), Conflict)
    raise kind(
        str(error.get("zh", "操作失败")),
        str(error.get("en", "failed")),
        code=str(error.get("code", "error")),
        extra=error.get("extra") or None,
    )


async def run(ctx: Context, op: str, call_id: int, user: User, **arguments: Any) -> dict[str, Any]:
    """``op`` here when this instance holds the call, else on the holder."""
    try:
        return await OPERATIONS[op](ctx, call_id, user, **arguments)
    except calls.RemoteCall as remote:
        return await on_holder(ctx, remote.instance_id, op, call_id, user, **arguments)


def _refusal(kind: str, code: str, zh: str, en: str, extra: Any = None) -> dict[str, Any]:
    return {"error": {"kind": kind, "code": code, "zh": zh, "en": en, "extra": extra}}


async def _execute(ctx: Context, command: dict[str, Any]) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        user = await get_user(conn, int(command["user_id"]))
    if user is None:
        return _refusal("NotFound", "not_found", "用户不存在", "no such user")
    try:
        arguments = command.get("args") or {}
        call = await OPERATIONS[str(command["op"])](ctx, int(command["call_id"]), user, **arguments)
    except DomainError as exc:
        return _refusal(type(exc).__name__, exc.code, exc.message_zh, exc.message_en, exc.extra)
    except calls.RemoteCall:
        return _refusal("Conflict", "call_moved", "来电不在本实例", "not held here")
    return {"call": call}


async def serve_commands(ctx: Context) -> None:
    """Carry out commands addressed to this instance until cancelled (its heartbeat: presence.run)."""
    redis = ctx.redis
    instance = ctx.instance_id
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(hotline_commands(instance))
    try:
        while True:
            # redis-py's get_message(timeout=…) can swallow a cancellation that lands while it
            # waits; the task still counts it, so leave as asked.
            raise_if_cancelling()
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            try:
                command = json.loads(message["data"])
                outcome = await _execute(ctx, command)
                key = hotline_reply(str(command["reply"]))
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.rpush(key, json.dumps(outcome, ensure_ascii=False, default=str))
                    pipe.expire(key, 30)
                    await pipe.execute()
            except Exception as exc:
                if store_failure(ctx, exc) is None:  # an outage is logged once, by its tracker
                    log.exception("hotline_command_failed")
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
