"""What the caller hears from the hotline itself: greeting, menu, queue position, hold music.

Prompts are WAV files named in ``config/hotlines.toml`` (any usual format, read by
:func:`~dispatchd.channels.hotline.voice.wav.read_wav`), encoded once per G.711 law and kept. A
prompt may also carry its text: when its file does not exist and ``espeak-ng`` is installed, the
text is spoken into ``<data dir>/prompts/`` once (Mandarin voice) and that file used; without
either, the prompt is a short pattern of beeps, so a line is never silent by mistake.
Hold music is a soft chime made here, unless a file is configured.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import structlog

from dispatchd.channels.hotline.voice import g711, tones, wav
from dispatchd.domain.hotlines import HotlineDirectory, Prompt

log = structlog.get_logger("dispatchd.voice")

__all__ = ["PromptLibrary", "hold_music", "ringback", "synthesise"]

MAX_POSITION = 20  # positions announced one by one; further back is announced as this many


@lru_cache(maxsize=4)
def hold_music(codec: int) -> bytes:
    """Six seconds of a soft two-note chime and silence, in the law of ``codec`` (looped)."""
    chime = np.concatenate(
        [
            tones.tone([523.25, 784.0], 0.35, level=0.12),
            tones.silence(0.15),
            tones.tone([659.25, 987.8], 0.35, level=0.12),
            tones.silence(5.15),
        ]
    )
    return g711.encode(chime, codec)


@lru_cache(maxsize=4)
def ringback(codec: int) -> bytes:
    """The ringing tone a caller hears in China: 450 Hz, 1 s on, 4 s off (YD/T 1277), in ``codec``'s law."""
    return g711.encode(np.concatenate([tones.tone(450.0, 1.0, level=0.2), tones.silence(4.0)]), codec)


def synthesise(text: str, out: Path, voice: str = "cmn") -> bool:
    """Speak ``text`` into the WAV file ``out`` with espeak-ng; False when it is not installed or fails."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [binary, "-v", voice, "-s", "150", "-w", str(out), text],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.is_file() and out.stat().st_size > 44


class PromptLibrary:
    """Prompts read (or spoken) once and kept encoded per law.

    Reading and speaking take time: :meth:`preload` runs in a thread at start-up for every prompt
    the directory names (and the position prompt for 1…:data:`MAX_POSITION`); a prompt asked for
    before it is loaded is loaded then.
    """

    def __init__(self, config_dir: Path, cache_dir: Path) -> None:
        self.config_dir = config_dir
        self.cache_dir = cache_dir
        self._samples: dict[Prompt, np.ndarray] = {}
        self._encoded: dict[tuple[Prompt, int], bytes] = {}
        self._lock = threading.Lock()

    def samples(self, prompt: Prompt, beeps: int = 1) -> np.ndarray:
        with self._lock:
            found = self._samples.get(prompt)
        if found is None:
            found = self._load(prompt, beeps)
            with self._lock:
                self._samples[prompt] = found
        return found

    def encoded(self, prompt: Prompt, codec: int, beeps: int = 1) -> bytes:
        key = (prompt, codec)
        with self._lock:
            found = self._encoded.get(key)
        if found is None:
            found = g711.encode(self.samples(prompt, beeps), codec)
            with self._lock:
                self._encoded[key] = found
        return found

    def position(self, prompt: Prompt, ahead: int, codec: int) -> bytes:
        """The position prompt for ``ahead`` callers (beeps as many when nothing else is there)."""
        n = min(ahead, MAX_POSITION)
        return self.encoded(prompt.numbered(n), codec, beeps=min(n, 9))

    def music(self, prompt: Prompt | None, codec: int) -> bytes:
        return self.encoded(prompt, codec) if prompt is not None else hold_music(codec)

    def preload(self, directory: HotlineDirectory) -> int:
        """Load every prompt ``directory`` names, in both laws; returns how many."""
        prompts = directory.prompts
        wanted: list[Prompt] = [
            p for p in (prompts.greeting, prompts.queue, prompts.hold_music) if p is not None
        ]
        for route in directory.values():
            wanted += [
                p for p in (route.greeting, route.menu.prompt if route.menu else None) if p is not None
            ]
        if prompts.position is not None:
            wanted += [prompts.position.numbered(n) for n in range(1, MAX_POSITION + 1)]
        for prompt in _unique(wanted):
            for codec in (g711.PCMU, g711.PCMA):
                self.encoded(prompt, codec)
        return len(wanted)

    def _load(self, prompt: Prompt, beeps: int) -> np.ndarray:
        if prompt.file:
            path = Path(prompt.file)
            path = path if path.is_absolute() else self.config_dir / path
            if path.is_file():
                try:
                    return wav.read_wav(path.read_bytes())
                except wav.WavError as exc:
                    log.warning("prompt_unreadable", file=str(path), error=str(exc))
        if prompt.text:
            name = hashlib.sha256(prompt.text.encode()).hexdigest()[:16] + ".wav"
            spoken = self.cache_dir / name
            if spoken.is_file() or synthesise(prompt.text, spoken):
                try:
                    return wav.read_wav(spoken.read_bytes())
                except wav.WavError:
                    pass
        return tones.beeps(880.0, beeps)


def _unique(prompts: Iterable[Prompt]) -> list[Prompt]:
    return list(dict.fromkeys(prompts))
