"""The hotline's voice path: the caller's audio bridged to the officer's browser, prompts, recording.

Pure pieces, each tested without an event loop: ``rtp`` (RFC 3550 headers), ``g711`` (μ-law and
A-law, ITU-T G.711), ``dtmf`` (RFC 4733 telephone-events), ``jitter`` (reordering, concealment and
re-packetisation between packet times), ``tones`` (Goertzel detection, tone and WAV generation),
``mixer`` (the two-sided recording), ``player`` (prompts and music paced), ``ivr`` (greeting, menu
and queue announcements) and ``digest`` (RFC 7616 authentication for calls out). The asyncio side:
``media`` (one call's media: the caller's RTP socket, the jitter buffers, the far leg, the recording),
``webrtc`` (the officer's leg), ``switch`` (the media of the calls held here), ``prompts``. The
services ``callouts`` (calls out as records, the units' call lists) and ``recordings`` (who may hear
them, retention) take the service context.

This package imports nothing of the hotline around it: the SIP side that drives it
(``edge``, ``dialer``, ``announce``, ``console``, ``escalation``, and the routes in ``api``) lives one level up.
"""
