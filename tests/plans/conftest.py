"""The browser fixtures of tests/ui (Chromium through Playwright), for the plan journey."""

from __future__ import annotations

from tests.ui.conftest import browser, browsing

__all__ = ["browser", "browsing"]
