"""Local Kafka and Redis processes for development, demos and tests (no Docker needed)."""
