"""The devices registered with the platform, sans I/O: registration, keep-alive, catalogues, flood limits.

* **Registration** (GB/T 28181-2016 §9.1.2.1, RFC 3261 §10.3): digest authentication
  (:mod:`.digest`) against the device's own HA1, or a password shared by all devices; ``Expires``
  granted up to the configured limit; ``Expires: 0`` unregisters (§9.1.2.2).
* **Keep-alive** (§9.6): a device sends ``Notify/Keepalive`` every interval; after the configured
  number of intervals without one (or any other message from it) it is offline, and it is online
  again with its next keep-alive. A registration that runs out is over.
* **Catalogues** (§9.5.3): a device answers one Catalog query with as many ``Response`` messages as
  it needs, each with the total ``SumNum``; :class:`CatalogCollector` gathers them by ``SN`` and
  releases the catalogue when all items are in, or what came when time runs out.
* **Flood limits**: a token bucket per device, and per source address for what comes before a
  device is known, so one noisy device cannot crowd out the others.

Time is passed in (monotonic seconds); nothing here awaits or reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from dispatchd.channels.gb28181 import digest
from dispatchd.channels.gb28181.manscdp import CatalogItem
from dispatchd.channels.hotline.transaction import Peer

__all__ = [
    "Accepted",
    "CameBack",
    "CatalogCollector",
    "CatalogDone",
    "Challenge",
    "DeviceState",
    "Refused",
    "Registered",
    "Registry",
    "TokenBuckets",
    "Unregistered",
    "WentOffline",
    "is_gb_id",
]

#: Source addresses tracked by the flood limiter at most (oldest idle ones are forgotten).
MAX_BUCKETS: Final = 100_000


def is_gb_id(text: str) -> bool:
    """A 20-digit GB/T 28181 id (Annex D)."""
    return len(text) == 20 and text.isascii() and text.isdigit()


# ---- flood limits ---------------------------------------------------------------------------------


class TokenBuckets:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, capacity: int = MAX_BUCKETS) -> None:
        self.rate = rate
        self.burst = burst
        self.capacity = capacity
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


# ---- registration ---------------------------------------------------------------------------------


@dataclass(slots=True)
class DeviceState:
    device_id: str
    peer: Peer
    contact: str
    user_agent: str
    registered_at: float
    expires_at: float
    last_seen: float
    online: bool = True


@dataclass(frozen=True, slots=True)
class Challenge:
    """Answer 401 with this ``WWW-Authenticate`` value."""

    header: str
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """Answer ``status`` (403 wrong credentials, 400 bad request, 503 full)."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Registered:
    """A device registered (``fresh``: it was not registered, or was offline, before)."""

    device_id: str
    peer: Peer
    expires: int
    fresh: bool
    user_agent: str


@dataclass(frozen=True, slots=True)
class Unregistered:
    device_id: str
    reason: str  # unregister (Expires: 0), expired


@dataclass(frozen=True, slots=True)
class WentOffline:
    device_id: str
    reason: str  # keepalive: too many missed; expired: the registration ran out


@dataclass(frozen=True, slots=True)
class CameBack:
    """A device marked offline kept alive again within its registration."""

    device_id: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """Answer 200 with ``expires``; ``event`` is what changed."""

    expires: int
    event: Registered | Unregistered


RegisterResult: TypeAlias = Challenge | Refused | Accepted
Event: TypeAlias = Registered | Unregistered | WentOffline | CameBack


class Registry:
    """Registered devices of one platform (see the module documentation).

    ``credentials_of(device_id)`` gives a device's own credentials (HA1 under its id and our realm),
    or None; ``shared_password`` is used for devices without.
    """

    def __init__(
        self,
        realm: str,
        *,
        shared_password: str = "",
        credentials_of: Callable[[str], digest.Credentials | None] | None = None,
        keepalive_interval: float = 60.0,
        missed_keepalives: int = 3,
        max_expires: int = 3600,
        max_devices: int = 5000,
        nonces: digest.Nonces | None = None,
    ) -> None:
        self.realm = realm
        self.shared_password = shared_password
        self.credentials_of = credentials_of or (lambda _device: None)
        self.keepalive_interval = keepalive_interval
        self.missed_keepalives = missed_keepalives
        self.max_expires = max_expires
        self.max_devices = max_devices
        self.nonces = nonces or digest.Nonces()
        self.devices: dict[str, DeviceState] = {}
        self._shared: dict[str, digest.Credentials] = {}

    def __contains__(self, device_id: object) -> bool:
        return device_id in self.devices

    def get(self, device_id: str) -> DeviceState | None:
        return self.devices.get(device_id)

    @property
    def offline_after(self) -> float:
        return self.keepalive_interval * self.missed_keepalives

    def _credentials(self, device_id: str, username: str) -> digest.Credentials | Refused:
        own = self.credentials_of(device_id)
        if own is not None:
            if username != device_id:
                return Refused(403, "the digest user name must be the device id when it has its own password")
            return own
        if not self.shared_password:
            return Refused(403, "no password is set for this device")
        found = self._shared.get(username)
        if found is None:
            found = digest.Credentials.from_password(username, self.realm, self.shared_password)
            if len(self._shared) > 10_000:
                self._shared.clear()
            self._shared[username] = found
        return found

    def register(
        self,
        *,
        device_id: str,
        authorization: str | None,
        expires: int | None,
        peer: Peer,
        contact: str,
        user_agent: str,
        now: float,
    ) -> RegisterResult:
        """One REGISTER from ``device_id`` (the user of its To/From); see the module documentation."""
        if not is_gb_id(device_id):
            return Refused(400, "the device id must be 20 digits")
        fresh_challenge = Challenge(digest.challenge(self.realm, self.nonces.make(now)), "no credentials")
        if not authorization:
            return fresh_challenge
        try:
            params = digest.parse_authorization(authorization)
        except digest.DigestError as exc:
            return Refused(400, f"unreadable Authorization: {exc}")
        if params.get("realm") != self.realm:
            return Challenge(fresh_challenge.header, "credentials for another realm")
        verdict = self.nonces.check(params.get("nonce", ""), now)
        if verdict == "bad":
            return Challenge(fresh_challenge.header, "a nonce we did not issue")
        if verdict == "stale":
            return Challenge(digest.challenge(self.realm, self.nonces.make(now), stale=True), "stale nonce")
        credentials = self._credentials(device_id, params.get("username", ""))
        if isinstance(credentials, Refused):
            return credentials
        if not digest.verify(params, "REGISTER", credentials):
            return Refused(403, "wrong password")
        existing = self.devices.get(device_id)
        if expires == 0:
            if existing is not None:
                del self.devices[device_id]
            return Accepted(0, Unregistered(device_id, "unregister"))
        if existing is None and len(self.devices) >= self.max_devices:
            return Refused(503, "too many devices registered")
        granted = min(expires if expires is not None else self.max_expires, self.max_expires)
        fresh = existing is None or not existing.online
        self.devices[device_id] = DeviceState(
            device_id,
            peer,
            contact,
            user_agent,
            existing.registered_at if existing is not None and not fresh else now,
            now + granted,
            now,
        )
        return Accepted(granted, Registered(device_id, peer, granted, fresh, user_agent))

    def seen(self, device_id: str, now: float) -> list[Event]:
        """A keep-alive (or another message) from a registered device."""
        device = self.devices.get(device_id)
        if device is None:
            return []
        device.last_seen = now
        if not device.online:
            device.online = True
            return [CameBack(device_id)]
        return []

    def forget(self, device_id: str) -> None:
        self.devices.pop(device_id, None)

    def next_deadline(self) -> float | None:
        deadlines = [
            min(d.expires_at, d.last_seen + self.offline_after) if d.online else d.expires_at
            for d in self.devices.values()
        ]
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> list[Event]:
        """Offline devices, and registrations that ran out."""
        events: list[Event] = []
        for device in list(self.devices.values()):
            if now >= device.expires_at:
                del self.devices[device.device_id]
                if device.online:
                    events.append(WentOffline(device.device_id, "expired"))
                events.append(Unregistered(device.device_id, "expired"))
            elif device.online and now - device.last_seen >= self.offline_after:
                device.online = False
                events.append(WentOffline(device.device_id, "keepalive"))
        return events


# ---- catalogues -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogDone:
    """A device's catalogue: every item (``complete``) or what came before time ran out."""

    device_id: str
    sn: int
    items: tuple[CatalogItem, ...]
    complete: bool
    sum_num: int


@dataclass(slots=True)
class _Collecting:
    sum_num: int
    deadline: float
    items: dict[str, CatalogItem] = field(default_factory=dict)


class CatalogCollector:
    """Puts a catalogue split over several messages back together, by device and SN (§9.5.3)."""

    def __init__(self, timeout: float = 15.0, max_items: int = 100_000) -> None:
        self.timeout = timeout
        self.max_items = max_items
        self._pending: dict[tuple[str, int], _Collecting] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self, device_id: str, sn: int, sum_num: int, items: tuple[CatalogItem, ...], now: float
    ) -> CatalogDone | None:
        key = (device_id, sn)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Collecting(min(sum_num, self.max_items), now + self.timeout)
        pending.sum_num = max(pending.sum_num, min(sum_num, self.max_items))
        pending.deadline = now + self.timeout  # each part gives the rest more time
        for item in items:
            if len(pending.items) < self.max_items:
                pending.items[item.device_id] = item
        if len(pending.items) >= pending.sum_num:
            del self._pending[key]
            return CatalogDone(device_id, sn, tuple(pending.items.values()), True, pending.sum_num)
        return None

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def tick(self, now: float) -> list[CatalogDone]:
        done: list[CatalogDone] = []
        for key, pending in list(self._pending.items()):
            if now >= pending.deadline:
                del self._pending[key]
                done.append(
                    CatalogDone(key[0], key[1], tuple(pending.items.values()), False, pending.sum_num)
                )
        return done
