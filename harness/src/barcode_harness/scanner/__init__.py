"""scanner subsystem."""
