"""streamrec: a self-hosted real-time recommender on Kafka, Faust, Redis and FastAPI."""

__version__ = "0.1.0"
