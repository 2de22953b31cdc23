"""Pure recommendation algorithms: no Kafka, no Redis, no web framework, no asyncio."""
