"""Grid reports: the 平安通 API for grid workers (reports with photos, exactly once; my reports;
verification tasks; the patrol log) (docs/reports.md).

:func:`dispatchd.channels.reports.api.setup` adds the routes, the photo store under
``<data dir>/media``, the ``patrols`` statistics section and, with the demo on, the simulated grid
workers.
"""
