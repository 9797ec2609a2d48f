"""Typed application keys of grid reports."""

from __future__ import annotations

from aiohttp import web

from dispatchd.channels.reports.media import MediaStore

MEDIA = web.AppKey("reports_media", MediaStore)
