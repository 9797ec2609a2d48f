"""Squad units (应急中队): units, members, devices, status, live positions, tracks, nearest squad.

:func:`dispatchd.units.api.setup` adds the ``/api/v1/units`` routes, the board section ``units``,
and one cleanup context that runs the position pipeline: the device directory, the batching sink,
the OsmAnd HTTP server and the JT/T 808 TCP server on their own ports, and (with the demo on) the
simulated squads.
"""
