"""Operator tools: pipeline status/backlog and dead-letter handling."""
