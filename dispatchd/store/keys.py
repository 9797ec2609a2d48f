"""Every Redis key and channel name dispatchd uses, in one module.

Redis holds only what can be rebuilt: live positions, the change-feed fan-out, rate limits.
PostgreSQL holds every record that matters.
"""

from __future__ import annotations

PREFIX = "dispatchd:"

# Change feed: outbox rows published after commit, in seq order, to every instance.
CHANGES_CHANNEL = PREFIX + "changes"
# The seq of the last outbox row the relay published (where a new relay takes over).
FEED_RELAY_LAST = PREFIX + "feed:relay_last"


def idempotency(scope: str, key: str) -> str:
    return f"{PREFIX}idem:{scope}:{key}"


def ratelimit(scope: str, ident: str) -> str:
    return f"{PREFIX}rl:{scope}:{ident}"


# Squad positions: the last accepted fix of every unit (rebuilt from the next fixes if lost).
# A GEO set of unit ids for radius searches, and one hash per unit:
# lat, lon, at (fix time, unix seconds), speed (km/h), heading, battery, source, device.
UNITS_GEO = PREFIX + "units:geo"


def unit_position(unit_id: int) -> str:
    return f"{PREFIX}unit:{unit_id}:pos"


def unit_alarm(unit_id: int) -> str:
    """Set while an emergency alarm of the unit has an open case (dedupes repeated alarm reports)."""
    return f"{PREFIX}unit:{unit_id}:alarm"
