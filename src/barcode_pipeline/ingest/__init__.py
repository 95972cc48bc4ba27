"""The ingest service: validate a scan, hand it to Kafka (acks=all), answer once Kafka confirmed it."""
