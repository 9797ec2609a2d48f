"""Typed slots of grid reports on the service context."""

from __future__ import annotations

from dispatchd.channels.reports.media import MediaStore
from dispatchd.context import Slot

MEDIA = Slot[MediaStore]("reports_media")
