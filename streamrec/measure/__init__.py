"""Measuring tools: bench, soak, open-loop load, filter latency and offline evaluation."""
