"""What every WebRTC edge of dispatchd (meetings, the hotline's voice, camera views) shares about
aiortc's peer connections."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection


async def close_peer(pc: RTCPeerConnection) -> None:
    """Close a peer connection so that a caller being cancelled cannot break it.

    ``RTCPeerConnection.close`` makes one future that every later ``close()`` awaits, and aiortc
    itself starts a ``close()`` task when DTLS ends. A waiting caller that is cancelled (a timeout,
    a websocket handler ending) would cancel that shared future, and aiortc's own task would then
    fail on it with nobody to retrieve the error. The close therefore runs shielded: a cancelled
    caller stops waiting, the close goes on.
    """
    await asyncio.shield(pc.close())
