"""Data in and out: datasets, ``streamrec import`` and ``streamrec export``."""
