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


def camera_alarm(camera_id: str, method: int | None, alarm_type: int | None) -> str:
    """Set while an alarm of this kind from this camera has its case (the value: the case's id)."""
    return f"{PREFIX}camera:{camera_id}:alarm:{method or 0}:{alarm_type or 0}"


def unit_alarm(unit_id: int) -> str:
    """Set while an emergency alarm of the unit has an open case (dedupes repeated alarm reports)."""
    return f"{PREFIX}unit:{unit_id}:alarm"


# Hotline presence: the duty officers who can take calls, longest idle first. A sorted set of
# user ids scored by the time (unix seconds) since when each is idle, one hash of who they are
# (user id -> JSON), and one of how many consoles each has open per instance
# ("<user id>@<instance id>" -> count).
HOTLINE_IDLE = PREFIX + "hotline:idle"
HOTLINE_OFFICERS = PREFIX + "hotline:officers"
HOTLINE_CONNECTIONS = PREFIX + "hotline:connections"


def hotline_commands(instance_id: str) -> str:
    """Channel of the instance holding a call's SIP dialog: answer and hang up are done there."""
    return f"{PREFIX}hotline:cmd:{instance_id}"


def hotline_reply(token: str) -> str:
    """A list the answering instance pushes one reply onto (short-lived)."""
    return f"{PREFIX}hotline:reply:{token}"


def hotline_instance(instance_id: str) -> str:
    """Set (with a time to live) while an instance runs: its SIP calls and its consoles' hotline
    presence die with it (beaten by :meth:`dispatchd.channels.hotline.presence.Presence.run`)."""
    return f"{PREFIX}hotline:instance:{instance_id}"
