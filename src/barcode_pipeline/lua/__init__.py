"""Lua scripts run inside Redis (package data)."""
