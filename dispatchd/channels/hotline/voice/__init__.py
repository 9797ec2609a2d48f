"""The hotline's voice path: the caller's audio bridged to the officer's browser, prompts, recording.

Pure pieces, each tested without an event loop: ``rtp`` (RFC 3550 headers), ``g711`` (μ-law and
A-law, ITU-T G.711), ``dtmf`` (RFC 4733 telephone-events), ``jitter`` (reordering, concealment and
re-packetisation between packet times), ``tones`` (Goertzel detection, tone and WAV generation),
``mixer`` (the two-sided recording), ``ivr`` (greeting, menu and queue announcements) and ``digest``
(RFC 7616 authentication for calls out). The asyncio edge is ``bridge`` (one call's media: the
caller's RTP socket and the officer's WebRTC peer) under ``service`` (the API's commands) and
``callout`` (calls out through the trunk, and 叫应).
"""
