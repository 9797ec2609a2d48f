"""The case service: create, transition, deadline timers, statistics (asyncpg + the pure domain).

:func:`dispatchd.incidents.api.setup` adds the API routes, the deadline-timer loop, the
``incidents`` board section and the registry of extra statistics sections
(:func:`dispatchd.incidents.stats.register_section`).
"""
