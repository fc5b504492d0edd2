"""Serving mode: an OpenAI-compatible server started or attached to, its client, and its /metrics."""
