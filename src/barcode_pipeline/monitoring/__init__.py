"""Monitoring: where every service serves ``/metrics``, the backlog exporter, the local Prometheus
and its exporters (``stack up --monitoring``), and the ``top`` live view."""
