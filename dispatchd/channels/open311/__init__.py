"""Open311 GeoReport v2 for citizen apps: the same closed loop through a public standard
(:mod:`dispatchd.channels.open311.api`, docs/reports.md)."""
