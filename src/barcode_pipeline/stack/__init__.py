"""stack subsystem."""
