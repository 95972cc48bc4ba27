"""db subsystem."""
