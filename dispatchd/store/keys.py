"""Every Redis key and channel name dispatchd uses, in one module.

Redis holds only what can be rebuilt: live positions, the change-feed fan-out, rate limits.
PostgreSQL holds every record that matters.
"""

from __future__ import annotations

PREFIX = "dispatchd:"

# Change feed: outbox rows published after commit, in seq order, to every instance.
CHANGES_CHANNEL = PREFIX + "changes"


def idempotency(scope: str, key: str) -> str:
    return f"{PREFIX}idem:{scope}:{key}"


def ratelimit(scope: str, ident: str) -> str:
    return f"{PREFIX}rl:{scope}:{ident}"
