"""Greeting, DTMF menu and queue announcements heard by a real SIP caller, with prompts made as tones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.channels.hotline.voice import tones, wav
from tests.channels.hotline.voice.conftest import call_state, eventually, sip_port, until
from tests.channels.hotline.voice.peers import OfficerPeer, ToneCaller
from tests.conftest import COUNTY, ROOT, AppFactory, UserFactory

# Each prompt is a tone of its own, so the caller's ears can tell which one it hears.
PROMPTS = {"greeting": 600, "menu": 700, "queue": 800, "position-1": 900}


def hotlines_with_prompts(folder: Path) -> Path:
    """The shipped hotlines.toml with announcements on, a menu on the mediation line, tone prompts."""
    for name, frequency in PROMPTS.items():
        (folder / f"{name}.wav").write_bytes(wav.wav_bytes(tones.tone(frequency, 0.6, rate=16000), 16000))
    text = (ROOT / "config" / "hotlines.toml").read_text(encoding="utf-8")
    text = text.replace(
        'area_code = "0577"',
        'area_code = "0577"\n\n[prompts]\nannounce = true\ngreeting = "greeting.wav"\nqueue = "queue.wav"\n'
        'position = { file = "position-{n}.wav" }\n',
    )
    text = text.replace(
        'category = "incident.dispute"\n',
        'category = "incident.dispute"\nmenu = { prompt = "menu.wav", keys = { "1" = "police", "2" = "justice" } }\n',
        1,
    )
    path = folder / "hotlines.toml"
    path.write_text(text, encoding="utf-8")
    return path


def heard_in_order(samples: Any, candidates: list[float]) -> list[float]:
    """The tones heard, in order, one entry per run of 100 ms blocks dominated by the same tone."""
    out: list[float] = []
    for start in range(0, len(samples) - 800, 800):
        frequency, share = tones.dominant(samples[start : start + 800], candidates)
        if share > 0.8 and (not out or out[-1] != frequency):
            out.append(frequency)
    return out


async def test_greeting_menu_position_then_the_officer(
    make_client: AppFactory, make_user: UserFactory, tmp_path: Path
) -> None:
    """Answered at once, the caller hears the greeting then the menu; key 1 routes the mediation line
    to the police; with one caller ahead it hears the queue prompt and "one ahead"; then an officer
    answers from the console and the caller hears the officer instead."""
    client: TestClient[Any, Any] = await make_client(
        video_host_addresses="127.0.0.1",
        paths_hotlines=str(hotlines_with_prompts(tmp_path)),
        voice_queue_announce_interval=5,
    )
    officer = await make_user("duty_officer", COUNTY)
    first = ToneCaller("127.0.0.1", sip_port(client), dialled="967999", caller="13900000001", frequency=300)
    second = ToneCaller("127.0.0.1", sip_port(client), dialled="057765890104", caller="13900000002")
    peer = OfficerPeer(1000)
    try:
        await first.call()
        await until(first.answered.is_set)  # answered by the hotline itself, for the greeting
        await second.call()
        await until(second.answered.is_set)
        assert second.final_status == 200
        candidates = [600, 700, 800, 900, 1000]
        await until(lambda: heard_in_order(second.heard(), candidates)[:2] == [600, 700])
        await second.press("1")

        async def routed() -> dict[str, Any] | None:
            body = await (
                await client.get("/api/v1/hotline/calls?state=queued,ringing", headers=officer.headers)
            ).json()
            found = [
                c for c in body["calls"] if c["caller"] == "13900000002" and c["department_kind"] == "police"
            ]
            return found[0] if found else None

        call = await eventually(routed)
        assert call["department"] == "330381-GAJ" and call["state"] == "queued"
        await until(lambda: 900 in heard_in_order(second.heard(), candidates), limit=30)
        assert heard_in_order(second.heard(), candidates)[:4] == [600, 700, 800, 900]

        answered = await client.post(
            f"/api/v1/hotline/calls/{call['id']}/answer",
            json={"offer": await peer.offer()},
            headers=officer.headers,
        )
        assert answered.status == 200, await answered.text()
        await peer.accept((await answered.json())["answer"])
        await until(lambda: heard_in_order(second.heard(), candidates)[-1:] == [1000])
        timeline = [e["event"] for e in (await call_state(client, officer.headers, call["id"]))["timeline"]]
        assert timeline == ["offered", "menu", "answer"]
    finally:
        await peer.close()
        await first.close()
        await second.close()
