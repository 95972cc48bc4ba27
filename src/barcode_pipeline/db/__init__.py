"""The database schema: numbered SQL migrations (package data), their runner, and the workers' SQL."""
