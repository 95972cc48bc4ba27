"""Local infrastructure: Kafka (KRaft, from Maven jars), Redis (AOF) and MariaDB under the state
directory, started, checked and stopped by :class:`barcode_harness.stack.manager.StackManager`."""
