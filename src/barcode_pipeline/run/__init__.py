"""run subsystem."""
