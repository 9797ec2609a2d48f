"""The one-number hotline (967999): SIP intake of the merged lines, the call queue, caller history.

``sip`` parses and writes SIP messages, ``transaction`` runs RFC 3261 transactions and ``agent``
answers calls, all three sans I/O; ``edge`` feeds them from UDP and TCP sockets.
"""
