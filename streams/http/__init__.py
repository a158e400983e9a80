"""The HTTP front end: ingest and order endpoints, API keys, sync endpoints, shared error bodies.

Everything a client talks to over HTTP lives here, so the rest of the service never sees aiohttp.
"""
