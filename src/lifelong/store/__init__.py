"""A model that keeps learning in production: versioned store (`store.py`) and HTTP server (`server.py`)."""

from .store import Model, ModelStore

__all__ = ["Model", "ModelStore"]
