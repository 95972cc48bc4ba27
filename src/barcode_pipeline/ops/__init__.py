"""Operator tools: the per-stage backlog (``status``) and the dead letters of both stores (dlq, dlt)."""
