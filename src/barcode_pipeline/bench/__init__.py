"""bench subsystem."""
