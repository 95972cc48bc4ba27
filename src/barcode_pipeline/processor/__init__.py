"""processor subsystem."""
