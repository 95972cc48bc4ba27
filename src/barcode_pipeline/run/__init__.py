"""Running the whole pipeline: supervised child processes, graceful drain, and the demo."""
