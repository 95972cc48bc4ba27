"""Running the whole pipeline: the start-up stage, supervised child processes and a graceful drain."""
