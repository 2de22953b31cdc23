"""The FastAPI service: recommendations, events, catalog, health."""
