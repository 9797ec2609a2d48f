"""Which department and category a dialled number stands for.

Yuhang merged 32 hotlines of 28 departments into one number, 967999 (一号通), answered by the
county command centre.  The old department lines keep working: a call to one of them arrives
at the same desk already marked with the department kind that used to own the line and a
default category, which the duty officer may change.  967999 itself carries no category.

``config/hotlines.toml``:

    area_code = "0577"          # local numbers are dialled with and without it

    [[line]]
    dialled = "0577-6589 0101"  # written as people write it; stored normalised
    name = "公安局治安举报"
    name_en = "Police: public-order reports"
    department_kind = "police"
    category = "hazard.public_order"   # optional; must exist in the taxonomy

What a caller hears before an officer answers (all optional; see docs/hotline.md "Voice"):

    [prompts]
    announce = true             # answer at once: greeting, menu, queue announcements, music
    greeting = { file = "prompts/greeting.wav", text = "您好，这里是967999……" }
    queue = { text = "坐席正忙，请稍候。" }
    position = { file = "prompts/position-{n}.wav", text = "您前面还有{n}位来电。" }
    hold_music = { file = "prompts/music.wav" }
    escalation = { text = "……接受指令请按1。" }            # 叫应 (calls out about an order)
    escalation_accepted = { text = "指令已接受。" }

    [[line]]
    dialled = "967999"
    ...
    greeting = { text = "……" }                                 # this line's own greeting
    menu = { prompt = { text = "治安请按1，调解请按2。" }, keys = { "1" = "police", "2" = "justice" } }

A prompt names a WAV ``file`` (relative to this file's directory), a ``text`` spoken by espeak-ng
when the file is missing, or both; ``{n}`` in the position prompt is the number of callers ahead.

A CTI system reports the dialled number in many spellings (``+86 577 65890101``,
``0086-577-65890101``, ``577 6589 0101``, ``65890101``); :func:`normalise_number` reduces each
to one national form (``057765890101``) before the lookup.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from dispatchd.domain.orgs import DEPARTMENT_KINDS
from dispatchd.domain.taxonomy import Taxonomy

# Who may place calls out (回访, a department) from the console with their headset.
CALLERS_OUT: Final = frozenset({"duty_officer"})

_SEPARATORS: Final = re.compile(r"[\s\-().]")
_AREA_CODE: Final = re.compile(r"0[1-9]\d{1,2}")
_LINE_KEYS: Final = frozenset({"dialled", "name", "name_en", "department_kind", "category", "greeting", "menu"})
_PROMPT_KEYS: Final = frozenset(
    {"announce", "greeting", "queue", "position", "hold_music", "escalation", "escalation_accepted"}
)
_KEYS: Final = "0123456789*#"


class HotlineError(ValueError):
    """The hotline table is wrong; names the file and the line."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """A recorded prompt: a WAV ``file`` (relative to the config directory) and/or its ``text``."""

    file: str = ""
    text: str = ""

    def numbered(self, n: int) -> Prompt:
        """The prompt with ``{n}`` filled in (the position announcement)."""
        return Prompt(self.file.replace("{n}", str(n)), self.text.replace("{n}", str(n)))


@dataclass(frozen=True, slots=True)
class Menu:
    """A DTMF menu: its prompt, and the department kind each key routes the call to."""

    prompt: Prompt
    keys: Mapping[str, str]


ESCALATION: Final = Prompt(text="这里是社会治理综合指挥中心。您的队伍有一条指令尚未接受。接受指令请按1。")
ESCALATION_ACCEPTED: Final = Prompt(text="指令已接受，谢谢。")


@dataclass(frozen=True, slots=True)
class Prompts:
    """What callers hear before an answer; ``announce`` off: ringback only, as a plain PBX line."""

    announce: bool = False
    greeting: Prompt | None = None
    queue: Prompt | None = None
    position: Prompt | None = None
    hold_music: Prompt | None = None
    # 叫应: what the person rung about an order not accepted hears, and after pressing 1.
    escalation: Prompt = ESCALATION
    escalation_accepted: Prompt = ESCALATION_ACCEPTED


@dataclass(frozen=True, slots=True)
class HotlineRoute:
    """Where a call to ``dialled`` (normalised) goes and what it is presumed to be about."""

    dialled: str
    name: str
    name_en: str
    department_kind: str
    category: str | None
    greeting: Prompt | None = None
    menu: Menu | None = None


def normalise_number(dialled: str, area_code: str = "0577") -> str | None:
    """One national spelling of a dialled number, or None when it is not a Chinese number.

    Drops spaces, dashes, dots and brackets; strips the country code (``+86``, ``0086``, ``86``
    before 11 digits) and puts back the trunk ``0`` of an area code; adds a missing leading
    ``0`` to ``area_code`` without it; prefixes 7–8-digit local numbers with ``area_code``.
    Short service numbers (110, 12345, 81890, 967999) and mobile numbers stay as they are.
    """
    text = _SEPARATORS.sub("", dialled)
    international = False
    if text.startswith("+"):
        if not text.startswith("+86"):
            return None
        text, international = text[3:], True
    elif text.startswith("0086"):
        text, international = text[4:], True
    elif text.startswith("86") and len(text) == 13:
        text, international = text[2:], True
    if not text or not text.isascii() or not text.isdigit():
        return None
    if international:
        text = text.lstrip("0")  # "+86 (0)577 …" writes the trunk prefix in brackets
        if not text:
            return None
        mobile = text.startswith("1") and len(text) == 11
        return text if mobile or len(text) <= 6 else "0" + text
    if text.startswith("0"):
        return "0" + text.lstrip("0") if text.strip("0") else None
    bare_area = area_code[1:]
    if text.startswith(bare_area) and len(text) in (len(bare_area) + 7, len(bare_area) + 8):
        return "0" + text
    if len(text) in (7, 8) and text[0] not in "01":
        return area_code + text
    return text


class HotlineDirectory(Mapping[str, HotlineRoute]):
    """The routes keyed by normalised number, with a forgiving :meth:`route` lookup."""

    __slots__ = ("_routes", "area_code", "config_dir", "prompts")

    def __init__(
        self,
        routes: Mapping[str, HotlineRoute],
        area_code: str = "0577",
        prompts: Prompts | None = None,
        config_dir: Path | None = None,
    ) -> None:
        self._routes: Mapping[str, HotlineRoute] = MappingProxyType(dict(routes))
        self.area_code = area_code
        self.prompts = prompts or Prompts()
        self.config_dir = config_dir or Path(".")

    def __getitem__(self, dialled: str) -> HotlineRoute:
        return self._routes[dialled]

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def route(self, dialled: str) -> HotlineRoute | None:
        """The route for a number in any usual spelling; None for a number we do not answer."""
        number = normalise_number(dialled, self.area_code)
        return None if number is None else self._routes.get(number)


def load_hotlines(path: Path, taxonomy: Taxonomy) -> HotlineDirectory:
    """Read ``hotlines.toml``; every department kind and category is checked.

    Raises :class:`HotlineError` on a number that does not normalise, a number listed twice
    (in any spelling), an unknown department kind or a category missing from ``taxonomy``.
    """
    file = path.name
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise HotlineError(f"{file}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"area_code", "line", "prompts"})
    if unknown:
        raise HotlineError(f"{file}: unknown top-level keys {', '.join(unknown)}")
    area_code = data.get("area_code", "0577")
    if not isinstance(area_code, str) or not _AREA_CODE.fullmatch(area_code):
        raise HotlineError(f"{file}: area_code must look like '0577', got {area_code!r}")
    lines = data.get("line")
    if not isinstance(lines, list) or not lines:
        raise HotlineError(f"{file}: at least one [[line]] is needed")
    routes: dict[str, HotlineRoute] = {}
    for index, line in enumerate(lines):
        where = f"{file}: line #{index + 1}"
        if not isinstance(line, dict):
            raise HotlineError(f"{where}: not a table")
        raw = line.get("dialled")
        if not isinstance(raw, str):
            raise HotlineError(f"{where}: 'dialled' must be a string")
        where = f"{file}: line {raw!r}"
        bad_keys = sorted(set(line) - _LINE_KEYS)
        if bad_keys:
            raise HotlineError(f"{where}: unknown keys {', '.join(bad_keys)}")
        number = normalise_number(raw, area_code)
        if number is None:
            raise HotlineError(f"{where}: not a dialable Chinese number")
        if number in routes:
            raise HotlineError(f"{where}: {number} is listed twice")
        texts: dict[str, str] = {}
        for key in ("name", "name_en", "department_kind"):
            value = line.get(key)
            if not isinstance(value, str) or not value.strip():
                raise HotlineError(f"{where}: {key!r} must be a non-empty string")
            texts[key] = value
        if texts["department_kind"] not in DEPARTMENT_KINDS:
            raise HotlineError(f"{where}: unknown department kind {texts['department_kind']!r}")
        category = line.get("category")
        if category is not None and (not isinstance(category, str) or category not in taxonomy):
            raise HotlineError(f"{where}: category {category!r} is not in the taxonomy")
        routes[number] = HotlineRoute(
            dialled=number,
            name=texts["name"],
            name_en=texts["name_en"],
            department_kind=texts["department_kind"],
            category=category,
            greeting=_prompt(line.get("greeting"), f"{where}: greeting"),
            menu=_menu(line.get("menu"), where),
        )
    return HotlineDirectory(routes, area_code, _prompts(data.get("prompts"), file), path.parent)


def _prompt(value: object, where: str) -> Prompt | None:
    if value is None:
        return None
    if isinstance(value, str):
        return Prompt(file=value)
    if not isinstance(value, dict) or set(value) - {"file", "text"}:
        raise HotlineError(f"{where}: a prompt is a file name or {{ file = …, text = … }}")
    file, text = value.get("file", ""), value.get("text", "")
    if not isinstance(file, str) or not isinstance(text, str) or not (file or text):
        raise HotlineError(f"{where}: a prompt needs a file or a text")
    return Prompt(file, text)


def _menu(value: object, where: str) -> Menu | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"prompt", "keys"}:
        raise HotlineError(f"{where}: menu must be {{ prompt = …, keys = {{ \"1\" = kind, … }} }}")
    prompt = _prompt(value.get("prompt"), f"{where}: menu prompt")
    keys = value.get("keys")
    if prompt is None or not isinstance(keys, dict) or not keys:
        raise HotlineError(f"{where}: a menu needs a prompt and keys")
    for key, kind in keys.items():
        if key not in _KEYS or len(key) != 1:
            raise HotlineError(f"{where}: menu key {key!r} is not one DTMF key")
        if kind not in DEPARTMENT_KINDS:
            raise HotlineError(f"{where}: menu key {key!r}: unknown department kind {kind!r}")
    return Menu(prompt, MappingProxyType(dict(keys)))


def _prompts(value: object, file: str) -> Prompts:
    if value is None:
        return Prompts()
    if not isinstance(value, dict):
        raise HotlineError(f"{file}: [prompts] must be a table")
    unknown = sorted(set(value) - _PROMPT_KEYS)
    if unknown:
        raise HotlineError(f"{file}: [prompts] has unknown keys {', '.join(unknown)}")
    announce = value.get("announce", False)
    if not isinstance(announce, bool):
        raise HotlineError(f"{file}: [prompts] announce must be true or false")
    where = f"{file}: [prompts]"
    return Prompts(
        announce=announce,
        greeting=_prompt(value.get("greeting"), f"{where} greeting"),
        queue=_prompt(value.get("queue"), f"{where} queue"),
        position=_prompt(value.get("position"), f"{where} position"),
        hold_music=_prompt(value.get("hold_music"), f"{where} hold_music"),
        escalation=_prompt(value.get("escalation"), f"{where} escalation") or ESCALATION,
        escalation_accepted=_prompt(value.get("escalation_accepted"), f"{where} escalation_accepted")
        or ESCALATION_ACCEPTED,
    )
