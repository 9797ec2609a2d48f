"""Live: the change feed, the board websocket, and orders pushed to squads with acknowledgement.

:func:`dispatchd.live.api.setup` adds the routes (``/api/v1/orders``, ``/api/v1/alerts``,
``/ws/board``, ``/ws/squad``, ``/api/asyncapi.json``), the board sections ``orders`` and ``alerts``,
and one cleanup context that runs, for the life of the instance: the relay election and loop, the
feed subscriber, the board frame loop and heartbeat, the squad hub and the order timers. It also
registers the order acceptance the hotline's 叫应 uses (``ORDER_ACCEPTANCE``: the squad app's own
accept). Websockets are closed with 1001 (reconnect and resume) when the instance shuts down.
"""
