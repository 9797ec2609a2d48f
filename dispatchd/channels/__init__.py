"""Edges in: each channel parses its wire format (pure) and hands what it read to intake."""
