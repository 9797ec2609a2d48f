"""Squad positions: JT/T 808 vehicle terminals over TCP and OsmAnd / Traccar Client phones over HTTP."""
