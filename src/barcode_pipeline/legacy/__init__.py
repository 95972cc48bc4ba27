"""legacy subsystem."""
