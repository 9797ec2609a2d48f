"""Prompts: read from WAV files, spoken by espeak-ng from their text when the file is missing, beeps
when neither; the hold chime and the ringback tone made here."""

from __future__ import annotations

from pathlib import Path

from dispatchd.channels.hotline.voice import g711, tones, wav
from dispatchd.channels.hotline.voice.prompts import PromptLibrary, hold_music, ringback
from dispatchd.domain.hotlines import Prompt
from tests.conftest import require_tool


def test_file_prompt_and_the_fallback_beeps(tmp_path: Path) -> None:
    """A configured WAV is read (resampled to 8 kHz); a missing one without text becomes beeps, as
    many as asked; each is encoded once per law and kept."""
    (tmp_path / "greeting.wav").write_bytes(wav.wav_bytes(tones.tone(600, 0.5, rate=44100), 44100))
    library = PromptLibrary(tmp_path, tmp_path / "cache")
    greeting = library.samples(Prompt(file="greeting.wav"))
    assert abs(len(greeting) - 4000) <= 2 and tones.tone_share(greeting[:800], 600) > 0.95
    beeps = library.samples(Prompt(file="missing.wav"), beeps=3)
    assert len(beeps) == 3 * round(0.25 * 8000)
    encoded = library.encoded(Prompt(file="greeting.wav"), g711.PCMA)
    assert encoded is library.encoded(Prompt(file="greeting.wav"), g711.PCMA)


def test_text_is_spoken_once_by_espeak(tmp_path: Path) -> None:
    """A prompt with text and no file is spoken by espeak-ng into the cache, then read from there."""
    require_tool("espeak-ng")
    library = PromptLibrary(tmp_path, tmp_path / "cache")
    spoken = library.samples(Prompt(text="您好，这里是967999"))
    assert len(spoken) > 8000 and abs(spoken.astype(int)).max() > 1000  # a second or more of speech
    assert len(list((tmp_path / "cache").glob("*.wav"))) == 1


def test_hold_chime_and_ringback() -> None:
    """The ringback is 450 Hz for one second in five (China's ringing tone); the chime is quiet then silent."""
    ring = g711.decode(ringback(g711.PCMU), g711.PCMU)
    assert len(ring) == 5 * 8000 and tones.tone_share(ring[:8000], 450) > 0.95 and not ring[8000:].any()
    chime = g711.decode(hold_music(g711.PCMA), g711.PCMA)
    assert len(chime) == 6 * 8000 and abs(chime[-8000:].astype(int)).max() <= 8
