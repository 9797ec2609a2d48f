"""aiohttp application assembly, HTTP API, auth and the static web UI."""
