"""Python client for the streamrec API.

>>> from streamrec_client import Client, AsyncClient, Recommendations, ItemList
"""

from __future__ import annotations

from streamrec_client._core import ItemList, Recommendations, Retry, ScoredItem, StreamrecError
from streamrec_client.aio import AsyncClient
from streamrec_client.sync import Client

__all__ = ["AsyncClient", "Client", "ItemList", "Recommendations", "Retry", "ScoredItem",
           "StreamrecError"]
__version__ = "0.1.0"
