"""Cameras of the public-security video network: dispatchd as a GB/T 28181 platform.

``manscdp`` (the XML), ``ptz`` (the 8-byte control command), ``sdp``, ``ps`` (MPEG program
streams), ``rtp`` (RTP and RFC 4571), ``digest`` (server-side digest), ``registry`` (devices,
keep-alive, catalogues) and ``agent`` (the SIP user agent) are pure: bytes or commands in, values
out, time passed in. ``edge`` runs the agent on the ``[gb28181] port`` sockets; ``streams`` keeps one
device stream per viewed channel and ``view`` the WebRTC viewers; ``service`` keeps devices and
cameras in PostgreSQL; ``meeting`` puts a camera into a meeting; ``runtime`` holds them for the life
of the instance and counts them in the metrics; ``api`` is the HTTP side, and ``api.setup`` adds the
routes, the board section ``cameras``, the metrics, the meeting source kind ``camera`` and the
cleanup context running the platform.
"""
