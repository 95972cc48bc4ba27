"""Local infrastructure: Kafka (KRaft, from Maven jars), Redis (AOF) and MariaDB on loopback.

Each component lives under the project-local state directory and is started, checked and
stopped by :class:`barcode_harness.stack.manager.StackManager`.
"""
