"""Processor: Kafka consumer group -> internal record -> dedup + publish to sharded Redis Streams."""
