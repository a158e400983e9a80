"""The durable ingest path: accepted orders go to a local journal first, then are forwarded to
the broker, so an accepted order survives a broker outage or a restart.
"""
