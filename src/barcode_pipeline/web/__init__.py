"""The web layer both HTTP services (ingest, legacy) share, so the same scanners see the same API.

``contract`` (error bodies, answers, OpenAPI entries), ``schemas`` (the API models, built from the
domain rules), ``body`` (reading and decoding a capped request body), ``metrics`` (the metrics base
and request timing), ``app`` (what every service app has: /health, /metrics, JSON errors) and
``server`` (one ``serve`` with the same process settings for every service). Routes are in ``names``.
"""
