"""Adapters to Redis: the client, key names, Lua scripts and the stores built on them."""
