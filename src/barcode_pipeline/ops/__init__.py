"""ops subsystem."""
