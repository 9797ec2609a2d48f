"""Cameras of the public-security video network: dispatchd as a GB/T 28181 platform.

``manscdp`` (the XML), ``ptz`` (the 8-byte control command), ``sdp``, ``ps`` (MPEG program
streams), ``rtp`` (RTP and RFC 4571), ``digest`` (server-side digest) and ``registry`` (devices,
keep-alive, catalogues) are pure: bytes or commands in, values out, time passed in.
"""
