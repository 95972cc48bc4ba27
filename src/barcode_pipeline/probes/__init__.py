"""Measurements of the pipeline's state (Kafka lag, stream backlogs, pending entries, bounds).

Below the services: the processor, the run layer, monitoring, the operator commands and the
harness all read the same numbers from here, and nothing here knows about any of them.
"""
