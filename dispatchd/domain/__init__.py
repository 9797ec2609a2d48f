"""The pure core: organisation tree and jurisdiction, taxonomy and time limits, hotline routing,
geometry, and the case life cycle.  Nothing here awaits, reads the clock or touches the network;
the loaders only read their TOML files.
"""
