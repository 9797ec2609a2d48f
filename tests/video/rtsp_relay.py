"""A minimal RTSP server for tests, standing in for a camera of the video surveillance network.

ffmpeg publishes a test pattern to it (ANNOUNCE / SETUP / RECORD, RTP interleaved on TCP,
RFC 2326 section 10.12) and players pull it (DESCRIBE / SETUP / PLAY); interleaved frames from the
publisher are copied to every playing client unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib


class RtspRelay:
    def __init__(self) -> None:
        self.sdp: bytes | None = None
        self.players: set[asyncio.StreamWriter] = set()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.announced = asyncio.Event()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def url(self, path: str = "cam") -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path}"

    async def close(self) -> None:
        for w in list(self.players):
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        publishing = False
        try:
            while True:
                first = await reader.readexactly(1)
                if first == b"$":  # interleaved binary frame: channel, 16-bit length, payload
                    header = await reader.readexactly(3)
                    payload = await reader.readexactly(int.from_bytes(header[1:3], "big"))
                    if publishing:
                        frame = first + header + payload
                        for player in list(self.players):
                            try:
                                player.write(frame)
                            except (ConnectionError, RuntimeError):
                                self.players.discard(player)
                    continue
                head = first + await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, url, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                cseq = headers.get("cseq", "0")
                extra: list[str] = []
                out_body = b""
                if method == "OPTIONS":
                    extra.append(
                        "Public: OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, TEARDOWN, GET_PARAMETER"
                    )
                elif method == "ANNOUNCE":
                    self.sdp = body
                    self.announced.set()
                elif method == "DESCRIBE":
                    if self.sdp is None:
                        writer.write(f"RTSP/1.0 404 Not Found\r\nCSeq: {cseq}\r\n\r\n".encode())
                        continue
                    out_body = self.sdp
                    extra += ["Content-Type: application/sdp", f"Content-Base: {url.rstrip('/')}/"]
                elif method == "SETUP":
                    extra += [f"Transport: {headers.get('transport', '')}", "Session: 4242"]
                elif method == "RECORD":
                    publishing = True
                    extra.append("Session: 4242")
                elif method == "PLAY":
                    extra.append("Session: 4242")
                    self.players.add(writer)
                elif method == "TEARDOWN":
                    extra.append("Session: 4242")
                response = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n" + "".join(e + "\r\n" for e in extra)
                response += f"Content-Length: {len(out_body)}\r\n\r\n"
                writer.write(response.encode() + out_body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self.players.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
