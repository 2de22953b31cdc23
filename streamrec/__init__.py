"""streamrec: a self-hosted real-time recommender on Kafka, Faust, Redis and FastAPI."""

import os

# Every streamrec process does its numpy work on request or batch threads of its own; a
# BLAS thread pool per call on top of that oversubscribes the cores (measured: the API's
# MF scoring slowed several-fold under load). Set before numpy is first imported;
# OPENBLAS_NUM_THREADS in the environment still wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
