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
from aiohttp import web

from dispatchd.channels.hotline import calls, console
from dispatchd.store.keys import hotline_commands, hotline_reply
from dispatchd.store.users import User, get_user
from dispatchd.tasks import raise_if_cancelling
from dispatchd.web.appkeys import INSTANCE_ID, POOL, REDIS
from dispatchd.web.errors import ApiError

log = structlog.get_logger("dispatchd.hotline")

REPLY_TIMEOUT: Final = 5  # seconds to wait for the holder's reply

# Each takes (app, call id, user, **arguments); the arguments travel as JSON.
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


async def on_holder(
    app: web.Application, instance_id: str, op: str, call_id: int, user: User, **arguments: Any
) -> dict[str, Any]:
    """Run ``op`` on the instance holding the call; its result, or its error raised here."""
    redis = app[REDIS]
    token = secrets.token_hex(12)
    command = {"op": op, "call_id": call_id, "user_id": user.id, "reply": token, "args": arguments}
    receivers = await redis.publish(hotline_commands(instance_id), json.dumps(command))
    if not receivers:
        raise ApiError(
            409,
            "sip_instance_gone",
            "接入此来电的实例已停止，来电将被关闭",
            "the instance that took this call has stopped; the call will be closed",
        )
    reply = await redis.blpop([hotline_reply(token)], timeout=REPLY_TIMEOUT)
    if reply is None:
        raise ApiError(
            504,
            "sip_instance_timeout",
            "接入此来电的实例未响应",
            "the instance holding the call did not answer",
        )
    data = json.loads(reply[1])
    if data.get("status") == 200:
        result: dict[str, Any] = data["call"]
        return result
    error = data.get("error") or {}
    raise ApiError(
        int(data.get("status", 500)),
        str(error.get("code", "error")),
        str(error.get("zh", "操作失败")),
        str(error.get("en", "failed")),
        extra=error.get("extra") or None,
    )


async def run(app: web.Application, op: str, call_id: int, user: User, **arguments: Any) -> dict[str, Any]:
    """``op`` here when this instance holds the call, else on the holder."""
    try:
        return await OPERATIONS[op](app, call_id, user, **arguments)
    except calls.RemoteCall as remote:
        return await on_holder(app, remote.instance_id, op, call_id, user, **arguments)


async def _execute(app: web.Application, command: dict[str, Any]) -> dict[str, Any]:
    async with app[POOL].acquire() as conn:
        user = await get_user(conn, int(command["user_id"]))
    if user is None:
        return {"status": 404, "error": {"code": "not_found", "zh": "用户不存在", "en": "no such user"}}
    try:
        arguments = command.get("args") or {}
        call = await OPERATIONS[str(command["op"])](app, int(command["call_id"]), user, **arguments)
    except ApiError as exc:
        return {
            "status": exc.status,
            "error": {"code": exc.code, "zh": exc.message_zh, "en": exc.message_en, "extra": exc.extra},
        }
    except calls.RemoteCall:
        return {"status": 409, "error": {"code": "call_moved", "zh": "来电不在本实例", "en": "not held here"}}
    return {"status": 200, "call": call}


async def serve_commands(app: web.Application) -> None:
    """Carry out commands addressed to this instance until cancelled (its heartbeat: presence.run)."""
    redis = app[REDIS]
    instance = app[INSTANCE_ID]
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
                outcome = await _execute(app, command)
                key = hotline_reply(str(command["reply"]))
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.rpush(key, json.dumps(outcome, ensure_ascii=False, default=str))
                    pipe.expire(key, 30)
                    await pipe.execute()
            except Exception:
                log.exception("hotline_command_failed")
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
