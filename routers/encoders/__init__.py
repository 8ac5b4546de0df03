"""Encoder implementations behind :mod:`routers.embeddings` (import them through ``get_encoder(name)``)."""
