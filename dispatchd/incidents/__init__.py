"""The case service: create, transition, deadline timers, statistics (asyncpg + the pure domain)."""

from __future__ import annotations
