"""Decoding engines: verifier-only and speculative loops, batch, sampling, KV-cache rollback, HF adapter."""
