"""Video meetings (综治视联网): signalling, rooms, and aiortc forwarding without transcoding.

:func:`dispatchd.video.api.setup` adds the routes, the rooms of this instance and the board
section ``meetings``.
"""
