"""chaos subsystem."""
