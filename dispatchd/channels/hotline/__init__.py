"""The one-number hotline (967999): SIP intake of the merged lines, the call queue, caller history.

``sip`` parses and writes SIP messages, ``transaction`` runs RFC 3261 transactions and ``agent``
answers calls, all three sans I/O; ``edge`` feeds them from UDP and TCP sockets; ``calls`` keeps
the queue and the records in PostgreSQL; ``presence`` knows which officers can take a call;
``remote`` carries commands to the instance holding a call; ``api`` is the HTTP side; ``demo``
the simulated callers of ``dispatchd dev``; ``voice`` the officer's voice in the console, prompts,
recordings and calls out (see its package documentation).

``api.setup`` adds the ``/api/v1/hotline`` routes, the board section ``calls``, the ``hotline``
statistics section and one cleanup context running the SIP edge, the queue round, the command
listener, the recordings' retention, 叫应 and (with the demo on) the simulated callers.
"""
