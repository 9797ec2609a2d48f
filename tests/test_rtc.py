"""Closing aiortc peer connections (dispatchd.rtc)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiortc import RTCPeerConnection

from dispatchd.rtc import close_peer


async def _cancel_while_closing(close: object) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    pc.addTransceiver("video")
    await pc.setLocalDescription(await pc.createOffer())
    waiter = asyncio.ensure_future(close(pc))  # type: ignore[operator]
    await asyncio.sleep(0)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    return pc


async def test_a_caller_cancelled_while_closing_does_not_break_the_close() -> None:
    """Cancelling a caller of close_peer leaves aiortc's shared close running: a later close
    completes and the connection ends closed. A bare ``pc.close()`` cancelled the same way leaves
    the connection half-closed: every later close waits for ever or fails (the reason close_peer
    exists)."""
    pc = await _cancel_while_closing(close_peer)
    await asyncio.wait_for(pc.close(), 5)
    assert pc.connectionState == "closed"

    bare = await _cancel_while_closing(lambda pc: pc.close())
    with pytest.raises((asyncio.CancelledError, TimeoutError)):
        await asyncio.wait_for(bare.close(), 1)
