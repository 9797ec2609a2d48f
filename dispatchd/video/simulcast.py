"""Simulcast as pure decisions: which layer each receiving slot gets, and how much a link carries.

A browser publishing with ``sendEncodings`` sends two or three encodings of its camera, each an RTP
stream named by a ``rid`` (RFC 8851) and announced with ``a=simulcast`` (RFC 8853). dispatchd
forwards, per receiving slot, the one layer that slot needs — low for a tile of a 9- or 16-way
wall, the middle one for a 4-way tile, high for the speaker and for a full-screen view — switching
at keyframes of the target layer (:class:`dispatchd.video.forward.Switch`), never decoding.

What a subscriber's link carries is estimated from what its browser reports (:class:`LinkEstimate`):
REMB (draft-alvestrand-rmcat-remb) and the loss fraction of its receiver reports (RFC 3550 section
6.4.2). The estimate lowers the subscriber's layers at once when the link is short, and raises them
again only after a quiet hold, one step at a time, backing off when a step up brings congestion
back (hysteresis). Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dispatchd.video.layout import LARGE, MEDIUM

# -- SDP (RFC 8851 rid, RFC 8853 simulcast) ----------------------------------------------------------
_RID = re.compile(r"^a=rid:([A-Za-z0-9_-]{1,16}) (send|recv)\b", re.MULTILINE)
_SIMULCAST = re.compile(r"^a=simulcast:(send|recv) (\S+)", re.MULTILINE)
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"


def _sections(sdp: str) -> list[str]:
    """The m-sections of an SDP (each from its ``m=`` line), session part dropped."""
    parts = re.split(r"(?m)^(?=m=)", sdp.replace("\r\n", "\n"))
    return [p for p in parts if p.startswith("m=")]


def _mid(section: str) -> str | None:
    found = re.search(r"^a=mid:(\S+)", section, re.MULTILINE)
    return found[1] if found else None


def offered_layers(sdp: str, direction: str = "send") -> dict[str, list[str]]:
    """The rids each video m-line sends (of an offer; ``recv``: accepts, of an answer), by mid, in
    the order of its ``a=simulcast``.

    Alternatives (``h,m``) are taken at their first choice; paused rids (``~h``) are kept, since
    the sender may resume them.
    """
    out: dict[str, list[str]] = {}
    for section in _sections(sdp):
        if not section.startswith("m=video"):
            continue
        mid = _mid(section)
        declared = {m[1] for m in _RID.finditer(section) if m[2] == direction}
        found = next((m for m in _SIMULCAST.finditer(section) if m[1] == direction), None)
        if mid is None or found is None or not declared:
            continue
        rids = [alt.split(",")[0].lstrip("~") for alt in found[2].split(";")]
        rids = [r for r in rids if r in declared]
        if len(rids) > 1:
            out[mid] = rids
    return out


def extension_ids(sdp: str, mid: str) -> dict[str, int]:
    """``a=extmap`` ids of the m-section ``mid``, by URI."""
    for section in _sections(sdp):
        if _mid(section) == mid:
            return {m[2]: int(m[1]) for m in re.finditer(r"^a=extmap:(\d+)(?:/\w+)? (\S+)", section, re.M)}
    return {}


def answer_layers(answer: str, layers: dict[str, list[str]], offer: str) -> str:
    """The answer with each simulcast m-line accepting the offered rids (``a=rid:… recv``,
    ``a=simulcast:recv``) and the rid header extensions (RFC 8852) the offer named."""
    if not layers:
        return answer
    crlf = "\r\n" in answer
    text = answer.replace("\r\n", "\n")
    head, *sections = re.split(r"(?m)^(?=m=)", text)
    out = [head]
    for section in sections:
        mid = _mid(section)
        rids = layers.get(mid or "")
        if rids and mid is not None:
            lines = section.rstrip("\n").split("\n")
            offered = extension_ids(offer, mid)
            have = {m[2] for m in re.finditer(r"^a=extmap:(\d+)(?:/\w+)? (\S+)", section, re.M)}
            extra = [
                f"a=extmap:{offered[uri]} {uri}"
                for uri in (RID_URI, REPAIRED_RID_URI)
                if uri in offered and uri not in have
            ]
            extra += [f"a=rid:{rid} recv" for rid in rids]
            extra.append("a=simulcast:recv " + ";".join(rids))
            section = "\n".join(lines + extra) + "\n"
        out.append(section)
    result = "".join(out)
    return result.replace("\n", "\r\n") if crlf else result


# -- choosing a layer ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Layer:
    """What a decision needs to know of one simulcast layer (a Source)."""

    active: bool  # frames arrive (a browser pauses layers its own estimate cannot carry)
    pixels: int  # width × height from its last keyframe; 0 while unknown
    bitrate: float  # bits per second over the last second


def ranked(layers: Sequence[Layer]) -> list[int]:
    """Indexes of the layers to choose among, lowest quality first: the active ones, by size and then
    bit rate (offer order when nothing is known yet); all of them while none is active."""
    candidates = [i for i, layer in enumerate(layers) if layer.active] or list(range(len(layers)))
    return sorted(candidates, key=lambda i: (layers[i].pixels, layers[i].bitrate, i))


def wanted(size: str, count: int) -> int:
    """Rank (0 = lowest) of the layer a picture shown at ``size`` wants, of ``count`` layers."""
    if count <= 1:
        return 0
    if size == LARGE:
        return count - 1
    if size == MEDIUM:
        return count // 2
    return 0


def choose_layer(layers: Sequence[Layer], size: str, budget: float | None = None) -> int | None:
    """The layer for one picture shown at ``size``: the one it wants, lowered while over ``budget``."""
    if not layers:
        return None
    order = ranked(layers)
    rank = min(wanted(size, len(order)), len(order) - 1)
    while budget is not None and rank > 0 and layers[order[rank]].bitrate > budget:
        rank -= 1
    return order[rank]


@dataclass(frozen=True, slots=True)
class Picture:
    """One receiving slot's need: the layers of the site it shows and the size it shows it at."""

    layers: Sequence[Layer]
    size: str


def allocate(pictures: Sequence[Picture], budget: float | None) -> list[int | None]:
    """A layer for each picture of one subscriber within its link's ``budget`` (bits per second).

    Every picture gets at least its lowest layer; what the budget leaves is spent raising pictures
    toward the layer they want, the large ones first. Without a budget each gets what it wants.
    """
    if budget is None:
        return [choose_layer(p.layers, p.size) for p in pictures]
    orders = [ranked(p.layers) for p in pictures]
    ranks = [0] * len(pictures)
    spent = sum(p.layers[o[0]].bitrate for p, o in zip(pictures, orders, strict=True) if o)
    by_priority = sorted(range(len(pictures)), key=lambda i: pictures[i].size != LARGE)
    for i in by_priority:
        order = orders[i]
        if not order:
            continue
        goal = min(wanted(pictures[i].size, len(order)), len(order) - 1)
        while ranks[i] < goal:
            step = (
                pictures[i].layers[order[ranks[i] + 1]].bitrate - pictures[i].layers[order[ranks[i]]].bitrate
            )
            if spent + step > budget:
                break
            spent += step
            ranks[i] += 1
    return [order[r] if order else None for order, r in zip(orders, ranks, strict=True)]


# -- estimating a link --------------------------------------------------------------------------------
class LinkEstimate:
    """How many bits per second one subscriber's link carries, from its REMB and receiver reports.

    ``budget`` is None while nothing says the link is short. Down at once: a REMB below what is
    being sent (×0.9), or receiver reports losing more than 10 % (the budget then follows GCC's
    loss rule, ``sending × (1 − loss/2)``, draft-ietf-rmcat-gcc-02 section 6). Up only after
    ``hold`` seconds without such a sign, one probe of ×1.5; a sign within ``hold`` of a probe
    doubles the hold (up to ``max_hold``), so a link at its limit is not flipped every few seconds.

    A receiver's REMB follows what it receives (it may grow to about 1.5× the incoming rate), so it
    lags a step up: for ``GRACE`` seconds after more is sent (:meth:`settle`) only a *falling* REMB
    — the receiver detected overuse — counts against the link.
    """

    DOWN_REMB = 0.9
    LOSS_DOWN = 0.10
    PROBE = 1.5
    UNLIMITED = 20_000_000.0
    GRACE = 3.0
    FALLING = 0.95

    def __init__(self, *, hold: float = 5.0, max_hold: float = 60.0) -> None:
        self.budget: float | None = None
        self.base_hold = hold
        self.hold = hold
        self.max_hold = max_hold
        self.remb: float | None = None
        self.loss = 0.0
        self._last_down: float | None = None
        self._last_probe: float | None = None
        self._grace_until = 0.0

    def settle(self, now: float) -> None:
        """More is being sent from now on (a layer up, a new picture): let the receiver's REMB catch up."""
        self._grace_until = now + self.GRACE

    def _down(self, budget: float, now: float) -> bool:
        if self._last_probe is not None and now - self._last_probe < self.hold:
            self.hold = min(self.hold * 2, self.max_hold)  # the probe brought congestion: back off
        elif self._last_down is not None and now - self._last_down > 4 * self.hold:
            self.hold = self.base_hold  # a long quiet spell: start afresh
        changed = self.budget is None or budget < self.budget
        self.budget = budget if self.budget is None else min(self.budget, budget)
        self._last_down = now
        self._last_probe = None
        return changed

    def on_remb(self, bitrate: float, sending: float, now: float) -> bool:
        """A REMB from the subscriber; True when the budget went down."""
        falling = self.remb is not None and bitrate < self.FALLING * self.remb
        self.remb = bitrate
        if sending > 0 and bitrate < self.DOWN_REMB * sending and (falling or now >= self._grace_until):
            return self._down(bitrate, now)
        return False

    def on_loss(self, fraction: float, sending: float, now: float) -> bool:
        """A receiver report's loss fraction (0–1) for what is sent; True when the budget went down."""
        self.loss = fraction
        if fraction > self.LOSS_DOWN and sending > 0:
            return self._down(sending * (1 - fraction / 2), now)
        return False

    def tick(self, now: float) -> bool:
        """Probe upward when the hold has passed quietly; True when the budget went up."""
        if self.budget is None or self._last_down is None:
            return False
        since = self._last_probe if self._last_probe is not None else self._last_down
        if now - since < self.hold:
            return False
        raised = self.budget * self.PROBE
        if self.remb is not None:
            raised = max(raised, self.remb)
        self.budget = None if raised >= self.UNLIMITED else raised
        self._last_probe = now
        self.settle(now)
        return True
