"""Thin adapters: build clients for Kafka, Redis and the database from ``Settings``."""
