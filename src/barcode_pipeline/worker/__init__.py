"""worker subsystem."""
